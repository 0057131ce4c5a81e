// kata-agent-ctl oci / kata-agent-oci without privileges: the command line (runc's spelling,
// global flags, usage errors), the state JSON (OCI runtime-spec runtime.md#state), and the
// lifecycle create → state → start → kill → delete, run and exec against the mock agent (whose
// helper runs container processes as host processes) with its debug endpoint on a unix socket.
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { buildDebugServer } from '../../control/debug/server';
import { ociMain, type OciIo } from '../../control/ctl/oci';
import { DEFAULT_AGENT_ADDRESS, debugAddressFor, OciUsageError, parseOciCommandLine } from '../../control/ctl/oci-args';
import { buildState, pidAlive, userName, type OciRecord } from '../../control/ctl/oci-state';
import { main } from '../../control/ctl/main';
import { startMockAgent } from '../lib/mock-agent';
import { table } from '../../scripts/conformance';

t.test('command line: runc spelling, globals, env, defaults', async (t) => {
  const p = (argv: string[], env: NodeJS.ProcessEnv = {}) => parseOciCommandLine(argv, env);
  let r = p(['create', '--bundle', '/b', '--pid-file=/p', 'c1']);
  t.same(r.command, { kind: 'create', id: 'c1', bundle: '/b', pidFile: '/p', consoleSocket: '' });
  t.equal(r.globals.address, DEFAULT_AGENT_ADDRESS, 'default: the stand-alone agent');
  t.equal(r.globals.root, '/run/kata-agent-oci');
  t.same(p(['create', 'c1']).command, { kind: 'create', id: 'c1', bundle: '.', pidFile: '', consoleSocket: '' }, 'bundle defaults to the cwd');
  t.same(p(['create', '-b', 'x', 'c1']).command.kind, 'create');
  t.same(p(['create', '--preserve-fds', '0', '--no-pivot', 'c1']).command.kind, 'create', 'harmless runc create options accepted');

  r = p(['--root', '/r', '--log', '/l', '--log-format', 'json', '--debug', '--systemd-cgroup', '--criu', '/x', 'state', 'c1'], { KATA_AGENT_ADDR: 'unix:///a/agent.sock' });
  t.same(r.globals, { address: 'unix:///a/agent.sock', debugAddress: '', root: '/r', logFile: '/l', logFormat: 'json' }, 'runc globals accepted, the address from the environment');
  t.equal(debugAddressFor(r.globals), 'unix:///a/debug.sock', 'debug endpoint next to a unix agent socket');
  t.equal(p(['--address', 'vsock://3:1024', 'state', 'c1']).globals.address, 'vsock://3:1024', '--address beats the default');
  t.equal(debugAddressFor(p(['--address', 'vsock://3:1024', 'state', 'c1']).globals), '', 'no debug endpoint guessed for vsock');
  t.equal(debugAddressFor(p(['--debug-address', '127.0.0.1:9', 'state', 'c1'], { KATA_AGENT_DEBUG_ADDR: 'unix:///x' }).globals), '127.0.0.1:9');

  t.same(p(['kill', 'c1', 'KILL']).command, { kind: 'kill', id: 'c1', signal: 'KILL', all: false }, 'runtime-tools: kill ID SIGNAL');
  t.same(p(['kill', 'c1']).command, { kind: 'kill', id: 'c1', signal: 'TERM', all: false }, 'default TERM');
  t.same(p(['kill', '--all', '--signal', '9', 'c1']).command, { kind: 'kill', id: 'c1', signal: '9', all: true });
  t.same(p(['delete', '-f', 'c1']).command, { kind: 'delete', id: 'c1', force: true });
  t.same(p(['exec', '-dt', '-e', 'A=1', '--env=B=2', '--cwd', '/tmp', '-u', '1:2', 'c1', 'ls', '-l']).command, {
    kind: 'exec', id: 'c1', args: ['ls', '-l'], detach: true, tty: true, cwd: '/tmp', env: ['A=1', 'B=2'], user: '1:2', pidFile: '',
  }, 'exec: the command\'s own options stay the command\'s');
  t.same(p(['ps', '-f', 'json', 'c1']).command, { kind: 'ps', id: 'c1', format: 'json', psArgs: [] });
  t.same(p(['run', '-d', '-b', '/b', 'c1']).command, { kind: 'run', id: 'c1', bundle: '/b', pidFile: '', detach: true, consoleSocket: '' });

  for (const [argv, re] of [
    [['create'], /create: need a container id/],
    [['state', 'a', 'b'], /unexpected argument "b"/],
    [['frobnicate', 'c1'], /unknown command "frobnicate"/],
    [['create', '--nope', 'c1'], /unknown option "--nope"/],
    [['--bogus', 'state', 'c1'], /unknown global option "--bogus"/],
    [['state', '../x'], /invalid container id "..\/x"/],
    [['exec', 'c1'], /need a command/],
    [['exec', '-e', 'NOEQ', 'c1', 'ls'], /invalid environment entry "NOEQ"/],
    [['ps', '-f', 'yaml', 'c1'], /want table or json/],
    [['--log-format', 'xml', 'state', 'c1'], /want text or json/],
    [['create', '--pid-file'], /needs a value/],
    [['create', '--preserve-fds', '2', 'c1'], /--preserve-fds "2": extra fds cannot be passed/],
    [['exec', '--console-socket', '/s', 'c1', 'sh'], /exec: --console-socket is not supported/],
  ] as const) {
    t.throws(() => p([...argv]), { constructor: OciUsageError, message: re }, argv.join(' '));
  }
});

