// HelperServer (helper/server.ts) and HelperClient (shared/helper-client.ts) over a stub backend:
// handshake, authentication by peer uid, dispatch, error codes, fds in responses, events,
// concurrency, robustness against malformed requests.
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { SeqpacketChannel } from '../../shared/channel';
import { HelperClient } from '../../shared/helper-client';
import { loadNative } from '../../shared/native';
import { Code, HELPER_PROTOCOL_VERSION, StatusError, type HelperEvent } from '../../shared/protocol';
import { HelperServer } from '../../helper/server';
import { BACKEND_OPS, type BackendReply, type HelperBackend } from '../../helper/api';
import { rejectsStatus } from '../lib/helper-fixtures';

const native = loadNative();
const myUid = process.getuid?.() ?? 0;

type Handler = (args: unknown) => Promise<BackendReply<unknown>>;

/** A backend whose ops are set per test; unset ops throw UNIMPLEMENTED-like StatusErrors. */
function stubBackend(handlers: Partial<Record<string, Handler>> = {}): HelperBackend & { fire(e: HelperEvent): void } {
  const listeners = new Set<(e: HelperEvent) => void>();
  const backend: Record<string, unknown> = {
    subscribe(l: (e: HelperEvent) => void) {
      listeners.add(l);
      return () => listeners.delete(l);
    },
    async shutdown() {},
    fire(e: HelperEvent) {
      for (const l of listeners) l(e);
    },
  };
  for (const op of BACKEND_OPS) {
    backend[op] =
      handlers[op] ??
      (async () => {
        throw new StatusError(Code.NOT_FOUND, `stub: ${op} not set`);
      });
  }
  return backend as unknown as HelperBackend & { fire(e: HelperEvent): void };
}

async function connectPair(backend: HelperBackend): Promise<{ client: HelperClient; server: HelperServer }> {
  const server = new HelperServer({ backend, controlUid: myUid });
  const [c, s] = native.seqpacketPair();
  server.addConnection(s);
  const client = await HelperClient.fromFd(c);
  return { client, server };
}

/** A raw channel to a server (no HelperClient), to send what a client never would. */
function rawPair(server: HelperServer): { ch: SeqpacketChannel; request(m: unknown): Promise<Record<string, unknown>> } {
  const [c, s] = native.seqpacketPair();
  server.addConnection(s);
  const ch = new SeqpacketChannel(c);
  return {
    ch,
    request: (m) =>
      new Promise((resolve) => {
        ch.once('message', (msg, fds) => {
          for (const fd of fds) native.close(fd);
          resolve(msg as Record<string, unknown>);
        });
        ch.send(m);
      }),
  };
}

t.test('hello: version match, helper pid; mismatch is FAILED_PRECONDITION naming both versions', async (t) => {
  const server = new HelperServer({ backend: stubBackend(), controlUid: myUid });
  t.teardown(() => server.close());
  const { ch, request } = rawPair(server);
  t.teardown(() => ch.close());
  const bad = await request({ id: 1, op: 'hello', args: { version: 999 } });
  t.equal(bad.ok, false);
  const err = bad.error as { code: number; message: string };
  t.equal(err.code, Code.FAILED_PRECONDITION);
  t.match(err.message, String(HELPER_PROTOCOL_VERSION));
  t.match(err.message, '999');
  const beforeHello = await request({ id: 2, op: 'state', args: { withFds: false } });
  t.equal((beforeHello.error as { code: number }).code, Code.FAILED_PRECONDITION, 'ops before a successful hello are refused');
  const good = await request({ id: 3, op: 'hello', args: { version: HELPER_PROTOCOL_VERSION } });
  t.same(good, { id: 3, ok: true, result: { version: HELPER_PROTOCOL_VERSION, pid: process.pid } });
});

t.test('client: a helper answering another version is refused with FAILED_PRECONDITION', async (t) => {
  const [c, s] = native.seqpacketPair();
  const fake = new SeqpacketChannel(s);
  t.teardown(() => fake.close());
  fake.on('message', (m) => {
    const req = m as { id: number };
    fake.send({ id: req.id, ok: true, result: { version: HELPER_PROTOCOL_VERSION + 1, pid: 1 } });
  });
  await rejectsStatus(t, HelperClient.fromFd(c), Code.FAILED_PRECONDITION, new RegExp(`${HELPER_PROTOCOL_VERSION}.*${HELPER_PROTOCOL_VERSION + 1}`));
});

