/**
 * `grpc.AgentService`: the container lifecycle and stdio rpcs, carried out through the helper
 * and tracked in the {@link Sandbox} model. Methods not implemented yet answer UNIMPLEMENTED
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
 *   TtyWinResize: unknown or exited process NOT_FOUND, no tty FAILED_PRECONDITION (upstream UNAVAILABLE)
 *   ReadStdout/ReadStderr at end of stream OUT_OF_RANGE "EOF" (upstream INTERNAL "read meet eof");
 *   len 0 INVALID_ARGUMENT (upstream: the eof error)
 *   features not carried out yet (storages, devices, dns, kernel modules, guest hooks, shared
 *   mounts, passfd ports)           UNIMPLEMENTED naming the field
 * WaitProcess reports 128 + signal for a signal death (upstream at 6e4d4c329a reports the bare
 * signal number; later upstream and the helper protocol use 128 + n).
 */
import type { Logger } from 'pino';
import type { google as gpb, grpc as pb } from '../../shared/generated/protos';
import { encodeMessage } from '../../shared/channel';
import {
  Code,
  CONTAINER_ID_RE,
  HELPER_MAX_PACKET,
  StatusError,
  validateContainerId,
  validateExecId,
  type ExitEvent,
  type HelperEvent,
  type OpName,
  type Ops,
} from '../../shared/protocol';
import type { HelperCallResult, HelperConnection } from '../helper';
import { containerPlanFromSpec, HOST_NAME_MAX, processPlanFromOci } from '../oci';
import { Container, MAX_EXITED_RECORDS } from '../sandbox/container';
import { Process } from '../sandbox/process';
import type { Sandbox } from '../sandbox/sandbox';
import { closeFds, ProcessStdio } from '../sandbox/stdio';

/** Largest ReadStdout/ReadStderr chunk, in bytes: 4 MiB − 64 KiB, so a response fits the ttRPC limit. */
export const MAX_READ_LEN = 4 * 1024 * 1024 - 64 * 1024;

/**
 * RemoveContainer bound when the request's timeout is 0, in ms. Upstream waits forever then;
 * we bound it (30 s) so a stuck removal surfaces as an error instead of a hung rpc.
 */
export const DEFAULT_REMOVE_TIMEOUT_MS = 30_000;

/** Highest signal number accepted by SignalProcess (Linux _NSIG − 1). */
export const MAX_SIGNAL = 64;

const SIGKILL = 9;

/** Longest RemoveContainer wait passed to the helper, in ms (its upper bound: one hour). */
export const MAX_REMOVE_TIMEOUT_MS = 3_600_000;

/** Early exit events (arrived before the process was registered) kept at most. */
const MAX_EARLY_EXITS = 1024;

type Empty = gpb.protobuf.Empty.$Properties;

/** What an rpc handler learns about its call (a subset of the ttRPC HandlerContext). */
export interface RpcContext {
  /** Aborted when the caller's deadline passes or its connection drops. */
  readonly signal?: AbortSignal;
}

/** Options of {@link AgentService}. */
export interface AgentServiceOptions {
  helper: HelperConnection;
  sandbox: Sandbox;
  logger: Logger;
  /** Called once after a successful DestroySandbox has been answered: the agent should exit. */
  onShutdown?: () => void;
  /** RemoveContainer bound for timeout 0, in ms (default {@link DEFAULT_REMOVE_TIMEOUT_MS}). */
  defaultRemoveTimeoutMs?: number;
  /** Exited exec records kept per container (default {@link MAX_EXITED_RECORDS}). */
  maxExitedRecords?: number;
}

function helperLostError(op: string): StatusError {
  return new StatusError(Code.UNAVAILABLE, `the helper connection was lost (helper ${op})`);
}

function unimplementedField(field: string, detail: string): StatusError {
  return new StatusError(Code.UNIMPLEMENTED, `${field} is not supported yet (${detail})`);
}