t.test('state JSON: runtime.md#state fields from the record and the agent view, plus runc\'s rootfs, created, owner', async (t) => {
  const created = '2026-12-02T12:00:00.000Z';
  const record: OciRecord = { id: 'c1', bundle: '/b', annotations: { k: 'v' }, ociVersion: '1.0.2', rootfs: '/b/rootfs', created, monitorPid: 0 };
  const view = (status: 'created' | 'running' | 'stopped') => ({ id: 'c1', status, pid: 42, processes: [] });
  const extra = { rootfs: '/b/rootfs', created, owner: 'root' };
  t.same(buildState(record, view('created'), null, 'root'), { ociVersion: '1.0.2', id: 'c1', status: 'created', pid: 42, bundle: '/b', annotations: { k: 'v' }, ...extra });
  t.same(buildState(record, view('running'), null, 'root'), { ociVersion: '1.0.2', id: 'c1', status: 'running', pid: 42, bundle: '/b', annotations: { k: 'v' }, ...extra });
  const stopped = buildState(record, view('stopped'), null, 'root');
  t.same(stopped, { ociVersion: '1.0.2', id: 'c1', status: 'stopped', bundle: '/b', annotations: { k: 'v' }, ...extra }, 'no pid once stopped');
  t.notOk('pid' in stopped, 'no pid key at all once stopped (runtime.md: only while created or running)');
  t.same(buildState(record, view('running'), { status: 0, exited: 'x' }).status, 'stopped', 'the monitor saw the exit');
  t.same(buildState(record, null, null).status, 'stopped', 'unknown to the agent (restarted): stopped');
  t.same(Object.keys(buildState(record, view('running'), null, 'root')), ['ociVersion', 'id', 'pid', 'status', 'bundle', 'rootfs', 'created', 'annotations', 'owner'],
    'keys in the order runc prints them (runc list.go containerState)');
  const bare = buildState({ ...record, annotations: {}, ociVersion: '' }, view('created'), null);
  t.same(bare, { ociVersion: '1.1.0', id: 'c1', status: 'created', pid: 42, bundle: '/b', rootfs: '/b/rootfs', created, owner: '' },
    'no annotations key when there are none; our version when config.json has none');
  const { rootfs: _unused, ...old } = record;
  t.equal(buildState(old, view('created'), null).rootfs, '', 'a record of an older version (no rootfs): ""');
});

t.test('owner names: passwd(5) lookup, runc\'s #uid when unknown', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-oci-passwd-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const passwd = path.join(dir, 'passwd');
  fs.writeFileSync(passwd, 'root:x:0:0:root:/root:/bin/sh\nbad line\n:x:7:7::/:/bin/false\nalice:x:1000:1000::/home/alice:/bin/sh\n');
  t.equal(userName(0, passwd), 'root');
  t.equal(userName(1000, passwd), 'alice');
  t.equal(userName(7, passwd), undefined, 'an entry without a name is no name');
  t.equal(userName(5, passwd), undefined, 'unknown uid');
  t.equal(userName(0, path.join(dir, 'none')), undefined, 'no passwd file');
});

