// control/sandbox/spool.ts: output spools (memfd + splice), the crash-safe stdio buffer a
// restarted control plane re-opens. A "restart" here is a second Spool/OutputStream over dups of
// the same memfd and pipe, with the first one abandoned as a SIGKILL would leave it.
import t, { type Test } from 'tap';
import * as fs from 'node:fs';
import { loadNative } from '../../shared/native';
import { Code, StatusError } from '../../shared/protocol';
import { PUNCH_BATCH, SPOOL_DATA, SpliceSource, Spool } from '../../control/sandbox/spool';
import { OutputStream, SpoolStore } from '../../control/sandbox/stdio';

const native = loadNative();

/** Another fd of the same memfd (a re-open through /proc: what the helper's copy stands for). */
function dup(fd: number): number {
  return fs.openSync(`/proc/self/fd/${fd}`, fs.constants.O_RDWR);
}

/** Another read end of the same pipe. */
function dupPipe(fd: number): number {
  return fs.openSync(`/proc/self/fd/${fd}`, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
}

function pattern(n: number, seed = 0): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + seed) & 0xff;
  return b;
}

async function readAll(stream: OutputStream, len: number, commit = true): Promise<{ data: Buffer; end: unknown }> {
  const parts: Buffer[] = [];
  for (;;) {
    try {
      const d = await stream.read(len);
      parts.push(d);
      if (commit) stream.commit(d.length);
    } catch (err) {
      return { data: Buffer.concat(parts), end: err };
    }
  }
}

t.test('a fresh spool gets its header; append/take/commit; the delivered offset survives a re-open', async (t) => {
  const fd = native.memfdCreate('t-spool');
  const a = new Spool(dup(fd));
  t.equal(fs.fstatSync(fd).size, SPOOL_DATA, 'header page allocated');
  a.append(pattern(10_000));
  t.equal(a.queued, 10_000);
  const first = a.take(6000);
  t.ok(first.equals(pattern(10_000).subarray(0, 6000)), 'the bytes appended');
  a.commit(6000);
  const taken = a.take(1000); // taken but never committed: a kill before its answer went out
  t.equal(taken.length, 1000);
  // "restart": a second spool over the same memfd
  const b = new Spool(dup(fd));
  t.equal(b.deliveredOffset, 6000, 'delivered offset from the header');
  t.equal(b.queued, 4000, 'what was not delivered is served again, from the delivered offset');
  t.ok(b.take(4000).equals(pattern(10_000).subarray(6000)), 'exactly the undelivered bytes');
  a.close();
  b.close();
  native.close(fd);
});

t.test('delivered whole pages are punched out (memory stays bounded)', async (t) => {
  const fd = native.memfdCreate('t-punch');
  const s = new Spool(dup(fd));
  s.append(pattern(1024 * 1024));
  const before = fs.fstatSync(fd).blocks;
  s.commit(s.take(1024 * 1024).length);
  const after = fs.fstatSync(fd).blocks;
  t.ok(after < before / 4, `blocks ${before} → ${after} after delivering 1 MiB`);
  t.equal(fs.fstatSync(fd).size, SPOOL_DATA + 1024 * 1024, 'the size (end offset) is kept');
  s.close();
  native.close(fd);
});

t.test('small reads punch delivered pages in batches of PUNCH_BATCH, so memory stays bounded by it', async (t) => {
  const fd = native.memfdCreate('t-punch-batch');
  const s = new Spool(dup(fd));
  const total = 4 * PUNCH_BATCH;
  s.append(pattern(total));
  const full = fs.fstatSync(fd).blocks;
  const read = 32 * 1024;
  let got = Buffer.alloc(0);
  let maxHeld = 0;
  while (s.queued > 0) {
    const data = s.take(read);
    got = Buffer.concat([got, data]);
    s.commit(data.length);
    const heldBytes = (fs.fstatSync(fd).blocks * 512) - (total - s.deliveredOffset) - SPOOL_DATA;
    maxHeld = Math.max(maxHeld, heldBytes);
  }
  t.ok(got.equals(pattern(total)), 'every byte once, in order');
  t.ok(fs.fstatSync(fd).blocks < full / 4, `blocks ${full} → ${fs.fstatSync(fd).blocks} after delivering ${total} B in ${read} B reads`);
  t.ok(maxHeld <= PUNCH_BATCH + read, `delivered bytes still held stay ≤ PUNCH_BATCH + one read (at most ${maxHeld} B)`);
  s.close();
  native.close(fd);
});

