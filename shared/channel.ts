/**
 * A message channel over one connected, non-blocking AF_UNIX SOCK_SEQPACKET socket: the
 * transport of the helper protocol (shared/protocol.ts).
 *
 * One message = one packet = one msgpack value (msgpackr, records and extension types off, so
 * any msgpack implementation can read it; Buffers travel as msgpack bin and come back as
 * Buffers). File descriptors travel as SCM_RIGHTS ancillary data of the packet they belong to.
 *
 * Limits: a packet is at most {@link HELPER_MAX_PACKET} bytes and carries at most
 * {@link MAX_FDS_PER_PACKET} fds (the receiving side's recvmsg control buffer); `send` refuses
 * more with RESOURCE_EXHAUSTED.
 *
 * Readiness comes from a libuv poll watcher (native Poller); nothing blocks the event loop.
 */
import { EventEmitter } from 'node:events';
import { Packr } from 'msgpackr';
import { Code, HELPER_MAX_PACKET, StatusError } from './protocol';
import { isErrno, loadNative, type NativeAddon, type Poller } from './native';
import { silentLogger, type Logger } from './log';

/** Most fds one packet may carry (the addon's seqpacketRecv accepts up to 64). */
export const MAX_FDS_PER_PACKET = 64;

const packr = new Packr({ useRecords: false, moreTypes: false });

/** Encode one message as the channel does (exported for tests and for size checks). */
export function encodeMessage(message: unknown): Buffer {
  return packr.pack(message);
}

/** Decode one packet as the channel does; throws on malformed or trailing data. */
export function decodeMessage(data: Buffer): unknown {
  return packr.unpack(data);
}

/**
 * EMSGSIZE (the packet does not fit the socket's send buffer, SO_SNDBUF, which for AF_UNIX
 * datagram-like sockets bounds the largest packet) and ETOOMANYREFS as RESOURCE_EXHAUSTED; the
 * channel stays usable.
 */
function tooBigError(err: unknown, bytes: number): StatusError | undefined {
  if (isErrno(err, 'EMSGSIZE')) {
    return new StatusError(
      Code.RESOURCE_EXHAUSTED,
      `message of ${bytes} bytes does not fit the socket send buffer (SO_SNDBUF)`,
    );
  }
  if (isErrno(err, 'ETOOMANYREFS')) {
    return new StatusError(Code.RESOURCE_EXHAUSTED, 'too many fds in flight on the socket (ETOOMANYREFS)');
  }
  return undefined;
}

/** Called once per `send`: without an error when the packet (and its fds) reached the kernel. */
export type SentCallback = (err?: Error) => void;

interface QueuedPacket {
  data: Buffer;
  fds: number[];
  onSent?: SentCallback;
}

export interface SeqpacketChannelOptions {
  logger?: Logger;
  /** Name used in log lines (e.g. "control#3"). */
  label?: string;
}

export interface SeqpacketChannel {
  on(event: 'message', listener: (message: unknown, fds: number[]) => void): this;
  on(event: 'close', listener: () => void): this;
  on(event: 'truncated', listener: (message: unknown, reason: string) => void): this;
  once(event: 'message', listener: (message: unknown, fds: number[]) => void): this;
  once(event: 'close', listener: () => void): this;
  emit(event: 'message', message: unknown, fds: number[]): boolean;
  emit(event: 'close'): boolean;
  emit(event: 'truncated', message: unknown, reason: string): boolean;
}

/**
 * Message channel over a connected non-blocking SOCK_SEQPACKET socket `fd`. The channel owns
 * `fd` and closes it in {@link close} (or when the peer hangs up).
 *
 * Events:
 * - `message` (message, fds): one decoded packet. The listener owns `fds` and must close them
 *   (an unhandled fd is a leak). Messages are emitted in arrival order.
 * - `truncated` (message, reason): a packet whose fds did not fit (MSG_CTRUNC); the fds that
 *   did arrive are already closed and the channel stays open, so the receiver can fail that one
 *   request. Without a listener such a packet closes the channel, as below.
 * - `close`: once, when the channel closed (by {@link close}, peer hang-up, a socket error, or a
 *   packet that could not be decoded — that packet's fds are closed and an error is logged).
 *
 * Reading starts on construction; attach listeners in the same tick.
 */
