import t from 'tap';
import * as child_process from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  Code,
  FrameParser,
  FrameType,
  MESSAGE_LENGTH_MAX,
  StatusError,
  TtrpcClient,
  TtrpcServer,
  encodeFrame,
  encodeHeader,
  unary,
  unaryHandler,
  type HandlerContext,
  type ParsedFrame,
} from '../../control/ttrpc';
import type { ttrpc as pb } from '../../shared/generated/protos';
import { grpc, ttrpc } from '../../shared/proto';
import { bytesFieldChunks } from '../../control/ttrpc';
import { encodeVarint } from '../../control/ttrpc/frame';
import { Reader } from 'protobufjs/minimal';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttrpc-test-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
let socketCount = 0;
const newSocketPath = (): string => path.join(dir, `s${socketCount++}.sock`);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A raw ttRPC peer: writes frames by hand and reads whatever the server sends back. */
class RawPeer {
  private readonly parser = new FrameParser();
  private readonly frames: ParsedFrame[] = [];
  private waiter: (() => void) | null = null;
  readonly closed: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.frames.push(...this.parser.push(chunk));
      this.waiter?.();
    });
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    void this.closed.then(() => this.waiter?.());
  }

  static connect(socketPath: string): Promise<RawPeer> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection({ path: socketPath }, () => resolve(new RawPeer(s)));
      s.once('error', reject);
    });
  }

  get isClosed(): boolean {
    return this.socket.destroyed;
  }

  send(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  sendRequest(streamId: number, request: pb.Request.$Properties): void {
    this.send(encodeFrame(streamId, FrameType.REQUEST, 0, ttrpc.Request.encode(request).finish()));
  }

  /** The next frame, or null when the connection closes first (or after timeoutMs). */
  async next(timeoutMs = 3000): Promise<ParsedFrame | null> {
    const deadline = Date.now() + timeoutMs;
    while (this.frames.length === 0) {
      if (this.socket.destroyed || Date.now() > deadline) return null;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = null;
    }
    return this.frames.shift() ?? null;
  }

  /** The next frame decoded as a Response, with its stream id and raw payload. */
  async nextResponse(timeoutMs?: number): Promise<{ streamId: number; raw: Buffer; response: pb.Response }> {
    const frame = await this.next(timeoutMs);
    if (!frame || frame.kind !== 'frame') throw new Error(`expected a response frame, got ${frame ? frame.kind : 'nothing'}`);
    if (frame.header.type !== FrameType.RESPONSE) throw new Error(`expected type 2, got ${frame.header.type}`);
    return { streamId: frame.header.streamId, raw: frame.payload, response: ttrpc.Response.decode(frame.payload) };
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** A promise with its resolve function exposed. */
function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** A server with a few test services on a fresh unix socket. */
async function startServer(t: tap.Test, extra?: (server: TtrpcServer) => void): Promise<{ server: TtrpcServer; address: string; socketPath: string }> {
  const server = new TtrpcServer();
  server.register('test.Echo', 'Echo', async (payload) => payload);
  server.register('test.Echo', 'Upper', async (payload) => Buffer.from(payload.toString('utf8').toUpperCase()));
  server.register('test.Echo', 'Empty', async () => new Uint8Array(0));
  server.register('test.Echo', 'Metadata', async (_payload, ctx) => Buffer.from(JSON.stringify(ctx.metadata)));
  extra?.(server);
  const socketPath = newSocketPath();
  const address = `unix://${socketPath}`;
  await server.listen(address);
  t.teardown(() => server.close());
  return { server, address, socketPath };
}

async function connect(t: tap.Test, address: string): Promise<TtrpcClient> {
  const client = await TtrpcClient.connect(address);
  t.teardown(() => client.close());
  return client;
}

/** `p`, or a rejection naming `what` after `ms` milliseconds. */
function within<T>(p: Promise<T>, what: string, ms = 3000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

async function rejection(p: Promise<unknown>): Promise<StatusError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof StatusError) return err;
    throw err;
  }
  throw new Error('expected a rejection');
}

