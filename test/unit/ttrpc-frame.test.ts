import t from 'tap';
import {
  FrameParser,
  FrameType,
  MESSAGE_LENGTH_MAX,
  Code,
  StatusError,
  VMADDR_CID_ANY,
  codeName,
  decodeHeader,
  encodeFrame,
  encodeHeader,
  errorFromStatus,
  formatAddress,
  parseAddress,
  statusFromError,
  type ParsedFrame,
} from '../../control/ttrpc';
import { Writable } from 'node:stream';
import { writeFrameChunks } from '../../control/ttrpc/frame';
import { ttrpc } from '../../shared/proto';

t.test('header layout is big-endian length, stream id, type, flags', async (t) => {
  const buf = encodeFrame(0x01020304, FrameType.RESPONSE, 0x05, Buffer.from('hi'));
  t.equal(buf.toString('hex'), '00000002' + '01020304' + '02' + '05' + '6869');
  t.same(decodeHeader(buf), { length: 2, streamId: 0x01020304, type: 2, flags: 5 });
  t.equal(encodeHeader({ length: 7, streamId: 9, type: 1, flags: 0 }).toString('hex'), '00000007000000090100');
  t.equal(MESSAGE_LENGTH_MAX, 4194304);
});

t.test('parser reassembles frames split at every byte and joined in one chunk', async (t) => {
  const a = encodeFrame(1, FrameType.REQUEST, 0, Buffer.from('first payload'));
  const b = encodeFrame(3, FrameType.REQUEST, 0, Buffer.alloc(0));
  const c = encodeFrame(5, FrameType.DATA, 2, Buffer.from([0, 1, 2, 3]));
  const all = Buffer.concat([a, b, c]);

  const byteWise = new FrameParser();
  const got: ParsedFrame[] = [];
  for (let i = 0; i < all.length; i++) got.push(...byteWise.push(all.subarray(i, i + 1)));
  const whole = new FrameParser().push(all);
  for (const frames of [got, whole]) {
    t.equal(frames.length, 3);
    t.same(
      frames.map((f) => [f.kind, f.header.streamId, f.header.type, f.header.flags, f.kind === 'frame' ? f.payload.toString('hex') : null]),
      [
        ['frame', 1, 1, 0, Buffer.from('first payload').toString('hex')],
        ['frame', 3, 1, 0, ''],
        ['frame', 5, 3, 2, '00010203'],
      ],
    );
  }
  t.ok(byteWise.idle);
});

t.test('oversize frame is discarded without buffering, then parsing resumes', async (t) => {
  const parser = new FrameParser();
  const length = MESSAGE_LENGTH_MAX + 1;
  const frames: ParsedFrame[] = [];
  frames.push(...parser.push(encodeHeader({ length, streamId: 7, type: FrameType.REQUEST, flags: 0 })));
  const chunk = Buffer.alloc(1 << 20, 0xab);
  let left = length;
  let maxBuffered = 0;
  while (left > 0) {
    const piece = chunk.subarray(0, Math.min(left, chunk.length));
    left -= piece.length;
    frames.push(...parser.push(piece));
    maxBuffered = Math.max(maxBuffered, parser.bufferedBytes);
  }
  frames.push(...parser.push(encodeFrame(9, FrameType.REQUEST, 0, Buffer.from('ok'))));
  t.equal(maxBuffered, 0, 'nothing of the oversize body was kept');
  t.same(
    frames.map((f) => [f.kind, f.header.streamId, f.header.length]),
    [
      ['oversize', 7, length],
      ['frame', 9, 2],
    ],
  );
});

