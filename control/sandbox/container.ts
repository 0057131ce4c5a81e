/**
 * A container as control tracks it: its validated plan, its status and its processes.
 *
 * Status: `created` after CreateContainer (init set up and blocked), `running` after
 * StartContainer, `stopped` once the init process has exited. (Upstream never moves a container
 * to stopped when its init exits; we do, so ExecProcess into a dead container fails clearly.)
 */
import { Code, StatusError, type ContainerPlan, type StoragePlan } from '../../shared/protocol';
import type { Process } from './process';

export type ContainerStatus = 'created' | 'running' | 'stopped';

/** Exited exec-process records kept per container for late WaitProcess calls. */
export const MAX_EXITED_RECORDS = 1024;

/** One container of the sandbox. */
export class Container {
  status: ContainerStatus = 'created';
  /** Exec processes by exec id (live and exited; the init process is not in here). */
  readonly execs = new Map<string, Process>();
  /** The container's storages (CreateContainerRequest.storages as planned), for the debug endpoint. */
  storages: StoragePlan[] = [];
  /** Exec ids reserved by an ExecProcess in flight. */
  readonly pendingExecIds = new Set<string>();
  /** Set while RemoveContainer runs (resolves when it is done). */
  removing: Promise<void> | null = null;
  /** True while StartContainer runs. */
  starting = false;
  /** True between PauseContainer and ResumeContainer (the cgroup is frozen). */
  paused = false;
  /** A Pause/Resume/Update in progress (they run one at a time per container). */
  cgroupOp: Promise<unknown> = Promise.resolve();
  private exitCounter = 0;

  constructor(
    readonly id: string,
    readonly plan: ContainerPlan,
    readonly init: Process,
    readonly createdAt = new Date(),
  ) {}

  /**
   * The process `execId` names: "" or the container id → the init process (as upstream), else
   * an exec process. Throws StatusError NOT_FOUND for an unknown exec id.
   */
  getProcess(execId: string): Process {
    if (execId === '' || execId === this.id) return this.init;
    const p = this.execs.get(execId);
    if (!p) throw new StatusError(Code.NOT_FOUND, `process ${JSON.stringify(execId)} not found in container ${this.id}`);
    return p;
  }

  /** Every process, init first. */
  processes(): Process[] {
    return [this.init, ...this.execs.values()];
  }

  /**
   * Apply an exit to the process it names (by helper exec id, "" = init) when the pid matches;
   * the container becomes `stopped` when the init exits. Returns the process, or null when
   * no live process matches.
   */
  applyExit(helperExecId: string, pid: number, status: number): Process | null {
    const p = helperExecId === '' ? this.init : this.execs.get(helperExecId);
    if (!p || p.pid !== pid || p.exited) return null;
    p.markExited(status, ++this.exitCounter);
    if (p.init) this.status = 'stopped';
    return p;
  }

  /**
   * Exited exec records beyond `limit` (oldest exits first), removed from the map; the caller
   * releases them (stdio, helper). Unread output of exited processes is bounded separately, in
   * bytes (control/sandbox/output-budget.ts).
   */
  evictExited(limit = MAX_EXITED_RECORDS): Process[] {
    const exited = [...this.execs.values()].filter((p) => p.exited);
    exited.sort((a, b) => a.exitSeq - b.exitSeq);
    if (exited.length <= limit) return [];
    const evicted = exited.slice(0, exited.length - limit);
    for (const p of evicted) this.execs.delete(p.execId);
    return evicted;
  }
}
