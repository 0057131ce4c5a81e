// Regression tests of the security issue's items 3, 6, 7 and 10 at the ttRPC server level:
// peer uid check (SO_PEERCRED), abstract sockets refused, path socket 0600, a live socket never
// taken over and a stale one replaced, connection cap, frame timeout (slowloris), per-connection
// in-flight limit, write backlog bound for a peer that does not read.
import t from 'tap';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { Code, FrameParser, FrameType, StatusError, TtrpcClient, TtrpcServer, encodeFrame, requireUnixPeerUid, type ParsedFrame, type TtrpcServerOptions } from '../../control/ttrpc';
import { ttrpc } from '../../shared/proto';
import { connectAsUid, type PeerAttempt } from '../lib/as-uid';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttrpc-limits-'));
fs.chmodSync(dir, 0o755); // the uid-65534 child must be able to reach the sockets in it
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;
const newSocketPath = (): string => path.join(dir, `s${n++}.sock`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const isRoot = process.getuid?.() === 0;

function requestFrame(streamId: number, service: string, method: string, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  return encodeFrame(streamId, FrameType.REQUEST, 0, ttrpc.Request.encode({ service, method, payload }).finish());
}

async function startServer(t: tap.Test, options: TtrpcServerOptions = {}, address?: string): Promise<{ server: TtrpcServer; address: string }> {
  const server = new TtrpcServer(options);
  server.register('test.Echo', 'Echo', async (payload) => payload);
  const addr = address ?? `unix://${newSocketPath()}`;
  await server.listen(addr);
  t.teardown(() => server.close());
  return { server, address: addr };
}

/** A raw peer: writes bytes, collects response frames, notices the close. */
class RawPeer {
  readonly parser = new FrameParser();
  readonly frames: ParsedFrame[] = [];
  readonly closed: Promise<void>;
  constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => this.frames.push(...this.parser.push(chunk)));
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
  }
  static connect(address: string): Promise<RawPeer> {
    const p = address.slice('unix://'.length);
    return new Promise((resolve, reject) => {
      const s = net.createConnection({ path: p.startsWith('@') ? `\0${p.slice(1)}` : p }, () => resolve(new RawPeer(s)));
      s.once('error', reject);
    });
  }
  get isClosed(): boolean {
    return this.socket.destroyed;
  }
  /** Response statuses by stream id. */
  statuses(): Map<number, number> {
    const m = new Map<number, number>();
    for (const f of this.frames) if (f.kind === 'frame') m.set(f.header.streamId, ttrpc.Response.decode(f.payload).status?.code ?? 0);
    return m;
  }
}

async function until(cond: () => boolean, ms = 5000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!cond() && Date.now() < deadline) await sleep(10);
  return cond();
}

async function echo(client: TtrpcClient, text: string): Promise<string> {
  return (await client.call('test.Echo', 'Echo', Buffer.from(text))).toString();
}

function connectAsNobody(address: string): Promise<PeerAttempt> {
  return connectAsUid(address, requestFrame(1, 'test.Echo', 'Echo', Buffer.from('x')));
}

