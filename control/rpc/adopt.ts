/**
 * Adoption: a control plane that starts next to a helper already running containers (the
 * previous control plane was killed or upgraded) rebuilds its model from the helper's `state`
 * op before it serves ttRPC — the sandbox identity and namespaces, every container with its
 * plan and status, every process with its pid, exit status not yet collected and its stdio (the
 * helper's copies of the parent ends). See docs/ARCHITECTURE.md "Restart and adoption".
 */
import { Code, StatusError, type ContainerPlan, type ContainerState, type ProcessState } from '../../shared/protocol';
import { Container } from '../sandbox/container';
import { Process } from '../sandbox/process';
import { dataLossError } from '../sandbox/output-budget';
import { closeFds, ProcessStdio } from '../sandbox/stdio';
import type { AgentCore } from './core';

/** What {@link adoptFromHelper} found. */
export interface AdoptionSummary {
  /** Whether the helper had a sandbox. */
  sandbox: boolean;
  containers: number;
  processes: number;
  /** Processes whose exit status was known to the helper but not yet collected. */
  exited: number;
  /** OOM events the helper kept (not yet answered by a GetOOMEvent). */
  oomEvents: number;
  /** `state` pages read. */
  pages: number;
}

/** Most `state` pages read (a helper answering `next` forever is a bug, not a reason to hang). */
const MAX_PAGES = 1_000_000;

/**
 * Read every `state` page and rebuild the sandbox model in `core.sandbox` (which must be empty).
 * Fds of a process are wrapped as CreateContainer/ExecProcess wrap them; a process whose fds the
 * helper no longer holds (released after its exit) gets ended stdio (reads: EOF). Fds the model
 * does not take are closed. Throws the helper call's StatusError (UNIMPLEMENTED from a helper
 * without `state`), INTERNAL for an inconsistent snapshot (a process before its container).
 */
export async function adoptFromHelper(core: AgentCore): Promise<AdoptionSummary> {
  const sandbox = core.sandbox;
  const summary: AdoptionSummary = { sandbox: false, containers: 0, processes: 0, exited: 0, oomEvents: 0, pages: 0 };
  const records = new Map<string, ContainerState>();
  let cursor = 0;
  for (;;) {
    const { result, fds } = await core.call('state', { withFds: true, cursor });
    summary.pages++;
    const taken = new Set<string>();
    try {
      if (cursor === 0 && result.sandbox) {
        sandbox.id = result.sandbox.sandboxId;
        sandbox.hostname = result.sandbox.hostname;
        sandbox.namespaces = Array.isArray(result.sandbox.namespaces) ? result.sandbox.namespaces : [];
        // Forgotten, a restarted control plane planned every later container without device
        // rules (the interim: no CAP_MKNOD, nodev mounts) although the helper enforces them.
        sandbox.deviceCgroup = result.sandbox.deviceCgroup === true;
        sandbox.created = true;
        summary.sandbox = true;
      }
      if (cursor === 0) {
        for (const e of result.oomEvents ?? []) core.handleOom(e.containerId, e.seq);
        summary.oomEvents = result.oomEvents?.length ?? 0;
      }
      for (const c of result.containers) records.set(c.containerId, c);
      for (const p of result.processes) {
        const procFds: Record<string, number> = {};
        for (const name of p.fds) {
          const key = `${p.containerId}/${p.execId}/${name}`;
          if (typeof fds[key] === 'number') {
            procFds[name] = fds[key];
            taken.add(key);
          }
        }
        adoptProcess(core, records, p, procFds);
        summary.processes++;
        if (p.exited) summary.exited++;
      }
    } finally {
      closeFds(Object.entries(fds).filter(([k]) => !taken.has(k)).map(([, fd]) => fd));
    }
    if (result.next === undefined) break;
    if (typeof result.next !== 'number' || result.next <= cursor || summary.pages >= MAX_PAGES) {
      throw new StatusError(Code.INTERNAL, `helper state: bad next cursor ${JSON.stringify(result.next)} after ${cursor}`);
    }
    cursor = result.next;
  }
  summary.containers = sandbox.containers.size;
  if (summary.containers > 0 || summary.sandbox) core.log.info({ ...summary }, 'adopted the helper\'s sandbox, containers and processes');
  return summary;
}

function adoptProcess(core: AgentCore, records: Map<string, ContainerState>, p: ProcessState, fds: Record<string, number>): void {
  const sandbox = core.sandbox;
  const terminal = p.terminal === true || 'pty' in fds;
  const haveFds = Object.keys(fds).length > 0;
  let stdio: ProcessStdio;
  let unusable: StatusError | null = null;
  if (haveFds) {
    try {
      stdio = ProcessStdio.fromFds(fds, terminal, { adopted: true });
    } catch (err) {
      // One unusable spool (fromFds closed the fds) must not stop the adoption of everything
      // else: control would exit at every restart. That process's output is lost: DATA_LOSS.
      unusable = err instanceof StatusError ? err : new StatusError(Code.INTERNAL, String(err));
      core.log.error({ err, containerId: p.containerId, execId: p.execId }, 'cannot adopt the stdio of a process: its output is lost');
      stdio = ProcessStdio.ended(terminal);
    }
  } else {
    stdio = ProcessStdio.ended(terminal);
  }
  if (unusable) {
    const reason = unusable.message;
    stdio.outputs().forEach((o, i) => {
      const name = terminal ? 'terminal output' : i === 0 ? 'stdout' : 'stderr';
      o.drop(() => new StatusError(Code.DATA_LOSS, `${name} of process ${JSON.stringify(p.execId === '' ? p.containerId : p.execId)} of container ${p.containerId} was lost at a control-plane restart: its output spool could not be re-opened (${reason})`));
    });
  }
  stdio.outputs().forEach((o, i) => {
    const dropped = o.droppedBefore;
    if (dropped === null) return;
    const name = terminal ? 'terminal output' : i === 0 ? 'stdout' : 'stderr';
    // The budget dropped this output before the restart: reads keep failing DATA_LOSS.
    o.drop(() => dataLossError(name, { execId: p.execId === '' ? p.containerId : p.execId, containerId: p.containerId }, dropped, core.outputBudget.budgetBytes));
  });
  if (p.execId === '') {
    const record = records.get(p.containerId);
    if (!record) {
      stdio.destroy();
      throw new StatusError(Code.INTERNAL, `helper state: init of container ${p.containerId} came before its container record`);
    }
    const plan = (record.plan ?? { process: { terminal } }) as ContainerPlan;
    const init = new Process(p.containerId, p.containerId, true, p.pid, stdio);
    const container = new Container(p.containerId, plan, init);
    container.status = record.status;
    sandbox.addContainer(container);
    if (p.exited && p.exitStatus !== null) settleExit(core, container, init, p.exitStatus);
    else core.applyEarlyExit(container, init);
    return;
  }
  const container = sandbox.containers.get(p.containerId);
  if (!container) {
    stdio.destroy();
    throw new StatusError(Code.INTERNAL, `helper state: exec ${p.execId} came before container ${p.containerId}`);
  }
  const proc = new Process(p.containerId, p.execId, false, p.pid, stdio);
  container.execs.set(p.execId, proc);
  if (p.exited && p.exitStatus !== null) settleExit(core, container, proc, p.exitStatus);
  else core.applyEarlyExit(container, proc);
}

function settleExit(core: AgentCore, container: Container, p: Process, status: number): void {
  if (container.applyExit(p.helperExecId, p.pid, status)) core.outputBudget.add(p);
  core.dropEarlyExit(container.id, p.helperExecId);
}
