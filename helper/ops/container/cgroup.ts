/** Verbs on a container's cgroup: cgroupStats, cgroupFreeze (Pause/ResumeContainer), cgroupUpdate (UpdateContainer). */
import { Code, StatusError, type CgroupFreezeArgs, type CgroupFreezeResult, type CgroupStatsArgs, type CgroupStatsResult, type CgroupUpdateArgs, type CgroupUpdateResult } from '../../../shared/protocol';
import type { BackendReply } from '../../api';
import { validateCgroupResources } from '../../../shared/cgroup';
import { checkArgs } from '../guest-args';
import { precondition } from './checks';
import type { ContainerContext } from './context';
import { getContainer } from './record';

/**
 * Raw values of the container's cgroup files (memory, cpu, pids; CgroupManager.stats).
 * NOT_FOUND for an unknown container; FAILED_PRECONDITION when it has no cgroup of its own.
 */
export async function cgroupStats(ctx: ContainerContext, rawArgs: CgroupStatsArgs): Promise<BackendReply<CgroupStatsResult>> {
  const args = checkArgs(rawArgs, 'cgroupStats');
  const record = getContainer(ctx, args.containerId);
  if (!record.cgroup || !ctx.cgroups) throw precondition(`container ${record.id} has no cgroup of its own`);
  return { result: { mode: ctx.cgroups.layout.mode, files: ctx.cgroups.stats(record.cgroup) } };
}

/**
 * Freeze or thaw the container's cgroup (PauseContainer / ResumeContainer; CgroupManager.freeze).
 * NOT_FOUND for an unknown container; FAILED_PRECONDITION when it has no cgroup of its own or
 * is being removed; INVALID_ARGUMENT for a bad `frozen` / `timeoutMs`; DEADLINE_EXCEEDED when
 * the state is not reached in time.
 */
export async function cgroupFreeze(ctx: ContainerContext, rawArgs: CgroupFreezeArgs): Promise<BackendReply<CgroupFreezeResult>> {
  const args = checkArgs(rawArgs, 'cgroupFreeze');
  const record = getContainer(ctx, args.containerId);
  if (typeof args.frozen !== 'boolean') throw new StatusError(Code.INVALID_ARGUMENT, 'cgroupFreeze: frozen must be a boolean');
  const t = args.timeoutMs ?? 5000;
  if (typeof t !== 'number' || !Number.isInteger(t) || t < 1 || t > 60_000) throw new StatusError(Code.INVALID_ARGUMENT, `cgroupFreeze: timeoutMs ${String(t)} must be 1..60000`);
  if (!record.cgroup || !ctx.cgroups) throw precondition(`container ${record.id} has no cgroup of its own`);
  if (record.removing || record.removed) throw precondition(`container ${record.id} is being removed`);
  await ctx.cgroups.freeze(record.cgroup, args.frozen, t);
  ctx.log.info({ containerId: record.id, frozen: args.frozen }, 'container cgroup frozen state set');
  return { result: {} };
}

/**
 * New resources for the container's cgroup (UpdateContainer): validated again
 * (shared/cgroup.ts, INVALID_ARGUMENT naming the field) and written (CgroupManager.update).
 * NOT_FOUND / FAILED_PRECONDITION as {@link cgroupFreeze}.
 */
export async function cgroupUpdate(ctx: ContainerContext, rawArgs: CgroupUpdateArgs): Promise<BackendReply<CgroupUpdateResult>> {
  const args = checkArgs(rawArgs, 'cgroupUpdate');
  const record = getContainer(ctx, args.containerId);
  const resources = validateCgroupResources(args.resources);
  if (!record.cgroup || !ctx.cgroups) throw precondition(`container ${record.id} has no cgroup of its own`);
  if (record.removing || record.removed) throw precondition(`container ${record.id} is being removed`);
  ctx.cgroups.update(record.cgroup, resources);
  ctx.log.info({ containerId: record.id }, 'container cgroup resources updated');
  return { result: {} };
}
