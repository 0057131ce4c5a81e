// Resource bounds of the control plane (docs/ARCHITECTURE.md "Threat model: resource bounds in
// control"): helper call deadlines and the liveness check (a helper stopped by SIGSTOP), waits,
// reads, writes and long polls released when their call ends, and the byte budget of unread
// output of exited processes (DATA_LOSS, never a silent EOF).
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Agent } from '../../control/agent';
import { defaultConfig } from '../../control/config';
import { METHODS, type MethodName, type MethodSpec, type RequestOf, type ResponseOf } from '../../control/ctl/methods';
import type { AgentLimits } from '../../control/rpc';
import { TtrpcClient, type CallOptions } from '../../control/ttrpc';
import { startMockPair } from '../../helper/mock/main';
import { HelperClient } from '../../shared/helper-client';
import type { HelperConnection } from '../../control/helper';
import { Code, StatusError } from '../../shared/protocol';
import type { grpc } from '../../shared/generated/protos';

const root = path.resolve(__dirname, '..', '..', '..');
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(cond: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await cond()) return true;
    await sleep(20);
  }
  return cond();
}

interface Harness {
  agent: Agent;
  call<K extends MethodName>(name: K, req: RequestOf<K>, opts?: CallOptions): Promise<ResponseOf<K>>;
}

async function harness(t: Test, helper: HelperConnection, limits: AgentLimits, cleanup: () => Promise<void>): Promise<Harness> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-bounds-'));
  const address = `unix://${path.join(dir, 'agent.sock')}`;
  const agent = new Agent({ config: { ...defaultConfig(), serverAddr: address, debugAddr: '' }, helper, defaultRemoveTimeoutMs: 5000, limits });
  await agent.start();
  const client = await TtrpcClient.connect(address);
  t.teardown(async () => {
    await client.close();
    await agent.stop();
    await cleanup();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const call = async <K extends MethodName>(name: K, req: RequestOf<K>, opts?: CallOptions): Promise<ResponseOf<K>> => {
    const spec = METHODS[name] as unknown as MethodSpec<object, object, object, object>;
    const reply = await client.call(spec.service, spec.method, spec.request.encode(req).finish(), opts);
    return spec.response.decode(reply) as ResponseOf<K>;
  };
  return { agent, call };
}

async function mockHarness(t: Test, limits: AgentLimits = {}): Promise<Harness & { pair: Awaited<ReturnType<typeof startMockPair>> }> {
  const pair = await startMockPair();
  const h = await harness(t, pair.client, limits, () => pair.close());
  return { ...h, pair };
}

function oci(args: string[]): grpc.Spec.$Properties {
  return {
    Version: '1.0.2',
    Root: { Path: '/run/kata-test/rootfs' }, // the mock helper runs on the host and ignores it
    Process: { Args: args, Env: ['PATH=/usr/bin:/bin', 'HOME=/'], Cwd: '/', Terminal: false },
    Linux: { Namespaces: [{ Type: 'mount' }, { Type: 'ipc' }, { Type: 'uts' }, { Type: 'pid' }] },
  };
}

async function running(h: Harness, id: string, args: string[]): Promise<void> {
  await h.call('CreateContainer', { container_id: id, OCI: oci(args) });
  await h.call('StartContainer', { container_id: id });
}

async function rejection(p: Promise<unknown>): Promise<StatusError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof StatusError) return err;
    throw err;
  }
  throw new Error('expected the call to fail, it succeeded');
}

/** Read a stream to its end: the bytes and the error that ended it. */
async function readAll(h: Harness, method: 'ReadStdout' | 'ReadStderr', container_id: string, exec_id: string): Promise<{ data: Buffer; end: StatusError }> {
  const parts: Buffer[] = [];
  for (;;) {
    try {
      parts.push(Buffer.from((await h.call(method, { container_id, exec_id, len: 1 << 20 })).data));
    } catch (err) {
      if (err instanceof StatusError) return { data: Buffer.concat(parts), end: err };
      throw err;
    }
  }
}

// --- item 1: helper call deadlines and liveness -------------------------------------------------

t.test('the helper answers ping (a liveness probe the server answers itself, mock included)', async (t) => {
  const pair = await startMockPair();
  t.teardown(() => pair.close());
  const { result } = await pair.client.call('ping', {});
  t.equal(result.pid, process.pid, 'the in-process mock answers with its pid');
});

t.test('a helper call that outlives its deadline fails DEADLINE_EXCEEDED naming the op; the live helper stays usable', async (t) => {
  const h = await mockHarness(t, { helperCallTimeoutMs: 300, helperProbeAfterMs: 100, helperPingTimeoutMs: 2000 });
  await h.call('CreateSandbox', { hostname: 'sb', sandbox_id: 'sandbox-1' });
  await h.call('CreateContainer', { container_id: 'slow', OCI: oci(['sleep', '1000']) });
  const backend = h.pair.backend as unknown as Record<string, (args: unknown) => Promise<unknown>>;
  const original = backend.startContainer.bind(h.pair.backend);
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  backend.startContainer = async (args: unknown) => {
    await gate; // an op stuck in a live helper (the ping still answers)
    return original(args);
  };
  const err = await rejection(h.call('StartContainer', { container_id: 'slow' }));
  t.equal(err.code, Code.DEADLINE_EXCEEDED);
  t.match(err.message, /helper did not answer startContainer within 300 ms/);
  t.equal(h.agent.service.core.liveness.responsive, true, 'the helper answered its pings: not declared unresponsive');
  release();
  backend.startContainer = original;
  await h.call('RemoveContainer', { container_id: 'slow', timeout: 5 });
});

