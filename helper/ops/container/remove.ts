/** removeContainer: kill, wait, empty the cgroup, detach shared mounts, forget; poststop hooks. */
import { Code, StatusError, type RemoveContainerArgs, type RemoveContainerResult } from '../../../shared/protocol';
import type { BackendReply } from '../../api';
import type { ValidContainerPlan } from '../plan';
import { KernelMounter } from '../mount';
import { detachWithoutFollowing } from '../leftovers';
import { SIGKILL } from '../registry';
import { checkArgs } from '../guest-args';
import { checkBoolArg } from './checks';
import type { ContainerContext, ContainerRecord } from './context';
import { checkOom } from './oom-events';
import { getContainer, ociState } from './record';

/** Default wait for processes to die at shutdown / destroySandbox, in ms. */
export const TEARDOWN_TIMEOUT_MS = 10_000;
/** Upper bound of removeContainer's timeoutMs (one hour). */
export const MAX_REMOVE_TIMEOUT_MS = 3_600_000;

/**
 * SIGKILL the container's init (which takes its pid namespace down) and every exec process,
 * wait up to timeoutMs (0 = no limit, as upstream's timeout 0) for all of them to be reaped,
 * then close the helper's fds and forget the container. DEADLINE_EXCEEDED naming the
 * survivors otherwise; the container then stays (a retry kills and waits again).
 */
export async function removeContainer(ctx: ContainerContext, rawArgs: RemoveContainerArgs): Promise<BackendReply<RemoveContainerResult>> {
  const args = checkArgs(rawArgs, 'removeContainer');
  const releaseStorages = checkBoolArg(args.releaseStorages, 'releaseStorages', false);
  const record = getContainer(ctx, args.containerId);
  const timeoutMs = args.timeoutMs ?? 0;
  if (typeof timeoutMs !== 'number' || !Number.isInteger(timeoutMs) || timeoutMs < 0 || timeoutMs > MAX_REMOVE_TIMEOUT_MS) {
    throw new StatusError(Code.INVALID_ARGUMENT, `timeoutMs must be an integer in 0..${MAX_REMOVE_TIMEOUT_MS}, got ${JSON.stringify(timeoutMs)}`);
  }
  await remove(ctx, record, timeoutMs);
  // without a storage backend no storage can be owned: nothing to release
  if (releaseStorages && ctx.storage) await ctx.storage.releaseStorages({ owner: record.id });
  return { result: {} };
}

export function remove(ctx: ContainerContext, record: ContainerRecord, timeoutMs: number, runPoststop = true): Promise<void> {
  if (record.removing) return record.removing;
  const run = async (): Promise<void> => {
    const procs = [record.init, ...record.execs.values()];
    // SIGKILL before closing the start fd: an init parked before StartContainer would
    // otherwise read EOF and exit 0, reporting success for a workload that never ran.
    try {
      for (const p of procs) ctx.registry.signal(p, SIGKILL);
    } finally {
      record.handle.abort();
    }
    // Every process of the cgroup, also the ones the helper does not track (children of a
    // container sharing the sandbox pid namespace outlive its init).
    const cgroupEmpty = record.cgroup && ctx.cgroups ? ctx.cgroups.killAll(record.cgroup) : Promise.resolve(true);
    const results = await Promise.all(procs.map((p) => p.waitExit(timeoutMs)));
    const survivors = procs.filter((_, i) => !results[i]);
    if (!(await cgroupEmpty) && record.cgroup && ctx.cgroups) {
      const left = ctx.cgroups.allProcs(record.cgroup);
      if (left.length > 0) {
        throw new StatusError(Code.DEADLINE_EXCEEDED, `container ${record.id}: cgroup ${record.cgroup.path} still holds pids ${left.join(', ')} after SIGKILL`);
      }
    }
    if (survivors.length > 0) {
      throw new StatusError(
        Code.DEADLINE_EXCEEDED,
        `container ${record.id}: still running ${timeoutMs} ms after SIGKILL: ` +
          survivors.map((p) => `${p.execId === '' ? 'init' : `exec ${p.execId}`} (pid ${p.pid})`).join(', '),
      );
    }
    for (const p of procs) ctx.registry.forget(p);
    checkOom(ctx); // an OOM kill that ended the container is still reported
    if (record.cgroup && ctx.cgroups) {
      const left = ctx.cgroups.remove(record.cgroup);
      if (left.length > 0) ctx.log.warn({ containerId: record.id, left }, 'cgroup dirs left behind');
    }
    detachSharedMounts(ctx, record.id, record.plan);
    record.removed = true;
    ctx.containers.delete(record.id);
    ctx.journal?.forget(record.id);
    ctx.log.info({ containerId: record.id }, 'container removed');
    // rustjail container.rs destroy(): poststop hooks after the container is gone, before the
    // remove returns; failures are logged only.
    if (runPoststop) await ctx.hookRunner.runAll('poststop', record.hooks.poststop, ociState(record, 'stopped'), false);
  };
  record.removing = run().finally(() => {
    record.removing = undefined;
  });
  return record.removing;
}

/**
 * A container that shared the helper's mount namespace (host-namespace mode, no `mount`
 * entry) had its spec's mounts made below its rootfs in ours (as runc does): detach every
 * mount strictly below the rootfs, deepest first, once its processes are gone, each only when
 * its path resolves to itself (MNT_DETACH|UMOUNT_NOFOLLOW, as the leftovers clean-up). Failures
 * are logged only.
 */
export function detachSharedMounts(ctx: ContainerContext, containerId: string, plan: ValidContainerPlan): void {
  if (!plan.hostns || !ctx.launcher.hostChecks || plan.namespaces.some((n) => n.type === 'mnt')) return;
  const below = new KernelMounter().mountsUnder(plan.rootfs).filter((m) => m !== plan.rootfs).reverse();
  for (const m of below) {
    try {
      // By path, but never through a symlink a surviving container process planted between the
      // mountinfo read and here (no pid namespace or cgroup of its own may outlive its init).
      if (!detachWithoutFollowing(m)) ctx.log.warn({ containerId, mount: m }, 'mount below a shared-mount-namespace container\'s rootfs resolves elsewhere (symlink on the way): not detached');
    } catch (err) {
      ctx.log.warn({ containerId, mount: m, err }, 'mount below a shared-mount-namespace container\'s rootfs not detached');
    }
  }
}

/** Remove every container; returns the failure messages. */
export async function removeAll(ctx: ContainerContext, timeoutMs: number): Promise<string[]> {
  const results = await Promise.allSettled([...ctx.containers.values()].map((r) => remove(ctx, r, timeoutMs)));
  return results.flatMap((r) => (r.status === 'rejected' ? [(r.reason as Error).message] : []));
}
