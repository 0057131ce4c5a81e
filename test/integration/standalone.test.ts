// `kata-agent --standalone` (control/standalone.ts): the README's by-hand block, pasted as is
// (paths moved to a temporary directory), works without a race; the address is printed only
// once the agent serves; SIGTERM stops both daemons; their logs go to files with the fields
// upstream's log readers expect.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { AgentClient } from '../../control/ctl/client';
import { PROJECT_ROOT, busyboxConfig } from '../../scripts/lib/standalone';
import { skipReason, testRootfs } from './lib/agent-harness';

const skip = skipReason();
if (skip) {
  t.plan(0, skip);
} else {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'standalone-test-'));
  fs.chmodSync(tmp, 0o755);
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

  t.test("the README's by-hand block runs as pasted", async (t) => {
    const readme = fs.readFileSync(path.join(PROJECT_ROOT, 'README.md'), 'utf8');
    const m = /<!-- by-hand:begin[^>]*-->\n```sh\n([\s\S]*?)```\n<!-- by-hand:end -->/.exec(readme);
    if (!m) throw new Error('README.md has no by-hand block');
    const runDir = path.join(tmp, 'run');
    const bundle = path.join(tmp, 'bundle');
    // make-bundle would copy a busybox rootfs: point config.json at the test one instead.
    const rootfs = testRootfs(tmp);
    const block = m[1]
      .replaceAll('/tmp/bundle', bundle)
      .replaceAll('/run/kata-agent-standalone', runDir)
      .replace('--standalone &', `--standalone --run-dir ${runDir} &`)
      .replace(/^scripts\/make-bundle .*$/m, `mkdir -p ${bundle} && node -e "require('fs').writeFileSync('${bundle}/config.json', JSON.stringify(require('./dist/scripts/lib/standalone.js').busyboxConfig('${rootfs}', ['sh', '-c', 'echo hello from \\$(hostname)'])))"`);
    t.match(block, `--run-dir ${runDir} &`, 'the block starts the agent in the background');
    // On a failure, stop the background agent (else it would hold the pipes until the timeout).
    const r = spawnSync('sh', ['-e', '-c', `trap 'kill $! 2>/dev/null || true; wait' EXIT\n${block}`], { cwd: PROJECT_ROOT, encoding: 'utf8', timeout: 120_000 });
    t.equal(r.status, 0, `the block succeeds; stderr: ${r.stderr}`);
    t.match(r.stdout, new RegExp(`^kata-agent: serving unix://${runDir}/control/agent.sock$`, 'm'), 'the address is printed');
    t.match(r.stdout, /hello from box/, 'the container ran');
    t.match(r.stdout, /kata-agent: stopped \(control plane ended: exit status 0/, 'the agent stopped after DestroySandbox');
    const raw = fs.readFileSync(path.join(runDir, 'control.log'), 'utf8').trim().split('\n');
    // (Under tap, @tapjs/processinfo's exit hook in the uid-65534 child may append an EACCES
    // stack trace: a test artefact, so only the JSON lines are looked at.)
    const lines = raw.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    const announce = lines.find((l) => l.msg === 'announce');
    t.match(announce, { level: 'info', name: 'kata-agent', subsystem: 'root', source: 'agent', pid: Number }, 'control log fields');
    t.match(String(announce?.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/, 'time is RFC 3339');
    const helperLine = JSON.parse(fs.readFileSync(path.join(runDir, 'helper.log'), 'utf8').split('\n')[0]) as Record<string, unknown>;
    t.match(helperLine, { name: 'kata-agent', subsystem: 'helper', level: String });
  });

  t.test('the address is printed only once the agent serves; SIGTERM stops both', async (t) => {
    const runDir = path.join(tmp, 'run2');
    fs.writeFileSync(path.join(tmp, 'agent.toml'), 'hotplug_timeout = { secs = 4, nanos = 0 }\n');
    const child = spawn(path.join(PROJECT_ROOT, 'bin', 'kata-agent'), ['--standalone', '--run-dir', runDir, '-c', path.join(tmp, 'agent.toml')], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    let out = '';
    const address = await new Promise<string>((resolve, reject) => {
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (chunk: string) => {
        out += chunk;
        const a = /serving (\S+)/.exec(out);
        if (a) resolve(a[1]);
      });
      child.once('exit', (code) => reject(new Error(`kata-agent exited ${code}: ${out}`)));
    });
    // No retry here: one connection attempt right after the line.
    const client = await AgentClient.connect(address, { connectTimeoutMs: 2000 });
    t.match(await client.call('Check', { service: '' }), { status: 1 }, 'Check answers SERVING');
    client.close();
    const helperCmd = spawnSync('ps', ['-o', 'args=', '--ppid', String(child.pid)], { encoding: 'utf8' }).stdout;
    t.match(helperCmd, /--hotplug-timeout-ms 4000/, 'the hotplug timeout of the config reaches the helper');
    t.match(out, new RegExp(`logs: ${runDir}/control.log ${runDir}/helper.log`), 'says where the logs are');
    child.kill('SIGTERM');
    t.equal(await exited, 0, 'exit 0 after SIGTERM');
    t.notOk(fs.existsSync(path.join(runDir, 'helper.sock')), 'the helper removed its socket');
  });

  t.test('a control plane killed with SIGKILL is started again and adopts the running container', async (t) => {
    const runDir = path.join(tmp, 'run3');
    const bundle = path.join(tmp, 'bundle3');
    fs.mkdirSync(bundle);
    const loop = 'i=0; while :; do echo line $i; i=$((i+1)); sleep 0.05; done';
    fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(busyboxConfig(testRootfs(tmp), ['sh', '-c', loop])));
    const child = spawn(path.join(PROJECT_ROOT, 'bin', 'kata-agent'), ['--standalone', '--run-dir', runDir], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    let out = '';
    const seen = (re: RegExp): Promise<RegExpExecArray> =>
      new Promise((resolve, reject) => {
        const check = (): boolean => {
          const m = re.exec(out);
          if (m) resolve(m);
          return m !== null;
        };
        if (check()) return;
        const onData = (): void => {
          if (check()) child.stdout.off('data', onData);
        };
        child.stdout.on('data', onData);
        child.once('exit', (code) => reject(new Error(`kata-agent exited ${code}: ${out}`)));
      });
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => (out += chunk));
    const address = (await seen(/serving (\S+)/))[1];
    const ctl = (cmds: string[]): string => {
      const r = spawnSync(path.join(PROJECT_ROOT, 'bin', 'kata-agent-ctl'), ['connect', '--server-address', address, '--bundle-dir', bundle, ...cmds.flatMap((c) => ['-c', c])], { encoding: 'utf8', timeout: 60_000 });
      t.equal(r.status, 0, `kata-agent-ctl ${cmds.join(' ')}: ${r.stderr}`);
      return r.stdout;
    };
    const first = ctl(['CreateSandbox hostname=box', 'CreateContainer cid=w1', 'StartContainer cid=w1', 'ReadStdout cid=w1 len=20']);
    t.match(first, /line 0/, 'output before the kill');
    const controlPid = Number(spawnSync('pgrep', ['-P', String(child.pid), '-f', 'bin/kata-agent( |$)'], { encoding: 'utf8' }).stdout.trim());
    t.ok(controlPid > 0, `control plane pid ${controlPid}`);
    process.kill(controlPid, 'SIGKILL');
    await seen(/control plane restarted \(pid (\d+)\)/);
    const after = ctl(['ReadStdout cid=w1 len=200']);
    const numbers = [...(first + after).matchAll(/line (\d+)/g)].map((m) => Number(m[1]));
    t.same(numbers, numbers.map((_, i) => i), `every line once, in order, across the restart (${numbers.length} lines)`);
    const end = ctl(['SignalProcess cid=w1', 'WaitProcess cid=w1', 'RemoveContainer cid=w1', 'DestroySandbox']);
    t.match(end, /status/, 'the adopted container is waited for');
    t.equal(await exited, 0, 'the agent stops after DestroySandbox (exit 0)');
    t.match(out, /kata-agent: stopped \(control plane ended: exit status 0/);
  });
}