t.test('echo round trip over a unix path and over an abstract socket', async (t) => {
  const { address } = await startServer(t);
  const client = await connect(t, address);
  t.equal((await client.call('test.Echo', 'Echo', Buffer.from('hello'))).toString(), 'hello');
  t.equal((await client.call('test.Echo', 'Upper', Buffer.from('hello'))).toString(), 'HELLO');
  const empty = await client.call('test.Echo', 'Empty', new Uint8Array(0));
  t.ok(Buffer.isBuffer(empty));
  t.equal(empty.length, 0);
  const md = await client.call('test.Echo', 'Metadata', new Uint8Array(0), { metadata: { traceparent: '00-abc', multi: ['a', 'b'] } });
  t.same(JSON.parse(md.toString()), { traceparent: ['00-abc'], multi: ['a', 'b'] });

  const abstractServer = new TtrpcServer({ allowAbstract: true });
  abstractServer.register('test.Echo', 'Echo', async (payload) => payload);
  const name = `kata-ttrpc-test-${process.pid}-${Date.now()}`;
  await abstractServer.listen(`unix://@${name}`);
  t.teardown(() => abstractServer.close());
  const abstractClient = await connect(t, `unix://@${name}`);
  t.equal((await abstractClient.call('test.Echo', 'Echo', Buffer.from('abstract'))).toString(), 'abstract');
});

t.test('100 concurrent calls on one connection complete out of order, each with its own answer', async (t) => {
  const { address } = await startServer(t, (server) => {
    server.register('test.Slow', 'Delay', async (payload) => {
      const n = payload.readUInt32BE(0);
      await sleep((99 - n) * 2); // later requests finish first
      return Buffer.from(`reply ${n}`);
    });
  });
  const client = await connect(t, address);
  const order: number[] = [];
  const calls = Array.from({ length: 100 }, async (_, n) => {
    const payload = Buffer.alloc(4);
    payload.writeUInt32BE(n);
    const reply = await client.call('test.Slow', 'Delay', payload);
    order.push(n);
    return reply.toString();
  });
  const replies = await Promise.all(calls);
  t.same(replies, Array.from({ length: 100 }, (_, n) => `reply ${n}`));
  t.equal(order.length, 100);
  t.not(order[0], 0, 'the first request did not finish first');
  t.equal(order[0], 99, 'the shortest handler (last request) answered first');
});

t.test('200 requests in one chunk (answers corked per turn) are each answered once, in full', async (t) => {
  const { socketPath } = await startServer(t, (server) => {
    server.register('test.Slow', 'Later', async (payload) => {
      await sleep(5);
      return payload;
    });
  });
  const peer = await RawPeer.connect(socketPath);
  t.teardown(() => peer.destroy());
  const frames: Buffer[] = [];
  const big = Buffer.alloc(100_000, 7);
  for (let i = 0; i < 200; i++) {
    const streamId = 2 * i + 1;
    const method = i % 3 === 0 ? 'Later' : 'Echo';
    const payload = i % 50 === 0 ? big : Buffer.from(`p${i}`);
    const service = method === 'Later' ? 'test.Slow' : 'test.Echo';
    frames.push(encodeFrame(streamId, FrameType.REQUEST, 0, ttrpc.Request.encode({ service, method, payload }).finish()));
  }
  peer.send(Buffer.concat(frames));
  const seen = new Map<number, Buffer>();
  for (let i = 0; i < 200; i++) {
    const r = await peer.nextResponse();
    t.notOk(seen.has(r.streamId), `stream ${r.streamId} answered once`);
    seen.set(r.streamId, Buffer.from(r.response.payload ?? []));
  }
  t.equal(seen.size, 200);
  for (let i = 0; i < 200; i++) {
    const want = i % 50 === 0 ? big : Buffer.from(`p${i}`);
    if (!want.equals(seen.get(2 * i + 1) ?? Buffer.alloc(0))) t.fail(`stream ${2 * i + 1}: wrong payload`);
  }
  t.equal(await peer.next(100), null, 'nothing more');
});

t.test('a signal first read after the call was cancelled is already aborted', async (t) => {
  const read = deferred<AbortSignal>();
  const gate = deferred();
  const { socketPath } = await startServer(t, (server) => {
    server.register('test.Late', 'Signal', async (_p, ctx) => {
      await gate.promise;
      read.resolve(ctx.signal);
      return new Uint8Array(0);
    });
  });
  const peer = await RawPeer.connect(socketPath);
  peer.sendRequest(1, { service: 'test.Late', method: 'Signal', payload: new Uint8Array(0) });
  await sleep(50);
  peer.destroy();
  await peer.closed;
  await sleep(50);
  gate.resolve();
  const signal = await within(read.promise, 'handler');
  t.ok(signal.aborted, 'aborted');
  t.ok(signal.reason instanceof StatusError && signal.reason.code === Code.CANCELLED, 'reason CANCELLED');
});