t.test('client: connect to a missing socket is UNAVAILABLE; a silent helper is DEADLINE_EXCEEDED', async (t) => {
  await rejectsStatus(t, HelperClient.connect(path.join(os.tmpdir(), `no-such-helper-${process.pid}.sock`)), Code.UNAVAILABLE);
  const [c, s] = native.seqpacketPair();
  const silent = new SeqpacketChannel(s);
  silent.on('message', () => {});
  t.teardown(() => silent.close());
  await rejectsStatus(t, HelperClient.fromFd(c, { timeoutMs: 100 }), Code.DEADLINE_EXCEEDED);
});

t.test('unknown op is UNIMPLEMENTED; malformed requests are INVALID_ARGUMENT; the server survives', async (t) => {
  const server = new HelperServer({ backend: stubBackend(), controlUid: myUid });
  t.teardown(() => server.close());
  const { ch, request } = rawPair(server);
  t.teardown(() => ch.close());
  await request({ id: 1, op: 'hello', args: { version: HELPER_PROTOCOL_VERSION } });
  const code = (m: Record<string, unknown>): number => (m.error as { code: number }).code;
  t.equal(code(await request({ id: 2, op: 'formatDisk', args: {} })), Code.UNIMPLEMENTED);
  t.equal(code(await request([1, 2, 3])), Code.INVALID_ARGUMENT, 'not a map');
  t.equal(code(await request('hello')), Code.INVALID_ARGUMENT, 'a string');
  t.equal(code(await request({ id: 'x', op: 'state', args: {} })), Code.INVALID_ARGUMENT, 'bad id');
  t.equal(code(await request({ id: 3, args: {} })), Code.INVALID_ARGUMENT, 'no op');
  const noArgs = await request({ id: 4, op: 'state' });
  t.equal(code(noArgs), Code.INVALID_ARGUMENT, 'no args');
  t.equal(noArgs.id, 4, 'the error carries the request id');
  t.equal(code(await request({ id: 5, op: 'state', args: [] })), Code.INVALID_ARGUMENT, 'args not a map');
  t.equal(code(await request({ id: 6, op: 'constructor', args: {} })), Code.UNIMPLEMENTED, 'prototype names are not ops');
  // Still serving after all that.
  t.equal(code(await request({ id: 7, op: 'state', args: {} })), Code.NOT_FOUND, 'stub op reached');
});

t.test('backend errors: StatusError codes pass through, other exceptions are INTERNAL', async (t) => {
  const { client, server } = await connectPair(
    stubBackend({
      startContainer: async () => {
        throw new StatusError(Code.ALREADY_EXISTS, 'container c1 already exists');
      },
      removeContainer: async () => {
        throw new TypeError('boom: x is undefined');
      },
      state: async () => ({ result: 'not reached' }) as never,
    }),
  );
  t.teardown(() => {
    client.close();
    server.close();
  });
  await rejectsStatus(t, client.call('startContainer', { containerId: 'c1' }), Code.ALREADY_EXISTS, /c1 already exists/);
  await rejectsStatus(t, client.call('removeContainer', { containerId: 'c1', timeoutMs: 1 }), Code.INTERNAL, /boom: x is undefined/);
});

t.test('responses carry named fds; events reach the client', async (t) => {
  const [r, w] = native.pipe();
  const backend = stubBackend({
    createContainer: async () => ({ result: { pid: 42 }, fds: [{ name: 'stdout', fd: r }, { name: 'stdin', fd: w }] }),
  });
  const { client, server } = await connectPair(backend);
  t.teardown(() => {
    client.close();
    server.close();
  });
  const res = await client.call('createContainer', { containerId: 'c1', plan: {} as never });
  t.same(res.result, { pid: 42 });
  t.same(Object.keys(res.fds).sort(), ['stdin', 'stdout']);
  // The client's stdin copy writes into the backend's pipe.
  native.write(res.fds.stdin, Buffer.from('hi'), 0, 2);
  const buf = Buffer.alloc(2);
  t.equal(native.read(r, buf, 0, 2), 2);
  t.equal(buf.toString(), 'hi');
  for (const fd of [...Object.values(res.fds), r, w]) native.close(fd);

  const got = new Promise<HelperEvent>((resolve) => client.once('event', resolve));
  backend.fire({ event: 'exit', containerId: 'c1', execId: '', pid: 42, exitStatus: 3 });
  t.same(await got, { event: 'exit', containerId: 'c1', execId: '', pid: 42, exitStatus: 3 });
});

t.test('requests are handled concurrently and answered by id', async (t) => {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const { client, server } = await connectPair(
    stubBackend({
      startContainer: async () => {
        await gate; // waits for the second request
        return { result: {} };
      },
      closeStdin: async () => {
        release();
        return { result: {} };
      },
    }),
  );
  t.teardown(() => {
    client.close();
    server.close();
  });
  const first = client.call('startContainer', { containerId: 'c1' });
  const second = client.call('closeStdin', { containerId: 'c1', execId: '' });
  await Promise.all([first, second]);
  t.pass('a slow request does not block a later one');
});