export class SeqpacketChannel extends EventEmitter {
  private readonly native: NativeAddon;
  private readonly poller: Poller;
  private readonly log: Logger;
  private readonly queue: QueuedPacket[] = [];
  private isClosed = false;
  private wantWritable = false;

  constructor(
    public readonly fd: number,
    options: SeqpacketChannelOptions = {},
  ) {
    super();
    this.native = loadNative();
    this.log = (options.logger ?? silentLogger()).child({ channel: options.label ?? `fd${fd}` });
    this.poller = new this.native.Poller(fd, (status, events) => this.onPoll(status, events));
    this.poller.start(true, false);
  }

  /**
   * Read what the peer sent so far now, as a readiness event would (messages are emitted, an
   * end of stream closes the channel), and return whether the channel is still open: a peer
   * that died is noticed even when its hang-up event has not been polled yet.
   */
  drainNow(): boolean {
    this.drain();
    return !this.isClosed;
  }

  /** True once the channel is closed; `send` then throws UNAVAILABLE. */
  get closed(): boolean {
    return this.isClosed;
  }

  /**
   * Send `message` as one packet with `fds` attached (in order) as SCM_RIGHTS.
   *
   * Fd ownership: `send` never closes `fds`. The kernel duplicates them into the packet when it
   * is handed over (the receiver gets its own copies), which is immediate unless the socket's
   * send buffer is full; then the packet is queued and sent when the socket is writable. The
   * caller must keep `fds` open until `onSent` is called (with or without an error); after that
   * it may close them.
   *
   * Throws StatusError RESOURCE_EXHAUSTED when the encoded message exceeds HELPER_MAX_PACKET
   * bytes, does not fit the socket's send buffer (EMSGSIZE: SO_SNDBUF bounds a packet; the
   * default 208 KiB, which is why HELPER_MAX_PACKET is 192 KiB) or more than MAX_FDS_PER_PACKET fds are
   * attached (a packet that was queued and then hits EMSGSIZE gets RESOURCE_EXHAUSTED through
   * `onSent` instead), UNAVAILABLE when the channel is
   * closed, INVALID_ARGUMENT when the message cannot be encoded. `onSent` is not called when
   * `send` throws.
   */
  send(message: unknown, fds: number[] = [], onSent?: SentCallback): void {
    if (this.isClosed) throw new StatusError(Code.UNAVAILABLE, 'helper channel is closed');
    if (fds.length > MAX_FDS_PER_PACKET) {
      throw new StatusError(
        Code.RESOURCE_EXHAUSTED,
        `message carries ${fds.length} fds, more than the ${MAX_FDS_PER_PACKET} a packet may carry`,
      );
    }
    let data: Buffer;
    try {
      data = encodeMessage(message);
    } catch (err) {
      throw new StatusError(Code.INVALID_ARGUMENT, `cannot encode message: ${(err as Error).message}`);
    }
    if (data.length > HELPER_MAX_PACKET) {
      throw new StatusError(
        Code.RESOURCE_EXHAUSTED,
        `message of ${data.length} bytes exceeds the ${HELPER_MAX_PACKET}-byte packet limit`,
      );
    }
    const packet: QueuedPacket = { data, fds: [...fds], onSent };
    if (this.queue.length > 0) {
      this.queue.push(packet);
      return;
    }
    let sent: boolean;
    try {
      sent = this.trySend(packet);
    } catch (err) {
      const tooBig = tooBigError(err, data.length);
      if (tooBig) throw tooBig;
      // The socket is broken (EPIPE, ECONNRESET...): the channel is over.
      this.log.warn({ err }, 'send failed, closing channel');
      this.close();
      onSent?.(err as Error);
      return;
    }
    if (sent) {
      onSent?.();
    } else {
      this.queue.push(packet);
      this.updatePoll(true);
    }
  }

