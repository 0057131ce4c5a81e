/**
 * passfd I/O (Kata agent passfd_io.rs at 6e4d4c329a, `agent.passfd_listener_port`): the runtime
 * opens one stream connection per stdio stream of a process to the agent's passfd listener, and
 * then names the connections in CreateContainerRequest / ExecProcessRequest `stdin_port`,
 * `stdout_port`, `stderr_port`. A connection is identified by its peer's port (the host side's
 * vsock source port; nothing is read from the connection to identify it). The agent copies
 * between those connections and the process's pipes: connection → stdin (EOF on the connection
 * closes the process's stdin), stdout/stderr → connection (closed at the output's end), and
 * WaitProcess answers only once that output has been copied (upstream signal.rs waits for the
 * copy tasks). A port of 0, or one with no connection, leaves that stream to
 * ReadStdout/ReadStderr/WriteStdin as usual (upstream: `None`).
 *
 * Addresses: `vsock://-1:<port>` (what `agent.passfd_listener_port` means upstream) or, where
 * there is no vsock (tests), `unix:///path`: a unix peer must bind its socket to a name ending
 * in decimal digits, which stand for the port.
 */
import { StatusError } from '../shared/protocol';
import { loadNative, type NativeAddon } from '../shared/native';
import type { Logger } from '../shared/log';
import { FdStream } from './ttrpc/fdstream';
import { listenStream, type StreamListener } from './ttrpc/stream-listener';
import type { Process } from './sandbox/process';
import { eofError } from './sandbox/stdio';

/** Connections kept waiting to be claimed (the oldest is closed beyond this). */
export const PASSFD_MAX_PENDING = 256;
/** How long CreateContainer/ExecProcess waits for a named port's connection to arrive, in ms. */
export const PASSFD_CLAIM_WAIT_MS = 1000;
/** Bytes per copy step from a process's output to its connection. */
const COPY_CHUNK = 64 * 1024;

/** The passfd connections of one process (absent: that stream is served by the Read/Write rpcs). */
export interface PassfdStreams {
  stdin?: FdStream;
  stdout?: FdStream;
  stderr?: FdStream;
}

/** Ports of a CreateContainer / ExecProcess request. */
export interface PassfdPorts {
  stdin_port?: number | null;
  stdout_port?: number | null;
  stderr_port?: number | null;
}

/** Accepts passfd connections and hands them out by port. */
export class PassfdListener {
  private readonly native: NativeAddon;
  private readonly listener: StreamListener;
  private readonly pending = new Map<number, FdStream>();
  private readonly waiters = new Map<number, (s: FdStream) => void>();
  private closed = false;

  /**
   * Listen on `address` (`vsock://<cid>:<port>`, `unix:///path`). INVALID_ARGUMENT for another
   * address; the system error (e.g. EADDRINUSE) otherwise.
   */
  constructor(
    readonly address: string,
    private readonly log: Logger,
    native?: NativeAddon,
  ) {
    this.native = native ?? loadNative();
    this.listener = listenStream(this.native, address, 64, 'passfd', this.log, (conn) => this.accepted(conn));
    this.log.info({ address }, 'passfd listener started');
  }

  /** Connections accepted and not claimed yet (tests, debug). */
  get pendingCount(): number {
    return this.pending.size;
  }

  /** One accepted connection: keyed by its peer's port (vsock port, or a unix name's trailing digits). */
  private accepted(conn: number): void {
    let port: number | null = null;
    try {
      const peer = this.native.socketPeer(conn);
      if (peer.family === 'vsock') port = peer.port;
      else {
        const m = /([0-9]{1,10})$/.exec(peer.path);
        port = m ? Number(m[1]) : null;
      }
    } catch (err) {
      this.log.warn({ err }, 'passfd: cannot read the peer address');
    }
    if (port === null || port === 0 || port > 0xffffffff) {
      this.log.warn({ port }, 'passfd connection without a usable peer port closed');
      this.native.close(conn);
      return;
    }
    const stream = new FdStream(conn, { native: this.native });
    stream.on('error', (err: Error) => this.log.debug({ err, port }, 'passfd connection error'));
    const waiter = this.waiters.get(port);
    if (waiter) {
      this.waiters.delete(port);
      waiter(stream);
      return;
    }
    const old = this.pending.get(port);
    if (old) {
      this.log.warn({ port }, 'passfd: a second connection from the same port replaces the first');
      old.destroy();
      this.pending.delete(port);
    }
    this.pending.set(port, stream);
    if (this.pending.size > PASSFD_MAX_PENDING) {
      const [oldestPort, oldest] = this.pending.entries().next().value as [number, FdStream];
      this.log.warn({ port: oldestPort }, `passfd: more than ${PASSFD_MAX_PENDING} unclaimed connections, closing the oldest`);
      oldest.destroy();
      this.pending.delete(oldestPort);
    }
    this.log.info({ port }, 'passfd connection accepted');
  }

