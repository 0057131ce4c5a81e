/** execProcess: start a process in a container through the Launcher (kata-init `exec`). */
import * as fs from 'node:fs';
import { Code, StatusError, validateExecId, type ExecProcessArgs, type ExecProcessResult } from '../../../shared/protocol';
import type { BackendReply } from '../../api';
import { validateProcessPlan } from '../plan';
import { dropProcessLabel } from '../selinux';
import { SIGKILL, createStdio, type StdioSet } from '../registry';
import { checkArgs } from '../guest-args';
import { precondition } from './checks';
import { type ContainerContext, withFds, type ContainerRecord } from './context';
import { type LaunchedProcess, cgroupJoin } from './launcher';
import { getContainer } from './record';

export async function execProcess(ctx: ContainerContext, rawArgs: ExecProcessArgs): Promise<BackendReply<ExecProcessResult>> {
  const args = checkArgs(rawArgs, 'execProcess');
  const record = getContainer(ctx, args.containerId);
  const execId = validateExecId(args.execId, false);
  const plan = validateProcessPlan(args.process);
  dropProcessLabel(plan, ctx.selinux, ctx.log, { containerId: record.id, execId, field: 'process.selinuxLabel' });
  if (record.removing) throw precondition(`container ${record.id} is being removed`);
  if (record.init.exited) throw precondition(`container ${record.id} is not running (its init has exited)`);
  const existing = record.execs.get(execId);
  if (record.pendingExecs.has(execId) || (existing && !existing.exited)) {
    throw new StatusError(Code.ALREADY_EXISTS, `exec process ${execId} already exists in container ${record.id}`);
  }
  if (existing) {
    // An exited exec never released: its id is reused, so drop the old one now.
    record.execs.delete(execId);
    ctx.registry.forget(existing);
  }
  record.pendingExecs.add(execId);
  let stdio: StdioSet | undefined;
  try {
    stdio = createStdio(plan.terminal);
    let launched: LaunchedProcess;
    try {
      const cg = record.cgroup;
      const join = cg && ctx.cgroups ? cgroupJoin(ctx.cgroups, cg) : undefined;
      launched = await ctx.launcher.exec(record.id, execId, record.init, plan, stdio, record.handle.seccomp, join);
    } catch (err) {
      throw execFailure(ctx, record, execId, err);
    }
    stdio.closeChild();
    const proc = ctx.registry.track({
      containerId: record.id,
      execId,
      pid: launched.pid,
      pidfd: launched.pidfd,
      sinceSeq: launched.sinceSeq,
      stdio: stdio.parent,
    });
    stdio = undefined; // owned by the registry now
    if (record.removing || record.removed) {
      ctx.registry.signal(proc, SIGKILL);
      ctx.registry.forget(proc);
      throw precondition(`container ${record.id} was removed while exec process ${execId} was starting`);
    }
    record.execs.set(execId, proc);
    ctx.log.info({ containerId: record.id, execId, pid: launched.pid }, 'exec process started');
    return withFds(ctx, { pid: launched.pid }, proc, [...proc.stdio].map(([name, fd]) => ({ name, fd })));
  } catch (err) {
    stdio?.closeChild();
    stdio?.closeParent();
    throw err;
  } finally {
    record.pendingExecs.delete(execId);
  }
}

/**
 * The error for an exec that failed to start: when the container's init vanished meanwhile
 * (it exited, the container is being removed, or its pid is no longer a live tracked
 * process — joining /proc/<pid>/ns/* then fails with ENOENT) the container is not running:
 * FAILED_PRECONDITION with the launcher's message; otherwise `err` unchanged.
 */
export function execFailure(ctx: ContainerContext, record: ContainerRecord, execId: string, err: unknown): unknown {
  if (err instanceof StatusError && err.code === Code.FAILED_PRECONDITION) return err;
  const pid = record.init.pid;
  const gone =
    record.removing !== undefined ||
    record.removed ||
    record.init.exited ||
    !ctx.registry.isLive(pid) ||
    // Dead but not reaped yet: a zombie has no namespaces any more.
    !fs.existsSync(`/proc/${pid}/ns/mnt`);
  if (!gone) return err;
  const why = record.removing !== undefined || record.removed ? 'is being removed' : 'is not running (its init has exited)';
  const detail = err instanceof Error ? err.message : String(err);
  return precondition(`container ${record.id} ${why}: exec process ${execId} could not join it: ${detail}`);
}
