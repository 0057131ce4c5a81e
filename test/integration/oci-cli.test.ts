// bin/kata-agent-oci (control/ctl/oci.ts) against a real stand-alone agent (helper as root,
// kata-init, busybox rootfs), run as the conformance suite runs it: one process per command,
// the container's stdout/stderr in the files create was given (copied there by the detached
// monitor). create → state(created) → start → state(running, pid alive, in the container's pid
// namespace) → kill → state(stopped) → delete, then run and exec.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { busyboxConfig, PROJECT_ROOT, startStandaloneAgent, type StandaloneAgent } from '../../scripts/lib/standalone';
import { skipReason, testRootfs } from './lib/agent-harness';

const skip = skipReason();
if (skip) {
  t.plan(0, skip);
} else {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'oci-cli-test-'));
  fs.chmodSync(tmp, 0o755);
  const rootfs = testRootfs(tmp);
  const root = path.join(tmp, 'oci-root');
  let agent: StandaloneAgent;
  t.before(async () => {
    // The debug endpoint where `kata-agent --standalone` puts it (next to agent.sock): kata-agent-oci finds it there.
    const runDir = path.join(tmp, 'agent');
    agent = await startStandaloneAgent({ runDir, debugAddr: `unix://${path.join(runDir, 'control', 'debug.sock')}` });
  });
  t.teardown(async () => {
    await agent?.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  const bin = path.join(PROJECT_ROOT, 'bin', 'kata-agent-oci');
  /** Run kata-agent-oci (address from KATA_AGENT_ADDR, as a suite would set it); stdio: fds or 'pipe'. */
  const oci = (args: string[], stdio: Array<number | 'pipe' | 'ignore'> = ['ignore', 'pipe', 'pipe'], input?: string) => {
    const r = spawnSync(process.execPath, [bin, '--root', root, ...args], {
      stdio: stdio as ('pipe' | 'ignore')[],
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, KATA_AGENT_ADDR: agent.address },
      ...(input !== undefined ? { input } : {}),
    });
    return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  };
  const state = (id: string): { status: string; pid?: number; id: string; bundle: string; ociVersion: string; annotations?: Record<string, string> } => {
    const r = oci(['state', id]);
    if (r.status !== 0) throw new Error(`state ${id}: ${r.stderr}`);
    return JSON.parse(r.stdout);
  };
  const waitFor = async (id: string, status: string): Promise<void> => {
    for (let i = 0; i < 200 && state(id).status !== status; i++) await new Promise((r) => setTimeout(r, 50));
  };
  const bundle = (name: string, args: string[], hostname = ''): string => {
    const dir = path.join(tmp, name);
    fs.mkdirSync(dir);
    const config = { ...busyboxConfig(rootfs, args, { hostname, namespaces: [{ type: 'mount' }, { type: 'uts' }, { type: 'ipc' }, { type: 'pid' }] }), annotations: { 'test.key': 'v' } };
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
    return dir;
  };

  t.test('create → created → start → running → kill → stopped → delete; output reaches create\'s files', async (t) => {
    const b = bundle('life', ['sh', '-c', 'echo "pid-in-ns $$"; echo to-stderr >&2; trap "echo got-term; exit 0" TERM; while :; do sleep 0.1; done']);
    const outFile = path.join(b, 'stdout');
    const errFile = path.join(b, 'stderr');
    const out = fs.openSync(outFile, 'w+');
    const err = fs.openSync(errFile, 'w+');
    const pidFile = path.join(b, 'pid');
    const c = oci(['create', '--bundle', b, '--pid-file', pidFile, 'life1'], ['ignore', out, err]);
    fs.closeSync(out);
    fs.closeSync(err);
    t.equal(c.status, 0, `create: ${fs.readFileSync(errFile, 'utf8')}`);

    let s = state('life1');
    t.match(s, { ociVersion: '1.1.0', id: 'life1', status: 'created', bundle: b, annotations: { 'test.key': 'v' } });
    t.ok(s.pid && fs.existsSync(`/proc/${s.pid}`), `created: pid ${s.pid} is a live process on this machine`);
    t.equal(fs.readFileSync(pidFile, 'utf8'), String(s.pid), '--pid-file');
    const nsOfInit = fs.readlinkSync(`/proc/${s.pid}/ns/pid`);
    t.not(nsOfInit, fs.readlinkSync('/proc/self/ns/pid'), 'the pid is the init in its own pid namespace, seen from here');
    t.equal(fs.readFileSync(outFile, 'utf8'), '', 'nothing ran before start');

    t.equal(oci(['start', 'life1']).status, 0, 'start');
    s = state('life1');
    t.equal(s.status, 'running');
    const pid = s.pid!;
    t.ok(fs.existsSync(`/proc/${pid}`), 'running: the pid is alive');
    for (let i = 0; i < 100 && !fs.readFileSync(outFile, 'utf8').includes('pid-in-ns'); i++) await new Promise((r) => setTimeout(r, 50));
    t.equal(fs.readFileSync(outFile, 'utf8'), 'pid-in-ns 1\n', 'stdout went to create\'s stdout file; the init is pid 1 inside');
    t.equal(fs.readFileSync(errFile, 'utf8'), 'to-stderr\n', 'stderr to create\'s stderr file');

    const ps = oci(['ps', '-f', 'json', 'life1']);
    t.ok((JSON.parse(ps.stdout) as number[]).includes(pid), 'ps json lists the init');
    const del = oci(['delete', 'life1']);
    t.equal(del.status, 1, 'delete while running fails');
    t.match(del.stderr, /not stopped: running/);

    t.equal(oci(['kill', 'life1', 'TERM']).status, 0, 'kill TERM');
    await waitFor('life1', 'stopped');
    s = state('life1');
    t.equal(s.status, 'stopped');
    t.equal(s.pid, undefined, 'no pid once stopped');
    t.notOk(fs.existsSync(`/proc/${pid}/ns`), 'the init is gone');
    t.equal(fs.readFileSync(outFile, 'utf8'), 'pid-in-ns 1\ngot-term\n', 'the trap ran: TERM was delivered, output copied to the end');
    t.equal(oci(['kill', 'life1', 'KILL']).status, 1, 'kill of a stopped container: an error (runtime.md#kill) ...');
    t.equal(state('life1').status, 'stopped', '... without effect');

    t.equal(oci(['delete', 'life1']).status, 0, 'delete');
    const gone = oci(['state', 'life1']);
    t.equal(gone.status, 1, 'state after delete fails');
    t.match(gone.stderr, /container "life1" does not exist/);
  });

  t.test('run (attached): output and exit status; exec into a running container', async (t) => {
    const r = oci(['run', '--bundle', bundle('run', ['sh', '-c', 'cat; hostname; exit 5'], 'oci-box'), 'run1'], ['pipe', 'pipe', 'pipe'], 'from-stdin\n');
    t.equal(r.status, 5, `run: the exit status (${r.stderr})`);
    t.equal(r.stdout, 'from-stdin\noci-box\n', 'stdin copied in, output out; the spec\'s hostname (its own uts namespace: the sandbox has another)');
    t.equal(oci(['state', 'run1']).status, 1, 'removed after run');

    const b = bundle('exec', ['sleep', '1000']);
    t.equal(oci(['run', '-d', '-b', b, 'exec1'], ['ignore', 'ignore', 'ignore']).status, 0, 'run -d');
    t.equal(state('exec1').status, 'running');
    const x = oci(['exec', '-e', 'X=1', '--cwd', '/etc', 'exec1', 'sh', '-c', 'echo "$X $(pwd) $$"; exit 4']);
    t.equal(x.status, 4, `exec status (${x.stderr})`);
    t.match(x.stdout, /^1 \/etc \d+\n$/, 'exec output, env and cwd');
    t.notMatch(x.stdout, /^1 \/etc 1\n$/, 'not the init');
    t.equal(oci(['delete', '--force', 'exec1']).status, 0, 'delete --force');
    t.equal(oci(['state', 'exec1']).status, 1);
  });
}
