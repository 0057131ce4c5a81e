/**
 * Stdio of a container process as control holds it: the parent ends the helper handed over
 * (stdin write end, stdout and stderr read ends; or one pty master), wrapped in Node streams
 * and exposed with the semantics of the agent's ReadStdout / ReadStderr / WriteStdin /
 * CloseStdin rpcs.
 *
 * - Pipes are wrapped with `new net.Socket({fd, readable/writable})` (libuv takes a pipe fd for
 *   a named pipe). A pty master cannot be (libuv sees a TTY, and Node's tty streams write
 *   blocking), so it is wrapped with control/ttrpc/fdstream.ts (native poller, non-blocking).
 * - Output waits per stream in the helper's memfd spool (control/sandbox/spool.ts: pipes are
 *   spliced into it, pty output pwritten; a restarted control plane re-opens it), or in memory
 *   when there is no spool. Above {@link OUTPUT_HIGH_WATER} queued bytes the
 *   source is paused, below {@link OUTPUT_LOW_WATER} it resumes: a slow reader makes the kernel
 *   pipe fill and the writer block (field case B11); nothing is dropped while the process runs.
 *   After its exit, unread output counts against a sandbox-wide byte budget
 *   (output-budget.ts); output dropped by it makes every later read fail DATA_LOSS, never EOF.
 * - Reads are not cut off by the process exit: data written before the exit is delivered
 *   before EOF (B08). Waiting for the process does not close the output streams.
 * - A read returns only bytes that were read, never padding (B10).
 * - Stdin is a bounded queue ({@link InputStream}): at most {@link MAX_PENDING_STDIN} bytes wait
 *   for a process that does not read; a write withdrawn by its caller before it started is
 *   dropped; everything waiting is released on CloseStdin, on the process's exit and on removal.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import { Code, StatusError } from '../../shared/protocol';
import { loadNative } from '../../shared/native';
import { FdStream } from '../ttrpc/fdstream';
import { Spool, SpliceSource } from './spool';

/** Queued bytes above which an output source is paused (1 MiB). */
export const OUTPUT_HIGH_WATER = 1024 * 1024;
/** Queued bytes below which a paused output source resumes (256 KiB). */
export const OUTPUT_LOW_WATER = 256 * 1024;
/** The VEOF character (^D) written to a pty on CloseStdin. */
export const VEOF = 0x04;

/**
 * The error a read reports at end of stream: StatusError OUT_OF_RANGE "EOF".
 * Upstream answers INTERNAL "read meet eof"; the Kata runtime treats any read error as the end
 * of the stream, so the code is free, and OUT_OF_RANGE says what happened (Go's io.EOF maps to
 * it in gRPC conventions) without claiming an internal failure.
 */
export function eofError(): StatusError {
  return new StatusError(Code.OUT_OF_RANGE, 'EOF');
}

interface PendingRead {
  len: number;
  resolve: (data: Buffer) => void;
  reject: (err: Error) => void;
}

/**
 * Where an {@link OutputStream} keeps output read from its source and not yet taken by a read:
 * in memory ({@link MemoryStore}) or in the helper's memfd spool ({@link SpoolStore}, which a
 * restarted control plane re-opens: control/sandbox/spool.ts).
 */
export interface OutputStore {
  /** Bytes stored and not taken. */
  readonly queued: number;
  /** Store bytes read by the source (a source that stores by itself, as splice does, never calls this). */
  push(chunk: Buffer): void;
  /** Take up to `len` bytes (caller checked `queued` > 0). */
  take(len: number): Buffer;
  /** `n` taken bytes were written to the runtime. */
  commit(n: number): void;
  /** A buffer from {@link take} is referenced by nobody any more (may back a later take). */
  recycle?(buf: Uint8Array): void;
  /** Drop what is queued; returns the bytes dropped. */
  drop(): number;
  /** Release the storage (close the spool). */
  close(): void;
  /** Bytes a previous control plane dropped from this stream (recorded in its spool), or null. */
  readonly droppedBefore: number | null;
}

