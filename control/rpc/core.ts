/**
 * The state and plumbing every AgentService area shares: the helper connection (calls that turn
 * a lost helper into UNAVAILABLE), the sandbox model, sandbox-level serialisation, the calls in
 * flight that DestroySandbox waits for, exit events that raced their process's registration,
 * and the long-poll waiters failed at shutdown.
 *
 * The rpcs themselves live one service area per module, as the protocol groups them:
 * sandbox.ts, container.ts, process.ts, stdio.ts, events.ts (control/rpc/agent.ts ties them
 * into the AgentService facade).
 */
import type { PassfdListener, PassfdPorts, PassfdStreams } from '../passfd';
import type { Logger } from 'pino';
import { encodeMessage } from '../../shared/channel';
import { Code, HELPER_MAX_PACKET, StatusError, type ExitEvent, type HelperEvent, type OpName, type Ops } from '../../shared/protocol';
import type { HelperCallResult, HelperConnection } from '../helper';
import { HelperLiveness } from '../helper-liveness';
import type { Container } from '../sandbox/container';
import { MAX_UNREAD_EXITED_OUTPUT, UnreadOutputBudget } from '../sandbox/output-budget';
import type { Process } from '../sandbox/process';
import type { Sandbox } from '../sandbox/sandbox';
import { closeFds } from '../sandbox/stdio';

/** OOM events kept for a GetOOMEvent that has not asked yet. */
export const MAX_QUEUED_OOM_EVENTS = 1024;

/** Early exit events (arrived before the process was registered) kept at most. */
const MAX_EARLY_EXITS = 1024;

/** An OOM event waiting for a GetOOMEvent: the container, and the helper's number of the event. */
export interface QueuedOom {
  containerId: string;
  seq?: number;
}

/** What an rpc handler learns about its call (a subset of the ttRPC HandlerContext). */
export interface RpcContext {
  /** Aborted when the caller's deadline passes or its connection drops. */
  readonly signal?: AbortSignal;
  /** Run `fn` right before the answer is written to the caller's connection (absent: call it at once). */
  readonly onSend?: (fn: () => void) => void;
  /** Run `fn` once the answer's bytes were all written (its buffers may be reused then); may never run. */
  readonly onWritten?: (fn: () => void) => void;
}

/** Resource bounds of the control plane that a deployment or a test may tune. */
export interface AgentLimits {
  /**
   * Deadline of a helper call, in ms (default: the connection's own, 60 s for HelperClient).
   * RemoveContainer passes its removal bound + 10 s instead.
   */
  helperCallTimeoutMs?: number;
  /** Ping deadline of the liveness check, in ms (default 3000, control/helper-liveness.ts). */
  helperPingTimeoutMs?: number;
  /** A helper call pending this long (ms) makes control ping the helper (default 5000). */
  helperProbeAfterMs?: number;
  /** Budget of unread output of exited processes, in bytes (default {@link MAX_UNREAD_EXITED_OUTPUT}). */
  unreadOutputBudget?: number;
}

/** The shared state of the AgentService areas (see the module comment). */
export interface AgentCoreOptions extends AgentLimits {
  helper: HelperConnection;
  sandbox: Sandbox;
  logger: Logger;
  /** Called once after a successful DestroySandbox has been answered: the agent should exit. */
  onShutdown?: () => void;
  /** RemoveContainer bound for timeout 0, in ms. */
  defaultRemoveTimeoutMs: number;
  /** Exited exec records kept per container. */
  maxExitedRecords: number;
  /** Host-namespace mode (config allowHostNamespaces; control/oci.ts ContainerPlanOptions). */
  allowHostNamespaces?: boolean;
}

function helperLostError(op: string): StatusError {
  return new StatusError(Code.UNAVAILABLE, `the helper connection was lost (helper ${op})`);
}

/** UNIMPLEMENTED naming a request field whose feature is not carried out yet. */
export function unimplementedField(field: string, detail: string): StatusError {
  return new StatusError(Code.UNIMPLEMENTED, `${field} is not supported yet (${detail})`);
}

