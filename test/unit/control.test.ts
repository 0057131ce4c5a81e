// control/config.ts and control/main.ts (the kata-agent command) with the out-of-process mock
// helper (`kata-agent-helper --mock`).
import t, { type Test } from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { DEFAULT_DEBUG_ADDR, DEFAULT_SERVER_ADDR, loadConfig, parseDebugAddr } from '../../control/config';
import { connectHelper } from '../../control/main';
import { METHODS } from '../../control/ctl/methods';
import { FrameType, TtrpcClient, encodeFrame } from '../../control/ttrpc';
import { ttrpc } from '../../shared/proto';
import { connectAsUid } from '../lib/as-uid';
import { silentLogger } from '../../shared/log';
import { Code, DEFAULT_HELPER_SOCKET } from '../../shared/protocol';

const root = path.resolve(__dirname, '..', '..', '..');

t.test('config: defaults, environment, flags (flags win)', async (t) => {
  const d = loadConfig([], {}, { cmdline: '' });
  const uid = process.getuid?.() ?? 0;
  const sec = { serverPeerUid: uid, allowAbstractSocket: false };
  t.match(d, { help: false, config: { serverAddr: DEFAULT_SERVER_ADDR, helperSocket: DEFAULT_HELPER_SOCKET, logLevel: 'info', debugAddr: DEFAULT_DEBUG_ADDR, ...sec } });
  t.equal(DEFAULT_SERVER_ADDR, 'vsock://-1:1024');
  t.equal(DEFAULT_DEBUG_ADDR, 'unix:///run/kata-agent/control/debug.sock', 'the debug endpoint is a unix socket by default, not a TCP port containers could reach');
  const env = {
    KATA_AGENT_SERVER_ADDR: 'unix:///tmp/a.sock',
    KATA_AGENT_HELPER_SOCKET: '/tmp/h.sock',
    KATA_AGENT_LOG_LEVEL: 'warning',
    KATA_AGENT_DEBUG_ADDR: '',
  };
  t.match(loadConfig([], env), { help: false, config: { serverAddr: 'unix:///tmp/a.sock', helperSocket: '/tmp/h.sock', logLevel: 'warn', debugAddr: '', ...sec } });
  t.match(
    loadConfig(['--server-address', 'unix://@x', '--helper-socket', '@h', '--debug-addr', '[::1]:9', '--log-level', 'debug'], env),
    { help: false, config: { serverAddr: 'unix://@x', helperSocket: '@h', logLevel: 'debug', debugAddr: '[::1]:9', ...sec } },
  );
  t.match(
    loadConfig(['--server-peer-uid', '1000', '--allow-abstract-socket', '--max-connections', '64', '--max-inflight', '8', '--frame-timeout-ms', '250'], {}),
    { help: false, config: { serverAddr: DEFAULT_SERVER_ADDR, helperSocket: DEFAULT_HELPER_SOCKET, logLevel: 'info', debugAddr: DEFAULT_DEBUG_ADDR, serverPeerUid: 1000, allowAbstractSocket: true, maxConnections: 64, maxInflight: 8, frameTimeoutMs: 250 } },
  );
  t.match(
    loadConfig([], { KATA_AGENT_SERVER_PEER_UID: '7', KATA_AGENT_ALLOW_ABSTRACT_SOCKET: '1', KATA_AGENT_MAX_CONNECTIONS: '5', KATA_AGENT_MAX_INFLIGHT: '6', KATA_AGENT_FRAME_TIMEOUT_MS: '0' }),
    { help: false, config: { serverAddr: DEFAULT_SERVER_ADDR, helperSocket: DEFAULT_HELPER_SOCKET, logLevel: 'info', debugAddr: DEFAULT_DEBUG_ADDR, serverPeerUid: 7, allowAbstractSocket: true, maxConnections: 5, maxInflight: 6, frameTimeoutMs: 0 } },
  );
  t.throws(() => loadConfig(['--server-peer-uid=-1'], {}), { code: Code.INVALID_ARGUMENT, message: /"-1"/ });
  t.throws(() => loadConfig(['--max-connections', '0'], {}), { code: Code.INVALID_ARGUMENT, message: /"0"/ });
  t.throws(() => loadConfig([], { KATA_AGENT_ALLOW_ABSTRACT_SOCKET: 'maybe' }), { code: Code.INVALID_ARGUMENT, message: /"maybe"/ });
  t.same(loadConfig(['-h'], {}), { help: true });
  t.throws(() => loadConfig(['--bogus'], {}), { code: Code.INVALID_ARGUMENT, message: /bogus/ });
  t.throws(() => loadConfig(['--log-level', 'loud'], {}), { code: Code.INVALID_ARGUMENT, message: /"loud"/ });
  t.throws(() => loadConfig([], { KATA_AGENT_DEBUG_ADDR: 'nohost' }), { code: Code.INVALID_ARGUMENT, message: /"nohost"/ });
  t.throws(() => loadConfig(['--server-address', ''], {}), { code: Code.INVALID_ARGUMENT });
  t.same(parseDebugAddr('127.0.0.1:9099'), { kind: 'tcp', host: '127.0.0.1', port: 9099 });
  t.same(parseDebugAddr('[::1]:80'), { kind: 'tcp', host: '::1', port: 80 });
  t.same(parseDebugAddr('unix:///run/kata-agent/debug.sock'), { kind: 'unix', path: '/run/kata-agent/debug.sock' });
  t.throws(() => parseDebugAddr('127.0.0.1:70000'), { code: Code.INVALID_ARGUMENT });
  t.throws(() => parseDebugAddr('unix://relative.sock'), { code: Code.INVALID_ARGUMENT, message: /unix:\/\/\/absolute\/path/ });
  t.throws(() => parseDebugAddr('unix://@abstract'), { code: Code.INVALID_ARGUMENT, message: /abstract sockets are not allowed/ });
  t.throws(() => parseDebugAddr(`unix:///${'x'.repeat(120)}`), { code: Code.INVALID_ARGUMENT });
  t.match(loadConfig(['--debug-addr', 'unix:///tmp/d.sock'], {}), { help: false, config: { serverAddr: DEFAULT_SERVER_ADDR, helperSocket: DEFAULT_HELPER_SOCKET, logLevel: 'info', debugAddr: 'unix:///tmp/d.sock', ...sec } });
});

