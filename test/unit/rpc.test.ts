// The agent end to end without privileges: Agent + TtrpcServer on a temporary unix socket,
// driven by the TtrpcClient with the generated codecs, over the in-process mock helper (which
// runs container processes as plain host processes).
import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { buildDebugServer } from '../../control/debug/server';
import { TtrpcClient } from '../../control/ttrpc';
import { startMockAgent, type MockAgent } from '../lib/mock-agent';
import { Code, StatusError } from '../../shared/protocol';
import type { grpc } from '../../shared/generated/protos';

type Harness = MockAgent;

function harness(t: Test): Promise<Harness> {
  return startMockAgent(t, { prefix: 'kata-agent-rpc-', agent: () => ({ defaultRemoveTimeoutMs: 5000 }) });
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Wait until `cond()` holds (polled every 10 ms, at most `ms`): for states reached over the wire, never a timing assertion. */
async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await sleep(10);
}

/** Make the mock helper's `op` wait `ms` before doing its work (widens a race window). */
function delayHelperOp(h: Harness, op: 'createContainer' | 'execProcess' | 'removeContainer', ms: number): void {
  const backend = h.pair.backend as unknown as Record<string, (args: unknown) => Promise<unknown>>;
  const original = backend[op].bind(h.pair.backend);
  backend[op] = async (args: unknown) => {
    await sleep(ms);
    return original(args);
  };
}

/** The mock helper's containers and processes (what is really left, whatever control thinks). */
async function helperState(h: Harness): Promise<{ containers: string[]; processes: number }> {
  const { result } = await h.pair.backend.state({ withFds: false });
  return { containers: result.containers.map((c) => c.containerId), processes: result.processes.length };
}

function oci(args: string[], opts: { terminal?: boolean } = {}): grpc.Spec.$Properties {
  return {
    Version: '1.0.2',
    Root: { Path: '/run/kata-test/rootfs' }, // the mock helper runs on the host and ignores it ("/" is refused)
    Process: { Args: args, Env: ['PATH=/usr/bin:/bin', 'HOME=/'], Cwd: '/', Terminal: opts.terminal === true },
    Linux: { Namespaces: [{ Type: 'mount' }, { Type: 'ipc' }, { Type: 'uts' }, { Type: 'pid' }] },
  };
}

function proc(args: string[], opts: { terminal?: boolean } = {}): grpc.Process.$Properties {
  return oci(args, opts).Process!;
}

async function run(h: Harness, id: string, args: string[], opts: { terminal?: boolean } = {}): Promise<void> {
  await h.call('CreateContainer', { container_id: id, OCI: oci(args, opts) });
  await h.call('StartContainer', { container_id: id });
}

/** Read a stream through the rpc until EOF; returns the bytes and the EOF status. */
async function readAll(h: Harness, method: 'ReadStdout' | 'ReadStderr', container_id: string, exec_id = '', len = 1 << 20): Promise<{ data: Buffer; eof: StatusError }> {
  const parts: Buffer[] = [];
  for (;;) {
    try {
      const res = await h.call(method, { container_id, exec_id, len });
      parts.push(Buffer.from(res.data));
    } catch (err) {
      return { data: Buffer.concat(parts), eof: err as StatusError };
    }
  }
}

async function expectCode(t: Test, p: Promise<unknown>, code: number, message?: RegExp | string): Promise<void> {
  try {
    await p;
    t.fail(`expected status ${code}`);
  } catch (err) {
    t.ok(err instanceof StatusError, 'a status error');
    t.equal((err as StatusError).code, code, `code ${code}: ${(err as Error).message}`);
    if (message !== undefined) t.match((err as Error).message, message);
  }
}

t.test('Health: Check is SERVING, Version carries the package and API versions', async (t) => {
  const h = await harness(t);
  const check = await h.call('Check', { service: '' });
  t.equal(check.status, 1);
  const version = await h.call('Version', { service: '' });
  const pkg = JSON.parse(fs.readFileSync(path.resolve(__dirname, '..', '..', '..', 'package.json'), 'utf8')) as { version: string };
  t.equal(version.agent_version, pkg.version);
  t.equal(version.grpc_version, '0.0.1');
});