/** Shared state and helper plumbing of the AgentService areas. */
export class AgentCore {
  readonly helper: HelperConnection;
  readonly sandbox: Sandbox;
  readonly log: Logger;
  readonly onShutdown: () => void;
  readonly defaultRemoveTimeoutMs: number;
  readonly maxExitedRecords: number;
  /** Host-namespace mode: specs may omit namespaces and join namespace paths (control/oci.ts). */
  readonly allowHostNamespaces: boolean;
  readonly earlyExits = new Map<string, ExitEvent>();
  /** Pending long polls (GetOOMEvent), counted for the resource bounds; each ends with its call (event, deadline, connection end). */
  readonly longPolls = new Set<(err: StatusError) => void>();
  private sandboxOp: Promise<unknown> = Promise.resolve();
  /** True while DestroySandbox runs: new containers and execs are refused. */
  destroying = false;
  /** The DestroySandbox in progress (a concurrent one gets the same answer). */
  destroyRun: Promise<object> | null = null;
  /** CreateContainer / ExecProcess calls in progress (DestroySandbox waits for them). */
  readonly inflight = new Set<Promise<unknown>>();
  shutdownRequested = false;
  helperLost = false;
  /** Unread output of exited processes, bounded sandbox-wide (control/sandbox/output-budget.ts). */
  readonly outputBudget: UnreadOutputBudget;
  /** Detects a helper that stops answering (control/helper-liveness.ts). */
  readonly liveness: HelperLiveness;
  private readonly helperCallTimeoutMs: number | undefined;

  /** The passfd I/O listener (control/passfd.ts), set by the Agent when configured; null: none. */
  passfd: PassfdListener | null = null;

  /**
   * The passfd streams of a request's ports (control/passfd.ts). Without a listener the ports
   * are ignored, as upstream does when agent.passfd_listener_port is 0.
   */
  async takePassfd(ports: PassfdPorts, what: string): Promise<PassfdStreams> {
    if (!ports.stdin_port && !ports.stdout_port && !ports.stderr_port) return {};
    if (!this.passfd) {
      this.log.warn({ what, ...ports }, 'passfd ports ignored: no passfd listener is configured');
      return {};
    }
    return this.passfd.takeAll(ports);
  }

  constructor(options: AgentCoreOptions) {
    this.helper = options.helper;
    this.sandbox = options.sandbox;
    this.log = options.logger;
    this.onShutdown = options.onShutdown ?? (() => undefined);
    this.defaultRemoveTimeoutMs = options.defaultRemoveTimeoutMs;
    this.maxExitedRecords = options.maxExitedRecords;
    this.allowHostNamespaces = options.allowHostNamespaces === true;
    this.helperCallTimeoutMs = options.helperCallTimeoutMs;
    this.outputBudget = new UnreadOutputBudget(options.unreadOutputBudget ?? MAX_UNREAD_EXITED_OUTPUT);
    this.liveness = new HelperLiveness({
      helper: this.helper,
      logger: this.log,
      pingTimeoutMs: options.helperPingTimeoutMs,
      probeAfterMs: options.helperProbeAfterMs,
    });
  }

  /**
   * Call the helper with a deadline (`timeoutMs`, default the configured helper call timeout,
   * 60 s). Fails:
   * - UNAVAILABLE "the helper connection was lost" once the connection is gone;
   * - DEADLINE_EXCEEDED "helper did not answer <op> within <n> ms" when the deadline passes
   *   (the helper is then pinged);
   * - UNAVAILABLE "the helper is not answering ... helper <op> abandoned" when the helper is
   *   declared unresponsive (no answer to a ping, e.g. SIGSTOP) while the call waits or before
   *   it starts (control/helper-liveness.ts);
   * - UNAVAILABLE naming the op for a failure that is not a StatusError; else the helper's status.
   */
  async call<K extends OpName>(op: K, args: Ops[K][0], timeoutMs?: number): Promise<HelperCallResult<K>> {
    if (this.helperLost) throw helperLostError(op);
    await this.liveness.ready(op);
    if (this.helperLost) throw helperLostError(op);
    const ms = timeoutMs ?? this.helperCallTimeoutMs;
    try {
      const call = this.helper.call(op, args, ms === undefined ? undefined : { timeoutMs: ms });
      return await this.liveness.guard(op, call, (late) => this.undoAbandoned(op, args, late));
    } catch (err) {
      if (this.helperLost) throw helperLostError(op);
      if (err instanceof StatusError) {
        if (err.code === Code.DEADLINE_EXCEEDED) void this.liveness.probe();
        throw err;
      }
      throw new StatusError(Code.UNAVAILABLE, `helper ${op} failed: ${(err as Error).message}`);
    }
  }

