/**
 * The method table of the Kata agent protocol: every rpc of `grpc.AgentService`
 * (protos/agent.proto, 38 methods) and `grpc.Health` (protos/health.proto, 2 methods), with the
 * wire service and method names and the generated protobufjs codecs of its request and response.
 *
 * This is the one place that knows which message goes with which rpc; the CLI
 * (control/ctl/main.ts), the programmatic client (control/ctl/client.ts) and the tests use it.
 * test/unit/ctl.test.ts checks it against the service definitions in protos/*.proto.
 *
 * Wire names: a ttRPC Request carries `service = "<proto package>.<Service>"` and the bare rpc
 * name as `method` (ttrpc-compiler codegen.rs service_path; inventory §1.1).
 */
import type { Reader, Writer, IConversionOptions } from 'protobufjs';
import { grpc, types, google } from '../../shared/proto';

/** Wire name of the agent service. */
export const AGENT_SERVICE = 'grpc.AgentService';
/** Wire name of the health service (served on the same socket as the agent service). */
export const HEALTH_SERVICE = 'grpc.Health';

/**
 * The static side of a generated protobufjs message class, as far as this module uses it.
 * `P` is the message's plain properties shape, `M` the decoded message type.
 */
export interface MessageCodec<P extends object, M extends P> {
  /** Encode a message or plain object of properties (no verification). */
  encode(m: P, w?: Writer): Writer;
  /** Decode from bytes; throws Error on malformed input. */
  decode(r: Reader | Uint8Array, l?: number): M;
  /** Build a message from a plain object (proto field names); throws TypeError on wrong types. */
  fromObject(d: { [k: string]: unknown }): M;
  /** Turn a message into a plain object (proto field names). */
  toObject(m: M, o?: IConversionOptions): { [k: string]: unknown };
  /** null if `m` is a valid plain object for this message, else the reason. */
  verify(m: { [k: string]: unknown }): string | null;
  /** Fully qualified type url, e.g. "type.googleapis.com/grpc.CheckRequest". */
  getTypeUrl(prefix?: string): string;
  /** Prototype carrying the field defaults (used to list a message's field names). */
  readonly prototype: object;
}

/** One rpc: where it goes on the wire and how its messages are coded. */
export interface MethodSpec<ReqP extends object, ReqM extends ReqP, ResP extends object, ResM extends ResP> {
  /** Wire service name (`Request.service`). */
  service: typeof AGENT_SERVICE | typeof HEALTH_SERVICE;
  /** Wire method name (`Request.method`), the bare rpc name. */
  method: string;
  request: MessageCodec<ReqP, ReqM>;
  response: MessageCodec<ResP, ResM>;
}

function agent<ReqP extends object, ReqM extends ReqP, ResP extends object, ResM extends ResP>(
  method: string,
  request: MessageCodec<ReqP, ReqM>,
  response: MessageCodec<ResP, ResM>,
): MethodSpec<ReqP, ReqM, ResP, ResM> {
  return { service: AGENT_SERVICE, method, request, response };
}

function health<ReqP extends object, ReqM extends ReqP, ResP extends object, ResM extends ResP>(
  method: string,
  request: MessageCodec<ReqP, ReqM>,
  response: MessageCodec<ResP, ResM>,
): MethodSpec<ReqP, ReqM, ResP, ResM> {
  return { service: HEALTH_SERVICE, method, request, response };
}

const Empty = google.protobuf.Empty;

/**
 * Every rpc by its wire method name, in protos/agent.proto declaration order, then Health.
 * Keys are exactly the `Request.method` strings (note the capitalisation of GetIPTables,
 * SetIPTables, OnlineCPUMem, GetOOMEvent, AddARPNeighbors).
 */