/** A mock agent with its debug endpoint, a bundle dir and a root dir; `cli(argv)` runs kata-agent-oci. */
async function setup(t: Test) {
  const m = await startMockAgent(t, { prefix: 'kata-oci-cli-' });
  const debugSock = path.join(m.dir, 'debug.sock');
  const app = buildDebugServer(m.agent.sandbox);
  await app.listen({ path: debugSock });
  t.teardown(() => app.close());
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-oci-cli-work-'));
  t.teardown(() => fs.rmSync(work, { recursive: true, force: true }));
  /** A bundle running `args`; `extra` keys replace top-level keys, `extra.linux` keys are merged into linux. */
  const bundle = (name: string, args: string[], annotations?: Record<string, string>, extra: Record<string, unknown> = {}): string => {
    const dir = path.join(work, name);
    fs.mkdirSync(dir);
    const config = {
      ociVersion: '1.0.2',
      process: { terminal: false, user: { uid: 0, gid: 0 }, args, env: ['PATH=/usr/bin:/bin'], cwd: '/' },
      root: { path: '/run/kata-test/rootfs' }, // the mock helper runs on the host and ignores it
      ...(annotations ? { annotations } : {}),
      ...extra,
      linux: { namespaces: [{ type: 'mount' }, { type: 'pid' }], ...((extra.linux as object | undefined) ?? {}) },
    };
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
    return dir;
  };
  const globals = ['--address', m.address, '--debug-address', `unix://${debugSock}`, '--root', path.join(work, 'root')];
  const cli = async (argv: string[], stdin = ''): Promise<{ status: number; stdout: string; stderr: string }> => {
    let stdout = '';
    let stderr = '';
    const out = new PassThrough();
    const err = new PassThrough();
    out.on('data', (d: Buffer) => (stdout += d.toString()));
    err.on('data', (d: Buffer) => (stderr += d.toString()));
    const io: OciIo = {
      stdout: (s) => (stdout += s),
      stderr: (s) => (stderr += s),
      attach: { stdin: Readable.from(stdin === '' ? [] : [Buffer.from(stdin)]), stdout: out, stderr: err, onSignal: () => () => undefined },
      startMonitor: () => 0, // the monitor is a detached process of its own: the integration test runs it
    };
    const status = await ociMain([...globals, ...argv], io);
    return { status, stdout, stderr };
  };
  const state = async (id: string) => {
    const r = await cli(['state', id]);
    t.equal(r.status, 0, `state ${id}: ${r.stderr}`);
    return JSON.parse(r.stdout) as {
      ociVersion: string; id: string; status: string; pid?: number; bundle: string; annotations?: Record<string, string>; rootfs: string; created: string; owner: string;
    };
  };
  const until = async (cond: () => Promise<boolean>): Promise<void> => {
    for (let i = 0; i < 500 && !(await cond()); i++) await new Promise((r) => setTimeout(r, 10));
  };
  return { m, work, bundle, cli, state, until };
}