/** The AgentService rpcs implemented for real. */
export class AgentService {
  private readonly helper: HelperConnection;
  private readonly sandbox: Sandbox;
  private readonly log: Logger;
  private readonly onShutdown: () => void;
  private readonly defaultRemoveTimeoutMs: number;
  private readonly maxExitedRecords: number;
  private readonly earlyExits = new Map<string, ExitEvent>();
  private readonly oomWaiters = new Set<(err: StatusError) => void>();
  private sandboxOp: Promise<unknown> = Promise.resolve();
  private destroying = false;
  /** The DestroySandbox in progress (a concurrent one gets the same answer). */
  private destroyRun: Promise<Empty> | null = null;
  /** CreateContainer / ExecProcess calls in progress (DestroySandbox waits for them). */
  private readonly inflight = new Set<Promise<unknown>>();
  private shutdownRequested = false;
  private helperLost = false;

  constructor(options: AgentServiceOptions) {
    this.helper = options.helper;
    this.sandbox = options.sandbox;
    this.log = options.logger;
    this.onShutdown = options.onShutdown ?? (() => undefined);
    this.defaultRemoveTimeoutMs = options.defaultRemoveTimeoutMs ?? DEFAULT_REMOVE_TIMEOUT_MS;
    this.maxExitedRecords = options.maxExitedRecords ?? MAX_EXITED_RECORDS;
  }

  // -------------------------------------------------------------------------------------------
  // Helper plumbing

  /**
   * Call the helper. Once the helper connection is lost every call fails UNAVAILABLE "the
   * helper connection was lost"; a failure that is not a StatusError becomes UNAVAILABLE naming
   * the op.
   */
  private async call<K extends OpName>(op: K, args: Ops[K][0], timeoutMs?: number): Promise<HelperCallResult<K>> {
    if (this.helperLost) throw helperLostError(op);
    try {
      return await this.helper.call(op, args, timeoutMs === undefined ? undefined : { timeoutMs });
    } catch (err) {
      if (this.helperLost) throw helperLostError(op);
      if (err instanceof StatusError) throw err;
      throw new StatusError(Code.UNAVAILABLE, `helper ${op} failed: ${(err as Error).message}`);
    }
  }

  /** Like {@link call} for ops whose result carries no fds; stray fds are closed. */
  private async callNoFds<K extends OpName>(op: K, args: Ops[K][0], timeoutMs?: number): Promise<Ops[K][1]> {
    const { result, fds } = await this.call(op, args, timeoutMs);
    closeFds(Object.values(fds));
    return result;
  }

