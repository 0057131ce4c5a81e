// The debug console without privileges: its configuration (upstream's agent.debug_console /
// debug_console_vport, our address), the helper op's validation, its tty case (a pty the test
// owns stands in for /dev/console) and its pty case relayed by control over a unix socket.
import t, { type Test } from 'tap';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadConfig } from '../../control/config';
import { DebugConsole, MAX_DEBUG_CONSOLE_SESSIONS, debugConsoleTarget, parseDebugConsoleAddr } from '../../control/debug-console';
import { DebugConsoleOps } from '../../helper/ops/debug-console';
import { kernelAsksDebugConsole, parseHelperArgs } from '../../helper/main';
import { getReaper } from '../../helper/ops/reaper';
import { startMockPair } from '../../helper/mock/main';
import { silentLogger } from '../../shared/log';
import { loadNative } from '../../shared/native';
import { Code } from '../../shared/protocol';
import { FdStream } from '../../control/ttrpc/fdstream';

const native = loadNative();
const cfg = (cmdline: string, argv: string[] = [], env: NodeJS.ProcessEnv = {}) => {
  const l = loadConfig(argv, env, { cmdline });
  if (l.help) throw new Error('help');
  return l.config;
};

t.test('where the console is served, as upstream', async (t) => {
  t.equal(debugConsoleTarget(cfg('')), undefined, 'off by default');
  t.equal(debugConsoleTarget(cfg('agent.debug_console_vport=1026')), undefined, 'a port alone does not turn it on');
  t.same(debugConsoleTarget(cfg('agent.debug_console')), { kind: 'tty', path: '/dev/console' }, 'no port: /dev/console');
  t.same(debugConsoleTarget(cfg('agent.debug_console agent.debug_console_vport=1026')), { kind: 'listen', address: 'vsock://-1:1026' });
  t.same(debugConsoleTarget(cfg('', ['--debug-console', '--debug-console-addr', 'unix:///tmp/c.sock'])), { kind: 'listen', address: 'unix:///tmp/c.sock' });
  t.equal(debugConsoleTarget(cfg('agent.debug_console', [], { KATA_AGENT_DEBUG_CONSOLE_ADDR: '' })), undefined, '"" turns it off');
  for (const bad of ['tcp://0.0.0.0:1', '127.0.0.1:22', 'unix://@abstract', 'tty:/etc/passwd']) {
    t.throws(() => parseDebugConsoleAddr(bad), { code: Code.INVALID_ARGUMENT }, bad);
  }
  t.throws(() => cfg('agent.debug_console', ['--debug-console-addr', '0.0.0.0:2222']), { code: Code.INVALID_ARGUMENT, message: /0\.0\.0\.0:2222/ });
});

t.test('the helper op re-validates the tty and needs a shell', async (t) => {
  const ops = new DebugConsoleOps({ native, reaper: getReaper() });
  for (const tty of ['/etc/passwd', 'dev/console', '/dev/../etc/shadow', 42]) {
    await t.rejects(ops.debugConsole({ tty } as never), { code: Code.INVALID_ARGUMENT }, String(tty));
  }
  await t.rejects(ops.debugConsole({ tty: '/dev/null' }), { code: Code.INVALID_ARGUMENT, message: /not a terminal/ });
  const none = new DebugConsoleOps({ native, reaper: getReaper(), shells: ['/nonexistent/sh'] });
  await t.rejects(none.debugConsole({}), { code: Code.FAILED_PRECONDITION, message: /\/nonexistent\/sh/ });
});

// Adversarial review 6: the real helper served `debugConsole` to any peer with the control uid
// whether or not the console was configured (the configuration lived in control only): a root
// shell one request away for a compromised control plane or any guest process running as that
// uid (65534, `nobody`). The helper now serves it only when its own configuration says so.
t.test('the real helper serves debugConsole only when started with the console enabled', async (t) => {
  const off = new DebugConsoleOps({ native, reaper: getReaper(), enabled: false });
  await t.rejects(off.debugConsole({}), { code: Code.PERMISSION_DENIED, message: /not enabled in the helper/ }, 'a new pty: refused');
  await t.rejects(off.debugConsole({ tty: '/dev/console' }), { code: Code.PERMISSION_DENIED }, 'a tty: refused');
  t.equal(parseHelperArgs([], {}).debugConsole, kernelAsksDebugConsole(), 'default: only the kernel command line turns it on');
  t.equal(parseHelperArgs(['--debug-console'], {}).debugConsole, true, '--debug-console');
  t.equal(parseHelperArgs([], { KATA_AGENT_DEBUG_CONSOLE: '1' }).debugConsole, true, 'KATA_AGENT_DEBUG_CONSOLE=1');
  t.equal(kernelAsksDebugConsole('console=ttyS0 agent.debug_console quiet'), true, 'agent.debug_console on the kernel command line');
  t.equal(kernelAsksDebugConsole('agent.debug_console_vport=1026 agent.log=debug'), false, 'a vport alone is not the switch (upstream)');
  t.equal(kernelAsksDebugConsole('xagent.debug_console'), false, 'a whole word only');
});

/** Read from `stream` until `re` matches the text so far. */
function readUntil(stream: NodeJS.ReadableStream, re: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error(`no ${re} in ${JSON.stringify(text)}`)), 15_000);
    stream.on('data', (d: Buffer | string) => {
      text += d.toString();
      if (re.test(text)) {
        clearTimeout(timer);
        resolve(text);
      }
    });
  });
}

const uid = String(process.getuid?.() ?? 0);

