/**
 * Process rpcs: ExecProcess, SignalProcess, WaitProcess (Kata agent rpc.rs do_exec_process /
 * do_signal_process / do_wait_process at 6e4d4c329a).
 */
import type { google as gpb, grpc as pb } from '../../shared/generated/protos';
import { Code, StatusError, validateExecId } from '../../shared/protocol';
import type { HelperCallResult } from '../helper';
import { processPlanFromOci } from '../oci';
import { Process } from '../sandbox/process';
import { closeFds, ProcessStdio } from '../sandbox/stdio';
import { attachPassfd, passfdOutputDone, type PassfdStreams } from '../passfd';
import { applyConsoleSize, closeStdin } from './stdio';
import type { AgentCore, RpcContext } from './core';

type Empty = gpb.protobuf.Empty.$Properties;

/** Highest signal number accepted by SignalProcess (Linux _NSIG − 1). */
export const MAX_SIGNAL = 64;

const SIGKILL = 9;

/**
 * ExecProcess: runs `process` in the running container. INVALID_ARGUMENT for a bad exec id or
 * process, ALREADY_EXISTS when a live process has the exec id (or it is the container id,
 * the init's), FAILED_PRECONDITION unless the container is running (also while it is being
 * removed, when it is removed or its init exits while the exec starts, and while the sandbox
 * is being destroyed), RESOURCE_EXHAUSTED when the process
 * plan does not fit the helper's packet limit. An exited record with the same exec id is
 * replaced. stdin/stdout/stderr_port: the passfd connections become its stdio (control/passfd.ts).
 */
export async function execProcess(core: AgentCore, req: pb.ExecProcessRequest): Promise<Empty> {
  core.checkNotDestroyed();
  return core.track(() => doExecProcess(core, req));
}

async function doExecProcess(core: AgentCore, req: pb.ExecProcessRequest): Promise<Empty> {
  const container = core.sandbox.getContainer(req.container_id);
  const execId = validateExecId(req.exec_id, false);
  if (execId === container.id || container.pendingExecIds.has(execId) || container.execs.get(execId)?.exited === false) {
    throw new StatusError(Code.ALREADY_EXISTS, `process ${JSON.stringify(execId)} already exists in container ${container.id}`);
  }
  if (container.status !== 'running' || container.removing) {
    const state = container.removing ? 'being removed' : container.status;
    throw new StatusError(Code.FAILED_PRECONDITION, `container ${container.id} is ${state}, not running`);
  }
  const process = processPlanFromOci(req.process, 'process', {
    container: container.plan,
    warn: (f, m) => core.log.warn({ container: container.id, exec: execId, ...f }, m),
  });

  container.pendingExecIds.add(execId);
  let passfd: PassfdStreams = {};
  let started = false;
  try {
    passfd = await core.takePassfd(req, `ExecProcess ${container.id}/${execId}`);
    const old = container.execs.get(execId);
    if (old) {
      container.execs.delete(execId);
      await core.release(container, old);
    }
    const args = { containerId: container.id, execId, process };
    let reply: HelperCallResult<'execProcess'>;
    try {
      reply = await core.call('execProcess', args);
    } catch (err) {
      if (err instanceof StatusError && err.code !== Code.FAILED_PRECONDITION && err.code !== Code.UNAVAILABLE && core.removedOrRemoving(container)) {
        throw new StatusError(Code.FAILED_PRECONDITION, `container ${container.id} is being removed: exec ${execId} failed: ${err.message}`);
      }
      throw core.tooLargeError(err, 'execProcess', args);
    }
    const { result, fds } = reply;
    if (core.removedOrRemoving(container)) {
      // The helper kills an exec that raced the removal; we keep no record of it.
      closeFds(Object.values(fds));
      throw new StatusError(Code.FAILED_PRECONDITION, `container ${container.id} was removed while exec ${execId} was starting`);
    }
    let stdio: ProcessStdio;
    try {
      stdio = ProcessStdio.fromFds(fds, process.terminal);
    } catch (err) {
      await core.callNoFds('signalProcess', { containerId: container.id, execId, signal: SIGKILL, all: false }).catch(() => undefined);
      throw err;
    }
    const p = new Process(container.id, execId, false, result.pid, stdio);
    applyConsoleSize(p, req.process?.ConsoleSize, core.log);
    started = true;
    attachPassfd(p, passfd, () => closeStdin(core, { container_id: container.id, exec_id: execId } as pb.CloseStdinRequest).then(() => undefined), core.log);
    container.execs.set(execId, p);
    core.applyEarlyExit(container, p);
    core.evict(container);
    core.log.info({ container: container.id, exec: execId, pid: result.pid }, 'process started');
    return {};
  } finally {
    container.pendingExecIds.delete(execId);
    if (!started) for (const s of Object.values(passfd)) s?.destroy();
  }
}