/** Output kept in control's memory, as a chunk queue (no spool: the mock's tests, passfd). */
export class MemoryStore implements OutputStore {
  private readonly chunks: Buffer[] = [];
  private head = 0;
  queued = 0;
  readonly droppedBefore = null;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.queued += chunk.length;
  }

  take(len: number): Buffer {
    const first = this.chunks[this.head];
    let out: Buffer;
    if (first.length >= len || this.head === this.chunks.length - 1) {
      const n = Math.min(len, first.length);
      out = first.subarray(0, n);
      if (n === first.length) this.head++;
      else this.chunks[this.head] = first.subarray(n);
    } else {
      const parts: Buffer[] = [];
      let n = 0;
      while (n < len && this.head < this.chunks.length) {
        const c = this.chunks[this.head];
        const want = len - n;
        if (c.length <= want) {
          parts.push(c);
          n += c.length;
          this.head++;
        } else {
          parts.push(c.subarray(0, want));
          this.chunks[this.head] = c.subarray(want);
          n += want;
        }
      }
      out = Buffer.concat(parts, n);
    }
    this.queued -= out.length;
    if (this.head > 1024 && this.head * 2 > this.chunks.length) {
      this.chunks.splice(0, this.head);
      this.head = 0;
    }
    return out;
  }

  commit(): void {
    // nothing survives control anyway
  }

  drop(): number {
    const n = this.queued;
    this.chunks.length = 0;
    this.head = 0;
    this.queued = 0;
    return n;
  }

  close(): void {
    this.drop();
  }
}

/** Output kept in a {@link Spool} (a memfd the helper holds too). */
export class SpoolStore implements OutputStore {
  constructor(readonly spool: Spool) {}

  get droppedBefore(): number | null {
    return this.spool.dropped;
  }

  get queued(): number {
    return this.spool.fd < 0 ? 0 : this.spool.queued;
  }

  push(chunk: Buffer): void {
    this.spool.append(chunk);
  }

  take(len: number): Buffer {
    return this.spool.take(len);
  }

  commit(n: number): void {
    if (this.spool.fd >= 0) this.spool.commit(n);
  }

  recycle(buf: Uint8Array): void {
    this.spool.recycle(buf);
  }

  drop(): number {
    return this.spool.fd < 0 ? 0 : this.spool.drop();
  }

  close(): void {
    this.spool.close();
  }
}

/** What an {@link OutputStream} reads from: a Readable, or a {@link SpliceSource} ('stored' events). */
export interface OutputSource {
  on(event: string, listener: (arg: Buffer) => void): unknown;
  pause(): unknown;
  resume(): unknown;
  destroy(): unknown;
  /** Store what the source holds now, synchronously (a SpliceSource: splice what the pipe holds). */
  pull?(): void;
}

/**
 * One output stream (stdout, stderr or a pty master's output): a store fed by `source`.
 * `source` is destroyed and the store closed by {@link OutputStream.destroy}.
 */
export class OutputStream {
  private ended = false;
  private paused = false;
  private readonly readers: PendingRead[] = [];
  /** Set by {@link drop}: what every later read fails with (never a silent EOF). */
  private lost: StatusError | null = null;
  /** Called after bytes were queued (the unread-output budget watches exited processes). */
  onQueued: (() => void) | null = null;

  /**
   * @param source a readable byte stream ('data' chunks go to the store) or a source that stores
   *   by itself and reports 'stored' (byte count); an `error` is treated as end of stream (EIO
   *   on a pty master once the slave side is closed is the normal end of a terminal's output)
   * @param store where output waits for reads (default in memory)
   * @param highWater pause the source above this many queued bytes
   * @param lowWater resume it below this many
   */
  constructor(
    private readonly source: OutputSource,
    private readonly store: OutputStore = new MemoryStore(),
    private readonly highWater = OUTPUT_HIGH_WATER,
    private readonly lowWater = OUTPUT_LOW_WATER,
  ) {
    source.on('data', (chunk: Buffer) => this.onData(chunk));
    source.on('stored', () => this.onStored());
    source.on('end', () => this.onEnd());
    source.on('close', () => this.onEnd());
    source.on('error', () => this.onEnd());
  }