t.test('chunked answers (ReadStdout without copies) are byte-exact ReadStreamResponse messages', async (t) => {
  for (const n of [0, 1, 127, 128, 16383, 16384, 2 ** 21 - 1, 2 ** 21, 2 ** 28]) {
    const v = encodeVarint(n);
    const reader = Reader.create(v);
    t.equal(reader.uint32() >>> 0, n >>> 0, `varint ${n}`);
    t.equal(reader.pos, v.length);
  }
  t.equal(bytesFieldChunks({ data: Buffer.alloc(100) }), undefined, 'small data is encoded normally');
  t.equal(bytesFieldChunks({ data: Buffer.alloc(5000), other: 1 } as { data: Buffer }), undefined, 'another field set: encoded normally');
  const sizes = [4096, 65536, 1 << 20, 4 * (1 << 20) - 64];
  const { address } = await startServer(t, (server) => {
    server.register('test.Out', 'Read', async (payload) => {
      const n = payload.readUInt32BE(0);
      const data = Buffer.alloc(n);
      for (let i = 0; i < n; i++) data[i] = (i * 31 + 7) & 0xff;
      return bytesFieldChunks({ data }) ?? grpc.ReadStreamResponse.encode({ data }).finish();
    });
  });
  const client = await connect(t, address);
  for (const n of [...sizes, 4 * (1 << 20)]) {
    const req = Buffer.alloc(4);
    req.writeUInt32BE(n);
    if (n === 4 * (1 << 20)) {
      const err = await rejection(client.call('test.Out', 'Read', req));
      t.equal(err.code, Code.RESOURCE_EXHAUSTED, 'a chunked answer above 4 MiB is RESOURCE_EXHAUSTED');
      continue;
    }
    const reply = await client.call('test.Out', 'Read', req);
    const data = Buffer.from(grpc.ReadStreamResponse.decode(reply).data);
    t.equal(data.length, n, `${n} bytes`);
    let bad = -1;
    for (let i = 0; i < n; i++) if (data[i] !== ((i * 31 + 7) & 0xff)) { bad = i; break; }
    t.equal(bad, -1, `${n} bytes byte-exact`);
    t.same(Buffer.from(reply), Buffer.from(grpc.ReadStreamResponse.encode({ data }).finish()), 'same bytes as protobufjs encodes');
  }
});

t.test('client sends stream ids 1, 3, 5, ...', async (t) => {
  const socketPath = newSocketPath();
  const seen: number[] = [];
  const fake = net.createServer((socket) => {
    const parser = new FrameParser();
    socket.on('data', (chunk: Buffer) => {
      for (const frame of parser.push(chunk)) {
        seen.push(frame.header.streamId);
        const body = ttrpc.Response.encode({ status: {}, payload: Buffer.from('r') }).finish();
        socket.write(encodeFrame(frame.header.streamId, FrameType.RESPONSE, 0, body));
      }
    });
  });
  await new Promise<void>((r) => fake.listen(socketPath, r));
  t.teardown(() => new Promise<void>((r) => fake.close(() => r())));
  const client = await TtrpcClient.connect(`unix://${socketPath}`);
  for (let i = 0; i < 4; i++) await client.call('s', 'm', new Uint8Array(0));
  await client.close();
  t.same(seen, [1, 3, 5, 7]);
});

