// control/debug/server.ts: the debug endpoint's views of the sandbox model (fastify inject), and
// where it listens (a unix socket by default, TCP on request).
import t from 'tap';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { parseDebugAddr } from '../../control/config';
import { LogRing } from '../../shared/log-ring';
import { buildDebugServer, startDebugServer } from '../../control/debug/server';
import { loadNative } from '../../shared/native';
import { Code } from '../../shared/protocol';
import { Container } from '../../control/sandbox/container';
import { Process } from '../../control/sandbox/process';
import { Sandbox } from '../../control/sandbox/sandbox';
import type { ProcessStdio } from '../../control/sandbox/stdio';
import type { ContainerPlan } from '../../shared/protocol';

// The views read only `terminal` of a process's stdio (eviction also asks whether its output
// was read to the end; an exit releases the stdin).
const pipes = { terminal: false, outputDrained: true, processExited: () => undefined } as unknown as ProcessStdio;
const tty = { terminal: true, outputDrained: true, processExited: () => undefined } as unknown as ProcessStdio;
const plan = {
  rootfs: '/run/kata-containers/web/rootfs',
  readonly: false,
  hostname: 'web',
  namespaces: [{ type: 'pid', path: '' }, { type: 'ipc', path: '/run/kata-agent/sandbox-ns/ipc' }],
  mounts: [{ destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid'] }],
  process: { args: ['sh'], env: ['SECRET=1'], cwd: '/', uid: 0, gid: 0, terminal: false },
  maskedPaths: [],
  readonlyPaths: [],
  sysctl: {},
  rootfsPropagation: '',
  cgroup: { path: '/kata/web', resources: { memory: { limit: 1048576 } } },
} as unknown as ContainerPlan;
const storage = { driver: 'local', driverOptions: [], source: 'local', fstype: 'local', options: ['mode=0777'], mountPoint: '/run/kata-containers/sandbox/local/x' };

t.test('sandbox and container views', async (t) => {
  const sandbox = new Sandbox();
  sandbox.id = 'sb';
  sandbox.hostname = 'host';
  sandbox.created = true;
  const pause = new Container('pause', plan, new Process('pause', 'pause', true, 100, pipes));
  sandbox.addContainer(pause);
  pause.status = 'running';
  const web = new Container('web', plan, new Process('web', 'web', true, 200, pipes));
  sandbox.addContainer(web);
  web.status = 'running';
  web.execs.set('sh', new Process('web', 'sh', false, 201, tty));
  web.execs.set('ls', new Process('web', 'ls', false, 202, pipes));
  web.applyExit('ls', 202, 0);
  web.storages = [storage as never];

  let reason: string | null = null;
  const app = buildDebugServer(sandbox, { config: { logLevel: 'info', serverAddr: 'vsock://-1:1024' }, notReady: () => reason });
  t.teardown(() => app.close());

  const s = await app.inject({ method: 'GET', url: '/v1/sandbox' });
  t.equal(s.statusCode, 200);
  t.same(s.json(), {
    id: 'sb',
    hostname: 'host',
    created: true,
    destroyed: false,
    pidns: '/proc/100/ns/pid',
    containers: [
      { id: 'pause', status: 'running', pid: 100, processes: 1 },
      { id: 'web', status: 'running', pid: 200, processes: 2 },
    ],
    storages: [],
  });
  t.same((await app.inject({ method: 'GET', url: '/v1/containers' })).json(), [
    { id: 'pause', status: 'running', pid: 100, processes: 1 },
    { id: 'web', status: 'running', pid: 200, processes: 2 }, // the exited ls is not counted
  ]);
  const procs = (await app.inject({ method: 'GET', url: '/v1/processes' })).json() as Array<{ containerId: string; execId: string }>;
  t.same(procs.map((p) => `${p.containerId}/${p.execId}`), ['pause/pause', 'web/web', 'web/sh', 'web/ls']);
  t.same((await app.inject({ method: 'GET', url: '/v1/config' })).json(), { logLevel: 'info', serverAddr: 'vsock://-1:1024' });
  t.same((await app.inject({ method: 'GET', url: '/readyz' })).json(), { status: 'ready' });
  reason = 'helper connection lost';
  const nr = await app.inject({ method: 'GET', url: '/readyz' });
  t.equal(nr.statusCode, 503);
  t.same(nr.json(), { status: 'not ready', reason: 'helper connection lost' });

  const c = await app.inject({ method: 'GET', url: '/v1/containers/web' });
  t.equal(c.statusCode, 200);
  const body = c.json() as Record<string, unknown>;
  t.equal(body.status, 'running');
  t.equal(body.pid, 200);
  t.same(body.processes, [
    { containerId: 'web', execId: 'web', pid: 200, init: true, exited: false, exitStatus: null, terminal: false },
    { containerId: 'web', execId: 'sh', pid: 201, init: false, exited: false, exitStatus: null, terminal: true },
    { containerId: 'web', execId: 'ls', pid: 202, init: false, exited: true, exitStatus: 0, terminal: false },
  ]);
  t.same(body.spec, {
    args: ['sh'], cwd: '/', uid: 0, gid: 0, terminal: false, rootfs: '/run/kata-containers/web/rootfs', readonly: false, hostname: 'web',
    namespaces: [{ type: 'pid' }, { type: 'ipc', path: '/run/kata-agent/sandbox-ns/ipc' }], seccomp: false, unenforced: [],
  });
  t.same(body.cgroup, { path: '/kata/web', resources: { memory: { limit: 1048576 } } });
  t.same(body.mounts, plan.mounts);
  t.same(body.storages, [{ driver: 'local', source: 'local', fstype: 'local', options: ['mode=0777'], mountPoint: '/run/kata-containers/sandbox/local/x' }], 'schema keeps only the listed storage fields');
  t.notMatch(c.body, /SECRET/, 'no environment');

  const missing = await app.inject({ method: 'GET', url: '/v1/containers/nope' });
  t.equal(missing.statusCode, 404);
  t.match(missing.json(), { error: /nope/ });
  t.same((await app.inject({ method: 'GET', url: '/healthz' })).json(), { status: 'ok' });
  t.equal((await app.inject({ method: 'POST', url: '/v1/sandbox' })).statusCode, 404, 'read-only');
});

t.test('exited exec records are bounded per container, oldest exits evicted first', async (t) => {
  const init = new Process('c', 'c', true, 1, pipes);
  const c = new Container('c', plan, init);
  for (let i = 0; i < 5; i++) {
    c.execs.set(`e${i}`, new Process('c', `e${i}`, false, 10 + i, pipes));
  }
  c.applyExit('e3', 13, 0);
  c.applyExit('e0', 10, 1);
  c.applyExit('e4', 14, 2);
  t.same(c.evictExited(2).map((p) => p.execId), ['e3'], 'the oldest exit goes');
  t.same([...c.execs.keys()].sort(), ['e0', 'e1', 'e2', 'e4'], 'live processes and newer exits stay');
  t.equal(c.applyExit('e1', 999, 0), null, 'an exit with the wrong pid is ignored');
  t.equal(c.applyExit('', 1, 137), init, 'init exit');
  t.equal(c.status, 'stopped', 'the container is stopped when its init exits');
  t.equal(await init.wait(), 137);
});

// The endpoint lists container ids and pids: by default it is a unix socket only the control
// uid can use (review: 127.0.0.1:9099 was reachable from containers sharing the guest network
// namespace).

function getJson(socketPath: string, urlPath: string): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath, path: urlPath }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
    });
    req.on('error', reject);
  });
}

