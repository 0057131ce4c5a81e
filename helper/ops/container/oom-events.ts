/** The OOM watch and the OOM events kept for control until it acks them. */
import { Code, StatusError, type AckOomEventsArgs, type AckOomEventsResult } from '../../../shared/protocol';
import type { BackendReply } from '../../api';
import { checkArgs } from '../guest-args';
import { type ContainerContext, emit } from './context';

/** OOM events kept for control until it acks them (the oldest dropped beyond). */
const MAX_PENDING_OOM_EVENTS = 1024;
/**
 * Bytes of OOM events kept (container id + 32 each, the oldest dropped beyond), so that they fit
 * the first `state` page whatever the ids' length (a container can OOM at will).
 */
const MAX_PENDING_OOM_BYTES = 96 * 1024;

/** Interval of the OOM watch (the cgroups' oom_kill counters), in ms. */
export const OOM_WATCH_INTERVAL_MS = 200;

/**
 * The OOM watch (upstream: an eventfd on v1 memory.oom_control / inotify on v2 memory.events,
 * rustjail cgroups/notifier.rs): each tick compares every container cgroup's oom_kill counter
 * with the last value seen and sends one `oom` event per container whose counter grew.
 */
export function checkOom(ctx: ContainerContext): void {
  if (!ctx.cgroups) return;
  for (const record of ctx.containers.values()) {
    if (!record.cgroup || record.removed) continue;
    const n = ctx.cgroups.oomKills(record.cgroup);
    const seen = record.oomSeen ?? 0;
    record.oomSeen = n;
    if (n > seen) {
      ctx.log.warn({ containerId: record.id, oomKills: n }, 'container cgroup had an OOM kill');
      const seq = ++ctx.oomSeq;
      ctx.oomPending.push({ containerId: record.id, seq });
      ctx.oomPendingBytes += record.id.length + 32;
      while (ctx.oomPending.length > MAX_PENDING_OOM_EVENTS || ctx.oomPendingBytes > MAX_PENDING_OOM_BYTES) dropOldestOom(ctx);
      emit(ctx, { event: 'oom', containerId: record.id, seq });
    }
  }
}

export function dropOldestOom(ctx: ContainerContext): void {
  const e = ctx.oomPending.shift();
  if (e) ctx.oomPendingBytes -= e.containerId.length + 32;
}

/** Forget the OOM events up to `upTo` (control delivered them). INVALID_ARGUMENT for a bad seq. */
export async function ackOomEvents(ctx: ContainerContext, rawArgs: AckOomEventsArgs): Promise<BackendReply<AckOomEventsResult>> {
  const args = checkArgs(rawArgs, 'ackOomEvents');
  const upTo = args.upTo;
  if (typeof upTo !== 'number' || !Number.isSafeInteger(upTo) || upTo < 0) {
    throw new StatusError(Code.INVALID_ARGUMENT, `ackOomEvents: upTo must be a non-negative integer, got ${JSON.stringify(upTo)}`);
  }
  while (ctx.oomPending.length > 0 && ctx.oomPending[0].seq <= upTo) dropOldestOom(ctx);
  return { result: {} };
}
