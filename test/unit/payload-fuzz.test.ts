// A shortened run of the per-method payload fuzz (test/fuzz/payloads.ts; `npm run
// fuzz:reliability` runs more per method): schema-generated requests for every rpc against a
// real kata-agent with the mock helper. Every call is answered, the agent stays alive and
// serving, and nothing is answered INTERNAL or UNKNOWN (our bugs by the conventions).
import t from 'tap';
import { healthCheck, startControl } from '../fuzz/harness';
import { fuzzPayloads } from '../fuzz/payloads';

t.test('30 generated requests per method (seed 3): answered, no INTERNAL/UNKNOWN, agent serving', async (t) => {
  const control = await startControl();
  t.teardown(() => control.stop());
  const s = await fuzzPayloads(control.address, { perMethod: 30, seed: 3, skip: ['DestroySandbox'] });
  t.comment(JSON.stringify({ calls: s.calls, bugCount: s.bugCount, timeouts: s.timeouts, bugs: s.bugs.slice(0, 10) }));
  t.ok(s.calls > 1000, `${s.calls} calls`);
  t.equal(s.timeouts, 0, 'every call answered within its deadline');
  t.equal(s.bugCount, 0, `no INTERNAL/UNKNOWN answers: ${JSON.stringify(s.bugs.slice(0, 10))}`);
  t.ok(control.alive(), 'control is alive');
  t.ok(await healthCheck(control.address), 'Health.Check answers SERVING');
});
