/**
 * `grpc.AgentService`: the facade the server registers. Each rpc lives in the module of its
 * service area (sandbox.ts, container.ts, process.ts, stdio.ts, events.ts, storage.ts, network.ts),
 * on the shared {@link AgentCore} (core.ts); guest operations and the policy engine in guest.ts
 * and policy.ts; this class only ties them together. Methods not implemented yet answer UNIMPLEMENTED
 * `<Method> is not implemented yet` (see control/rpc/index.ts).
 *
 * Behaviour follows the Kata agent (src/agent/src/rpc.rs at 6e4d4c329a; inventory §1.3, §3,
 * §4.1-4.2). Where we answer with another status code than upstream (which mostly answers
 * INTERNAL), the Conventions' codes are used:
 *   unknown container id / exec id  NOT_FOUND (upstream INTERNAL or INVALID_ARGUMENT)
 *   invalid container id            INVALID_ARGUMENT (upstream INTERNAL)
 *   duplicate container / exec id   ALREADY_EXISTS (upstream: "exec fifo exists" INTERNAL / no check)
 *   missing OCI / process           INVALID_ARGUMENT (upstream INTERNAL EINVAL)
 *   Start of a non-created container, Exec into a non-running one, write after CloseStdin,
 *   sandbox_pidns without a sandbox pid namespace        FAILED_PRECONDITION
 *   TtyWinResize: unknown process or one already waited for NOT_FOUND (exited, not waited: OK, no effect), no tty FAILED_PRECONDITION (upstream UNAVAILABLE)
 *   ReadStdout/ReadStderr at end of stream OUT_OF_RANGE "EOF" (upstream INTERNAL "read meet eof");
 *   len 0 INVALID_ARGUMENT (upstream: the eof error)
 *   features not carried out yet (VFIO devices, shared mounts, OCI spec hooks)
 *                                   UNIMPLEMENTED naming the field
 * WaitProcess reports 128 + signal for a signal death (upstream at 6e4d4c329a reports the bare
 * signal number; later upstream and the helper protocol use 128 + n).
 */
import type { Logger } from 'pino';
import type { google as gpb, grpc as pb, types } from '../../shared/generated/protos';
import type { HelperEvent } from '../../shared/protocol';
import type { HelperConnection } from '../helper';
import { MAX_EXITED_RECORDS } from '../sandbox/container';
import type { Sandbox } from '../sandbox/sandbox';
import * as containers from './container';
import { AgentCore, type AgentLimits, type RpcContext } from './core';
import * as events from './events';
import * as guest from './guest';
import * as manage from './manage';
import type { AgentMetrics, MetricsSource } from '../metrics';
import { RpcStats } from '../rpc-stats';
import { GuestContext, type GuestOptions } from './guest';
import * as network from './network';
import * as processes from './process';
import * as sandboxes from './sandbox';
import * as stdio from './stdio';
import * as storage from './storage';

export { DEFAULT_REMOVE_TIMEOUT_MS, MAX_REMOVE_TIMEOUT_MS } from './container';
export type { AgentLimits, RpcContext } from './core';
export { MAX_SIGNAL } from './process';
export { MAX_READ_LEN } from './stdio';
export { STORAGE_HANDLERS, type GuestOptions } from './guest';

type Empty = gpb.protobuf.Empty.$Properties;

/** Options of {@link AgentService}. */
export interface AgentServiceOptions extends AgentLimits {
  helper: HelperConnection;
  sandbox: Sandbox;
  logger: Logger;
  /** Called once after a successful DestroySandbox has been answered: the agent should exit. */
  onShutdown?: () => void;
  /** RemoveContainer bound for timeout 0, in ms (default {@link containers.DEFAULT_REMOVE_TIMEOUT_MS}). */
  defaultRemoveTimeoutMs?: number;
  /** Exited exec records kept per container (default {@link MAX_EXITED_RECORDS}). */
  maxExitedRecords?: number;
  /** Guest rpcs: sysfs root, CopyFile and volume roots, initial policy (control/rpc/guest.ts). */
  guest?: GuestOptions;
  /** Host-namespace mode (config allowHostNamespaces; control/oci.ts ContainerPlanOptions). */
  allowHostNamespaces?: boolean;
}

