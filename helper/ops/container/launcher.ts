/** The Launcher contract: how the init and exec processes are started (kata-init in helper/ops/process.ts, or the mock). */
import type { NamespacePlan } from '../../../shared/protocol';
import type { SeccompFilter, ValidContainerPlan, ValidProcessPlan } from '../plan';
import type { CgroupManager, ContainerCgroup } from '../cgroup';
import type { StdioSet, TrackedProcess } from '../registry';

/** An init process that has been set up and waits for startContainer. */
export interface LaunchedInit {
  /** The init's pid in the helper's pid namespace. */
  pid: number;
  /** A pidfd for it if the launcher has one (ownership passes to the caller), else -1. */
  pidfd: number;
  /** Reaper sequence snapshot taken before the process was started. */
  sinceSeq: number;
  /**
   * Let the init exec the container program. Resolves when the exec succeeded; rejects with a
   * StatusError when it failed (the init then exits). Called at most once.
   */
  start(): Promise<void>;
  /** Give up the start handle: a still-blocked init exits without running anything. Idempotent. */
  abort(): void;
  /**
   * The container's compiled seccomp filter (the kata-init launcher; absent without a profile
   * or in the mock), handed back to {@link Launcher.exec} for every exec process.
   */
  seccomp?: SeccompFilter;
}

/** A started exec process. */
export interface LaunchedProcess {
  pid: number;
  pidfd: number;
  sinceSeq: number;
}

/**
 * The container's cgroup, for a process about to be started in it. Called with a pid: put that
 * just-spawned process (before it has read its plan, so before it forks or runs anything of the
 * container) into every hierarchy (`only: 'v2'`: the cgroup2 one only) through cgroup.procs.
 * Throws StatusError. A launcher that can do better uses `v1` and `v2` instead: writing a pid to
 * cgroup.procs takes the kernel's global threadgroup lock for writing, which waits for an RCU
 * grace period (6-25 ms measured on a 2-CPU VM); a child born in the cgroup2 cgroup (clone3
 * CLONE_INTO_CGROUP) and a single-threaded process moving itself through a v1 `tasks` file do
 * not take it (kata-init `cgroupjoin`, helper/ops/process.ts).
 */
export interface JoinCgroup {
  (pid: number, only?: 'v2'): void;
  /** The cgroup v1 directories (one per hierarchy). */
  readonly v1: readonly string[];
  /** The cgroup2 directory, when there is a cgroup2 hierarchy. */
  readonly v2?: string;
}

/** The {@link JoinCgroup} of `cg`. */
export function cgroupJoin(cgroups: CgroupManager, cg: ContainerCgroup): JoinCgroup {
  return Object.assign((pid: number, only?: 'v2') => cgroups.join(cg, pid, only), {
    v1: cg.dirs.filter((d) => d !== cg.v2),
    ...(cg.v2 !== undefined && cg.dirs.includes(cg.v2) ? { v2: cg.v2 } : {}),
  });
}

/** Runs the prestart and createRuntime hooks for the container process `pid` (it waits meanwhile). Throws StatusError. */
export type BeforePivot = (pid: number) => Promise<void>;

/** How processes are started: kata-init (helper/ops/process.ts) or the mock (helper/mock/backend.ts). */
export interface Launcher {
  /** Whether plans are checked against the host (rootfs, bind sources, namespace files). */
  readonly hostChecks: boolean;
  /**
   * Start the init of a container with `stdio.child` as its fds 0-2 and leave it blocked before
   * exec. Must close `stdio.child` once the process has them. Throws StatusError.
   */
  createInit(containerId: string, plan: ValidContainerPlan, stdio: StdioSet, join?: JoinCgroup, beforePivot?: BeforePivot): Promise<LaunchedInit>;
  /**
   * The launcher calls `beforePivot` of createInit when the plan's `runtimeHooksBeforePivot` is
   * set: after the container's mounts, before pivot_root (kata-init `runtimehooks`). Launchers
   * without it (the mock) leave the runtime hooks to run after createInit.
   */
  readonly hooksBeforePivot?: boolean;
  /**
   * Start `plan` inside the container whose init is `init` (joining its namespaces) and resolve
   * once it has exec'd, under the container's seccomp filter (`seccomp`, from its
   * {@link LaunchedInit}). Must close `stdio.child`. Throws StatusError.
   */
  exec(
    containerId: string,
    execId: string,
    init: TrackedProcess,
    plan: ValidProcessPlan,
    stdio: StdioSet,
    seccomp?: SeccompFilter,
    join?: JoinCgroup,
  ): Promise<LaunchedProcess>;
  /** Create the sandbox's persistent namespaces; returns what containers join. */
  createSandbox(sandboxId: string, hostname: string): Promise<NamespacePlan[]>;
  /** Release the sandbox's persistent namespaces. Never throws. */
  destroySandbox(): Promise<void>;
}