t.test('a helper stopped by SIGSTOP: pending and new rpcs answer UNAVAILABLE, SIGCONT recovers, the abandoned create is undone', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-stopped-helper-'));
  const socket = path.join(dir, 'helper.sock');
  const helperProc: ChildProcess = spawn(process.execPath, [path.join(root, 'bin', 'kata-agent-helper'), '--mock', '--socket', socket, '--log-level', 'warn'], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => helperProc.once('exit', () => resolve()));
  t.ok(await waitFor(() => fs.existsSync(socket), 10_000), 'the mock helper listens');
  const client = await HelperClient.connect(socket);
  const h = await harness(t, client, { helperPingTimeoutMs: 300, helperProbeAfterMs: 300 }, async () => {
    helperProc.kill('SIGCONT');
    helperProc.kill('SIGTERM'); // the mock kills its processes on SIGTERM
    const killer = setTimeout(() => helperProc.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(killer);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await h.call('CreateSandbox', { hostname: 'sb', sandbox_id: 'sandbox-1' });

  t.ok(helperProc.kill('SIGSTOP'), 'helper stopped');
  const pending = await rejection(h.call('CreateContainer', { container_id: 'c1', OCI: oci(['sleep', '1000']) }, { timeoutNs: 60e9 }));
  t.equal(pending.code, Code.UNAVAILABLE, 'a pending rpc is answered UNAVAILABLE, not left hanging');
  t.match(pending.message, /the helper is not answering .*createContainer/);
  t.equal(h.agent.service.core.liveness.responsive, false);
  const later = await rejection(h.call('CreateContainer', { container_id: 'c2', OCI: oci(['sleep', '1000']) }, { timeoutNs: 60e9 }));
  t.equal(later.code, Code.UNAVAILABLE, 'a new rpc is answered UNAVAILABLE too');
  t.match(later.message, /the helper is not answering/);

  t.ok(helperProc.kill('SIGCONT'), 'helper continued');
  await h.call('CreateContainer', { container_id: 'c3', OCI: oci(['sleep', '1000']) });
  t.equal(h.agent.service.core.liveness.responsive, true, 'the helper is declared responsive again');
  await h.call('StartContainer', { container_id: 'c3' });
  await h.call('RemoveContainer', { container_id: 'c3', timeout: 5 });
  const helperContainers = async (): Promise<string[]> => (await client.call('state', { withFds: false })).result.containers.map((c) => c.containerId);
  t.ok(await waitFor(async () => (await helperContainers()).length === 0, 10_000), 'the create carried out after SIGCONT was undone');
  t.same(await helperContainers(), [], 'the helper holds no container control does not know');
});

// --- item 5: every waiter, reader and writer is released when its call ends ------------------

t.test('WaitProcess, ReadStdout, WriteStdin and GetOOMEvent that end by deadline release their waiter', async (t) => {
  const h = await mockHarness(t);
  await h.call('CreateSandbox', { hostname: 'sb', sandbox_id: 'sandbox-1' });
  await running(h, 'long', ['sleep', '1000']);
  const sandbox = h.agent.sandbox;

  const held = h.call('WaitProcess', { container_id: 'long', exec_id: '' });
  t.ok(await waitFor(() => sandbox.pendingCalls().waits === 1, 5000), 'a pending WaitProcess is counted');

  const N = 2000;
  for (let i = 0; i < N; i += 250) {
    const batch: Promise<StatusError>[] = [];
    for (let j = 0; j < 250; j++) batch.push(rejection(h.call('WaitProcess', { container_id: 'long', exec_id: '' }, { timeoutNs: 1e6 })));
    for (const err of await Promise.all(batch)) if (err.code !== Code.DEADLINE_EXCEEDED) t.fail(`unexpected ${err.code} ${err.message}`);
  }
  t.ok(await waitFor(() => sandbox.pendingCalls().waits === 1, 5000), `${N} timed-out waits left nothing behind`);
  t.equal(sandbox.pendingCalls().waits, 1, 'only the wait without a deadline is pending');

  const reads = await Promise.all(Array.from({ length: 200 }, () => rejection(h.call('ReadStdout', { container_id: 'long', exec_id: '', len: 10 }, { timeoutNs: 1e6 }))));
  t.ok(reads.every((e) => e.code === Code.DEADLINE_EXCEEDED));
  t.ok(await waitFor(() => sandbox.pendingCalls().reads === 0, 5000), 'timed-out reads left nothing behind');

  // `sleep` never reads stdin: a 2 MiB write fills the 1 MiB pipe and stays pending (it started,
  // so it runs to its end); later writes with a deadline are withdrawn.
  const big = rejection(h.call('WriteStdin', { container_id: 'long', exec_id: '', data: Buffer.alloc(2 << 20, 1) }));
  t.ok(await waitFor(() => sandbox.pendingCalls().writes === 1, 5000));
  const writes = await Promise.all(Array.from({ length: 200 }, () => rejection(h.call('WriteStdin', { container_id: 'long', exec_id: '', data: Buffer.alloc(100, 2) }, { timeoutNs: 1e6 }))));
  t.ok(writes.every((e) => e.code === Code.DEADLINE_EXCEEDED));
  t.ok(await waitFor(() => sandbox.pendingCalls().writes === 1, 5000), 'timed-out writes left nothing behind');

  const polls = await Promise.all(Array.from({ length: 200 }, () => rejection(h.call('GetOOMEvent', {}, { timeoutNs: 1e6 }))));
  t.ok(polls.every((e) => e.code === Code.DEADLINE_EXCEEDED));
  t.ok(await waitFor(() => h.agent.service.core.longPolls.size === 0, 5000), 'timed-out long polls left nothing behind');

  await h.call('SignalProcess', { container_id: 'long', exec_id: '', signal: 9 });
  t.equal((await held).status, 137, 'the wait without a deadline still gets the status');
  t.equal((await big).code, Code.FAILED_PRECONDITION, 'the pending write fails once the process exited');
  t.same(sandbox.pendingCalls(), { waits: 0, reads: 0, writes: 0 }, 'nothing is left waiting');
  await h.call('RemoveContainer', { container_id: 'long', timeout: 5 });
});

// --- item 8: unread output of exited processes ---------------------------------------------------

t.test('more than 64 exited execs with unread output: every byte is still readable (was: dropped, EOF)', async (t) => {
  const h = await mockHarness(t);
  await h.call('CreateSandbox', { hostname: 'sb', sandbox_id: 'sandbox-1' });
  await running(h, 'cc', ['sleep', '1000']);
  const n = 70;
  for (let i = 0; i < n; i++) {
    await h.call('ExecProcess', { container_id: 'cc', exec_id: `e${i}`, process: oci(['sh', '-c', `echo out-${i}`]).Process! });
    await h.call('WaitProcess', { container_id: 'cc', exec_id: `e${i}` });
  }
  for (let i = 0; i < n; i++) {
    const { data, end } = await readAll(h, 'ReadStdout', 'cc', `e${i}`);
    if (data.toString() !== `out-${i}\n` || end.code !== Code.OUT_OF_RANGE) t.fail(`exec e${i}: got ${JSON.stringify(data.toString())} then ${end.code}`);
  }
  t.pass(`all ${n} outputs complete`);
  await h.call('RemoveContainer', { container_id: 'cc', timeout: 5 });
});

t.test('the unread-output budget drops the oldest exits first and their reads fail DATA_LOSS, never EOF', async (t) => {
  const budget = 100_000;
  const h = await mockHarness(t, { unreadOutputBudget: budget });
  await h.call('CreateSandbox', { hostname: 'sb', sandbox_id: 'sandbox-1' });
  await running(h, 'cc', ['sleep', '1000']);
  for (const id of ['e1', 'e2', 'e3']) {
    await h.call('ExecProcess', { container_id: 'cc', exec_id: id, process: oci(['sh', '-c', 'head -c 40000 /dev/zero']).Process! });
    await h.call('WaitProcess', { container_id: 'cc', exec_id: id });
  }
  const e1 = h.agent.sandbox.getContainer('cc').getProcess('e1');
  t.ok(await waitFor(() => e1.stdio.stdout.lostError !== null, 5000), 'e1 (the oldest exit) lost its output');
  t.ok(h.agent.service.core.outputBudget.unreadBytes <= budget, 'what is kept stays within the budget');
  for (let i = 0; i < 2; i++) {
    const err = await rejection(h.call('ReadStdout', { container_id: 'cc', exec_id: 'e1', len: 1 << 20 }));
    t.equal(err.code, Code.DATA_LOSS, `read ${i + 1} of the dropped stream says data was lost`);
    t.match(err.message, /stdout of process "e1" of container cc: 40000 unread bytes .* budget of 100000 bytes/);
  }
  const e1err = await readAll(h, 'ReadStderr', 'cc', 'e1');
  t.equal(e1err.end.code, Code.OUT_OF_RANGE, 'an empty stderr lost nothing: EOF');
  for (const id of ['e2', 'e3']) {
    const { data, end } = await readAll(h, 'ReadStdout', 'cc', id);
    t.equal(data.length, 40000, `${id} kept all its output`);
    t.equal(end.code, Code.OUT_OF_RANGE);
  }
  await h.call('RemoveContainer', { container_id: 'cc', timeout: 5 });
});