t.test('timeout_nano: DEADLINE_EXCEEDED "timeout", signal aborted, late result dropped', async (t) => {
  const aborted = deferred<unknown>();
  const release = deferred();
  const { socketPath } = await startServer(t, (server) => {
    server.register('test.Slow', 'Hang', async (_payload, ctx: HandlerContext) => {
      ctx.signal.addEventListener('abort', () => aborted.resolve(ctx.signal.reason));
      await release.promise;
      return Buffer.from('too late');
    });
  });
  const peer = await RawPeer.connect(socketPath);
  t.teardown(() => peer.destroy());
  peer.sendRequest(1, { service: 'test.Slow', method: 'Hang', timeout_nano: 50_000_000 });
  const { streamId, response } = await peer.nextResponse();
  t.equal(streamId, 1);
  t.equal(response.status?.code, Code.DEADLINE_EXCEEDED);
  t.equal(response.status?.message, 'timeout');
  const reason = await within(aborted.promise, 'handler signal aborted');
  t.ok(reason instanceof StatusError);
  t.equal((reason as StatusError).code, Code.DEADLINE_EXCEEDED);

  release.resolve();
  await sleep(20);
  peer.sendRequest(3, { service: 'test.Echo', method: 'Echo', payload: Buffer.from('next') });
  const after = await peer.nextResponse();
  t.equal(after.streamId, 3, 'no second answer on stream 1');
  t.equal(Buffer.from(after.response.payload).toString(), 'next');

  // The client's own timer gives the same result when the server never answers in time.
  const { address } = await startServer(t, (server) => {
    server.register('test.Slow', 'Forever', () => new Promise<Uint8Array>(() => undefined));
  });
  const client = await connect(t, address);
  const err = await rejection(client.call('test.Slow', 'Forever', new Uint8Array(0), { timeoutNs: 30_000_000 }));
  t.equal(err.code, Code.DEADLINE_EXCEEDED);
  t.equal(err.message, 'timeout');
  t.equal((await client.call('test.Echo', 'Echo', Buffer.from('still fine'))).toString(), 'still fine');
  t.equal(client.pendingCalls, 0);
});

t.test('handler sees the deadline; 0 means none', async (t) => {
  const { address } = await startServer(t, (server) => {
    server.register('test.Ctx', 'Deadline', async (_p, ctx) => Buffer.from(String(ctx.deadlineMs ?? 'none')));
  });
  const client = await connect(t, address);
  const before = Date.now();
  const got = Number((await client.call('test.Ctx', 'Deadline', new Uint8Array(0), { timeoutNs: 5e9 })).toString());
  t.ok(got >= before + 5000 && got <= Date.now() + 5000, `deadline ${got} is about now + 5 s`);
  t.equal((await client.call('test.Ctx', 'Deadline', new Uint8Array(0))).toString(), 'none');
});

t.test('unknown service and unknown method are UNIMPLEMENTED', async (t) => {
  const { address } = await startServer(t);
  const client = await connect(t, address);
  const svc = await rejection(client.call('no.Such', 'Thing', new Uint8Array(0)));
  t.equal(svc.code, Code.UNIMPLEMENTED);
  t.equal(svc.message, 'service no.Such is not implemented');
  const method = await rejection(client.call('test.Echo', 'Nope', new Uint8Array(0)));
  t.equal(method.code, Code.UNIMPLEMENTED);
  t.equal(method.message, 'method test.Echo/Nope is not implemented');
});

t.test('even stream id is INVALID_ARGUMENT "stream id must be odd"', async (t) => {
  const { socketPath } = await startServer(t);
  const peer = await RawPeer.connect(socketPath);
  t.teardown(() => peer.destroy());
  peer.sendRequest(2, { service: 'test.Echo', method: 'Echo', payload: Buffer.from('x') });
  const { streamId, response } = await peer.nextResponse();
  t.equal(streamId, 2);
  t.equal(response.status?.code, Code.INVALID_ARGUMENT);
  t.equal(response.status?.message, 'stream id must be odd');
  t.equal(response.payload.length, 0);
  peer.sendRequest(5, { service: 'test.Echo', method: 'Echo', payload: Buffer.from('y') });
  t.equal(Buffer.from((await peer.nextResponse()).response.payload).toString(), 'y', 'connection still serves');
});

t.test('request payload of 4 MiB + 1 is RESOURCE_EXHAUSTED and the connection stays usable', async (t) => {
  const { socketPath, address } = await startServer(t);
  const peer = await RawPeer.connect(socketPath);
  t.teardown(() => peer.destroy());
  const length = MESSAGE_LENGTH_MAX + 1;
  peer.send(encodeHeader({ length, streamId: 1, type: FrameType.REQUEST, flags: 0 }));
  peer.send(Buffer.alloc(length, 0x42));
  const { streamId, response } = await peer.nextResponse(5000);
  t.equal(streamId, 1);
  t.equal(response.status?.code, Code.RESOURCE_EXHAUSTED);
  t.equal(response.status?.message, 'message length 4194305 exceeds maximum message size of 4194304');
  peer.sendRequest(3, { service: 'test.Echo', method: 'Echo', payload: Buffer.from('after') });
  const next = await peer.nextResponse();
  t.equal(next.streamId, 3);
  t.equal(next.response.status?.code ?? 0, 0);
  t.equal(Buffer.from(next.response.payload).toString(), 'after');

  // Exactly 4 MiB of frame payload is allowed.
  const client = await connect(t, address);
  const overhead = ttrpc.Request.encode({ service: 'test.Echo', method: 'Empty', payload: Buffer.alloc(MESSAGE_LENGTH_MAX - 100) }).finish().length - (MESSAGE_LENGTH_MAX - 100);
  const fits = Buffer.alloc(MESSAGE_LENGTH_MAX - overhead, 1);
  t.equal((await client.call('test.Echo', 'Empty', fits)).length, 0, 'a request of exactly 4 MiB is served');
  // The client refuses to send what the server would refuse.
  const big = await rejection(client.call('test.Echo', 'Echo', Buffer.alloc(MESSAGE_LENGTH_MAX)));
  t.equal(big.code, Code.RESOURCE_EXHAUSTED);
  t.match(big.message, /^message length \d+ exceeds maximum message size of 4194304$/);
});