  /** Bytes queued and not yet read. */
  get queuedBytes(): number {
    return this.store.queued;
  }

  /** True once the source reached its end (queued bytes may still be readable). */
  get sourceEnded(): boolean {
    return this.ended;
  }

  /** True when the source reached its end and every queued byte has been read (or was dropped). */
  get drained(): boolean {
    return this.ended && this.store.queued === 0;
  }

  /** Reads waiting for data. */
  get pendingReads(): number {
    return this.readers.length;
  }

  private drainWaiters: (() => void)[] = [];

  /** Call `fn` once the stream is {@link drained} (at once when it is). */
  onceDrained(fn: () => void): void {
    this.drainWaiters.push(fn);
    this.checkDrained();
  }

  private checkDrained(): void {
    if (!this.drained || this.drainWaiters.length === 0) return;
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const fn of waiters) fn();
  }

  /** Bytes a previous control plane dropped from this stream (its spool says so), or null. */
  get droppedBefore(): number | null {
    return this.store.droppedBefore;
  }

  /** The error reads fail with after {@link drop}, or null. */
  get lostError(): StatusError | null {
    return this.lost;
  }

  private onData(chunk: Buffer): void {
    if (chunk.length === 0 || this.lost) return;
    this.store.push(chunk);
    this.onStored();
  }

  private onStored(): void {
    if (!this.pulling) this.serve();
    this.onQueued?.();
    if (this.store.queued > this.highWater && !this.paused && !this.ended) {
      this.paused = true;
      this.source.pause();
    }
  }

  private onEnd(): void {
    if (this.ended) return;
    this.ended = true;
    if (!this.pulling) this.serve();
  }

  /** True while {@link take} pulls from the source: the read being served comes first, so no other is served meanwhile. */
  private pulling = false;

  /** Bytes taken by reads whose {@link commit} has not come yet. */
  private uncommitted = 0;

  /**
   * Take up to `len` bytes off the store (caller checked it is non-empty). When fewer than
   * `len` are stored, what the source holds already (the pipe) is pulled in first, so a read
   * gets up to `len` bytes without waiting for more.
   */
  private take(len: number): Buffer {
    if (this.store.queued < len && this.source.pull && !this.paused && !this.ended) {
      this.pulling = true;
      try {
        this.source.pull();
      } finally {
        this.pulling = false;
      }
    }
    const out = this.store.take(len);
    this.uncommitted += out.length;
    if (this.paused && this.store.queued < this.lowWater && !this.ended) {
      this.paused = false;
      this.source.resume();
    }
    return out;
  }

  private serve(): void {
    this.serveReaders();
    this.checkDrained();
    this.releaseIfDone();
  }

  private serveReaders(): void {
    while (this.readers.length > 0) {
      if (this.store.queued > 0 && !this.lost) {
        const r = this.readers.shift()!;
        let data: Buffer;
        try {
          data = this.take(r.len);
        } catch (err) {
          r.reject(err instanceof StatusError ? err : new StatusError(Code.INTERNAL, `reading the output spool failed: ${(err as Error).message}`));
          continue;
        }
        r.resolve(data);
      } else if (this.ended || this.lost) {
        this.readers.shift()!.reject(this.lost ?? eofError());
      } else {
        return;
      }
    }
  }

  /**
   * The read of {@link read} when it can be answered at once: up to `len` bytes (> 0) when some
   * are queued and no read waits before it; null otherwise (then call {@link read}). Throws
   * StatusError INTERNAL when the spool cannot be read, DATA_LOSS (the {@link drop} error).
   */
  tryRead(len: number): Buffer | null {
    if (this.readers.length > 0) return null;
    if (this.lost) throw this.lost;
    if (this.store.queued === 0) return null;
    let data: Buffer;
    try {
      data = this.take(len);
    } catch (err) {
      throw err instanceof StatusError ? err : new StatusError(Code.INTERNAL, `reading the output spool failed: ${(err as Error).message}`);
    }
    this.checkDrained();
    return data;
  }

  /**
   * Read up to `len` bytes (> 0): resolves with 1..len bytes as soon as any are queued, waiting
   * if none are; concurrent reads are served in call order. Rejects with {@link eofError} once
   * the source has ended and the queue is empty. When `signal` aborts before the read is
   * served (the caller's deadline passed or its connection dropped), the read is withdrawn —
   * it takes no bytes — and rejects with the signal's reason.
   */
  read(len: number, signal?: AbortSignal): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason instanceof Error ? signal.reason : new StatusError(Code.CANCELLED, 'read cancelled'));
        return;
      }
      const onAbort = (): void => {
        const i = this.readers.indexOf(entry);
        if (i < 0) return;
        this.readers.splice(i, 1);
        reject(signal!.reason instanceof Error ? signal!.reason : new StatusError(Code.CANCELLED, 'read cancelled'));
      };
      const entry: PendingRead = {
        len,
        resolve: (data) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(data);
        },
        reject: (err) => {
          signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.readers.push(entry);
      this.serve();
    });
  }

  /**
   * `n` bytes of a read's answer have been written to the runtime: a spool records them as
   * delivered (a restarted control plane resumes after them) and frees them.
   */
  commit(n: number): void {
    if (n <= 0) return;
    this.store.commit(n);
    this.uncommitted = Math.max(0, this.uncommitted - n);
    this.releaseIfDone();
  }

  /**
   * A buffer a read resolved with is referenced by nobody any more (its answer was written to
   * the socket): the store may reuse it. Never call it for a buffer still in use.
   */
  recycle(buf: Uint8Array): void {
    this.store.recycle?.(buf);
  }

  /** Drained and every read committed: control needs neither the source nor the store any more. */
  private releaseIfDone(): void {
    if (this.drained && this.uncommitted === 0) {
      this.store.close();
      this.source.destroy();
    }
  }

  /**
   * Drop what is queued and close the source, and make every later read fail with `err` instead
   * of EOF (the unread-output budget: data is never dropped silently). Returns the number of
   * queued bytes dropped. A second drop keeps the first error.
   */
  drop(err: (droppedBytes: number) => StatusError): number {
    const dropped = this.store.drop();
    this.lost ??= err(dropped);
    this.onQueued = null;
    this.destroy();
    return dropped;
  }

  /** Close the source and drop queued data; pending and later reads get EOF. Idempotent. */
  destroy(): void {
    this.store.close();
    this.source.destroy();
    this.onEnd();
  }
}

