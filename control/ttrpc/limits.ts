/**
 * Resource limits of the ttRPC server: how many connections, how many requests in flight per
 * connection, how long a frame may stay incomplete, how many response bytes may wait for a
 * peer that does not read.
 *
 * Why: every connection costs an fd. A peer that opened thousands of connections and sent a few
 * header bytes on each ("slowloris") used to exhaust the control plane's fds, and the next
 * helper reply carrying fds lost them (MSG_CTRUNC). The connection cap keeps most of
 * RLIMIT_NOFILE in reserve for container stdio and helper replies. A peer that never reads its
 * responses used to make the control plane buffer them without bound.
 *
 * No upstream counterpart: containerd/ttrpc and ttrpc-rust have no such limits.
 */
import * as fs from 'node:fs';

/** Limits of one {@link TtrpcServer}; see {@link resolveLimits} for the defaults. */
export interface ConnectionLimits {
  /**
   * Connections served at once (all listeners together). At the cap the oldest connection that
   * has not sent a complete frame is closed to make room; if there is none, the new connection
   * is closed at once, with a warning logged.
   */
  maxConnections: number;
  /**
   * Requests in flight on one connection. A request above it is answered RESOURCE_EXHAUSTED
   * (`too many requests in flight on this connection (limit N)`) without running its handler;
   * the connection stays usable. (Not a pause of reading: the runtime keeps WaitProcess and
   * ReadStdout long polls in flight, and a paused connection could never complete them.)
   */
  maxInflightPerConnection: number;
  /**
   * A frame must be complete within this many ms of its first byte, and a new connection must
   * deliver its first complete frame within this many ms; otherwise the connection is closed.
   * The clock does not run while the server itself has stopped reading the connection (write
   * backlog). 0 disables the timer.
   */
  frameTimeoutMs: number;
  /**
   * Response bytes queued for a peer that does not read them. Above it the server stops reading
   * that connection's requests until the backlog has drained below it again.
   */
  maxWriteBacklogBytes: number;
  /**
   * Responses queued for a peer that does not read them; above it reading stops as for
   * maxWriteBacklogBytes. Many small responses cost far more memory than their bytes (each
   * queued write is a few hundred bytes of JavaScript objects: 65,000 queued Health.Check
   * answers, 1 MiB of bytes, held about 50 MB).
   */
  maxWriteBacklogFrames: number;
  /**
   * Bytes of incomplete request frames buffered over all connections together. Each connection
   * may hold one partial frame of up to 4 MiB; without a shared bound 1024 connections could
   * make control buffer 4 GiB. A connection holding more than {@link SMALL_PARTIAL_FRAME} bytes
   * of a partial frame while the total is above this bound stops being read until the total
   * drops (frames complete, or the frame timeout closes stalled connections), except one
   * "leader" whose frame keeps progressing; small frames (Health.Check, WaitProcess ...)
   * always flow. Total held: at most this bound + one 4 MiB frame + one read per connection.
   */
  maxPartialFrameBytes: number;
}

/** Default bound of buffered partial-frame bytes over all connections (64 MiB: 16 maximal frames). */
export const DEFAULT_MAX_PARTIAL_FRAME_BYTES = 64 << 20;
/** A connection holding at most this many bytes of a partial frame is never paused for the shared bound. */
export const SMALL_PARTIAL_FRAME = 64 << 10;

/**
 * A byte count shared by the connections of one server, with waiters to run when it falls
 * back to or below `max`.
 */
export class SharedByteBudget {
  private total = 0;
  private readonly waiters = new Set<() => void>();

  constructor(readonly max: number) {}

  /** Bytes counted now. */
  get used(): number {
    return this.total;
  }

  /** A holder's count changed from `before` to `after`; returns whether the total is within `max`. */
  update(before: number, after: number): boolean {
    this.total += after - before;
    if (this.total <= this.max && this.waiters.size > 0) {
      const ws = [...this.waiters];
      this.waiters.clear();
      for (const w of ws) w();
    }
    return this.total <= this.max;
  }

  /**
   * The one holder allowed to keep reading while the total is above `max`, so that one partial
   * frame always progresses (without it every connection could be paused halfway).
   */
  leader: unknown = undefined;

