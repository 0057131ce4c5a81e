/**
 * The serial ttRPC transport: one ttRPC connection at a time over a virtio-serial port
 * (`serial:///dev/virtio-ports/agent.channel.0`, or `serial://agent.channel.0` by name), for
 * hypervisors without vsock (e.g. QEMU on a host without vhost-vsock).
 *
 * How a virtio-serial port behaves (Linux drivers/char/virtio_console.c), and what follows:
 * - read(2) returns 0 (EOF) while no host client is connected to the port's chardev, and poll
 *   reports POLLHUP; once a host client connects, reads block (EAGAIN here) or return its bytes.
 *   So the port is opened once and kept open; a "connection" ({@link SerialSession}) starts at
 *   the first read that is not EOF and ends at the next EOF (the host client went away). While
 *   nobody is connected the port is probed every `probeMs` (a level-triggered poll would spin).
 * - Bytes the host sends while the guest does not hold the port open are discarded by the
 *   driver: the host must connect (or send) only once the agent has opened the port (the lane
 *   waits for the agent's "announce" log record); keeping the port open across host reconnects
 *   makes every later connection safe.
 * - Only one process may open a port (EBUSY).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Duplex } from 'node:stream';
import { Code, StatusError } from '../../shared/protocol';
import { loadNative, type NativeAddon, type Poller } from '../../shared/native';

/** Where the kernel lists virtio-serial ports (each has a `name` file). */
export const VIRTIO_PORTS_SYSFS = '/sys/class/virtio-ports';

/**
 * The device file of a serial address's `path`: an absolute path as given; a name is looked up
 * in {@link VIRTIO_PORTS_SYSFS} (`/sys/class/virtio-ports/vport2p1/name` = name →
 * `/dev/vport2p1`). Throws StatusError NOT_FOUND naming the port when no port has that name.
 */
export function resolveSerialPort(portPath: string, sysfs = VIRTIO_PORTS_SYSFS, devDir = '/dev'): string {
  if (portPath.startsWith('/')) return portPath;
  let entries: string[] = [];
  try {
    entries = fs.readdirSync(sysfs);
  } catch {
    // no virtio-serial ports at all
  }
  for (const entry of entries) {
    try {
      if (fs.readFileSync(path.join(sysfs, entry, 'name'), 'utf8').trim() === portPath) return path.join(devDir, entry);
    } catch {
      // a port without a name
    }
  }
  throw new StatusError(Code.NOT_FOUND, `no virtio-serial port named ${JSON.stringify(portPath)} in ${sysfs}`);
}

/** One host connection over the port: a Duplex that ends when the host client goes away. */
export class SerialSession extends Duplex {
  constructor(private readonly port: SerialPortListener) {
    super({ allowHalfOpen: false });
  }

  override _read(): void {
    this.port.sessionWantsRead(this);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.port.sessionWrite(this, chunk, callback);
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.port.sessionGone(this);
    callback(err);
  }
}

/** Options of {@link SerialPortListener}. */
export interface SerialPortOptions {
  native?: NativeAddon;
  /** How often to probe for a host client while none is connected, in ms (default 100). */
  probeMs?: number;
  /** Bytes per read(2) (default 64 KiB). */
  readChunkBytes?: number;
  /** Told about each new session (a host client connected). */
  onSession: (session: SerialSession) => void;
  /** Told about errors that stop the listener (e.g. a failed read other than EOF). */
  onError?: (err: Error) => void;
}

interface PendingWrite {
  session: SerialSession;
  buf: Buffer;
  offset: number;
  callback: (err?: Error | null) => void;
}

/**
 * Serves a virtio-serial port: opens `device` (O_RDWR|O_NONBLOCK|O_NOCTTY) at construction —
 * errors of open(2) thrown as is (ENOENT, EBUSY) — and hands each host connection to
 * `onSession` as a {@link SerialSession}. {@link close} ends the session and closes the port.
 */
