// Adversarial review (restart), with the real helper and real SIGKILLs of the control plane
// (docs/ARCHITECTURE.md "Threat model", adversarial review (restart)):
// - a policy set by SetPolicy is still enforced by the control plane PID 1 / systemd /
//   --standalone starts after a crash (before the fix: forgotten, a policy bypass);
// - a second control plane against a helper whose control plane lives is refused and exits 1,
//   the first keeps serving (before: both adopted the same stdio);
// - after a restart, the adopted init and a new exec still hold only fds 0-2 (no spool, pipe or
//   helper socket of the new control plane reaches the container).
import t from 'tap';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AgentClient } from '../../control/ctl/client';
import { PROJECT_ROOT } from '../../scripts/lib/standalone';
import { AgentHarness, Code, expectCode, skipReason } from './lib/agent-harness';
import { fdsOf, LIST_FDS } from './lib/fds';

const skip = skipReason();

t.test('restart attacks against the real helper', { skip }, async (t) => {
  const h = new AgentHarness('restart-attacks');
  t.teardown(() => h.dispose());
  await h.start('restart-attacks');
  t.teardown(() => {
    if (!t.passing()) t.comment(h.logs());
  });
  const box = await h.run(t, ['sleep', '1000']);

  t.test('a SetPolicy survives a SIGKILL of the control plane', async (t) => {
    await h.client.call('SetPolicy', { policy: JSON.stringify({ rpcs: { GetGuestDetails: 'deny' }, ExecProcess: { commands: ['sh -c .*'] } }) });
    await expectCode(t, h.exec(box, 'p1', ['cat', '/etc/hostname']), Code.PERMISSION_DENIED, 'ExecProcess outside the policy');
    await h.agent.restartControl('SIGKILL');
    h.client = await AgentClient.connect(h.agent.address);
    const err = await expectCode(t, h.exec(box, 'p2', ['cat', '/etc/hostname']), Code.PERMISSION_DENIED, 'still denied by the restarted control plane');
    t.match(err?.message ?? '', /ExecProcess.commands does not allow "cat \/etc\/hostname"/);
    await expectCode(t, h.client.call('GetGuestDetails', {}), Code.PERMISSION_DENIED, 'GetGuestDetails still denied');
    t.ok(h.logs().includes('enforcing the policy kept by the helper'), 'the restarted control plane says so');
  });

  t.test('after a restart, the adopted init and a new exec hold only fds 0-2', async (t) => {
    const exec = await h.execCollect(box, ['sh', '-c', `${LIST_FDS}; echo ===; ls -l /proc/1/fd`]);
    t.equal(exec.status, 0, exec.stderr.toString());
    const [mine = '', init = ''] = exec.stdout.toString().split('===\n');
    for (const [who, listing] of [['a new exec', mine], ['the adopted init', init]] as const) {
      const fds = fdsOf(listing);
      t.same(Object.keys(fds).sort(), ['0', '1', '2'], `${who}: only fds 0-2 (${JSON.stringify(fds)})`);
      for (const [fd, target] of Object.entries(fds)) t.notMatch(target, /memfd|socket|anon_inode/, `${who}: fd ${fd} -> ${target}`);
    }
  });

  t.test('a second control plane on the same helper is refused; the first keeps serving', async (t) => {
    const log: Buffer[] = [];
    const second = spawn(process.execPath, [path.join(PROJECT_ROOT, 'dist', 'control', 'main.js'),
      '--server-address', `unix://${path.join(h.tmp, 'second.sock')}`, '--helper-socket', path.join(h.agent.runDir, 'helper.sock'), '--debug-addr', '', '--log-level', 'info'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    second.stdout!.on('data', (d: Buffer) => log.push(d));
    second.stderr!.on('data', (d: Buffer) => log.push(d));
    const code = await new Promise<number | null>((resolve) => second.once('exit', (c) => resolve(c)));
    const text = Buffer.concat(log).toString();
    t.equal(code, 1, 'the second control plane exits 1');
    t.match(text, /another control plane \(pid \d+\) is connected to this helper/, 'and says why');
    t.notOk(fs.existsSync(path.join(h.tmp, 'second.sock')), 'it never served');
    const out = await h.execCollect(box, ['sh', '-c', 'echo still-here']);
    t.equal(out.stdout.toString(), 'still-here\n', 'the first control plane still serves, with the container\'s stdio');
  });
});
