// The helper's paginated `state` op (docs/ARCHITECTURE.md "Restart and adoption"), against the
// mock helper: more stdio fds than one packet carries come over several pages, every process
// once with its own fds, the container's plan and the sandbox on the first page, exit statuses
// not yet collected; a bad cursor is INVALID_ARGUMENT.
import t from 'tap';
import * as fs from 'node:fs';
import { startMockPair, type MockHelperPair } from '../../helper/mock/main';
import { Code, STATE_PAGE_PROCESSES, type ContainerPlan, type ContainerState, type ProcessState } from '../../shared/protocol';
import { MAX_FDS_PER_PACKET } from '../../shared/channel';
import { closeAll, exitOf, processPlan, rejectsStatus, mockContainerPlan } from '../lib/helper-fixtures';

const plan = mockContainerPlan;

let pair: MockHelperPair;
t.before(async () => {
  pair = await startMockPair();
});
t.teardown(() => pair.close());

t.test('state pages: 30 processes x 3 fds (> 64 per packet) arrive once each, with the sandbox and plans', async (t) => {
  const client = pair.client;
  await client.call('createSandbox', { sandboxId: 'sb-state', hostname: 'h' }).catch((e: Error) => t.fail(`createSandbox: ${e.message}`));
  const c1 = await client.call('createContainer', { containerId: 'st-1', plan: plan(['sleep', '100']) });
  closeAll(c1.fds);
  await client.call('startContainer', { containerId: 'st-1' });
  const exited = exitOf(client, 'st-1', 'e0');
  for (let i = 0; i < 28; i++) {
    const e = await client.call('execProcess', { containerId: 'st-1', execId: `e${i}`, process: processPlan(i === 0 ? ['sh', '-c', 'exit 5'] : ['sleep', '100']) });
    closeAll(e.fds);
  }
  const exit5 = await exited;
  t.equal(exit5.exitStatus, 5);
  const c2 = await client.call('createContainer', { containerId: 'st-2', plan: plan(['sleep', '100']) });
  closeAll(c2.fds);

  const containers: ContainerState[] = [];
  const processes: ProcessState[] = [];
  let cursor = 0;
  let pages = 0;
  let sandboxSeen = 0;
  for (;;) {
    const { result, fds } = await client.call('state', { withFds: true, cursor });
    pages++;
    t.ok(Object.keys(fds).length <= MAX_FDS_PER_PACKET, `page ${pages}: ${Object.keys(fds).length} fds fit one packet`);
    t.ok(result.containers.length <= 1 && result.processes.length <= STATE_PAGE_PROCESSES, `page ${pages}: at most one container record`);
    if (result.sandbox) sandboxSeen++;
    containers.push(...result.containers);
    processes.push(...result.processes);
    for (const p of result.processes) {
      for (const name of p.fds) {
        const fd = fds[`${p.containerId}/${p.execId}/${name}`];
        const kind = name.endsWith('Spool') ? 'memfd' : 'pipe';
        const ok = typeof fd === 'number' && (kind === 'pipe' ? fs.fstatSync(fd).isFIFO() : fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith('/memfd:'));
        t.ok(ok, `${p.containerId}/${p.execId}/${name} is a ${kind}`);
      }
    }
    closeAll(fds);
    if (result.next === undefined) break;
    t.ok(result.next > cursor, 'the cursor advances');
    cursor = result.next;
  }
  t.ok(pages >= 2, `${pages} pages`);
  t.equal(sandboxSeen, 1, 'the sandbox comes once (first page)');
  t.same(containers.map((c) => c.containerId), ['st-1', 'st-2']);
  t.same((containers[0].plan as ContainerPlan).process.args, ['sleep', '100'], 'the plan control sent comes back');
  t.same(containers.map((c) => c.status), ['running', 'created']);
  const keys = processes.map((p) => `${p.containerId}/${p.execId}`);
  t.equal(new Set(keys).size, keys.length, 'no process twice');
  t.equal(keys.length, 1 + 28 + 1, 'every process');
  const e0 = processes.find((p) => p.execId === 'e0');
  t.same([e0?.exited, e0?.exitStatus], [true, 5], 'an exit status not yet collected is in the state');
  t.ok(processes.filter((p) => p.execId !== 'e0').every((p) => p.fds.length === 5 && !p.exited), 'live processes with 5 fds each (3 pipes, 2 spools)');

  const first = await client.call('state', { withFds: false });
  t.same(first.result.sandbox, { sandboxId: 'sb-state', hostname: 'h', namespaces: first.result.sandbox?.namespaces, deviceCgroup: true }, 'sandbox identity');
  await rejectsStatus(t, client.call('state', { withFds: false, cursor: -1 }), Code.INVALID_ARGUMENT, /cursor/);
  await rejectsStatus(t, client.call('state', { withFds: false, cursor: 1.5 }), Code.INVALID_ARGUMENT, /cursor/);
  const past = await client.call('state', { withFds: false, cursor: 10_000 });
  t.same([past.result.containers, past.result.processes, past.result.next], [[], [], undefined], 'a cursor past the end: an empty last page');
  t.equal(first.result.oomEvents, undefined, 'no OOM event kept');
  await rejectsStatus(t, client.call('ackOomEvents', { upTo: -1 }), Code.INVALID_ARGUMENT, /upTo/);
  await rejectsStatus(t, client.call('ackOomEvents', { upTo: 'x' as unknown as number }), Code.INVALID_ARGUMENT, /upTo/);
  t.same((await client.call('ackOomEvents', { upTo: 7 })).result, {}, 'ackOomEvents of nothing kept: OK');
  await client.call('destroySandbox', {});
});
