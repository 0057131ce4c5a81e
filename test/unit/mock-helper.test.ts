// The mock helper end to end through HelperClient (helper/mock, helper/ops/container.ts shared
// with the real backend): stdio fds, exit events, stdin EOF only after closeStdin, signals,
// state, ids and states refused with the right codes.
//
// The mock reaps every child of this test process (helper/ops/reaper.ts), so nothing here uses
// node:child_process.
import t, { type Test } from 'tap';
import * as fs from 'node:fs';
import { HelperClient } from '../../shared/helper-client';
import { loadNative } from '../../shared/native';
import { Code, type ContainerPlan } from '../../shared/protocol';
import { startMockHelper, startMockPair, createMockHelperPair, type MockHelperPair } from '../../helper/mock/main';
import { processPlan, readToEnd, closeAll, exitOf, rejectsStatus, mockContainerPlan } from '../lib/helper-fixtures';

const native = loadNative();

const plan = mockContainerPlan;

let pair: MockHelperPair;
let client: HelperClient;

t.before(async () => {
  pair = await startMockPair();
  client = pair.client;
});
t.teardown(() => pair.close());

t.test('create + start: stdout, stderr and the exit status', async (t) => {
  const created = await client.call('createContainer', { containerId: 'c-out', plan: plan(['sh', '-c', 'echo out; echo err >&2; exit 3']) });
  t.ok(created.result.pid > 0, 'init has a pid at create');
  t.same(Object.keys(created.fds).sort(), ['stderr', 'stderrSpool', 'stdin', 'stdout', 'stdoutSpool']);
  closeAll({ o: created.fds.stdoutSpool, e: created.fds.stderrSpool });
  const state0 = await client.call('state', { withFds: false });
  t.equal(state0.result.containers.find((c) => c.containerId === 'c-out')?.status, 'created');
  const exited = exitOf(client, 'c-out');
  const out = readToEnd(created.fds.stdout);
  const err = readToEnd(created.fds.stderr);
  await client.call('startContainer', { containerId: 'c-out' });
  t.same(await exited, { event: 'exit', containerId: 'c-out', execId: '', pid: created.result.pid, exitStatus: 3 });
  t.equal(await out, 'out\n');
  t.equal(await err, 'err\n');
  native.close(created.fds.stdin);
  const state = await client.call('state', { withFds: false });
  const c = state.result.containers.find((x) => x.containerId === 'c-out');
  t.equal(c?.status, 'stopped');
  const p = state.result.processes.find((x) => x.containerId === 'c-out');
  t.same(p && { exited: p.exited, exitStatus: p.exitStatus }, { exited: true, exitStatus: 3 });
  await rejectsStatus(t, client.call('startContainer', { containerId: 'c-out' }), Code.FAILED_PRECONDITION, /already been started/);
  await rejectsStatus(t, client.call('execProcess', { containerId: 'c-out', execId: 'e1', process: processPlan(['true']) }), Code.FAILED_PRECONDITION);
  await client.call('removeContainer', { containerId: 'c-out', timeoutMs: 5000 });
  await rejectsStatus(t, client.call('startContainer', { containerId: 'c-out' }), Code.NOT_FOUND);
});

t.test('stdin: cat sees EOF only once the helper closes its copy too (closeStdin)', async (t) => {
  const created = await client.call('createContainer', { containerId: 'c-cat', plan: plan(['cat']) });
  const exited = exitOf(client, 'c-cat');
  const out = readToEnd(created.fds.stdout);
  await client.call('startContainer', { containerId: 'c-cat' });
  native.write(created.fds.stdin, Buffer.from('hello helper\n'), 0, 13);
  native.close(created.fds.stdin); // control's copy only: the helper still holds one
  await new Promise((r) => setTimeout(r, 200));
  const mid = await client.call('state', { withFds: false });
  t.equal(mid.result.processes.find((p) => p.containerId === 'c-cat')?.exited, false, 'cat still runs: no EOF yet');
  await client.call('closeStdin', { containerId: 'c-cat', execId: '' });
  t.equal((await exited).exitStatus, 0);
  t.equal(await out, 'hello helper\n');
  native.close(created.fds.stderr);
  await client.call('removeContainer', { containerId: 'c-cat', timeoutMs: 5000 });
});