t.test('container stdout, stderr and exit status; the debug endpoint lists it', async (t) => {
  const h = await harness(t);
  await h.call('CreateSandbox', { hostname: 'sb', sandbox_id: 'sandbox-1' });
  await run(h, 'c1', ['sh', '-c', 'echo out; echo err >&2; exit 3']);
  const out = await readAll(h, 'ReadStdout', 'c1');
  const err = await readAll(h, 'ReadStderr', 'c1');
  t.equal(out.data.toString(), 'out\n');
  t.equal(err.data.toString(), 'err\n');
  t.equal(out.eof.code, Code.OUT_OF_RANGE, 'end of stream is OUT_OF_RANGE');
  t.equal((await h.call('WaitProcess', { container_id: 'c1', exec_id: '' })).status, 3);
  t.equal((await h.call('WaitProcess', { container_id: 'c1', exec_id: 'c1' })).status, 3, 'exec id = container id is the init');

  const debug = buildDebugServer(h.agent.sandbox);
  t.teardown(() => debug.close());
  const sandbox = await debug.inject({ method: 'GET', url: '/v1/sandbox' });
  t.equal(sandbox.statusCode, 200);
  const body = sandbox.json() as { id: string; hostname: string; containers: Array<{ id: string; status: string }> };
  t.equal(body.id, 'sandbox-1');
  t.equal(body.hostname, 'sb');
  t.same(body.containers.map((c) => [c.id, c.status]), [['c1', 'stopped']]);
  const container = await debug.inject({ method: 'GET', url: '/v1/containers/c1' });
  const cbody = container.json() as { status: string; processes: Array<{ execId: string; exited: boolean; exitStatus: number }> };
  t.equal(cbody.status, 'stopped');
  t.same(cbody.processes.map((p) => [p.execId, p.exited, p.exitStatus]), [['c1', true, 3]]);
  t.equal((await debug.inject({ method: 'GET', url: '/v1/containers/nope' })).statusCode, 404);
  t.same((await debug.inject({ method: 'GET', url: '/healthz' })).json(), { status: 'ok' });

  await h.call('RemoveContainer', { container_id: 'c1', timeout: 0 });
  t.same(((await debug.inject({ method: 'GET', url: '/v1/sandbox' })).json() as { containers: unknown[] }).containers, []);
});

t.test('stdin: WriteStdin to cat, CloseStdin gives EOF, output echoed, exit 0; writes after close refused', async (t) => {
  const h = await harness(t);
  await run(h, 'cat1', ['cat']);
  t.equal((await h.call('WriteStdin', { container_id: 'cat1', exec_id: '', data: Buffer.from('hello ') })).len, 6);
  t.equal((await h.call('WriteStdin', { container_id: 'cat1', exec_id: '', data: Buffer.from('world\n') })).len, 6);
  await h.call('CloseStdin', { container_id: 'cat1', exec_id: '' });
  await h.call('CloseStdin', { container_id: 'cat1', exec_id: '' });
  t.equal((await readAll(h, 'ReadStdout', 'cat1')).data.toString(), 'hello world\n');
  t.equal((await h.call('WaitProcess', { container_id: 'cat1', exec_id: '' })).status, 0);
  await expectCode(t, h.call('WriteStdin', { container_id: 'cat1', exec_id: '', data: Buffer.from('x') }), Code.FAILED_PRECONDITION, /stdin is closed/);
});

t.test('SIGKILL gives 137; RemoveContainer right after; the id can be reused (B14b)', async (t) => {
  const h = await harness(t);
  await run(h, 'k1', ['sleep', '1000']);
  const wait = h.call('WaitProcess', { container_id: 'k1', exec_id: '' });
  await h.call('SignalProcess', { container_id: 'k1', exec_id: '', signal: 9 });
  t.equal((await wait).status, 137);
  await h.call('RemoveContainer', { container_id: 'k1', timeout: 5 });
  await expectCode(t, h.call('WaitProcess', { container_id: 'k1', exec_id: '' }), Code.NOT_FOUND);

  await run(h, 'k1', ['sleep', '1000']);
  await h.call('SignalProcess', { container_id: 'k1', exec_id: '', signal: 9 });
  await h.call('RemoveContainer', { container_id: 'k1', timeout: 0 });
  await run(h, 'k1', ['sh', '-c', 'echo again']);
  t.equal((await readAll(h, 'ReadStdout', 'k1')).data.toString(), 'again\n');
  t.equal((await h.call('WaitProcess', { container_id: 'k1', exec_id: '' })).status, 0);
});

