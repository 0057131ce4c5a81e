// Unit tests of the native addon (helper/native/addon.cc) through its typed loader.
// No root needed; children spawned here are reaped here (reap() takes any child of this
// process, which is fine in a dedicated test file).
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { loadNative, isErrno, type NativeError, type PollEvents } from '../../shared/native';

const native = loadNative();

/** True when fd has O_CLOEXEC, read from /proc/self/fdinfo (flags are octal). */
function isCloexec(fd: number): boolean {
  const info = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  const m = /^flags:\s+([0-7]+)$/m.exec(info);
  if (!m) throw new Error(`no flags in fdinfo of ${fd}`);
  return (parseInt(m[1], 8) & 0o2000000) !== 0;
}

function isOpen(fd: number): boolean {
  return fs.existsSync(`/proc/self/fd/${fd}`);
}

/** Catch what fn throws (failing when it does not throw). */
function caught(fn: () => unknown): NativeError {
  try {
    fn();
  } catch (err) {
    return err as NativeError;
  }
  throw new Error('expected an exception');
}

/** Read a blocking fd to EOF. */
function readAll(fd: number): string {
  const chunks: Buffer[] = [];
  const buf = Buffer.alloc(4096);
  for (;;) {
    const n = native.read(fd, buf, 0, buf.length);
    if (n <= 0) break;
    chunks.push(Buffer.from(buf.subarray(0, n)));
  }
  return Buffer.concat(chunks).toString();
}

