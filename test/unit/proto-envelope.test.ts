import t from 'tap';
import { ttrpc } from '../../shared/proto';

t.test('ttRPC Request envelope encodes field numbers as containerd/ttrpc', async (t) => {
  const bytes = ttrpc.Request.encode({ service: 'grpc.Health', method: 'Check', timeout_nano: 5 }).finish();
  // field 1 (service) len-delimited, field 2 (method), field 4 (timeout_nano) varint
  t.same(Buffer.from(bytes).toString('hex'), '0a0b677270632e4865616c746812054368656b6b2005'.replace('4368656b6b', '436865636b'));
  const back = ttrpc.Request.decode(bytes);
  t.equal(back.timeout_nano, 5);
  t.equal(typeof back.timeout_nano, 'number');
});