t.test('exec: output and status; concurrent and late WaitProcess all get the status (B14a)', async (t) => {
  const h = await harness(t);
  await run(h, 'e1', ['sleep', '1000']);
  await h.call('ExecProcess', { container_id: 'e1', exec_id: 'x1', process: proc(['sh', '-c', 'echo exec-out; exit 5']) });
  t.equal((await readAll(h, 'ReadStdout', 'e1', 'x1')).data.toString(), 'exec-out\n');
  t.equal((await h.call('WaitProcess', { container_id: 'e1', exec_id: 'x1' })).status, 5);

  await h.call('ExecProcess', { container_id: 'e1', exec_id: 's1', process: proc(['sleep', '1']) });
  await expectCode(t, h.call('ExecProcess', { container_id: 'e1', exec_id: 's1', process: proc(['true']) }), Code.ALREADY_EXISTS, /s1/);
  const waits = await Promise.all([
    h.call('WaitProcess', { container_id: 'e1', exec_id: 's1' }),
    h.call('WaitProcess', { container_id: 'e1', exec_id: 's1' }),
  ]);
  t.same(waits.map((w) => w.status), [0, 0], 'both concurrent waits');
  t.equal((await h.call('WaitProcess', { container_id: 'e1', exec_id: 's1' })).status, 0, 'a late wait gets the cached status');

  // An exited exec id may be used again.
  await h.call('ExecProcess', { container_id: 'e1', exec_id: 'x1', process: proc(['sh', '-c', 'echo second']) });
  t.equal((await readAll(h, 'ReadStdout', 'e1', 'x1')).data.toString(), 'second\n');
  t.equal((await h.call('WaitProcess', { container_id: 'e1', exec_id: 'x1' })).status, 0);

  // SIGKILL to an exec process; signalling it again after its exit is not an error (ESRCH).
  await h.call('ExecProcess', { container_id: 'e1', exec_id: 'k', process: proc(['sleep', '1000']) });
  await h.call('SignalProcess', { container_id: 'e1', exec_id: 'k', signal: 9 });
  t.equal((await h.call('WaitProcess', { container_id: 'e1', exec_id: 'k' })).status, 137);
  await h.call('SignalProcess', { container_id: 'e1', exec_id: 'k', signal: 15 });
});

t.test('exec with a terminal: exact output, resize, CloseStdin keeps the output (B10, B13)', async (t) => {
  const h = await harness(t);
  await run(h, 't1', ['sleep', '1000']);
  await h.call('ExecProcess', { container_id: 't1', exec_id: 'abc', process: proc(['sh', '-c', 'printf abc'], { terminal: true }) });
  t.equal((await readAll(h, 'ReadStdout', 't1', 'abc')).data.toString(), 'abc');
  await until(() => h.agent.sandbox.getContainer('t1').execs.get('abc')?.exited === true);
  t.same(await h.call('TtyWinResize', { container_id: 't1', exec_id: 'abc', row: 1, column: 1 }), {}, 'a resize racing the exit (not waited yet) is OK, as ctr run -t sends it');
  t.equal((await h.call('WaitProcess', { container_id: 't1', exec_id: 'abc' })).status, 0);
  await expectCode(t, h.call('TtyWinResize', { container_id: 't1', exec_id: 'abc', row: 1, column: 1 }), Code.NOT_FOUND, /exited/);

  await h.call('ExecProcess', { container_id: 't1', exec_id: 'size', process: proc(['sh', '-c', 'sleep 0.5; stty size'], { terminal: true }) });
  await h.call('TtyWinResize', { container_id: 't1', exec_id: 'size', row: 50, column: 132 });
  t.equal((await readAll(h, 'ReadStdout', 't1', 'size')).data.toString().trim(), '50 132');

  await h.call('ExecProcess', { container_id: 't1', exec_id: 'after', process: proc(['sh', '-c', 'sleep 1; echo after'], { terminal: true }) });
  await h.call('CloseStdin', { container_id: 't1', exec_id: 'after' });
  t.match((await readAll(h, 'ReadStderr', 't1', 'after')).data.toString(), /after\r?\n$/, 'output after CloseStdin, via ReadStderr too');
  t.equal((await h.call('WaitProcess', { container_id: 't1', exec_id: 'after' })).status, 0);
  await expectCode(t, h.call('WriteStdin', { container_id: 't1', exec_id: 'after', data: Buffer.from('x') }), Code.FAILED_PRECONDITION);

  await expectCode(t, h.call('TtyWinResize', { container_id: 't1', exec_id: '', row: 1, column: 1 }), Code.FAILED_PRECONDITION, /no terminal/);
  await expectCode(t, h.call('TtyWinResize', { container_id: 't1', exec_id: 'nope', row: 1, column: 1 }), Code.NOT_FOUND);
});

