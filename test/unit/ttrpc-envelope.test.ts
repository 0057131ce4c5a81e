import t from 'tap';
import { FrameType, encodeFrame } from '../../control/ttrpc';
import { decodeRequest, encodeOkResponseFrame } from '../../control/ttrpc/envelope';
import { ttrpc } from '../../shared/proto';

/** What the generated protobufjs decoder makes of `body`, in decodeRequest's shape (or its error). */
function reference(body: Buffer): unknown {
  try {
    const r = ttrpc.Request.decode(body);
    return {
      service: r.service ?? '',
      method: r.method ?? '',
      payload: Buffer.from(r.payload ?? []).toString('hex'),
      timeoutNano: Number(r.timeout_nano ?? 0),
      metadata: (r.metadata ?? []).map((kv) => [kv.key ?? '', kv.value ?? '']),
    };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

function ours(body: Buffer): unknown {
  try {
    const r = decodeRequest(body);
    return { service: r.service, method: r.method, payload: r.payload.toString('hex'), timeoutNano: r.timeoutNano, metadata: (r.metadata ?? []).map((kv) => [kv.key ?? '', kv.value ?? '']) };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

const enc = (m: Parameters<typeof ttrpc.Request.encode>[0]): Buffer => Buffer.from(ttrpc.Request.encode(m).finish());

t.test('decodeRequest agrees with protobufjs on well-formed, unusual and malformed envelopes', async (t) => {
  const cases: Buffer[] = [
    enc({ service: 'grpc.Health', method: 'Check', payload: Buffer.from([0x0a, 0x00]) }),
    enc({ service: 'grpc.AgentService', method: 'ReadStdout', payload: Buffer.alloc(300, 7), timeout_nano: 5_000_000_000 }),
    enc({ service: 'grpc.Health', method: 'Check' }),
    enc({}),
    enc({ service: 'grpc.Health', method: 'Check', timeout_nano: 2 ** 52 }), // beyond the hand-read varint: protobufjs decides
    enc({ service: 'grpc.Health', method: 'Check', timeout_nano: -1 }),
    enc({ service: 'grpc.Health', method: 'Check', metadata: [{ key: 'a', value: 'b' }, { key: 'a', value: 'c' }] }),
    enc({ service: 'grpc.Hëalth', method: 'Chéck' }), // non-ASCII names
    Buffer.concat([enc({ service: 'one' }), enc({ service: 'two', payload: Buffer.from('x') }), enc({ payload: Buffer.alloc(0) })]), // repeated fields: last wins
    Buffer.from([0x0a, 0x05, 0x61]), // truncated string
    Buffer.from([0x0a, 0x02, 0xc3, 0x28]), // invalid UTF-8
    Buffer.from([0x20, 0xff, 0xff]), // truncated varint
    Buffer.from([0x12, 0x80, 0x80, 0x80, 0x80, 0x01]), // 5-byte length
    Buffer.from([0x3a, 0x01, 0x00, 0x0a, 0x01, 0x41]), // unknown field 7
    Buffer.from([0x0b]), // wire type 3 (start group)
  ];
  for (const body of cases) t.same(ours(body), reference(body), body.toString('hex'));
  // Random bytes, and random mutations of a real envelope.
  let seed = 12345;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const base = enc({ service: 'grpc.Health', method: 'Check', payload: Buffer.from([0x0a, 0x01, 0x41]), timeout_nano: 1000 });
  for (let i = 0; i < 3000; i++) {
    const body = i % 2 === 0 ? Buffer.from(Array.from({ length: rnd(24) }, () => rnd(256))) : Buffer.from(base);
    if (i % 2 === 1) for (let k = 0; k <= rnd(3); k++) body[rnd(body.length)] = rnd(256);
    const a = ours(body);
    const b = reference(body);
    if (JSON.stringify(a) !== JSON.stringify(b)) {
      t.same(a, b, body.toString('hex'));
      return;
    }
  }
  t.pass('3000 random envelopes decoded alike');
});

t.test('encodeOkResponseFrame is the frame of ttrpc.Response.encode({status: {}, payload})', async (t) => {
  for (const n of [0, 1, 127, 128, 16383, 16384, 65536]) {
    const payload = Buffer.alloc(n, n & 0xff);
    const want = encodeFrame(77, FrameType.RESPONSE, 0, ttrpc.Response.encode({ status: {}, payload }).finish());
    t.equal(encodeOkResponseFrame(77, FrameType.RESPONSE, payload).toString('hex'), want.toString('hex'), `payload of ${n} bytes`);
  }
});
