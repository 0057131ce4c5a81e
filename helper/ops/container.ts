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
 *
 * Facade: the code lives in helper/ops/container/, one module per verb or concern (create.ts,
 * start.ts, exec.ts, signal.ts, release.ts, remove.ts, state.ts, cgroup.ts, sandbox.ts,
 * oom-events.ts; launcher.ts the {@link Launcher} contract, record.ts the container record,
 * context.ts the state they share). Chain: control/rpc/<area>.ts → helper call → the verb's
 * module here → {@link Launcher} (helper/ops/process.ts) → kata-init step.
 */
import type {
  AckOomEventsArgs,
  AckOomEventsResult,
  CgroupFreezeArgs,
  CgroupFreezeResult,
  CgroupStatsArgs,
  CgroupStatsResult,
  CgroupUpdateArgs,
  CgroupUpdateResult,
  CloseStdinArgs,
  CloseStdinResult,
  CreateContainerArgs,
  CreateContainerResult,
  CreateSandboxArgs,
  CreateSandboxResult,
  DestroySandboxArgs,
  DestroySandboxResult,
  ExecProcessArgs,
  ExecProcessResult,
  HelperEvent,
  HelperStatsArgs,
  HelperStatsResult,
  KeepPolicyArgs,
  KeepPolicyResult,
  KeptPolicyArgs,
  KeptPolicyResult,
  ReleaseProcessArgs,
  ReleaseProcessResult,
  RemoveContainerArgs,
  RemoveContainerResult,
  SignalProcessArgs,
  SignalProcessResult,
  StartContainerArgs,
  StartContainerResult,
  StateArgs,
  StateResult,
} from '../../shared/protocol';
import { Code, StatusError } from '../../shared/protocol';
import type { CleanUpSummary, LeftoverJournal } from './leftovers';
import { silentLogger, type Logger } from '../../shared/log';
import type { BackendReply, ContainerFamily } from '../api';
import type { StorageBackend, StorageBackendOps } from './storage';
import { HookRunner, emptyGuestHooks } from './hooks';
import type { CgroupManager } from './cgroup';
import { guestHasSelinux } from './selinux';
import { readSelfStats } from '../../shared/self-stats';
import type { ProcessRegistry } from './registry';
import { checkArgs } from './guest-args';
import { KeptPolicy } from './kept-policy';
import { emit, type ContainerContext } from './container/context';
import type { Launcher } from './container/launcher';
import * as oom from './container/oom-events';
import * as sandbox from './container/sandbox';
import * as create from './container/create';
import * as start from './container/start';
import * as exec from './container/exec';
import * as signal from './container/signal';
import * as release from './container/release';
import * as remove from './container/remove';
import * as state from './container/state';
import * as cgroup from './container/cgroup';

export type { BeforePivot, JoinCgroup, LaunchedInit, LaunchedProcess, Launcher } from './container/launcher';
export { OOM_WATCH_INTERVAL_MS } from './container/oom-events';

/**
 * The container family of a HelperBackend (helper/api.ts) over a {@link Launcher}: the container model, validation of every
 * request, stdio fds, exit events. Errors: INVALID_ARGUMENT (bad args), NOT_FOUND (unknown
 * container/exec id), ALREADY_EXISTS (duplicate id), FAILED_PRECONDITION (wrong state),
 * DEADLINE_EXCEEDED (removeContainer could not see every process die in time).
 * Each verb is documented in its module under helper/ops/container/.
 */
export class ContainerBackend implements ContainerFamily {
  readonly registry: ProcessRegistry;
  /** What the verbs share (helper/ops/container/context.ts). */
  private readonly ctx: ContainerContext;
  private readonly oomTimer: NodeJS.Timeout;
  /** The policy control enforces, for a restarted control plane (helper/ops/kept-policy.ts). */
  private readonly policy = new KeptPolicy();

  /** Storage, device, DNS and modprobe ops (helper/ops/storage.ts); absent: those ops are UNIMPLEMENTED. */
  readonly storage: StorageBackend | undefined;
  /** Container cgroups (helper/ops/cgroup.ts); absent: plans' cgroups are refused (FAILED_PRECONDITION). */
  readonly cgroups: CgroupManager | undefined;

  constructor(
    launcher: Launcher,
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
    const log = (opts.logger ?? silentLogger()).child({ component: 'backend' });
    this.registry = opts.registry;
    this.storage = opts.storage;
    this.cgroups = opts.cgroups;
    this.ctx = {
      launcher,
      registry: this.registry,
      log,
      containers: new Map(),
      creating: new Set(),
      sandbox: undefined,
      guestHooks: emptyGuestHooks(),
      hookRunner: new HookRunner({ reaper: this.registry.reaper, logger: log }),
      sandboxBusy: false,
      listeners: new Set(),
      isShutdown: false,
      journal: opts.journal,
      oomSeq: 0,
      oomPending: [],
      oomPendingBytes: 0,
      storage: this.storage,
      cgroups: this.cgroups,
      selinux: opts.selinux ?? (launcher.hostChecks && guestHasSelinux()),
      allowHostNamespaces: opts.allowHostNamespaces === true,
    };
    this.registry.on('exit', (event) => emit(this.ctx, event));
    this.registry.start();
    this.oomTimer = setInterval(() => this.checkOom(), oom.OOM_WATCH_INTERVAL_MS);
    this.oomTimer.unref();
  }

