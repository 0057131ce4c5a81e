import t from 'tap';
import * as crypto from 'node:crypto';
import { Code, FdStream, StatusError, TtrpcClient, TtrpcServer } from '../../control/ttrpc';
import { loadNative, type NativeAddon } from '../../shared/native';

let native: NativeAddon | null = null;
let why = '';
try {
  native = loadNative();
  for (const fn of ['pipe', 'read', 'write', 'close', 'setNonBlocking', 'seqpacketPair', 'Poller'] as const) {
    if (typeof native[fn] !== 'function') {
      why = `native addon lacks ${fn}`;
      native = null;
      break;
    }
  }
} catch (err) {
  why = `native addon not available: ${(err as Error).message}`;
}
if (!native) {
  console.log(`# skipping FdStream tests: ${why}`);
  t.pass(`skipped: ${why}`, { skip: why });
} else {
  const addon = native;

  const collect = (stream: FdStream): Promise<Buffer> =>
    new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.once('end', () => resolve(Buffer.concat(chunks)));
      stream.once('error', reject);
    });

  t.test('bytes cross a pipe intact, past the pipe buffer, then EOF', async (t) => {
    const [r, w] = addon.pipe();
    const reader = new FdStream(r, { native: addon });
    const writer = new FdStream(w, { native: addon });
    const data = crypto.randomBytes(3 * 1024 * 1024 + 17);
    const received = collect(reader);
    for (let off = 0; off < data.length; off += 100_000) writer.write(data.subarray(off, off + 100_000));
    await new Promise<void>((resolve) => writer.end(resolve));
    writer.destroy(); // closes the write end: the reader sees EOF
    const got = await received;
    t.equal(got.length, data.length);
    t.ok(got.equals(data), 'same bytes in the same order');
    reader.destroy();
    await new Promise((r2) => setImmediate(r2));
    t.equal(reader.fd, -1, 'fd released on destroy');
  });

  t.test('a slow reader applies backpressure without losing data', async (t) => {
    const [r, w] = addon.pipe();
    const reader = new FdStream(r, { native: addon, readChunkBytes: 4096 });
    const writer = new FdStream(w, { native: addon });
    const data = crypto.randomBytes(512 * 1024);
    writer.end(data, () => writer.destroy());
    const chunks: Buffer[] = [];
    reader.pause();
    await new Promise((r2) => setTimeout(r2, 50));
    for await (const chunk of reader) {
      chunks.push(chunk as Buffer);
      if (chunks.length % 16 === 0) await new Promise((r2) => setTimeout(r2, 1));
    }
    t.ok(Buffer.concat(chunks).equals(data));
  });

  t.test('writing after the reader is gone fails with EPIPE', async (t) => {
    const [r, w] = addon.pipe();
    addon.close(r);
    const writer = new FdStream(w, { native: addon });
    const err = await new Promise<Error & { code?: string }>((resolve) => {
      writer.once('error', resolve);
      writer.write(Buffer.from('nobody listens'));
    });
    t.equal(err.code, 'EPIPE');
  });

  t.test('ttRPC round trip over FdStreams (seqpacket socketpair, small frames)', async (t) => {
    const [a, b] = addon.seqpacketPair();
    const server = new TtrpcServer();
    server.register('test.Echo', 'Echo', async (payload) => payload);
    server.register('test.Echo', 'Fail', async () => {
      throw new StatusError(Code.NOT_FOUND, 'nothing here');
    });
    server.handleConnection(new FdStream(a, { native: addon }));
    const client = TtrpcClient.fromStream(new FdStream(b, { native: addon }));
    const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => client.call('test.Echo', 'Echo', Buffer.from(`m${i}`))));
    t.same(replies.map((r2) => r2.toString()), Array.from({ length: 20 }, (_, i) => `m${i}`));
    await t.rejects(client.call('test.Echo', 'Fail', new Uint8Array(0)), { code: Code.NOT_FOUND, message: 'nothing here' });
    await server.close();
    await t.rejects(client.call('test.Echo', 'Echo', new Uint8Array(0)), { code: Code.UNAVAILABLE });
    await client.close();
  });

  t.test('vsock listener over the loopback transport (CID 1)', async (t) => {
    const port = 20000 + (process.pid % 20000);
    const server = new TtrpcServer({ native: addon });
    server.register('test.Echo', 'Echo', async (payload) => payload);
    try {
      await server.listen(`vsock://-1:${port}`);
    } catch (err) {
      const reason = `cannot listen on vsock: ${(err as Error).message}`;
      console.log(`# ${reason}`);
      t.pass(reason, { skip: reason });
      return;
    }
    t.teardown(() => server.close());
    let fd: number;
    try {
      fd = addon.vsockConnect(1, port);
    } catch (err) {
      const reason = `no vsock loopback transport (vsock_loopback module): ${(err as Error).message}`;
      console.log(`# ${reason}`);
      t.pass(reason, { skip: reason });
      return;
    }
    const client = TtrpcClient.fromStream(new FdStream(fd, { native: addon }));
    t.equal((await client.call('test.Echo', 'Echo', Buffer.from('over vsock'))).toString(), 'over vsock');
    await client.close();
  });
}