t.test('lifecycle: create → created (pid alive) → start → running → kill → stopped → delete → gone', async (t) => {
  const { bundle, cli, state, until, work } = await setup(t);
  const b = bundle('sleeper', ['sleep', '60'], { 'org.example/key': 'value' });
  const pidFile = path.join(work, 'pid');
  let r = await cli(['create', '--bundle', b, '--pid-file', pidFile, 'c1']);
  t.equal(r.status, 0, `create: ${r.stderr}`);
  const before = Date.now();
  let s = await state('c1');
  const uid = process.getuid?.() ?? 0;
  const fixed = { rootfs: '/run/kata-test/rootfs', created: s.created, owner: userName(uid) ?? `#${uid}` };
  t.same({ ...s, pid: undefined }, { ociVersion: '1.0.2', id: 'c1', status: 'created', pid: undefined, bundle: b, annotations: { 'org.example/key': 'value' }, ...fixed },
    'state: the spec fields, and rootfs (config.json root.path), owner (of the state directory)');
  t.match(s.created, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/, 'created: RFC 3339 UTC');
  t.ok(Math.abs(Date.parse(s.created) - before) < 60_000, `created is the create time (${s.created})`);
  t.ok(s.pid !== undefined && s.pid > 0 && pidAlive(s.pid), `created: pid ${s.pid} is a live process`);
  t.equal(fs.readFileSync(pidFile, 'utf8'), String(s.pid), '--pid-file holds the pid');

  r = await cli(['create', '--bundle', b, 'c1']);
  t.equal(r.status, 1, 'a second create of the same id fails');
  t.match(r.stderr, /container with id exists: c1/);

  t.equal((await cli(['start', 'c1'])).status, 0, 'start');
  s = await state('c1');
  t.equal(s.status, 'running');
  t.ok(s.pid !== undefined && pidAlive(s.pid), 'running: pid alive');
  const pid = s.pid!;

  r = await cli(['delete', 'c1']);
  t.equal(r.status, 1, 'delete of a running container fails');
  t.match(r.stderr, /cannot delete container c1 that is not stopped: running/);
  t.equal((await state('c1')).status, 'running', 'and has no effect');

  r = await cli(['kill', 'c1', 'NOSUCHSIG']);
  t.equal(r.status, 1, 'an unknown signal name fails');
  t.match(r.stderr, /invalid signal name: "NOSUCHSIG"/);
  t.equal((await cli(['kill', 'c1', 'KILL'])).status, 0, 'kill KILL');
  await until(async () => (await state('c1')).status === 'stopped');
  s = await state('c1');
  t.same(s, { ociVersion: '1.0.2', id: 'c1', status: 'stopped', bundle: b, annotations: { 'org.example/key': 'value' }, ...fixed }, 'stopped, no pid');
  t.notOk(pidAlive(pid), 'the process is gone');
  r = await cli(['kill', 'c1', 'KILL']);
  t.equal(r.status, 1, 'kill of a stopped container fails (runtime.md#kill)');
  t.match(r.stderr, /container c1 is not running/);
  t.same(await state('c1'), s, 'without effect');

  t.equal((await cli(['delete', 'c1'])).status, 0, 'delete');
  for (const cmd of [['state', 'c1'], ['start', 'c1'], ['kill', 'c1'], ['delete', 'c1'], ['ps', 'c1']]) {
    r = await cli(cmd);
    t.equal(r.status, 1, `${cmd[0]} after delete fails`);
    t.match(r.stderr, /^kata-agent-oci: container "c1" does not exist\n$/, `${cmd[0]}: runc's words`);
  }
});

t.test('delete --force of a running container, of a created one; ps', async (t) => {
  const { bundle, cli, state } = await setup(t);
  const b = bundle('s', ['sleep', '60']);
  t.equal((await cli(['create', '-b', b, 'c2'])).status, 0);
  const refused = await cli(['delete', 'c2']);
  t.equal(refused.status, 1, 'delete of a created container fails (runtime.md#delete; runc 1.1 deletes it)');
  t.match(refused.stderr, /cannot delete container c2 that is not stopped: created/);
  t.equal((await state('c2')).status, 'created', 'without effect');
  t.equal((await cli(['delete', '--force', 'c2'])).status, 0, 'delete --force of a created container');
  t.equal((await cli(['state', 'c2'])).status, 1, 'gone');

  t.equal((await cli(['run', '-d', '-b', b, 'c3'])).status, 0, 'run -d');
  const s = await state('c3');
  t.equal(s.status, 'running');
  const ps = await cli(['ps', '--format', 'json', 'c3']);
  t.same(JSON.parse(ps.stdout), [s.pid], 'ps json: the init\'s pid');
  const table = await cli(['ps', 'c3']);
  t.match(table.stdout, /^UID\s+PID/, 'ps table: ps -ef header');
  t.match(table.stdout, new RegExp(`^\\S+\\s+${s.pid}\\s`, 'm'), 'and the init\'s row');
  t.equal(table.stdout.trim().split('\n').length, 2, 'only the container\'s rows');
  t.equal((await cli(['delete', '--force', 'c3'])).status, 0, 'delete --force');
  t.notOk(pidAlive(s.pid!), 'the process was killed');
  t.equal((await cli(['state', 'c3'])).status, 1);
});

