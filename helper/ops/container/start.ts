/** startContainer: release the parked init (its start byte, helper/native/KATA-INIT.md), then the poststart hooks. */
import type { StartContainerArgs, StartContainerResult } from '../../../shared/protocol';
import type { BackendReply } from '../../api';
import { checkArgs } from '../guest-args';
import { precondition } from './checks';
import type { ContainerContext } from './context';
import { getContainer, ociState } from './record';

export async function startContainer(ctx: ContainerContext, rawArgs: StartContainerArgs): Promise<BackendReply<StartContainerResult>> {
  const args = checkArgs(rawArgs, 'startContainer');
  const record = getContainer(ctx, args.containerId);
  if (record.removing) throw precondition(`container ${record.id} is being removed`);
  if (record.started) throw precondition(`container ${record.id} has already been started`);
  if (record.init.exited) throw precondition(`container ${record.id} is stopped (its init exited with ${record.init.exitStatus})`);
  record.started = true;
  await record.handle.start();
  ctx.log.info({ containerId: record.id }, 'container started');
  // rustjail container.rs exec(): poststart hooks before StartContainer returns; failures are
  // logged only (runtime-spec: a poststart failure is a warning).
  await ctx.hookRunner.runAll('poststart', record.hooks.poststart, ociState(record, 'running'), false);
  return { result: {} };
}
