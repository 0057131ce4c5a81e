/**
 * The container and process operations of the helper (create, start, exec, signal, remove,
 * close stdin, release, state, sandbox), shared by the real backend and the mock: both keep the
 * same model and bookkeeping, only *how* a process is started differs ({@link Launcher}: kata-init
 * for the real helper, a plain host process for the mock).
 *
 * Lifecycle of a container: createContainer starts its init, which sets up and blocks
 * ("created"); startContainer releases it ("running"); the init's exit makes it "stopped";
 * removeContainer kills what is left, waits for it to be reaped and forgets the container (its
 * id can then be reused). Exec processes live in a running (or created) container until
 * releaseProcess or removeContainer.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  Code,
  CONTAINER_ID_RE,
  StatusError,
  validateContainerId,
  validateExecId,
  type CgroupFreezeArgs,
  type CgroupFreezeResult,
  type CgroupStatsArgs,
  type CgroupStatsResult,
  type CgroupUpdateArgs,
  type CgroupUpdateResult,
  type HelperStatsArgs,
  type HelperStatsResult,
  type CloseStdinArgs,
  type CloseStdinResult,
  type ContainerState,
  HELPER_MAX_PACKET,
  type CreateContainerArgs,
  type CreateContainerResult,
  type CreateSandboxArgs,
  type CreateSandboxResult,
  type DestroySandboxArgs,
  type DestroySandboxResult,
  type ExecProcessArgs,
  type ExecProcessResult,
  type HelperEvent,
  type NamespacePlan,
  type ProcessState,
  type ReleaseProcessArgs,
  type ReleaseProcessResult,
  type RemoveContainerArgs,
  type RemoveContainerResult,
  type SignalProcessArgs,
  type SignalProcessResult,
  type StartContainerArgs,
  type StartContainerResult,
  type StateArgs,
  type StateResult,
  STATE_PAGE_PROCESSES,
  type AckOomEventsArgs,
  type KeepPolicyArgs,
  type KeepPolicyResult,
  type KeptPolicyArgs,
  type KeptPolicyResult,
  type AckOomEventsResult,
} from '../../shared/protocol';
import { encodeMessage, MAX_FDS_PER_PACKET } from '../../shared/channel';
import { processStartTime, type CleanUpSummary, type LeftoverJournal } from './leftovers';
import { silentLogger, type Logger } from '../../shared/log';
import type { BackendReply, ContainerFamily, NamedFd } from '../api';
import {
  HOST_NAME_MAX,
  validateContainerPlan,
  validateProcessPlan,
  type KernelNamespace,
  type SeccompFilter,
  type ValidContainerPlan,
  type ValidProcessPlan,
} from './plan';
import type { StorageBackend, StorageBackendOps } from './storage';
import { KernelMounter } from './mount';
import { HookRunner, emptyGuestHooks, scanGuestHooks, validateGuestHookPath, type GuestHooks, type Hook, type OciState } from './hooks';
import type { CgroupManager, ContainerCgroup } from './cgroup';
import { applySelinuxLabels, dropProcessLabel, guestHasSelinux } from './selinux';
import { validateCgroupResources } from '../../shared/cgroup';
import { readSelfStats } from '../../shared/self-stats';
import {
  ProcessRegistry,
  SIGKILL,
  SIGTERM,
  createStdio,
  isSignalHandled,
  type StdioSet,
  type TrackedProcess,
} from './registry';
import { checkArgs } from './guest-args';
import { KeptPolicy } from './kept-policy';

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
function cgroupJoin(cgroups: CgroupManager, cg: ContainerCgroup): JoinCgroup {
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

interface ContainerRecord {
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

/** OOM events kept for control until it acks them (the oldest dropped beyond). */
const MAX_PENDING_OOM_EVENTS = 1024;
/**
 * Bytes of OOM events kept (container id + 32 each, the oldest dropped beyond), so that they fit
 * the first `state` page whatever the ids' length (a container can OOM at will).
 */
const MAX_PENDING_OOM_BYTES = 96 * 1024;
/** What a `state` page leaves of HELPER_MAX_PACKET for the response envelope and fd names' framing. */
const STATE_PAGE_MARGIN = 2048;

function encodedSize(v: unknown): number {
  return encodeMessage(v).length;
}

/** Interval of the OOM watch (the cgroups' oom_kill counters), in ms. */
export const OOM_WATCH_INTERVAL_MS = 200;

/** Longest OCI version string accepted for the hook state, in bytes. */
const OCI_VERSION_MAX = 256;
/** Most annotations passed to hooks. */
const ANNOTATIONS_MAX = 1024;

/** Validate CreateContainerArgs.oci (INVALID_ARGUMENT naming the field). */
function checkOciInfo(v: unknown): { version: string; annotations: Record<string, string> } {
  if (v === undefined) return { version: '', annotations: {} };
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new StatusError(Code.INVALID_ARGUMENT, 'oci must be a map');
  const o = v as Record<string, unknown>;
  const version = o.version ?? '';
  if (typeof version !== 'string' || Buffer.byteLength(version) > OCI_VERSION_MAX) {
    throw new StatusError(Code.INVALID_ARGUMENT, `oci.version must be a string of at most ${OCI_VERSION_MAX} bytes`);
  }
  const raw = o.annotations ?? {};
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new StatusError(Code.INVALID_ARGUMENT, 'oci.annotations must be a map');
  const entries = Object.entries(raw as Record<string, unknown>);
  if (entries.length > ANNOTATIONS_MAX) throw new StatusError(Code.INVALID_ARGUMENT, `oci.annotations has ${entries.length} entries, at most ${ANNOTATIONS_MAX}`);
  const annotations: Record<string, string> = {};
  for (const [k, val] of entries) {
    if (typeof val !== 'string') throw new StatusError(Code.INVALID_ARGUMENT, `oci.annotations[${JSON.stringify(k)}] must be a string`);
    annotations[k] = val;
  }
  return { version, annotations };
}

/**
 * The OCI state JSON of the createContainer ("creating") and startContainer ("created") hooks,
 * split around the pid kata-init fills in (its own getpid(), as runc and rustjail report it).
 * The same fields as the helper's hooks ({@link ContainerBackend} ociState).
 */
