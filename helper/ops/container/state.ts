/** state: the paged snapshot of containers and processes for a restarted control plane. */
import { Code, StatusError, type ContainerState, HELPER_MAX_PACKET, type ProcessState, type StateArgs, type StateResult, STATE_PAGE_PROCESSES } from '../../../shared/protocol';
import { encodeMessage, MAX_FDS_PER_PACKET } from '../../../shared/channel';
import type { BackendReply, NamedFd } from '../../api';
import type { TrackedProcess } from '../registry';
import { checkArgs } from '../guest-args';
import { checkBoolArg } from './checks';
import type { ContainerContext, ContainerRecord } from './context';

/** What a `state` page leaves of HELPER_MAX_PACKET for the response envelope and fd names' framing. */
export const STATE_PAGE_MARGIN = 2048;

export function encodedSize(v: unknown): number {
  return encodeMessage(v).length;
}

/**
 * One page of the snapshot of containers and processes (StateArgs; docs/ARCHITECTURE.md
 * "Restart and adoption"). The snapshot is the list of every container record, each followed by
 * its processes (init first, then execs in creation order); `cursor` indexes that list. A page
 * holds at most one container record (its plan can be up to a packet), at most
 * STATE_PAGE_PROCESSES processes and, with `withFds`, at most MAX_FDS_PER_PACKET fds (the
 * helper's stdio copies, named "<containerId>/<execId>/<name>", execId "" for the init;
 * ProcessState.fds lists the short names in packet order). `next` is set while more follow;
 * the first page carries the sandbox and the kept OOM events (cursor 0 is that header). A page
 * is also cut before an item that would take it past HELPER_MAX_PACKET (a container's OOM flood
 * and a large plan used to overflow the first page: adoption failed at every restart).
 * INVALID_ARGUMENT for a bad cursor.
 */
export async function state(ctx: ContainerContext, rawArgs: StateArgs): Promise<BackendReply<StateResult>> {
  const args = checkArgs(rawArgs, 'state');
  const withFds = checkBoolArg(args.withFds, 'withFds', false);
  const cursor = args.cursor ?? 0;
  if (typeof cursor !== 'number' || !Number.isInteger(cursor) || cursor < 0) {
    throw new StatusError(Code.INVALID_ARGUMENT, `state: cursor must be a non-negative integer, got ${JSON.stringify(cursor)}`);
  }
  // Item 0 is the page header (sandbox, kept OOM events); a page is cut when the next item
  // would not fit the packet (its first item always goes: a plan came in one packet).
  type Item = { header: true } | { record: ContainerRecord } | { proc: TrackedProcess };
  const items: Item[] = [{ header: true }];
  for (const record of ctx.containers.values()) {
    items.push({ record });
    for (const proc of [record.init, ...record.execs.values()]) items.push({ proc });
  }
  const containers: ContainerState[] = [];
  const processes: ProcessState[] = [];
  const fds: NamedFd[] = [];
  const pageProcs: TrackedProcess[] = [];
  const result: StateResult = { containers, processes };
  const budget = HELPER_MAX_PACKET - STATE_PAGE_MARGIN;
  let bytes = 0;
  let i = Math.min(cursor, items.length);
  for (; i < items.length; i++) {
    const item = items[i];
    const first = i === cursor;
    if ('header' in item) {
      if (ctx.sandbox) result.sandbox = { sandboxId: ctx.sandbox.id, hostname: ctx.sandbox.hostname, namespaces: ctx.sandbox.namespaces, deviceCgroup: ctx.sandbox.deviceCgroup };
      if (ctx.oomPending.length > 0) result.oomEvents = ctx.oomPending.map((e) => ({ ...e }));
      bytes += encodedSize({ sandbox: result.sandbox, oomEvents: result.oomEvents });
      continue;
    }
    if ('record' in item) {
      if (containers.length > 0) break;
      const record = item.record;
      const state: ContainerState = { containerId: record.id, status: statusOf(record), pid: record.init.pid, plan: record.controlPlan };
      const size = encodedSize(state);
      if (!first && bytes + size > budget) break;
      containers.push(state);
      bytes += size;
      continue;
    }
    const proc = item.proc;
    const procFds = withFds ? [...proc.stdio] : [];
    if (processes.length >= STATE_PAGE_PROCESSES || fds.length + procFds.length > MAX_FDS_PER_PACKET) break;
    const names = procFds.map(([name]) => `${proc.containerId}/${proc.execId}/${name}`);
    const state: ProcessState = {
      containerId: proc.containerId,
      execId: proc.execId,
      pid: proc.pid,
      exited: proc.exited,
      exitStatus: proc.exitStatus,
      fds: procFds.map(([name]) => name),
      terminal: proc.stdio.has('pty'),
    };
    const size = encodedSize([state, names]);
    if (!first && bytes + size > budget) break;
    bytes += size;
    procFds.forEach(([, fd], k) => fds.push({ name: names[k], fd }));
    processes.push(state);
    pageProcs.push(proc);
  }
  if (i < items.length) result.next = i;
  const unpin = ctx.registry.fds.pin(fds.map((f) => f.fd));
  // Control knows these processes now: exit events held for them (a create/exec whose answer
  // never reached a control plane that died) flow from here on.
  const onSent = (): void => {
    unpin();
    for (const p of pageProcs) ctx.registry.announce(p);
  };
  return { result, fds, onSent };
}

export function statusOf(record: ContainerRecord): ContainerState['status'] {
  if (record.init.exited) return 'stopped';
  return record.started ? 'running' : 'created';
}
