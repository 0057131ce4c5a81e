// SeqpacketChannel (shared/channel.ts): message round trips with fds, packet boundaries,
// queueing under back-pressure, size limits, and what a bad packet does to the receiver.
import t, { type Test } from 'tap';
import { MAX_FDS_PER_PACKET, SeqpacketChannel, encodeMessage } from '../../shared/channel';
import { loadNative } from '../../shared/native';
import { Code, HELPER_MAX_PACKET, StatusError } from '../../shared/protocol';

const native = loadNative();

function pair(): [SeqpacketChannel, SeqpacketChannel] {
  const [a, b] = native.seqpacketPair();
  return [new SeqpacketChannel(a), new SeqpacketChannel(b)];
}

function nextMessage(ch: SeqpacketChannel): Promise<{ message: unknown; fds: number[] }> {
  return new Promise((resolve) => ch.once('message', (message, fds) => resolve({ message, fds })));
}

/** Assert that `fn` throws a StatusError with `code` (and a message matching `re`). */
function throwsStatus(t: Test, fn: () => unknown, code: number, re?: RegExp): void {
  try {
    fn();
  } catch (err) {
    t.ok(err instanceof StatusError, 'throws a StatusError');
    t.equal((err as StatusError).code, code, `code ${code}: ${(err as Error).message}`);
    if (re) t.match((err as Error).message, re);
    return;
  }
  t.fail('expected a throw');
}

function readAll(fd: number): string {
  const buf = Buffer.alloc(4096);
  let out = '';
  for (;;) {
    const n = native.read(fd, buf, 0, buf.length);
    if (n <= 0) return out;
    out += buf.toString('utf8', 0, n);
  }
}

t.test('a message with Buffers, nested values and fds round-trips', async (t) => {
  const [a, b] = pair();
  t.teardown(() => {
    a.close();
    b.close();
  });
  const [r, w] = native.pipe();
  const got = nextMessage(b);
  let sentErr: Error | undefined | null = null;
  a.send({ id: 7, blob: Buffer.from([0, 1, 2, 255]), list: [1, 'two', { three: true }], big: 2 ** 40, none: null }, [w], (err) => {
    sentErr = err;
  });
  const { message, fds } = await got;
  t.equal(sentErr, undefined, 'onSent called without an error');
  t.same(message, { id: 7, blob: Buffer.from([0, 1, 2, 255]), list: [1, 'two', { three: true }], big: 2 ** 40, none: null });
  t.ok(Buffer.isBuffer((message as { blob: unknown }).blob), 'Buffer comes back as a Buffer');
  t.equal(fds.length, 1);
  t.not(fds[0], w, 'the receiver gets its own fd');
  // The received fd is the same pipe: write through it, read from the other end.
  native.close(w); // send did not close it; the receiver's copy keeps the pipe open
  native.write(fds[0], Buffer.from('via fd'), 0, 6);
  native.close(fds[0]);
  t.equal(readAll(r), 'via fd');
  native.close(r);
});

t.test('packet boundaries are kept and order preserved, also when the socket is full', async (t) => {
  const [a, b] = pair();
  t.teardown(() => {
    a.close();
    b.close();
  });
  const count = 400;
  const payload = 'x'.repeat(20000); // 400 × 20 KB is far beyond the socket buffer: sends queue
  const received: number[] = [];
  let sentOk = 0;
  const done = new Promise<void>((resolve) => {
    b.on('message', (message) => {
      const m = message as { seq: number; payload: string };
      t.equal(m.payload.length, payload.length);
      received.push(m.seq);
      if (received.length === count) resolve();
    });
  });
  for (let i = 0; i < count; i++) a.send({ seq: i, payload }, [], (err) => (err ? t.fail(String(err)) : sentOk++));
  await done;
  t.same(received, Array.from({ length: count }, (_, i) => i), 'every message once, in order');
  t.equal(sentOk, count, 'every onSent called');
});

