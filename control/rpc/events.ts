/**
 * Event rpcs: GetOOMEvent (Kata agent rpc.rs get_oom_event at 6e4d4c329a), a long poll.
 */
import type { grpc as pb } from '../../shared/generated/protos';
import { Code, StatusError } from '../../shared/protocol';
import type { AgentCore, QueuedOom, RpcContext } from './core';

/**
 * GetOOMEvent: answers the id of a container whose cgroup had an OOM kill (the helper's `oom`
 * event). Events that arrive while no call waits are queued in control (AgentCore.oomQueue,
 * bounded), so each is delivered exactly once, oldest first (the helper keeps each until it was
 * answered: a restarted control plane delivers the ones not answered yet — control/rpc/adopt.ts),
 * even when the runtime is slow to ask; concurrent calls take one event each. The call stays
 * pending until an event comes or the caller's deadline/connection ends (the waiter is released
 * at once and takes no event) — also through DestroySandbox and the agent's stop, which closes
 * the connection without an answer: the Go runtime's watchOOMEvents (shim wait.go) stops quietly
 * on "ttrpc: closed" but logs any status as "failed to get OOM event" and asks again a second
 * later (upstream answers INTERNAL "" once DestroySandbox dropped its event sender;
 * docs/ARCHITECTURE.md "Runtime tests"). A call made after DestroySandbox: FAILED_PRECONDITION.
 */
export function getOOMEvent(core: AgentCore, _req: pb.GetOOMEventRequest, ctx: RpcContext = {}): Promise<pb.OOMEvent.$Properties> {
  // Once the answer has been written the helper may forget the event (before, a restarted
  // control plane gets it again from the helper's `state`). Acked right before the write, a
  // control plane killed in between lost the event.
  const answer = (event: QueuedOom): pb.OOMEvent.$Properties => {
    if (ctx.onWritten) ctx.onWritten(() => core.ackOom(event));
    else core.ackOom(event);
    return { container_id: event.containerId };
  };
  const queued = core.oomQueue.shift();
  if (queued !== undefined) return Promise.resolve(answer(queued));
  if (core.sandbox.destroyed) {
    return Promise.reject(new StatusError(Code.FAILED_PRECONDITION, 'the sandbox has been destroyed: no more OOM events'));
  }
  if (ctx.signal?.aborted) return Promise.reject(new StatusError(Code.CANCELLED, 'GetOOMEvent cancelled'));
  return new Promise((resolve, reject) => {
    const done = (): void => {
      core.longPolls.delete(fail);
      const i = core.oomWaiters.indexOf(deliver);
      if (i >= 0) core.oomWaiters.splice(i, 1);
      ctx.signal?.removeEventListener('abort', onAbort);
    };
    const deliver = (event: QueuedOom): void => {
      done();
      resolve(answer(event));
    };
    const fail = (err: StatusError): void => {
      done();
      reject(err);
    };
    const onAbort = (): void => fail(new StatusError(Code.CANCELLED, 'GetOOMEvent cancelled'));
    core.longPolls.add(fail);
    core.oomWaiters.push(deliver);
    ctx.signal?.addEventListener('abort', onAbort, { once: true });
  });
}