t.test('large output arrives byte-exact, with WaitProcess before or after draining (B08)', async (t) => {
  const h = await harness(t);
  const want = '18c68655ed84064b77ff577ca9275d99a308ad9603eda1201b9cd1670ad755f3';
  await run(h, 'seq', ['sleep', '1000']);
  for (const [execId, args] of [
    ['out', ['seq', '1', '500000']],
    ['err', ['sh', '-c', 'seq 1 500000 1>&2']],
  ] as const) {
    const method = execId === 'out' ? 'ReadStdout' : 'ReadStderr';
    // Wait first (pending while we drain).
    await h.call('ExecProcess', { container_id: 'seq', exec_id: `${execId}-a`, process: proc([...args]) });
    const wait = h.call('WaitProcess', { container_id: 'seq', exec_id: `${execId}-a` });
    const a = await readAll(h, method, 'seq', `${execId}-a`);
    t.equal((await wait).status, 0);
    t.equal(a.data.length, 3388895, `${execId}: wait before draining: length`);
    t.equal(createHash('sha256').update(a.data).digest('hex'), want, `${execId}: wait before draining: sha256`);
    // Drain first, then wait.
    await h.call('ExecProcess', { container_id: 'seq', exec_id: `${execId}-b`, process: proc([...args]) });
    const b = await readAll(h, method, 'seq', `${execId}-b`, 65536);
    t.equal((await h.call('WaitProcess', { container_id: 'seq', exec_id: `${execId}-b` })).status, 0);
    t.equal(createHash('sha256').update(b.data).digest('hex'), want, `${execId}: wait after draining: sha256`);
  }
  // As the init process of a container too.
  await run(h, 'seq-init', ['seq', '1', '500000']);
  const wait = h.call('WaitProcess', { container_id: 'seq-init', exec_id: '' });
  const c = await readAll(h, 'ReadStdout', 'seq-init');
  t.equal((await wait).status, 0);
  t.equal(createHash('sha256').update(c.data).digest('hex'), want, 'init: sha256');
});

t.test('backpressure: a reader that pauses 1 s still gets every byte (B11)', async (t) => {
  const h = await harness(t);
  await run(h, 'yes', ['sh', '-c', 'yes | head -c 20000000']);
  let total = (await h.call('ReadStdout', { container_id: 'yes', exec_id: '', len: 1 << 20 })).data.length;
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const rest = await readAll(h, 'ReadStdout', 'yes');
  total += rest.data.length;
  t.equal(total, 20_000_000);
  t.equal((await h.call('WaitProcess', { container_id: 'yes', exec_id: '' })).status, 0);
});

