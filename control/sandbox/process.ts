/**
 * A container process as control tracks it: the init process or an exec process, its pid (in
 * the helper's pid namespace), its stdio and its exit status.
 *
 * Exit statuses are delivered by the helper's `exit` events. Any number of WaitProcess calls,
 * concurrent or late, get the same status (field case B14): the record stays after the exit,
 * with its output still readable, until the container is removed or the record is evicted
 * (see Container.maxExitedRecords).
 */
import type { ProcessStdio } from './stdio';

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
  private readonly exitPromise: Promise<number>;
  private resolveExit!: (status: number) => void;
  private rejectExit!: (err: Error) => void;

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
  ) {
    this.exitPromise = new Promise<number>((resolve, reject) => {
      this.resolveExit = resolve;
      this.rejectExit = reject;
    });
    // A record may be dropped without anyone waiting; an unobserved rejection is not an error.
    this.exitPromise.catch(() => undefined);
  }

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
    this.resolveExit(status);
  }

  /** Fail pending and later waits (the process's fate will never be known, e.g. helper lost). */
  abandon(err: Error): void {
    if (this.exitStatus !== null) return;
    this.rejectExit(err);
  }

  /** Resolves with the exit status (immediately if the process has exited). */
  wait(): Promise<number> {
    return this.exitPromise;
  }
}