t.test('pending calls reject with UNAVAILABLE when the connection closes', async (t) => {
  const { client, server } = await connectPair(
    stubBackend({
      startContainer: () => new Promise(() => {}),
    }),
  );
  const pending = client.call('startContainer', { containerId: 'c1' });
  const closed = new Promise<void>((resolve) => client.once('close', resolve));
  server.close();
  await rejectsStatus(t, pending, Code.UNAVAILABLE);
  await closed;
  await rejectsStatus(t, client.call('state', { withFds: false }), Code.UNAVAILABLE);
});

t.test('listen: socket file mode 0600 owned by the control uid, parent dir created, stale socket replaced', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'helper-server-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const sock = path.join(dir, 'sub', 'helper.sock');
  const s1 = new HelperServer({ backend: stubBackend(), controlUid: myUid });
  s1.listen(sock);
  const st = fs.statSync(sock);
  t.ok(st.isSocket());
  t.equal(st.mode & 0o777, 0o600);
  t.equal(st.uid, myUid);
  t.equal(fs.statSync(path.dirname(sock)).mode & 0o777, 0o755);
  const c1 = await HelperClient.connect(sock);
  t.equal(c1.helperPid, process.pid);
  c1.close();
  s1.close();
  // Leave the socket file behind as a crashed helper would (bound, then closed without
  // unlinking): nobody listens, so a new server replaces it.
  native.close(native.seqpacketListen(sock, 1));
  t.ok(fs.statSync(sock).isSocket(), 'a stale socket file is there');
  const s2 = new HelperServer({ backend: stubBackend(), controlUid: myUid });
  s2.listen(sock);
  const c2 = await HelperClient.connect(sock);
  t.equal(c2.helperPid, process.pid, 'the new server serves the path');
  c2.close();
  s2.close();
  const s3 = new HelperServer({ backend: stubBackend(), controlUid: myUid });
  fs.writeFileSync(path.join(dir, 'plain'), 'x');
  t.throws(() => s3.listen(path.join(dir, 'plain')), /not a socket/, 'a non-socket file is not replaced');
  s3.close();
});

t.test('listen: a second helper on the path of a live one refuses to start and leaves it serving', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'helper-server-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const sock = path.join(dir, 'helper.sock');
  const live = new HelperServer({ backend: stubBackend({ state: async () => ({ result: { containers: [], processes: [] } }) }), controlUid: myUid });
  live.listen(sock);
  t.teardown(() => live.close());
  const ino = fs.statSync(sock).ino;
  const second = new HelperServer({ backend: stubBackend(), controlUid: myUid });
  t.throws(() => second.listen(sock), { message: `another helper is serving ${sock}; refusing to start (stop it first)` });
  second.close();
  t.equal(fs.statSync(sock).ino, ino, 'the live socket file was not unlinked');
  const c = await HelperClient.connect(sock);
  t.same((await c.call('state', { withFds: false })).result, { containers: [], processes: [] }, 'the first helper still serves');
  c.close();
});

t.test('peer uid check: a connection from another uid is closed', async (t) => {
  if (myUid !== 0) {
    t.plan(0, 'SKIP: needs root to run a client as another uid');
    return;
  }
  const name = `@kata-helper-test-${process.pid}`;
  // Control uid 12345: root is still allowed, nobody (65534) is not. Abstract socket: no file
  // permissions in the way, so only SO_PEERCRED decides.
  const server = new HelperServer({ backend: stubBackend({ state: async () => ({ result: { containers: [], processes: [] } }) }), controlUid: 12345 });
  server.listen(name);
  t.teardown(() => server.close());
  const asRoot = await HelperClient.connect(name);
  t.same((await asRoot.call('state', { withFds: false })).result, { containers: [], processes: [] }, 'root is accepted');
  asRoot.close();

  const clientJs = path.resolve(__dirname, '..', '..', 'shared', 'helper-client.js');
  const script = `
    const { HelperClient } = require(${JSON.stringify(clientJs)});
    HelperClient.connect(${JSON.stringify(name)}, { timeoutMs: 5000 }).then(
      () => { console.log('accepted'); process.exit(0); },
      (e) => { console.log('refused ' + e.code); process.exit(0); });`;
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script], {
      uid: 65534,
      gid: 65534,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, // not tap's NODE_OPTIONS (it writes to .tap/)
      cwd: '/',
    });
    let text = '';
    child.stdout.on('data', (d: Buffer) => (text += d.toString()));
    child.stderr.on('data', (d: Buffer) => (text += d.toString()));
    child.on('error', reject);
    // Only the first line: tap's process-info hook, injected into every child, may complain
    // afterwards that nobody cannot write to .tap/.
    child.on('close', () => resolve(text.trim().split('\n')[0]));
  });
  if (!/^(accepted|refused)/.test(out)) {
    t.skip(`nobody cannot load the project from ${clientJs}: ${out}`, () => {});
    return;
  }
  t.equal(out, `refused ${Code.UNAVAILABLE}`, 'nobody is refused (connection closed before hello)');
});