t.test('errors: status codes for bad ids, bad input, wrong state and unimplemented methods', async (t) => {
  const h = await harness(t);
  const ghost = { container_id: 'ghost', exec_id: '' };
  await expectCode(t, h.call('StartContainer', { container_id: 'ghost' }), Code.NOT_FOUND, /ghost/);
  await expectCode(t, h.call('WaitProcess', ghost), Code.NOT_FOUND);
  await expectCode(t, h.call('ReadStdout', { ...ghost, len: 10 }), Code.NOT_FOUND);
  await expectCode(t, h.call('WriteStdin', { ...ghost, data: Buffer.from('x') }), Code.NOT_FOUND);
  await expectCode(t, h.call('SignalProcess', { ...ghost, signal: 9 }), Code.NOT_FOUND);
  await expectCode(t, h.call('CloseStdin', ghost), Code.NOT_FOUND);
  await expectCode(t, h.call('RemoveContainer', { container_id: 'ghost', timeout: 0 }), Code.NOT_FOUND);
  await expectCode(t, h.call('ExecProcess', { ...ghost, exec_id: 'x', process: proc(['true']) }), Code.NOT_FOUND);
  await expectCode(t, h.call('TtyWinResize', { ...ghost, row: 1, column: 1 }), Code.NOT_FOUND);

  await expectCode(t, h.call('CreateContainer', { container_id: '-bad', OCI: oci(['true']) }), Code.INVALID_ARGUMENT, /-bad/);
  await expectCode(t, h.call('CreateContainer', { container_id: 'x', OCI: oci(['true']) }), Code.INVALID_ARGUMENT, /"x"/);
  await expectCode(t, h.call('CreateContainer', { container_id: 'no-oci' }), Code.INVALID_ARGUMENT, /OCI is required/);
  await expectCode(t, h.call('CreateContainer', { container_id: 'bad-spec', OCI: { ...oci(['true']), Root: { Path: 'rel' } } }), Code.INVALID_ARGUMENT, /OCI.Root.Path/);
  await expectCode(t, h.call('CreateContainer', { container_id: 'dev', OCI: oci(['true']), devices: [{ id: 'd' }] }), Code.INVALID_ARGUMENT, /devices\[0\]\.type is empty/);
  await expectCode(t, h.call('CreateSandbox', { hostname: 'h', dns: ['nameserver 1.1.1.1\nnameserver 6.6.6.6'] }), Code.INVALID_ARGUMENT, /dns\[0\]/);

  await h.call('CreateContainer', { container_id: 'dup', OCI: oci(['sleep', '1000']) });
  await expectCode(t, h.call('CreateContainer', { container_id: 'dup', OCI: oci(['true']) }), Code.ALREADY_EXISTS, /dup/);
  await expectCode(t, h.call('ExecProcess', { container_id: 'dup', exec_id: 'x', process: proc(['true']) }), Code.FAILED_PRECONDITION, /not running/);
  await h.call('StartContainer', { container_id: 'dup' });
  await expectCode(t, h.call('StartContainer', { container_id: 'dup' }), Code.FAILED_PRECONDITION, /running/);
  await expectCode(t, h.call('ExecProcess', { container_id: 'dup', exec_id: 'dup', process: proc(['true']) }), Code.ALREADY_EXISTS);
  await expectCode(t, h.call('ExecProcess', { container_id: 'dup', exec_id: 'a/b', process: proc(['true']) }), Code.INVALID_ARGUMENT, /exec id/);
  await expectCode(t, h.call('ExecProcess', { container_id: 'dup', exec_id: 'np' }), Code.INVALID_ARGUMENT, /process is required/);
  await expectCode(t, h.call('WaitProcess', { container_id: 'dup', exec_id: 'nope' }), Code.NOT_FOUND, /nope/);
  await expectCode(t, h.call('ReadStdout', { container_id: 'dup', exec_id: '', len: 0 }), Code.INVALID_ARGUMENT, /len must be > 0/);
  await expectCode(t, h.call('SignalProcess', { container_id: 'dup', exec_id: '', signal: 65 }), Code.INVALID_ARGUMENT, /signal/);

  await expectCode(t, h.call('UpdateContainer', { container_id: 'nope' }), Code.NOT_FOUND, /nope/);
  await expectCode(t, h.call('ResumeContainer', { container_id: 'dup' }), Code.FAILED_PRECONDITION, /not paused/);
  await expectCode(t, h.client.call('grpc.AgentService', 'CreateContainer', Buffer.from([0xff, 0xff, 0xff])), Code.INVALID_ARGUMENT, /decode/);
  t.equal((await h.call('Check', {})).status, 1, 'the agent is still serving');
});

t.test('DestroySandbox removes the containers, then asks for shutdown; a pending GetOOMEvent ends unanswered with the connection', async (t) => {
  const h = await harness(t);
  await h.call('CreateSandbox', { hostname: 'sb', sandbox_id: 'sb1' });
  await expectCode(t, h.call('CreateSandbox', { hostname: 'sb', sandbox_id: 'sb1' }), Code.ALREADY_EXISTS);
  await run(h, 'd1', ['sleep', '1000']);
  await run(h, 'd2', ['sleep', '1000']);
  const wait = h.call('WaitProcess', { container_id: 'd1', exec_id: '' });
  const oom = h.call('GetOOMEvent', {});
  let shutdown = false;
  h.agent.once('shutdown', () => {
    shutdown = true;
  });
  let oomSettled = false;
  oom.then(
    () => (oomSettled = true),
    () => (oomSettled = true),
  );
  await h.call('DestroySandbox', {});
  t.equal((await wait).status, 137, 'the container was killed');
  await new Promise((resolve) => setImmediate(resolve));
  t.ok(shutdown, 'shutdown requested');
  t.equal(h.agent.sandbox.containers.size, 0);
  await expectCode(t, h.call('CreateContainer', { container_id: 'late', OCI: oci(['true']) }), Code.FAILED_PRECONDITION, /destroyed/);
  await expectCode(t, h.call('GetOOMEvent', {}), Code.FAILED_PRECONDITION, /destroyed/);
  t.notOk(oomSettled, 'the GetOOMEvent pending at DestroySandbox got no answer');
  // What the owner does on 'shutdown': the connection closes under the pending poll, which the
  // Go runtime reads as "ttrpc: closed" (an answer would read "the agent is shutting down").
  await h.agent.stop();
  await expectCode(t, oom, Code.UNAVAILABLE, /^connection closed/);
  t.equal(h.agent.service.core.longPolls.size, 0, 'its waiter was released');
});

// ---------------------------------------------------------------------------------------------
// Review regressions

const MiB = 1024 * 1024;