t.test('item 3: a peer with another uid is refused (SO_PEERCRED); root and the configured uid are served', async (t) => {
  if (!isRoot) {
    // As an ordinary user: a handshaker that does not allow our own uid refuses us.
    const { server, address } = await startServer(t, { handshaker: requireUnixPeerUid({ uids: [] }) });
    const peer = await RawPeer.connect(address);
    peer.socket.write(requestFrame(1, 'test.Echo', 'Echo'));
    await peer.closed;
    t.equal(peer.frames.length, 0, 'no answer to a refused uid');
    t.equal(server.refusedConnections, 1);
    return;
  }
  // An abstract socket is what containers could reach: allowed here explicitly so the uid
  // check is what stands between uid 65534 and the agent.
  const name = `kata-limits-${process.pid}-${Date.now()}`;
  const { server, address } = await startServer(t, { allowAbstract: true, handshaker: requireUnixPeerUid({ uids: [1234] }) }, `unix://@${name}`);
  const nobody = await connectAsNobody(address);
  t.ok(nobody.connected, 'the kernel accepted the connection');
  t.notOk(nobody.answered, `uid 65534 got no answer (${JSON.stringify(nobody)})`);
  t.equal(server.refusedConnections, 1, 'the server refused it');
  const client = await TtrpcClient.connect(address);
  t.teardown(() => client.close());
  t.equal(await echo(client, 'root'), 'root', 'root is served');

  // The configured uid is served.
  const { address: a2 } = await startServer(t, { allowAbstract: true, handshaker: requireUnixPeerUid({ uids: [65534] }) }, `unix://@${name}-2`);
  const allowed = await connectAsNobody(a2);
  t.ok(allowed.answered, 'uid 65534 is served when it is the configured uid');
});

t.test('item 3: a root peer in another pid namespace (a container\'s root) is refused', async (t) => {
  if (!isRoot) {
    t.plan(0, 'SKIP: needs root for unshare --pid');
    return;
  }
  // Containers run as uid 0 of the init user namespace and share the guest's network
  // namespace: with --allow-abstract-socket their root passed the uid check and got the whole
  // agent API (exec into any container, ...).
  const name = `kata-limits-pidns-${process.pid}-${Date.now()}`;
  const { server, address } = await startServer(t, { allowAbstract: true, handshaker: requireUnixPeerUid({ uids: [] }) }, `unix://@${name}`);
  const frame = requestFrame(1, 'test.Echo', 'Echo', Buffer.from('x'));
  const contained = await connectAsUid(address, frame, 0, 0, true);
  t.ok(contained.connected, 'the kernel accepted the connection');
  t.notOk(contained.answered, `uid 0 in a new pid namespace got no answer (${JSON.stringify(contained)})`);
  t.equal(server.refusedConnections, 1, 'the server refused it');
  const guestRoot = await connectAsUid(address, frame, 0, 0, false);
  t.ok(guestRoot.answered, 'uid 0 in the agent\'s pid namespace is served');
});

t.test('item 3: an abstract address is refused without the explicit option', async (t) => {
  const server = new TtrpcServer();
  t.teardown(() => server.close());
  const err = await server.listen(`unix://@kata-limits-${process.pid}`).then(() => null, (e: unknown) => e);
  t.ok(err instanceof StatusError && err.code === Code.PERMISSION_DENIED, `PERMISSION_DENIED: ${(err as Error)?.message}`);
  t.match((err as Error).message, /abstract socket .*containers/);
});

t.test('item 3: a path socket is created mode 0600 (uid 65534 cannot connect)', async (t) => {
  const { address } = await startServer(t);
  const p = address.slice('unix://'.length);
  t.equal(fs.statSync(p).mode & 0o777, 0o600);
  if (isRoot) {
    const nobody = await connectAsNobody(address);
    t.notOk(nobody.connected, `uid 65534: ${nobody.error}`);
    t.equal(nobody.error, 'EACCES');
  }
});