t.test('signals: SIGKILL → 137; SIGTERM to an init without a handler is upgraded; a handled SIGTERM is delivered', async (t) => {
  const a = await client.call('createContainer', { containerId: 'c-kill', plan: plan(['sleep', '100']) });
  closeAll(a.fds);
  await client.call('startContainer', { containerId: 'c-kill' });
  let ex = exitOf(client, 'c-kill');
  await client.call('signalProcess', { containerId: 'c-kill', execId: '', signal: 9, all: false });
  t.equal((await ex).exitStatus, 137);
  // Signalling an exited process is not an error (ESRCH tolerated as upstream).
  await client.call('signalProcess', { containerId: 'c-kill', execId: '', signal: 9, all: false });
  await client.call('removeContainer', { containerId: 'c-kill', timeoutMs: 5000 });

  const b = await client.call('createContainer', { containerId: 'c-term', plan: plan(['sleep', '100']) });
  closeAll(b.fds);
  await client.call('startContainer', { containerId: 'c-term' });
  await new Promise((r) => setTimeout(r, 100)); // let sh exec sleep
  ex = exitOf(client, 'c-term');
  await client.call('signalProcess', { containerId: 'c-term', execId: '', signal: 15, all: false });
  t.equal((await ex).exitStatus, 137, 'sleep does not handle SIGTERM: sent SIGKILL');
  await client.call('removeContainer', { containerId: 'c-term', timeoutMs: 5000 });

  const c = await client.call('createContainer', {
    containerId: 'c-trap',
    plan: plan(['sh', '-c', 'trap "echo got-term; exit 7" TERM; echo ready; while :; do sleep 0.05; done']),
  });
  const out = readToEnd(c.fds.stdout);
  native.close(c.fds.stdin);
  native.close(c.fds.stderr);
  await client.call('startContainer', { containerId: 'c-trap' });
  await new Promise((r) => setTimeout(r, 200)); // the trap is installed
  ex = exitOf(client, 'c-trap');
  await client.call('signalProcess', { containerId: 'c-trap', execId: '', signal: 15, all: false });
  t.equal((await ex).exitStatus, 7, 'handled SIGTERM reaches the trap');
  // The sleep child of the shell keeps the pipe open a moment; it ends on its own.
  t.match(await out, /ready\ngot-term\n/);
  await client.call('removeContainer', { containerId: 'c-trap', timeoutMs: 5000 });

  const d = await client.call('createContainer', { containerId: 'c-sig', plan: plan(['sleep', '100']) });
  closeAll(d.fds);
  await rejectsStatus(t, client.call('signalProcess', { containerId: 'c-sig', execId: '', signal: 65, all: false }), Code.INVALID_ARGUMENT);
  await rejectsStatus(t, client.call('signalProcess', { containerId: 'c-sig', execId: 'nope', signal: 9, all: false }), Code.NOT_FOUND);
  await client.call('signalProcess', { containerId: 'c-sig', execId: '', signal: 0, all: false });
  await client.call('removeContainer', { containerId: 'c-sig', timeoutMs: 5000 });
});

t.test('exec: output, exit status, ids, release', async (t) => {
  const init = await client.call('createContainer', { containerId: 'c-exec', plan: plan(['sleep', '100']) });
  closeAll(init.fds);
  await client.call('startContainer', { containerId: 'c-exec' });
  const ex = exitOf(client, 'c-exec', 'e1');
  const e1 = await client.call('execProcess', {
    containerId: 'c-exec',
    execId: 'e1',
    process: processPlan(['sh', '-c', 'echo "in $PWD as $FOO"; read line; echo "got $line"; exit 5'], { env: ['PATH=/bin:/usr/bin', 'FOO=bar'], cwd: '/tmp' }),
  });
  t.ok(e1.result.pid > 0);
  await rejectsStatus(t, client.call('execProcess', { containerId: 'c-exec', execId: 'e1', process: processPlan(['true']) }), Code.ALREADY_EXISTS);
  await rejectsStatus(t, client.call('releaseProcess', { containerId: 'c-exec', execId: 'e1' }), Code.FAILED_PRECONDITION);
  const out = readToEnd(e1.fds.stdout);
  native.write(e1.fds.stdin, Buffer.from('line1\n'), 0, 6);
  t.equal((await ex).exitStatus, 5);
  t.equal(await out, 'in /tmp as bar\ngot line1\n');
  closeAll(e1.fds);
  const st = await client.call('state', { withFds: true });
  const names = Object.keys(st.fds).sort();
  t.ok(names.includes('c-exec/e1/stderr') && names.includes('c-exec//stdout'), `fds named <cid>/<eid>/<name>: ${names.join(' ')}`);
  const e1State = st.result.processes.find((p) => p.execId === 'e1');
  t.same(e1State?.fds, ['stdin', 'stdout', 'stderr', 'stdoutSpool', 'stderrSpool']);
  closeAll(st.fds);
  await client.call('releaseProcess', { containerId: 'c-exec', execId: 'e1' });
  await rejectsStatus(t, client.call('closeStdin', { containerId: 'c-exec', execId: 'e1' }), Code.NOT_FOUND);
  // The id is free again.
  const again = await client.call('execProcess', { containerId: 'c-exec', execId: 'e1', process: processPlan(['true']) });
  closeAll(again.fds);
  await rejectsStatus(t, client.call('execProcess', { containerId: 'c-exec', execId: 'e2', process: processPlan(['no-such-program-xyz']) }), Code.INVALID_ARGUMENT, /not found in \$PATH/);
  await client.call('removeContainer', { containerId: 'c-exec', timeoutMs: 5000 });
});