t.test('a response above 4 MiB is replaced by RESOURCE_EXHAUSTED', async (t) => {
  const { address } = await startServer(t, (server) => {
    server.register('test.Big', 'Reply', async () => Buffer.alloc(MESSAGE_LENGTH_MAX, 7));
  });
  const client = await connect(t, address);
  const err = await rejection(client.call('test.Big', 'Reply', new Uint8Array(0)));
  t.equal(err.code, Code.RESOURCE_EXHAUSTED);
  t.match(err.message, /^message length \d+ exceeds maximum message size of 4194304$/);
  t.equal((await client.call('test.Echo', 'Echo', Buffer.from('ok'))).toString(), 'ok');
});

t.test('garbage closes only its own connection', async (t) => {
  const { socketPath, address } = await startServer(t);
  const client = await connect(t, address);

  // A request frame whose envelope is not protobuf.
  const bad = await RawPeer.connect(socketPath);
  bad.send(encodeFrame(1, FrameType.REQUEST, 0, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff])));
  const { response } = await bad.nextResponse();
  t.equal(response.status?.code, Code.INVALID_ARGUMENT);
  t.match(response.status?.message, /^malformed request envelope/);
  await within(bad.closed, 'server closes the connection');
  t.pass('connection with a malformed envelope was closed');

  // Something that is not ttRPC at all.
  const http = await RawPeer.connect(socketPath);
  http.send(Buffer.from('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n'));
  t.equal(await http.next(), null, 'no answer');
  await within(http.closed, 'server closes the connection');
  t.pass('connection sending HTTP was closed');

  t.equal((await client.call('test.Echo', 'Echo', Buffer.from('alive'))).toString(), 'alive', 'other connection unaffected');
  const fresh = await connect(t, address);
  t.equal((await fresh.call('test.Echo', 'Echo', Buffer.from('new'))).toString(), 'new', 'new connections accepted');
});

t.test('DATA frames and unknown frame types are ignored', async (t) => {
  const { socketPath } = await startServer(t);
  const peer = await RawPeer.connect(socketPath);
  t.teardown(() => peer.destroy());
  peer.send(encodeFrame(1, FrameType.DATA, 0, Buffer.from('stream data')));
  peer.send(encodeFrame(3, 9, 0, Buffer.from('what is this')));
  peer.send(encodeFrame(5, FrameType.RESPONSE, 0, Buffer.alloc(0)));
  peer.sendRequest(7, { service: 'test.Echo', method: 'Echo', payload: Buffer.from('z') });
  const { streamId, response } = await peer.nextResponse();
  t.equal(streamId, 7, 'the first answer is for the request');
  t.equal(Buffer.from(response.payload).toString(), 'z');
});

t.test('a success response is encoded as status 0a 00 then the payload', async (t) => {
  const { socketPath } = await startServer(t);
  const peer = await RawPeer.connect(socketPath);
  t.teardown(() => peer.destroy());
  peer.sendRequest(1, { service: 'test.Echo', method: 'Echo', payload: Buffer.from('abc') });
  const withPayload = await peer.nextResponse();
  t.equal(withPayload.raw.toString('hex'), '0a00' + '1203' + Buffer.from('abc').toString('hex'));
  peer.sendRequest(3, { service: 'test.Echo', method: 'Empty' });
  const empty = await peer.nextResponse();
  t.equal(empty.raw.toString('hex'), '0a00', 'empty reply: only the empty status');
  peer.sendRequest(5, { service: 'test.Echo', method: 'Missing' });
  const failed = await peer.nextResponse();
  t.equal(failed.response.payload.length, 0, 'error responses carry no payload');
  t.equal(failed.raw.subarray(0, 1).toString('hex'), '0a');
});

