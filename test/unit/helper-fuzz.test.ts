// A shortened run of the helper packet fuzz (test/fuzz/helper-packets.ts; `npm run
// fuzz:reliability` sends 1,000,000): generated msgpack packets against an in-process
// HelperServer with the mock backend. Every sync ping is answered (nothing lost or hung), the
// server keeps serving, and no packet is answered INTERNAL (our bug by the conventions).
import t from 'tap';
import { fuzzHelperPackets } from '../fuzz/helper-packets';

t.test('10,000 fuzzed helper packets (seed 7): every sync answered, no INTERNAL', async (t) => {
  const s = await fuzzHelperPackets({ packets: 10_000, seed: 7 });
  t.comment(JSON.stringify({ ...s, internal: s.internal.slice(0, 5) }));
  t.equal(s.packets, 10_000, 'every packet was sent');
  t.ok(s.replies > 2_500, `the server answered (${s.replies} replies; ${s.reconnects} channels dropped after non-msgpack packets)`);
  t.equal(s.lostSyncs, 0, 'no sync ping went unanswered');
  t.equal(s.internalCount, 0, `no INTERNAL answers: ${JSON.stringify(s.internal.slice(0, 5))}`);
});