/**
 * Bytes of stdin that may wait in control for a process beyond what its pipe or pty has
 * accepted (8 MiB). A WriteStdin that would exceed it fails RESOURCE_EXHAUSTED at once.
 */
export const MAX_PENDING_STDIN = 8 * 1024 * 1024;

/**
 * Size of the pieces a write is handed to the pipe in (1 MiB, one stdio pipe buffer: the helper
 * grows them, helper/ops/registry.ts STDIO_PIPE_SIZE; a 1 MiB WriteStdin into an empty pipe is
 * one write(2)). A pty takes less per write; the sink queues the rest of the piece.
 */
export const STDIN_CHUNK = 1024 * 1024;

interface PendingWrite {
  readonly data: Buffer;
  /** Bytes handed to the sink so far. */
  handed: number;
  /** Bytes the sink reported written (accepted by the kernel). */
  accepted: number;
  /** True once the first piece was handed to the sink: the write then always runs to its end. */
  started: boolean;
  /** Resolves the caller with the length; undefined for internal writes (the pty VEOF). */
  readonly resolve?: (n: number) => void;
  readonly reject?: (err: Error) => void;
  readonly signal?: AbortSignal;
  readonly onAbort?: () => void;
}

function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new StatusError(Code.CANCELLED, 'write cancelled');
}

