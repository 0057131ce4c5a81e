/**
 * The process-wide child reaper: one per process (waitpid(-1) takes any child, so two reapers
 * would steal each other's statuses).
 *
 * On SIGCHLD, and every second as a safety net, it calls native.reap() (waitpid(-1,
 * WNOHANG|__WALL) until nothing is ready) and hands each status to whoever watches that pid. A
 * status nobody watches yet goes into the "unclaimed" map (at most {@link UNCLAIMED_MAX}
 * entries, each kept {@link UNCLAIMED_TTL_MS}), because a container process can exit and be
 * reaped before the helper has read the `pid N` line that tells it the pid.
 *
 * Pid reuse: every reaped status gets a sequence number. A caller that learns a pid takes a
 * sequence snapshot before starting the process ({@link ChildReaper.seq}) and only accepts an
 * unclaimed status reaped after it; an older one belonged to an earlier process with that pid.
 *
 * Caveat: in a process that also uses node:child_process, the reaper takes those children's
 * statuses too and their 'exit' events never fire (libuv waits for its own pids only). The real
 * helper never uses child_process; tests running the mock helper in-process must not rely on
 * child_process exit events while the mock is running.
 */
import { loadNative, type NativeAddon, type ReapedChild } from '../../shared/native';
import { silentLogger, type Logger } from '../../shared/log';

/** Most unclaimed statuses kept (oldest evicted first). */
export const UNCLAIMED_MAX = 1024;
/** How long an unclaimed status is kept, in ms. */
export const UNCLAIMED_TTL_MS = 60_000;
/** Period of the safety-net sweep, in ms. */
export const SWEEP_INTERVAL_MS = 1000;

export type ChildListener = (child: ReapedChild) => void;

interface Unclaimed {
  child: ReapedChild;
  seq: number;
  at: number;
}

/** See the module comment. Obtain the instance with {@link getReaper}. */
export class ChildReaper {
  private native: NativeAddon | undefined;
  private log: Logger = silentLogger();
  private users = 0;
  private timer: NodeJS.Timeout | undefined;
  private sequence = 0;
  private readonly watchers = new Map<number, ChildListener>();
  private readonly ignored = new Set<number>();
  private readonly unclaimed = new Map<number, Unclaimed>();
  private readonly onSignal = (): void => this.sweep();

  /** Sequence number of the last reaped status; snapshot it before starting a process. */
  get seq(): number {
    return this.sequence;
  }

  /** Number of unclaimed statuses held (tests, debug). */
  get unclaimedCount(): number {
    return this.unclaimed.size;
  }

  /** Start reaping (SIGCHLD handler + periodic sweep) for one more user. */
  acquire(logger?: Logger): void {
    if (logger && this.users === 0) this.log = logger.child({ component: 'reaper' });
    this.users++;
    if (this.users > 1) return;
    this.native = loadNative();
    process.on('SIGCHLD', this.onSignal);
    this.timer = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS);
    this.timer.unref();
    this.sweep();
  }

  /** One user fewer; the last one stops the handler and the timer. */
  release(): void {
    if (this.users === 0) return;
    this.users--;
    if (this.users > 0) return;
    process.removeListener('SIGCHLD', this.onSignal);
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Reap every ready child now and dispatch the statuses. */
  sweep(): void {
    const native = this.native ?? (this.native = loadNative());
    let children: ReapedChild[];
    try {
      children = native.reap();
    } catch (err) {
      this.log.error({ err }, 'reap failed');
      return;
    }
    const now = Date.now();
    for (const child of children) {
      const seq = ++this.sequence;
      const watcher = this.watchers.get(child.pid);
      if (watcher) {
        this.watchers.delete(child.pid);
        try {
          watcher(child);
        } catch (err) {
          this.log.error({ err, pid: child.pid }, 'exit handler threw');
        }
        continue;
      }
      if (this.ignored.delete(child.pid)) continue;
      this.log.debug({ pid: child.pid, exitCode: child.exitCode, signal: child.signal }, 'child exited before being claimed');
      this.unclaimed.delete(child.pid);
      this.unclaimed.set(child.pid, { child, seq, at: now });
    }
    this.expire(now);
  }

  /**
   * Take the status of `pid` if it was reaped after sequence `sinceSeq` (removing it from the
   * unclaimed map); a status reaped earlier belonged to another process and is dropped.
   */
  take(pid: number, sinceSeq: number): ReapedChild | undefined {
    const entry = this.unclaimed.get(pid);
    if (!entry) return undefined;
    this.unclaimed.delete(pid);
    return entry.seq > sinceSeq ? entry.child : undefined;
  }

  /**
   * Call `listener` once with the status of `pid`: at once (synchronously) if it was already
   * reaped after `sinceSeq`, else when it is. One watcher per pid; a second replaces the first.
   * Returns true when the listener already ran.
   */
  watch(pid: number, sinceSeq: number, listener: ChildListener): boolean {
    const done = this.take(pid, sinceSeq);
    if (done) {
      listener(done);
      return true;
    }
    this.ignored.delete(pid);
    this.watchers.set(pid, listener);
    return false;
  }

  /** Stop watching `pid` (its status will then go to the unclaimed map). */
  unwatch(pid: number): void {
    this.watchers.delete(pid);
  }

  /**
   * Drop the status of `pid` (a child started after `sinceSeq` whose status nobody needs, e.g.
   * kata-init's intermediate process): removed if already reaped, else dropped when reaped.
   */
  discard(pid: number, sinceSeq: number): void {
    this.watchers.delete(pid);
    if (this.take(pid, sinceSeq)) return;
    this.ignored.add(pid);
    if (this.ignored.size > UNCLAIMED_MAX) {
      const oldest = this.ignored.values().next().value;
      if (oldest !== undefined) this.ignored.delete(oldest);
    }
  }

  private expire(now: number): void {
    for (const [pid, entry] of this.unclaimed) {
      if (this.unclaimed.size > UNCLAIMED_MAX || now - entry.at > UNCLAIMED_TTL_MS) this.unclaimed.delete(pid);
      else break; // insertion order = reap order: the rest are newer
    }
  }
}

let instance: ChildReaper | undefined;

/** The process's reaper. */
export function getReaper(): ChildReaper {
  return (instance ??= new ChildReaper());
}