  /** Feed a helper event (process exit) into the model. */
  handleHelperEvent(event: HelperEvent): void {
    if (event.event !== 'exit') return;
    const container = this.sandbox.containers.get(event.containerId);
    const p = container?.applyExit(event.execId, event.pid, event.exitStatus);
    if (p) {
      this.log.info({ container: p.containerId, exec: p.execId, pid: p.pid, status: event.exitStatus }, 'process exited');
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
  private applyEarlyExit(container: Container, p: Process): void {
    const key = `${container.id}\0${p.helperExecId}`;
    const early = this.earlyExits.get(key);
    if (!early) return;
    this.earlyExits.delete(key);
    if (early.pid === p.pid) container.applyExit(p.helperExecId, p.pid, early.exitStatus);
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
  private async release(container: Container, p: Process): Promise<void> {
    p.stdio.destroy();
    if (p.released || p.init) return;
    p.released = true;
    try {
      await this.callNoFds('releaseProcess', { containerId: container.id, execId: p.execId });
    } catch (err) {
      if (!(err instanceof StatusError && err.code === Code.NOT_FOUND)) {
        this.log.warn({ err, container: container.id, exec: p.execId }, 'helper releaseProcess failed');
      }
    }
  }

  private evict(container: Container): void {
    for (const p of container.evictExited(this.maxExitedRecords)) void this.release(container, p);
  }

  /** Run sandbox-level operations one at a time. */
  private serialise<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.sandboxOp.then(fn, fn);
    this.sandboxOp = run.catch(() => undefined);
    return run;
  }

  private checkNotDestroyed(): void {
    if (this.destroying) throw new StatusError(Code.FAILED_PRECONDITION, 'the sandbox is being destroyed');
    if (this.sandbox.destroyed) throw new StatusError(Code.FAILED_PRECONDITION, 'the sandbox has been destroyed; the agent is shutting down');
  }

  /** Run a CreateContainer / ExecProcess body as in flight: DestroySandbox waits for it. */
  private track<T>(run: () => Promise<T>): Promise<T> {
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
  private tooLargeError(err: unknown, op: 'createContainer' | 'execProcess', args: object): unknown {
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

  // -------------------------------------------------------------------------------------------
  // Sandbox

  /**
   * CreateSandbox: records hostname and sandbox id and asks the helper for the sandbox's
   * persistent namespaces. ALREADY_EXISTS on a second call (upstream does not check);
   * UNIMPLEMENTED for non-empty dns, storages, kernel_modules or guest_hook_path (later
   * issues); INVALID_ARGUMENT for a bad hostname or sandbox id (an empty sandbox id is
   * accepted, as upstream; a non-empty one must be a valid container id). `sandbox_pidns` is ignored, as
   * upstream (the per-container flag decides).
   */
  createSandbox(req: pb.CreateSandboxRequest): Promise<Empty> {
    return this.serialise(async () => {
      this.checkNotDestroyed();
      if (this.sandbox.created) {
        throw new StatusError(Code.ALREADY_EXISTS, `sandbox ${JSON.stringify(this.sandbox.id)} is already created`);
      }
      if (req.dns.length > 0) throw unimplementedField('CreateSandboxRequest.dns', `${req.dns.length} entries`);
      if (req.storages.length > 0) throw unimplementedField('CreateSandboxRequest.storages', `${req.storages.length} entries`);
      if (req.kernel_modules.length > 0) {
        throw unimplementedField('CreateSandboxRequest.kernel_modules', req.kernel_modules.map((m) => m.name).join(', '));
      }
      if (req.guest_hook_path !== '') throw unimplementedField('CreateSandboxRequest.guest_hook_path', JSON.stringify(req.guest_hook_path));
      const hostname = req.hostname;
      if (hostname.includes('\0') || Buffer.byteLength(hostname) > HOST_NAME_MAX) {
        throw new StatusError(Code.INVALID_ARGUMENT, `invalid hostname ${JSON.stringify(hostname)}: at most ${HOST_NAME_MAX} bytes, no NUL`);
      }
      const sandboxId = req.sandbox_id;
      if (sandboxId !== '' && !CONTAINER_ID_RE.test(sandboxId)) {
        throw new StatusError(
          Code.INVALID_ARGUMENT,
          `invalid sandbox id ${JSON.stringify(sandboxId)} (empty, or 2 to 256 ASCII letters, digits, ".", "_" or "-" starting with a letter or digit)`,
        );
      }
      const result = await this.callNoFds('createSandbox', { sandboxId, hostname });
      this.sandbox.id = sandboxId;
      this.sandbox.hostname = hostname;
      this.sandbox.namespaces = Array.isArray(result.namespaces) ? result.namespaces : [];
      this.sandbox.created = true;
      this.log.info({ sandbox: sandboxId, hostname, namespaces: this.sandbox.namespaces }, 'sandbox created');
      return {};
    });
  }

  /**
   * DestroySandbox: marks the sandbox as being destroyed (from now on CreateContainer and
   * ExecProcess fail FAILED_PRECONDITION), waits for the CreateContainer / ExecProcess calls in
   * flight to settle, removes every container (as RemoveContainer with the default bound; those
   * just created included), asks the helper to destroy the sandbox, fails pending GetOOMEvent
   * calls, and — after this reply has been sent — calls `onShutdown` (upstream exits the agent).
   * A concurrent second DestroySandbox gets the same answer, a later one FAILED_PRECONDITION.
   * If a container cannot be removed, the first error is returned and the agent stays up (a
   * retry is possible).
   */
  destroySandbox(_req: pb.DestroySandboxRequest): Promise<Empty> {
    if (this.destroyRun) return this.destroyRun;
    try {
      this.checkNotDestroyed();
    } catch (err) {
      return Promise.reject(err);
    }
    // No new containers or exec processes from now on (they check this flag).
    this.destroying = true;
    const run = this.serialise(async () => {
      try {
        while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
        const errors: Error[] = [];
        for (const id of [...this.sandbox.containers.keys()]) {
          try {
            await this.removeContainerById(id, this.defaultRemoveTimeoutMs);
          } catch (err) {
            errors.push(err as Error);
          }
        }
        if (errors.length > 0) {
          const first = errors[0];
          const code = first instanceof StatusError ? first.code : Code.INTERNAL;
          throw new StatusError(code, `DestroySandbox: ${errors.length} container(s) could not be removed; first: ${first.message}`);
        }
        if (this.sandbox.created) await this.callNoFds('destroySandbox', {});
      } catch (err) {
        this.destroying = false;
        this.destroyRun = null;
        throw err;
      }
      this.destroying = false;
      this.destroyRun = null; // later calls: FAILED_PRECONDITION (destroyed)
      this.sandbox.created = false;
      this.sandbox.destroyed = true;
      this.failOomWaiters(new StatusError(Code.FAILED_PRECONDITION, 'the sandbox has been destroyed: no more OOM events'));
      this.log.info({ sandbox: this.sandbox.id }, 'sandbox destroyed; shutting down after the reply');
      if (!this.shutdownRequested) {
        this.shutdownRequested = true;
        // After the response has been written (the handler's result is sent in microtasks).
        setImmediate(() => this.onShutdown());
      }
      return {};
    });
    this.destroyRun = run;
    return run;
  }

  // -------------------------------------------------------------------------------------------
  // Containers

  /**
   * CreateContainer: validates the id and the OCI spec, plans the container (control/oci.ts,
   * with Kata's namespace rewrite), has the helper set it up (init blocked until Start), and
   * keeps the init's stdio. INVALID_ARGUMENT for a bad id or spec, ALREADY_EXISTS for a used id,
   * UNIMPLEMENTED for devices, storages, shared_mounts or passfd ports, FAILED_PRECONDITION after
   * DestroySandbox or for sandbox_pidns without a (live) sandbox pid namespace,
   * RESOURCE_EXHAUSTED "OCI spec too large" when the plan does not fit the helper's packet
   * limit; helper errors pass through.
   */
  async createContainer(req: pb.CreateContainerRequest): Promise<Empty> {
    this.checkNotDestroyed();
    return this.track(() => this.doCreateContainer(req));
  }

  private async doCreateContainer(req: pb.CreateContainerRequest): Promise<Empty> {
    const id = validateContainerId(req.container_id);
    if (this.sandbox.containers.has(id) || this.sandbox.pendingContainerIds.has(id)) {
      throw new StatusError(Code.ALREADY_EXISTS, `container ${JSON.stringify(id)} already exists`);
    }
    if (!req.OCI) throw new StatusError(Code.INVALID_ARGUMENT, 'CreateContainerRequest.OCI is required');
    if (req.devices.length > 0) throw unimplementedField('CreateContainerRequest.devices', `${req.devices.length} entries`);
    if (req.storages.length > 0) throw unimplementedField('CreateContainerRequest.storages', `${req.storages.length} entries`);
    if (req.shared_mounts.length > 0) throw unimplementedField('CreateContainerRequest.shared_mounts', `${req.shared_mounts.length} entries`);
    if (req.stdin_port || req.stdout_port || req.stderr_port) {
      throw unimplementedField('CreateContainerRequest stdin_port/stdout_port/stderr_port (passfd I/O)', `${req.stdin_port}/${req.stdout_port}/${req.stderr_port}`);
    }
    if (req.sandbox_pidns) this.sandbox.checkPidnsAlive();
    const plan = containerPlanFromSpec(req.OCI, { sandboxPidns: req.sandbox_pidns, sandbox: this.sandbox.namespaceInfo(), warn: (f, m) => this.log.warn({ container: id, ...f }, m) });

    this.sandbox.pendingContainerIds.add(id);
    try {
      const args = { containerId: id, plan };
      const { result, fds } = await this.call('createContainer', args).catch((err: unknown) => {
        throw this.tooLargeError(err, 'createContainer', args);
      });
      let stdio: ProcessStdio;
      try {
        stdio = ProcessStdio.fromFds(fds, plan.process.terminal);
      } catch (err) {
        await this.callNoFds('removeContainer', { containerId: id, timeoutMs: this.defaultRemoveTimeoutMs }).catch((e: unknown) =>
          this.log.error({ err: e, container: id }, 'cleanup after a failed create failed'),
        );
        throw err;
      }
      const init = new Process(id, id, true, result.pid, stdio);
      const container = new Container(id, plan, init);
      this.sandbox.addContainer(container);
      this.applyEarlyExit(container, init);
      this.log.info({ container: id, pid: result.pid }, 'container created');
      return {};
    } finally {
      this.sandbox.pendingContainerIds.delete(id);
    }
  }

  /** StartContainer: releases the init process. FAILED_PRECONDITION unless the container is created. */
  async startContainer(req: pb.StartContainerRequest): Promise<Empty> {
    const container = this.sandbox.getContainer(req.container_id);
    if (container.status !== 'created' || container.starting || container.removing) {
      const state = container.removing ? 'being removed' : container.starting ? 'already starting' : container.status;
      throw new StatusError(Code.FAILED_PRECONDITION, `container ${container.id} is ${state}, not created`);
    }
    container.starting = true;
    try {
      await this.callNoFds('startContainer', { containerId: container.id });
      if (container.status === 'created') container.status = 'running';
    } finally {
      container.starting = false;
    }
    this.log.info({ container: container.id }, 'container started');
    return {};
  }

  private removeContainerById(id: string, timeoutMs: number): Promise<void> {
    const container = this.sandbox.getContainer(id);
    if (container.removing) return container.removing;
    const run = (async () => {
      try {
        // The helper bounds the wait itself; our own deadline only guards against a lost answer.
        await this.callNoFds('removeContainer', { containerId: id, timeoutMs }, timeoutMs + 10_000);
      } catch (err) {
        if (!(err instanceof StatusError && err.code === Code.NOT_FOUND)) throw err;
        this.log.warn({ container: id }, 'helper did not know the container; dropping our record');
      }
      const gone = new StatusError(Code.NOT_FOUND, `container ${id} was removed before the process's exit status was known`);
      const closed = new StatusError(Code.FAILED_PRECONDITION, `container ${id} was removed: its stdin is closed`);
      for (const p of container.processes()) {
        p.abandon(gone);
        p.stdio.destroy(closed);
      }
      container.status = 'stopped';
      this.sandbox.removeContainer(id);
      for (const key of [...this.earlyExits.keys()]) if (key.startsWith(`${id}\0`)) this.earlyExits.delete(key);
      this.log.info({ container: id }, 'container removed');
    })();
    container.removing = run;
    run.catch(() => {
      container.removing = null;
    });
    return run;
  }

  /**
   * RemoveContainer: the helper kills the container's processes, waits for them (at most
   * `timeout` seconds; 0 = {@link DEFAULT_REMOVE_TIMEOUT_MS} instead of upstream's forever) and
   * tears the container down; then the record and its stdio are dropped and the id can be
   * reused. NOT_FOUND for an unknown id; the helper's error (e.g. DEADLINE_EXCEEDED when
   * processes survive the bound) otherwise, and the container stays.
   */
  async removeContainer(req: pb.RemoveContainerRequest): Promise<Empty> {
    const timeoutMs = req.timeout > 0 ? Math.min(req.timeout * 1000, MAX_REMOVE_TIMEOUT_MS) : this.defaultRemoveTimeoutMs;
    await this.removeContainerById(req.container_id, timeoutMs);
    return {};
  }

  // -------------------------------------------------------------------------------------------
  // Processes

  /**
   * ExecProcess: runs `process` in the running container. INVALID_ARGUMENT for a bad exec id or
   * process, ALREADY_EXISTS when a live process has the exec id (or it is the container id,
   * the init's), FAILED_PRECONDITION unless the container is running (also while it is being
   * removed, when it is removed or its init exits while the exec starts, and while the sandbox
   * is being destroyed), UNIMPLEMENTED for passfd ports, RESOURCE_EXHAUSTED when the process
   * plan does not fit the helper's packet limit. An exited record with the same exec id is
   * replaced.
   */
  async execProcess(req: pb.ExecProcessRequest): Promise<Empty> {
    this.checkNotDestroyed();
    return this.track(() => this.doExecProcess(req));
  }

  private async doExecProcess(req: pb.ExecProcessRequest): Promise<Empty> {
    const container = this.sandbox.getContainer(req.container_id);
    const execId = validateExecId(req.exec_id, false);
    if (execId === container.id || container.pendingExecIds.has(execId) || container.execs.get(execId)?.exited === false) {
      throw new StatusError(Code.ALREADY_EXISTS, `process ${JSON.stringify(execId)} already exists in container ${container.id}`);
    }
    if (container.status !== 'running' || container.removing) {
      const state = container.removing ? 'being removed' : container.status;
      throw new StatusError(Code.FAILED_PRECONDITION, `container ${container.id} is ${state}, not running`);
    }
    if (req.stdin_port || req.stdout_port || req.stderr_port) {
      throw unimplementedField('ExecProcessRequest stdin_port/stdout_port/stderr_port (passfd I/O)', `${req.stdin_port}/${req.stdout_port}/${req.stderr_port}`);
    }
    const process = processPlanFromOci(req.process, 'process', { container: container.plan, warn: (f, m) => this.log.warn({ container: container.id, exec: execId, ...f }, m) });

    container.pendingExecIds.add(execId);
    try {
      const old = container.execs.get(execId);
      if (old) {
        container.execs.delete(execId);
        await this.release(container, old);
      }
      const args = { containerId: container.id, execId, process };
      let reply: HelperCallResult<'execProcess'>;
      try {
        reply = await this.call('execProcess', args);
      } catch (err) {
        if (err instanceof StatusError && err.code !== Code.FAILED_PRECONDITION && err.code !== Code.UNAVAILABLE && this.removedOrRemoving(container)) {
          throw new StatusError(Code.FAILED_PRECONDITION, `container ${container.id} is being removed: exec ${execId} failed: ${err.message}`);
        }
        throw this.tooLargeError(err, 'execProcess', args);
      }
      const { result, fds } = reply;
      if (this.removedOrRemoving(container)) {
        // The helper kills an exec that raced the removal; we keep no record of it.
        closeFds(Object.values(fds));
        throw new StatusError(Code.FAILED_PRECONDITION, `container ${container.id} was removed while exec ${execId} was starting`);
      }
      let stdio: ProcessStdio;
      try {
        stdio = ProcessStdio.fromFds(fds, process.terminal);
      } catch (err) {
        await this.callNoFds('signalProcess', { containerId: container.id, execId, signal: SIGKILL, all: false }).catch(() => undefined);
        throw err;
      }
      const p = new Process(container.id, execId, false, result.pid, stdio);
      container.execs.set(execId, p);
      this.applyEarlyExit(container, p);
      this.evict(container);
      this.log.info({ container: container.id, exec: execId, pid: result.pid }, 'process started');
      return {};
    } finally {
      container.pendingExecIds.delete(execId);
    }
  }

  /** True when `container` is being removed or is gone from the sandbox. */
  private removedOrRemoving(container: Container): boolean {
    return container.removing !== null || this.sandbox.containers.get(container.id) !== container;
  }

  /**
   * SignalProcess: exec_id "" signals the init process and, as upstream, every other process of
   * the container (`all`); exec_id = the container id signals the init only. SIGTERM to an init
   * that neither blocks, ignores nor catches it becomes SIGKILL (upstream; done by the helper,
   * which reads /proc/<pid>/status). Signalling an exited
   * process succeeds without effect (upstream ignores ESRCH). INVALID_ARGUMENT for a signal
   * outside 0..64, NOT_FOUND for unknown ids.
   */
  async signalProcess(req: pb.SignalProcessRequest): Promise<Empty> {
    const container = this.sandbox.getContainer(req.container_id);
    const p = container.getProcess(req.exec_id);
    const signal = req.signal;
    if (!Number.isInteger(signal) || signal < 0 || signal > MAX_SIGNAL) {
      throw new StatusError(Code.INVALID_ARGUMENT, `invalid signal ${signal} (want 0..${MAX_SIGNAL})`);
    }
    const all = req.exec_id === '';
    if (p.exited && !all) return {};
    try {
      await this.callNoFds('signalProcess', { containerId: container.id, execId: p.helperExecId, signal, all });
    } catch (err) {
      // The process died meanwhile: as upstream, ESRCH is not an error.
      if (p.exited && !all) return {};
      throw err;
    }
    this.log.info({ container: container.id, exec: p.execId, signal, all }, 'process signalled');
    return {};
  }

  /**
   * WaitProcess: resolves with the exit status (exit code, or 128 + signal). Any number of
   * concurrent or later calls get the same status while the record exists (B14: a late Wait
   * returns the cached status; NOT_FOUND only once the record was evicted or the container
   * removed). Output stays readable after the wait (B08). The helper is told to release its
   * copies of the stdio (releaseProcess), and our stdin pipe is closed.
   */
  async waitProcess(req: pb.WaitProcessRequest): Promise<pb.WaitProcessResponse.$Properties> {
    const container = this.sandbox.getContainer(req.container_id);
    const p = container.getProcess(req.exec_id);
    const status = await p.wait();
    if (!p.waited) {
      p.waited = true;
      p.stdio.releaseStdin();
      if (!p.released) {
        // The helper closes its copies of the stdio (and forgets an exec process; the init stays
        // until RemoveContainer).
        p.released = true;
        await this.callNoFds('releaseProcess', { containerId: container.id, execId: p.helperExecId }).catch((err: unknown) => {
          if (!(err instanceof StatusError && err.code === Code.NOT_FOUND)) {
            this.log.warn({ err, container: container.id, exec: p.execId }, 'helper releaseProcess failed');
          }
        });
      }
    }
    return { status };
  }

  private checkReadLen(len: number): number {
    if (len <= 0) throw new StatusError(Code.INVALID_ARGUMENT, 'len must be > 0');
    return Math.min(len, MAX_READ_LEN);
  }

  /**
   * ReadStdout: up to `len` bytes (capped at {@link MAX_READ_LEN}) of the process's stdout (the
   * pty output with a terminal), waiting until some are available. OUT_OF_RANGE "EOF" at the
   * end of the stream, INVALID_ARGUMENT for len 0, NOT_FOUND for unknown ids.
   */
  async readStdout(req: pb.ReadStreamRequest, ctx: RpcContext = {}): Promise<pb.ReadStreamResponse.$Properties> {
    const p = this.sandbox.getContainer(req.container_id).getProcess(req.exec_id);
    const len = this.checkReadLen(req.len);
    return { data: await p.stdio.stdout.read(len, ctx.signal) };
  }

  /** ReadStderr: as {@link readStdout} for stderr (with a terminal: the same pty output, as upstream). */
  async readStderr(req: pb.ReadStreamRequest, ctx: RpcContext = {}): Promise<pb.ReadStreamResponse.$Properties> {
    const p = this.sandbox.getContainer(req.container_id).getProcess(req.exec_id);
    const len = this.checkReadLen(req.len);
    return { data: await p.stdio.stderr.read(len, ctx.signal) };
  }

  /**
   * WriteStdin: writes all of `data` (resolves once every byte was accepted by the pipe or pty,
   * as upstream's write_all; waits while it is full) and returns its length. Writes to one
   * process complete in call order. At most MAX_PENDING_STDIN (8 MiB) may wait for a process
   * that does not read: beyond, RESOURCE_EXHAUSTED naming the limit (nothing is queued). A
   * write whose call ends (deadline, connection drop) before any of its bytes reached the pipe
   * is dropped. FAILED_PRECONDITION after CloseStdin, once the process has exited or no longer
   * reads stdin, or when the container is removed while the write waits; NOT_FOUND for unknown
   * ids.
   */
  async writeStdin(req: pb.WriteStreamRequest, ctx: RpcContext = {}): Promise<pb.WriteStreamResponse.$Properties> {
    const p = this.sandbox.getContainer(req.container_id).getProcess(req.exec_id);
    try {
      const len = await p.stdio.stdin.write(req.data, ctx.signal);
      return { len };
    } catch (err) {
      if (err instanceof StatusError && err.code === Code.RESOURCE_EXHAUSTED) {
        throw new StatusError(err.code, `process ${JSON.stringify(p.execId)} of container ${p.containerId}: ${err.message}`);
      }
      throw err;
    }
  }

  /**
   * CloseStdin: the process gets EOF on stdin. Pipes: our write end is closed (after pending
   * writes) and so is the helper's copy. Terminal: the master stays open so output keeps
   * flowing (B13); ^D is written once and further writes fail. Idempotent; NOT_FOUND for
   * unknown ids.
   */
  async closeStdin(req: pb.CloseStdinRequest): Promise<Empty> {
    const container = this.sandbox.getContainer(req.container_id);
    const p = container.getProcess(req.exec_id);
    await p.stdio.closeStdin();
    if (!p.released) {
      try {
        await this.callNoFds('closeStdin', { containerId: container.id, execId: p.helperExecId });
      } catch (err) {
        if (!(p.exited && err instanceof StatusError && err.code === Code.NOT_FOUND)) throw err;
      }
    }
    return {};
  }

  /**
   * TtyWinResize: sets the pty window size. NOT_FOUND for unknown ids or an exited process
   * (field case B04), FAILED_PRECONDITION without a terminal.
   */
  async ttyWinResize(req: pb.TtyWinResizeRequest): Promise<Empty> {
    const p = this.sandbox.getContainer(req.container_id).getProcess(req.exec_id);
    if (p.exited) throw new StatusError(Code.NOT_FOUND, `process ${JSON.stringify(p.execId)} of container ${p.containerId} has exited`);
    if (!p.terminal) throw new StatusError(Code.FAILED_PRECONDITION, `process ${JSON.stringify(p.execId)} has no terminal`);
    p.stdio.resize(req.row, req.column);
    return {};
  }

  // -------------------------------------------------------------------------------------------
  // OOM events

  /**
   * GetOOMEvent: a long poll. OOM monitoring is a later issue, so no event is ever delivered;
   * the call stays pending until the sandbox is destroyed (then FAILED_PRECONDITION; upstream
   * INTERNAL), the agent stops (UNAVAILABLE), or the caller's deadline/connection ends.
   */
  getOOMEvent(_req: pb.GetOOMEventRequest, ctx: RpcContext = {}): Promise<pb.OOMEvent.$Properties> {
    if (this.sandbox.destroyed) {
      return Promise.reject(new StatusError(Code.FAILED_PRECONDITION, 'the sandbox has been destroyed: no more OOM events'));
    }
    return new Promise((_resolve, reject) => {
      const waiter = (err: StatusError): void => {
        this.oomWaiters.delete(waiter);
        ctx.signal?.removeEventListener('abort', onAbort);
        reject(err);
      };
      const onAbort = (): void => waiter(new StatusError(Code.CANCELLED, 'GetOOMEvent cancelled'));
      this.oomWaiters.add(waiter);
      ctx.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  private failOomWaiters(err: StatusError): void {
    for (const w of [...this.oomWaiters]) w(err);
  }

  /** The agent is stopping: fail the long polls. */
  stop(): void {
    this.failOomWaiters(new StatusError(Code.UNAVAILABLE, 'the agent is shutting down'));
  }
}