t.test('connectHelper gives up with UNAVAILABLE naming the socket', async (t) => {
  const start = Date.now();
  await t.rejects(connectHelper('/nonexistent/helper.sock', silentLogger(), 300), { code: Code.UNAVAILABLE, message: /\/nonexistent\/helper.sock/ });
  t.ok(Date.now() - start >= 250, 'it retried until the deadline');
});

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (cond()) return true;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return cond();
}

function exitCode(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

interface Running {
  dir: string;
  agent: ChildProcess;
  helper: () => ChildProcess;
  stderr: () => string;
  address: string;
  debugPort: number;
}

/**
 * Start `kata-agent`, then (after a delay, to exercise the connect retry) the mock helper. The
 * debug endpoint listens on 127.0.0.1:`debugPort`, or on `debugAddr` when given.
 */
async function startAgent(t: Test, opts: { debugAddr?: string; address?: string; args?: string[] } = {}): Promise<Running> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-agent-main-'));
  const helperSocket = path.join(dir, 'helper.sock');
  const agentSocket = path.join(dir, 'agent.sock');
  const address = opts.address ?? `unix://${agentSocket}`;
  const debugPort = await freePort();
  let stderr = '';
  const agent = spawn(
    process.execPath,
    [path.join(root, 'bin', 'kata-agent'), '--server-address', address, '--helper-socket', helperSocket, '--debug-addr', (opts.debugAddr ?? `127.0.0.1:${debugPort}`).replace('$DIR', dir), ...(opts.args ?? [])],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, KATA_AGENT_LOG_LEVEL: 'info' } },
  );
  agent.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  await new Promise((resolve) => setTimeout(resolve, 300));
  const helper = spawn(process.execPath, [path.join(root, 'bin', 'kata-agent-helper'), '--mock', '--socket', helperSocket, '--log-level', 'warn'], {
    stdio: 'ignore',
  });
  t.teardown(async () => {
    agent.kill('SIGKILL');
    helper.kill('SIGKILL');
    await Promise.all([exitCode(agent), exitCode(helper)]);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  t.ok(await waitFor(() => stderr.includes('"announce"'), 10_000), 'the agent announced itself');
  return { dir, agent, helper: () => helper, stderr: () => stderr, address, debugPort };
}

t.test('kata-agent: waits for the helper, serves ttRPC and the debug endpoint, exits after DestroySandbox', async (t) => {
  const r = await startAgent(t);
  const announce = r.stderr().split('\n').filter((l) => l.includes('"announce"')).map((l) => JSON.parse(l) as Record<string, unknown>)[0];
  t.equal(announce.address, r.address);
  t.equal(typeof announce.version, 'string');

  const health = await fetch(`http://127.0.0.1:${r.debugPort}/healthz`);
  t.same(await health.json(), { status: 'ok' });

  const client = await TtrpcClient.connect(r.address);
  t.teardown(() => client.close());
  const check = METHODS.Check.response.decode(await client.call('grpc.Health', 'Check', METHODS.Check.request.encode({}).finish()));
  t.equal(check.status, 1);
  const spec = {
    Root: { Path: '/run/kata-test/rootfs' }, // the mock helper runs on the host and ignores it ("/" is refused)
    Process: { Args: ['sh', '-c', 'echo hi'], Env: ['PATH=/usr/bin:/bin'], Cwd: '/' },
    Linux: { Namespaces: [{ Type: 'mount' }, { Type: 'pid' }] },
  };
  await client.call('grpc.AgentService', 'CreateSandbox', METHODS.CreateSandbox.request.encode({ hostname: 'h', sandbox_id: 'sb1' }).finish());
  await client.call('grpc.AgentService', 'CreateContainer', METHODS.CreateContainer.request.encode({ container_id: 'c1', OCI: spec }).finish());
  await client.call('grpc.AgentService', 'StartContainer', METHODS.StartContainer.request.encode({ container_id: 'c1' }).finish());
  const out = METHODS.ReadStdout.response.decode(
    await client.call('grpc.AgentService', 'ReadStdout', METHODS.ReadStdout.request.encode({ container_id: 'c1', len: 100 }).finish()),
  );
  t.equal(Buffer.from(out.data).toString(), 'hi\n');
  const sandbox = (await (await fetch(`http://127.0.0.1:${r.debugPort}/v1/sandbox`)).json()) as { id: string; containers: Array<{ id: string }> };
  t.equal(sandbox.id, 'sb1');
  t.same(sandbox.containers.map((c) => c.id), ['c1']);

  await client.call('grpc.AgentService', 'DestroySandbox', METHODS.DestroySandbox.request.encode({}).finish());
  t.equal(await exitCode(r.agent), 0, 'the agent exits 0 after DestroySandbox');
});

t.test('kata-agent: SIGTERM stops it cleanly', async (t) => {
  const r = await startAgent(t);
  r.agent.kill('SIGTERM');
  t.equal(await exitCode(r.agent), 0);
  t.match(r.stderr(), /"reason":"SIGTERM"/);
});

t.test('kata-agent: repeated SIGTERMs while it stops are ignored; it exits 0, never killed by a signal', async (t) => {
  // Review: the handler was removed before process.exit, so a second SIGTERM in that window
  // killed the process ("control exit null").
  const r = await startAgent(t);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    r.agent.once('exit', (code, signal) => resolve({ code, signal })),
  );
  let sent = 0;
  let done = false;
  void exited.then(() => {
    done = true;
  });
  while (!done) {
    try {
      process.kill(r.agent.pid!, 'SIGTERM');
      sent++;
    } catch {
      break; // gone
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
  t.same(await exited, { code: 0, signal: null }, `exit 0 after ${sent} SIGTERMs`);
  t.ok(sent > 1, 'more than one SIGTERM was sent while it stopped');
});

t.test('kata-agent: the debug endpoint on a unix socket, mode 0600', async (t) => {
  const r = await startAgent(t, { debugAddr: 'unix://$DIR/debug.sock' });
  const sock = path.join(r.dir, 'debug.sock');
  t.equal(fs.statSync(sock).mode & 0o777, 0o600);
  const body = await new Promise<string>((resolve, reject) => {
    http.get({ socketPath: sock, path: '/healthz' }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => resolve(text));
    }).on('error', reject);
  });
  t.same(JSON.parse(body), { status: 'ok' });
  const announce = r.stderr().split('\n').filter((l) => l.includes('"announce"')).map((l) => JSON.parse(l) as Record<string, unknown>)[0];
  t.equal(announce.debugAddr, `unix://${sock}`);
  r.agent.kill('SIGTERM');
  t.equal(await exitCode(r.agent), 0);
  t.notOk(fs.existsSync(sock), 'the socket file is removed when the agent stops');
});