/**
 * A stdin sink (pipe write end or pty master) with full-write semantics and a bounded queue.
 *
 * Writes are queued in call order and handed to the sink {@link STDIN_CHUNK} bytes at a time,
 * the next piece only once the kernel took the previous one, so what waits in memory is what the
 * process has not read yet, and it is bounded by `maxPending` bytes ({@link MAX_PENDING_STDIN}).
 * A write whose caller gave up (its AbortSignal fired: the ttRPC deadline passed or the
 * connection dropped) before any of its bytes reached the sink is withdrawn; one that started is
 * written to its end so that the process never sees a torn write followed by later data.
 */
export class InputStream {
  private closed = false;
  /** What a write is refused with once closed (default FAILED_PRECONDITION "stdin is closed"). */
  private closedError: StatusError | null = null;
  private failure: Error | null = null;
  private readonly queue: PendingWrite[] = [];
  /** Bytes of queued writes the kernel has not accepted yet. */
  private pending = 0;
  /** True while a piece is handed to the sink and its callback has not run. */
  private busy = false;

  /**
   * @param sink the pipe write end (net.Socket) or pty master (FdStream)
   * @param maxPending bytes that may wait beyond what the sink accepted (default
   *   {@link MAX_PENDING_STDIN})
   */
  constructor(
    private readonly sink: Writable,
    private readonly maxPending = MAX_PENDING_STDIN,
  ) {
    sink.on('error', (err: Error) => {
      this.failure = err;
      this.failAll(this.brokenError(err));
    });
  }

  /** True after {@link InputStream.close} (or {@link InputStream.markClosed}). */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Writes (WriteStdin calls) not completed yet. */
  get pendingWrites(): number {
    return this.queue.filter((e) => e.resolve !== undefined).length;
  }

  /** Bytes written by callers that the process has not taken yet (queued or in the sink). */
  get pendingBytes(): number {
    return this.pending;
  }

  /**
   * Write all of `data`; resolves with its length once every byte has been accepted by the
   * kernel (the promise stays pending while the pipe or pty is full — backpressure from the
   * process). Writes complete in call order. Throws StatusError:
   * - FAILED_PRECONDITION "stdin is closed" after CloseStdin (or the process's exit), and
   *   FAILED_PRECONDITION naming the errno when the write fails (e.g. EPIPE: nobody reads);
   *   writes still queued then fail the same way;
   * - RESOURCE_EXHAUSTED when `data` would make more than `maxPending` bytes wait (nothing of
   *   it is queued);
   * - the signal's reason (DEADLINE_EXCEEDED, CANCELLED) when `signal` aborts before any of the
   *   bytes reached the sink; the write is then dropped.
   */
  write(data: Uint8Array, signal?: AbortSignal): Promise<number> {
    if (this.closed) return Promise.reject(this.closedError ?? new StatusError(Code.FAILED_PRECONDITION, 'stdin is closed'));
    if (this.failure || this.sink.destroyed) return Promise.reject(this.brokenError(this.failure));
    if (data.length === 0) return Promise.resolve(0);
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    if (this.pending + data.length > this.maxPending) {
      return Promise.reject(
        new StatusError(
          Code.RESOURCE_EXHAUSTED,
          `stdin write of ${data.length} bytes refused: ${this.pending} bytes already wait for the process to read its stdin, ` +
            `and at most ${this.maxPending} bytes may wait beyond what the pipe accepted`,
        ),
      );
    }
    return new Promise<number>((resolve, reject) => {
      const entry: PendingWrite = {
        data: Buffer.from(data.buffer, data.byteOffset, data.byteLength),
        handed: 0,
        accepted: 0,
        started: false,
        resolve,
        reject,
        signal,
        onAbort: signal
          ? () => {
              if (entry.started) return; // runs to its end (never torn)
              const i = this.queue.indexOf(entry);
              if (i < 0) return;
              this.queue.splice(i, 1);
              this.pending -= entry.data.length;
              reject(abortReason(signal));
            }
          : undefined,
      };
      if (signal && entry.onAbort) signal.addEventListener('abort', entry.onAbort, { once: true });
      this.enqueue(entry);
    });
  }

