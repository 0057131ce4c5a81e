/** createContainer: validate the plan, make the cgroup and stdio, start the init through the Launcher (kata-init `create`), run the prestart/createRuntime hooks. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Code, StatusError, validateContainerId, HELPER_MAX_PACKET, type CreateContainerArgs, type CreateContainerResult } from '../../../shared/protocol';
import { processStartTime } from '../leftovers';
import type { BackendReply } from '../../api';
import { validateContainerPlan } from '../plan';
import type { Hook, OciState } from '../hooks';
import type { ContainerCgroup } from '../cgroup';
import { applySelinuxLabels } from '../selinux';
import { createStdio, type StdioSet } from '../registry';
import { checkArgs } from '../guest-args';
import { precondition } from './checks';
import { type ContainerContext, withFds, type ContainerRecord } from './context';
import { cgroupJoin } from './launcher';
import { checkOciInfo, inContainerHookStates, ociStateOf } from './oci-state';
import { ociState } from './record';
import { TEARDOWN_TIMEOUT_MS, remove, detachSharedMounts } from './remove';
import { namespacePathAllowed } from './sandbox';
import { STATE_PAGE_MARGIN, encodedSize } from './state';

/**
 * The sysctls whose key this kernel has (/proc/sys/<key with "." → "/">); the others are
 * skipped with a warning, as upstream does (a spec written for another kernel still runs).
 * Keys were validated (letters, digits, "._-"; no "..") by validateContainerPlan.
 */
export function knownSysctls(ctx: ContainerContext, containerId: string, sysctl: [string, string][]): [string, string][] {
  return sysctl.filter(([key]) => {
    if (fs.existsSync(path.join('/proc/sys', key.replace(/\./g, '/')))) return true;
    ctx.log.warn({ containerId, field: `OCI.Linux.Sysctl[${JSON.stringify(key)}]` }, 'sysctl skipped: the guest kernel has no such key');
    return false;
  });
}