t.test('thrown errors: StatusError keeps its code, anything else is INTERNAL', async (t) => {
  const { address } = await startServer(t, (server) => {
    server.register('test.Fail', 'Plain', async () => {
      throw new Error('boom');
    });
    server.register('test.Fail', 'Sync', () => {
      throw new RangeError('sync boom');
    });
    server.register('test.Fail', 'Status', async () => {
      throw new StatusError(Code.NOT_FOUND, 'container "c1" not found');
    });
    server.register('test.Fail', 'NotBytes', async () => 'a string' as unknown as Uint8Array);
  });
  const client = await connect(t, address);
  const plain = await rejection(client.call('test.Fail', 'Plain', new Uint8Array(0)));
  t.same([plain.code, plain.message], [Code.INTERNAL, 'boom']);
  const sync = await rejection(client.call('test.Fail', 'Sync', new Uint8Array(0)));
  t.same([sync.code, sync.message], [Code.INTERNAL, 'sync boom']);
  const status = await rejection(client.call('test.Fail', 'Status', new Uint8Array(0)));
  t.same([status.code, status.message], [Code.NOT_FOUND, 'container "c1" not found']);
  const notBytes = await rejection(client.call('test.Fail', 'NotBytes', new Uint8Array(0)));
  t.equal(notBytes.code, Code.INTERNAL);
});

t.test('typed helpers: unaryHandler and unary', async (t) => {
  const { address } = await startServer(t, (server) => {
    server.register(
      'test.Typed',
      'Swap',
      unaryHandler(ttrpc.KeyValue, ttrpc.KeyValue, (req) => ({ key: req.value, value: req.key })),
    );
  });
  const client = await connect(t, address);
  const swap = unary(client, 'test.Typed', 'Swap', ttrpc.KeyValue, ttrpc.KeyValue);
  const reply = await swap({ key: 'k', value: 'v' });
  t.same([reply.key, reply.value], ['v', 'k']);
  const undecodable = await rejection(client.call('test.Typed', 'Swap', Buffer.from([0xff, 0xff, 0xff])));
  t.equal(undecodable.code, Code.INVALID_ARGUMENT);
  t.match(undecodable.message, /^cannot decode test\.Typed\/Swap request: /);
});

t.test('closing the server rejects pending calls with UNAVAILABLE and aborts handlers', async (t) => {
  const aborted = deferred<unknown>();
  const started = deferred();
  const server = new TtrpcServer();
  server.register('test.Slow', 'Forever', (_p, ctx) => {
    ctx.signal.addEventListener('abort', () => aborted.resolve(ctx.signal.reason));
    started.resolve();
    return new Promise<Uint8Array>(() => undefined);
  });
  const socketPath = newSocketPath();
  await server.listen(`unix://${socketPath}`);
  const client = await TtrpcClient.connect(`unix://${socketPath}`);
  const pending = rejection(client.call('test.Slow', 'Forever', new Uint8Array(0)));
  await within(started.promise, 'handler started');
  await server.close();
  const err = await pending;
  t.equal(err.code, Code.UNAVAILABLE);
  t.equal(err.message, 'the server is shutting down', 'the pending call was answered before the connection closed');
  t.equal(((await within(aborted.promise, 'handler signal aborted')) as StatusError).code, Code.CANCELLED);
  t.notOk(fs.existsSync(socketPath), 'socket file removed');
  const later = await rejection(client.call('test.Echo', 'Echo', new Uint8Array(0)));
  t.equal(later.code, Code.UNAVAILABLE, 'calls after the connection closed are rejected too');
  await client.close();
  await t.rejects(server.listen(`unix://${newSocketPath()}`), { code: Code.FAILED_PRECONDITION });
});