t.test('unix socket: mode 0600, owned by our uid, directory created, serves the views, removed on close', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-debug-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const sock = path.join(dir, 'run', 'debug.sock');
  const sandbox = new Sandbox();
  sandbox.id = 'sb-unix';
  const app = await startDebugServer(sandbox, parseDebugAddr(`unix://${sock}`));
  const st = fs.statSync(sock);
  t.ok(st.isSocket(), 'a socket file');
  t.equal(st.mode & 0o777, 0o600, 'mode 0600');
  t.equal(st.uid, process.getuid?.(), 'owned by the control uid');
  const res = await getJson(sock, '/v1/sandbox');
  t.equal(res.status, 200);
  t.match(res.body, { id: 'sb-unix', containers: [] });
  await app.close();
  t.notOk(fs.existsSync(sock), 'the socket file is removed on close');
});

t.test('unix socket: a stale socket file is replaced; a live one or a plain file is not', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-debug-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const sock = path.join(dir, 'debug.sock');
  // Left behind by a control plane that died: bound, never unlinked, nobody listening.
  const native = loadNative();
  native.close(native.seqpacketListen(sock, 1));
  const sandbox = new Sandbox();
  const app = await startDebugServer(sandbox, { kind: 'unix', path: sock });
  t.teardown(() => app.close());
  t.equal((await getJson(sock, '/healthz')).status, 200, 'the stale file was replaced');

  await t.rejects(startDebugServer(sandbox, { kind: 'unix', path: sock }), { code: Code.ALREADY_EXISTS, message: /another process is serving it/ });
  t.equal((await getJson(sock, '/healthz')).status, 200, 'the live endpoint still serves');

  const plain = path.join(dir, 'plain');
  fs.writeFileSync(plain, 'x');
  await t.rejects(startDebugServer(sandbox, { kind: 'unix', path: plain }), { code: Code.ALREADY_EXISTS, message: /not a socket/ });
  t.equal(fs.readFileSync(plain, 'utf8'), 'x', 'the file is untouched');
});