t.test('taken buffers are the caller\'s: later takes never overwrite them', async (t) => {
  const fd = native.memfdCreate('t-slab');
  const s = new Spool(dup(fd));
  const want = pattern(600_000, 11);
  s.append(want.subarray(0, 300_000));
  const sizes = [1, 32 * 1024, 4000, 32 * 1024, 100_000, 32 * 1024, 7];
  const taken: Buffer[] = [];
  for (const n of sizes) taken.push(s.take(n));
  s.append(want.subarray(300_000));
  while (s.queued > 0) taken.push(s.take(32 * 1024));
  let off = 0;
  for (const b of taken) {
    t.ok(b.equals(want.subarray(off, off + b.length)), `bytes [${off}, ${off + b.length}) intact`);
    off += b.length;
  }
  t.equal(off, want.length, 'every byte taken once');
  s.close();
  native.close(fd);
});

t.test('a spool that is not one: INTERNAL', async (t) => {
  const fd = native.memfdCreate('t-bad');
  fs.writeSync(fd, Buffer.alloc(SPOOL_DATA + 10, 0x41));
  t.throws(() => new Spool(fd), { code: Code.INTERNAL, message: /not an output spool/ });
  native.close(fd);
});

t.test('pipe → spool by splice: a reader killed mid-stream loses nothing, a new one delivers the rest once', async (t) => {
  const memfd = native.memfdCreate('t-splice');
  const [r, w] = native.pipe();
  const total = 3 * 1024 * 1024 + 123;
  const want = pattern(total, 3);
  // writer: a child process would block on the full pipe; here a poller-driven writer does.
  native.setNonBlocking(w, true);
  let off = 0;
  const poller = new native.Poller(w, () => pump());
  const pump = (): void => {
    while (off < total) {
      const n = native.write(w, want, off, Math.min(65536, total - off));
      if (n < 0) return poller.start(false, true);
      off += n;
    }
    poller.close();
    native.close(w);
  };
  pump();
  // first control plane: reads (and commits) ~1 MiB, then is "killed" (abandoned: no destroy)
  const spool1 = new Spool(dup(memfd));
  const out1 = new OutputStream(new SpliceSource(dupPipe(r), spool1), new SpoolStore(spool1));
  const got: Buffer[] = [];
  let n1 = 0;
  while (n1 < 1024 * 1024) {
    const d = await out1.read(65536);
    got.push(d);
    out1.commit(d.length);
    n1 += d.length;
  }
  await out1.read(1000); // taken, never committed: its answer "never went out"
  out1.destroy(); // closes only control's copies: the memfd and pipe live on in "the helper"
  // second control plane
  const spool2 = new Spool(dup(memfd));
  t.equal(spool2.deliveredOffset, n1, 'resumes at the delivered offset');
  const out2 = new OutputStream(new SpliceSource(r, spool2), new SpoolStore(spool2));
  const rest = await readAll(out2, 65536);
  t.ok(rest.end instanceof StatusError && rest.end.code === Code.OUT_OF_RANGE, 'then EOF');
  const all = Buffer.concat([...got, rest.data]);
  t.equal(all.length, total, `all ${total} bytes`);
  t.ok(all.equals(want), 'byte-exact, nothing twice');
  out2.destroy();
  native.close(memfd);
});

/** An output stream over a 1 MiB pipe spliced into a new spool; `w` is the pipe's write end. */
function splicedOutput(t: Test, name: string): { out: OutputStream; w: number } {
  const memfd = native.memfdCreate(name);
  const [r, w] = native.pipe();
  native.setPipeSize(w, 1024 * 1024);
  const spool = new Spool(dup(memfd));
  const out = new OutputStream(new SpliceSource(r, spool), new SpoolStore(spool));
  t.teardown(() => {
    out.destroy();
    native.close(memfd);
  });
  return { out, w };
}