t.test('kata-agent: losing the helper makes it exit 1; an in-flight WaitProcess is answered UNAVAILABLE first', async (t) => {
  const r = await startAgent(t);
  const client = await TtrpcClient.connect(r.address);
  t.teardown(() => client.close());
  const spec = {
    Root: { Path: '/run/kata-test/rootfs' }, // the mock helper ignores it ("/" is refused)
    Process: { Args: ['sleep', '1000'], Env: ['PATH=/usr/bin:/bin'], Cwd: '/' },
    Linux: { Namespaces: [{ Type: 'mount' }, { Type: 'pid' }] },
  };
  await client.call('grpc.AgentService', 'CreateContainer', METHODS.CreateContainer.request.encode({ container_id: 'c1', OCI: spec }).finish());
  await client.call('grpc.AgentService', 'StartContainer', METHODS.StartContainer.request.encode({ container_id: 'c1' }).finish());
  const wait = client.call('grpc.AgentService', 'WaitProcess', METHODS.WaitProcess.request.encode({ container_id: 'c1', exec_id: '' }).finish()).then(
    () => null,
    (err: unknown) => err as { code?: number; message?: string },
  );
  // The mock helper runs `sleep` on the host; killing the helper orphans it, so kill it here.
  const info = (await (await fetch(`http://127.0.0.1:${r.debugPort}/v1/containers/c1`)).json()) as { pid?: number };
  t.ok(typeof info.pid === 'number' && info.pid > 0, `the container's host pid ${info.pid}`);
  t.teardown(() => {
    try {
      if (info.pid) process.kill(info.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  });
  await new Promise((resolve) => setTimeout(resolve, 100));
  r.helper().kill('SIGKILL');
  const err = await wait;
  t.equal(err?.code, Code.UNAVAILABLE, `WaitProcess: ${err?.message}`);
  t.match(err?.message, /the helper connection was lost/, 'the agent answered (not "connection closed by the server")');
  t.equal(await exitCode(r.agent), 1);
  t.match(r.stderr(), /connection to the helper lost/);
});

function healthFrame(): Buffer {
  return encodeFrame(1, FrameType.REQUEST, 0, ttrpc.Request.encode({ service: 'grpc.Health', method: 'Check', payload: METHODS.Check.request.encode({}).finish() }).finish());
}

async function healthCheck(address: string): Promise<number | null | undefined> {
  const client = await TtrpcClient.connect(address);
  try {
    return METHODS.Check.response.decode(await client.call('grpc.Health', 'Check', METHODS.Check.request.encode({}).finish())).status;
  } finally {
    client.close();
  }
}

/** Run kata-agent with `args` to its exit; its exit code and stderr. */
async function runAgentToExit(args: string[]): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [path.join(root, 'bin', 'kata-agent'), ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await exitCode(child);
  return { code, stderr };
}

t.test('kata-agent (security item 10): a second agent on a live socket exits 1 with a clear error; the first keeps serving', async (t) => {
  const r = await startAgent(t);
  const second = await runAgentToExit(['--server-address', r.address, '--helper-socket', path.join(r.dir, 'no-helper.sock'), '--debug-addr', '']);
  t.equal(second.code, 1);
  t.match(second.stderr, /another agent is serving .*agent\.sock; refusing to start/);
  t.ok(fs.statSync(r.address.slice('unix://'.length)).isSocket(), 'the socket file is still there');
  t.equal(await healthCheck(r.address), 1, 'the first agent still answers Health.Check (SERVING)');
});

t.test('kata-agent (security item 10): a stale socket file is replaced', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-agent-stale-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const stale = path.join(dir, 'agent.sock');
  const made = spawnSync(process.execPath, ['-e', `require('node:net').createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, 'SIGKILL'))`]);
  t.equal(made.signal, 'SIGKILL');
  t.ok(fs.lstatSync(stale).isSocket(), 'a stale socket file is left behind');
  const r = await startAgent(t, { address: `unix://${stale}` });
  t.equal(await healthCheck(r.address), 1);
  t.equal(fs.statSync(stale).mode & 0o777, 0o600, 'the new socket is mode 0600');
});

t.test('kata-agent (security item 3): an abstract address is refused without --allow-abstract-socket', async (t) => {
  const res = await runAgentToExit(['--server-address', `unix://@kata-agent-test-${process.pid}`, '--helper-socket', '/nonexistent/h.sock', '--debug-addr', '']);
  t.equal(res.code, 1);
  t.match(res.stderr, /refusing to listen on the abstract socket/);
});

t.test('kata-agent (security item 3): a peer with another uid is refused and logged; root is served', { skip: process.getuid?.() !== 0 ? 'needs root to connect as uid 65534' : false }, async (t) => {
  // On an abstract socket (what a container could reach) the uid check is the only barrier.
  const r = await startAgent(t, { address: `unix://@kata-agent-peer-${process.pid}-${Date.now()}`, args: ['--allow-abstract-socket', '--server-peer-uid', '1234'] });
  const nobody = await connectAsUid(r.address, healthFrame());
  t.ok(nobody.connected, 'the kernel accepted the connection');
  t.notOk(nobody.answered, `uid 65534 got no answer: ${JSON.stringify(nobody)}`);
  t.ok(await waitFor(() => /"reason":"peer uid 65534 [^"]*".*"msg":"connection refused"/.test(r.stderr()), 3000), 'a log line names the refused uid');
  t.equal(await healthCheck(r.address), 1, 'root is served');
  const allowed = await startAgent(t, { address: `unix://@kata-agent-peer2-${process.pid}-${Date.now()}`, args: ['--allow-abstract-socket', '--server-peer-uid', '65534'] });
  t.ok((await connectAsUid(allowed.address, healthFrame())).answered, 'the configured uid is served');
});

t.test('kata-agent: bad flags exit 2 with the reason', async (t) => {
  const child = spawn(process.execPath, [path.join(root, 'bin', 'kata-agent'), '--log-level', 'loud'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  t.equal(await exitCode(child), 2);
  t.match(stderr, /invalid log level "loud"/);
});