export const METHODS = {
  CreateContainer: agent('CreateContainer', grpc.CreateContainerRequest, Empty),
  StartContainer: agent('StartContainer', grpc.StartContainerRequest, Empty),
  RemoveContainer: agent('RemoveContainer', grpc.RemoveContainerRequest, Empty),
  ExecProcess: agent('ExecProcess', grpc.ExecProcessRequest, Empty),
  SignalProcess: agent('SignalProcess', grpc.SignalProcessRequest, Empty),
  WaitProcess: agent('WaitProcess', grpc.WaitProcessRequest, grpc.WaitProcessResponse),
  UpdateContainer: agent('UpdateContainer', grpc.UpdateContainerRequest, Empty),
  UpdateEphemeralMounts: agent('UpdateEphemeralMounts', grpc.UpdateEphemeralMountsRequest, Empty),
  StatsContainer: agent('StatsContainer', grpc.StatsContainerRequest, grpc.StatsContainerResponse),
  PauseContainer: agent('PauseContainer', grpc.PauseContainerRequest, Empty),
  ResumeContainer: agent('ResumeContainer', grpc.ResumeContainerRequest, Empty),
  RemoveStaleVirtiofsShareMounts: agent('RemoveStaleVirtiofsShareMounts', grpc.RemoveStaleVirtiofsShareMountsRequest, Empty),
  WriteStdin: agent('WriteStdin', grpc.WriteStreamRequest, grpc.WriteStreamResponse),
  ReadStdout: agent('ReadStdout', grpc.ReadStreamRequest, grpc.ReadStreamResponse),
  ReadStderr: agent('ReadStderr', grpc.ReadStreamRequest, grpc.ReadStreamResponse),
  CloseStdin: agent('CloseStdin', grpc.CloseStdinRequest, Empty),
  TtyWinResize: agent('TtyWinResize', grpc.TtyWinResizeRequest, Empty),
  UpdateInterface: agent('UpdateInterface', grpc.UpdateInterfaceRequest, types.Interface),
  UpdateRoutes: agent('UpdateRoutes', grpc.UpdateRoutesRequest, grpc.Routes),
  ListInterfaces: agent('ListInterfaces', grpc.ListInterfacesRequest, grpc.Interfaces),
  ListRoutes: agent('ListRoutes', grpc.ListRoutesRequest, grpc.Routes),
  AddARPNeighbors: agent('AddARPNeighbors', grpc.AddARPNeighborsRequest, Empty),
  GetIPTables: agent('GetIPTables', grpc.GetIPTablesRequest, grpc.GetIPTablesResponse),
  SetIPTables: agent('SetIPTables', grpc.SetIPTablesRequest, grpc.SetIPTablesResponse),
  GetMetrics: agent('GetMetrics', grpc.GetMetricsRequest, grpc.Metrics),
  CreateSandbox: agent('CreateSandbox', grpc.CreateSandboxRequest, Empty),
  DestroySandbox: agent('DestroySandbox', grpc.DestroySandboxRequest, Empty),
  OnlineCPUMem: agent('OnlineCPUMem', grpc.OnlineCPUMemRequest, Empty),
  ReseedRandomDev: agent('ReseedRandomDev', grpc.ReseedRandomDevRequest, Empty),
  GetGuestDetails: agent('GetGuestDetails', grpc.GuestDetailsRequest, grpc.GuestDetailsResponse),
  MemHotplugByProbe: agent('MemHotplugByProbe', grpc.MemHotplugByProbeRequest, Empty),
  SetGuestDateTime: agent('SetGuestDateTime', grpc.SetGuestDateTimeRequest, Empty),
  CopyFile: agent('CopyFile', grpc.CopyFileRequest, Empty),
  GetOOMEvent: agent('GetOOMEvent', grpc.GetOOMEventRequest, grpc.OOMEvent),
  AddSwap: agent('AddSwap', grpc.AddSwapRequest, Empty),
  GetVolumeStats: agent('GetVolumeStats', grpc.VolumeStatsRequest, grpc.VolumeStatsResponse),
  ResizeVolume: agent('ResizeVolume', grpc.ResizeVolumeRequest, Empty),
  SetPolicy: agent('SetPolicy', grpc.SetPolicyRequest, Empty),
  // grpc.Health: both rpcs take CheckRequest (upstream health.proto).
  Check: health('Check', grpc.CheckRequest, grpc.HealthCheckResponse),
  Version: health('Version', grpc.CheckRequest, grpc.VersionCheckResponse),
};

/** The table's type. */
export type Methods = typeof METHODS;
/** A wire method name, e.g. "CreateContainer", "Check". */
export type MethodName = keyof Methods;

type ReqPropsOf<T> = T extends MethodSpec<infer P, infer _M, infer _RP, infer _RM> ? P : never;
type ResMsgOf<T> = T extends MethodSpec<infer _P, infer _M, infer _RP, infer RM> ? RM : never;

/** The request of rpc `K` as a plain object of proto field names (e.g. {container_id}). */
export type RequestOf<K extends MethodName> = ReqPropsOf<Methods[K]>;
/** The decoded response message of rpc `K`. */
export type ResponseOf<K extends MethodName> = ResMsgOf<Methods[K]>;

/**
 * Command names agent-ctl accepts besides the wire names (upstream agent-ctl client.rs spells
 * these two with a lower-case "ptables"); they map to the wire names.
 */
export const METHOD_ALIASES: Readonly<Record<string, MethodName>> = Object.freeze({
  GetIptables: 'GetIPTables',
  SetIptables: 'SetIPTables',
});

/** All wire method names, table order. */
export const METHOD_NAMES: readonly MethodName[] = Object.freeze(Object.keys(METHODS) as MethodName[]);

/** True if `name` is a wire method name of the table. */
export function isMethodName(name: string): name is MethodName {
  return Object.prototype.hasOwnProperty.call(METHODS, name);
}

/** Resolve a command name (wire name or alias) to a wire method name; null if unknown. */
export function resolveMethodName(name: string): MethodName | null {
  if (isMethodName(name)) return name;
  return Object.prototype.hasOwnProperty.call(METHOD_ALIASES, name) ? METHOD_ALIASES[name] : null;
}

/**
 * The field names of a generated message type (its proto field names, as declared), read from
 * the defaults the generated class puts on its prototype. Oneof group names are included.
 */
export function messageFieldNames(codec: { readonly prototype: object }): string[] {
  return Object.keys(codec.prototype).filter((k) => {
    const v: unknown = (codec.prototype as Record<string, unknown>)[k];
    return typeof v !== 'function';
  });
}

/**
 * Methods this agent does not implement: `list` marks them and calling one prints a note before
 * the agent's UNIMPLEMENTED answer. Empty: all 38 AgentService methods and both Health
 * methods are implemented (README). Kept so a method added to the protocol upstream and not yet
 * built here is marked rather than silently failing.
 */
export const NOT_IMPLEMENTED: ReadonlySet<MethodName> = new Set<MethodName>();