t.test('run (attached) and exec: output and exit status', async (t) => {
  const { bundle, cli, work } = await setup(t);
  const r = await cli(['run', '-b', bundle('r', ['sh', '-c', 'read x; echo "got $x"; echo err >&2; exit 7']), 'r1'], 'hello\n');
  t.equal(r.status, 7, 'run: the process\'s exit status');
  t.equal(r.stdout, 'got hello\n', 'stdin in, stdout out');
  t.equal(r.stderr, 'err\n');
  t.equal((await cli(['state', 'r1'])).status, 1, 'removed after run');

  t.equal((await cli(['run', '-d', '-b', bundle('e', ['sleep', '60']), 'e1'])).status, 0);
  const x = await cli(['exec', '-e', 'V=42', 'e1', 'sh', '-c', 'echo "v=$V"; exit 3']);
  t.equal(x.status, 3, 'exec: the process\'s status');
  t.equal(x.stdout, 'v=42\n');
  const pidFile = path.join(work, 'exec.pid');
  t.equal((await cli(['exec', '-d', '--pid-file', pidFile, 'e1', 'sleep', '60'])).status, 0, 'exec -d --pid-file');
  const execPid = Number(fs.readFileSync(pidFile, 'utf8'));
  t.ok(pidAlive(execPid), `--pid-file holds the exec process's pid (${execPid}), alive`);
  t.match(fs.readFileSync(`/proc/${execPid}/cmdline`, 'utf8').split('\0'), [/sleep$/, '60'], 'and it is the exec\'d sleep');
  const bad = await cli(['exec', 'nope', 'true']);
  t.equal(bad.status, 255, 'a failed exec exits 255, as runc (a process of its own never does: its status is 0..255 and runc reserves 255)');
  t.equal(bad.stderr, 'kata-agent-oci: exec failed: container "nope" does not exist\n', 'the program name, runc\'s "exec failed: "');
  const refused = await cli(['exec', 'e1', '/no/such/program']);
  t.equal(refused.status, 255, 'an ExecProcess the agent refuses: 255');
  t.match(refused.stderr, /^kata-agent-oci: exec failed: [A-Z_]+: .*\/no\/such\/program/, `the agent's status, named (${refused.stderr.trim()})`);
  t.equal((await cli(['delete', '-f', 'e1'])).status, 0);
});

t.test('bad specs from config.json: INVALID_ARGUMENT over the wire, naming the field; nothing left behind', async (t) => {
  const { bundle, cli, m } = await setup(t);
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['unknown namespace', { linux: { namespaces: [{ type: 'mount' }, { type: 'time' }] } }, /OCI\.Linux\.Namespaces\[1\]\.Type "time"/],
    ['relative mount destination', { mounts: [{ destination: 'proc', type: 'proc', source: 'proc' }] }, /OCI\.Mounts\[0\]\.destination "proc"/],
    ['bad device type', { linux: { devices: [{ path: '/dev/x', type: 'z', major: 1, minor: 3 }] } }, /OCI\.Linux\.Devices\[0\]\.Type "z"/],
    ['hook path not absolute', { hooks: { prestart: [{ path: 'bin/hook' }] } }, /OCI\.Hooks\.Prestart\[0\]\.Path "bin\/hook"/],
    ['cgroupsPath with ..', { linux: { cgroupsPath: '/a/../../etc' } }, /OCI\.Linux\.CgroupsPath/],
  ];
  for (const [i, [name, extra, field]] of cases.entries()) {
    const r = await cli(['create', '-b', bundle(`bad${i}`, ['true'], undefined, extra), `bad${i}`]);
    t.equal(r.status, 1, `${name}: create fails`);
    t.match(r.stderr, /^kata-agent-oci: create failed: INVALID_ARGUMENT: /, `${name}: INVALID_ARGUMENT, as runc words a failed create`);
    t.match(r.stderr, field, `${name}: names the field`);
    t.equal((await cli(['state', `bad${i}`])).status, 1, `${name}: no record left`);
  }
  t.equal(m.agent.sandbox.containers.size, 0, 'no container left in the agent');
});

t.test('hooks and annotations reach the agent from config.json (the OCI CLI keeps them; agent-ctl drops them)', async (t) => {
  const { bundle, cli, m } = await setup(t);
  const b = bundle('h', ['sleep', '60'], { 'a.b/c': 'd' }, { hooks: { poststop: [{ path: '/bin/true', args: ['true', 'x'], timeout: 5 }] } });
  t.equal((await cli(['create', '-b', b, 'h1'])).status, 0);
  const plan = m.agent.sandbox.containers.get('h1')?.plan;
  t.same(plan?.hooks, { poststop: [{ path: '/bin/true', args: ['true', 'x'], env: [], timeoutSec: 5 }] }, 'the poststop hook is in the plan');
  t.equal((await cli(['delete', '-f', 'h1'])).status, 0);
});