t.test('terminal: a pty master instead of pipes', async (t) => {
  const c = await client.call('createContainer', { containerId: 'c-tty', plan: plan(['sh', '-c', 'echo on-a-tty; exit 0'], { terminal: true }) });
  t.same(Object.keys(c.fds), ['ptySpool', 'pty']);
  closeAll({ s: c.fds.ptySpool });
  const ex = exitOf(client, 'c-tty');
  const out = readToEnd(c.fds.pty);
  await client.call('startContainer', { containerId: 'c-tty' });
  t.equal((await ex).exitStatus, 0);
  await client.call('closeStdin', { containerId: 'c-tty', execId: '' }); // the helper keeps its master (the output)
  t.match(await out, /on-a-tty\r?\n/);
  await client.call('removeContainer', { containerId: 'c-tty', timeoutMs: 5000 });
});

t.test('ids and plans: duplicate, unknown, invalid, unsupported', async (t) => {
  const c = await client.call('createContainer', { containerId: 'c-dup', plan: plan(['sleep', '100']) });
  closeAll(c.fds);
  await rejectsStatus(t, client.call('createContainer', { containerId: 'c-dup', plan: plan(['true']) }), Code.ALREADY_EXISTS);
  await rejectsStatus(t, client.call('startContainer', { containerId: 'nope' }), Code.NOT_FOUND);
  await rejectsStatus(t, client.call('removeContainer', { containerId: 'nope', timeoutMs: 10 }), Code.NOT_FOUND);
  await rejectsStatus(t, client.call('createContainer', { containerId: '../etc', plan: plan(['true']) }), Code.INVALID_ARGUMENT, /container id/);
  await rejectsStatus(t, client.call('createContainer', { containerId: 'c-rel', plan: { ...plan(['true']), rootfs: 'relative/rootfs' } }), Code.INVALID_ARGUMENT, /rootfs/);
  await rejectsStatus(
    t,
    client.call('createContainer', { containerId: 'c-user', plan: { ...plan(['true']), namespaces: [{ type: 'mount', path: '' }, { type: 'user', path: '' }] } }),
    Code.INVALID_ARGUMENT,
    /user namespace needs idMappings/,
  );
  await rejectsStatus(t, client.call('createContainer', { containerId: 'c-noexe', plan: plan(['/no/such/exe']) }), Code.INVALID_ARGUMENT, /not found/);
  await rejectsStatus(t, client.call('createContainer', { containerId: 'c-bad', plan: 'x' as unknown as ContainerPlan }), Code.INVALID_ARGUMENT);
  // Failed creations leave nothing behind.
  const st = await client.call('state', { withFds: false });
  t.same(st.result.containers.map((x) => x.containerId), ['c-dup']);
  // Remove a created (never started) container; the id can be reused.
  await client.call('removeContainer', { containerId: 'c-dup', timeoutMs: 5000 });
  const again = await client.call('createContainer', { containerId: 'c-dup', plan: plan(['true']) });
  closeAll(again.fds);
  await client.call('removeContainer', { containerId: 'c-dup', timeoutMs: 5000 });
  const end = await client.call('state', { withFds: false });
  t.same(end.result, { containers: [], processes: [] });
});

t.test('signalProcess with all: true reaches the init and every exec process', async (t) => {
  const c = await client.call('createContainer', { containerId: 'c-all', plan: plan(['sleep', '100']) });
  closeAll(c.fds);
  await client.call('startContainer', { containerId: 'c-all' });
  const e = await client.call('execProcess', { containerId: 'c-all', execId: 'ex', process: processPlan(['sleep', '100']) });
  closeAll(e.fds);
  const initExit = exitOf(client, 'c-all');
  const execExit = exitOf(client, 'c-all', 'ex');
  await client.call('signalProcess', { containerId: 'c-all', execId: '', signal: 9, all: true });
  t.equal((await initExit).exitStatus, 137);
  t.equal((await execExit).exitStatus, 137);
  await client.call('removeContainer', { containerId: 'c-all', timeoutMs: 5000 });
});

