// kata-agent-ctl exec/run (control/ctl/attach.ts) against a real stand-alone agent: a person's
// interactive shell through a pty (test/fixtures/pty-drive.py plays the keyboard): raw mode,
// WriteStdin/ReadStdout, TtyWinResize on SIGWINCH, the command's exit status; without -t,
// stdout and stderr apart.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { AgentClient } from '../../control/ctl/client';
import { PROJECT_ROOT, busyboxConfig, startStandaloneAgent, type StandaloneAgent } from '../../scripts/lib/standalone';
import { Code, expectCode, skipReason, testRootfs } from './lib/agent-harness';

const skip = skipReason() ?? (spawnSync('python3', ['-c', 'import pty']).status !== 0 ? 'python3 (with its pty module) is not installed' : undefined);
const ctl = path.join(PROJECT_ROOT, 'bin', 'kata-agent-ctl');
const driver = path.join(PROJECT_ROOT, 'test', 'fixtures', 'pty-drive.py');

type Step = { expect: string } | { send: string } | { resize: [number, number] } | { until: string; send: string };

/** Run kata-agent-ctl ARGS on a pty, playing `steps`; resolves with its output and exit status. */
function onPty(tmp: string, steps: Step[], args: string[]): { output: string; exit?: number; failed?: unknown } {
  const script = path.join(tmp, `steps-${Math.random().toString(16).slice(2)}.json`);
  fs.writeFileSync(script, JSON.stringify(steps));
  const r = spawnSync('python3', [driver, script, '--', ctl, ...args], { encoding: 'utf8', timeout: 120_000 });
  if (!r.stdout) throw new Error(`pty driver failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout) as { output: string; exit?: number; failed?: unknown };
}

if (skip) {
  t.plan(0, skip);
} else {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ctl-tty-'));
  fs.chmodSync(tmp, 0o755);
  let agent: StandaloneAgent | undefined;
  let client: AgentClient | undefined;
  const rootfs = testRootfs(tmp);
  const bundle = path.join(tmp, 'bundle');
  fs.mkdirSync(bundle);
  fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(busyboxConfig(rootfs, ['sleep', '3600'])));

  t.before(async () => {
    agent = await startStandaloneAgent({ runDir: path.join(tmp, 'run'), debug: false });
    client = await AgentClient.connect(agent.address);
    const r = spawnSync(ctl, ['connect', '--server-address', agent.address, '--bundle-dir', bundle, '-c', 'CreateSandbox hostname=box', '-c', 'CreateContainer cid=c1', '-c', 'StartContainer cid=c1'], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`set-up failed: ${r.stderr}`);
  });
  t.teardown(async () => {
    await client?.call('RemoveContainer', { container_id: 'c1', timeout: 10 }).catch(() => undefined);
    await client?.call('DestroySandbox', {}).catch(() => undefined);
    await client?.close();
    await agent?.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  t.test('exec -it: an interactive shell; echo hi; the window size follows SIGWINCH; exit status', async (t) => {
    const r = onPty(tmp, [
      { expect: '# ' },
      // h''i: the shell prints "hi", the terminal's echo of the typed line shows h''i.
      { send: "echo h''i\n" },
      { expect: '\nhi\r' },
      { send: 'stty size; tty\n' },
      { expect: '30 100' },
      { resize: [40, 120] },
      { until: '40 120', send: 'stty size\n' },
      { send: 'exit 7\n' },
    ], ['exec', '-it', '--server-address', agent!.address, 'c1', 'sh']);
    t.notOk(r.failed, `every step came true (${JSON.stringify(r.failed)}): ${r.output}`);
    t.match(r.output, /\r?\nhi\r?\r?\n/, 'the shell in the container ran echo hi');
    t.match(r.output, /\/dev\/pts\/\d+/, 'the process has a terminal');
    t.match(r.output, /30 100/, 'the initial size was sent (TtyWinResize)');
    t.match(r.output, /40 120/, 'the new size after SIGWINCH');
    t.equal(r.exit, 7, "kata-agent-ctl exits with the shell's status");
  });

  t.test('exec without -t: stdout and stderr apart, stdin closed, exit status', async (t) => {
    const r = spawnSync(ctl, ['exec', '--server-address', agent!.address, 'c1', 'sh', '-c', 'cat; echo out; echo err >&2; exit 3'], { encoding: 'utf8', input: 'ignored' });
    t.equal(r.stdout, 'out\n');
    t.equal(r.stderr, 'err\n');
    t.equal(r.status, 3);
    const i = spawnSync(ctl, ['exec', '-i', '--server-address', agent!.address, 'c1', 'sh', '-c', 'tr a-z A-Z'], { encoding: 'utf8', input: 'piped in\n' });
    t.equal(i.stdout, 'PIPED IN\n', '-i: stdin sent, its end closes the process stdin');
    t.equal(i.status, 0);
  });

  t.test('run -t: a container from the bundle on a terminal, removed at its end', async (t) => {
    const r = onPty(tmp, [], ['run', '-t', '--server-address', agent!.address, '--bundle-dir', bundle, '--cid', 'r1', '--', 'sh', '-c', 'tty; stty size; exit 4']);
    t.match(r.output, /\/dev\/pts\/\d+/);
    t.match(r.output, /30 100/);
    t.equal(r.exit, 4);
    await expectCode(t, client!.call('WaitProcess', { container_id: 'r1', exec_id: 'r1' }), Code.NOT_FOUND, 'r1 was removed');
  });

  t.test('usage and agent errors are one line, exit 2 / 1', async (t) => {
    const u = spawnSync(ctl, ['exec', '--server-address', agent!.address, 'c1'], { encoding: 'utf8' });
    t.equal(u.status, 2);
    t.match(u.stderr, /^ERROR: exec needs a container id and a command[^\n]*\n$/, "one line");
    const n = spawnSync(ctl, ['exec', '--server-address', agent!.address, 'nope', 'sh'], { encoding: 'utf8' });
    t.equal(n.status, 1);
    t.equal(n.stderr, 'NOT_FOUND: container "nope" not found\n');
  });
}
