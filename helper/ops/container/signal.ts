/** signalProcess. */
import { Code, StatusError, validateExecId, type SignalProcessArgs, type SignalProcessResult } from '../../../shared/protocol';
import type { BackendReply } from '../../api';
import { SIGKILL, SIGTERM, isSignalHandled } from '../registry';
import { checkArgs } from '../guest-args';
import { checkBoolArg } from './checks';
import type { ContainerContext } from './context';
import { getContainer, getProcess } from './record';

/**
 * Signal a process (execId "" = the init). SIGTERM to an init that neither handles, ignores
 * nor blocks it becomes SIGKILL (Kata rpc.rs do_signal_process: a pid-namespace init would
 * otherwise never die of it). `all` also signals every exec process of the container.
 * Signal 0..64; signalling an exited process succeeds (ESRCH tolerated as upstream).
 */
export async function signalProcess(ctx: ContainerContext, rawArgs: SignalProcessArgs): Promise<BackendReply<SignalProcessResult>> {
  const args = checkArgs(rawArgs, 'signalProcess');
  const record = getContainer(ctx, args.containerId);
  const execId = validateExecId(args.execId, true);
  const signal = args.signal;
  if (typeof signal !== 'number' || !Number.isInteger(signal) || signal < 0 || signal > 64) {
    throw new StatusError(Code.INVALID_ARGUMENT, `signal must be an integer in 0..64, got ${JSON.stringify(signal)}`);
  }
  const all = checkBoolArg(args.all, 'all', false);
  const target = getProcess(record, execId);
  let sig = signal;
  if (execId === '' && signal === SIGTERM && !target.exited && !isSignalHandled(target.pid, SIGTERM)) {
    ctx.log.info({ containerId: record.id, pid: target.pid }, 'init does not handle SIGTERM, sending SIGKILL');
    sig = SIGKILL;
  }
  ctx.registry.signal(target, sig);
  if (all) {
    for (const proc of record.execs.values()) if (proc !== target) ctx.registry.signal(proc, signal);
    if (target !== record.init) ctx.registry.signal(record.init, signal);
  }
  return { result: {} };
}