t.test('a header of unknown type with a huge length is garbage and stops the parser', async (t) => {
  const parser = new FrameParser();
  const frames = parser.push(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
  t.equal(frames.length, 1);
  t.equal(frames[0].kind, 'garbage');
  t.ok(parser.isStopped);
  t.same(parser.push(encodeFrame(1, FrameType.REQUEST, 0, Buffer.from('x'))), [], 'input after garbage is ignored');
});

t.test('status helpers', async (t) => {
  t.equal(codeName(0), 'OK');
  t.equal(codeName(3), 'INVALID_ARGUMENT');
  t.equal(codeName(16), 'UNAUTHENTICATED');
  t.equal(codeName(99), 'CODE(99)');
  t.same(statusFromError(new StatusError(Code.NOT_FOUND, 'no container "x"')), { code: 5, message: 'no container "x"' });
  t.same(statusFromError(new TypeError('oops')), { code: 13, message: 'oops' });
  t.same(statusFromError('a string'), { code: 13, message: 'a string' });
  t.equal(errorFromStatus({}), null);
  t.equal(errorFromStatus(null), null);
  const err = errorFromStatus({ code: 9, message: 'wrong state' });
  t.ok(err instanceof StatusError);
  t.equal(err?.code, 9);
  t.equal(err?.message, 'wrong state');
  // a success Response encodes its status as the empty sub-message 0a 00
  const ok = ttrpc.Response.encode({ status: {}, payload: Buffer.from('z') }).finish();
  t.equal(Buffer.from(ok).toString('hex'), '0a00' + '12017a');
});

t.test('address parsing', async (t) => {
  const good: Array<[string, unknown, string]> = [
    ['unix:///run/kata/agent.sock', { kind: 'unix', path: '/run/kata/agent.sock' }, 'unix:///run/kata/agent.sock'],
    ['UNIX:///tmp/x', { kind: 'unix', path: '/tmp/x' }, 'unix:///tmp/x'],
    ['unix://@/tmp/foo.socket', { kind: 'abstract', name: '/tmp/foo.socket' }, 'unix://@/tmp/foo.socket'],
    ['unix://@agent', { kind: 'abstract', name: 'agent' }, 'unix://@agent'],
    ['vsock://-1:1024', { kind: 'vsock', cid: VMADDR_CID_ANY, port: 1024 }, 'vsock://-1:1024'],
    ['vsock://:1024', { kind: 'vsock', cid: VMADDR_CID_ANY, port: 1024 }, 'vsock://-1:1024'],
    ['vsock://3:5000', { kind: 'vsock', cid: 3, port: 5000 }, 'vsock://3:5000'],
    ['Vsock://4294967295:4294967295', { kind: 'vsock', cid: VMADDR_CID_ANY, port: 0xffffffff }, 'vsock://-1:4294967295'],
  ];
  for (const [text, want, canonical] of good) {
    const got = parseAddress(text);
    t.same(got, want, text);
    t.equal(formatAddress(got), canonical, `format ${text}`);
  }

  const bad: Array<[string, RegExp]> = [
    ['', /invalid server address URI scheme/],
    ['/tmp/agent.sock', /invalid server address URI scheme/],
    ['tcp://127.0.0.1:1024', /invalid server address URI scheme "tcp"/],
    ['hvsock:///run/x.sock:1024', /invalid server address URI scheme "hvsock"/],
    ['unix://', /empty unix socket path/],
    ['unix://relative/path', /must be absolute/],
    ['unix://@', /empty abstract socket name/],
    ['unix:///' + 'a'.repeat(200), /too long/],
    ['unix://@' + 'a'.repeat(200), /too long/],
    ['vsock://1024', /needs <cid>:<port>/],
    ['vsock://-1:', /invalid vsock port ""/],
    ['vsock://-1:port', /invalid vsock port "port"/],
    ['vsock://-1:4294967296', /invalid vsock port "4294967296"/],
    ['vsock://-1:-5', /invalid vsock port "-5"/],
    ['vsock://-2:1024', /invalid vsock cid "-2"/],
    ['vsock://abc:1024', /invalid vsock cid "abc"/],
    ['vsock://4294967296:1024', /invalid vsock cid/],
  ];
  for (const [text, message] of bad) {
    t.throws(() => parseAddress(text), { name: 'StatusError', code: Code.INVALID_ARGUMENT, message }, JSON.stringify(text));
  }
});

t.test('writeFrameChunks: `done` runs once, only after the sink took the whole frame', async (t) => {
  let release: (() => void) | undefined;
  const got: Buffer[] = [];
  const sink = new Writable({
    highWaterMark: 16,
    writev(chunks, cb) {
      for (const c of chunks) got.push(Buffer.from(c.chunk as Buffer));
      release = () => cb();
    },
  });
  let done = 0;
  const payload = Buffer.alloc(100_000, 7);
  writeFrameChunks(sink, 3, FrameType.RESPONSE, 0, [Buffer.from([0x0a, 0x01]), payload], () => done++);
  await new Promise((r) => setImmediate(r));
  t.equal(done, 0, 'not while the sink still holds the chunks');
  t.ok(release, 'the frame was handed to the sink in one writev');
  release!();
  await new Promise((r) => setImmediate(r));
  t.equal(done, 1, 'once the sink took them');
  const all = Buffer.concat(got);
  t.equal(all.length, 10 + 2 + payload.length, 'header + chunks');
  t.same(decodeHeader(all), { length: 2 + payload.length, streamId: 3, type: FrameType.RESPONSE, flags: 0 });
});
