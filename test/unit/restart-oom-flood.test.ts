// Adversarial review (restart): a container that makes its cgroup OOM over and over while no
// GetOOMEvent acks the events (control down, or a client that never asks) fills the helper's
// kept OOM events (1024). They all went on the first `state` page next to the first container's
// plan: with a plan of ~110 KB (a large but legitimate environment) the page exceeded the
// 192 KiB packet, `state` failed RESOURCE_EXHAUSTED, adoption failed and every restarted control
// plane exited 1 — PID 1 powers the VM off after 5 in a minute. Now pages are cut by bytes and
// the kept events are bounded by bytes too, so adoption succeeds and the events are delivered.
import t from 'tap';
import { startMockPair, type MockHelperPair } from '../../helper/mock/main';
import { Code, HELPER_MAX_PACKET, type StatusError } from '../../shared/protocol';
import { encodeMessage } from '../../shared/channel';
import { silentLogger } from '../../shared/log';
import { AgentCore } from '../../control/rpc/core';
import { Sandbox } from '../../control/sandbox/sandbox';
import { adoptFromHelper } from '../../control/rpc/adopt';
import type { CgroupManager } from '../../helper/ops/cgroup';
import { closeAll, mockContainerPlan } from '../lib/helper-fixtures';

let pair: MockHelperPair;
t.before(async () => {
  pair = await startMockPair();
});
t.teardown(() => pair.close());

t.test('1024 kept OOM events and a 110 KB plan: adoption still succeeds, every page fits a packet', async (t) => {
  const client = pair.client;
  await client.call('createSandbox', { sandboxId: 'sb-oom', hostname: 'h' });
  const id = 'a'.repeat(64);
  const plan = mockContainerPlan(['sleep', '100']);
  plan.process.env = [...plan.process.env, ...Array.from({ length: 1100 }, (_, i) => `VAR_${i}=${'v'.repeat(92)}`)];
  plan.cgroup = { path: '/kata/oomy', resources: {} };
  const c = await client.call('createContainer', { containerId: id, plan });
  closeAll(c.fds);
  const other = await client.call('createContainer', { containerId: 'b'.repeat(256), plan: { ...mockContainerPlan(['sleep', '100']), cgroup: { path: '/kata/oomy2', resources: {} } } });
  closeAll(other.fds);
  // The container OOMs at every watch tick; nobody acks.
  let kills = 0;
  (pair.backend.cgroups as CgroupManager).oomKills = () => ++kills;
  for (let i = 0; i < 1100; i++) pair.backend.checkOom();

  let cursor = 0;
  for (;;) {
    const page = await client.call('state', { withFds: true, cursor });
    closeAll(page.fds);
    const size = encodeMessage({ id: 1, ok: true, result: page.result }).length;
    t.ok(size <= HELPER_MAX_PACKET, `page at ${cursor}: ${size} bytes`);
    if (page.result.next === undefined) break;
    cursor = page.result.next;
  }
  const core = new AgentCore({ helper: client, sandbox: new Sandbox(), logger: silentLogger(), defaultRemoveTimeoutMs: 1000, maxExitedRecords: 16 });
  const summary = await adoptFromHelper(core);
  t.equal(summary.containers, 2, 'both containers adopted');
  t.ok(summary.oomEvents > 200, `${summary.oomEvents} kept OOM events delivered to the new control plane`);
  for (const ctr of core.sandbox.containers.values()) ctr.init.stdio.destroy();
});

t.test('a plan that fits a createContainer packet but not a state page is refused at create, not at every restart', async (t) => {
  const client = pair.client;
  const base = mockContainerPlan(['sleep', '100']);
  // grow the environment until the createContainer request is a few bytes below the packet limit
  const request = (env: string[]) => encodeMessage({ id: 1, op: 'createContainer', args: { containerId: 'big-plan', plan: { ...base, process: { ...base.process, env } } } }).length;
  const env = [...base.process.env];
  while (request([...env, `F=${'f'.repeat(4000)}`]) < HELPER_MAX_PACKET - 100) env.push(`F=${'f'.repeat(4000)}`);
  env.push(`G=${'g'.repeat(HELPER_MAX_PACKET - 40 - request([...env, 'G=']))}`);
  t.ok(request(env) <= HELPER_MAX_PACKET && request(env) > HELPER_MAX_PACKET - 60, `the request is ${request(env)} bytes (packet: ${HELPER_MAX_PACKET})`);
  const plan = { ...base, process: { ...base.process, env } };
  const err = await client.call('createContainer', { containerId: 'big-plan', plan }).then(
    (r) => {
      closeAll(r.fds);
      return null;
    },
    (e: unknown) => e as StatusError,
  );
  t.equal(err?.code, Code.RESOURCE_EXHAUSTED, `refused: ${err?.message}`);
  t.match(err?.message ?? '', /larger than a state page holds/);
  const core = new AgentCore({ helper: client, sandbox: new Sandbox(), logger: silentLogger(), defaultRemoveTimeoutMs: 1000, maxExitedRecords: 16 });
  const summary = await adoptFromHelper(core);
  t.ok(summary.pages >= 1, 'a restarted control plane still adopts');
  for (const ctr of core.sandbox.containers.values()) ctr.init.stdio.destroy();
});
