// Races and limits through the real ttRPC API against stand-alone agents (real helper, busybox
// rootfs), regressions of a review:
// - CreateContainer racing DestroySandbox: only DestroySandbox was answered and the helper kept
//   a parked `kata-init create`;
// - ExecProcess racing RemoveContainer: INVALID_ARGUMENT "ns: opening ipc namespace ...";
// - sandbox_pidns after the first container was removed: INVALID_ARGUMENT;
// - CreateSandbox with an empty sandbox_id: refused by the helper;
// - 4 MiB WriteStdin requests to a process that never reads grew control without bound.
import t from 'tap';
import * as fs from 'node:fs';
import { AgentHarness, Code, codeOf, exitOf, sleep, skipReason, within } from './lib/agent-harness';

/** Pids whose parent is `ppid` ("pid comm"), from /proc. */
function childrenOf(ppid: number): string[] {
  const out: string[] = [];
  for (const pid of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === ppid) out.push(`${pid} ${stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))}`);
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

const skip = skipReason();
if (skip) {
  t.plan(0, skip);
} else {
  t.test('CreateContainer racing DestroySandbox: every request answered, nothing left in the helper', async (t) => {
    for (const gap of [0, 2, 5, 10]) {
      await t.test(`DestroySandbox ${gap} ms after CreateContainer`, async (t) => {
        const h = new AgentHarness('races-destroy');
        t.teardown(() => h.dispose());
        await h.start();
        // An empty sandbox_id is accepted (as upstream) by control and the real helper.
        await h.client.call('CreateSandbox', { sandbox_id: '', hostname: 'racer' });
        const id = h.id('c');
        const create = h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: h.spec(['sleep', '1000']) }).then(
          () => 'ok',
          (err: unknown) => err as Error,
        );
        await sleep(gap);
        const destroy = h.client.call('DestroySandbox', {}).then(
          () => 'ok',
          (err: unknown) => err as Error,
        );
        const [created, destroyed] = await within(Promise.all([create, destroy]), 30_000, 'both answers');
        t.equal(destroyed, 'ok', 'DestroySandbox answered OK');
        t.ok(created === 'ok' || codeOf(created) === Code.FAILED_PRECONDITION, `CreateContainer answered: ${String(created)}`);
        await exitOf(h.agent.control, 10_000);
        t.equal(h.agent.control.exitCode, 0, 'the control plane exited 0 after answering');
        t.same(childrenOf(h.agent.helper.pid!), [], 'the helper has no container process left (no parked kata-init create)');
        const { exits, mounts } = await h.shutdown(false);
        t.equal(exits.helper, 0);
        t.same(mounts, []);
      });
    }
  });

  const h = new AgentHarness('races');
  t.test('shared agent', async (t) => {
    await h.start('racer');
    t.teardown(() => h.dispose());
    t.afterEach(async (tt) => {
      if (!tt.passing()) tt.comment(h.logs());
    });

    await t.test('sandbox_pidns after the first container was removed: FAILED_PRECONDITION "the sandbox pid namespace is gone"', async (t) => {
      const first = await h.run(t, ['sleep', '1000']);
      const second = h.id('c');
      h.removeOnTeardown(t, second);
      await h.client.call('CreateContainer', { container_id: second, exec_id: second, OCI: h.spec(['sleep', '1000']), sandbox_pidns: true });
      t.pass('a container joins the sandbox pid namespace while its owner lives');
      await h.client.call('RemoveContainer', { container_id: first, timeout: 10 });
      const third = h.id('c');
      h.removeOnTeardown(t, third);
      const err = await h.client.call('CreateContainer', { container_id: third, exec_id: third, OCI: h.spec(['true']), sandbox_pidns: true }).then(
        () => null,
        (e: unknown) => e as Error,
      );
      t.equal(codeOf(err), Code.FAILED_PRECONDITION, String(err));
      t.match(err?.message, /the sandbox pid namespace is gone/);
    });

    await t.test('ExecProcess racing RemoveContainer: OK, FAILED_PRECONDITION or NOT_FOUND, never INVALID_ARGUMENT', async (t) => {
      const seen = new Map<string, number>();
      for (const order of ['exec-first', 'remove-first'] as const) {
        for (const gap of [0, 1, 2, 3, 5, 8, 12, 20]) {
          const cid = await h.run(t, ['sleep', '1000']);
          const execId = h.id('x');
          const first = order === 'exec-first' ? h.exec(cid, execId, ['sleep', '1000']) : h.client.call('RemoveContainer', { container_id: cid, timeout: 10 });
          if (gap > 0) await sleep(gap); // 0: both requests leave back to back
          const second = order === 'exec-first' ? h.client.call('RemoveContainer', { container_id: cid, timeout: 10 }) : h.exec(cid, execId, ['sleep', '1000']);
          const [e, r] = order === 'exec-first' ? [first, second] : [second, first];
          const execResult = await e.then(() => 'OK', (err: unknown) => err as Error);
          await r;
          const code = execResult === 'OK' ? 'OK' : String(codeOf(execResult));
          seen.set(code, (seen.get(code) ?? 0) + 1);
          if (process.env.KATA_RACES_VERBOSE) t.comment(`${order} +${gap} ms: ${String(execResult)}`);
          const acceptable = execResult === 'OK' || codeOf(execResult) === Code.FAILED_PRECONDITION || codeOf(execResult) === Code.NOT_FOUND;
          if (!acceptable) t.fail(`${order} +${gap} ms: ExecProcess answered ${String(execResult)}`);
        }
      }
      t.pass(`exec outcomes by code: ${JSON.stringify(Object.fromEntries(seen))}`);
      t.same(h.leftoverProcesses(), [], 'no container or exec process survived its container');
    });

    await t.test('WriteStdin of ~4 MiB to a process that never reads: two wait, the rest RESOURCE_EXHAUSTED; RemoveContainer releases them', async (t) => {
      const cid = await h.run(t, ['sleep', '1000']);
      const data = Buffer.alloc(4 * 1024 * 1024 - 4096, 0x61); // a WriteStdin request just under the 4 MiB ttRPC limit
      const results = Array.from({ length: 12 }, () =>
        h.client.call('WriteStdin', { container_id: cid, exec_id: cid, data }).then(() => 'OK', (err: unknown) => err as Error),
      );
      await sleep(500);
      await h.client.call('RemoveContainer', { container_id: cid, timeout: 10 });
      const outcomes = await within(Promise.all(results), 10_000, 'every WriteStdin answered');
      const exhausted = outcomes.filter((o) => codeOf(o) === Code.RESOURCE_EXHAUSTED);
      const released = outcomes.filter((o) => codeOf(o) === Code.FAILED_PRECONDITION);
      t.equal(exhausted.length, 10, 'beyond 8 MiB waiting: RESOURCE_EXHAUSTED');
      t.match((exhausted[0] as Error).message, /at most 8388608 bytes may wait/);
      t.equal(released.length, 2, 'the two waiting writes fail when the container goes');
    });
  });
}
