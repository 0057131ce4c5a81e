/**
 * The interface between the helper's protocol server (helper/server.ts) and what carries out the
 * operations: the real, privileged backend (helper/backend.ts) or the mock (helper/mock/).
 */
import { GUEST_OPS, type GuestOpName, type HelperEvent, type NetworkOps, type OpName, type Ops } from '../shared/protocol';

/** An fd attached to a response, with the name the response's `fds` list gives it. */
export interface NamedFd {
  name: string;
  fd: number;
}

/**
 * What a backend method returns: the op's result and fds to attach, in order.
 *
 * Fd ownership: the fds stay owned by the backend (they are usually the helper's own copies of a
 * process's stdio); the server only sends them — the peer receives its own duplicates — and then
 * calls `onSent` (also when sending failed), after which the backend may close them. A backend
 * that hands out an fd it may close concurrently must defer that close until `onSent`.
 */
export interface BackendReply<R> {
  result: R;
  fds?: NamedFd[];
  onSent?: () => void;
}

/** The ops a backend carries out: every op of the protocol except `hello` and `ping` (the server's own). */
export type BackendOpName = Exclude<OpName, 'hello' | 'ping'>;

export type BackendOps = {
  [K in BackendOpName]: (args: Ops[K][0]) => Promise<BackendReply<Ops[K][1]>>;
};

/**
 * A helper backend: one async method per protocol op (shared/protocol.ts Ops, minus `hello` and `ping`).
 *
 * Methods validate their `args` themselves (they arrive from the peer unchecked beyond "is an
 * object") and throw StatusError with the gRPC code for the failure (INVALID_ARGUMENT, NOT_FOUND,
 * ALREADY_EXISTS, FAILED_PRECONDITION, ...). Any other exception is reported to the peer as
 * INTERNAL and logged as a bug.
 */
export interface HelperBackend extends BackendOps {
  /** Register a listener for the backend's events (process exits); returns an unsubscribe function. */
  subscribe(listener: (event: HelperEvent) => void): () => void;
  /**
   * Kill every container and exec process, wait (bounded) for them to be reaped, release the
   * sandbox namespaces and stop background work (reaper timers, signal handlers). Never throws.
   */
  shutdown(): Promise<void>;
}

/** The network ops (helper/ops/network.ts), carried out by a {@link NetworkFamily}. */
export type NetworkOpName = keyof NetworkOps;
export const NETWORK_OP_NAMES: readonly NetworkOpName[] = [
  'updateInterface',
  'updateRoutes',
  'listInterfaces',
  'listRoutes',
  'addArpNeighbors',
  'getIpTables',
  'setIpTables',
  'interfaceStats',
];

/** The container ops (helper/ops/container.ts ContainerBackend): every op of no other family. */
export type ContainerOpName = Exclude<BackendOpName, GuestOpName | NetworkOpName>;

/** The guest ops family (helper/ops/sysfs.ts, copy-file.ts, guest.ts; mock: helper/mock/guest.ts). */
export type GuestFamily = Pick<BackendOps, GuestOpName>;

/** The network ops family (helper/ops/network.ts; mock: helper/mock/network.ts). */
export type NetworkFamily = Pick<BackendOps, NetworkOpName>;
/** @deprecated name kept for the network code: {@link NetworkFamily}. */
export type NetworkOpsBackend = NetworkFamily;

/** What the container model provides: its ops, events and shutdown. */
export type ContainerFamily = Pick<BackendOps, ContainerOpName> & Pick<HelperBackend, 'subscribe' | 'shutdown'>;

/**
 * One {@link HelperBackend} from the container, guest and network families: each op goes to the
 * family that owns it; events and shutdown are the container family's. Throws at composition
 * when a family lacks one of its ops.
 */
export function composeBackend(containers: ContainerFamily, guest: GuestFamily, network: NetworkFamily): HelperBackend {
  const backend: Record<string, unknown> = {
    subscribe: (listener: (event: HelperEvent) => void) => containers.subscribe(listener),
    shutdown: () => containers.shutdown(),
  };
  const guestOps = new Set<string>(GUEST_OPS);
  const netOps = new Set<string>(NETWORK_OP_NAMES);
  for (const op of BACKEND_OPS) {
    const family = (guestOps.has(op) ? guest : netOps.has(op) ? network : containers) as unknown as Record<string, unknown>;
    if (typeof family[op] !== 'function') throw new Error(`backend family lacks op ${op}`);
    // Looked up at each call, so a test that wraps a family's op sees its wrapper used.
    backend[op] = (a: unknown) => (family[op] as (a: unknown) => unknown).call(family, a);
  }
  return backend as unknown as HelperBackend;
}

/** The ops dispatched to a backend, in protocol order. */
export const BACKEND_OPS: readonly BackendOpName[] = [
  'createSandbox',
  'destroySandbox',
  'createContainer',
  'startContainer',
  'execProcess',
  'signalProcess',
  'removeContainer',
  'closeStdin',
  'releaseProcess',
  'state',
  'ackOomEvents',
  'keepPolicy',
  'keptPolicy',
  'cgroupStats',
  'cgroupFreeze',
  'cgroupUpdate',
  'helperStats',
  // storages and devices (helper/ops/storage.ts)
  'addStorages',
  'releaseStorages',
  'updateEphemeralMounts',
  'statShareMounts',
  'setupDns',
  'loadKernelModules',
  'waitDevices',
  ...GUEST_OPS,
  ...NETWORK_OP_NAMES,
];
