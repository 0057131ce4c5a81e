// Adversarial review 6: a restarted control plane adopting from the helper meets an output spool
// whose header is not one (a bug or memory corruption in the previous control plane; the memfd
// is only ever written by control). Before the fix the INTERNAL error of that one spool made
// adoptFromHelper throw, Agent.start failed and control exited at every restart: no container of
// the sandbox could be managed any more. Now that process's output streams answer DATA_LOSS
// naming the stream, and everything else is adopted.
import t from 'tap';
import * as fs from 'node:fs';
import { startMockPair, type MockHelperPair } from '../../helper/mock/main';
import { Code, StatusError } from '../../shared/protocol';
import { silentLogger } from '../../shared/log';
import { AgentCore } from '../../control/rpc/core';
import { Sandbox } from '../../control/sandbox/sandbox';
import { adoptFromHelper } from '../../control/rpc/adopt';
import { closeAll, mockContainerPlan } from '../lib/helper-fixtures';

let pair: MockHelperPair;
t.before(async () => {
  pair = await startMockPair();
});
t.teardown(() => pair.close());

t.test('a corrupt spool header: that stream is DATA_LOSS, the rest of the sandbox is adopted', async (t) => {
  const client = pair.client;
  await client.call('createSandbox', { sandboxId: 'sb-corrupt', hostname: 'h' });
  const bad = await client.call('createContainer', { containerId: 'bad', plan: mockContainerPlan(['sh', '-c', 'echo lost; sleep 100']) });
  const good = await client.call('createContainer', { containerId: 'good', plan: mockContainerPlan(['sleep', '100']) });
  // what a broken control plane could leave: a data page and a header without the magic
  const spoolFd = bad.fds.stdoutSpool;
  t.type(spoolFd, 'number', 'the helper hands out a stdout spool');
  fs.ftruncateSync(spoolFd, 8192);
  fs.writeSync(spoolFd, Buffer.from('garbage!garbage!garbage!'), 0, 24, 0);
  closeAll(bad.fds);
  closeAll(good.fds);

  const core = new AgentCore({ helper: client, sandbox: new Sandbox(), logger: silentLogger(), defaultRemoveTimeoutMs: 1000, maxExitedRecords: 16 });
  const summary = await adoptFromHelper(core);
  t.equal(summary.containers, 2, 'both containers adopted');
  t.ok(core.sandbox.containers.has('good') && core.sandbox.containers.has('bad'));
  const init = core.sandbox.containers.get('bad')?.init;
  const err = await init?.stdio.stdout.read(1024).then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(err instanceof StatusError && err.code === Code.DATA_LOSS, `stdout of the corrupt spool fails DATA_LOSS (got ${String(err)})`);
  t.match(String((err as Error).message), /stdout.*bad.*spool/, 'the error names the stream, the container and the spool');
  const goodInit = core.sandbox.containers.get('good')?.init;
  t.equal(goodInit?.stdio.terminal, false, 'the other container has its stdio');
  for (const c of core.sandbox.containers.values()) c.init.stdio.destroy();
});
