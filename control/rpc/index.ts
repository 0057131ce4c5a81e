/**
 * Registration of the agent's ttRPC services on a {@link TtrpcServer}: every rpc of
 * `grpc.AgentService` (protos/agent.proto) and `grpc.Health` (protos/health.proto).
 *
 * Each rpc goes through {@link registerRpc}: the payload is decoded with the generated request
 * class (a payload that does not decode → INVALID_ARGUMENT; upstream ttrpc-rust answers
 * UNKNOWN), the handler runs, its result is encoded with the generated response class. An
 * AgentService rpc without an implementation answers UNIMPLEMENTED `<Method> is not implemented
 * yet` (upstream answers NOT_FOUND `/grpc.AgentService/<Method> is not supported` for the rpcs
 * it lacks; ours are honest placeholders that later issues fill in).
 *
 * The method table (wire names and codecs) is control/ctl/methods.ts, shared with the client.
 */
import type { Logger } from 'pino';
import { Code, StatusError } from '../../shared/protocol';
import { AGENT_SERVICE, HEALTH_SERVICE, METHOD_NAMES, METHODS, type MethodSpec } from '../ctl/methods';
import { bytesFieldChunks, type HandlerContext, type TtrpcServer } from '../ttrpc';
import type { AgentService } from './agent';
import type { HealthService } from './health';
import type { Tracing } from '../tracing';

export { AgentService, DEFAULT_REMOVE_TIMEOUT_MS, MAX_READ_LEN, MAX_SIGNAL, STORAGE_HANDLERS } from './agent';
export type { AgentLimits, AgentServiceOptions, GuestOptions, RpcContext } from './agent';
export { HealthService, API_VERSION, SERVING, agentVersion } from './health';

/** Statuses that are an ordinary answer, logged at debug; others at info. */
const QUIET_CODES = new Set<number>([Code.OUT_OF_RANGE, Code.CANCELLED]);

/** Told of every rpc once it ends: wire method name, gRPC status code (0 = OK), seconds taken. */
export type RpcObserver = (method: string, code: number, seconds: number) => void;

/** Status code of a failure as the runtime sees it (a non-StatusError is answered UNKNOWN). */
function codeOf(err: unknown): number {
  return err instanceof StatusError ? err.code : Code.UNKNOWN;
}

/**
 * Register one rpc: decode with `spec.request`, run `fn`, encode with `spec.response`.
 * Calls are logged at debug (method, code); failures at info (warn for INTERNAL). `observe`
 * (GetMetrics' per-rpc counters and latency histograms) is told of every call.
 */
export function registerRpc<ReqP extends object, ReqM extends ReqP, ResP extends object, ResM extends ResP>(
  server: TtrpcServer,
  spec: MethodSpec<ReqP, ReqM, ResP, ResM>,
  fn: (request: ReqM, ctx: HandlerContext) => Promise<ResP>,
  log?: Logger,
  observe?: RpcObserver,
): void {
  const read = spec.method === 'ReadStdout' || spec.method === 'ReadStderr';
  const quiet = read || spec.method === 'WriteStdin';
  const callFields = { method: spec.method };
  const decodeFailed = (err: unknown): StatusError =>
    new StatusError(Code.INVALID_ARGUMENT, `cannot decode ${spec.service}/${spec.method} request: ${(err as Error).message}`);
  // One async layer per call (decode, fn, observe, encode): each extra async wrapper returning
  // a promise cost microtask hops and a promise per call in the Health.Check profile.
  server.register(spec.service, spec.method, async (payload, ctx) => {
    let request: ReqM;
    try {
      request = spec.request.decode(payload);
    } catch (err) {
      throw decodeFailed(err);
    }
    if (!quiet) log?.debug(callFields, 'rpc call');
    const started = process.hrtime.bigint();
    let result: ResP;
    try {
      result = await fn(request, ctx);
    } catch (err) {
      observe?.(spec.method, codeOf(err), Number(process.hrtime.bigint() - started) / 1e9);
      if (log && err instanceof StatusError) {
        if (err.code === Code.INTERNAL) log.warn({ method: spec.method, code: err.code, err: err.message }, 'rpc failed');
        else if (!QUIET_CODES.has(err.code)) log.info({ method: spec.method, code: err.code, err: err.message }, 'rpc failed');
      }
      throw err;
    }
    observe?.(spec.method, Code.OK, Number(process.hrtime.bigint() - started) / 1e9);
    // ReadStreamResponse {data}: the output is written to the socket as it is, not copied twice
    // by protobufjs (the response, then the envelope): GC and copies were most of a large read's
    // time in the control plane's profile.
    return (read ? bytesFieldChunks(result as { data?: Uint8Array | null }) : undefined) ?? spec.response.encode(result).finish();
  });
}