/** The AgentService rpcs implemented for real, one method per rpc (see the area modules). */
export class AgentService {
  readonly core: AgentCore;
  /** The guest area's paths and the policy engine (control/rpc/guest.ts, policy.ts). */
  readonly guest: GuestContext;
  private metricsImpl: AgentMetrics | undefined;
  private readonly metricsSource: MetricsSource;
  private readonly metricsLog: AgentServiceOptions['logger'];
  /** Per-rpc counts and latencies (cheap per call; GetMetrics' registry reads them). */
  readonly rpcStats = new RpcStats();

  constructor(options: AgentServiceOptions) {
    this.core = new AgentCore({
      ...options,
      defaultRemoveTimeoutMs: options.defaultRemoveTimeoutMs ?? containers.DEFAULT_REMOVE_TIMEOUT_MS,
      maxExitedRecords: options.maxExitedRecords ?? MAX_EXITED_RECORDS,
    });
    this.guest = new GuestContext(options.guest);
    const core = this.core;
    this.metricsSource = {
      helperStats: () => core.callNoFds('helperStats', {}, 5000),
      containerIds: () => [...core.sandbox.containers.keys()],
      cgroupFiles: async (id) => (await core.callNoFds('cgroupStats', { containerId: id }, 5000)).files,
    };
    this.metricsLog = options.logger;
  }

  /**
   * GetMetrics' registry (control/metrics.ts), loaded on first use: prom-client is not needed
   * to serve the first request (start-to-SERVING, bench/startup.ts). It reads the rpc figures
   * from {@link rpcStats}.
   */
  get metrics(): AgentMetrics {
    if (!this.metricsImpl) {
      const { AgentMetrics: Metrics } = require('../metrics') as typeof import('../metrics');
      this.metricsImpl = new Metrics(this.metricsSource, this.metricsLog, undefined, this.rpcStats);
    }
    return this.metricsImpl;
  }

  /**
   * Count one rpc (control/rpc/index.ts calls this for every rpc): wire method name, gRPC status
   * code, seconds. Kept in {@link rpcStats} (a few additions; no prom-client per call).
   */
  observeRpc(method: string, code: number, seconds: number): void {
    this.rpcStats.observe(method, code, seconds);
  }

  /** GetMetrics: Prometheus text exposition (control/metrics.ts). */
  async getMetrics(_req: pb.GetMetricsRequest): Promise<pb.Metrics.$Properties> {
    return { metrics: await this.metrics.render() };
  }

  /**
   * The policy interceptor (control/rpc/index.ts runs it before every AgentService rpc):
   * throws PERMISSION_DENIED when the policy in force denies `method` with `request`.
   */
  checkPolicy(method: string, request: object | undefined): void {
    this.guest.policy.check(method, request);
  }

  /** Feed a helper event (process exit) into the model. */
  handleHelperEvent(event: HelperEvent): void {
    this.core.handleHelperEvent(event);
  }

  /** The helper connection is gone: see {@link AgentCore.handleHelperLost}. */
  handleHelperLost(): void {
    this.core.handleHelperLost();
  }

  createSandbox(req: pb.CreateSandboxRequest): Promise<Empty> {
    return sandboxes.createSandbox(this.core, req);
  }
  destroySandbox(req: pb.DestroySandboxRequest): Promise<Empty> {
    return sandboxes.destroySandbox(this.core, req);
  }
  createContainer(req: pb.CreateContainerRequest): Promise<Empty> {
    return containers.createContainer(this.core, req);
  }
  startContainer(req: pb.StartContainerRequest): Promise<Empty> {
    return containers.startContainer(this.core, req);
  }
  removeContainer(req: pb.RemoveContainerRequest): Promise<Empty> {
    return containers.removeContainer(this.core, req);
  }
  execProcess(req: pb.ExecProcessRequest): Promise<Empty> {
    return processes.execProcess(this.core, req);
  }
  signalProcess(req: pb.SignalProcessRequest): Promise<Empty> {
    return processes.signalProcess(this.core, req);
  }
  waitProcess(req: pb.WaitProcessRequest, ctx: RpcContext = {}): Promise<pb.WaitProcessResponse.$Properties> {
    return processes.waitProcess(this.core, req, ctx);
  }
  readStdout(req: pb.ReadStreamRequest, ctx: RpcContext = {}): Promise<pb.ReadStreamResponse.$Properties> {
    return stdio.readStdout(this.core, req, ctx);
  }
  readStderr(req: pb.ReadStreamRequest, ctx: RpcContext = {}): Promise<pb.ReadStreamResponse.$Properties> {
    return stdio.readStderr(this.core, req, ctx);
  }
  writeStdin(req: pb.WriteStreamRequest, ctx: RpcContext = {}): Promise<pb.WriteStreamResponse.$Properties> {
    return stdio.writeStdin(this.core, req, ctx);
  }
  closeStdin(req: pb.CloseStdinRequest): Promise<Empty> {
    return stdio.closeStdin(this.core, req);
  }
  ttyWinResize(req: pb.TtyWinResizeRequest): Promise<Empty> {
    return stdio.ttyWinResize(this.core, req);
  }
  updateEphemeralMounts(req: pb.UpdateEphemeralMountsRequest): Promise<Empty> {
    return storage.updateEphemeralMounts(this.core, req);
  }
  removeStaleVirtiofsShareMounts(req: pb.RemoveStaleVirtiofsShareMountsRequest): Promise<Empty> {
    return storage.removeStaleVirtiofsShareMounts(this.core, req);
  }
  getOOMEvent(req: pb.GetOOMEventRequest, ctx: RpcContext = {}): Promise<pb.OOMEvent.$Properties> {
    return events.getOOMEvent(this.core, req, ctx);
  }