function inContainerHookStates(
  id: string,
  oci: { version: string; annotations: Record<string, string> },
  plan: ValidContainerPlan,
): ValidContainerPlan['hookStates'] {
  const PID = 987654321987;
  const split = (status: OciState['status']): [string, string] => {
    const [before, after] = JSON.stringify(ociStateOf(id, oci, plan.rootfs, PID, status)).split(String(PID));
    return [before, after];
  };
  return {
    ...(plan.hooks.createContainer.length > 0 ? { createContainer: split('creating') } : {}),
    ...(plan.hooks.startContainer.length > 0 ? { startContainer: split('created') } : {}),
  };
}

/** The OCI state of a container for its hooks: bundle = parent of the rootfs (upstream oci_state). */
function ociStateOf(
  id: string,
  oci: { version: string; annotations: Record<string, string> },
  rootfs: string,
  pid: number,
  status: OciState['status'],
): OciState {
  return { ociVersion: oci.version, id, status, pid, bundle: path.dirname(rootfs), annotations: oci.annotations };
}

/** Default wait for processes to die at shutdown / destroySandbox, in ms. */
const TEARDOWN_TIMEOUT_MS = 10_000;
/** Upper bound of removeContainer's timeoutMs (one hour). */
const MAX_REMOVE_TIMEOUT_MS = 3_600_000;

