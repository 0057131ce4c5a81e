/**
 * The interface between the helper's protocol server (helper/server.ts) and what carries out the
 * operations: the real, privileged backend (helper/backend.ts) or the mock (helper/mock/).
 */
import type { HelperEvent, NetworkOps, OpName, Ops } from '../shared/protocol';

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

/** The ops a backend carries out: every op of the protocol except `hello` (the server's own). */
export type BackendOpName = Exclude<OpName, 'hello'>;

export type BackendOps = {
  [K in BackendOpName]: (args: Ops[K][0]) => Promise<BackendReply<Ops[K][1]>>;
};

/**
 * A helper backend: one async method per protocol op (shared/protocol.ts Ops, minus `hello`).
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

/** The network ops (helper/ops/network.ts), carried out by a {@link NetworkOpsBackend}. */
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

/** One method per network op. */
export type NetworkOpsBackend = Pick<BackendOps, NetworkOpName>;

/** The container side of a backend (helper/ops/container.ts): every op but the network ones. */
export type ContainerSideBackend = Omit<HelperBackend, NetworkOpName>;

/**
 * A {@link HelperBackend} made of a container side and a network side; each op is called on
 * the part that carries it out.
 */
export function composeBackend(containers: ContainerSideBackend, network: NetworkOpsBackend): HelperBackend {
  const out: Record<string, unknown> = {
    subscribe: containers.subscribe.bind(containers),
    shutdown: containers.shutdown.bind(containers),
  };
  const netOps = new Set<string>(NETWORK_OP_NAMES);
  for (const op of BACKEND_OPS) {
    const owner = (netOps.has(op) ? network : containers) as unknown as Record<string, (a: unknown) => unknown>;
    // Looked up at call time, so a method replaced on the part later (tests widen race
    // windows that way) is the one that runs.
    out[op] = (a: unknown) => owner[op](a);
  }
  return out as unknown as HelperBackend;
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
  ...NETWORK_OP_NAMES,
];