t.test('item 10: a live socket is never taken over; a stale one is replaced', async (t) => {
  const { address } = await startServer(t);
  const second = new TtrpcServer();
  t.teardown(() => second.close());
  const err = await second.listen(address).then(() => null, (e: unknown) => e);
  t.ok(err instanceof StatusError && err.code === Code.FAILED_PRECONDITION, `FAILED_PRECONDITION: ${(err as Error)?.message}`);
  t.match((err as Error).message, /another server is serving/);
  const client = await TtrpcClient.connect(address);
  t.teardown(() => client.close());
  t.equal(await echo(client, 'still'), 'still', 'the first server keeps serving');

  // A stale socket: bound by a listener that is gone, file left behind.
  const stalePath = newSocketPath();
  const { spawnSync } = await import('node:child_process');
  const made = spawnSync(process.execPath, ['-e', `require('node:net').createServer().listen(${JSON.stringify(stalePath)}, () => process.kill(process.pid, 'SIGKILL'))`]);
  t.equal(made.signal, 'SIGKILL');
  t.ok(fs.lstatSync(stalePath).isSocket(), 'a stale socket file is left');
  const { address: a2 } = await startServer(t, {}, `unix://${stalePath}`);
  const c2 = await TtrpcClient.connect(a2);
  t.teardown(() => c2.close());
  t.equal(await echo(c2, 'new'), 'new', 'the stale socket was replaced');

  // Not a socket: left alone.
  const file = path.join(dir, 'plain');
  fs.writeFileSync(file, 'x');
  const third = new TtrpcServer();
  const e3 = await third.listen(`unix://${file}`).then(() => null, (e: unknown) => e);
  t.ok(e3 instanceof StatusError && e3.code === Code.ALREADY_EXISTS);
  t.equal(fs.readFileSync(file, 'utf8'), 'x');
});

t.test('item 6: the connection cap refuses new connections; old ones keep working', async (t) => {
  const { server, address } = await startServer(t, { limits: { maxConnections: 3 } });
  const clients = await Promise.all([0, 1, 2].map(() => TtrpcClient.connect(address)));
  t.teardown(() => clients.forEach((c) => c.close()));
  for (const [i, c] of clients.entries()) t.equal(await echo(c, `c${i}`), `c${i}`);
  const extra = await RawPeer.connect(address);
  extra.socket.write(requestFrame(1, 'test.Echo', 'Echo'));
  await extra.closed;
  t.equal(extra.frames.length, 0, 'the fourth connection was closed unanswered');
  t.equal(server.refusedConnections, 1);
  for (const [i, c] of clients.entries()) t.equal(await echo(c, `again${i}`), `again${i}`, `old connection ${i} still works`);
  clients[0].close();
  t.ok(await until(() => server.connectionCount === 2), 'a slot frees up');
  const fresh = await TtrpcClient.connect(address);
  t.teardown(() => fresh.close());
  t.equal(await echo(fresh, 'fresh'), 'fresh', 'a new connection is served once a slot is free');
});

t.test('item 6: at the cap, silent connections (no complete frame yet) make room for new ones', async (t) => {
  const { server, address } = await startServer(t, { limits: { maxConnections: 3 } });
  const silent = await Promise.all([0, 1, 2].map(() => RawPeer.connect(address)));
  silent[2].socket.write(requestFrame(1, 'test.Echo', 'Echo').subarray(0, 5)); // half a header
  t.ok(await until(() => server.connectionCount === 3));
  const client = await TtrpcClient.connect(address);
  t.teardown(() => client.close());
  t.equal(await echo(client, 'in'), 'in', 'a new peer is served at the cap');
  await silent[0].closed;
  t.pass('the oldest silent connection was closed to make room');
  t.notOk(silent[1].isClosed, 'only one was evicted');
  t.equal(server.refusedConnections, 0);
});

t.test('item 6: a partial frame left idle is closed after the frame timeout; an idle connection between frames is not', async (t) => {
  const { address } = await startServer(t, { limits: { frameTimeoutMs: 150 } });
  const slow = await RawPeer.connect(address);
  slow.socket.write(requestFrame(1, 'test.Echo', 'Echo').subarray(0, 5)); // half a header
  const silent = await RawPeer.connect(address); // never sends a byte
  const client = await TtrpcClient.connect(address);
  t.teardown(() => client.close());
  t.equal(await echo(client, 'a'), 'a');
  await slow.closed;
  await silent.closed;
  t.pass('the partial-frame and the silent connections were closed');
  await sleep(400); // well past two timeouts
  t.equal(await echo(client, 'b'), 'b', 'a connection idle between complete frames stays open');

  // A body trickled slower than the timeout is cut too (not only a header).
  const trickle = await RawPeer.connect(address);
  const frame = requestFrame(3, 'test.Echo', 'Echo', Buffer.alloc(100));
  for (let i = 0; i < frame.length && !trickle.isClosed; i += 10) {
    trickle.socket.write(frame.subarray(i, i + 10));
    await sleep(50);
  }
  await trickle.closed;
  t.equal(trickle.frames.length, 0, 'the trickled frame was never answered');
});