  private enqueue(entry: PendingWrite): void {
    this.queue.push(entry);
    this.pending += entry.data.length;
    this.pump();
  }

  /** Hand the next piece of the head write to the sink unless one is in flight. */
  private pump(): void {
    if (this.busy || this.queue.length === 0 || this.sink.destroyed) return;
    const head = this.queue[0];
    const piece = head.data.subarray(head.handed, head.handed + STDIN_CHUNK);
    head.handed += piece.length;
    head.started = true;
    this.busy = true;
    this.sink.write(piece, (err) => {
      this.busy = false;
      if (this.queue[0] !== head) return; // failed and dropped meanwhile
      if (err) {
        this.failure ??= err;
        this.failAll(this.brokenError(err));
        return;
      }
      head.accepted += piece.length;
      this.pending -= piece.length;
      if (head.accepted === head.data.length) {
        this.queue.shift();
        this.settle(head);
        head.resolve?.(head.data.length);
      }
      this.pump();
    });
  }

  private settle(entry: PendingWrite): void {
    if (entry.signal && entry.onAbort) entry.signal.removeEventListener('abort', entry.onAbort);
  }

  /** Reject and drop every queued write. */
  private failAll(err: Error): void {
    const entries = this.queue.splice(0);
    this.pending = 0;
    for (const e of entries) {
      this.settle(e);
      e.reject?.(err);
    }
  }

  private brokenError(err: Error | null): StatusError {
    const code = (err as NodeJS.ErrnoException | null)?.code ?? 'closed';
    return new StatusError(Code.FAILED_PRECONDITION, `stdin is broken (${code}): the process no longer reads it`);
  }

  /**
   * Refuse further writes without closing the sink (the pty case: the master stays open for the
   * output). Writes still queued fail with `reason` (default FAILED_PRECONDITION "stdin is
   * closed"), which later writes get too; `last` (the pty's VEOF) is queued as the final bytes.
   */
  markClosed(reason?: StatusError, last?: Buffer): void {
    if (this.closed) return;
    this.closed = true;
    this.closedError = reason ?? null;
    this.failAll(reason ?? new StatusError(Code.FAILED_PRECONDITION, 'stdin was closed before this write completed'));
    if (last && last.length > 0 && !this.failure && !this.sink.destroyed) {
      this.enqueue({ data: last, handed: 0, accepted: 0, started: false });
    }
  }

  /**
   * CloseStdin on a pipe: refuse further writes, fail the writes still queued (their callers
   * were not told they succeeded; FAILED_PRECONDITION) and close the sink, so the process reads
   * EOF after the bytes of every successful write. `reason` as for {@link markClosed}. Idempotent.
   */
  close(reason?: StatusError): void {
    this.markClosed(reason);
    if (!this.sink.destroyed) this.sink.destroy();
  }

  /** Close the sink now: queued writes fail (FAILED_PRECONDITION) and are dropped. Idempotent. */
  destroy(reason?: StatusError): void {
    this.close(reason);
  }
}

/** Close fds, ignoring errors (fds the helper sent that we do not use). */
export function closeFds(fds: Iterable<number>): void {
  for (const fd of fds) {
    try {
      fs.closeSync(fd);
    } catch {
      // already closed
    }
  }
}

/**
 * The stdio of one process.
 *
 * With a terminal, stdout and stderr are the same {@link OutputStream} over the pty master
 * (ReadStdout and ReadStderr read the same data, as upstream).
 */
export class ProcessStdio {
  private stdinEofSent = false;

  private constructor(
    readonly terminal: boolean,
    readonly stdin: InputStream,
    readonly stdout: OutputStream,
    readonly stderr: OutputStream,
    /** The pty master fd (terminal only), for window resizes; -1 otherwise. */
    private readonly ptyFd: number,
    private readonly ptyStream: { destroyed: boolean } | null,
  ) {}