  /** `holder` no longer needs to lead (its frame completed, or it closed): wake the waiters. */
  releaseLeader(holder: unknown): void {
    if (this.leader !== holder) return;
    this.leader = undefined;
    const ws = [...this.waiters];
    this.waiters.clear();
    for (const w of ws) w();
  }

  /** Run `fn` once when the total is within `max` again or the leader is released. */
  whenAvailable(fn: () => void): void {
    this.waiters.add(fn);
  }

  /** Forget a waiter registered with {@link whenAvailable}. */
  cancel(fn: () => void): void {
    this.waiters.delete(fn);
  }
}

/** Default requests in flight per connection. */
export const DEFAULT_MAX_INFLIGHT = 512;
/** Default frame completion timeout, in ms. */
export const DEFAULT_FRAME_TIMEOUT_MS = 10_000;
/** Default write backlog bound, in bytes (1 MiB; one 4 MiB response may still exceed it once). */
export const DEFAULT_MAX_WRITE_BACKLOG = 1 << 20;
/** Default bound of queued responses per connection. */
export const DEFAULT_MAX_WRITE_BACKLOG_FRAMES = 1024;
/** Upper bound of the default connection cap. */
export const DEFAULT_MAX_CONNECTIONS_CEILING = 1024;

/** The soft and hard RLIMIT_NOFILE of this process (Infinity for "unlimited"), from /proc/self/limits; undefined if unreadable. */
export function nofileLimit(): { soft: number; hard: number } | undefined {
  let text: string;
  try {
    text = fs.readFileSync('/proc/self/limits', 'utf8');
  } catch {
    return undefined;
  }
  const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(text);
  if (!m) return undefined;
  const num = (s: string): number => (s === 'unlimited' ? Infinity : Number(s));
  const soft = num(m[1]);
  const hard = num(m[2]);
  return Number.isNaN(soft) || Number.isNaN(hard) ? undefined : { soft, hard };
}

/**
 * The default connection cap for a soft RLIMIT_NOFILE of `softNofile`: a quarter of it, at least
 * 16 and at most {@link DEFAULT_MAX_CONNECTIONS_CEILING}, so that three quarters of the fd table
 * stay for container stdio, pidfds and helper replies (1024 → 256).
 */
export function defaultMaxConnections(softNofile: number | undefined): number {
  if (softNofile === undefined || !Number.isFinite(softNofile)) return DEFAULT_MAX_CONNECTIONS_CEILING;
  return Math.max(16, Math.min(DEFAULT_MAX_CONNECTIONS_CEILING, Math.floor(softNofile / 4)));
}

/**
 * Fill in defaults: maxConnections from the current soft RLIMIT_NOFILE
 * ({@link defaultMaxConnections}), {@link DEFAULT_MAX_INFLIGHT}, {@link DEFAULT_FRAME_TIMEOUT_MS},
 * {@link DEFAULT_MAX_WRITE_BACKLOG}, {@link DEFAULT_MAX_WRITE_BACKLOG_FRAMES}. Throws RangeError for a value that is not a non-negative
 * integer (a bug of the caller: configuration is validated in control/config.ts), or a cap of 0.
 */
export function resolveLimits(partial: Partial<ConnectionLimits> = {}): ConnectionLimits {
  const limits: ConnectionLimits = {
    maxConnections: partial.maxConnections ?? defaultMaxConnections(nofileLimit()?.soft),
    maxInflightPerConnection: partial.maxInflightPerConnection ?? DEFAULT_MAX_INFLIGHT,
    frameTimeoutMs: partial.frameTimeoutMs ?? DEFAULT_FRAME_TIMEOUT_MS,
    maxWriteBacklogBytes: partial.maxWriteBacklogBytes ?? DEFAULT_MAX_WRITE_BACKLOG,
    maxWriteBacklogFrames: partial.maxWriteBacklogFrames ?? DEFAULT_MAX_WRITE_BACKLOG_FRAMES,
    maxPartialFrameBytes: partial.maxPartialFrameBytes ?? DEFAULT_MAX_PARTIAL_FRAME_BYTES,
  };
  for (const [key, value] of Object.entries(limits)) {
    if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`ttRPC limit ${key} must be a non-negative integer, got ${value}`);
  }
  if (limits.maxConnections === 0 || limits.maxInflightPerConnection === 0) {
    throw new RangeError('ttRPC limits maxConnections and maxInflightPerConnection must be at least 1');
  }
  return limits;
}
