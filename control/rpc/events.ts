/**
 * Event rpcs: GetOOMEvent (Kata agent rpc.rs get_oom_event at 6e4d4c329a), a long poll.
 */
import type { grpc as pb } from '../../shared/generated/protos';
import { Code, StatusError } from '../../shared/protocol';
import type { AgentCore, RpcContext } from './core';

/**
 * GetOOMEvent: a long poll. OOM monitoring is a later issue, so no event is ever delivered;
 * the call stays pending until the sandbox is destroyed (then FAILED_PRECONDITION; upstream
 * INTERNAL), the agent stops (UNAVAILABLE), or the caller's deadline/connection ends
 * (CANCELLED; the waiter is released at once).
 */
export function getOOMEvent(core: AgentCore, _req: pb.GetOOMEventRequest, ctx: RpcContext = {}): Promise<pb.OOMEvent.$Properties> {
  if (core.sandbox.destroyed) {
    return Promise.reject(new StatusError(Code.FAILED_PRECONDITION, 'the sandbox has been destroyed: no more OOM events'));
  }
  return new Promise((_resolve, reject) => {
    const waiter = (err: StatusError): void => {
      core.longPolls.delete(waiter);
      ctx.signal?.removeEventListener('abort', onAbort);
      reject(err);
    };
    const onAbort = (): void => waiter(new StatusError(Code.CANCELLED, 'GetOOMEvent cancelled'));
    core.longPolls.add(waiter);
    ctx.signal?.addEventListener('abort', onAbort, { once: true });
  });
}