/**
 * Register `grpc.AgentService` (every method of the table; those `agent` does not implement
 * answer UNIMPLEMENTED) and `grpc.Health` on `server`. With `tracing`, every rpc runs inside a
 * span parented on its metadata's trace context (control/tracing.ts); without, nothing is added.
 */
export function registerServices(
  server: TtrpcServer,
  agent: AgentService,
  health: HealthService,
  log?: Logger,
  tracing?: Pick<Tracing, 'rpc'>,
): void {
  const implemented = new Set<string>();
  const observe: RpcObserver = (method, code, seconds) => agent.observeRpc(method, code, seconds);
  // The policy interceptor: every AgentService rpc is checked once here, before it runs
  // (control/rpc/policy.ts); Health is never checked, as upstream.
  const reg = <ReqP extends object, ReqM extends ReqP, ResP extends object, ResM extends ResP>(
    spec: MethodSpec<ReqP, ReqM, ResP, ResM>,
    fn: (request: ReqM, ctx: HandlerContext) => Promise<ResP>,
  ): void => {
    implemented.add(`${spec.service}/${spec.method}`);
    // Not async: a throw of the check is turned into a rejection by registerRpc's handler.
    const guarded =
      spec.service === AGENT_SERVICE
        ? (request: ReqM, ctx: HandlerContext): Promise<ResP> => {
            agent.checkPolicy(spec.method, request);
            return fn(request, ctx);
          }
        : fn;
    // The tracing interceptor (outermost, so the span covers the policy check, as upstream's
    // trace_rpc_call! precedes is_allowed).
    const traced = tracing
      ? (request: ReqM, ctx: HandlerContext): Promise<ResP> => tracing.rpc(spec.service, spec.method, ctx.metadata, () => guarded(request, ctx))
      : guarded;
    registerRpc(server, spec, traced, log, observe);
  };

  reg(METHODS.CreateSandbox, (r) => agent.createSandbox(r));
  reg(METHODS.DestroySandbox, (r) => agent.destroySandbox(r));
  reg(METHODS.CreateContainer, (r) => agent.createContainer(r));
  reg(METHODS.StartContainer, (r) => agent.startContainer(r));
  reg(METHODS.RemoveContainer, (r) => agent.removeContainer(r));
  reg(METHODS.ExecProcess, (r) => agent.execProcess(r));
  reg(METHODS.SignalProcess, (r) => agent.signalProcess(r));
  reg(METHODS.WaitProcess, (r, ctx) => agent.waitProcess(r, ctx));
  reg(METHODS.ReadStdout, (r, ctx) => agent.readStdout(r, ctx));
  reg(METHODS.ReadStderr, (r, ctx) => agent.readStderr(r, ctx));
  reg(METHODS.WriteStdin, (r, ctx) => agent.writeStdin(r, ctx));
  reg(METHODS.CloseStdin, (r) => agent.closeStdin(r));
  reg(METHODS.TtyWinResize, (r) => agent.ttyWinResize(r));
  reg(METHODS.GetOOMEvent, (r, ctx) => agent.getOOMEvent(r, ctx));
  reg(METHODS.PauseContainer, (r) => agent.pauseContainer(r));
  reg(METHODS.ResumeContainer, (r) => agent.resumeContainer(r));
  reg(METHODS.UpdateContainer, (r) => agent.updateContainer(r));
  reg(METHODS.StatsContainer, (r) => agent.statsContainer(r));
  reg(METHODS.GetMetrics, (r) => agent.getMetrics(r));
  reg(METHODS.UpdateEphemeralMounts, (r) => agent.updateEphemeralMounts(r));
  reg(METHODS.RemoveStaleVirtiofsShareMounts, (r) => agent.removeStaleVirtiofsShareMounts(r));
  reg(METHODS.GetGuestDetails, (r) => agent.getGuestDetails(r));
  reg(METHODS.OnlineCPUMem, (r) => agent.onlineCpuMem(r));
  reg(METHODS.MemHotplugByProbe, (r) => agent.memHotplugByProbe(r));
  reg(METHODS.ReseedRandomDev, (r) => agent.reseedRandomDev(r));
  reg(METHODS.SetGuestDateTime, (r) => agent.setGuestDateTime(r));
  reg(METHODS.AddSwap, (r) => agent.addSwap(r));
  reg(METHODS.GetVolumeStats, (r) => agent.getVolumeStats(r));
  reg(METHODS.ResizeVolume, (r) => agent.resizeVolume(r));
  reg(METHODS.CopyFile, (r) => agent.copyFile(r));
  reg(METHODS.SetPolicy, (r) => agent.setPolicy(r));
  reg(METHODS.UpdateInterface, (r) => agent.updateInterface(r));
  reg(METHODS.UpdateRoutes, (r) => agent.updateRoutes(r));
  reg(METHODS.ListInterfaces, (r) => agent.listInterfaces(r));
  reg(METHODS.ListRoutes, (r) => agent.listRoutes(r));
  reg(METHODS.AddARPNeighbors, (r) => agent.addArpNeighbors(r));
  reg(METHODS.GetIPTables, (r) => agent.getIpTables(r));
  reg(METHODS.SetIPTables, (r) => agent.setIpTables(r));
  reg(METHODS.Check, (r) => health.check(r));
  reg(METHODS.Version, (r) => health.version(r));

  for (const name of METHOD_NAMES) {
    const spec = METHODS[name];
    if (spec.service !== AGENT_SERVICE && spec.service !== HEALTH_SERVICE) continue;
    if (implemented.has(`${spec.service}/${spec.method}`)) continue;
    const method = spec.method;
    const checked = spec.service === AGENT_SERVICE;
    const answer = async (): Promise<never> => {
      try {
        if (checked) agent.checkPolicy(method, undefined);
      } catch (err) {
        observe(method, codeOf(err), 0);
        throw err;
      }
      observe(method, Code.UNIMPLEMENTED, 0);
      throw new StatusError(Code.UNIMPLEMENTED, `${method} is not implemented yet`);
    };
    server.register(spec.service, method, (_payload, ctx) => (tracing ? tracing.rpc(spec.service, method, ctx.metadata, answer) : answer()));
  }
}

/** Wire names of the AgentService rpcs implemented for real (for docs and tests). */
export const IMPLEMENTED_AGENT_METHODS: readonly string[] = [
  'CreateSandbox', 'DestroySandbox', 'CreateContainer', 'StartContainer', 'RemoveContainer',
  'ExecProcess', 'SignalProcess', 'WaitProcess', 'ReadStdout', 'ReadStderr', 'WriteStdin',
  'CloseStdin', 'TtyWinResize', 'GetOOMEvent',
  'PauseContainer', 'ResumeContainer', 'UpdateContainer', 'StatsContainer', 'GetMetrics',
  'UpdateEphemeralMounts', 'RemoveStaleVirtiofsShareMounts',
  'GetGuestDetails', 'OnlineCPUMem', 'MemHotplugByProbe', 'ReseedRandomDev', 'SetGuestDateTime',
  'AddSwap', 'GetVolumeStats', 'ResizeVolume', 'CopyFile', 'SetPolicy',
  'UpdateInterface', 'UpdateRoutes', 'ListInterfaces', 'ListRoutes', 'AddARPNeighbors', 'GetIPTables', 'SetIPTables',
];