export class SerialPortListener {
  readonly fd: number;
  private readonly native: NativeAddon;
  private readonly poller: Poller;
  private readonly probeMs: number;
  private readonly readChunkBytes: number;
  private session: SerialSession | null = null;
  private wantRead = false;
  private pending: PendingWrite | null = null;
  private watching: [boolean, boolean] = [false, false];
  private probeTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    readonly device: string,
    private readonly options: SerialPortOptions,
  ) {
    this.native = options.native ?? loadNative();
    this.probeMs = options.probeMs ?? 100;
    this.readChunkBytes = options.readChunkBytes ?? 64 * 1024;
    this.fd = fs.openSync(device, fs.constants.O_RDWR | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY);
    this.native.setCloexec(this.fd, true);
    this.poller = new this.native.Poller(this.fd, (status, events) => this.onPoll(status, events.readable || events.disconnect, events.writable));
    // The first probe runs after the constructor returned: a host already connected (a restarted
    // control plane finds one) starts a session at once, and onSession must see a constructed
    // listener (its caller reads `fd`).
    this.probeTimer = setTimeout(() => this.probe(), 0);
  }

  /** Probe for a host client: a read that is not EOF starts a session (its bytes are the session's first). */
  private probe(): void {
    this.probeTimer = undefined;
    if (this.closed || this.session) return;
    const chunk = this.readChunk();
    if (!chunk) return;
    const { buf, n } = chunk;
    if (n === 0) {
      this.probeTimer = setTimeout(() => this.probe(), this.probeMs);
      return;
    }
    const session = new SerialSession(this);
    this.session = session;
    if (n > 0) session.push(buf.subarray(0, n));
    this.options.onSession(session);
  }

  private fail(err: Error): void {
    if (this.session) this.session.destroy(err);
    this.options.onError?.(err);
    this.close();
  }

  private updateWatch(): void {
    if (this.closed) return;
    const read = this.session !== null && this.wantRead;
    const write = this.pending !== null;
    if (read === this.watching[0] && write === this.watching[1]) return;
    this.watching = [read, write];
    if (read || write) this.poller.start(read, write);
    else this.poller.stop();
  }

  private onPoll(status: number, readable: boolean, writable: boolean): void {
    if (this.closed) return;
    if (status < 0) {
      this.fail(new Error(`poll on ${this.device} failed (libuv status ${status})`));
      return;
    }
    if (writable && this.pending) this.flush();
    if (readable && this.wantRead) this.readSome();
  }

  /**
   * One read(2) of up to readChunkBytes: n > 0 bytes, 0 = EOF (no host client), < 0 = EAGAIN.
   * A read error fails the listener and gives undefined.
   */
  private readChunk(): { buf: Buffer; n: number } | undefined {
    const buf = Buffer.allocUnsafe(this.readChunkBytes);
    try {
      return { buf, n: this.native.read(this.fd, buf, 0, buf.length) };
    } catch (err) {
      this.fail(err as Error);
      return undefined;
    }
  }

  private readSome(): void {
    while (this.wantRead && this.session && !this.closed) {
      const chunk = this.readChunk();
      if (!chunk) return;
      const { buf, n } = chunk;
      if (n < 0) break;
      if (n === 0) {
        this.endSession();
        return;
      }
      if (!this.session.push(buf.subarray(0, n))) this.wantRead = false;
    }
    this.updateWatch();
  }

  /** The host client went away: end the session and go back to probing. */
  private endSession(): void {
    const session = this.session;
    this.detach();
    if (session) {
      session.push(null);
      session.destroy();
    }
    if (!this.closed && !this.probeTimer) this.probeTimer = setTimeout(() => this.probe(), this.probeMs);
  }

  private detach(): void {
    this.session = null;
    this.wantRead = false;
    const pending = this.pending;
    this.pending = null;
    this.updateWatch();
    pending?.callback(new Error(`${this.device}: the host side went away`));
  }

  /** @internal */
  sessionWantsRead(session: SerialSession): void {
    if (session !== this.session) return;
    this.wantRead = true;
    this.readSome();
  }

  /** @internal */
  sessionWrite(session: SerialSession, buf: Buffer, callback: (err?: Error | null) => void): void {
    if (session !== this.session || this.closed) {
      callback(new Error(`${this.device}: write on an ended session`));
      return;
    }
    this.pending = { session, buf, offset: 0, callback };
    this.flush();
  }

  private flush(): void {
    const p = this.pending;
    if (!p) return;
    while (p.offset < p.buf.length) {
      let n: number;
      try {
        n = this.native.write(this.fd, p.buf, p.offset, p.buf.length - p.offset);
      } catch (err) {
        this.pending = null;
        this.updateWatch();
        p.callback(err as Error);
        return;
      }
      if (n < 0) {
        this.updateWatch();
        return;
      }
      p.offset += n;
    }
    this.pending = null;
    this.updateWatch();
    p.callback();
  }

  /** @internal A session destroyed by its user (e.g. the server dropped it): probe for the next one. */
  sessionGone(session: SerialSession): void {
    if (session !== this.session) return;
    this.detach();
    if (!this.closed && !this.probeTimer) this.probeTimer = setTimeout(() => this.probe(), this.probeMs);
  }

  /** End the current session and close the port. Idempotent. */
  close(): void {
    if (this.closed) return;
    const session = this.session;
    this.detach();
    this.closed = true;
    if (this.probeTimer) clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
    session?.destroy();
    this.poller.close();
    try {
      this.native.close(this.fd);
    } catch {
      // already closed
    }
  }
}
