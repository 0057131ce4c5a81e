/** closeStdin and releaseProcess: drop the helper's copies of a process's stdio. */
import { validateExecId, type CloseStdinArgs, type CloseStdinResult, type ReleaseProcessArgs, type ReleaseProcessResult } from '../../../shared/protocol';
import type { BackendReply } from '../../api';
import { checkArgs } from '../guest-args';
import { precondition } from './checks';
import type { ContainerContext } from './context';
import { getContainer, getProcess } from './record';

/**
 * Close the stdin of a process: the helper's copy of the stdin pipe. With a terminal the
 * helper keeps its pty master (it also carries the output, which a restarted control plane
 * adopts); control writes ^D instead. Control closes its own copy. Idempotent.
 */
export async function closeStdin(ctx: ContainerContext, rawArgs: CloseStdinArgs): Promise<BackendReply<CloseStdinResult>> {
  const args = checkArgs(rawArgs, 'closeStdin');
  const record = getContainer(ctx, args.containerId);
  const proc = getProcess(record, validateExecId(args.execId, true));
  // The pty master stays: it carries the output, which a restarted control plane re-adopts.
  ctx.registry.closeStdio(proc, ['stdin']);
  return { result: {} };
}

/**
 * Forget an exited process: close the helper's copies of its stdio and drop it (an exec
 * process) — for the init (execId "") only the fds are closed; the container stays until
 * removeContainer. FAILED_PRECONDITION while it runs.
 */
export async function releaseProcess(ctx: ContainerContext, rawArgs: ReleaseProcessArgs): Promise<BackendReply<ReleaseProcessResult>> {
  const args = checkArgs(rawArgs, 'releaseProcess');
  const record = getContainer(ctx, args.containerId);
  const execId = validateExecId(args.execId, true);
  const proc = getProcess(record, execId);
  if (!proc.exited) throw precondition(`process ${execId || '(init)'} of container ${record.id} has not exited`);
  if (execId === '') {
    ctx.registry.closeStdio(proc);
  } else {
    record.execs.delete(execId);
    ctx.registry.forget(proc);
  }
  return { result: {} };
}