  /**
   * A call abandoned because the helper stopped answering was carried out after all (the answer
   * came once the helper ran again): close its fds and undo what it made, since the runtime was
   * told UNAVAILABLE — a created container is removed, a started exec process killed. Never throws.
   */
  private undoAbandoned<K extends OpName>(op: K, args: Ops[K][0], late: HelperCallResult<K>): void {
    closeFds(Object.values(late.fds));
    this.log.warn({ op }, 'an abandoned helper call completed late; undoing it');
    const undo = async (): Promise<void> => {
      if (op === 'createContainer') {
        const { containerId } = args as Ops['createContainer'][0];
        await this.callNoFds('removeContainer', { containerId, timeoutMs: this.defaultRemoveTimeoutMs }, this.defaultRemoveTimeoutMs + 10_000);
      } else if (op === 'execProcess') {
        const { containerId, execId } = args as Ops['execProcess'][0];
        await this.callNoFds('signalProcess', { containerId, execId, signal: 9, all: false });
      }
    };
    undo().catch((err: unknown) => this.log.error({ err, op }, 'undoing an abandoned helper call failed'));
  }

  /** Like {@link call} for ops whose result carries no fds; stray fds are closed. */
  async callNoFds<K extends OpName>(op: K, args: Ops[K][0], timeoutMs?: number): Promise<Ops[K][1]> {
    const { result, fds } = await this.call(op, args, timeoutMs);
    closeFds(Object.values(fds));
    return result;
  }

  /**
   * OOM events not yet taken by a GetOOMEvent (container ids, oldest first; at most
   * {@link MAX_QUEUED_OOM_EVENTS}, the oldest dropped beyond).
   */
  readonly oomQueue: QueuedOom[] = [];
  /** GetOOMEvent calls waiting for an event, oldest first. */
  readonly oomWaiters: ((event: QueuedOom) => void)[] = [];

  /**
   * An OOM kill in `containerId`'s cgroup: to the oldest waiting GetOOMEvent, else queued (in
   * `seq` order; an event already queued — the same seq from a `state` page and an event — once).
   */
  handleOom(containerId: string, seq?: number): void {
    if (seq !== undefined && this.oomQueue.some((e) => e.seq === seq)) return;
    this.log.warn({ container: containerId, seq }, 'OOM kill in the container\'s cgroup');
    const event = { containerId, seq };
    const waiter = this.oomWaiters.shift();
    if (waiter) {
      waiter(event);
      return;
    }
    this.oomQueue.push(event);
    if (seq !== undefined) this.oomQueue.sort((a, b) => (a.seq ?? 0) - (b.seq ?? 0));
    if (this.oomQueue.length > MAX_QUEUED_OOM_EVENTS) this.oomQueue.shift();
  }

  /**
   * `event` reached the runtime (GetOOMEvent answered): the helper may forget it and the ones
   * before it (ackOomEvents). Never throws.
   */
  ackOom(event: QueuedOom): void {
    if (event.seq === undefined || this.helperLost) return;
    this.callNoFds('ackOomEvents', { upTo: event.seq }).catch((err: unknown) => this.log.warn({ err, seq: event.seq }, 'helper ackOomEvents failed'));
  }

  /** Feed a helper event (process exit, OOM) into the model. */
  handleHelperEvent(event: HelperEvent): void {
    if (event.event === 'oom') {
      this.handleOom(event.containerId, event.seq);
      return;
    }
    if (event.event !== 'exit') return;
    const container = this.sandbox.containers.get(event.containerId);
    const p = container?.applyExit(event.execId, event.pid, event.exitStatus);
    if (p) {
      this.log.info({ container: p.containerId, exec: p.execId, pid: p.pid, status: event.exitStatus }, 'process exited');
      this.outputBudget.add(p);
      if (container) this.evict(container);
      return;
    }
    // Not registered yet (the exit raced the create/exec response) or unknown: keep it.
    const key = `${event.containerId}\0${event.execId}`;
    this.earlyExits.delete(key);
    this.earlyExits.set(key, event);
    if (this.earlyExits.size > MAX_EARLY_EXITS) {
      const oldest = this.earlyExits.keys().next().value;
      if (oldest !== undefined) this.earlyExits.delete(oldest);
    }
  }

  /** Apply an exit that arrived before `p` was registered. */
  applyEarlyExit(container: Container, p: Process): void {
    const key = `${container.id}\0${p.helperExecId}`;
    const early = this.earlyExits.get(key);
    if (!early) return;
    this.earlyExits.delete(key);
    if (early.pid === p.pid && container.applyExit(p.helperExecId, p.pid, early.exitStatus)) this.outputBudget.add(p);
  }