t.test('tty case: the shell runs on the named terminal', async (t) => {
  const pair = await startMockPair();
  t.teardown(() => pair.close());
  const { master, slave } = native.openpty();
  const ptsPath = fs.readlinkSync(`/proc/self/fd/${slave}`);
  const m = new FdStream(master, { native });
  t.teardown(() => {
    m.destroy();
    native.close(slave);
  });
  const reply = await pair.client.call('debugConsole', { tty: ptsPath });
  t.ok(reply.result.pid > 0);
  t.same(reply.fds, {}, 'no fd back for a tty');
  const out = readUntil(m, new RegExp(`[\\r\\n]hi\\r\\n${uid}\\r\\n`));
  m.write('echo hi; id -u; exit\n');
  t.match(await out, /hi/);
});

/** A mock helper and a debug console listening on a unix socket in a temp dir, torn down with `t`. */
async function listening(t: Test): Promise<{ sock: string; console: DebugConsole }> {
  const pair = await startMockPair();
  t.teardown(() => pair.close());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-console-unit-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const sock = path.join(dir, 'console.sock');
  const console = await DebugConsole.start({ kind: 'listen', address: `unix://${sock}` }, pair.client, silentLogger());
  t.teardown(() => console.close());
  return { sock, console };
}

t.test('pty case: control relays a unix connection to a new shell; close hangs up', async (t) => {
  const { sock, console } = await listening(t);
  t.equal(fs.statSync(sock).mode & 0o777, 0o600);
  const c = net.createConnection(sock);
  const out = readUntil(c, new RegExp(`[\\r\\n]hi\\r\\n${uid}\\r\\n`));
  c.write('echo hi; id -u\n');
  t.match(await out, /hi/);
  t.equal(console.sessionCount, 1);
  const closed = new Promise<void>((resolve) => c.on('close', () => resolve()));
  c.on('error', () => undefined);
  console.close();
  await closed;
  t.equal(console.sessionCount, 0, 'session ended');
  t.notOk(fs.existsSync(sock), 'socket removed');
});

// Adversarial review 6: the socket was bound with the process umask and chmod-ed 0600 only
// afterwards; with a permissive umask (0) any local user could connect in between (a root shell:
// the connection stays in the backlog and is accepted later). The mode seen right after bind,
// before control's own chmod, must already deny group and others.
t.test('the unix socket is never connectable by others, even with umask 0 (bind under umask 0177)', async (t) => {
  const previous = process.umask(0);
  const seen: number[] = [];
  // the module object itself (the compiled `import * as fs` is a getter view of it)
  const fsModule = require('node:fs') as { chmodSync: typeof fs.chmodSync };
  const chmod = fsModule.chmodSync;
  fsModule.chmodSync = (p: fs.PathLike, mode: fs.Mode): void => {
    seen.push(fs.statSync(p).mode & 0o777);
    chmod(p, mode);
  };
  let sock = '';
  try {
    ({ sock } = await listening(t));
  } finally {
    fsModule.chmodSync = chmod;
    process.umask(previous);
  }
  t.ok(seen.length > 0, 'control chmod-ed the socket');
  t.same(seen.filter((m) => (m & 0o077) !== 0), [], `mode right after bind: ${seen.map((m) => m.toString(8)).join(', ')}`);
  t.equal(fs.statSync(sock).mode & 0o777, 0o600);
});

t.test('at most MAX_DEBUG_CONSOLE_SESSIONS sessions; one more connection is closed', async (t) => {
  const { sock, console } = await listening(t);
  const conns: net.Socket[] = [];
  t.teardown(() => conns.forEach((c) => c.destroy()));
  for (let i = 0; i < MAX_DEBUG_CONSOLE_SESSIONS; i++) {
    // One at a time: a unix listener's backlog refuses (EAGAIN) connections beyond it.
    const c = net.createConnection(sock);
    conns.push(c);
    const ready = readUntil(c, /ready\d+\r\n/);
    c.write(`echo ready$((${i}+0))\n`);
    await ready;
  }
  t.equal(console.sessionCount, MAX_DEBUG_CONSOLE_SESSIONS, 'all sessions served');
  const extra = net.createConnection(sock);
  extra.on('error', () => undefined);
  let got = '';
  extra.on('data', (d: Buffer) => (got += d.toString()));
  await new Promise<void>((resolve) => extra.on('close', () => resolve()));
  t.equal(got, '', 'the extra connection got no shell');
  t.equal(console.sessionCount, MAX_DEBUG_CONSOLE_SESSIONS);
});

t.test('tty case: a tty that is another session\'s controlling terminal still gets a shell (no job control)', async (t) => {
  const pair = await startMockPair();
  t.teardown(() => pair.close());
  const { master, slave } = native.openpty();
  const ptsPath = fs.readlinkSync(`/proc/self/fd/${slave}`);
  // Another session takes the tty first (as a getty or PID 1 holds /dev/console).
  const holder = native.spawn({ file: '/bin/sleep', argv: ['sleep', '30'], envp: [], fds: [slave], setsid: true, controllingTty: true });
  const m = new FdStream(master, { native });
  t.teardown(() => {
    native.kill(holder.pid, 9);
    native.close(holder.pidfd);
    m.destroy();
    native.close(slave);
  });
  const reply = await pair.client.call('debugConsole', { tty: ptsPath });
  t.ok(reply.result.pid > 0, 'the shell started');
  const out = readUntil(m, /[\r\n]fallback\r\n/);
  m.write('echo fallback; exit\n');
  t.match(await out, /fallback/);
});