t.test('a read gathers what the pipe holds beyond the spool, in order, without waiting for a poll', async (t) => {
  const { out, w } = splicedOutput(t, 't-gather');
  const want = pattern(300_000, 5);
  t.equal(native.write(w, want, 0, 10_000), 10_000);
  const first = await out.read(4000); // served after the poll spliced the 10,000 bytes
  out.commit(first.length);
  t.equal(out.queuedBytes, 6000, 'the rest of the first write is in the spool');
  t.equal(native.write(w, want, 10_000, 290_000), 290_000);
  // Synchronously, before any poll: the spool holds 6000 bytes, the pipe 290,000.
  const second = out.tryRead(200_000);
  t.equal(second?.length, 200_000, 'the read took the spool and the pipe up to len');
  const third = out.tryRead(200_000);
  t.equal(third?.length, 96_000, 'then the rest');
  native.close(w);
  const rest = await readAll(out, 65536);
  t.ok(rest.end instanceof StatusError && rest.end.code === Code.OUT_OF_RANGE, 'then EOF');
  t.ok(Buffer.concat([first, second!, third!, rest.data]).equals(want), 'byte-exact, in order');
});

t.test('concurrent reads stay in call order when one gathers from the pipe', async (t) => {
  const { out, w } = splicedOutput(t, 't-gather-order');
  const want = pattern(200_000, 9);
  // Three reads wait on an empty stream, the bytes come in two writes: each read gets what
  // follows the previous one's bytes (the first gathers up to its len), in call order.
  const reads = [out.read(150_000), out.read(30_000), out.read(30_000)];
  t.equal(native.write(w, want, 0, 1000), 1000);
  t.equal(native.write(w, want, 1000, 199_000), 199_000);
  const got = await Promise.all(reads);
  native.close(w);
  const rest = await readAll(out, 65536);
  t.ok(Buffer.concat([...got, rest.data]).equals(want), `byte-exact, in call order (${got.map((g) => g.length).join(', ')}, then ${rest.data.length})`);
});

t.test('output dropped by the budget stays DATA_LOSS after a re-open', async (t) => {
  const fd = native.memfdCreate('t-lost');
  const a = new Spool(dup(fd));
  a.append(pattern(5000));
  t.equal(a.drop(), 5000);
  const b = new Spool(dup(fd));
  t.equal(b.dropped, 5000, 'the spool says 5000 bytes were dropped');
  t.equal(b.queued, 0, 'nothing to serve');
  a.close();
  b.close();
  native.close(fd);
});

t.test('read buffers are reused only once given back (recycle), never while an answer holds them', async (t) => {
  const fd = native.memfdCreate('t-pool');
  const s = new Spool(dup(fd));
  s.append(pattern(256 * 1024, 1));
  const a = s.take(64 * 1024);
  const b = s.take(64 * 1024); // a is still "being written": b must not share its memory
  t.not(a.buffer, b.buffer, 'a buffer not given back is not handed out again');
  t.ok(a.equals(pattern(256 * 1024, 1).subarray(0, 64 * 1024)), 'first read intact after the second');
  s.recycle(a);
  s.recycle(a); // a second give-back is ignored (it must not enter the pool twice)
  const c = s.take(64 * 1024);
  const d = s.take(64 * 1024);
  t.equal(c.buffer, a.buffer, 'the given-back buffer backs the next read of its size');
  t.not(d.buffer, a.buffer, 'and only one read');
  t.ok(c.equals(pattern(256 * 1024, 1).subarray(128 * 1024, 192 * 1024)), 'with the right bytes');
  t.ok(d.equals(pattern(256 * 1024, 1).subarray(192 * 1024)), 'both reads byte-exact');
  s.recycle(Buffer.alloc(64 * 1024)); // not from the pool: ignored
  s.close();
  native.close(fd);
});

t.test('setSendBuffer raises a unix socket send buffer (within wmem_max) and refuses a non-socket', async (t) => {
  const net = await import('node:net');
  const os = await import('node:os');
  const path = await import('node:path');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sndbuf-'));
  const sock = path.join(dir, 's');
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(sock, r));
  const client = net.connect(sock);
  await new Promise<void>((r) => client.once('connect', () => r()));
  const fd = (client as unknown as { _handle: { fd: number } })._handle.fd;
  const wmemMax = Number(fs.readFileSync('/proc/sys/net/core/wmem_max', 'utf8'));
  const got = native.setSendBuffer(fd, 1024 * 1024);
  t.equal(got, 2 * Math.min(1024 * 1024, wmemMax), 'the kernel doubles the request, capped at wmem_max');
  const memfd = native.memfdCreate('t-not-a-socket');
  t.throws(() => native.setSendBuffer(memfd, 1024 * 1024), /ENOTSOCK|setsockopt/);
  native.close(memfd);
  client.destroy();
  server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});