  /** Close the channel and its fd; pending sends get their callback with an error. Idempotent. */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.poller.close();
    try {
      this.native.close(this.fd);
    } catch (err) {
      this.log.warn({ err }, 'closing channel fd failed');
    }
    const pending = this.queue.splice(0);
    for (const packet of pending) {
      packet.onSent?.(new StatusError(Code.UNAVAILABLE, 'helper channel closed before the message was sent'));
    }
    this.emit('close');
  }

  /** Returns true when sent, false on EAGAIN; throws on socket errors. */
  private trySend(packet: QueuedPacket): boolean {
    return this.native.seqpacketSend(this.fd, packet.data, packet.fds) >= 0;
  }

  private updatePoll(writable: boolean): void {
    if (this.isClosed || this.wantWritable === writable) return;
    this.wantWritable = writable;
    this.poller.start(true, writable);
  }

  private onPoll(status: number, events: { readable: boolean; writable: boolean; disconnect: boolean }): void {
    if (this.isClosed) return;
    if (status < 0) {
      this.log.warn({ status }, 'poll error on channel, closing');
      this.close();
      return;
    }
    if (events.writable) this.flush();
    if (events.readable || events.disconnect) this.drain();
  }

  private flush(): void {
    while (!this.isClosed && this.queue.length > 0) {
      const packet = this.queue[0];
      let sent: boolean;
      try {
        sent = this.trySend(packet);
      } catch (err) {
        this.queue.shift();
        const tooBig = tooBigError(err, packet.data.length);
        if (tooBig) {
          this.log.error({ bytes: packet.data.length }, tooBig.message);
          packet.onSent?.(tooBig);
          continue;
        }
        this.log.warn({ err }, 'send failed, closing channel');
        packet.onSent?.(err as Error);
        this.close();
        return;
      }
      if (!sent) return;
      this.queue.shift();
      packet.onSent?.();
    }
    this.updatePoll(false);
  }

  private drain(): void {
    while (!this.isClosed) {
      let msg;
      try {
        msg = this.native.seqpacketRecv(this.fd, HELPER_MAX_PACKET);
      } catch (err) {
        this.log.warn({ err }, 'receive failed, closing channel');
        this.close();
        return;
      }
      if (msg === null) return;
      if (msg.eof) {
        this.close();
        return;
      }
      if (msg.truncated) {
        this.closeFds(msg.fds);
        if (this.onTruncated(msg.data, msg.fds.length)) continue;
        this.log.error(
          { bytes: msg.data.length, fds: msg.fds.length },
          `received a truncated packet (more than ${HELPER_MAX_PACKET} bytes or ${MAX_FDS_PER_PACKET} fds), closing channel`,
        );
        this.close();
        return;
      }
      let message: unknown;
      try {
        message = decodeMessage(msg.data);
      } catch (err) {
        this.closeFds(msg.fds);
        this.log.error({ err, bytes: msg.data.length }, 'received a packet that is not valid msgpack, closing channel');
        this.close();
        return;
      }
      try {
        this.emit('message', message, msg.fds);
      } catch (err) {
        // A listener bug must not kill the process or stall the channel.
        this.log.error({ err }, 'message listener threw');
      }
    }
  }

  /**
   * A packet whose fds did not all fit (MSG_CTRUNC: more than MAX_FDS_PER_PACKET, or our fd
   * table is full) but whose bytes decode: hand it to the `truncated` listeners (their fds were
   * closed already) and keep the channel. Returns false (the caller closes the channel) when
   * nobody listens or the bytes do not decode (MSG_TRUNC: the packet itself was cut).
   */
  private onTruncated(data: Buffer, fdsReceived: number): boolean {
    if (this.listenerCount('truncated') === 0) return false;
    let message: unknown;
    try {
      message = decodeMessage(data);
    } catch {
      return false;
    }
    const reason = `its file descriptors did not arrive (MSG_CTRUNC: ${fdsReceived} received and closed; the fd table may be full)`;
    this.log.error({ bytes: data.length, fds: fdsReceived }, `received a packet whose ${reason.slice(4)}`);
    try {
      this.emit('truncated', message, reason);
    } catch (err) {
      this.log.error({ err }, 'truncated-message listener threw');
    }
    return true;
  }

  private closeFds(fds: number[]): void {
    for (const fd of fds) {
      try {
        this.native.close(fd);
      } catch {
        // already closed
      }
    }
  }
}