t.test('WriteStdin to a process that never reads: deadlines drop queued writes, 8 MiB bound, disconnect and RemoveContainer release', async (t) => {
  const h = await harness(t);
  await run(h, 'nr', ['sleep', '1000']);
  const stdin = h.agent.sandbox.getContainer('nr').init.stdio.stdin;
  const deadline = { timeoutNs: 300e6 };
  // The first write starts (the pipe takes 1 MiB: STDIO_PIPE_SIZE) and then waits; its deadline passes.
  await expectCode(t, h.call('WriteStdin', { container_id: 'nr', exec_id: '', data: Buffer.alloc(2 * MiB, 1) }, deadline), Code.DEADLINE_EXCEEDED);
  const afterFirst = stdin.pendingBytes;
  t.ok(afterFirst > 0 && afterFirst < 2 * MiB, `the started write stays, never torn (${afterFirst} bytes wait)`);
  // The second one never started: dropped when its deadline passed.
  await expectCode(t, h.call('WriteStdin', { container_id: 'nr', exec_id: '', data: Buffer.alloc(MiB, 2) }, deadline), Code.DEADLINE_EXCEEDED);
  await sleep(50); // the client's own timer may fire a little before the agent's
  t.equal(stdin.pendingBytes, afterFirst, 'the write whose deadline passed before it started was dropped');

  // Without deadlines the writes wait, up to 8 MiB; beyond, RESOURCE_EXHAUSTED at once.
  const waiting = [
    h.call('WriteStdin', { container_id: 'nr', exec_id: '', data: Buffer.alloc(3 * MiB, 3) }),
    h.call('WriteStdin', { container_id: 'nr', exec_id: '', data: Buffer.alloc(3 * MiB, 4) }),
  ].map((p) => p.catch((err: unknown) => err));
  await until(() => stdin.pendingBytes >= afterFirst + 6 * MiB);
  const full = stdin.pendingBytes;
  t.equal(full, afterFirst + 6 * MiB, 'both writes wait');
  await expectCode(
    t,
    h.call('WriteStdin', { container_id: 'nr', exec_id: '', data: Buffer.alloc(3 * MiB, 5) }),
    Code.RESOURCE_EXHAUSTED,
    /process "nr" of container nr: stdin write of 3145728 bytes refused: .*at most 8388608 bytes may wait/,
  );
  t.equal(stdin.pendingBytes, full, 'nothing of the refused write was queued');

  // A write from a connection that goes away before it started is dropped.
  const other = await TtrpcClient.connect(h.address);
  const dropped = h.callOn(other, 'WriteStdin', { container_id: 'nr', exec_id: '', data: Buffer.alloc(MiB, 6) }).catch((err: unknown) => err);
  await until(() => stdin.pendingBytes >= full + MiB);
  t.equal(stdin.pendingBytes, full + MiB, 'the other connection\'s write waits');
  await other.close();
  await dropped;
  await until(() => stdin.pendingBytes <= full);
  t.equal(stdin.pendingBytes, full, 'dropped when its connection closed');

  await h.call('RemoveContainer', { container_id: 'nr', timeout: 5 });
  for (const err of await Promise.all(waiting)) {
    // Removal kills the process: the write fails as the pipe breaks, the process exits or the
    // container goes, whichever control sees first.
    t.ok(err instanceof StatusError && err.code === Code.FAILED_PRECONDITION, `a waiting write fails on removal: ${(err as Error).message}`);
  }
  t.equal(stdin.pendingBytes, 0, 'everything released');
});

t.test('WriteStdin: a waiting write fails when the process exits; later writes are refused', async (t) => {
  const h = await harness(t);
  await run(h, 'ex', ['sleep', '1000']);
  // The exec process exits after 300 ms, its background child keeps the pipe open without reading.
  await h.call('ExecProcess', { container_id: 'ex', exec_id: 'bg', process: proc(['sh', '-c', 'exec 3<&0; sleep 3 <&3 3<&- & sleep 0.3']) });
  const w = h.call('WriteStdin', { container_id: 'ex', exec_id: 'bg', data: Buffer.alloc(2 * MiB) }); // more than the 1 MiB pipe
  await expectCode(t, w, Code.FAILED_PRECONDITION, /exited/);
  await expectCode(t, h.call('WriteStdin', { container_id: 'ex', exec_id: 'bg', data: Buffer.from('x') }), Code.FAILED_PRECONDITION, /exited/);
  t.equal((await h.call('WaitProcess', { container_id: 'ex', exec_id: 'bg' })).status, 0);
});

