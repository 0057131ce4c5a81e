// control/sandbox/stdio.ts: process stdio over pipes and a pty, as control holds it.
// Real host processes (sh, cat, head) stand in for container processes.
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { loadNative } from '../../shared/native';
import { Code, StatusError } from '../../shared/protocol';
import { MAX_PENDING_STDIN, OutputStream, ProcessStdio, OUTPUT_HIGH_WATER } from '../../control/sandbox/stdio';

const native = loadNative();

/** Read a stream to EOF in `len`-byte reads; returns the bytes and the EOF error. */
async function readAll(stream: OutputStream, len = 65536): Promise<{ data: Buffer; eof: unknown }> {
  const parts: Buffer[] = [];
  for (;;) {
    try {
      parts.push(await stream.read(len));
    } catch (err) {
      return { data: Buffer.concat(parts), eof: err };
    }
  }
}

function exitOf(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

/** Spawn `args` with the child ends of three pipes; returns the parent ends wrapped. */
function spawnPiped(t: Test, args: string[]): { stdio: ProcessStdio; child: ChildProcess } {
  const [inR, inW] = native.pipe();
  const [outR, outW] = native.pipe();
  const [errR, errW] = native.pipe();
  const child = spawn(args[0], args.slice(1), { stdio: [inR, outW, errW] });
  for (const fd of [inR, outW, errW]) fs.closeSync(fd);
  const stdio = ProcessStdio.fromFds({ stdin: inW, stdout: outR, stderr: errR }, false);
  t.teardown(() => {
    child.kill('SIGKILL');
    stdio.destroy();
  });
  return { stdio, child };
}

/** Spawn `args` on a new pty; returns the master wrapped. */
function spawnTty(t: Test, args: string[]): { stdio: ProcessStdio; child: ChildProcess } {
  const { master, slave } = native.openpty();
  const child = spawn(args[0], args.slice(1), { stdio: [slave, slave, slave] });
  fs.closeSync(slave);
  const stdio = ProcessStdio.fromFds({ pty: master }, true);
  t.teardown(() => {
    child.kill('SIGKILL');
    stdio.destroy();
  });
  return { stdio, child };
}

t.test('pipes: stdin reaches the process, stdout and stderr come back, then EOF', async (t) => {
  const { stdio, child } = spawnPiped(t, ['sh', '-c', 'cat; echo err >&2']);
  const exit = exitOf(child);
  t.equal(await stdio.stdin.write(Buffer.from('hello\n')), 6, 'write returns the length');
  await stdio.closeStdin();
  await t.rejects(stdio.stdin.write(Buffer.from('x')), { code: Code.FAILED_PRECONDITION, message: 'stdin is closed' });
  const out = await readAll(stdio.stdout);
  const err = await readAll(stdio.stderr);
  t.equal(out.data.toString(), 'hello\n');
  t.equal(err.data.toString(), 'err\n');
  t.ok(out.eof instanceof StatusError && out.eof.code === Code.OUT_OF_RANGE && out.eof.message === 'EOF', 'EOF is OUT_OF_RANGE "EOF"');
  t.equal(await exit, 0);
});

t.test('helper sent the wrong fds: INTERNAL, fds closed', async (t) => {
  const [r, w] = native.pipe();
  t.throws(() => ProcessStdio.fromFds({ stdout: r, stderr: w }, false), { code: Code.INTERNAL, message: /stdin/ });
  t.throws(() => fs.fstatSync(r), { code: 'EBADF' }, 'the fds were closed');
  t.throws(() => fs.fstatSync(w), { code: 'EBADF' });
});

t.test('reads return exactly what was written, never padding (B08, B10)', async (t) => {
  const { stdio, child } = spawnPiped(t, ['sh', '-c', 'seq 1 500000']);
  const exit = exitOf(child);
  const { data } = await readAll(stdio.stdout, 4096 * 3 + 7);
  t.equal(data.length, 3388895);
  t.equal(createHash('sha256').update(data).digest('hex'), '18c68655ed84064b77ff577ca9275d99a308ad9603eda1201b9cd1670ad755f3');
  t.equal(await exit, 0);
});

t.test('output written before the exit is all delivered after it (B08)', async (t) => {
  // 108,894 bytes: fits the queue, so the process can finish before anything is read.
  const { stdio, child } = spawnPiped(t, ['seq', '1', '20000']);
  t.equal(await exitOf(child), 0, 'the process exits before anything is read');
  await new Promise((resolve) => setTimeout(resolve, 100));
  const { data } = await readAll(stdio.stdout, 1000);
  t.equal(data.length, 108894);
  t.equal(data.toString().split('\n')[19999], '20000');
});

t.test('backpressure: an idle reader blocks the writer, nothing is dropped (B11)', async (t) => {
  const { stdio, child } = spawnPiped(t, ['sh', '-c', 'yes | head -c 20000000']);
  let exited = false;
  const exit = exitOf(child).then((code) => {
    exited = true;
    return code;
  });
  await new Promise((resolve) => setTimeout(resolve, 1000));
  t.notOk(exited, 'the writer is still blocked after 1 s without reads');
  t.ok(stdio.stdout.queuedBytes <= OUTPUT_HIGH_WATER + 256 * 1024, `queue bounded (${stdio.stdout.queuedBytes} bytes)`);
  const { data } = await readAll(stdio.stdout, 1 << 20);
  t.equal(data.length, 20_000_000, 'exactly 20,000,000 bytes');
  t.ok(data.every((b) => b === 0x79 || b === 0x0a), 'only "y\\n" bytes');
  t.equal(await exit, 0);
});

t.test('a read withdrawn by its abort signal takes no bytes', async (t) => {
  const { stdio, child } = spawnPiped(t, ['sh', '-c', 'read x; echo "$x"']);
  const ac = new AbortController();
  const aborted = stdio.stdout.read(100, ac.signal);
  ac.abort(new StatusError(Code.CANCELLED, 'gone'));
  await t.rejects(aborted, { code: Code.CANCELLED });
  await stdio.stdin.write(Buffer.from('line\n'));
  t.equal((await stdio.stdout.read(100)).toString(), 'line\n', 'the next read gets the data');
  t.equal(await exitOf(child), 0);
});

t.test('terminal: stdout and stderr read the same pty; CloseStdin sends EOF and keeps the output (B13)', async (t) => {
  const { stdio, child } = spawnTty(t, ['sh', '-c', 'cat >/dev/null; sleep 0.3; echo after']);
  t.equal(stdio.stdout, stdio.stderr, 'one output stream');
  await stdio.stdin.write(Buffer.from('input\n'));
  await stdio.closeStdin();
  await t.rejects(stdio.stdin.write(Buffer.from('x')), { code: Code.FAILED_PRECONDITION, message: 'stdin is closed' });
  const { data, eof } = await readAll(stdio.stderr);
  t.match(data.toString(), /after\r\n$/, 'output after CloseStdin is read');
  t.notOk(data.includes(0), 'no NUL bytes');
  t.ok(eof instanceof StatusError && eof.code === Code.OUT_OF_RANGE, 'EIO at the end is EOF');
  t.equal(await exitOf(child), 0);
});

t.test('terminal: window resize reaches the process (B04c)', async (t) => {
  const { stdio, child } = spawnTty(t, ['sh', '-c', 'sleep 0.5; stty size']);
  stdio.resize(50, 132);
  const { data } = await readAll(stdio.stdout);
  t.equal(data.toString().trim(), '50 132');
  t.equal(await exitOf(child), 0);
});

t.test('resize without a terminal is FAILED_PRECONDITION', async (t) => {
  const { stdio } = spawnPiped(t, ['true']);
  t.throws(() => stdio.resize(10, 10), { code: Code.FAILED_PRECONDITION });
});

t.test('pty: printf abc gives exactly abc (B10)', async (t) => {
  const { stdio } = spawnTty(t, ['sh', '-c', 'printf abc']);
  const { data } = await readAll(stdio.stdout);
  t.equal(data.toString(), 'abc');
});


// ---------------------------------------------------------------------------------------------
// Stdin: bounded, cancellable, ordered (review: 4 MiB WriteStdin requests to a process that never
// reads grew control to 2.2 GB; a write whose deadline passed stayed queued).

const MiB = 1024 * 1024;

t.test('stdin to a process that never reads: at most MAX_PENDING_STDIN wait; beyond, RESOURCE_EXHAUSTED and nothing queued; CloseStdin releases', async (t) => {
  const { stdio } = spawnPiped(t, ['sleep', '100']);
  const w1 = stdio.stdin.write(Buffer.alloc(4 * MiB, 0x61));
  const w2 = stdio.stdin.write(Buffer.alloc(4 * MiB, 0x62));
  w1.catch(() => undefined);
  w2.catch(() => undefined);
  await new Promise((resolve) => setTimeout(resolve, 100));
  const pending = stdio.stdin.pendingBytes;
  t.ok(pending > 7 * MiB && pending <= MAX_PENDING_STDIN, `8 MiB written, the pipe took some: ${pending} bytes wait`);
  await t.rejects(stdio.stdin.write(Buffer.alloc(MiB)), {
    code: Code.RESOURCE_EXHAUSTED,
    message: new RegExp(`write of ${MiB} bytes refused: ${pending} bytes already wait .*at most ${MAX_PENDING_STDIN} bytes`),
  });
  t.equal(stdio.stdin.pendingBytes, pending, 'nothing of the refused write was queued');
  await stdio.closeStdin();
  await t.rejects(w1, { code: Code.FAILED_PRECONDITION, message: /closed before this write completed/ }, 'an unfinished write fails on CloseStdin');
  await t.rejects(w2, { code: Code.FAILED_PRECONDITION });
  t.equal(stdio.stdin.pendingBytes, 0, 'everything released');
});

t.test('stdin: a write aborted before it started is dropped; one that started completes; order is kept', async (t) => {
  // The process reads nothing for 300 ms (the pipe fills), then echoes stdin.
  const { stdio, child } = spawnPiped(t, ['sh', '-c', 'sleep 0.3; exec cat']);
  const exit = exitOf(child);
  const out = readAll(stdio.stdout);
  const first = new AbortController();
  const second = new AbortController();
  const w1 = stdio.stdin.write(Buffer.alloc(256 * 1024, 0x61), first.signal);
  const w2 = stdio.stdin.write(Buffer.alloc(MiB, 0x62), second.signal);
  const w3 = stdio.stdin.write(Buffer.alloc(100 * 1024, 0x63));
  await new Promise((resolve) => setTimeout(resolve, 50));
  const before = stdio.stdin.pendingBytes;
  second.abort(new StatusError(Code.DEADLINE_EXCEEDED, 'timeout'));
  first.abort(new StatusError(Code.DEADLINE_EXCEEDED, 'timeout'));
  await t.rejects(w2, { code: Code.DEADLINE_EXCEEDED, message: 'timeout' }, 'the queued write is withdrawn with the abort reason');
  t.equal(stdio.stdin.pendingBytes, before - MiB, 'its bytes are released at once');
  t.equal(await w1, 256 * 1024, 'the write that had started is written to its end (never torn)');
  t.equal(await w3, 100 * 1024, 'the next write follows');
  await stdio.closeStdin();
  const { data } = await out;
  t.equal(data.length, 356 * 1024, 'the process read exactly the two writes');
  t.ok(data.subarray(0, 256 * 1024).every((b) => b === 0x61) && data.subarray(256 * 1024).every((b) => b === 0x63), 'in call order, nothing of the withdrawn write');
  t.equal(await exit, 0);
  await t.rejects(stdio.stdin.write(Buffer.from('x'), AbortSignal.abort(new StatusError(Code.CANCELLED, 'gone'))), { code: Code.FAILED_PRECONDITION }, 'closed wins');
});

t.test('stdin: writes that fit the pipe (written at once) and larger ones (queued) arrive byte-exact, in call order', async (t) => {
  const { stdio, child } = spawnPiped(t, ['sha256sum']);
  const exit = exitOf(child);
  const out = readAll(stdio.stdout);
  const hash = createHash('sha256');
  const sizes = [1, 4096, 32 * 1024, 200_000, 3 * MiB + 17, 7, 65_536, 2 * MiB];
  const writes = sizes.map((n, i) => {
    const data = Buffer.alloc(n);
    for (let j = 0; j < n; j++) data[j] = (j * 31 + i) & 0xff;
    hash.update(data);
    return stdio.stdin.write(data);
  });
  t.same(await Promise.all(writes), sizes, 'every write resolves with its length');
  await stdio.closeStdin();
  const { data } = await out;
  t.equal(data.toString().split(' ')[0], hash.digest('hex'), 'the process read every byte once, in order');
  t.equal(await exit, 0);
});

t.test('stdin: a process that closed its stdin makes a write fail FAILED_PRECONDITION (EPIPE), not crash', async (t) => {
  const { stdio, child } = spawnPiped(t, ['sh', '-c', 'exec 0<&-; sleep 5']);
  await new Promise((resolve) => setTimeout(resolve, 200));
  await t.rejects(stdio.stdin.write(Buffer.from('x')), { code: Code.FAILED_PRECONDITION, message: /stdin is broken \(EPIPE\)/ });
  await t.rejects(stdio.stdin.write(Buffer.from('y')), { code: Code.FAILED_PRECONDITION }, 'and later writes');
  child.kill('SIGKILL');
});

t.test('stdin: the process exit releases waiting writes; later writes are refused', async (t) => {
  // A grandchild keeps the pipe open without reading: only the exit notice can release the writes.
  // (An asynchronous list gets /dev/null as stdin: hand the pipe over on fd 3.)
  const { stdio, child } = spawnPiped(t, ['sh', '-c', 'exec 3<&0; sleep 3 <&3 3<&- & exit 0']);
  await exitOf(child);
  const w = stdio.stdin.write(Buffer.alloc(MiB));
  const settled = w.catch((err: unknown) => err);
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.ok(stdio.stdin.pendingBytes > 0, 'the write waits');
  stdio.processExited();
  t.match(await settled, { code: Code.FAILED_PRECONDITION, message: /exited/ });
  t.equal(stdio.stdin.pendingBytes, 0);
  await t.rejects(stdio.stdin.write(Buffer.from('x')), { code: Code.FAILED_PRECONDITION, message: /exited/ });
});

t.test('stdin: a write withdrawn by an already aborted signal queues nothing', async (t) => {
  const { stdio } = spawnPiped(t, ['sleep', '100']);
  await t.rejects(stdio.stdin.write(Buffer.from('x'), AbortSignal.abort(new StatusError(Code.CANCELLED, 'gone'))), { code: Code.CANCELLED, message: 'gone' });
  t.equal(stdio.stdin.pendingBytes, 0);
});

t.test('terminal stdin: CloseStdin queues ^D behind the written input', async (t) => {
  const { stdio, child } = spawnTty(t, ['sh', '-c', 'sleep 0.3; cat']);
  const exit = exitOf(child);
  const out = readAll(stdio.stdout);
  t.equal(await stdio.stdin.write(Buffer.from('typed\n')), 6);
  await stdio.closeStdin();
  const { data } = await out;
  t.match(data.toString(), /typed\r\n/, 'cat echoed the input and ended on the ^D');
  t.equal(await exit, 0);
});
