// Security issue item 6: a helper reply whose fds did not fit (MSG_CTRUNC, e.g. control's fd
// table full) used to close the helper channel, and control exited leaving a parked kata-init.
// Now it fails that one call (RESOURCE_EXHAUSTED), closes the fds that did arrive, and the
// channel keeps serving.
import t from 'tap';
import { encodeMessage, MAX_FDS_PER_PACKET, SeqpacketChannel } from '../../shared/channel';
import { HelperClient } from '../../shared/helper-client';
import { loadNative } from '../../shared/native';
import { Code, HELPER_PROTOCOL_VERSION } from '../../shared/protocol';
import { rejectsStatus } from '../lib/helper-fixtures';

const native = loadNative();

t.test('a reply with more fds than fit (MSG_CTRUNC) fails that call only; its fds are closed; the next call works', async (t) => {
  const [c, s] = native.seqpacketPair();
  const fake = new SeqpacketChannel(s);
  t.teardown(() => fake.close());
  const [r, w] = native.pipe();
  native.setNonBlocking(r, true);
  t.teardown(() => native.close(r));
  const tooMany = MAX_FDS_PER_PACKET + 6;
  fake.on('message', (m) => {
    const req = m as { id: number; op: string; args: { withFds?: boolean } };
    if (req.op === 'hello') {
      fake.send({ id: req.id, ok: true, result: { version: HELPER_PROTOCOL_VERSION, pid: 4242 } });
    } else if (req.args.withFds) {
      // Raw send: the channel itself refuses more than MAX_FDS_PER_PACKET.
      const names = Array.from({ length: tooMany }, (_, i) => `fd${i}`);
      native.seqpacketSend(fake.fd, encodeMessage({ id: req.id, ok: true, result: { processes: [] }, fds: names }), Array(tooMany).fill(w));
    } else {
      fake.send({ id: req.id, ok: true, result: { processes: [] } });
    }
  });
  const client = await HelperClient.fromFd(c);
  t.teardown(() => client.close());
  let closed = false;
  client.on('close', () => (closed = true));

  await rejectsStatus(t, client.call('state', { withFds: true }), Code.RESOURCE_EXHAUSTED, /state lost: .*MSG_CTRUNC/);
  t.notOk(client.closed, 'the helper channel stays open');
  t.notOk(closed, 'no close event (control would have exited)');
  native.close(w);
  // Every copy of the write end that reached us was closed: the pipe is at EOF (0), not EAGAIN (-1).
  t.equal(native.read(r, Buffer.alloc(1), 0, 1), 0, 'the fds that did arrive were closed');

  const next = await client.call('state', { withFds: false });
  t.same(next.result, { processes: [] }, 'the next call is answered');
});

t.test('without a truncated listener the channel keeps the old behaviour (closes)', async (t) => {
  const [a, b] = native.seqpacketPair();
  const ch = new SeqpacketChannel(b);
  const closedP = new Promise<void>((resolve) => ch.once('close', resolve));
  const [r, w] = native.pipe();
  native.seqpacketSend(a, encodeMessage({ x: 1 }), Array(MAX_FDS_PER_PACKET + 1).fill(w));
  native.close(w);
  await closedP;
  t.ok(ch.closed);
  t.equal(native.read(r, Buffer.alloc(1), 0, 1), 0, 'received fds closed');
  native.close(r);
  native.close(a);
});