t.test('CreateContainer racing DestroySandbox: both answered, nothing left in the helper', async (t) => {
  for (const gap of [0, 1, 5, 10]) {
    await t.test(`DestroySandbox ${gap} ms after CreateContainer`, async (t) => {
      const h = await harness(t);
      await h.call('CreateSandbox', { hostname: 'sb', sandbox_id: 'race' });
      await run(h, 'old', ['sleep', '1000']);
      delayHelperOp(h, 'createContainer', 50); // the create is in flight when DestroySandbox comes
      let shutdown = false;
      h.agent.once('shutdown', () => {
        shutdown = true;
      });
      const create = h.call('CreateContainer', { container_id: 'new', OCI: oci(['sleep', '1000']) }).then(
        () => 'ok',
        (err: unknown) => err,
      );
      await sleep(gap);
      await h.call('DestroySandbox', {});
      const created = await create;
      t.ok(created === 'ok' || (created instanceof StatusError && created.code === Code.FAILED_PRECONDITION), `CreateContainer answered: ${String(created)}`);
      t.same(await helperState(h), { containers: [], processes: 0 }, 'the helper has no container left (the new one included)');
      t.equal(h.agent.sandbox.containers.size, 0);
      await expectCode(t, h.call('CreateContainer', { container_id: 'late', OCI: oci(['true']) }), Code.FAILED_PRECONDITION, /destroyed/);
      await expectCode(t, h.call('ExecProcess', { container_id: 'old', exec_id: 'x', process: proc(['true']) }), Code.FAILED_PRECONDITION, /destroyed/);
      await sleep(10);
      t.ok(shutdown, 'shutdown requested after the answers');
    });
  }
});

t.test('DestroySandbox refuses new CreateContainer and ExecProcess while it waits; a concurrent DestroySandbox gets the same answer', async (t) => {
  const h = await harness(t);
  await run(h, 'c1', ['sleep', '1000']);
  delayHelperOp(h, 'execProcess', 150);
  const exec = h.call('ExecProcess', { container_id: 'c1', exec_id: 'slow', process: proc(['sleep', '1000']) }).then(() => 'ok', (err: unknown) => err);
  await sleep(20);
  const destroy1 = h.call('DestroySandbox', {});
  const destroy2 = h.call('DestroySandbox', {});
  await sleep(20);
  await expectCode(t, h.call('CreateContainer', { container_id: 'n1', OCI: oci(['true']) }), Code.FAILED_PRECONDITION, /being destroyed/);
  await expectCode(t, h.call('ExecProcess', { container_id: 'c1', exec_id: 'n', process: proc(['true']) }), Code.FAILED_PRECONDITION, /being destroyed/);
  await Promise.all([destroy1, destroy2]);
  t.equal(await exec, 'ok', 'the exec in flight was answered before the sandbox went');
  t.same(await helperState(h), { containers: [], processes: 0 }, 'and its process was removed with the container');
});

t.test('CreateSandbox accepts an empty sandbox_id (as upstream); a bad one is INVALID_ARGUMENT naming the sandbox id', async (t) => {
  const h = await harness(t);
  await expectCode(t, h.call('CreateSandbox', { hostname: 'h', sandbox_id: '-bad' }), Code.INVALID_ARGUMENT, /^invalid sandbox id "-bad"/);
  await h.call('CreateSandbox', { hostname: 'h', sandbox_id: '' });
  t.equal(h.agent.sandbox.created, true);
  await expectCode(t, h.call('CreateSandbox', { hostname: 'h', sandbox_id: '' }), Code.ALREADY_EXISTS, /already created/);
});

t.test('ExecProcess racing RemoveContainer: FAILED_PRECONDITION or NOT_FOUND, never INVALID_ARGUMENT', async (t) => {
  const h = await harness(t);
  await run(h, 'r1', ['sleep', '1000']);
  delayHelperOp(h, 'removeContainer', 200);
  const remove = h.call('RemoveContainer', { container_id: 'r1', timeout: 5 });
  await sleep(20);
  await expectCode(t, h.call('ExecProcess', { container_id: 'r1', exec_id: 'x', process: proc(['true']) }), Code.FAILED_PRECONDITION, /being removed/);
  await remove;

  // The exec is in flight (slow helper) when the container is removed.
  await run(h, 'r2', ['sleep', '1000']);
  delayHelperOp(h, 'execProcess', 150);
  const exec = h.call('ExecProcess', { container_id: 'r2', exec_id: 'x', process: proc(['sleep', '1000']) }).then(() => null, (err: unknown) => err as StatusError);
  await sleep(20);
  await h.call('RemoveContainer', { container_id: 'r2', timeout: 5 });
  const err = await exec;
  t.ok(err !== null && (err.code === Code.FAILED_PRECONDITION || err.code === Code.NOT_FOUND), `the exec fails FAILED_PRECONDITION or NOT_FOUND: ${String(err)}`);
  t.same(await helperState(h), { containers: [], processes: 0 }, 'no exec process survived the removal');
});