  /**
   * Wrap the fds a helper createContainer/execProcess response (or a `state` page) carried:
   * "stdin", "stdout", "stderr" without a terminal, "pty" with one; optionally the helper's
   * output spools "stdoutSpool" and "stderrSpool" (or "ptySpool"), memfds that make output
   * survive a control-plane restart (control/sandbox/spool.ts): the pipes are then drained into
   * them with splice(2), the pty output with read + pwrite. Without spools output waits in
   * memory. `adopted` (a `state` page): stdin may be missing (closed by CloseStdin before the
   * restart). Takes ownership of every fd in `fds` (unused ones are closed). Throws StatusError
   * INTERNAL when an expected fd is missing or a spool is not one (a helper bug); the fds are
   * closed then too.
   */
  static fromFds(fds: Readonly<Record<string, number>>, terminal: boolean, options: { adopted?: boolean } = {}): ProcessStdio {
    const want = terminal ? ['pty'] : ['stdin', 'stdout', 'stderr'];
    const spoolNames = terminal ? ['ptySpool'] : ['stdoutSpool', 'stderrSpool'];
    // An adopted process whose stdin was closed (CloseStdin) comes without it.
    const stdinClosed = options.adopted === true && !terminal && typeof fds.stdin !== 'number';
    const missing = want.filter((name) => typeof fds[name] !== 'number' && !(stdinClosed && name === 'stdin'));
    const extra = Object.entries(fds).filter(([name]) => !want.includes(name) && !spoolNames.includes(name)).map(([, fd]) => fd);
    closeFds(extra);
    const mine = [...want, ...spoolNames].map((n) => fds[n]).filter((fd): fd is number => typeof fd === 'number');
    if (missing.length > 0) {
      closeFds(mine);
      throw new StatusError(
        Code.INTERNAL,
        `helper sent no ${missing.join(', ')} fd for a process with terminal=${terminal} (got ${Object.keys(fds).join(', ') || 'none'})`,
      );
    }
    const spools: Spool[] = [];
    const spoolFor = (name: string): Spool | null => {
      const fd = fds[name];
      if (typeof fd !== 'number') return null;
      const spool = new Spool(fd);
      spools.push(spool);
      return spool;
    };
    try {
      if (terminal) {
        const fd = fds.pty;
        const spool = spoolFor('ptySpool');
        let stream: FdStream;
        try {
          stream = new FdStream(fd, { native: loadNative() });
        } catch (err) {
          throw new StatusError(Code.INTERNAL, `cannot wrap the pty master: ${(err as Error).message}`);
        }
        const out = new OutputStream(stream, spool ? new SpoolStore(spool) : undefined);
        return new ProcessStdio(true, new InputStream(stream), out, out, fd, stream);
      }
      const output = (name: 'stdout' | 'stderr'): OutputStream => {
        const spool = spoolFor(`${name}Spool`);
        if (!spool) return new OutputStream(new net.Socket({ fd: fds[name], readable: true, writable: false }));
        return new OutputStream(new SpliceSource(fds[name], spool), new SpoolStore(spool));
      };
      const stdout = output('stdout');
      const stderr = output('stderr');
      const stdin = new InputStream(stdinClosed ? new PassThrough() : new net.Socket({ fd: fds.stdin, readable: false, writable: true }));
      if (stdinClosed) stdin.close();
      return new ProcessStdio(false, stdin, stdout, stderr, -1, null);
    } catch (err) {
      for (const sp of spools) sp.close();
      closeFds(mine.filter((fd) => !spools.some((sp) => sp.fd === fd)));
      throw err instanceof StatusError ? err : new StatusError(Code.INTERNAL, `cannot wrap the process's stdio: ${(err as Error).message}`);
    }
  }