export async function createContainer(ctx: ContainerContext, rawArgs: CreateContainerArgs): Promise<BackendReply<CreateContainerResult>> {
  const args = checkArgs(rawArgs, 'createContainer');
  const containerId = validateContainerId(args.containerId);
  if (ctx.isShutdown) throw precondition('the helper is shutting down');
  if (ctx.containers.has(containerId) || ctx.creating.has(containerId)) {
    throw new StatusError(Code.ALREADY_EXISTS, `container ${containerId} already exists`);
  }
  const plan = validateContainerPlan(args.plan, {
    hostChecks: ctx.launcher.hostChecks,
    namespacePathAllowed: (type, p) => namespacePathAllowed(ctx, type, p),
    allowHostNamespaces: ctx.allowHostNamespaces,
  });
  const oci = checkOciInfo(args.oci);
  // The plan comes back in one `state` page to a restarted control plane: one that would not
  // fit there would make every adoption fail (and PID 1 power off after 5 restarts).
  const recordBytes = encodedSize({ containerId, status: 'running', pid: 0x7fffffff, plan: args.plan });
  if (recordBytes > HELPER_MAX_PACKET - STATE_PAGE_MARGIN) {
    throw new StatusError(Code.RESOURCE_EXHAUSTED, `container ${containerId}: its plan (${recordBytes} bytes) is larger than a state page holds (${HELPER_MAX_PACKET - STATE_PAGE_MARGIN} bytes)`);
  }
  plan.hookStates = inContainerHookStates(containerId, oci, plan);
  applySelinuxLabels(plan, ctx.selinux, ctx.log, containerId);
  if (ctx.launcher.hostChecks) plan.sysctl = knownSysctls(ctx, containerId, plan.sysctl);
  ctx.creating.add(containerId);
  let stdio: StdioSet | undefined;
  let cgroup: ContainerCgroup | undefined;
  try {
    if (plan.cgroup) {
      if (!ctx.cgroups) throw precondition(`container ${containerId}: this helper manages no cgroups`);
      if (ctx.cgroups.layout.mode === 'none' && Object.keys(plan.cgroup.resources).length === 0) {
        ctx.log.warn({ containerId }, 'no cgroup filesystem: the container runs in the helper\'s cgroups');
      } else {
        cgroup = ctx.cgroups.create(containerId, plan.cgroup);
      }
    }
    stdio = createStdio(plan.process.terminal);
    const cg = cgroup;
    const join = cg && ctx.cgroups ? cgroupJoin(ctx.cgroups, cg) : undefined;
    const runtimeHooks = {
      prestart: [...plan.hooks.prestart, ...ctx.guestHooks.prestart],
      createRuntime: plan.hooks.createRuntime,
    };
    const hooksBeforePivot = ctx.launcher.hooksBeforePivot === true && (runtimeHooks.prestart.length > 0 || runtimeHooks.createRuntime.length > 0);
    if (hooksBeforePivot) plan.runtimeHooksBeforePivot = true;
    const beforePivot = (pid: number): Promise<void> =>
      runRuntimeHooks(ctx, runtimeHooks, ociStateOf(containerId, oci, plan.rootfs, pid, 'created'));
    const handle = await ctx.launcher.createInit(containerId, plan, stdio, join, hooksBeforePivot ? beforePivot : undefined);
    // From now on a helper crash leaves a container behind: the next helper kills it.
    ctx.journal?.record({ containerId, pid: handle.pid, startTime: processStartTime(handle.pid), cgroup });
    stdio.closeChild();
    const init = ctx.registry.track({
      containerId,
      execId: '',
      pid: handle.pid,
      pidfd: handle.pidfd,
      sinceSeq: handle.sinceSeq,
      stdio: stdio.parent,
    });
    const parentFds = stdio.parent;
    stdio = undefined; // owned by the registry now
    const record: ContainerRecord = {
      id: containerId,
      plan,
      init,
      handle,
      started: false,
      execs: new Map(),
      pendingExecs: new Set(),
      removing: undefined,
      removed: false,
      hooks: {
        ...runtimeHooks,
        poststart: [...plan.hooks.poststart, ...ctx.guestHooks.poststart],
        poststop: [...plan.hooks.poststop, ...ctx.guestHooks.poststop],
      },
      oci,
      controlPlan: args.plan,
      cgroup,
      // a reused cgroup dir keeps its counter: only kills from now on are events
      oomSeen: cgroup && ctx.cgroups ? ctx.cgroups.oomKills(cgroup) : undefined,
    };
    if (!hooksBeforePivot) await runPrestart(ctx, record);
    ctx.containers.set(containerId, record);
    ctx.log.info({ containerId, pid: handle.pid }, 'container created');
    return withFds(ctx, { pid: handle.pid }, init, parentFds);
  } catch (err) {
    stdio?.closeChild();
    stdio?.closeParent();
    if (cgroup && ctx.cgroups) {
      await ctx.cgroups.killAll(cgroup);
      ctx.cgroups.remove(cgroup);
    }
    detachSharedMounts(ctx, containerId, plan);
    ctx.journal?.forget(containerId);
    throw err;
  } finally {
    ctx.creating.delete(containerId);
  }
}

/**
 * Prestart hooks of a container whose init is set up and parked before exec (status
 * "created", its pid), for a launcher that cannot stop before pivot_root (the mock; the real
 * one runs them through createInit's beforePivot, as upstream). A failure kills the init, waits
 * for it (so nothing is left running) and is thrown: FAILED_PRECONDITION naming the hook.
 */
export async function runPrestart(ctx: ContainerContext, record: ContainerRecord): Promise<void> {
  if (record.hooks.prestart.length === 0 && record.hooks.createRuntime.length === 0) return;
  try {
    await runRuntimeHooks(ctx, record.hooks, ociState(record, 'created'));
  } catch (err) {
    await remove(ctx, record, TEARDOWN_TIMEOUT_MS, false).catch((e: unknown) =>
      ctx.log.error({ err: e, containerId: record.id }, 'removing the container after a failed prestart hook failed'),
    );
    throw err;
  }
}

/**
 * runtime-spec: prestart (deprecated) and createRuntime both run in the runtime namespace
 * after the container's environment exists and before pivot_root; prestart first, as runc.
 * Throws FAILED_PRECONDITION naming the failing hook.
 */
export async function runRuntimeHooks(ctx: ContainerContext, hooks: { prestart: Hook[]; createRuntime: Hook[] }, state: OciState): Promise<void> {
  await ctx.hookRunner.runAll('prestart', hooks.prestart, state, true);
  await ctx.hookRunner.runAll('createRuntime', hooks.createRuntime, state, true);
}