t.test('peer pid namespace check: root of a container (uid 0, own pid namespace) is closed', async (t) => {
  if (myUid !== 0) {
    t.plan(0, 'SKIP: needs root for unshare --pid');
    return;
  }
  // A helper on an abstract address is reachable from every container (shared network
  // namespace), and a container's root is uid 0: only its pid namespace tells it apart.
  const name = `@kata-helper-pidns-${process.pid}`;
  const server = new HelperServer({ backend: stubBackend({ state: async () => ({ result: { containers: [], processes: [] } }) }), controlUid: 12345 });
  server.listen(name);
  t.teardown(() => server.close());
  const clientJs = path.resolve(__dirname, '..', '..', 'shared', 'helper-client.js');
  const script = `
    const { HelperClient } = require(${JSON.stringify(clientJs)});
    HelperClient.connect(${JSON.stringify(name)}, { timeoutMs: 5000 }).then(
      () => { console.log('accepted'); process.exit(0); },
      (e) => { console.log('refused ' + e.code); process.exit(0); });`;
  const run = (argv: string[]): Promise<string> =>
    new Promise<string>((resolve, reject) => {
      const child = spawn(argv[0], [...argv.slice(1), process.execPath, '-e', script], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
      });
      let text = '';
      child.stdout.on('data', (d: Buffer) => (text += d.toString()));
      child.stderr.on('data', (d: Buffer) => (text += d.toString()));
      child.on('error', reject);
      child.on('close', () => resolve(text.trim().split('\n')[0]));
    });
  t.equal(await run(['unshare', '--pid', '--fork', '--kill-child']), `refused ${Code.UNAVAILABLE}`, 'uid 0 in a new pid namespace is refused before hello');
  t.equal(await run(['env']), 'accepted', 'uid 0 in the helper\'s pid namespace is accepted');
});

// Adversarial review (restart): the helper served any number of control connections at once. A
// second control plane (started on another ttRPC address, or by a buggy supervisor while the
// first lives) adopted the same processes: both spliced every stdout pipe (the output split
// between them) and both wrote the spools' delivered offsets. Now a second hello is refused
// while a control plane that completed hello is connected; once it is gone (even before its
// hang-up was polled) the next one is served.
t.test('hello: one control plane at a time; the next is served once the first is gone', async (t) => {
  const server = new HelperServer({ backend: stubBackend({ state: async () => ({ result: { containers: [], processes: [] } }) }), controlUid: myUid });
  t.teardown(() => server.close());
  const first = rawPair(server);
  t.same((await first.request({ id: 1, op: 'hello', args: { version: HELPER_PROTOCOL_VERSION } })).ok, true, 'the first control plane is served');
  const second = rawPair(server);
  t.teardown(() => second.ch.close());
  const refused = await second.request({ id: 1, op: 'hello', args: { version: HELPER_PROTOCOL_VERSION } });
  t.equal((refused.error as { code: number }).code, Code.FAILED_PRECONDITION, 'a second hello is refused');
  t.match((refused.error as { message: string }).message, new RegExp(`another control plane \\(pid ${process.pid}\\) is connected`));
  const state = await second.request({ id: 2, op: 'state', args: { withFds: true } });
  t.equal((state.error as { code: number }).code, Code.FAILED_PRECONDITION, 'the refused connection gets no state (no stdio fds)');
  t.same((await first.request({ id: 2, op: 'state', args: { withFds: false } })).ok, true, 'the first still works');
  // The first dies; the new one says hello at once, before the server polled the hang-up.
  first.ch.close();
  const third = rawPair(server);
  t.teardown(() => third.ch.close());
  t.same((await third.request({ id: 1, op: 'hello', args: { version: HELPER_PROTOCOL_VERSION } })).ok, true, 'a restarted control plane is served once the old one is gone');
  t.equal(server.connectionsOpen, 2, 'the dead connection was dropped (the refused one stays until it closes)');
});