t.test('removeContainer kills the init and exec processes of a running container', async (t) => {
  const c = await client.call('createContainer', { containerId: 'c-rm', plan: plan(['sleep', '100']) });
  closeAll(c.fds);
  await client.call('startContainer', { containerId: 'c-rm' });
  const e = await client.call('execProcess', { containerId: 'c-rm', execId: 'ex', process: processPlan(['sleep', '100']) });
  closeAll(e.fds);
  const initExit = exitOf(client, 'c-rm');
  const execExit = exitOf(client, 'c-rm', 'ex');
  await client.call('removeContainer', { containerId: 'c-rm', timeoutMs: 5000 });
  t.equal((await initExit).exitStatus, 137);
  t.equal((await execExit).exitStatus, 137);
  t.throws(() => native.kill(c.result.pid, 0), 'init is gone');
  t.throws(() => native.kill(e.result.pid, 0), 'exec process is gone');
});

t.test('sandbox: created once, no namespaces in the mock; destroySandbox removes containers', async (t) => {
  const s = await client.call('createSandbox', { sandboxId: 'sb1', hostname: 'pod' });
  t.same(s.result, { namespaces: [], deviceCgroup: true });
  await rejectsStatus(t, client.call('createSandbox', { sandboxId: 'sb1', hostname: 'pod' }), Code.ALREADY_EXISTS, /sandbox "sb1" already created/);
  await rejectsStatus(t, client.call('createSandbox', { sandboxId: '', hostname: 'pod' }), Code.ALREADY_EXISTS, /already created/);
  const c = await client.call('createContainer', { containerId: 'c-sb', plan: plan(['sleep', '100']) });
  closeAll(c.fds);
  await client.call('destroySandbox', {});
  t.same((await client.call('state', { withFds: false })).result.containers, []);
  // A new sandbox may be created after destroy.
  await client.call('createSandbox', { sandboxId: 'sb2', hostname: '' });
  await client.call('destroySandbox', {});
  // An empty sandbox id is accepted (upstream accepts an empty CreateSandboxRequest.sandbox_id);
  // a bad non-empty one is refused naming the sandbox id.
  t.same((await client.call('createSandbox', { sandboxId: '', hostname: 'pod' })).result, { namespaces: [], deviceCgroup: true }, 'empty sandbox id');
  await client.call('destroySandbox', {});
  await rejectsStatus(t, client.call('createSandbox', { sandboxId: '-bad', hostname: 'pod' }), Code.INVALID_ARGUMENT, /^invalid sandbox id "-bad"/);
  await rejectsStatus(t, client.call('createSandbox', { sandboxId: 'x'.repeat(300), hostname: 'pod' }), Code.INVALID_ARGUMENT, /invalid sandbox id/);
});

t.test('no fd is leaked by a whole container lifecycle (helper and client side together)', async (t) => {
  const count = (): number => fs.readdirSync('/proc/self/fd').length;
  // Warm up once (lazy allocations: pollers, timers), then measure a second round.
  for (const round of [0, 1]) {
    const before = count();
    const c = await client.call('createContainer', { containerId: `c-leak${round}`, plan: plan(['sleep', '100']) });
    await client.call('startContainer', { containerId: `c-leak${round}` });
    const ex = exitOf(client, `c-leak${round}`, 'e');
    const e = await client.call('execProcess', { containerId: `c-leak${round}`, execId: 'e', process: processPlan(['sh', '-c', 'echo x']) });
    t.equal(await readToEnd(e.fds.stdout), 'x\n');
    await ex;
    native.close(e.fds.stdin);
    native.close(e.fds.stderr);
    closeAll({ o: e.fds.stdoutSpool, e: e.fds.stderrSpool });
    await client.call('releaseProcess', { containerId: `c-leak${round}`, execId: 'e' });
    const st = await client.call('state', { withFds: true });
    closeAll(st.fds);
    closeAll(c.fds);
    await client.call('removeContainer', { containerId: `c-leak${round}`, timeoutMs: 5000 });
    await new Promise((r) => setTimeout(r, 20));
    if (round === 1) t.equal(count(), before, 'same number of open fds after create/start/exec/state/remove');
  }
});

t.test('startMockHelper listens on a socket; createMockHelperPair returns a connected client', async (t) => {
  const helper = await startMockHelper();
  t.teardown(() => helper.close());
  const c = await HelperClient.connect(helper.socketPath);
  t.equal(c.helperPid, process.pid);
  t.same((await c.call('state', { withFds: false })).result, { containers: [], processes: [] });
  c.close();
  const c2 = await createMockHelperPair();
  t.same((await c2.call('state', { withFds: false })).result, { containers: [], processes: [] });
  c2.close();
  t.ok(fs.existsSync(helper.socketPath));
  await helper.close();
  t.notOk(fs.existsSync(helper.socketPath), 'socket removed');
});
