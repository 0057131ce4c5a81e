/**
 * Small non-blocking I/O helpers over raw fds (native read/write + libuv Poller): the line
 * reader of kata-init's sync pipe, a whole-buffer writer for its plan pipe, and the start gate.
 */
import { StringDecoder } from 'node:string_decoder';
import { loadNative, type NativeAddon, type Poller } from '../../shared/native';
import { Code, StatusError } from '../../shared/protocol';

/** One item read from a line-oriented pipe: a line (without "\n") or end of file. */
export type LineItem = { kind: 'line'; text: string } | { kind: 'eof' } | { kind: 'failed'; error: Error };

/** Longest line accepted, in bytes (kata-init writes ≤ 4096-byte lines). */
const MAX_LINE = 64 * 1024;

/**
 * Reads "\n"-terminated lines from the read end of a pipe `fd` (owned: closed on EOF or by
 * {@link close}). The fd is made non-blocking. {@link next} returns the lines in order, then
 * `eof`, then `eof` again forever.
 */
export class LineReader {
  private readonly native: NativeAddon;
  private readonly poller: Poller;
  private readonly items: LineItem[] = [];
  private waiter: ((item: LineItem) => void) | undefined;
  private partial = '';
  private done = false;
  private fdOpen = true;
  private readonly buf = Buffer.alloc(8192);
  private readonly decoder = new StringDecoder('utf8');

  constructor(private readonly fd: number) {
    this.native = loadNative();
    this.native.setNonBlocking(fd, true);
    this.poller = new this.native.Poller(fd, (status) => this.onReadable(status));
    this.poller.start(true, false);
  }

  /** The next line, or eof (also when reading failed, with kind 'failed' once). */
  next(): Promise<LineItem> {
    const item = this.items.shift();
    if (item) return Promise.resolve(item);
    if (this.done) return Promise.resolve({ kind: 'eof' });
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }

  /** Stop reading and close the fd. Idempotent. */
  close(): void {
    this.finish();
  }

  private push(item: LineItem): void {
    const w = this.waiter;
    if (w) {
      this.waiter = undefined;
      w(item);
    } else {
      this.items.push(item);
    }
  }

  private onReadable(status: number): void {
    if (this.done) return;
    if (status < 0) {
      this.push({ kind: 'failed', error: new Error(`poll error ${status} on sync pipe`) });
      this.finish();
      return;
    }
    for (;;) {
      let n: number;
      try {
        n = this.native.read(this.fd, this.buf, 0, this.buf.length);
      } catch (err) {
        this.push({ kind: 'failed', error: err as Error });
        this.finish();
        return;
      }
      if (n < 0) return; // EAGAIN
      if (n === 0) {
        if (this.partial !== '') this.push({ kind: 'line', text: this.partial });
        this.partial = '';
        this.push({ kind: 'eof' });
        this.finish();
        return;
      }
      this.partial += this.decoder.write(this.buf.subarray(0, n));
      let nl: number;
      while ((nl = this.partial.indexOf('\n')) >= 0) {
        this.push({ kind: 'line', text: this.partial.slice(0, nl) });
        this.partial = this.partial.slice(nl + 1);
      }
      if (this.partial.length > MAX_LINE) {
        this.push({ kind: 'failed', error: new Error(`line longer than ${MAX_LINE} bytes on sync pipe`) });
        this.finish();
        return;
      }
    }
  }

  private finish(): void {
    if (!this.done) {
      this.done = true;
      this.poller.close();
    }
    if (this.fdOpen) {
      this.fdOpen = false;
      try {
        this.native.close(this.fd);
      } catch {
        // already closed
      }
    }
    const w = this.waiter;
    if (w) {
      this.waiter = undefined;
      w({ kind: 'eof' });
    }
  }
}

/**
 * Write all of `data` to the pipe write end `fd` without blocking the event loop (the fd is made
 * non-blocking). Rejects with the errno error (EPIPE when the reader is gone). Does not close fd.
 */
export function writeAll(fd: number, data: Buffer): Promise<void> {
  const native = loadNative();
  native.setNonBlocking(fd, true);
  let offset = 0;
  const attempt = (): boolean => {
    while (offset < data.length) {
      const n = native.write(fd, data, offset, data.length - offset);
      if (n < 0) return false;
      offset += n;
    }
    return true;
  };
  try {
    if (attempt()) return Promise.resolve();
  } catch (err) {
    return Promise.reject(err);
  }
  return new Promise<void>((resolve, reject) => {
    const poller = new native.Poller(fd, (status) => {
      if (status < 0) {
        poller.close();
        reject(new Error(`poll error ${status} writing a pipe`));
        return;
      }
      try {
        if (attempt()) {
          poller.close();
          resolve();
        }
      } catch (err) {
        poller.close();
        reject(err);
      }
    });
    poller.start(false, true);
  });
}

/** close(2) ignoring errors (for cleanup paths); negative or undefined fds are skipped. */
export function closeQuietly(fd: number | undefined): void {
  if (fd === undefined || fd < 0) return;
  try {
    loadNative().close(fd);
  } catch {
    // EBADF (already closed) or EIO: nothing more to do on a cleanup path
  }
}

/**
 * The write end of a container init's start pipe (kata-init fd 5, or the mock's gate): one byte
 * releases the init (StartContainer), closing it without a byte makes a waiting init exit.
 * Used once; owns the fd.
 */
export class StartGate {
  constructor(
    private fd: number,
    private readonly containerId: string,
    private readonly native: NativeAddon = loadNative(),
  ) {}

  /**
   * Write the start byte and close the pipe.
   * Throws StatusError FAILED_PRECONDITION when the gate was already used or closed, or when
   * the init is gone (EPIPE: it exited before start).
   */
  release(): void {
    if (this.fd < 0) throw new StatusError(Code.FAILED_PRECONDITION, `container ${this.containerId} cannot be started any more`);
    try {
      this.native.write(this.fd, Buffer.from([1]), 0, 1);
    } catch (err) {
      throw new StatusError(
        Code.FAILED_PRECONDITION,
        `container ${this.containerId}: its init exited before start (${(err as Error).message})`,
      );
    } finally {
      this.close();
    }
  }

  /** Close without starting (idempotent). */
  close(): void {
    closeQuietly(this.fd);
    this.fd = -1;
  }
}