  pauseContainer(req: pb.PauseContainerRequest): Promise<Empty> {
    return manage.pauseContainer(this.core, req);
  }
  resumeContainer(req: pb.ResumeContainerRequest): Promise<Empty> {
    return manage.resumeContainer(this.core, req);
  }
  updateContainer(req: pb.UpdateContainerRequest): Promise<Empty> {
    return manage.updateContainer(this.core, req);
  }
  statsContainer(req: pb.StatsContainerRequest): Promise<pb.StatsContainerResponse.$Properties> {
    return manage.statsContainer(this.core, req);
  }

  getGuestDetails(req: pb.GuestDetailsRequest): Promise<pb.GuestDetailsResponse.$Properties> {
    return guest.getGuestDetails(this.core, req);
  }
  onlineCpuMem(req: pb.OnlineCPUMemRequest): Promise<Empty> {
    return guest.onlineCpuMem(this.core, req);
  }
  memHotplugByProbe(req: pb.MemHotplugByProbeRequest): Promise<Empty> {
    return guest.memHotplugByProbe(this.core, req);
  }
  reseedRandomDev(req: pb.ReseedRandomDevRequest): Promise<Empty> {
    return guest.reseedRandomDev(this.core, req);
  }
  setGuestDateTime(req: pb.SetGuestDateTimeRequest): Promise<Empty> {
    return guest.setGuestDateTime(this.core, req);
  }
  addSwap(req: pb.AddSwapRequest): Promise<Empty> {
    return guest.addSwap(this.core, req);
  }
  getVolumeStats(req: pb.VolumeStatsRequest): Promise<pb.VolumeStatsResponse.$Properties> {
    return guest.getVolumeStats(this.core, this.guest, req);
  }
  resizeVolume(req: pb.ResizeVolumeRequest): Promise<Empty> {
    return guest.resizeVolume(this.core, this.guest, req);
  }
  copyFile(req: pb.CopyFileRequest): Promise<Empty> {
    return guest.copyFile(this.core, this.guest, req);
  }
  setPolicy(req: pb.SetPolicyRequest): Promise<Empty> {
    return guest.setPolicy(this.core, this.guest, req);
  }
  updateInterface(req: pb.UpdateInterfaceRequest): Promise<types.Interface.$Properties> {
    return network.updateInterface(this.core, req);
  }
  updateRoutes(req: pb.UpdateRoutesRequest): Promise<pb.Routes.$Properties> {
    return network.updateRoutes(this.core, req);
  }
  listInterfaces(req: pb.ListInterfacesRequest): Promise<pb.Interfaces.$Properties> {
    return network.listInterfaces(this.core, req);
  }
  listRoutes(req: pb.ListRoutesRequest): Promise<pb.Routes.$Properties> {
    return network.listRoutes(this.core, req);
  }
  addArpNeighbors(req: pb.AddARPNeighborsRequest): Promise<Empty> {
    return network.addArpNeighbors(this.core, req);
  }
  getIpTables(req: pb.GetIPTablesRequest): Promise<pb.GetIPTablesResponse.$Properties> {
    return network.getIpTables(this.core, req);
  }
  setIpTables(req: pb.SetIPTablesRequest): Promise<pb.SetIPTablesResponse.$Properties> {
    return network.setIpTables(this.core, req);
  }
}