t.test('closing with a grace period lets in-flight handlers answer; new requests get UNAVAILABLE', async (t) => {
  const server = new TtrpcServer();
  const started = deferred();
  let release!: () => void;
  server.register('test.Slow', 'Soon', async () => {
    started.resolve();
    await new Promise<void>((resolve) => {
      release = resolve;
    });
    return Buffer.from('done');
  });
  server.register('test.Slow', 'Forever', () => new Promise<Uint8Array>(() => undefined));
  const socketPath = newSocketPath();
  await server.listen(`unix://${socketPath}`);
  const client = await TtrpcClient.connect(`unix://${socketPath}`);
  t.teardown(() => client.close());
  const soon = client.call('test.Slow', 'Soon', new Uint8Array(0));
  const forever = rejection(client.call('test.Slow', 'Forever', new Uint8Array(0)));
  await within(started.promise, 'handler started');
  const closed = server.close({ graceMs: 300, message: 'going away' });
  await new Promise((resolve) => setTimeout(resolve, 50));
  const late = await rejection(client.call('test.Slow', 'Soon', new Uint8Array(0)));
  t.equal(late.code, Code.UNAVAILABLE, 'a request during the grace period is refused');
  t.equal(late.message, 'the server is shutting down');
  release();
  t.equal(Buffer.from(await soon).toString(), 'done', 'the handler that settled in the grace period was answered');
  const err = await forever;
  t.equal(err.code, Code.UNAVAILABLE);
  t.equal(err.message, 'going away', 'the handler still pending after the grace period was answered UNAVAILABLE');
  await closed;
});

t.test('closing with unanswered long polls: they end with the connection, not with a status, and do not hold the grace period', async (t) => {
  const server = new TtrpcServer();
  const started = deferred();
  const aborted = deferred<unknown>();
  server.register('test.Slow', 'Poll', (_p, ctx) => {
    ctx.signal.addEventListener('abort', () => aborted.resolve(ctx.signal.reason));
    started.resolve();
    return new Promise<Uint8Array>(() => undefined);
  });
  server.register('test.Slow', 'Forever', () => new Promise<Uint8Array>(() => undefined));
  const socketPath = newSocketPath();
  await server.listen(`unix://${socketPath}`);
  const client = await TtrpcClient.connect(`unix://${socketPath}`);
  t.teardown(() => client.close());
  const poll = rejection(client.call('test.Slow', 'Poll', new Uint8Array(0)));
  await within(started.promise, 'handler started');
  // Only the poll is in flight: the close does not wait for the (long) grace period.
  await within(server.close({ graceMs: 600_000, message: 'going away', unanswered: new Set(['test.Slow/Poll']) }), 'close without waiting for the poll');
  const err = await poll;
  t.equal(err.code, Code.UNAVAILABLE);
  t.match(err.message, /^connection closed/, `no answer, the connection closed: ${err.message}`);
  t.equal(((await within(aborted.promise, 'handler signal aborted')) as StatusError).code, Code.CANCELLED, 'its handler was aborted');
});

t.test('a dropped connection aborts its in-flight handlers', async (t) => {
  const aborted = deferred<unknown>();
  const started = deferred();
  const { socketPath } = await startServer(t, (server) => {
    server.register('test.Slow', 'Forever', (_p, ctx) => {
      ctx.signal.addEventListener('abort', () => aborted.resolve(ctx.signal.reason));
      started.resolve();
      return new Promise<Uint8Array>(() => undefined);
    });
  });
  const peer = await RawPeer.connect(socketPath);
  peer.sendRequest(1, { service: 'test.Slow', method: 'Forever' });
  await within(started.promise, 'handler started');
  peer.destroy();
  const reason = (await within(aborted.promise, 'handler signal aborted')) as StatusError;
  t.equal(reason.code, Code.CANCELLED);
});

t.test('client close and connect errors', async (t) => {
  const { address } = await startServer(t, (server) => {
    server.register('test.Slow', 'Forever', () => new Promise<Uint8Array>(() => undefined));
  });
  const client = await TtrpcClient.connect(address);
  const pending = rejection(client.call('test.Slow', 'Forever', new Uint8Array(0)));
  await client.close();
  t.equal((await pending).code, Code.CANCELLED);
  t.ok(client.isClosed);
  t.equal((await rejection(client.call('test.Echo', 'Echo', new Uint8Array(0)))).code, Code.CANCELLED);

  const controller = new AbortController();
  const other = await connect(t, address);
  const cancelled = rejection(other.call('test.Slow', 'Forever', new Uint8Array(0), { signal: controller.signal }));
  controller.abort();
  t.equal((await cancelled).code, Code.CANCELLED);
  t.equal((await other.call('test.Echo', 'Echo', Buffer.from('x'))).toString(), 'x');
  t.equal((await rejection(other.call('test.Echo', 'Echo', new Uint8Array(0), { timeoutNs: -1 }))).code, Code.INVALID_ARGUMENT);

  const missing = await rejection(TtrpcClient.connect(`unix://${path.join(dir, 'nobody-here.sock')}`));
  t.equal(missing.code, Code.UNAVAILABLE);
  t.match(missing.message, /cannot connect to unix:\/\/.*nobody-here\.sock/);
  const badScheme = await rejection(TtrpcClient.connect('tcp://127.0.0.1:1'));
  t.equal(badScheme.code, Code.INVALID_ARGUMENT);
});

