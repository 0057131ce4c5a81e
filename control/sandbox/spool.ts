/**
 * Output spools: crash-safe buffering of a process's stdout/stderr (or pty output) in control.
 *
 * The helper creates one memfd per output stream when it spawns a process, keeps a reference
 * (its `state` op hands it to a restarted control plane) and passes it to control with the pipe.
 * Control moves bytes pipe → memfd with splice(2) ({@link SpliceSource}), so at every instant a
 * byte is either still in the kernel pipe or in the memfd — never only in control's memory — and
 * a control plane killed at any moment loses nothing: the next one re-opens the same spool.
 *
 * Layout of a spool file (all integers little-endian):
 * - bytes [0, 4): magic "KSP1"; [4, 8): flags (bit 0: output was dropped by the unread-output
 *   budget); [8, 16): delivered offset (bytes of the stream written to the runtime);
 *   [16, 24): bytes dropped (with flag bit 0). The rest of the first page is unused.
 * - byte {@link SPOOL_DATA} + n holds stream byte n; the file size is SPOOL_DATA + the stream's
 *   end offset (the hole punching keeps the size).
 *
 * A read takes bytes from [cursor, end) (pread); once its response has been written to the
 * runtime's connection, {@link Spool.commit} advances the delivered offset in the header and
 * punches the delivered whole pages out (fallocate PUNCH_HOLE), so memory stays bounded by what
 * is undelivered. A control plane killed between the response write and the header update (a
 * few µs) makes the next one deliver that response's bytes a second time; never a byte lost.
 */
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import { loadNative, type NativeAddon, type Poller } from '../../shared/native';
import { Code, StatusError } from '../../shared/protocol';

/** Offset of stream byte 0 in the spool file (one page for the header). */
export const SPOOL_DATA = 4096;
const PAGE = 4096;
const MAGIC = 0x3150534b; // "KSP1" read little-endian
const FLAG_LOST = 1;
/** Most bytes one splice(2) call moves (the helper makes stdio pipes of 1 MiB). */
const SPLICE_MAX = 1024 * 1024;
/**
 * Delivered pages are punched out once this many bytes of them gathered (256 KiB), not after
 * every read: one fallocate(2) per 256 KiB instead of one per ReadStdout (the shim reads
 * 32 KiB). Memory held beyond the undelivered bytes stays below this.
 */
export const PUNCH_BATCH = 256 * 1024;

/** Reads at least this large (16 KiB) take a recycled buffer ({@link ReadBufferPool}). */
const POOL_MIN = 16 * 1024;
/** Most bytes of free buffers the pool keeps (4 MiB; the largest read is just under 4 MiB). */
const POOL_KEEP = 4 * 1024 * 1024;

/**
 * Read buffers handed out by {@link Spool.take} and given back once the socket write of the
 * answer completed ({@link Spool.recycle}). A fresh 1 MiB Buffer per ReadStdout made the pread
 * fault in 256 new pages and its external memory triggered a V8 mark-compact every ~64 MiB read
 * (docs/ARCHITECTURE.md "Stdio throughput"). Buffers come in power-of-two sizes from 16 KiB; a
 * buffer is only reused after {@link recycle} (the zero-copy answer no longer references it), a
 * buffer never given back is left to the GC. Shared by every spool of the process.
 */
class ReadBufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private freeBytes = 0;
  /** Backing stores handed out and not given back yet. */
  private readonly lent = new WeakSet<ArrayBufferLike>();

  /** A buffer of exactly `n` bytes (n ≥ POOL_MIN) backed by a pooled allocation. */
  get(n: number): Buffer {
    let size = POOL_MIN;
    while (size < n) size *= 2;
    const list = this.free.get(size);
    let buf = list?.pop();
    if (buf) this.freeBytes -= size;
    else buf = Buffer.allocUnsafeSlow(size);
    this.lent.add(buf.buffer);
    return buf.subarray(0, n);
  }

  /** Give back a buffer from {@link get} (anything else, or a second time: ignored). */
  put(view: Uint8Array): void {
    const ab = view.buffer;
    if (!this.lent.has(ab)) return;
    this.lent.delete(ab);
    const size = ab.byteLength;
    if (this.freeBytes + size > POOL_KEEP) return;
    const list = this.free.get(size) ?? [];
    list.push(Buffer.from(ab, 0, size));
    this.free.set(size, list);
    this.freeBytes += size;
  }
}

const readBuffers = new ReadBufferPool();

/** One stream's spool (owns the memfd: {@link Spool.close}). */
export class Spool {
  private end: number;
  private cursor: number;
  private delivered: number;
  /** Stream bytes below this offset have been punched out. */
  private punched: number;
  private lostBytes: number | null;
  private readonly header = Buffer.alloc(24);