  /**
   * The connection from peer port `port`, waiting up to `waitMs` for it to arrive; undefined
   * for port 0 or when none came (upstream take_stream: `None`).
   */
  async take(port: number, waitMs = PASSFD_CLAIM_WAIT_MS): Promise<FdStream | undefined> {
    if (!port || this.closed) return undefined;
    const ready = this.pending.get(port);
    if (ready) {
      this.pending.delete(port);
      return ready;
    }
    if (this.waiters.has(port)) return undefined;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters.delete(port);
        resolve(undefined);
      }, waitMs);
      this.waiters.set(port, (s) => {
        clearTimeout(timer);
        resolve(s);
      });
    });
  }

  /** The three streams of a request (each may be absent). */
  async takeAll(ports: PassfdPorts): Promise<PassfdStreams> {
    const [stdin, stdout, stderr] = await Promise.all([ports.stdin_port, ports.stdout_port, ports.stderr_port].map((p) => this.take(p ?? 0)));
    return { stdin, stdout, stderr };
  }

  /** Stop listening and close unclaimed connections. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.listener.close();
    for (const s of this.pending.values()) s.destroy();
    this.pending.clear();
  }
}

const outputCopies = new WeakMap<Process, Promise<void>>();

/**
 * Connect `proc`'s stdio to its passfd streams: stdin connection → process stdin (its EOF or
 * error closes the process's stdin through `closeStdin`), stdout/stderr → their connections
 * (ended when the output ends). With a terminal, stdout and stderr are one output: it goes to
 * the stdout connection (upstream copies the pty master to stdout only).
 */
export function attachPassfd(proc: Process, streams: PassfdStreams, closeStdin: () => Promise<void>, log: Logger): void {
  const copies: Promise<void>[] = [];
  const outs: [FdStream | undefined, 'stdout' | 'stderr'][] = proc.terminal
    ? [[streams.stdout, 'stdout']]
    : [
        [streams.stdout, 'stdout'],
        [streams.stderr, 'stderr'],
      ];
  for (const [sock, name] of outs) {
    if (!sock) continue;
    copies.push(copyOut(proc, name, sock).catch((err: unknown) => log.warn({ err, exec: proc.execId, stream: name }, 'passfd output copy failed')));
  }
  if (proc.terminal && streams.stderr) streams.stderr.destroy();
  if (copies.length > 0) outputCopies.set(proc, Promise.all(copies).then(() => undefined));
  const input = streams.stdin;
  if (input) {
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      input.destroy();
      closeStdin().catch((err: unknown) => log.warn({ err, exec: proc.execId }, 'passfd: closing stdin failed'));
    };
    input.on('data', (chunk: Buffer) => {
      input.pause();
      proc.stdio.stdin.write(chunk).then(
        () => input.resume(),
        () => finish(),
      );
    });
    input.on('end', finish);
    input.on('error', finish);
  }
}

/** Resolves once `proc`'s passfd output has been copied (at once without passfd output). */
export function passfdOutputDone(proc: Process): Promise<void> {
  return outputCopies.get(proc) ?? Promise.resolve();
}

async function copyOut(proc: Process, name: 'stdout' | 'stderr', sock: FdStream): Promise<void> {
  const out = name === 'stdout' ? proc.stdio.stdout : proc.stdio.stderr;
  try {
    for (;;) {
      let chunk: Buffer;
      try {
        chunk = await out.read(COPY_CHUNK);
      } catch (err) {
        if (err instanceof StatusError && err.code === eofError().code) return;
        throw err;
      }
      if (sock.destroyed) return;
      if (!sock.write(chunk)) {
        await new Promise<void>((resolve) => {
          const done = (): void => {
            sock.off('drain', done);
            sock.off('close', done);
            resolve();
          };
          sock.on('drain', done);
          sock.on('close', done);
        });
      }
    }
  } finally {
    // The addon has no shutdown(2): closing is how the runtime sees the end of the stream,
    // after what was written has been flushed.
    if (!sock.destroyed) sock.end(() => sock.destroy());
  }
}