t.test('listen removes a stale socket file but refuses to remove other files', async (t) => {
  const socketPath = newSocketPath();
  // Leave a stale socket behind: a process that dies while listening.
  const killed = child_process.spawnSync(process.execPath, [
    '-e',
    `require('net').createServer().listen(${JSON.stringify(socketPath)}, () => process.kill(process.pid, 'SIGKILL'))`,
  ], { stdio: 'ignore' });
  t.equal(killed.signal, 'SIGKILL');
  t.ok(fs.lstatSync(socketPath).isSocket(), 'stale socket exists');
  const server = new TtrpcServer();
  server.register('test.Echo', 'Echo', async (p) => p);
  await server.listen(`unix://${socketPath}`);
  t.teardown(() => server.close());
  const client = await connect(t, `unix://${socketPath}`);
  t.equal((await client.call('test.Echo', 'Echo', Buffer.from('fresh'))).toString(), 'fresh');

  const regular = path.join(dir, 'regular-file');
  fs.writeFileSync(regular, 'keep me');
  const other = new TtrpcServer();
  await t.rejects(other.listen(`unix://${regular}`), { code: Code.ALREADY_EXISTS });
  t.equal(fs.readFileSync(regular, 'utf8'), 'keep me');
  await t.rejects(other.listen('http://x'), { code: Code.INVALID_ARGUMENT, message: /invalid server address URI scheme/ });
  await other.close();
});

t.test('register refuses a duplicate method', async (t) => {
  const server = new TtrpcServer();
  server.register('a.B', 'C', async (p) => p);
  t.throws(() => server.register('a.B', 'C', async (p) => p), { code: Code.ALREADY_EXISTS });
});

t.test('random bytes on many connections never take the server down', async (t) => {
  const { socketPath, address } = await startServer(t);
  let seed = 0x2545f491;
  const nextByte = (): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return seed & 0xff;
  };
  for (let i = 0; i < 40; i++) {
    const peer = await RawPeer.connect(socketPath);
    const junk = Buffer.alloc(1 + (i * 37) % 300);
    for (let j = 0; j < junk.length; j++) junk[j] = nextByte();
    if (i % 2 === 0) junk.writeUInt8(FrameType.REQUEST, Math.min(8, junk.length - 1)); // look like a request
    peer.send(junk);
    await sleep(2);
    peer.destroy();
  }
  const client = await connect(t, address);
  t.equal((await client.call('test.Echo', 'Echo', Buffer.from('survived'))).toString(), 'survived');
});

t.test('onWritten hooks run once a chunked answer was written, not for one that is not sent', async (t) => {
  let written = 0;
  const { address } = await startServer(t, (server) => {
    server.register('test.Out', 'Reuse', async (payload, ctx) => {
      const n = payload.readUInt32BE(0);
      const data = Buffer.alloc(n, 0x5a);
      // A producer reusing the buffer from the hook on (what ReadStdout's read pool does).
      ctx.onWritten?.(() => {
        written++;
        data.fill(0xee);
      });
      return bytesFieldChunks({ data }) ?? grpc.ReadStreamResponse.encode({ data }).finish();
    });
  });
  const client = await connect(t, address);
  for (const n of [8192, 3 << 20]) {
    const req = Buffer.alloc(4);
    req.writeUInt32BE(n);
    const before = written;
    const data = Buffer.from(grpc.ReadStreamResponse.decode(await client.call('test.Out', 'Reuse', req)).data);
    t.equal(data.length, n);
    t.equal(data.indexOf(0xee), -1, `${n} bytes: the peer got the bytes as they were before the hook`);
    t.equal(data.indexOf(0x5a), 0);
    await sleep(10);
    t.equal(written, before + 1, 'the hook ran once');
  }
  const big = Buffer.alloc(4);
  big.writeUInt32BE(4 << 20);
  const before = written;
  const err = await rejection(client.call('test.Out', 'Reuse', big));
  t.equal(err.code, Code.RESOURCE_EXHAUSTED);
  await sleep(10);
  t.equal(written, before, 'an answer replaced by an error never runs the hook (its buffer is not reused)');
});