/**
 * SignalProcess: exec_id "" signals the init process and, as upstream, every other process of
 * the container (`all`); exec_id = the container id signals the init only. SIGTERM to an init
 * that neither blocks, ignores nor catches it becomes SIGKILL (upstream; done by the helper,
 * which reads /proc/<pid>/status). Signalling an exited
 * process succeeds without effect (upstream ignores ESRCH). INVALID_ARGUMENT for a signal
 * outside 0..64, NOT_FOUND for unknown ids.
 */
export async function signalProcess(core: AgentCore, req: pb.SignalProcessRequest): Promise<Empty> {
  const container = core.sandbox.getContainer(req.container_id);
  const p = container.getProcess(req.exec_id);
  const signal = req.signal;
  if (!Number.isInteger(signal) || signal < 0 || signal > MAX_SIGNAL) {
    throw new StatusError(Code.INVALID_ARGUMENT, `invalid signal ${signal} (want 0..${MAX_SIGNAL})`);
  }
  const all = req.exec_id === '';
  if (p.exited && !all) return {};
  try {
    await core.callNoFds('signalProcess', { containerId: container.id, execId: p.helperExecId, signal, all });
  } catch (err) {
    // The process died meanwhile: as upstream, ESRCH is not an error.
    if (p.exited && !all) return {};
    throw err;
  }
  core.log.info({ container: container.id, exec: p.execId, signal, all }, 'process signalled');
  return {};
}

/**
 * WaitProcess: resolves with the exit status (exit code, or 128 + signal). Any number of
 * concurrent or later calls get the same status while the record exists (B14: a late Wait
 * returns the cached status; NOT_FOUND only once the record was evicted or the container
 * removed). Output stays readable after the wait (B08). The helper is told to release its
 * copies of the stdio (releaseProcess) once the output has been read to its end (until then a
 * restarted control plane adopts it with its output), and our stdin pipe is closed. A call whose deadline
 * passes or whose connection drops (`ctx.signal`) is withdrawn at once: nothing of it is kept
 * until the process exits (review: 300k timed-out waits took control to 1.38 GB).
 */
export async function waitProcess(core: AgentCore, req: pb.WaitProcessRequest, ctx: RpcContext = {}): Promise<pb.WaitProcessResponse.$Properties> {
  const container = core.sandbox.getContainer(req.container_id);
  const p = container.getProcess(req.exec_id);
  const status = await p.wait(ctx.signal);
  // passfd I/O: the exit is reported once the output has reached the runtime (upstream signal.rs).
  await passfdOutputDone(p);
  if (!p.waited) {
    p.waited = true;
    p.stdio.releaseStdin();
    // The helper keeps its copies of the stdio and the output spools until the output has been
    // read to its end, so that a restarted control plane can still deliver it — and the exit
    // status until this answer has been written: released before, a control plane killed in
    // between left the runtime without the status (the next one: NOT_FOUND).
    const release = (): void => p.stdio.whenOutputDrained(() => void core.releaseInHelper(container, p));
    if (ctx.onWritten) ctx.onWritten(release);
    else release();
  }
  return { status };
}
