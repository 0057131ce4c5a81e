/**
 * A pino destination that keeps the last log lines in memory (a ring buffer), for the debug
 * endpoint's GET /v1/logs: the lines already written to stderr, without reading the journal.
 * Each line is the JSON record exactly as written (one object, no trailing newline); lines
 * longer than {@link LogRing.maxLineBytes} are cut and marked. Subscribers get every new line
 * (live tail); a subscriber is never blocked on and never slows logging.
 */
import { Writable } from 'node:stream';

export class LogRing extends Writable {
  /** Longest line kept (bytes of UTF-16 length; longer lines end with "…[cut]"). */
  static readonly maxLineBytes = 16384;
  private readonly lines: string[] = [];
  private next = 0;
  private readonly subscribers = new Set<(line: string) => void>();
  private partial = '';

  /** `capacity`: lines kept (1..100000; default 1000). Throws RangeError outside. */
  constructor(readonly capacity = 1000) {
    super({ decodeStrings: false });
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 100000) throw new RangeError(`log ring capacity ${capacity} (want 1..100000)`);
  }

  override _write(chunk: Buffer | string, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.push(typeof chunk === 'string' ? chunk : chunk.toString('utf8'));
    callback();
  }

  /** Add text (one or more newline-terminated lines; an unterminated tail waits for the rest). */
  push(text: string): void {
    const parts = (this.partial + text).split('\n');
    this.partial = parts.pop() ?? '';
    if (this.partial.length > LogRing.maxLineBytes) {
      parts.push(this.partial);
      this.partial = '';
    }
    for (let line of parts) {
      if (line === '') continue;
      if (line.length > LogRing.maxLineBytes) line = `${line.slice(0, LogRing.maxLineBytes)}…[cut]`;
      if (this.lines.length < this.capacity) this.lines.push(line);
      else this.lines[this.next] = line;
      this.next = (this.next + 1) % this.capacity;
      for (const fn of this.subscribers) {
        try {
          fn(line);
        } catch {
          this.subscribers.delete(fn); // a broken subscriber is dropped, logging goes on
        }
      }
    }
  }

  /** The last `n` lines (all kept lines when n is larger), oldest first. */
  tail(n: number = this.capacity): string[] {
    const ordered = this.lines.length < this.capacity ? this.lines.slice() : [...this.lines.slice(this.next), ...this.lines.slice(0, this.next)];
    return n >= ordered.length ? ordered : ordered.slice(ordered.length - Math.max(0, n));
  }

  /** Call `fn` with every line written from now on; returns the unsubscribe function. */
  subscribe(fn: (line: string) => void): () => void {
    this.subscribers.add(fn);
    return () => this.subscribers.delete(fn);
  }

  /** Number of live-tail subscribers. */
  get subscriberCount(): number {
    return this.subscribers.size;
  }
}
