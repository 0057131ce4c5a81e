/**
 * Fuzzing the helper's request channel (performance/reliability issue): fast-check packets from
 * a seed sent over a SOCK_SEQPACKET pair to an in-process HelperServer with the mock backend
 * (helper/mock, the same validation as the real ops): raw bytes, msgpack of arbitrary values,
 * well-formed requests of every op with arbitrary args, and requests whose args hold the field
 * names the ops read with hostile values (path escapes, huge numbers, wrong types).
 *
 * What must hold: the server never throws out of its handlers (the process would die), every
 * packet sent before a sync `ping` is answered before the ping's answer (nothing is lost or
 * left hanging; a packet that is not msgpack makes the server drop the channel, and the
 * harness opens a new one, counted as a reconnect), and errors carry gRPC codes. INTERNAL answers (our bugs by the conventions)
 * are counted and kept with their op and message. Used by test/unit/helper-fuzz.test.ts
 * (shortened) and test/fuzz/reliability.ts (`npm run fuzz:reliability`).
 */
import fc from 'fast-check';
import { pack, unpack } from 'msgpackr';
import { BACKEND_OPS } from '../../helper/api';
import { createMockHelperBackend } from '../../helper/mock/backend';
import { HelperServer } from '../../helper/server';
import { SeqpacketChannel } from '../../shared/channel';
import { loadNative } from '../../shared/native';
import { HELPER_PROTOCOL_VERSION } from '../../shared/protocol';

/** Figures of one run. */
export interface HelperFuzzStats {
  packets: number;
  replies: number;
  /** Replies by outcome: "ok" or the error code number. */
  byCode: Record<string, number>;
  /** INTERNAL answers: op and message (at most 50 kept). */
  internal: { op: string; message: string }[];
  internalCount: number;
  /** Times the server closed the channel (a fresh one is opened). */
  reconnects: number;
  /** Sync pings that were not answered within 5 s (must be 0). */
  lostSyncs: number;
}

/** Field names the helper's ops read (helper/api.ts argument shapes), to reach their validation. */
const KEYS = [
  'containerId', 'execId', 'id', 'path', 'source', 'target', 'destination', 'fstype', 'options', 'flags', 'data', 'mode',
  'uid', 'gid', 'pid', 'signal', 'spec', 'process', 'args', 'env', 'cwd', 'terminal', 'rows', 'cols', 'name', 'device',
  'cgroupPath', 'resources', 'size', 'offset', 'len', 'timeoutMs', 'netns', 'interface', 'routes', 'neighbors', 'sandboxId',
  'hostname', 'mounts', 'storages', 'value', 'key', 'dir', 'file', 'files', 'version', 'seccomp', 'rootfs', 'bundle',
];

const hostileString = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.constantFrom('', '.', '..', '../../etc/passwd', '/', '/proc/self/exe', '/dev/../etc', 'a/../../b', 'x'.repeat(5000), '\0', 'a\0b', '-1', 'NaN', '__proto__', 'constructor'),
  fc.stringMatching(/^[a-z0-9]{1,64}$/),
);
const hostileNumber = fc.oneof(fc.integer(), fc.constantFrom(-1, 0, 2 ** 31, 2 ** 32, 2 ** 53, -(2 ** 53), Number.MAX_SAFE_INTEGER), fc.double());
const hostileValue: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  v: fc.oneof(
    { depthSize: 'small' },
    hostileString,
    hostileNumber,
    fc.boolean(),
    fc.constant(null),
    fc.uint8Array({ maxLength: 64 }),
    fc.array(tie('v'), { maxLength: 4 }),
    fc.dictionary(fc.constantFrom(...KEYS), tie('v'), { maxKeys: 4 }),
  ),
})).v;

const ops = [...BACKEND_OPS, 'hello', 'ping', 'constructor', '__proto__', 'toString', ''];