  /** Forget the early exit of one process (its status came another way, e.g. adoption). */
  dropEarlyExit(containerId: string, helperExecId: string): void {
    this.earlyExits.delete(`${containerId}\0${helperExecId}`);
  }

  /** Forget the early exits of a removed container. */
  dropEarlyExits(containerId: string): void {
    for (const key of [...this.earlyExits.keys()]) if (key.startsWith(`${containerId}\0`)) this.earlyExits.delete(key);
  }

  /**
   * The helper connection is gone: nothing will report exits any more. Pending WaitProcess
   * calls fail UNAVAILABLE "the helper connection was lost; ..." and so does every later call
   * that needs the helper (helper calls in flight fail the same way through {@link call}).
   */
  handleHelperLost(): void {
    this.helperLost = true;
    const err = new StatusError(Code.UNAVAILABLE, 'the helper connection was lost; the exit status is unknown');
    for (const c of this.sandbox.containers.values()) for (const p of c.processes()) p.abandon(err);
  }

  /** Forget `p` for good: close its stdio and tell the helper (once). Never throws. */
  async release(container: Container, p: Process): Promise<void> {
    p.stdio.destroy();
    this.outputBudget.remove(p);
    if (p.init) return;
    await this.releaseInHelper(container, p);
  }

  /**
   * Tell the helper (once) to close its copies of `p`'s stdio and output spools and to forget an
   * exec process (the init stays until RemoveContainer). Never throws (NOT_FOUND is fine).
   */
  async releaseInHelper(container: Container, p: Process): Promise<void> {
    if (p.released) return;
    p.released = true;
    try {
      await this.callNoFds('releaseProcess', { containerId: container.id, execId: p.helperExecId });
    } catch (err) {
      if (!(err instanceof StatusError && err.code === Code.NOT_FOUND)) {
        this.log.warn({ err, container: container.id, exec: p.execId }, 'helper releaseProcess failed');
      }
    }
  }

  /** Drop the oldest exited exec records beyond the per-container bound. */
  evict(container: Container): void {
    for (const p of container.evictExited(this.maxExitedRecords)) void this.release(container, p);
  }

  /** Run sandbox-level operations one at a time. */
  serialise<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.sandboxOp.then(fn, fn);
    this.sandboxOp = run.catch(() => undefined);
    return run;
  }

  /** FAILED_PRECONDITION while the sandbox is being destroyed or after it was. */
  checkNotDestroyed(): void {
    if (this.destroying) throw new StatusError(Code.FAILED_PRECONDITION, 'the sandbox is being destroyed');
    if (this.sandbox.destroyed) throw new StatusError(Code.FAILED_PRECONDITION, 'the sandbox has been destroyed; the agent is shutting down');
  }

  /** Run a CreateContainer / ExecProcess body as in flight: DestroySandbox waits for it. */
  track<T>(run: () => Promise<T>): Promise<T> {
    const p = run();
    this.inflight.add(p);
    const done = (): void => {
      this.inflight.delete(p);
    };
    p.then(done, done);
    return p;
  }

  /**
   * RESOURCE_EXHAUSTED that says what it means when `args` for `op` do not fit one helper
   * packet ({@link HELPER_MAX_PACKET}), else `err` unchanged.
   */
  tooLargeError(err: unknown, op: 'createContainer' | 'execProcess', args: object): unknown {
    if (!(err instanceof StatusError) || err.code !== Code.RESOURCE_EXHAUSTED) return err;
    let size: number;
    try {
      size = encodeMessage({ id: 0, op, args }).length;
    } catch {
      return err;
    }
    if (size <= HELPER_MAX_PACKET) return err;
    const what = op === 'createContainer' ? 'OCI spec too large: the container plan' : 'OCI process too large: the process plan';
    return new StatusError(
      Code.RESOURCE_EXHAUSTED,
      `${what} is ${size} bytes, the agent accepts at most ${HELPER_MAX_PACKET} (e.g. fewer or shorter env entries / args / mounts)`,
    );
  }

  /** True when `container` is being removed or is gone from the sandbox. */
  removedOrRemoving(container: Container): boolean {
    return container.removing !== null || this.sandbox.containers.get(container.id) !== container;
  }
}
