// A shortened run of the fuzz harness (test/fuzz, `npm run fuzz` sends 1,000,000 frames): a
// fixed seed's generated ttRPC frames against a real kata-agent with the mock helper, then the
// agent must be alive and answer Health.Check. Plus small versions of the memory cases.
import t from 'tap';
import { fuzzFrames, healthCheck, idleConnections, nonReadingClients, startControl } from '../fuzz/harness';

t.test('20,000 fuzzed frames (seed 42): control stays alive and answers Health.Check', async (t) => {
  const control = await startControl({ args: ['--frame-timeout-ms', '500'] });
  t.teardown(() => control.stop());
  const stats = await fuzzFrames(control.address, control.pid, { frames: 20_000, seed: 42, parallel: 4 });
  t.ok(stats.frames >= 20_000, `${stats.frames} frames on ${stats.connections} connections`);
  t.ok(stats.responseBytes > 0, 'the server answered');
  t.ok(control.alive(), 'control is alive');
  t.ok(await healthCheck(control.address), 'Health.Check answers SERVING');
});

t.test('non-reading clients and slowloris connections: control stays alive and serving', async (t) => {
  const control = await startControl({ args: ['--frame-timeout-ms', '300', '--max-connections', '64'] });
  t.teardown(() => control.stop());
  const nr = await nonReadingClients(control.address, control.pid, { clients: 2, durationMs: 1500, settleMs: 100 });
  t.ok(nr.healthDuringLoad, `Health.Check answered while 2 clients did not read (${nr.sent} requests written)`);
  const slow = await idleConnections(control.address, control.pid, { count: 200, holdMs: 1000, partial: true, settleMs: 100 });
  t.equal(slow.closedByServer, 200, 'every half-header connection was refused (cap 64) or timed out');
  t.ok(slow.healthDuringLoad, 'Health.Check answered during the slowloris');
  t.ok(control.alive());
  t.ok(await healthCheck(control.address));
});