t.test('item 6: requests above the per-connection in-flight limit are answered RESOURCE_EXHAUSTED', async (t) => {
  let started = 0;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const server2 = new TtrpcServer({ limits: { maxInflightPerConnection: 4 } });
  server2.register('test.Block', 'Wait', async () => {
    started++;
    await gate;
    return Buffer.from('done');
  });
  const addr2 = `unix://${newSocketPath()}`;
  await server2.listen(addr2);
  t.teardown(() => server2.close());
  const peer = await RawPeer.connect(addr2);
  t.teardown(() => peer.socket.destroy());
  peer.socket.write(Buffer.concat([1, 3, 5, 7, 9, 11].map((id) => requestFrame(id, 'test.Block', 'Wait'))));
  t.ok(await until(() => peer.frames.length === 2), 'two answers before any handler finished');
  t.equal(started, 4, 'only four handlers run');
  t.same([...peer.statuses()].sort(), [[11, Code.RESOURCE_EXHAUSTED], [9, Code.RESOURCE_EXHAUSTED]].sort());
  const f = peer.frames.find((x) => x.kind === 'frame');
  t.match(f && f.kind === 'frame' ? ttrpc.Response.decode(f.payload).status?.message : '', /too many requests in flight on this connection \(limit 4\)/);
  release();
  t.ok(await until(() => peer.frames.length === 6), 'the four held requests are answered');
  t.same([1, 3, 5, 7].map((id) => peer.statuses().get(id)), [0, 0, 0, 0]);
  // The connection stays usable.
  peer.socket.write(requestFrame(13, 'test.Block', 'Wait'));
  t.ok(await until(() => peer.statuses().get(13) === 0), 'a later request is served');
});

t.test('item 7: a peer that does not read stops being read; the backlog stays bounded; it drains when the peer reads', async (t) => {
  const server = new TtrpcServer({ limits: { maxWriteBacklogBytes: 256 * 1024 } });
  let handled = 0;
  server.register('test.Big', 'Get', async () => {
    handled++;
    return Buffer.alloc(64 * 1024, 1);
  });
  const address = `unix://${newSocketPath()}`;
  await server.listen(address);
  t.teardown(() => server.close());
  const peer = await RawPeer.connect(address);
  t.teardown(() => peer.socket.destroy());
  peer.socket.pause(); // never reads
  const total = 2000; // 2000 x 64 KiB = 125 MiB of responses if all were answered
  const batch: Buffer[] = [];
  for (let i = 0; i < total; i++) batch.push(requestFrame(2 * i + 1, 'test.Big', 'Get'));
  peer.socket.write(Buffer.concat(batch)); // ~60 KB of requests: one or two chunks
  let last = -1;
  for (let i = 0; i < 50 && handled !== last; i++) {
    last = handled;
    await sleep(100);
  }
  t.ok(handled < 100, `the server stopped handling requests of the non-reading peer (handled ${handled} of ${total})`);
  // Reading resumes as the peer reads.
  peer.socket.resume();
  t.ok(await until(() => peer.frames.length === total, 20_000), `all ${total} answered once the peer reads (${peer.frames.length})`);
  t.equal(handled, total);
});

