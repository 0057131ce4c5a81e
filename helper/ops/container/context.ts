/** The container record and the state a ContainerBackend shares with its verbs; event emission and fd-carrying replies. */
import type { HelperEvent, NamespacePlan } from '../../../shared/protocol';
import type { LeftoverJournal } from '../leftovers';
import type { Logger } from '../../../shared/log';
import type { BackendReply, NamedFd } from '../../api';
import type { StorageBackend } from '../storage';
import type { GuestHooks, Hook, HookRunner } from '../hooks';
import type { CgroupManager, ContainerCgroup } from '../cgroup';
import type { ProcessRegistry, TrackedProcess } from '../registry';
import type { LaunchedInit, Launcher } from './launcher';
import type { ValidContainerPlan } from '../plan';

/** A container the backend knows, from createContainer until it is removed. */
export interface ContainerRecord {
  id: string;
  plan: ValidContainerPlan;
  init: TrackedProcess;
  handle: LaunchedInit;
  started: boolean;
  execs: Map<string, TrackedProcess>;
  /** Exec ids being started. */
  pendingExecs: Set<string>;
  removing: Promise<void> | undefined;
  removed: boolean;
  /**
   * The spec's hooks followed by the guest hooks as they were when the container was created
   * (upstream append_guest_hooks copies them into the spec after its own).
   */
  hooks: GuestHooks & { createRuntime: Hook[] };
  /** OCI version and annotations for the hooks' state. */
  oci: { version: string; annotations: Record<string, string> };
  /** The container's cgroup (helper/ops/cgroup.ts), when its plan has one. */
  cgroup?: ContainerCgroup;
  /** The cgroup's oom_kill counter as last seen by the OOM watch (-1: unreadable). */
  oomSeen?: number;
  /** The plan as control sent it, handed back by `state` to a restarted control plane. */
  controlPlan: unknown;
}

/** The state of a ContainerBackend that its verbs (helper/ops/container/*.ts) share; the backend owns it. */
export interface ContainerContext {
  readonly launcher: Launcher;
  readonly registry: ProcessRegistry;
  readonly log: Logger;
  readonly containers: Map<string, ContainerRecord>;
  /** Container ids being created (reserved). */
  readonly creating: Set<string>;
  sandbox: { id: string; hostname: string; namespaces: NamespacePlan[]; deviceCgroup: boolean } | undefined;
  /** Hooks of CreateSandbox's guest hook path, applied to containers created from then on. */
  guestHooks: GuestHooks;
  readonly hookRunner: HookRunner;
  sandboxBusy: boolean;
  readonly listeners: Set<(event: HelperEvent) => void>;
  isShutdown: boolean;
  /** Records of the containers for the next helper's clean-up after a crash (helper/ops/leftovers.ts). */
  readonly journal: LeftoverJournal | undefined;
  /** Number of the last OOM event. */
  oomSeq: number;
  /** OOM events control has not acked (ackOomEvents), oldest first; a restarted control gets them. */
  readonly oomPending: { containerId: string; seq: number }[];
  /** Bytes the kept OOM events count against MAX_PENDING_OOM_BYTES (container/oom-events.ts). */
  oomPendingBytes: number;
  /** Storage, device, DNS and modprobe ops (helper/ops/storage.ts); absent: those ops are UNIMPLEMENTED. */
  readonly storage: StorageBackend | undefined;
  /** Container cgroups (helper/ops/cgroup.ts); absent: plans' cgroups are refused (FAILED_PRECONDITION). */
  readonly cgroups: CgroupManager | undefined;
  /** The guest has SELinux: labels are applied, else dropped with a warning (helper/ops/selinux.ts). */
  readonly selinux: boolean;
  /** Host-namespace mode (helper --allow-host-namespaces): off unless the helper itself was started with it. */
  readonly allowHostNamespaces: boolean;
}

/** Send `event` to every subscriber (a listener that throws is logged). */
export function emit(ctx: ContainerContext, event: HelperEvent): void {
  for (const l of ctx.listeners) {
    try {
      l(event);
    } catch (err) {
      ctx.log.error({ err }, 'event listener threw');
    }
  }
}

/** Reply with `fds` attached, pinned until sent; the exit event of `proc` is held until then. */
export function withFds<R>(ctx: ContainerContext, result: R, proc: TrackedProcess, fds: NamedFd[]): BackendReply<R> {
  const unpin = ctx.registry.fds.pin(fds.map((f) => f.fd));
  return {
    result,
    fds,
    onSent: () => {
      unpin();
      ctx.registry.announce(proc);
    },
  };
}