t.test('oversized messages and too many fds are refused with RESOURCE_EXHAUSTED', async (t) => {
  const [a, b] = pair();
  t.teardown(() => {
    a.close();
    b.close();
  });
  throwsStatus(t, () => a.send({ blob: Buffer.alloc(HELPER_MAX_PACKET) }), Code.RESOURCE_EXHAUSTED, /exceeds/);
  const fds = Array.from({ length: MAX_FDS_PER_PACKET + 1 }, () => 0);
  throwsStatus(t, () => a.send({}, fds), Code.RESOURCE_EXHAUSTED, /fds/);
  // Below HELPER_MAX_PACKET but above the default socket send buffer: EMSGSIZE → RESOURCE_EXHAUSTED,
  // and the channel stays usable.
  let bigErr: unknown;
  try {
    a.send({ blob: Buffer.alloc(HELPER_MAX_PACKET - 100) });
  } catch (err) {
    bigErr = err;
  }
  if (bigErr !== undefined) {
    t.ok(bigErr instanceof StatusError && bigErr.code === Code.RESOURCE_EXHAUSTED, 'EMSGSIZE is RESOURCE_EXHAUSTED');
  } else {
    t.pass('the socket send buffer is large enough for HELPER_MAX_PACKET here');
    await nextMessage(b);
  }
  t.notOk(a.closed, 'channel still open');
  const got = nextMessage(b);
  a.send({ after: true });
  t.same((await got).message, { after: true });
});

t.test('a packet that is not msgpack closes the receiver and its fds, without a message', async (t) => {
  const [rawA, fdB] = native.seqpacketPair();
  const b = new SeqpacketChannel(fdB);
  let messages = 0;
  b.on('message', () => messages++);
  const closed = new Promise<void>((resolve) => b.once('close', resolve));
  const [r, w] = native.pipe();
  // 0x92 announces a 2-element array, only one follows: truncated msgpack.
  native.seqpacketSend(rawA, Buffer.from([0x92, 0x01]), [w]);
  native.close(w);
  await closed;
  t.equal(messages, 0, 'no message emitted');
  t.ok(b.closed);
  // The write end travelled in the packet; once the receiver closed its copy, the pipe is at EOF.
  t.equal(native.read(r, Buffer.alloc(1), 0, 1), 0, 'received fd was closed');
  native.close(r);
  // The peer sees the hang-up.
  const m = native.seqpacketRecv(rawA, 16);
  t.ok(m === null || m.eof, 'peer sees the channel closed');
  native.close(rawA);
});

t.test('trailing garbage after a valid value is refused too', async (t) => {
  const [rawA, fdB] = native.seqpacketPair();
  const b = new SeqpacketChannel(fdB);
  const closed = new Promise<void>((resolve) => b.once('close', resolve));
  native.seqpacketSend(rawA, Buffer.concat([encodeMessage({ ok: 1 }), Buffer.from([0x01])]), []);
  await closed;
  t.ok(b.closed);
  native.close(rawA);
});

t.test('close is idempotent, emits close once, and send afterwards is UNAVAILABLE', async (t) => {
  const [a, b] = pair();
  let closes = 0;
  a.on('close', () => closes++);
  const peerClosed = new Promise<void>((resolve) => b.once('close', resolve));
  a.close();
  a.close();
  t.equal(closes, 1);
  await peerClosed;
  t.ok(b.closed, 'peer hang-up closes the other side');
  throwsStatus(t, () => a.send({}), Code.UNAVAILABLE);
});

t.test('queued sends fail through onSent when the channel closes first', async (t) => {
  const [a, b] = pair();
  b.close(); // nobody reads... the peer is gone: sends fail or queue, never crash
  const results: (Error | undefined)[] = [];
  const payload = 'y'.repeat(50000);
  for (let i = 0; i < 20; i++) {
    try {
      a.send({ payload }, [], (err) => results.push(err));
    } catch (err) {
      t.ok(err instanceof StatusError, 'send after the channel closed throws a StatusError');
      break;
    }
  }
  a.close();
  t.ok(results.every((r) => r === undefined || r instanceof Error));
});