  /**
   * Open the spool in `fd` (a memfd from the helper): a fresh one (size 0) gets its header; an
   * existing one (a restarted control plane) resumes at its delivered offset. Throws StatusError
   * INTERNAL for a file that is not a spool (bad magic, size inside the header).
   */
  constructor(
    /** The memfd (-1 once closed). */
    public fd: number,
    private readonly native: NativeAddon = loadNative(),
  ) {
    const size = fs.fstatSync(fd).size;
    const magic = size >= this.header.length && fs.readSync(fd, this.header, 0, this.header.length, 0) === this.header.length ? this.header.readUInt32LE(0) : 0;
    if (size === 0 || (size <= SPOOL_DATA && magic === 0)) {
      // Fresh (or a previous control plane died between the two steps below): no data yet.
      this.end = this.cursor = this.delivered = this.punched = 0;
      this.lostBytes = null;
      fs.ftruncateSync(fd, SPOOL_DATA);
      this.writeHeader();
      return;
    }
    if (size < SPOOL_DATA || magic !== MAGIC) {
      throw new StatusError(Code.INTERNAL, `fd ${fd} is not an output spool (size ${size})`);
    }
    this.end = size - SPOOL_DATA;
    this.delivered = Math.min(Number(this.header.readBigUInt64LE(8)), this.end);
    this.cursor = this.delivered;
    this.punched = 0;
    this.lostBytes = (this.header.readUInt32LE(4) & FLAG_LOST) !== 0 ? Number(this.header.readBigUInt64LE(16)) : null;
  }

  /** Bytes stored and not taken by a read yet. */
  get queued(): number {
    return this.end - this.cursor;
  }

  /** Stream offset of the end of the stored bytes. */
  get endOffset(): number {
    return this.end;
  }

  /** Stream offset up to which bytes were delivered to the runtime (as the header records it). */
  get deliveredOffset(): number {
    return this.delivered;
  }

  /** Bytes dropped by the unread-output budget (recorded in the spool), or null when none were. */
  get dropped(): number | null {
    return this.lostBytes;
  }

  private writeHeader(): void {
    this.header.writeUInt32LE(MAGIC, 0);
    this.header.writeUInt32LE(this.lostBytes === null ? 0 : FLAG_LOST, 4);
    this.header.writeBigUInt64LE(BigInt(this.delivered), 8);
    this.header.writeBigUInt64LE(BigInt(this.lostBytes ?? 0), 16);
    fs.writeSync(this.fd, this.header, 0, this.header.length, 0);
  }

  /** Append `data` at the end (pwrite; the pty path, whose master cannot be spliced). */
  append(data: Buffer): void {
    let off = 0;
    while (off < data.length) off += fs.writeSync(this.fd, data, off, data.length - off, SPOOL_DATA + this.end + off);
    this.end += data.length;
  }

  /**
   * splice(2) up to `max` bytes from the pipe `pipeFd` to the end. Returns the bytes moved, 0 at
   * end of file, -1 when the pipe is empty. Throws the addon's errno error.
   */
  spliceFrom(pipeFd: number, max: number): number {
    const n = this.native.splice(pipeFd, this.fd, SPOOL_DATA + this.end, Math.min(max, SPLICE_MAX));
    if (n > 0) this.end += n;
    return n;
  }

  /**
   * Take up to `len` stored bytes (pread at the cursor); the caller checked {@link queued} > 0.
   * From 16 KiB the buffer is a pooled one: give it back with {@link recycle} once nothing
   * references it any more.
   */
  take(len: number): Buffer {
    const n = Math.min(len, this.queued);
    const buf = n >= POOL_MIN ? readBuffers.get(n) : Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      const r = fs.readSync(this.fd, buf, got, n - got, SPOOL_DATA + this.cursor + got);
      if (r <= 0) throw new StatusError(Code.INTERNAL, `output spool fd ${this.fd}: short read at ${this.cursor + got}`);
      got += r;
    }
    this.cursor += n;
    return buf;
  }

  /**
   * The buffer `buf` from {@link take} is no longer referenced by anyone (its answer's socket
   * write completed): it may back a later read. Anything else is ignored.
   */
  recycle(buf: Uint8Array): void {
    readBuffers.put(buf);
  }

  /**
   * `n` taken bytes have been written to the runtime: record the delivered offset and free the
   * delivered whole pages. Never throws (a failing header write is logged by nobody: the worst
   * outcome is a duplicate delivery after a restart).
   */
  commit(n: number): void {
    this.delivered = Math.min(this.delivered + n, this.cursor);
    try {
      this.writeHeader();
      const whole = Math.floor(this.delivered / PAGE) * PAGE;
      if (whole - this.punched >= PUNCH_BATCH) this.punchTo(whole);
    } catch {
      // closed meanwhile
    }
  }

  private punchTo(offset: number): void {
    if (offset <= this.punched) return;
    this.native.punchHole(this.fd, SPOOL_DATA + this.punched, offset - this.punched);
    this.punched = offset;
  }

  /**
   * Drop every stored byte not taken (the unread-output budget) and record in the spool that
   * output was lost, so that a restarted control plane answers DATA_LOSS too. Returns the bytes
   * dropped now.
   */
  drop(): number {
    const n = this.queued;
    this.lostBytes = (this.lostBytes ?? 0) + n;
    this.cursor = this.end;
    this.delivered = this.end;
    try {
      this.writeHeader();
      this.punchTo(Math.ceil(this.end / PAGE) * PAGE);
    } catch {
      // closed meanwhile
    }
    return n;
  }

  /** Close the memfd (the helper keeps its own reference until the process is released). Idempotent. */
  close(): void {
    if (this.fd < 0) return;
    try {
      fs.closeSync(this.fd);
    } catch {
      // already closed
    }
    this.fd = -1;
  }
}