t.test('sandbox_pidns after the first container was removed: FAILED_PRECONDITION "the sandbox pid namespace is gone"', async (t) => {
  const h = await harness(t);
  await h.call('CreateSandbox', { hostname: 'sb', sandbox_id: 'pidns' });
  await run(h, 'pause', ['sleep', '1000']);
  t.equal(h.agent.sandbox.pidns, `/proc/${h.agent.sandbox.getContainer('pause').init.pid}/ns/pid`, 'the first container owns the sandbox pid namespace');
  await h.call('RemoveContainer', { container_id: 'pause', timeout: 5 });
  t.equal(h.agent.sandbox.pidns, null, 'the path is not kept dangling');
  await expectCode(t, h.call('CreateContainer', { container_id: 'w1', OCI: oci(['true']), sandbox_pidns: true }), Code.FAILED_PRECONDITION, /the sandbox pid namespace is gone/);
  // A later container does not take its place (as upstream: only the first container).
  await run(h, 'w2', ['sleep', '1000']);
  t.equal(h.agent.sandbox.pidns, null);
  await expectCode(t, h.call('CreateContainer', { container_id: 'w3', OCI: oci(['true']), sandbox_pidns: true }), Code.FAILED_PRECONDITION, /the sandbox pid namespace is gone/);
});

t.test('sandbox_pidns when the owner\'s init has exited: FAILED_PRECONDITION', async (t) => {
  const h = await harness(t);
  await run(h, 'first', ['sh', '-c', 'exit 0']);
  t.equal((await h.call('WaitProcess', { container_id: 'first', exec_id: '' })).status, 0);
  await expectCode(t, h.call('CreateContainer', { container_id: 'w1', OCI: oci(['true']), sandbox_pidns: true }), Code.FAILED_PRECONDITION, /the sandbox pid namespace is gone: the init of container first.*has exited/);
});

t.test('the helper goes away: an in-flight WaitProcess and helper call get UNAVAILABLE "the helper connection was lost", answered before the agent stops', async (t) => {
  const h = await harness(t);
  await run(h, 'w1', ['sleep', '1000']);
  delayHelperOp(h, 'execProcess', 10_000);
  h.agent.once('helper-lost', () => void h.agent.stop()); // as control/main.ts does
  const wait = h.call('WaitProcess', { container_id: 'w1', exec_id: '' });
  const exec = h.call('ExecProcess', { container_id: 'w1', exec_id: 'x', process: proc(['true']) });
  await sleep(50);
  h.pair.server.close(); // the helper's end of the connection goes away
  await expectCode(t, wait, Code.UNAVAILABLE, /the helper connection was lost/);
  await expectCode(t, exec, Code.UNAVAILABLE, /the helper connection was lost/);
});

t.test('a spec over the helper packet limit: RESOURCE_EXHAUSTED "OCI spec too large" with the size and the limit', async (t) => {
  const h = await harness(t);
  const env = Array.from({ length: 3000 }, (_, i) => `VAR_${i}=${'x'.repeat(100)}`);
  const spec = oci(['true']);
  spec.Process = { ...spec.Process, Env: env };
  await expectCode(
    t,
    h.call('CreateContainer', { container_id: 'big', OCI: spec }),
    Code.RESOURCE_EXHAUSTED,
    /^OCI spec too large: the container plan is \d+ bytes, the agent accepts at most 196608 \(e\.g\. fewer or shorter env entries \/ args \/ mounts\)$/,
  );
  t.equal(h.agent.sandbox.containers.size, 0);
  await run(h, 'small', ['sleep', '1000']);
  await expectCode(
    t,
    h.call('ExecProcess', { container_id: 'small', exec_id: 'big', process: { ...proc(['true']), Env: env } }),
    Code.RESOURCE_EXHAUSTED,
    /^OCI process too large: the process plan is \d+ bytes, the agent accepts at most 196608/,
  );
  // The exec id is free again.
  await h.call('ExecProcess', { container_id: 'small', exec_id: 'big', process: proc(['true']) });
  t.equal((await h.call('WaitProcess', { container_id: 'small', exec_id: 'big' })).status, 0);
});