const NS_PATH_RE = /^\/proc\/([0-9]+)\/ns\/([a-z]+)$/;
/** Named network namespaces, as `ip netns add` pins them (iproute2 convention). */
const NETNS_PATH_RE = /^\/(?:var\/)?run\/netns\/[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/;

function notFound(what: string): StatusError {
  return new StatusError(Code.NOT_FOUND, what);
}

function precondition(what: string): StatusError {
  return new StatusError(Code.FAILED_PRECONDITION, what);
}

function checkBoolArg(v: unknown, field: string, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') throw new StatusError(Code.INVALID_ARGUMENT, `${field} must be a boolean`);
  return v;
}

/**
 * The container family of a HelperBackend (helper/api.ts) over a {@link Launcher}: the container model, validation of every
 * request, stdio fds, exit events. Errors: INVALID_ARGUMENT (bad args), NOT_FOUND (unknown
 * container/exec id), ALREADY_EXISTS (duplicate id), FAILED_PRECONDITION (wrong state),
 * DEADLINE_EXCEEDED (removeContainer could not see every process die in time).
 */
export class ContainerBackend implements ContainerFamily {
  readonly registry: ProcessRegistry;
  private readonly log: Logger;
  private readonly containers = new Map<string, ContainerRecord>();
  /** Container ids being created (reserved). */
  private readonly creating = new Set<string>();
  private sandbox: { id: string; hostname: string; namespaces: NamespacePlan[]; deviceCgroup: boolean } | undefined;
  /** Hooks of CreateSandbox's guest hook path, applied to containers created from then on. */
  private guestHooks: GuestHooks = emptyGuestHooks();
  private readonly hookRunner: HookRunner;
  private sandboxBusy = false;
  private readonly listeners = new Set<(event: HelperEvent) => void>();
  private isShutdown = false;
  private readonly oomTimer: NodeJS.Timeout;
  /** Records of the containers for the next helper's clean-up after a crash (helper/ops/leftovers.ts). */
  private readonly journal: LeftoverJournal | undefined;
  /** Number of the last OOM event. */
  private oomSeq = 0;
  /** OOM events control has not acked (ackOomEvents), oldest first; a restarted control gets them. */
  private readonly oomPending: { containerId: string; seq: number }[] = [];
  /** Bytes the kept OOM events count against MAX_PENDING_OOM_BYTES. */
  private oomPendingBytes = 0;
  /** The policy control enforces, for a restarted control plane (helper/ops/kept-policy.ts). */
  private readonly policy = new KeptPolicy();

  /** Storage, device, DNS and modprobe ops (helper/ops/storage.ts); absent: those ops are UNIMPLEMENTED. */
  readonly storage: StorageBackend | undefined;
  /** Container cgroups (helper/ops/cgroup.ts); absent: plans' cgroups are refused (FAILED_PRECONDITION). */
  readonly cgroups: CgroupManager | undefined;
  /** The guest has SELinux: labels are applied, else dropped with a warning (helper/ops/selinux.ts). */
  private readonly selinux: boolean;
  /** Host-namespace mode (helper --allow-host-namespaces): off unless the helper itself was started with it. */
  private readonly allowHostNamespaces: boolean;

  constructor(
    private readonly launcher: Launcher,
    opts: {
      logger?: Logger;
      registry: ProcessRegistry;
      storage?: StorageBackend;
      cgroups?: CgroupManager;
      journal?: LeftoverJournal;
      selinux?: boolean;
      /** The helper's own host-namespace switch (helper --allow-host-namespaces; helper/ops/plan.ts PlanCheckOptions). */
      allowHostNamespaces?: boolean;
    },
  ) {
    this.allowHostNamespaces = opts.allowHostNamespaces === true;
    this.journal = opts.journal;
    this.log = (opts.logger ?? silentLogger()).child({ component: 'backend' });
    this.registry = opts.registry;
    this.storage = opts.storage;
    this.hookRunner = new HookRunner({ reaper: this.registry.reaper, logger: this.log });
    this.cgroups = opts.cgroups;
    this.selinux = opts.selinux ?? (launcher.hostChecks && guestHasSelinux());
    this.registry.on('exit', (event) => this.emit(event));
    this.registry.start();
    this.oomTimer = setInterval(() => this.checkOom(), OOM_WATCH_INTERVAL_MS);
    this.oomTimer.unref();
  }

  private emit(event: HelperEvent): void {
    for (const l of this.listeners) {
      try {
        l(event);
      } catch (err) {
        this.log.error({ err }, 'event listener threw');
      }
    }
  }

  /**
   * The OOM watch (upstream: an eventfd on v1 memory.oom_control / inotify on v2 memory.events,
   * rustjail cgroups/notifier.rs): each tick compares every container cgroup's oom_kill counter
   * with the last value seen and sends one `oom` event per container whose counter grew.
   */
  checkOom(): void {
    if (!this.cgroups) return;
    for (const record of this.containers.values()) {
      if (!record.cgroup || record.removed) continue;
      const n = this.cgroups.oomKills(record.cgroup);
      const seen = record.oomSeen ?? 0;
      record.oomSeen = n;
      if (n > seen) {
        this.log.warn({ containerId: record.id, oomKills: n }, 'container cgroup had an OOM kill');
        const seq = ++this.oomSeq;
        this.oomPending.push({ containerId: record.id, seq });
        this.oomPendingBytes += record.id.length + 32;
        while (this.oomPending.length > MAX_PENDING_OOM_EVENTS || this.oomPendingBytes > MAX_PENDING_OOM_BYTES) this.dropOldestOom();
        this.emit({ event: 'oom', containerId: record.id, seq });
      }
    }
  }

  /**
   * Start-up, before serving: kill the containers and detach the mounts (recorded ones, and all
   * below the state dir) a previous helper left when it died (helper/ops/leftovers.ts). Null
   * without a journal or when the clean-up failed (logged). Never throws.
   */
  async cleanLeftovers(): Promise<CleanUpSummary | null> {
    if (!this.journal) return null;
    try {
      return await this.journal.cleanUp(this.cgroups);
    } catch (err) {
      this.log.error({ err }, 'cleaning up after a previous helper failed');
      return null;
    }
  }

  private dropOldestOom(): void {
    const e = this.oomPending.shift();
    if (e) this.oomPendingBytes -= e.containerId.length + 32;
  }

  /** Keep a chunk of control's policy document (helper/ops/kept-policy.ts; INVALID_ARGUMENT). */
  keepPolicy(args: KeepPolicyArgs): Promise<BackendReply<KeepPolicyResult>> {
    return this.policy.keepPolicy(args);
  }

  /** Read the kept policy document (helper/ops/kept-policy.ts; INVALID_ARGUMENT). */
  keptPolicy(args: KeptPolicyArgs): Promise<BackendReply<KeptPolicyResult>> {
    return this.policy.keptPolicy(args);
  }

  /** Forget the OOM events up to `upTo` (control delivered them). INVALID_ARGUMENT for a bad seq. */
  async ackOomEvents(rawArgs: AckOomEventsArgs): Promise<BackendReply<AckOomEventsResult>> {
    const args = checkArgs(rawArgs, 'ackOomEvents');
    const upTo = args.upTo;
    if (typeof upTo !== 'number' || !Number.isSafeInteger(upTo) || upTo < 0) {
      throw new StatusError(Code.INVALID_ARGUMENT, `ackOomEvents: upTo must be a non-negative integer, got ${JSON.stringify(upTo)}`);
    }
    while (this.oomPending.length > 0 && this.oomPending[0].seq <= upTo) this.dropOldestOom();
    return { result: {} };
  }

  subscribe(listener: (event: HelperEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  // -------------------------------------------------------------------------------------------
  // Sandbox

  /**
   * Create the sandbox's persistent ipc/uts namespaces (Kata sandbox.rs setup_shared_namespaces).
   * `sandboxId` may be empty (upstream accepts an empty CreateSandboxRequest.sandbox_id); a
   * non-empty one must be a valid container id (INVALID_ARGUMENT "invalid sandbox id ...").
   * A second call → ALREADY_EXISTS "sandbox ... already created", as control answers a second
   * CreateSandbox (upstream tolerates it; we refuse so that a confused control plane notices).
   */
  async createSandbox(rawArgs: CreateSandboxArgs): Promise<BackendReply<CreateSandboxResult>> {
    const args = checkArgs(rawArgs, 'createSandbox');
    const sandboxId = args.sandboxId ?? '';
    if (typeof sandboxId !== 'string' || (sandboxId !== '' && !CONTAINER_ID_RE.test(sandboxId))) {
      throw new StatusError(
        Code.INVALID_ARGUMENT,
        `invalid sandbox id ${JSON.stringify(sandboxId)} (empty, or 2 to 256 ASCII letters, digits, ".", "_" or "-" starting with a letter or digit)`,
      );
    }
    const hostname = args.hostname ?? '';
    if (typeof hostname !== 'string' || Buffer.byteLength(hostname) > HOST_NAME_MAX || hostname.includes('\0')) {
      throw new StatusError(Code.INVALID_ARGUMENT, `invalid sandbox hostname ${JSON.stringify(hostname)}`);
    }
    const guestHookPath = args.guestHookPath === undefined || args.guestHookPath === '' ? '' : validateGuestHookPath(args.guestHookPath);
    if (this.sandbox || this.sandboxBusy) {
      const which = this.sandbox ? JSON.stringify(this.sandbox.id) : '(being created)';
      throw new StatusError(Code.ALREADY_EXISTS, `sandbox ${which} already created`);
    }
    this.sandboxBusy = true;
    try {
      const namespaces = await this.launcher.createSandbox(sandboxId, hostname);
      // Device rules are enforced by a v1 devices hierarchy and/or a cgroup v2 device program.
      const deviceCgroup = this.cgroups?.enforcesDevices() === true;
      this.sandbox = { id: sandboxId, hostname, namespaces, deviceCgroup };
      // Upstream (rpc.rs create_sandbox, sandbox.rs add_hooks) reads the hooks once, here.
      this.guestHooks = guestHookPath ? scanGuestHooks(guestHookPath, this.log) : emptyGuestHooks();
      this.log.info({ sandboxId, namespaces }, 'sandbox created');
      return { result: { namespaces, deviceCgroup } };
    } finally {
      this.sandboxBusy = false;
    }
  }

  /**
   * Kill and forget every container, then release the sandbox namespaces. Works without a
   * sandbox too. DEADLINE_EXCEEDED when some process could not be seen to die.
   */
  async destroySandbox(rawArgs: DestroySandboxArgs): Promise<BackendReply<DestroySandboxResult>> {
    checkArgs(rawArgs, 'destroySandbox');
    const failures = await this.removeAll(TEARDOWN_TIMEOUT_MS);
    await this.launcher.destroySandbox();
    this.sandbox = undefined;
    this.guestHooks = emptyGuestHooks();
    if (failures.length > 0) throw new StatusError(Code.DEADLINE_EXCEEDED, failures.join('; '));
    return { result: {} };
  }

  // -------------------------------------------------------------------------------------------
  // Containers

  /**
   * The sysctls whose key this kernel has (/proc/sys/<key with "." → "/">); the others are
   * skipped with a warning, as upstream does (a spec written for another kernel still runs).
   * Keys were validated (letters, digits, "._-"; no "..") by validateContainerPlan.
   */
  private knownSysctls(containerId: string, sysctl: [string, string][]): [string, string][] {
    return sysctl.filter(([key]) => {
      if (fs.existsSync(path.join('/proc/sys', key.replace(/\./g, '/')))) return true;
      this.log.warn({ containerId, field: `OCI.Linux.Sysctl[${JSON.stringify(key)}]` }, 'sysctl skipped: the guest kernel has no such key');
      return false;
    });
  }

  async createContainer(rawArgs: CreateContainerArgs): Promise<BackendReply<CreateContainerResult>> {
    const args = checkArgs(rawArgs, 'createContainer');
    const containerId = validateContainerId(args.containerId);
    if (this.isShutdown) throw precondition('the helper is shutting down');
    if (this.containers.has(containerId) || this.creating.has(containerId)) {
      throw new StatusError(Code.ALREADY_EXISTS, `container ${containerId} already exists`);
    }
    const plan = validateContainerPlan(args.plan, {
      hostChecks: this.launcher.hostChecks,
      namespacePathAllowed: (type, p) => this.namespacePathAllowed(type, p),
      allowHostNamespaces: this.allowHostNamespaces,
    });
    const oci = checkOciInfo(args.oci);
    // The plan comes back in one `state` page to a restarted control plane: one that would not
    // fit there would make every adoption fail (and PID 1 power off after 5 restarts).
    const recordBytes = encodedSize({ containerId, status: 'running', pid: 0x7fffffff, plan: args.plan });
    if (recordBytes > HELPER_MAX_PACKET - STATE_PAGE_MARGIN) {
      throw new StatusError(Code.RESOURCE_EXHAUSTED, `container ${containerId}: its plan (${recordBytes} bytes) is larger than a state page holds (${HELPER_MAX_PACKET - STATE_PAGE_MARGIN} bytes)`);
    }
    plan.hookStates = inContainerHookStates(containerId, oci, plan);
    applySelinuxLabels(plan, this.selinux, this.log, containerId);
    if (this.launcher.hostChecks) plan.sysctl = this.knownSysctls(containerId, plan.sysctl);
    this.creating.add(containerId);
    let stdio: StdioSet | undefined;
    let cgroup: ContainerCgroup | undefined;
    try {
      if (plan.cgroup) {
        if (!this.cgroups) throw precondition(`container ${containerId}: this helper manages no cgroups`);
        if (this.cgroups.layout.mode === 'none' && Object.keys(plan.cgroup.resources).length === 0) {
          this.log.warn({ containerId }, 'no cgroup filesystem: the container runs in the helper\'s cgroups');
        } else {
          cgroup = this.cgroups.create(containerId, plan.cgroup);
        }
      }
      stdio = createStdio(plan.process.terminal);
      const cg = cgroup;
      const join = cg && this.cgroups ? cgroupJoin(this.cgroups, cg) : undefined;
      const runtimeHooks = {
        prestart: [...plan.hooks.prestart, ...this.guestHooks.prestart],
        createRuntime: plan.hooks.createRuntime,
      };
      const hooksBeforePivot = this.launcher.hooksBeforePivot === true && (runtimeHooks.prestart.length > 0 || runtimeHooks.createRuntime.length > 0);
      if (hooksBeforePivot) plan.runtimeHooksBeforePivot = true;
      const beforePivot = (pid: number): Promise<void> =>
        this.runRuntimeHooks(runtimeHooks, ociStateOf(containerId, oci, plan.rootfs, pid, 'created'));
      const handle = await this.launcher.createInit(containerId, plan, stdio, join, hooksBeforePivot ? beforePivot : undefined);
      // From now on a helper crash leaves a container behind: the next helper kills it.
      this.journal?.record({ containerId, pid: handle.pid, startTime: processStartTime(handle.pid), cgroup });
      stdio.closeChild();
      const init = this.registry.track({
        containerId,
        execId: '',
        pid: handle.pid,
        pidfd: handle.pidfd,
        sinceSeq: handle.sinceSeq,
        stdio: stdio.parent,
      });
      const parentFds = stdio.parent;
      stdio = undefined; // owned by the registry now
      const record: ContainerRecord = {
        id: containerId,
        plan,
        init,
        handle,
        started: false,
        execs: new Map(),
        pendingExecs: new Set(),
        removing: undefined,
        removed: false,
        hooks: {
          ...runtimeHooks,
          poststart: [...plan.hooks.poststart, ...this.guestHooks.poststart],
          poststop: [...plan.hooks.poststop, ...this.guestHooks.poststop],
        },
        oci,
        controlPlan: args.plan,
        cgroup,
        // a reused cgroup dir keeps its counter: only kills from now on are events
        oomSeen: cgroup && this.cgroups ? this.cgroups.oomKills(cgroup) : undefined,
      };
      if (!hooksBeforePivot) await this.runPrestart(record);
      this.containers.set(containerId, record);
      this.log.info({ containerId, pid: handle.pid }, 'container created');
      return this.withFds({ pid: handle.pid }, init, parentFds);
    } catch (err) {
      stdio?.closeChild();
      stdio?.closeParent();
      if (cgroup && this.cgroups) {
        await this.cgroups.killAll(cgroup);
        this.cgroups.remove(cgroup);
      }
      this.detachSharedMounts(containerId, plan);
      this.journal?.forget(containerId);
      throw err;
    } finally {
      this.creating.delete(containerId);
    }
  }

  async startContainer(rawArgs: StartContainerArgs): Promise<BackendReply<StartContainerResult>> {
    const args = checkArgs(rawArgs, 'startContainer');
    const record = this.getContainer(args.containerId);
    if (record.removing) throw precondition(`container ${record.id} is being removed`);
    if (record.started) throw precondition(`container ${record.id} has already been started`);
    if (record.init.exited) throw precondition(`container ${record.id} is stopped (its init exited with ${record.init.exitStatus})`);
    record.started = true;
    await record.handle.start();
    this.log.info({ containerId: record.id }, 'container started');
    // rustjail container.rs exec(): poststart hooks before StartContainer returns; failures are
    // logged only (runtime-spec: a poststart failure is a warning).
    await this.hookRunner.runAll('poststart', record.hooks.poststart, this.ociState(record, 'running'), false);
    return { result: {} };
  }

  async execProcess(rawArgs: ExecProcessArgs): Promise<BackendReply<ExecProcessResult>> {
    const args = checkArgs(rawArgs, 'execProcess');
    const record = this.getContainer(args.containerId);
    const execId = validateExecId(args.execId, false);
    const plan = validateProcessPlan(args.process);
    dropProcessLabel(plan, this.selinux, this.log, { containerId: record.id, execId, field: 'process.selinuxLabel' });
    if (record.removing) throw precondition(`container ${record.id} is being removed`);
    if (record.init.exited) throw precondition(`container ${record.id} is not running (its init has exited)`);
    const existing = record.execs.get(execId);
    if (record.pendingExecs.has(execId) || (existing && !existing.exited)) {
      throw new StatusError(Code.ALREADY_EXISTS, `exec process ${execId} already exists in container ${record.id}`);
    }
    if (existing) {
      // An exited exec never released: its id is reused, so drop the old one now.
      record.execs.delete(execId);
      this.registry.forget(existing);
    }
    record.pendingExecs.add(execId);
    let stdio: StdioSet | undefined;
    try {
      stdio = createStdio(plan.terminal);
      let launched: LaunchedProcess;
      try {
        const cg = record.cgroup;
        const join = cg && this.cgroups ? cgroupJoin(this.cgroups, cg) : undefined;
        launched = await this.launcher.exec(record.id, execId, record.init, plan, stdio, record.handle.seccomp, join);
      } catch (err) {
        throw this.execFailure(record, execId, err);
      }
      stdio.closeChild();
      const proc = this.registry.track({
        containerId: record.id,
        execId,
        pid: launched.pid,
        pidfd: launched.pidfd,
        sinceSeq: launched.sinceSeq,
        stdio: stdio.parent,
      });
      stdio = undefined; // owned by the registry now
      if (record.removing || record.removed) {
        this.registry.signal(proc, SIGKILL);
        this.registry.forget(proc);
        throw precondition(`container ${record.id} was removed while exec process ${execId} was starting`);
      }
      record.execs.set(execId, proc);
      this.log.info({ containerId: record.id, execId, pid: launched.pid }, 'exec process started');
      return this.withFds({ pid: launched.pid }, proc, [...proc.stdio].map(([name, fd]) => ({ name, fd })));
    } catch (err) {
      stdio?.closeChild();
      stdio?.closeParent();
      throw err;
    } finally {
      record.pendingExecs.delete(execId);
    }
  }

  /**
   * Signal a process (execId "" = the init). SIGTERM to an init that neither handles, ignores
   * nor blocks it becomes SIGKILL (Kata rpc.rs do_signal_process: a pid-namespace init would
   * otherwise never die of it). `all` also signals every exec process of the container.
   * Signal 0..64; signalling an exited process succeeds (ESRCH tolerated as upstream).
   */
  async signalProcess(rawArgs: SignalProcessArgs): Promise<BackendReply<SignalProcessResult>> {
    const args = checkArgs(rawArgs, 'signalProcess');
    const record = this.getContainer(args.containerId);
    const execId = validateExecId(args.execId, true);
    const signal = args.signal;
    if (typeof signal !== 'number' || !Number.isInteger(signal) || signal < 0 || signal > 64) {
      throw new StatusError(Code.INVALID_ARGUMENT, `signal must be an integer in 0..64, got ${JSON.stringify(signal)}`);
    }
    const all = checkBoolArg(args.all, 'all', false);
    const target = this.getProcess(record, execId);
    let sig = signal;
    if (execId === '' && signal === SIGTERM && !target.exited && !isSignalHandled(target.pid, SIGTERM)) {
      this.log.info({ containerId: record.id, pid: target.pid }, 'init does not handle SIGTERM, sending SIGKILL');
      sig = SIGKILL;
    }
    this.registry.signal(target, sig);
    if (all) {
      for (const proc of record.execs.values()) if (proc !== target) this.registry.signal(proc, signal);
      if (target !== record.init) this.registry.signal(record.init, signal);
    }
    return { result: {} };
  }

  /**
   * SIGKILL the container's init (which takes its pid namespace down) and every exec process,
   * wait up to timeoutMs (0 = no limit, as upstream's timeout 0) for all of them to be reaped,
   * then close the helper's fds and forget the container. DEADLINE_EXCEEDED naming the
   * survivors otherwise; the container then stays (a retry kills and waits again).
   */
  async removeContainer(rawArgs: RemoveContainerArgs): Promise<BackendReply<RemoveContainerResult>> {
    const args = checkArgs(rawArgs, 'removeContainer');
    const releaseStorages = checkBoolArg(args.releaseStorages, 'releaseStorages', false);
    const record = this.getContainer(args.containerId);
    const timeoutMs = args.timeoutMs ?? 0;
    if (typeof timeoutMs !== 'number' || !Number.isInteger(timeoutMs) || timeoutMs < 0 || timeoutMs > MAX_REMOVE_TIMEOUT_MS) {
      throw new StatusError(Code.INVALID_ARGUMENT, `timeoutMs must be an integer in 0..${MAX_REMOVE_TIMEOUT_MS}, got ${JSON.stringify(timeoutMs)}`);
    }
    await this.remove(record, timeoutMs);
    // without a storage backend no storage can be owned: nothing to release
    if (releaseStorages && this.storage) await this.storage.releaseStorages({ owner: record.id });
    return { result: {} };
  }

  /**
   * Close the stdin of a process: the helper's copy of the stdin pipe. With a terminal the
   * helper keeps its pty master (it also carries the output, which a restarted control plane
   * adopts); control writes ^D instead. Control closes its own copy. Idempotent.
   */
  async closeStdin(rawArgs: CloseStdinArgs): Promise<BackendReply<CloseStdinResult>> {
    const args = checkArgs(rawArgs, 'closeStdin');
    const record = this.getContainer(args.containerId);
    const proc = this.getProcess(record, validateExecId(args.execId, true));
    // The pty master stays: it carries the output, which a restarted control plane re-adopts.
    this.registry.closeStdio(proc, ['stdin']);
    return { result: {} };
  }

  /**
   * Forget an exited process: close the helper's copies of its stdio and drop it (an exec
   * process) — for the init (execId "") only the fds are closed; the container stays until
   * removeContainer. FAILED_PRECONDITION while it runs.
   */
  async releaseProcess(rawArgs: ReleaseProcessArgs): Promise<BackendReply<ReleaseProcessResult>> {
    const args = checkArgs(rawArgs, 'releaseProcess');
    const record = this.getContainer(args.containerId);
    const execId = validateExecId(args.execId, true);
    const proc = this.getProcess(record, execId);
    if (!proc.exited) throw precondition(`process ${execId || '(init)'} of container ${record.id} has not exited`);
    if (execId === '') {
      this.registry.closeStdio(proc);
    } else {
      record.execs.delete(execId);
      this.registry.forget(proc);
    }
    return { result: {} };
  }

  /**
   * One page of the snapshot of containers and processes (StateArgs; docs/ARCHITECTURE.md
   * "Restart and adoption"). The snapshot is the list of every container record, each followed by
   * its processes (init first, then execs in creation order); `cursor` indexes that list. A page
   * holds at most one container record (its plan can be up to a packet), at most
   * STATE_PAGE_PROCESSES processes and, with `withFds`, at most MAX_FDS_PER_PACKET fds (the
   * helper's stdio copies, named "<containerId>/<execId>/<name>", execId "" for the init;
   * ProcessState.fds lists the short names in packet order). `next` is set while more follow;
   * the first page carries the sandbox and the kept OOM events (cursor 0 is that header). A page
   * is also cut before an item that would take it past HELPER_MAX_PACKET (a container's OOM flood
   * and a large plan used to overflow the first page: adoption failed at every restart).
   * INVALID_ARGUMENT for a bad cursor.
   */
  async state(rawArgs: StateArgs): Promise<BackendReply<StateResult>> {
    const args = checkArgs(rawArgs, 'state');
    const withFds = checkBoolArg(args.withFds, 'withFds', false);
    const cursor = args.cursor ?? 0;
    if (typeof cursor !== 'number' || !Number.isInteger(cursor) || cursor < 0) {
      throw new StatusError(Code.INVALID_ARGUMENT, `state: cursor must be a non-negative integer, got ${JSON.stringify(cursor)}`);
    }
    // Item 0 is the page header (sandbox, kept OOM events); a page is cut when the next item
    // would not fit the packet (its first item always goes: a plan came in one packet).
    type Item = { header: true } | { record: ContainerRecord } | { proc: TrackedProcess };
    const items: Item[] = [{ header: true }];
    for (const record of this.containers.values()) {
      items.push({ record });
      for (const proc of [record.init, ...record.execs.values()]) items.push({ proc });
    }
    const containers: ContainerState[] = [];
    const processes: ProcessState[] = [];
    const fds: NamedFd[] = [];
    const pageProcs: TrackedProcess[] = [];
    const result: StateResult = { containers, processes };
    const budget = HELPER_MAX_PACKET - STATE_PAGE_MARGIN;
    let bytes = 0;
    let i = Math.min(cursor, items.length);
    for (; i < items.length; i++) {
      const item = items[i];
      const first = i === cursor;
      if ('header' in item) {
        if (this.sandbox) result.sandbox = { sandboxId: this.sandbox.id, hostname: this.sandbox.hostname, namespaces: this.sandbox.namespaces, deviceCgroup: this.sandbox.deviceCgroup };
        if (this.oomPending.length > 0) result.oomEvents = this.oomPending.map((e) => ({ ...e }));
        bytes += encodedSize({ sandbox: result.sandbox, oomEvents: result.oomEvents });
        continue;
      }
      if ('record' in item) {
        if (containers.length > 0) break;
        const record = item.record;
        const state: ContainerState = { containerId: record.id, status: this.statusOf(record), pid: record.init.pid, plan: record.controlPlan };
        const size = encodedSize(state);
        if (!first && bytes + size > budget) break;
        containers.push(state);
        bytes += size;
        continue;
      }
      const proc = item.proc;
      const procFds = withFds ? [...proc.stdio] : [];
      if (processes.length >= STATE_PAGE_PROCESSES || fds.length + procFds.length > MAX_FDS_PER_PACKET) break;
      const names = procFds.map(([name]) => `${proc.containerId}/${proc.execId}/${name}`);
      const state: ProcessState = {
        containerId: proc.containerId,
        execId: proc.execId,
        pid: proc.pid,
        exited: proc.exited,
        exitStatus: proc.exitStatus,
        fds: procFds.map(([name]) => name),
        terminal: proc.stdio.has('pty'),
      };
      const size = encodedSize([state, names]);
      if (!first && bytes + size > budget) break;
      bytes += size;
      procFds.forEach(([, fd], k) => fds.push({ name: names[k], fd }));
      processes.push(state);
      pageProcs.push(proc);
    }
    if (i < items.length) result.next = i;
    const unpin = this.registry.fds.pin(fds.map((f) => f.fd));
    // Control knows these processes now: exit events held for them (a create/exec whose answer
    // never reached a control plane that died) flow from here on.
    const onSent = (): void => {
      unpin();
      for (const p of pageProcs) this.registry.announce(p);
    };
    return { result, fds, onSent };
  }

  /**
   * Raw values of the container's cgroup files (memory, cpu, pids; CgroupManager.stats).
   * NOT_FOUND for an unknown container; FAILED_PRECONDITION when it has no cgroup of its own.
   */
  async cgroupStats(rawArgs: CgroupStatsArgs): Promise<BackendReply<CgroupStatsResult>> {
    const args = checkArgs(rawArgs, 'cgroupStats');
    const record = this.getContainer(args.containerId);
    if (!record.cgroup || !this.cgroups) throw precondition(`container ${record.id} has no cgroup of its own`);
    return { result: { mode: this.cgroups.layout.mode, files: this.cgroups.stats(record.cgroup) } };
  }

  /**
   * Freeze or thaw the container's cgroup (PauseContainer / ResumeContainer; CgroupManager.freeze).
   * NOT_FOUND for an unknown container; FAILED_PRECONDITION when it has no cgroup of its own or
   * is being removed; INVALID_ARGUMENT for a bad `frozen` / `timeoutMs`; DEADLINE_EXCEEDED when
   * the state is not reached in time.
   */
  async cgroupFreeze(rawArgs: CgroupFreezeArgs): Promise<BackendReply<CgroupFreezeResult>> {
    const args = checkArgs(rawArgs, 'cgroupFreeze');
    const record = this.getContainer(args.containerId);
    if (typeof args.frozen !== 'boolean') throw new StatusError(Code.INVALID_ARGUMENT, 'cgroupFreeze: frozen must be a boolean');
    const t = args.timeoutMs ?? 5000;
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 1 || t > 60_000) throw new StatusError(Code.INVALID_ARGUMENT, `cgroupFreeze: timeoutMs ${String(t)} must be 1..60000`);
    if (!record.cgroup || !this.cgroups) throw precondition(`container ${record.id} has no cgroup of its own`);
    if (record.removing || record.removed) throw precondition(`container ${record.id} is being removed`);
    await this.cgroups.freeze(record.cgroup, args.frozen, t);
    this.log.info({ containerId: record.id, frozen: args.frozen }, 'container cgroup frozen state set');
    return { result: {} };
  }

  /**
   * New resources for the container's cgroup (UpdateContainer): validated again
   * (shared/cgroup.ts, INVALID_ARGUMENT naming the field) and written (CgroupManager.update).
   * NOT_FOUND / FAILED_PRECONDITION as {@link cgroupFreeze}.
   */
  async cgroupUpdate(rawArgs: CgroupUpdateArgs): Promise<BackendReply<CgroupUpdateResult>> {
    const args = checkArgs(rawArgs, 'cgroupUpdate');
    const record = this.getContainer(args.containerId);
    const resources = validateCgroupResources(args.resources);
    if (!record.cgroup || !this.cgroups) throw precondition(`container ${record.id} has no cgroup of its own`);
    if (record.removing || record.removed) throw precondition(`container ${record.id} is being removed`);
    this.cgroups.update(record.cgroup, resources);
    this.log.info({ containerId: record.id }, 'container cgroup resources updated');
    return { result: {} };
  }

  /** The helper process's own figures (/proc/self) for GetMetrics. */
  async helperStats(rawArgs: HelperStatsArgs): Promise<BackendReply<HelperStatsResult>> {
    checkArgs(rawArgs, 'helperStats');
    return { result: readSelfStats() };
  }

  // Storage ops: delegated to helper/ops/storage.ts.
  addStorages: StorageBackendOps['addStorages'] = async (a) => this.storageOps().addStorages(a);
  releaseStorages: StorageBackendOps['releaseStorages'] = async (a) => this.storageOps().releaseStorages(a);
  updateEphemeralMounts: StorageBackendOps['updateEphemeralMounts'] = async (a) => this.storageOps().updateEphemeralMounts(a);
  statShareMounts: StorageBackendOps['statShareMounts'] = async (a) => this.storageOps().statShareMounts(a);
  setupDns: StorageBackendOps['setupDns'] = async (a) => this.storageOps().setupDns(a);
  loadKernelModules: StorageBackendOps['loadKernelModules'] = async (a) => this.storageOps().loadKernelModules(a);
  waitDevices: StorageBackendOps['waitDevices'] = async (a) => this.storageOps().waitDevices(a);

  private storageOps(): StorageBackend {
    if (!this.storage) throw new StatusError(Code.UNIMPLEMENTED, 'this helper has no storage backend');
    return this.storage;
  }

  async shutdown(): Promise<void> {
    if (this.isShutdown) return;
    this.isShutdown = true;
    clearInterval(this.oomTimer);
    try {
      const failures = await this.removeAll(TEARDOWN_TIMEOUT_MS);
      if (failures.length > 0) this.log.warn({ failures }, 'processes survived shutdown');
      await this.launcher.destroySandbox();
      this.storage?.shutdown();
    } catch (err) {
      this.log.error({ err }, 'shutdown failed');
    } finally {
      this.sandbox = undefined;
      this.registry.stop();
    }
  }

  // -------------------------------------------------------------------------------------------

  /**
   * The error for an exec that failed to start: when the container's init vanished meanwhile
   * (it exited, the container is being removed, or its pid is no longer a live tracked
   * process — joining /proc/<pid>/ns/* then fails with ENOENT) the container is not running:
   * FAILED_PRECONDITION with the launcher's message; otherwise `err` unchanged.
   */
  private execFailure(record: ContainerRecord, execId: string, err: unknown): unknown {
    if (err instanceof StatusError && err.code === Code.FAILED_PRECONDITION) return err;
    const pid = record.init.pid;
    const gone =
      record.removing !== undefined ||
      record.removed ||
      record.init.exited ||
      !this.registry.isLive(pid) ||
      // Dead but not reaped yet: a zombie has no namespaces any more.
      !fs.existsSync(`/proc/${pid}/ns/mnt`);
    if (!gone) return err;
    const why = record.removing !== undefined || record.removed ? 'is being removed' : 'is not running (its init has exited)';
    const detail = err instanceof Error ? err.message : String(err);
    return precondition(`container ${record.id} ${why}: exec process ${execId} could not join it: ${detail}`);
  }

  /**
   * The OCI state of `record` for its hooks: bundle = parent of the rootfs (upstream oci_state),
   * pid = the init's pid (also for "stopped": the pid it had).
   */
  private ociState(record: ContainerRecord, status: OciState['status']): OciState {
    return ociStateOf(record.id, record.oci, record.plan.rootfs, record.init.pid, status);
  }

  /**
   * Prestart hooks of a container whose init is set up and parked before exec (status
   * "created", its pid), for a launcher that cannot stop before pivot_root (the mock; the real
   * one runs them through createInit's beforePivot, as upstream). A failure kills the init, waits
   * for it (so nothing is left running) and is thrown: FAILED_PRECONDITION naming the hook.
   */
  private async runPrestart(record: ContainerRecord): Promise<void> {
    if (record.hooks.prestart.length === 0 && record.hooks.createRuntime.length === 0) return;
    try {
      await this.runRuntimeHooks(record.hooks, this.ociState(record, 'created'));
    } catch (err) {
      await this.remove(record, TEARDOWN_TIMEOUT_MS, false).catch((e: unknown) =>
        this.log.error({ err: e, containerId: record.id }, 'removing the container after a failed prestart hook failed'),
      );
      throw err;
    }
  }

  /**
   * runtime-spec: prestart (deprecated) and createRuntime both run in the runtime namespace
   * after the container's environment exists and before pivot_root; prestart first, as runc.
   * Throws FAILED_PRECONDITION naming the failing hook.
   */
  private async runRuntimeHooks(hooks: { prestart: Hook[]; createRuntime: Hook[] }, state: OciState): Promise<void> {
    await this.hookRunner.runAll('prestart', hooks.prestart, state, true);
    await this.hookRunner.runAll('createRuntime', hooks.createRuntime, state, true);
  }

  private statusOf(record: ContainerRecord): ContainerState['status'] {
    if (record.init.exited) return 'stopped';
    return record.started ? 'running' : 'created';
  }

  private getContainer(id: unknown): ContainerRecord {
    const containerId = validateContainerId(id);
    const record = this.containers.get(containerId);
    if (!record) {
      if (this.creating.has(containerId)) throw precondition(`container ${containerId} is being created`);
      throw notFound(`container ${containerId} not found`);
    }
    return record;
  }

  private getProcess(record: ContainerRecord, execId: string): TrackedProcess {
    if (execId === '') return record.init;
    const proc = record.execs.get(execId);
    if (!proc) {
      if (record.pendingExecs.has(execId)) throw precondition(`exec process ${execId} of container ${record.id} is being started`);
      throw notFound(`exec process ${execId} not found in container ${record.id}`);
    }
    return proc;
  }

  /** Reply with `fds` attached, pinned until sent; the exit event of `proc` is held until then. */
  private withFds<R>(result: R, proc: TrackedProcess, fds: NamedFd[]): BackendReply<R> {
    const unpin = this.registry.fds.pin(fds.map((f) => f.fd));
    return {
      result,
      fds,
      onSent: () => {
        unpin();
        this.registry.announce(proc);
      },
    };
  }

  private remove(record: ContainerRecord, timeoutMs: number, runPoststop = true): Promise<void> {
    if (record.removing) return record.removing;
    const run = async (): Promise<void> => {
      const procs = [record.init, ...record.execs.values()];
      // SIGKILL before closing the start fd: an init parked before StartContainer would
      // otherwise read EOF and exit 0, reporting success for a workload that never ran.
      try {
        for (const p of procs) this.registry.signal(p, SIGKILL);
      } finally {
        record.handle.abort();
      }
      // Every process of the cgroup, also the ones the helper does not track (children of a
      // container sharing the sandbox pid namespace outlive its init).
      const cgroupEmpty = record.cgroup && this.cgroups ? this.cgroups.killAll(record.cgroup) : Promise.resolve(true);
      const results = await Promise.all(procs.map((p) => p.waitExit(timeoutMs)));
      const survivors = procs.filter((_, i) => !results[i]);
      if (!(await cgroupEmpty) && record.cgroup && this.cgroups) {
        const left = this.cgroups.allProcs(record.cgroup);
        if (left.length > 0) {
          throw new StatusError(Code.DEADLINE_EXCEEDED, `container ${record.id}: cgroup ${record.cgroup.path} still holds pids ${left.join(', ')} after SIGKILL`);
        }
      }
      if (survivors.length > 0) {
        throw new StatusError(
          Code.DEADLINE_EXCEEDED,
          `container ${record.id}: still running ${timeoutMs} ms after SIGKILL: ` +
            survivors.map((p) => `${p.execId === '' ? 'init' : `exec ${p.execId}`} (pid ${p.pid})`).join(', '),
        );
      }
      for (const p of procs) this.registry.forget(p);
      this.checkOom(); // an OOM kill that ended the container is still reported
      if (record.cgroup && this.cgroups) {
        const left = this.cgroups.remove(record.cgroup);
        if (left.length > 0) this.log.warn({ containerId: record.id, left }, 'cgroup dirs left behind');
      }
      this.detachSharedMounts(record.id, record.plan);
      record.removed = true;
      this.containers.delete(record.id);
      this.journal?.forget(record.id);
      this.log.info({ containerId: record.id }, 'container removed');
      // rustjail container.rs destroy(): poststop hooks after the container is gone, before the
      // remove returns; failures are logged only.
      if (runPoststop) await this.hookRunner.runAll('poststop', record.hooks.poststop, this.ociState(record, 'stopped'), false);
    };
    record.removing = run().finally(() => {
      record.removing = undefined;
    });
    return record.removing;
  }

  /**
   * A container that shared the helper's mount namespace (host-namespace mode, no `mount`
   * entry) had its spec's mounts made below its rootfs in ours (as runc does): detach every
   * mount strictly below the rootfs, deepest first, once its processes are gone. Failures are
   * logged only.
   */
  private detachSharedMounts(containerId: string, plan: ValidContainerPlan): void {
    if (!plan.hostns || !this.launcher.hostChecks || plan.namespaces.some((n) => n.type === 'mnt')) return;
    const mounter = new KernelMounter();
    const below = mounter.mountsUnder(plan.rootfs).filter((m) => m !== plan.rootfs).reverse();
    for (const m of below) {
      try {
        mounter.umount(m);
      } catch (err) {
        this.log.warn({ containerId, mount: m, err }, 'mount below a shared-mount-namespace container\'s rootfs not detached');
      }
    }
  }

  /** Remove every container; returns the failure messages. */
  private async removeAll(timeoutMs: number): Promise<string[]> {
    const results = await Promise.allSettled([...this.containers.values()].map((r) => this.remove(r, timeoutMs)));
    return results.flatMap((r) => (r.status === 'rejected' ? [(r.reason as Error).message] : []));
  }

  /**
   * A container may join a namespace only of this sandbox: /proc/<pid>/ns/<type> of a live
   * process the helper tracks, one of the sandbox's namespace files (bind mounts), or — for the
   * network namespace only — a named network namespace under /run/netns or /var/run/netns
   * (how the guest's network set-up pins them). Never an arbitrary path such as /proc/1/ns/mnt:
   * the control plane is not trusted to pick the guest's own namespaces. kata-init's setns with
   * the namespace type makes the kernel refuse a file that is not a namespace of that type.
   */
  private namespacePathAllowed(type: KernelNamespace, nsPath: string): boolean {
    if (type === 'net' && NETNS_PATH_RE.test(nsPath)) return fs.existsSync(nsPath);
    if (this.sandbox?.namespaces.some((n) => n.path === nsPath && (n.type === type || (n.type === 'network' && type === 'net')))) {
      return true;
    }
    const m = NS_PATH_RE.exec(nsPath);
    if (!m || m[2] !== type) return false;
    const pid = Number(m[1]);
    return this.registry.isLive(pid) && fs.existsSync(nsPath);
  }
}
