// Adversarial review (restart): a container that makes its cgroup OOM over and over while no
// GetOOMEvent acks the events (control down, or a client that never asks) fills the helper's
// kept OOM events (1024). They all went on the first `state` page next to the first container's
// plan: with a plan of ~110 KB (a large but legitimate environment) the page exceeded the
// 192 KiB packet, `state` failed RESOURCE_EXHAUSTED, adoption failed and every restarted control
// plane exited 1 — PID 1 powers the VM off after 5 in a minute. Now pages are cut by bytes and
// the kept events are bounded by bytes too, so adoption succeeds and the events are delivered.
import t from 'tap';
import { startMockPair, type MockHelperPair } from '../../helper/mock/main';
import { HELPER_MAX_PACKET } from '../../shared/protocol';
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