/** Resolve when fd is readable (a Poller on it), reject after timeoutMs. */
function whenReadable(fd: number, timeoutMs = 5000): Promise<PollEvents> {
  return new Promise((resolve, reject) => {
    const poller = new native.Poller(fd, (status, events) => {
      clearTimeout(timer);
      poller.close();
      if (status < 0) reject(new Error(`poll status ${status}`));
      else resolve(events);
    });
    const timer = setTimeout(() => {
      poller.close();
      reject(new Error(`fd ${fd} not readable after ${timeoutMs} ms`));
    }, timeoutMs);
    poller.start(true, false);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Spawn, collect stdout+stderr through a pipe, wait for exit via the pidfd, reap. */
async function run(argv: string[], extra: { setsid?: boolean; stdin?: number } = {}) {
  const [r, w] = native.pipe();
  const { pid, pidfd } = native.spawn({
    file: argv[0],
    argv,
    envp: ['PATH=/usr/bin:/bin'],
    fds: [extra.stdin ?? -1, w, w],
    setsid: extra.setsid,
  });
  native.close(w);
  const output = readAll(r);
  native.close(r);
  await whenReadable(pidfd);
  native.close(pidfd);
  const reaped = native.reap();
  const me = reaped.find((c) => c.pid === pid);
  if (!me) throw new Error(`pid ${pid} not reaped: ${JSON.stringify(reaped)}`);
  return { pid, output, exitCode: me.exitCode, signal: me.signal, others: reaped.filter((c) => c !== me) };
}

t.test('pipe: read/write, EAGAIN as -1, EOF as 0, O_CLOEXEC', async (t) => {
  const [r, w] = native.pipe();
  t.ok(isCloexec(r) && isCloexec(w), 'both ends O_CLOEXEC');
  native.setNonBlocking(r, true);
  const buf = Buffer.alloc(16);
  t.equal(native.read(r, buf, 0, 16), -1, 'empty non-blocking pipe reads -1');
  t.equal(native.write(w, Buffer.from('xxhelloxx'), 2, 5), 5);
  t.equal(native.read(r, buf, 3, 10), 5);
  t.equal(buf.subarray(3, 8).toString(), 'hello', 'read at the offset');
  native.setCloexec(w, false);
  t.notOk(isCloexec(w), 'setCloexec(false) clears it');
  native.setCloexec(w, true);
  t.ok(isCloexec(w));
  native.close(w);
  t.equal(native.read(r, buf, 0, 16), 0, 'EOF after the writer closed');
  native.close(r);
  t.notOk(isOpen(r));

  const [r2, w2] = native.pipe();
  native.setNonBlocking(w2, true);
  const big = Buffer.alloc(1 << 16, 1);
  let total = 0;
  for (;;) {
    const n = native.write(w2, big, 0, big.length);
    if (n === -1) break;
    total += n;
  }
  t.ok(total > 0, `a full non-blocking pipe writes -1 (after ${total} bytes)`);
  native.close(r2);
  const epipe = caught(() => native.write(w2, big, 0, 1));
  t.equal(epipe.code, 'EPIPE', 'EPIPE is thrown, no SIGPIPE');
  native.close(w2);
});

t.test('errors carry code, errno, syscall and message', async (t) => {
  const e = caught(() => native.close(1_000_000));
  t.type(e, Error);
  t.equal(e.code, 'EBADF');
  t.equal(e.errno, 9);
  t.equal(e.syscall, 'close');
  t.equal(e.message, 'close: Bad file descriptor');
  t.ok(isErrno(e, 'EBADF'));
  const r = caught(() => native.read(1_000_000, Buffer.alloc(1), 0, 1));
  t.match(r, { code: 'EBADF', errno: 9, syscall: 'read' });
});

t.test('bad argument types throw TypeError', async (t) => {
  const n = native as unknown as Record<string, (...args: unknown[]) => unknown>;
  const cases: Array<[string, unknown[]]> = [
    ['close', []],
    ['close', [-1]],
    ['close', ['3']],
    ['close', [1.5]],
    ['setNonBlocking', [0, 'yes']],
    ['read', [0, 'not a buffer', 0, 1]],
    ['read', [0, Buffer.alloc(4), 2, 3]],
    ['write', [1, Buffer.alloc(4), -1, 1]],
    ['setWinsize', [0, 70000, 80]],
    ['seqpacketListen', [42, 1]],
    ['seqpacketListen', ['', 1]],
    ['seqpacketConnect', [undefined]],
    ['seqpacketSend', [0, Buffer.from('x'), 'fds']],
    ['seqpacketSend', [0, Buffer.from('x'), new Array(254).fill(0)]],
    ['seqpacketSend', [0, Buffer.alloc(0), []]],
    ['seqpacketRecv', [0, -5]],
    ['vsockListen', ['any', 1024, 1]],
    ['vsockConnect', [3, 2 ** 40]],
    ['spawn', [null]],
    ['spawn', [{ file: '/bin/true', argv: ['true', 1], envp: [], fds: [] }]],
    ['spawn', [{ file: '/bin/true', argv: [], envp: [], fds: [] }]],
    ['spawn', [{ file: '/bin/true', argv: ['true'], envp: ['A=\0'], fds: [] }]],
    ['spawn', [{ file: '/bin/true', argv: ['true'], envp: [], fds: [-2] }]],
    ['spawn', [{ file: '/bin/true', argv: ['true'], envp: [], fds: [], setsid: 1 }]],
    ['spawn', [{ file: '/bin/true', argv: ['true'], envp: [], fds: [], setsid: true, controllingTty: 'yes' }]],
    ['spawn', [{ file: '/bin/true', argv: ['true'], envp: [], fds: [], controllingTty: true }]],
    ['pidfdOpen', [0]],
    ['pidfdSendSignal', [0, 99]],
    ['kill', [0, 0]],
    ['kill', [-1, 9]],
  ];
  for (const [fn, args] of cases) {
    const e = caught(() => n[fn](...args));
    t.type(e, TypeError, `${fn}(${args.map((a) => JSON.stringify(a)?.slice(0, 40)).join(', ')}) → ${e.message}`);
  }
  const P = native.Poller as unknown as new (...args: unknown[]) => unknown;
  t.type(caught(() => new P(0, 'not a function')), TypeError);
  t.type(caught(() => new P('0', () => {})), TypeError);
  t.type(caught(() => (native.Poller as unknown as (...a: unknown[]) => unknown)(0, () => {})), TypeError);
});

t.test('seqpacketPair: fds travel with SCM_RIGHTS', async (t) => {
  const [a, b] = native.seqpacketPair();
  t.ok(isCloexec(a) && isCloexec(b));
  const [pr, pw] = native.pipe();
  t.equal(native.seqpacketSend(a, Buffer.from('take this'), [pw]), 9);
  const msg = native.seqpacketRecv(b, 100);
  if (!msg) throw new Error('no message');
  t.equal(msg.data.toString(), 'take this');
  t.equal(msg.fds.length, 1);
  t.equal(msg.eof, false);
  t.equal(msg.truncated, false);
  const got = msg.fds[0];
  t.not(got, pw, 'a new fd number');
  t.ok(isCloexec(got), 'received fd is O_CLOEXEC (MSG_CMSG_CLOEXEC)');
  t.equal(native.write(got, Buffer.from('through'), 0, 7), 7);
  const buf = Buffer.alloc(16);
  t.equal(native.read(pr, buf, 0, 16), 7);
  t.equal(buf.subarray(0, 7).toString(), 'through', 'written via the received fd, read from the original pipe');
  t.equal(native.seqpacketRecv(b, 100), null, 'nothing more: null (EAGAIN)');
  for (const fd of [got, pr, pw, a, b]) native.close(fd);
});

t.test('seqpacket: message boundaries, truncation, eof', async (t) => {
  const [a, b] = native.seqpacketPair();
  for (const s of ['one', 'two!', 'three']) native.seqpacketSend(a, Buffer.from(s), []);
  const seen: string[] = [];
  for (let i = 0; i < 3; i++) seen.push(native.seqpacketRecv(b, 64)!.data.toString());
  t.same(seen, ['one', 'two!', 'three'], 'one recv per packet');

  native.seqpacketSend(a, Buffer.from('0123456789'), []);
  const cut = native.seqpacketRecv(b, 4)!;
  t.equal(cut.data.toString(), '0123');
  t.equal(cut.truncated, true, 'MSG_TRUNC reported');
  t.equal(cut.eof, false);
  t.equal(native.seqpacketRecv(b, 64), null, 'the rest of a truncated packet is gone');

  const [pr, pw] = native.pipe();
  native.seqpacketSend(a, Buffer.from('0123456789'), [pw]);
  const cutWithFd = native.seqpacketRecv(b, 4)!;
  t.equal(cutWithFd.truncated, true);
  t.equal(cutWithFd.fds.length, 1, 'fds of a truncated packet are still handed over');
  native.close(cutWithFd.fds[0]);

  native.seqpacketSend(a, Buffer.from('many'), new Array(70).fill(pw));
  const many = native.seqpacketRecv(b, 64)!;
  t.equal(many.truncated, true, 'MSG_CTRUNC reported for more than 64 fds');
  t.equal(many.fds.length, 64, 'the 64 fds that fit are returned');
  for (const fd of many.fds) native.close(fd);

  native.seqpacketSend(a, Buffer.alloc(0), [pw]);
  const onlyFd = native.seqpacketRecv(b, 64)!;
  t.equal(onlyFd.data.length, 0);
  t.equal(onlyFd.fds.length, 1);
  t.equal(onlyFd.eof, false, 'an empty packet with an fd is not eof');
  native.close(onlyFd.fds[0]);

  native.close(a);
  const end = native.seqpacketRecv(b, 64)!;
  t.equal(end.eof, true, 'eof after the peer closed');
  t.equal(end.data.length, 0);
  const epipe = caught(() => native.seqpacketSend(b, Buffer.from('x'), []));
  t.equal(epipe.code, 'EPIPE');
  t.equal(epipe.syscall, 'sendmsg');
  for (const fd of [b, pr, pw]) native.close(fd);
});

t.test('seqpacket listen/connect/accept and peerCred', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-native-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const names = [path.join(dir, 'sock'), `@kata-native-test-${process.pid}-${Date.now()}`];
  for (const name of names) {
    const l = native.seqpacketListen(name, 8);
    t.ok(isCloexec(l));
    if (!name.startsWith('@')) t.ok(fs.statSync(name).isSocket(), 'socket file created');
    t.equal(native.accept(l), -1, 'nothing pending: -1');
    const c = native.seqpacketConnect(name);
    const s = native.accept(l);
    t.ok(s >= 0, `accepted on ${name}`);
    t.ok(isCloexec(s) && isCloexec(c));
    const expected = { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() };
    t.same(native.peerCred(s), expected, 'peerCred of the accepted end is us');
    t.same(native.peerCred(c), expected, 'peerCred of the connected end is us');
    native.seqpacketSend(c, Buffer.from('ping'), []);
    t.equal(native.seqpacketRecv(s, 16)!.data.toString(), 'ping');
    const busy = caught(() => native.seqpacketListen(name, 8));
    t.equal(busy.code, 'EADDRINUSE', 'second bind of the same name');
    t.equal(busy.syscall, 'bind');
    for (const fd of [c, s, l]) native.close(fd);
  }
  const missing = caught(() => native.seqpacketConnect(path.join(dir, 'nope')));
  t.match(missing, { code: 'ENOENT', syscall: 'connect' });
  const refused = caught(() => native.seqpacketConnect(`@kata-native-absent-${process.pid}-${Date.now()}`));
  t.match(refused, { code: 'ECONNREFUSED', syscall: 'connect' });
  const long = caught(() => native.seqpacketListen('/tmp/' + 'x'.repeat(120), 1));
  t.match(long, { code: 'ENAMETOOLONG', syscall: 'bind' });
  const longAbstract = caught(() => native.seqpacketConnect('@' + 'y'.repeat(108)));
  t.match(longAbstract, { code: 'ENAMETOOLONG', syscall: 'connect' });
  // The longest abstract name that fits (107 bytes) works.
  const edge = '@' + 'z'.repeat(100) + String(process.pid).padStart(7, '0');
  const l = native.seqpacketListen(edge, 1);
  const c = native.seqpacketConnect(edge);
  t.ok(native.accept(l) >= 0, '107-byte abstract name');
  native.close(c);
  native.close(l);
});

t.test('vsockListen works or throws an errno error', async (t) => {
  const port = 20000 + Math.floor(Math.random() * 20000);
  let fd = -1;
  try {
    fd = native.vsockListen(-1, port, 4);
  } catch (err) {
    const e = err as NativeError;
    t.type(e.code, 'string');
    t.ok(e.errno > 0);
    t.ok(['socket', 'bind', 'listen', 'setsockopt(SO_REUSEADDR)'].includes(e.syscall), e.message);
    return;
  }
  t.ok(isCloexec(fd), `listening on vsock port ${port}`);
  t.equal(native.accept(fd), -1, 'no connection pending');
  native.close(fd);
});

t.test('Poller: readable callback, stop, close from inside the callback', async (t) => {
  const [r, w] = native.pipe();
  native.setNonBlocking(r, true);
  const calls: Array<[number, PollEvents]> = [];
  let closeNow = false;
  const poller = new native.Poller(r, (status, events) => {
    calls.push([status, events]);
    native.read(r, Buffer.alloc(64), 0, 64);
    if (closeNow) poller.close();
  });
  poller.start(true, false);
  await sleep(30);
  t.equal(calls.length, 0, 'no callback before data');
  native.write(w, Buffer.from('a'), 0, 1);
  await sleep(30);
  t.equal(calls.length, 1, 'one callback for one write (data consumed)');
  t.same(calls[0], [0, { readable: true, writable: false, disconnect: false }]);

  poller.stop();
  native.write(w, Buffer.from('b'), 0, 1);
  await sleep(30);
  t.equal(calls.length, 1, 'no callback while stopped');
  poller.start(true, false);
  await sleep(30);
  t.equal(calls.length, 2, 'restarted: the pending byte is reported');

  closeNow = true;
  native.write(w, Buffer.from('c'), 0, 1);
  await sleep(30);
  t.equal(calls.length, 3);
  native.write(w, Buffer.from('d'), 0, 1);
  await sleep(50);
  t.equal(calls.length, 3, 'no callback after close() from inside the callback');
  poller.close();
  t.match(caught(() => poller.start(true, false)), /closed/);
  native.close(r);
  native.close(w);
});

t.test('Poller: writable, disconnect, one poller per fd', async (t) => {
  const [a, b] = native.seqpacketPair();
  const events: PollEvents[] = [];
  const poller = new native.Poller(a, (_status, ev) => {
    events.push(ev);
    poller.stop();
  });
  poller.start(false, true);
  await sleep(30);
  t.same(events, [{ readable: false, writable: true, disconnect: false }], 'a fresh socket is writable');

  poller.start(true, false);
  const dup = caught(() => new native.Poller(a, () => {}));
  t.equal(dup.code, 'EBUSY', 'a second Poller on a watched fd is refused');
  t.equal(dup.syscall, 'uv_poll_init');
  poller.close();

  const gone = whenReadable(a);
  native.close(b);
  const ev = await gone;
  t.equal(ev.disconnect, true, 'UV_DISCONNECT when the peer closed');
  native.close(a);
});

t.test('Poller: a started poller survives GC; unpollable fds throw', async (t) => {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const [r, w] = native.pipe();
  let fired = 0;
  (() => {
    // No JavaScript reference is kept to this poller.
    const p = new native.Poller(r, () => {
      fired++;
      native.read(r, Buffer.alloc(8), 0, 8);
      p.close();
    });
    p.start(true, false);
  })();
  for (let i = 0; i < 200; i++) {
    const [a, b] = native.pipe();
    const p = new native.Poller(a, () => {});
    p.start(true, false);
    p.stop(); // stopped and dropped: collectable
    native.close(a);
    native.close(b);
  }
  gc();
  await sleep(20);
  gc();
  native.write(w, Buffer.from('x'), 0, 1);
  await sleep(50);
  t.equal(fired, 1, 'the unreferenced started poller still called back');
  native.close(r);
  native.close(w);

  const file = fs.openSync('/etc/hostname', 'r');
  t.match(caught(() => new native.Poller(file, () => {})), { code: 'EPERM', syscall: 'uv_poll_init' });
  fs.closeSync(file);
});

t.test('Poller: an exception in the callback reaches uncaughtException', async (t) => {
  const [r, w] = native.pipe();
  const seen = new Promise<unknown>((resolve) => {
    const listeners = process.listeners('uncaughtException');
    process.removeAllListeners('uncaughtException');
    process.once('uncaughtException', (err) => {
      for (const l of listeners) process.on('uncaughtException', l);
      resolve(err);
    });
  });
  const poller = new native.Poller(r, () => {
    poller.close();
    throw new Error('boom from callback');
  });
  poller.start(true, false);
  native.write(w, Buffer.from('x'), 0, 1);
  const err = await seen;
  t.match(err, { message: 'boom from callback' });
  native.close(r);
  native.close(w);
});

t.test('spawn: fds mapping, exit code via pidfd + reap', async (t) => {
  const res = await run(['/bin/sh', '-c', 'echo out; echo err >&2; exit 3']);
  t.equal(res.output, 'out\nerr\n', 'child fd 1 and 2 mapped to our pipe');
  t.equal(res.exitCode, 3);
  t.equal(res.signal, null);

  const env = await run(['/bin/sh', '-c', 'echo "$FOO|$PATH"']);
  t.equal(env.output, '|/usr/bin:/bin\n', 'only envp is visible');
});

t.test('spawn: overlapping fd numbers are swapped correctly', async (t) => {
  const [r1, w1] = native.pipe();
  const [r2, w2] = native.pipe();
  const fds: number[] = new Array(Math.max(w1, w2) + 1).fill(-1);
  fds[w1] = w2; // child fd w1 is our pipe 2, and vice versa
  fds[w2] = w1;
  const { pid, pidfd } = native.spawn({
    file: '/bin/sh',
    argv: ['sh', '-c', 'echo "at $1" > /proc/self/fd/$1; echo "at $2" > /proc/self/fd/$2', 'sh', String(w1), String(w2)],
    envp: [],
    fds,
  });
  native.close(w1);
  native.close(w2);
  t.equal(readAll(r2), `at ${w1}\n`, 'child fd w1 writes into pipe 2');
  t.equal(readAll(r1), `at ${w2}\n`, 'child fd w2 writes into pipe 1');
  await whenReadable(pidfd);
  t.match(native.reap(), [{ pid, exitCode: 0, signal: null }]);
  native.close(pidfd);
  native.close(r1);
  native.close(r2);
});

t.test('spawn: no fd leaks into the child', async (t) => {
  // A deliberately inheritable fd in the parent must still not reach the child.
  const [lr, lw] = native.pipe();
  native.setCloexec(lr, false);
  native.setCloexec(lw, false);
  const [nr, nw] = native.pipe();
  const res = await run(['/bin/sh', '-c', 'exec ls /proc/self/fd'], { stdin: nr });
  t.same(res.output.trim().split('\n'), ['0', '1', '2', '3'], 'fds 0-2 plus the one ls opened');
  t.equal(res.exitCode, 0);
  for (const fd of [lr, lw, nr, nw]) native.close(fd);
});

t.test('spawn: signals reset and unblocked, setsid', async (t) => {
  const status = await run(['/bin/sh', '-c', 'exec cat /proc/self/status']);
  t.match(status.output, /^SigBlk:\s+0+$/m, 'nothing blocked');
  t.match(status.output, /^SigIgn:\s+0+$/m, 'nothing ignored (Node ignores SIGPIPE)');

  const sessionOf = (stat: string) => Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[3]);
  const withSetsid = await run(['/bin/sh', '-c', 'exec cat /proc/self/stat'], { setsid: true });
  t.equal(sessionOf(withSetsid.output), withSetsid.pid, 'setsid: the child leads its session');
  const without = await run(['/bin/sh', '-c', 'exec cat /proc/self/stat']);
  t.not(sessionOf(without.output), without.pid, 'no setsid: our session');
});

t.test('spawn: controllingTty makes the pty slave on fd 0 the controlling terminal', async (t) => {
  const probe = ['/bin/sh', '-c', 'if (exec 3</dev/tty) 2>/dev/null; then echo ctty; else echo none; fi'];
  for (const ctty of [true, false]) {
    const { master, slave } = native.openpty();
    const [r, w] = native.pipe();
    const { pid, pidfd } = native.spawn({ file: probe[0], argv: probe, envp: ['PATH=/usr/bin:/bin'], fds: [slave, w, w], setsid: true, controllingTty: ctty });
    native.close(w);
    native.close(slave);
    const output = readAll(r);
    native.close(r);
    await whenReadable(pidfd);
    native.close(pidfd);
    native.close(master);
    t.ok(native.reap().some((c) => c.pid === pid), 'reaped');
    t.equal(output.trim(), ctty ? 'ctty' : 'none', `controllingTty ${ctty}: /dev/tty ${ctty ? 'opens' : 'does not open'}`);
  }
});

t.test('spawn: exec failure is thrown and the child reaped', async (t) => {
  const before = fs.readdirSync('/proc/self/fd').length;
  const e = caught(() =>
    native.spawn({ file: '/nonexistent/program', argv: ['x'], envp: [], fds: [0, 1, 2] }),
  );
  t.match(e, { code: 'ENOENT', errno: 2, syscall: 'execve' });
  t.match(e.message, /^execve: No such file or directory/);
  t.same(native.reap(), [], 'no zombie left behind');
  const notExec = caught(() => native.spawn({ file: '/etc/passwd', argv: ['x'], envp: [], fds: [] }));
  t.match(notExec, { code: 'EACCES', syscall: 'execve' });
  const badFd = caught(() => native.spawn({ file: '/bin/true', argv: ['true'], envp: [], fds: [999_999] }));
  t.match(badFd, { code: 'EBADF' });
  t.equal(fs.readdirSync('/proc/self/fd').length, before, 'no fd left open by failed spawns');
});

t.test('sealedCopy + spawn execFd: the program runs from a sealed memfd it does not keep', async (t) => {
  const mem = native.sealedCopy('/bin/sh');
  t.ok(isCloexec(mem), 'the memfd is O_CLOEXEC');
  t.match(fs.readlinkSync(`/proc/self/fd/${mem}`), /^\/memfd:kata-init/, 'a memfd');
  t.throws(() => fs.writeSync(mem, 'x'), { code: 'EPERM' }, 'sealed against writes');
  const [r, w] = native.pipe();
  const { pid, pidfd } = native.spawn({
    file: '/nonexistent/shown-in-errors-only',
    argv: ['sh', '-c', 'readlink /proc/$$/exe; ls /proc/$$/fd'],
    envp: ['PATH=/usr/bin:/bin'],
    fds: [-1, w, w],
    execFd: mem,
  });
  native.close(w);
  const out = readAll(r).trim().split('\n');
  native.close(r);
  await whenReadable(pidfd);
  native.close(pidfd);
  t.match(native.reap(), [{ pid, exitCode: 0 }]);
  t.match(out[0], /^\/memfd:kata-init \(deleted\)$/, 'the child runs the memfd, not `file`');
  t.same(out.slice(1), ['1', '2'], 'the memfd is not among its fds');
  native.close(mem);
  t.match(caught(() => native.sealedCopy('/etc')), { code: 'EINVAL' }, 'a directory is refused');
  t.match(caught(() => native.spawn({ file: '/bin/true', argv: ['true'], envp: [], fds: [], execFd: 999_999 })), { code: 'EBADF' });
  t.throws(() => native.spawn({ file: '/bin/true', argv: ['true'], envp: [], fds: [], cgroupFd: -3 }), TypeError);
});

t.test('pidfdSendSignal(SIGKILL) → reap reports signal 9', async (t) => {
  const { pid, pidfd } = native.spawn({
    file: '/bin/sleep',
    argv: ['sleep', '100'],
    envp: [],
    fds: [-1, -1, -1],
  });
  t.ok(isCloexec(pidfd), 'pidfd is O_CLOEXEC');
  native.kill(pid, 0);
  native.pidfdSendSignal(pidfd, 9);
  await whenReadable(pidfd);
  t.same(native.reap(), [{ pid, exitCode: null, signal: 9 }]);
  t.match(caught(() => native.pidfdSendSignal(pidfd, 9)), { code: 'ESRCH', syscall: 'pidfd_send_signal' });
  t.match(caught(() => native.kill(pid, 0)), { code: 'ESRCH', syscall: 'kill' });
  native.close(pidfd);
  const other = native.pidfdOpen(process.pid);
  t.ok(isCloexec(other), 'pidfdOpen fd is O_CLOEXEC');
  native.close(other);
  t.match(caught(() => native.pidfdOpen(2 ** 22 + 1)), { syscall: 'pidfd_open' });
});

t.test('setChildSubreaper: orphaned grandchildren are reaped here', async (t) => {
  native.setChildSubreaper();
  // The background sleep does not hold the output pipe, so run() returns before it exits.
  const res = await run(['/bin/sh', '-c', 'sleep 0.2 >/dev/null 2>&1 </dev/null & echo $!']);
  const grandchild = Number(res.output.trim());
  t.ok(grandchild > 0, `grandchild pid ${grandchild}`);
  let reaped = res.others;
  for (let i = 0; i < 100 && reaped.length === 0; i++) {
    await sleep(50);
    reaped = native.reap();
  }
  t.same(reaped, [{ pid: grandchild, exitCode: 0, signal: null }], 'the orphan became our child');
});

t.test('openpty and setWinsize', async (t) => {
  const { master, slave } = native.openpty();
  t.ok(isCloexec(master) && isCloexec(slave), 'both ends O_CLOEXEC');
  native.setWinsize(master, 33, 121);
  const res = await run(['/bin/sh', '-c', 'stty size'], { stdin: slave });
  t.equal(res.output, '33 121\n', 'the slave sees the window size');
  native.close(slave);
  native.close(master);
});

t.test('powerOff refuses unless PID 1 (EPERM naming PID 1), so a host is never powered off', async (t) => {
  // In a child, and as nobody when we are root: even a broken guard then meets the kernel's
  // EPERM (no CAP_SYS_BOOT) instead of powering this machine off; the message tells them apart.
  const { spawnSync } = await import('node:child_process');
  const nativeJs = require.resolve('../../shared/native');
  const script = `try { require(${JSON.stringify(nativeJs)}).loadNative().powerOff(); console.log('returned'); }
    catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`;
  const asNobody = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', ...asNobody });
  t.equal(r.status, 0, `child ran (${r.stderr})`);
  const out = JSON.parse(r.stdout.trim()) as { code: string; message: string };
  t.equal(out.code, 'EPERM');
  t.match(out.message, /only PID 1 may power off/, 'refused by the PID 1 guard, before reboot(2)');
});