t.test('a TCP bind other than loopback is refused', async (t) => {
  for (const host of ['0.0.0.0', '::', '10.0.0.1', 'example.org', '[::]']) {
    const addr = parseDebugAddr(host.includes(':') && !host.startsWith('[') ? `[${host}]:9099` : `${host}:9099`);
    await t.rejects(startDebugServer(new Sandbox(), addr), { code: Code.PERMISSION_DENIED, message: /only loopback/ }, host);
  }
  for (const host of ['127.0.0.1', '127.1.2.3', 'localhost', '[::1]']) {
    const app = await startDebugServer(new Sandbox(), parseDebugAddr(`${host}:0`));
    t.ok((app.server.address() as AddressInfo).port > 0, `${host} accepted`);
    await app.close();
  }
});

t.test('/v1/logs: the ring buffer of the logger, last N lines and live tail', async (t) => {
  const ring = new LogRing(5);
  const log = pino({ level: 'info' }, pino.multistream([{ level: 'trace', stream: ring }]));
  for (let i = 0; i < 8; i++) log.info({ i }, 'line');
  const app = await startDebugServer(new Sandbox(), parseDebugAddr('127.0.0.1:0'), { logs: ring });
  t.teardown(() => app.close());
  const port = (app.server.address() as AddressInfo).port;
  const last2 = await (await fetch(`http://127.0.0.1:${port}/v1/logs?lines=2`)).text();
  t.same(last2.trim().split('\n').map((l) => (JSON.parse(l) as { i: number }).i), [6, 7]);
  const all = await (await fetch(`http://127.0.0.1:${port}/v1/logs`)).text();
  t.same(all.trim().split('\n').map((l) => (JSON.parse(l) as { i: number }).i), [3, 4, 5, 6, 7], 'the ring keeps the last 5');
  t.equal((await fetch(`http://127.0.0.1:${port}/v1/logs?lines=x`)).status, 400);
  t.equal((await fetch(`http://127.0.0.1:${port}/v1/logs?lines=6`)).status, 400, 'more than the ring holds');

  // follow: the past line, then lines logged after the request.
  const res = await fetch(`http://127.0.0.1:${port}/v1/logs?lines=1&follow=true`);
  const reader = res.body!.getReader();
  let text = '';
  const decoder = new TextDecoder();
  const readUntil = async (n: number): Promise<void> => {
    while (text.split('\n').length - 1 < n) {
      const { value, done } = await reader.read();
      if (done) throw new Error('stream ended');
      text += decoder.decode(value);
    }
  };
  await readUntil(1);
  log.info({ i: 100 }, 'live');
  log.info({ i: 101 }, 'live');
  await readUntil(3);
  t.same(text.trim().split('\n').map((l) => (JSON.parse(l) as { i: number }).i), [7, 100, 101]);
  t.equal(ring.subscriberCount, 1);
  await reader.cancel();
  await new Promise((r) => setTimeout(r, 50));
  t.equal(ring.subscriberCount, 0, 'the tail unsubscribes when the client goes');
});

t.test('LogRing: lines split across writes, long lines cut', async (t) => {
  const ring = new LogRing(3);
  ring.push('{"a":');
  ring.push('1}\n{"b":2}\n');
  t.same(ring.tail(), ['{"a":1}', '{"b":2}']);
  ring.push('x'.repeat(LogRing.maxLineBytes + 10) + '\n');
  t.match(ring.tail(1)[0], /…\[cut\]$/);
  t.throws(() => new LogRing(0), RangeError);
});

t.test('tcp stays available as an explicit opt-in', async (t) => {
  const app = await startDebugServer(new Sandbox(), parseDebugAddr('127.0.0.1:0'));
  t.teardown(() => app.close());
  const addr = app.server.address() as AddressInfo;
  const res = await fetch(`http://127.0.0.1:${addr.port}/healthz`);
  t.same(await res.json(), { status: 'ok' });
});