t.test('item 7: one answer larger than the write backlog (a 2 MiB ReadStdout) to a peer that reads does not pause it', async (t) => {
  const lines: string[] = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) });
  const server = new TtrpcServer({ logger, limits: { maxWriteBacklogBytes: 1 << 20 } });
  server.register('test.Big', 'Get', async () => Buffer.alloc(2 << 20, 7));
  const address = `unix://${newSocketPath()}`;
  await server.listen(address);
  t.teardown(() => server.close());
  const peer = await RawPeer.connect(address);
  t.teardown(() => peer.socket.destroy());
  for (const [i, id] of [1, 3, 5].entries()) {
    peer.socket.write(requestFrame(id, 'test.Big', 'Get')); // one call at a time, as a stdio reader
    t.ok(await until(() => peer.frames.length === i + 1, 20_000), `call ${id} answered`);
  }
  t.same(lines.filter((l) => l.includes('not reading')), [], 'no "peer is not reading its responses" for a peer that reads');
});

t.test('item 7: many small answers to a non-reading peer are bounded by count, not only bytes', async (t) => {
  const server = new TtrpcServer({ limits: { maxWriteBacklogFrames: 100 } });
  let handled = 0;
  server.register('grpc.Health', 'Check', async () => {
    handled++;
    return Buffer.from([8, 1]);
  });
  const address = `unix://${newSocketPath()}`;
  await server.listen(address);
  t.teardown(() => server.close());
  const peer = await RawPeer.connect(address);
  t.teardown(() => peer.socket.destroy());
  peer.socket.pause();
  const total = 100_000; // 1.7 MB of answers: under the 1 MiB byte bound only after the kernel's share
  const frames: Buffer[] = [];
  for (let i = 0; i < total; i++) frames.push(requestFrame(2 * i + 1, 'grpc.Health', 'Check'));
  peer.socket.write(Buffer.concat(frames));
  let last = -1;
  for (let i = 0; i < 50 && handled !== last; i++) {
    last = handled;
    await sleep(100);
  }
  t.ok(handled < total / 2, `reading stopped (handled ${handled} of ${total}; the rest wait in socket buffers)`);
  peer.socket.resume();
  t.ok(await until(() => peer.frames.length === total, 30_000), `all answered once the peer reads (${peer.frames.length})`);
});

t.test('item 6: partial 4 MiB frames on many connections are bounded in total; small requests still flow', async (t) => {
  // Each connection may hold one partial frame of up to 4 MiB: 200 connections sending
  // 4 MiB - 1 bytes of a 4 MiB frame made control buffer 806 MiB (1024 connections: 4 GiB).
  const max = 8 << 20;
  const { server, address } = await startServer(t, { limits: { maxPartialFrameBytes: max, frameTimeoutMs: 0 } });
  const header = Buffer.alloc(10);
  header.writeUInt32BE(4 << 20, 0);
  header.writeUInt32BE(1, 4);
  header[8] = FrameType.REQUEST;
  const body = Buffer.alloc((4 << 20) - 1, 0x41);
  const peers: RawPeer[] = [];
  for (let i = 0; i < 8; i++) {
    const peer = await RawPeer.connect(address);
    peers.push(peer);
    peer.socket.write(header);
    peer.socket.write(body);
  }
  t.teardown(() => peers.forEach((p) => p.socket.destroy()));
  // Let the server read whatever it will read.
  let last = -1;
  await until(() => {
    const now = server.partialFrames.used;
    const stable = now === last && now > 0;
    last = now;
    return stable;
  }, 10_000);
  await sleep(300);
  const used = server.partialFrames.used;
  t.ok(used > max / 2, `the peers' bytes were read up to the bound (${used} bytes)`);
  // The bound, plus the one frame allowed to progress, plus one read (64 KiB) per connection.
  t.ok(used <= max + (4 << 20) + 8 * (64 << 10), `buffered partial frames stay near the bound: ${used} bytes for 8 x 4 MiB sent`);
  const client = await TtrpcClient.connect(address);
  t.teardown(() => client.close());
  t.equal(await echo(client, 'small'), 'small', 'a small request is served meanwhile');
  for (const p of peers) p.socket.destroy();
  t.ok(await until(() => server.partialFrames.used === 0), 'closed connections release their share');
  const big = Buffer.alloc(3 << 20, 0x42).toString();
  t.equal((await echo(client, big)).length, big.length, 'a large frame goes through once there is room');
});