  /** Stdio of a process whose fds are gone (an adopted process released by the helper): reads end at once (EOF), writes fail FAILED_PRECONDITION. */
  static ended(terminal: boolean): ProcessStdio {
    const make = (): OutputStream => new OutputStream(new PassThrough());
    const out = make();
    const stdio = new ProcessStdio(terminal, new InputStream(new PassThrough()), out, terminal ? out : make(), -1, null);
    stdio.destroy(new StatusError(Code.FAILED_PRECONDITION, 'the process has exited: its stdin is closed'));
    return stdio;
  }

  /**
   * CloseStdin. Pipes: close the stdin write end (the helper must close its copy too); writes
   * still waiting for the process fail FAILED_PRECONDITION and are dropped (their callers were
   * not told they succeeded). Terminal: the master is also the output, so it stays open (field
   * case B13); waiting writes fail likewise, the VEOF character ^D is queued once (EOF for a
   * reader in canonical mode) and further writes are refused. Idempotent.
   */
  async closeStdin(): Promise<void> {
    if (!this.terminal) {
      this.stdin.close();
      return;
    }
    if (this.stdinEofSent || this.stdin.isClosed) return;
    this.stdinEofSent = true;
    this.stdin.markClosed(undefined, Buffer.of(VEOF));
  }

  /**
   * The process has exited: nobody will read its stdin any more. Writes still waiting fail
   * (FAILED_PRECONDITION "the process has exited"), and so do later ones; a stdin pipe is
   * closed (a pty master stays open for the output). Output is untouched.
   */
  processExited(): void {
    const reason = new StatusError(Code.FAILED_PRECONDITION, 'the process has exited: its stdin is closed');
    if (this.terminal) this.stdin.markClosed(reason);
    else this.stdin.close(reason);
  }

  /**
   * TIOCSWINSZ on the pty master. Throws StatusError FAILED_PRECONDITION without a terminal,
   * INTERNAL when the ioctl fails. Once the pty is closed (every slave end gone: the process is
   * ending) there is no window left to size: nothing is done, no error (a runtime resizes as
   * the process ends, e.g. `ctr run -t`).
   */
  resize(rows: number, columns: number): void {
    if (!this.terminal) throw new StatusError(Code.FAILED_PRECONDITION, 'process has no terminal');
    if (!this.ptyStream || this.ptyStream.destroyed) return;
    try {
      loadNative().setWinsize(this.ptyFd, rows, columns);
    } catch (err) {
      throw new StatusError(Code.INTERNAL, `TIOCSWINSZ ${rows}x${columns} failed: ${(err as Error).message}`);
    }
  }

  /** Call `fn` once every output is drained (read to its end or dropped); at once when they are. */
  whenOutputDrained(fn: () => void): void {
    const outs = this.outputs();
    let left = outs.length;
    for (const o of outs) o.onceDrained(() => --left === 0 && fn());
  }

  /** True when both outputs reached EOF and were read to the end (or were dropped). */
  get outputDrained(): boolean {
    return this.stdout.drained && this.stderr.drained;
  }

  /** The distinct output streams: [stdout, stderr], or [pty output] with a terminal. */
  outputs(): OutputStream[] {
    return this.stderr === this.stdout ? [this.stdout] : [this.stdout, this.stderr];
  }

  /** Output bytes queued and not read yet (both streams). */
  get unreadBytes(): number {
    return this.outputs().reduce((n, o) => n + o.queuedBytes, 0);
  }

  /** Reads waiting on the outputs. */
  get pendingReads(): number {
    return this.outputs().reduce((n, o) => n + o.pendingReads, 0);
  }

  /** Close stdin if it is a pipe (after the process exited); the outputs stay readable. */
  releaseStdin(): void {
    if (!this.terminal) this.stdin.destroy();
  }

  /**
   * Close everything and drop queued output and stdin (container removal, record eviction);
   * waiting writes fail with `reason` (default FAILED_PRECONDITION "stdin is closed").
   */
  destroy(reason?: StatusError): void {
    this.stdin.destroy(reason);
    this.stdout.destroy();
    if (this.stderr !== this.stdout) this.stderr.destroy();
  }
}