  /** One tick of the OOM watch (container/oom-events.ts checkOom). */
  checkOom(): void {
    oom.checkOom(this.ctx);
  }

  /**
   * Start-up, before serving: kill the containers and detach the mounts (recorded ones, and all
   * below the state dir) a previous helper left when it died (helper/ops/leftovers.ts). Null
   * without a journal or when the clean-up failed (logged). Never throws.
   */
  async cleanLeftovers(): Promise<CleanUpSummary | null> {
    if (!this.ctx.journal) return null;
    try {
      return await this.ctx.journal.cleanUp(this.cgroups);
    } catch (err) {
      this.ctx.log.error({ err }, 'cleaning up after a previous helper failed');
      return null;
    }
  }

  /** Keep a chunk of control's policy document (helper/ops/kept-policy.ts; INVALID_ARGUMENT). */
  keepPolicy(args: KeepPolicyArgs): Promise<BackendReply<KeepPolicyResult>> {
    return this.policy.keepPolicy(args);
  }

  /** Read the kept policy document (helper/ops/kept-policy.ts; INVALID_ARGUMENT). */
  keptPolicy(args: KeptPolicyArgs): Promise<BackendReply<KeptPolicyResult>> {
    return this.policy.keptPolicy(args);
  }

  /** container/oom-events.ts */
  ackOomEvents(a: AckOomEventsArgs): Promise<BackendReply<AckOomEventsResult>> {
    return oom.ackOomEvents(this.ctx, a);
  }

  subscribe(listener: (event: HelperEvent) => void): () => void {
    this.ctx.listeners.add(listener);
    return () => this.ctx.listeners.delete(listener);
  }

  /** container/sandbox.ts */
  createSandbox(a: CreateSandboxArgs): Promise<BackendReply<CreateSandboxResult>> {
    return sandbox.createSandbox(this.ctx, a);
  }

  /** container/sandbox.ts */
  destroySandbox(a: DestroySandboxArgs): Promise<BackendReply<DestroySandboxResult>> {
    return sandbox.destroySandbox(this.ctx, a);
  }

  /** container/create.ts */
  createContainer(a: CreateContainerArgs): Promise<BackendReply<CreateContainerResult>> {
    return create.createContainer(this.ctx, a);
  }

  /** container/start.ts */
  startContainer(a: StartContainerArgs): Promise<BackendReply<StartContainerResult>> {
    return start.startContainer(this.ctx, a);
  }

  /** container/exec.ts */
  execProcess(a: ExecProcessArgs): Promise<BackendReply<ExecProcessResult>> {
    return exec.execProcess(this.ctx, a);
  }

  /** container/signal.ts */
  signalProcess(a: SignalProcessArgs): Promise<BackendReply<SignalProcessResult>> {
    return signal.signalProcess(this.ctx, a);
  }

  /** container/remove.ts */
  removeContainer(a: RemoveContainerArgs): Promise<BackendReply<RemoveContainerResult>> {
    return remove.removeContainer(this.ctx, a);
  }

  /** container/release.ts */
  closeStdin(a: CloseStdinArgs): Promise<BackendReply<CloseStdinResult>> {
    return release.closeStdin(this.ctx, a);
  }

  /** container/release.ts */
  releaseProcess(a: ReleaseProcessArgs): Promise<BackendReply<ReleaseProcessResult>> {
    return release.releaseProcess(this.ctx, a);
  }

  /** container/state.ts */
  state(a: StateArgs): Promise<BackendReply<StateResult>> {
    return state.state(this.ctx, a);
  }

  /** container/cgroup.ts */
  cgroupStats(a: CgroupStatsArgs): Promise<BackendReply<CgroupStatsResult>> {
    return cgroup.cgroupStats(this.ctx, a);
  }

  /** container/cgroup.ts */
  cgroupFreeze(a: CgroupFreezeArgs): Promise<BackendReply<CgroupFreezeResult>> {
    return cgroup.cgroupFreeze(this.ctx, a);
  }

  /** container/cgroup.ts */
  cgroupUpdate(a: CgroupUpdateArgs): Promise<BackendReply<CgroupUpdateResult>> {
    return cgroup.cgroupUpdate(this.ctx, a);
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
    if (this.ctx.isShutdown) return;
    this.ctx.isShutdown = true;
    clearInterval(this.oomTimer);
    try {
      const failures = await remove.removeAll(this.ctx, remove.TEARDOWN_TIMEOUT_MS);
      if (failures.length > 0) this.ctx.log.warn({ failures }, 'processes survived shutdown');
      await this.ctx.launcher.destroySandbox();
      this.storage?.shutdown();
    } catch (err) {
      this.ctx.log.error({ err }, 'shutdown failed');
    } finally {
      this.ctx.sandbox = undefined;
      this.registry.stop();
    }
  }
}
