/**
 * A stream.Duplex over a raw file descriptor (an accepted AF_VSOCK socket, a pipe end, any
 * stream fd), driven by the native addon: readiness comes from a libuv poll watcher
 * ({@link Poller}), bytes move with non-blocking read(2)/write(2). Nothing blocks the event loop.
 *
 * Node cannot wrap AF_VSOCK sockets in a net.Socket, hence this class. The stream owns the fd:
 * destroying the stream stops the watcher and closes the fd. Ending the writable side does not
 * shut the socket down (the addon has no shutdown(2)); callers that are done destroy the stream.
 */
import { Duplex } from 'node:stream';
import { loadNative, type NativeAddon, type Poller } from '../../shared/native';

/** Options of {@link FdStream}. */
export interface FdStreamOptions {
  /** The addon to use (default: {@link loadNative}). */
  native?: NativeAddon;
  /** Bytes asked for per read(2) call (default 64 KiB). */
  readChunkBytes?: number;
}

interface PendingWrite {
  buf: Buffer;
  offset: number;
  callback: (err?: Error | null) => void;
}

/**
 * Duplex stream over `fd`. The fd is switched to non-blocking mode. Errors of read/write
 * (a NativeError, e.g. code "ECONNRESET" or "EPIPE") destroy the stream with that error;
 * a poll failure destroys it with an Error naming the libuv status.
 */
export class FdStream extends Duplex {
  /** The wrapped fd; -1 once closed. */
  fd: number;
  private readonly native: NativeAddon;
  private readonly poller: Poller;
  private readonly readChunkBytes: number;
  private wantRead = false;
  private pendingWrite: PendingWrite | null = null;
  private watching: [boolean, boolean] = [false, false];

  constructor(fd: number, options: FdStreamOptions = {}) {
    super({ allowHalfOpen: true });
    this.fd = fd;
    this.native = options.native ?? loadNative();
    this.readChunkBytes = options.readChunkBytes ?? 64 * 1024;
    this.native.setNonBlocking(fd, true);
    this.poller = new this.native.Poller(fd, (status, events) => this.onPoll(status, events.readable || events.disconnect, events.writable));
  }

  private updateWatch(): void {
    if (this.fd < 0) return;
    const read = this.wantRead;
    const write = this.pendingWrite !== null;
    if (read === this.watching[0] && write === this.watching[1]) return;
    this.watching = [read, write];
    if (read || write) this.poller.start(read, write);
    else this.poller.stop();
  }

  private onPoll(status: number, readable: boolean, writable: boolean): void {
    if (this.fd < 0) return;
    if (status < 0) {
      this.destroy(new Error(`poll on fd ${this.fd} failed (libuv status ${status})`));
      return;
    }
    if (writable && this.pendingWrite) this.flushWrite();
    if (readable && this.wantRead) this.readSome();
  }

  private readSome(): void {
    while (this.wantRead && this.fd >= 0) {
      const buf = Buffer.allocUnsafe(this.readChunkBytes);
      let n: number;
      try {
        n = this.native.read(this.fd, buf, 0, buf.length);
      } catch (err) {
        this.destroy(err as Error);
        return;
      }
      if (n < 0) break; // EAGAIN: wait for the poller
      if (n === 0) {
        this.wantRead = false;
        this.updateWatch();
        this.push(null);
        return;
      }
      if (!this.push(n === buf.length ? buf : buf.subarray(0, n))) this.wantRead = false;
    }
    this.updateWatch();
  }

  override _read(): void {
    this.wantRead = true;
    this.readSome();
  }

  private flushWrite(): void {
    const pending = this.pendingWrite;
    if (!pending || this.fd < 0) return;
    while (pending.offset < pending.buf.length) {
      let n: number;
      try {
        n = this.native.write(this.fd, pending.buf, pending.offset, pending.buf.length - pending.offset);
      } catch (err) {
        this.pendingWrite = null;
        this.updateWatch();
        pending.callback(err as Error);
        return;
      }
      if (n < 0) {
        this.updateWatch(); // EAGAIN: wait until writable
        return;
      }
      pending.offset += n;
    }
    this.pendingWrite = null;
    this.updateWatch();
    pending.callback();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (this.fd < 0) {
      callback(new Error('write on a closed fd stream'));
      return;
    }
    this.pendingWrite = { buf: chunk, offset: 0, callback };
    this.flushWrite();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    const fd = this.fd;
    this.fd = -1;
    // A write in progress is abandoned: the stream machinery fails buffered writes itself.
    this.pendingWrite = null;
    let closeErr: Error | null = null;
    if (fd >= 0) {
      try {
        this.poller.close();
      } catch {
        // already released
      }
      try {
        this.native.close(fd);
      } catch (e) {
        closeErr = e as Error;
      }
    }
    callback(err ?? closeErr);
  }
}