/** One packet: raw bytes to send. */
function packetArbitrary(): fc.Arbitrary<Buffer> {
  const request = (args: fc.Arbitrary<unknown>): fc.Arbitrary<Buffer> =>
    fc.record({ id: fc.oneof(fc.nat(), hostileNumber, hostileString), op: fc.constantFrom(...ops), args }).map((m) => pack(m));
  return fc.oneof(
    { arbitrary: fc.uint8Array({ minLength: 1, maxLength: 300 }).map((b) => Buffer.from(b)), weight: 1 },
    { arbitrary: fc.anything().map((v) => pack(v)), weight: 2 },
    { arbitrary: request(fc.anything()), weight: 3 },
    { arbitrary: request(fc.dictionary(fc.constantFrom(...KEYS), hostileValue, { maxKeys: 8 })), weight: 8 },
  );
}

/**
 * Send `packets` generated packets (seed `seed`), syncing with a `ping` every `batch` packets.
 * Resolves with the figures; rejects only when the harness itself fails.
 */
export async function fuzzHelperPackets(opts: { packets: number; seed: number; batch?: number; onProgress?: (n: number) => void }): Promise<HelperFuzzStats> {
  const native = loadNative();
  const uid = process.getuid?.() ?? 0;
  const parts = createMockHelperBackend();
  const server = new HelperServer({ backend: parts.backend, controlUid: uid });
  const stats: HelperFuzzStats = { packets: 0, replies: 0, byCode: {}, internal: [], internalCount: 0, reconnects: 0, lostSyncs: 0 };
  const batch = opts.batch ?? 16;
  const SYNC_BASE = 2 ** 40;
  let syncSeq = 0;

  let ch!: SeqpacketChannel;
  let fd = -1;
  let closed = false;
  let syncWaiter: { id: number; resolve: (ok: boolean) => void } | undefined;
  const sent = new Map<number, string>(); // id → op, for naming INTERNAL answers
  const open = async (): Promise<void> => {
    const [c, s] = native.seqpacketPair();
    server.addConnection(s);
    fd = c;
    closed = false;
    ch = new SeqpacketChannel(c);
    ch.on('message', (msg: unknown, fds: number[]) => {
      for (const f of fds) native.close(f);
      const m = msg as { id?: number; ok?: boolean; error?: { code?: number; message?: string } };
      if (syncWaiter && m.id === syncWaiter.id) {
        syncWaiter.resolve(true);
        return;
      }
      stats.replies++;
      const key = m.ok ? 'ok' : String(m.error?.code ?? 'none');
      stats.byCode[key] = (stats.byCode[key] ?? 0) + 1;
      if (m.error?.code === 13) {
        stats.internalCount++;
        if (stats.internal.length < 50) stats.internal.push({ op: sent.get(m.id ?? -1) ?? '?', message: String(m.error.message) });
      }
    });
    ch.on('close', () => {
      closed = true;
      syncWaiter?.resolve(false);
    });
    await sync({ id: 0, op: 'hello', args: { version: HELPER_PROTOCOL_VERSION } });
  };
  const sync = (message: { id: number; op: string; args: unknown }): Promise<boolean> =>
    new Promise((resolve) => {
      const timer = setTimeout(() => {
        stats.lostSyncs++;
        resolve(false);
      }, 5000);
      syncWaiter = {
        id: message.id,
        resolve: (ok) => {
          clearTimeout(timer);
          syncWaiter = undefined;
          resolve(ok);
        },
      };
      ch.send(message);
    });

  try {
    await open();
    const gen = packetArbitrary();
    let done = 0;
    while (done < opts.packets) {
      const n = Math.min(batch, opts.packets - done);
      const packets = fc.sample(gen, { numRuns: n, seed: opts.seed + done });
      sent.clear();
      for (const p of packets) {
        if (closed) break;
        try {
          const m = unpack(p) as { id?: unknown; op?: unknown } | undefined;
          if (m && typeof m === 'object' && typeof m.id === 'number') sent.set(m.id, String(m.op));
        } catch {
          /* raw bytes */
        }
        if (native.seqpacketSend(fd, p, []) >= 0) stats.packets++;
      }
      done += n;
      if (closed || !(await sync({ id: SYNC_BASE + syncSeq++, op: 'ping', args: {} }))) {
        if (!closed) ch.close();
        stats.reconnects++;
        await open();
      }
      if (opts.onProgress && done % 100_000 < batch) opts.onProgress(done);
    }
  } finally {
    ch.close();
    server.close();
    await parts.backend.shutdown();
  }
  return stats;
}
