// A helper that stops answering (security review item 1): a container could `kill -STOP` the
// helper, and every Create/Start/Exec/Remove then hung forever. With the real helper and the
// stand-alone agent (default bounds: a call pending 5 s makes control ping the helper, no answer
// within 3 s declares it unresponsive): an rpc answers UNAVAILABLE "the helper is not
// answering" within the bound; after SIGCONT things work again.
import t from 'tap';
import { AgentHarness, Code, expectCode, skipReason, within } from './lib/agent-harness';

const skip = skipReason();
if (skip) {
  t.plan(0, skip);
} else {
  t.test('helper stopped by SIGSTOP: rpcs answer UNAVAILABLE within the bound; after SIGCONT they work again', async (t) => {
    const h = new AgentHarness('helper-liveness');
    t.teardown(async () => {
      h.agent?.helper.kill('SIGCONT');
      await h.dispose();
    });
    await h.start('liveness');
    const cid = await h.run(t, ['sleep', '1000']);
    const helperPid = h.agent.helper.pid!;

    t.ok(process.kill(helperPid, 'SIGSTOP') === true, `helper ${helperPid} stopped`);
    // Bound: 5 s until the ping + 3 s ping deadline; 30 s here only turns a hang into a failure.
    const pending = await within(expectCode(t, h.exec(cid, 'while-stopped', ['echo', 'x']), Code.UNAVAILABLE, 'ExecProcess while the helper is stopped'), 30_000, 'ExecProcess');
    t.match(pending?.message ?? '', /the helper is not answering/);
    const next = await within(
      expectCode(t, h.client.call('SignalProcess', { container_id: cid, exec_id: '', signal: 0 }), Code.UNAVAILABLE, 'a later rpc needing the helper'),
      30_000,
      'SignalProcess',
    );
    t.match(next?.message ?? '', /the helper is not answering/);
    const stillServed = await h.client.call('Check', { service: '' });
    t.ok(stillServed, 'control itself keeps serving rpcs that do not need the helper');

    t.ok(process.kill(helperPid, 'SIGCONT') === true, 'helper continued');
    const out = await within(h.execCollect(cid, ['echo', 'back again']), 30_000, 'exec after SIGCONT');
    t.equal(out.stdout.toString(), 'back again\n', 'an exec after SIGCONT runs and its output arrives');
    t.equal(out.status, 0);
  });
}
