/**
 * A container process as control tracks it: the init process or an exec process, its pid (in
 * the helper's pid namespace), its stdio and its exit status.
 *
 * Exit statuses are delivered by the helper's `exit` events. Any number of WaitProcess calls,
 * concurrent or late, get the same status (field case B14): the record stays after the exit,
 * with its output still readable, until the container is removed or the record is evicted
 * (see Container.maxExitedRecords).
 */
import { Code, StatusError } from '../../shared/protocol';
import type { ProcessStdio } from './stdio';

interface Waiter {
  resolve: (status: number) => void;
  reject: (err: Error) => void;
}

function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new StatusError(Code.CANCELLED, 'wait cancelled');
}

/** One process of a container. */
export class Process {
  /** Exit status once known: the exit code, or 128 + signal for a signal death. */
  exitStatus: number | null = null;
  /** True once a WaitProcess call has been answered with the status. */
  waited = false;
  /** True once the helper has been told to forget the process (releaseProcess). */
  released = false;
  /** Monotonic sequence number of the exit among the container's processes (eviction order). */
  exitSeq = 0;
  /** Set by {@link abandon}: the error every wait gets. */
  private abandoned: Error | null = null;
  /** Pending waits (WaitProcess calls); each leaves when it settles or its signal aborts. */
  private readonly waiters = new Set<Waiter>();

  /**
   * @param containerId the container's id
   * @param execId the exec id; for the init process the container id (as upstream, where the
   *   init process's exec id is the container id)
   * @param init true for the container's init process
   * @param pid pid in the helper's pid namespace
   * @param stdio the process's stdio (owned by this record)
   */
  constructor(
    readonly containerId: string,
    readonly execId: string,
    readonly init: boolean,
    readonly pid: number,
    readonly stdio: ProcessStdio,
  ) {}

  /** The exec id on the helper protocol: "" for the init process. */
  get helperExecId(): string {
    return this.init ? '' : this.execId;
  }

  /** Whether a terminal (pty) is attached. */
  get terminal(): boolean {
    return this.stdio.terminal;
  }

  /** True once the exit status is known. */
  get exited(): boolean {
    return this.exitStatus !== null;
  }

  /**
   * Record the exit (first call wins; later calls are ignored). Stdin waiting for the process
   * is released (writes fail FAILED_PRECONDITION); its output stays readable.
   */
  markExited(status: number, seq: number): void {
    if (this.exitStatus !== null) return;
    this.exitStatus = status;
    this.exitSeq = seq;
    this.stdio.processExited();
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const w of waiters) w.resolve(status);
  }

  /** Fail pending and later waits (the process's fate will never be known, e.g. helper lost). */
  abandon(err: Error): void {
    if (this.exitStatus !== null || this.abandoned) return;
    this.abandoned = err;
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const w of waiters) w.reject(err);
  }

  /** Waits pending on this process (WaitProcess calls not yet answered). */
  get pendingWaiters(): number {
    return this.waiters.size;
  }

  /**
   * Resolves with the exit status (immediately if the process has exited); rejects with the
   * {@link abandon} error. When `signal` aborts first (the caller's deadline passed or its
   * connection dropped), the wait is withdrawn at once — nothing of it stays referenced — and
   * rejects with the signal's reason (a StatusError, or CANCELLED "wait cancelled").
   */
  wait(signal?: AbortSignal): Promise<number> {
    if (this.exitStatus !== null) return Promise.resolve(this.exitStatus);
    if (this.abandoned) return Promise.reject(this.abandoned);
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    return new Promise<number>((resolve, reject) => {
      const onAbort = (): void => {
        if (!this.waiters.delete(waiter)) return;
        reject(abortReason(signal!));
      };
      const waiter: Waiter = {
        resolve: (status) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(status);
        },
        reject: (err) => {
          signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
      this.waiters.add(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}