t.test('errors: usage exit 2, unreadable bundle, unreachable agent, --log', async (t) => {
  const { cli, work } = await setup(t);
  let r = await cli(['create', '-b', path.join(work, 'none'), 'x1']);
  t.equal(r.status, 1);
  t.match(r.stderr, /^kata-agent-oci: create failed: cannot read the OCI spec .*none\/config\.json/);
  r = await cli(['run', '-b', path.join(work, 'none'), 'x1']);
  t.equal(r.status, 1, 'a failed run exits 1, as runc');
  t.match(r.stderr, /^kata-agent-oci: run failed: cannot read the OCI spec/);
  t.equal((await cli(['state', 'x1'])).status, 1, 'nothing recorded');
  r = await cli(['bogus']);
  t.equal(r.status, 2);
  t.match(r.stderr, /unknown command "bogus"/);

  const log = path.join(work, 'log.json');
  const lines: string[] = [];
  const status = await ociMain(['--address', 'unix:///nonexistent/agent.sock', '--root', path.join(work, 'r2'), '--log', log, '--log-format', 'json', 'state', 'zz'], {
    stdout: (s) => lines.push(s), stderr: (s) => lines.push(s),
  });
  t.equal(status, 1);
  t.same(JSON.parse(fs.readFileSync(log, 'utf8')).msg, 'container "zz" does not exist', '--log json: runc\'s logrus shape');
  t.equal(lines.length, 1);
  lines.length = 0;
  const execStatus = await ociMain(['--address', 'unix:///nonexistent/agent.sock', '--root', path.join(work, 'r2'), '--log', log, '--log-format', 'json', 'exec', 'zz', 'true'], {
    stdout: (s) => lines.push(s), stderr: (s) => lines.push(s),
  });
  t.equal(execStatus, 255, 'exec: 255');
  t.same(lines, ['kata-agent-oci: exec failed: container "zz" does not exist\n'], 'one line, with the program name');
  t.same(JSON.parse(fs.readFileSync(log, 'utf8').trim().split('\n').pop()!).msg, 'exec failed: container "zz" does not exist', 'and in --log');

  // The program itself: 255 reaches the caller (runc's exec failure status), the line on stderr.
  const bin = spawnSync(process.execPath, [path.join(__dirname, '..', '..', '..', 'bin', 'kata-agent-oci'), '--root', path.join(work, 'r3'), 'exec', 'zz', 'true'], { encoding: 'utf8' });
  t.equal(bin.status, 255, `bin/kata-agent-oci exec of an unknown id exits 255 (${bin.stderr})`);
  t.equal(bin.stderr, 'kata-agent-oci: exec failed: container "zz" does not exist\n');

  // kata-agent-ctl oci is the same program.
  const out: string[] = [];
  t.equal(await main(['oci', '--help'], { stdout: (l) => out.push(l), stderr: (l) => out.push(l), stdin: process.stdin }), 0);
  t.match(out.join('\n'), /state ID\s+print the state JSON/);
});

t.test('npm run conformance: the side-by-side table; a clear SKIP when the suite cannot run', async (t) => {
  const row = (result: string, ok = '1', plan = '1') => ({ result, ok, notOk: '0', plan });
  const text = table(['a', 'b', 'c'], new Map([['a', row('PASS')], ['b', row('PASS', '3', '3')], ['c', row('FAIL_EXIT', '0', '')]]), new Map([['a', row('PASS')], ['b', row('FAIL', '2', '3')], ['c', row('PASS_NO_ASSERTS', '0', '0')]]));
  t.match(text, /^test\s+runc\s+ours$/m, 'header');
  t.match(text, /^b\s+PASS 3\/3\s+FAIL 2\/3\s+<- runc passes, ours not$/m, 'a test runc passes and ours not is marked');
  t.match(text, /^c\s+FAIL_EXIT\s+PASS_NO_ASSERTS$/m);
  t.match(text, /pass: runc 2\/3, ours 2\/3$/, 'pass counts');
  t.match(table(['a'], null, new Map([['a', row('PASS')]])), /pass: runc n\/a\/1, ours 1\/1/, 'no runc: n/a');

  const r = spawnSync(process.execPath, [path.join(__dirname, '..', '..', 'scripts', 'conformance.js')], {
    env: { ...process.env, RUNTIME_TOOLS_GIT: path.join(os.tmpdir(), 'no-such-runtime-tools.git') },
    encoding: 'utf8',
    timeout: 60_000,
  });
  t.equal(r.status, 0, 'exit 0');
  t.match(r.stdout, /^conformance: SKIP: (needs root|Go is missing|git is missing|the runtime-tools source \(revision 5e63903\) is missing: set RUNTIME_TOOLS_GIT)/, 'one line naming why');
});