/**
 * A pipe read end drained into a {@link Spool} by splice(2) whenever it is readable (owns the
 * pipe fd, not the spool). Events: 'stored' (bytes moved), 'end' (EOF), 'error' (treated as the
 * end by the output stream), 'close'. {@link pause} stops draining (back-pressure: the pipe fills
 * and the writer blocks), {@link resume} restarts it.
 */
export class SpliceSource extends EventEmitter {
  private fd: number;
  private readonly poller: Poller;
  private paused = false;
  private finished = false;

  /** Watch `pipeFd` (switched to O_NONBLOCK). Throws the addon's error when it cannot be polled. */
  constructor(pipeFd: number, private readonly spool: Spool, native: NativeAddon = loadNative()) {
    super();
    this.fd = pipeFd;
    native.setNonBlocking(pipeFd, true);
    this.poller = new native.Poller(pipeFd, (status) => {
      if (status < 0) this.fail(new Error(`poll on fd ${this.fd} failed (libuv status ${status})`));
      else this.drain();
    });
    this.poller.start(true, false);
    // Whatever is already in the pipe (an adopted process) is picked up by the first poll.
  }

  /** True once destroyed. */
  get destroyed(): boolean {
    return this.fd < 0;
  }

  private drain(): void {
    let moved = 0;
    while (!this.paused && !this.finished && this.fd >= 0) {
      let n: number;
      try {
        n = this.spool.spliceFrom(this.fd, SPLICE_MAX);
      } catch (err) {
        if (moved > 0) this.emit('stored', moved);
        this.fail(err as Error);
        return;
      }
      if (n < 0) break;
      if (n === 0) {
        if (moved > 0) this.emit('stored', moved);
        moved = 0;
        this.finished = true;
        this.emit('end');
        this.destroy(); // the pipe is done: its fd is not kept (the helper keeps its own copy)
        return;
      }
      moved += n;
      // Let the stream see the bytes (and pause us above its high-water mark) every 1 MiB.
      if (moved >= SPLICE_MAX) {
        this.emit('stored', moved);
        moved = 0;
      }
    }
    if (moved > 0) this.emit('stored', moved);
  }

  private fail(err: Error): void {
    if (this.finished) return;
    this.finished = true;
    this.emit('error', err);
    this.destroy();
  }

  /**
   * Move what the pipe holds now into the spool (a read that wants more than is stored gathers
   * it without waiting for the next poll). Nothing while paused or ended; never throws (a
   * failing splice ends the source as a failing poll does).
   */
  pull(): void {
    if (!this.paused && !this.finished && this.fd >= 0) this.drain();
  }

  /** Stop draining the pipe. */
  pause(): this {
    if (this.paused || this.fd < 0) return this;
    this.paused = true;
    if (!this.finished) this.poller.stop();
    return this;
  }

  /** Drain the pipe again. */
  resume(): this {
    if (!this.paused || this.fd < 0) return this;
    this.paused = false;
    if (!this.finished) {
      this.poller.start(true, false);
      this.drain();
    }
    return this;
  }

  /** Stop watching and close the pipe fd; emits 'close' once. Idempotent. */
  destroy(): this {
    if (this.fd < 0) return this;
    try {
      this.poller.close();
    } catch {
      // already closed
    }
    try {
      fs.closeSync(this.fd);
    } catch {
      // already closed
    }
    this.fd = -1;
    this.emit('close');
    return this;
  }
}
