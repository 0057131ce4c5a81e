// The debug console (control/debug-console.ts, helper/ops/debug-console.ts) end to end:
// `kata-agent --standalone --debug-console` with the console on a unix socket (vsock in a VM;
// there is no vsock loopback here). The control plane runs as uid 65534; the shell it relays must
// be root (started by the helper), on a pty. Off unless configured.
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { PROJECT_ROOT } from '../../scripts/lib/standalone';
import { skipReason } from './lib/agent-harness';

/** Start stand-alone with `extra` flags; resolves once it serves. */
async function standalone(t: Test, runDir: string, extra: string[]): Promise<ChildProcess> {
  const child = spawn(path.join(PROJECT_ROOT, 'bin', 'kata-agent'), ['--standalone', '--run-dir', runDir, ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  t.teardown(async () => {
    child.kill('SIGTERM');
    await exited;
  });
  let out = '';
  await new Promise<void>((resolve, reject) => {
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      out += chunk;
      if (/serving \S+/.test(out)) resolve();
    });
    child.once('exit', (code) => reject(new Error(`kata-agent exited ${code}: ${out}`)));
  });
  return child;
}

/** Send `input` on a new connection to `sock`; resolve with the output once `until` matches it. */
function converse(sock: string, input: string, until: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.createConnection(sock);
    let text = '';
    const timer = setTimeout(() => {
      c.destroy();
      reject(new Error(`no ${until} within 20 s; got ${JSON.stringify(text)}`));
    }, 20_000);
    c.setEncoding('utf8');
    c.on('connect', () => c.write(input));
    c.on('data', (d: string) => {
      text += d;
      if (until.test(text)) {
        clearTimeout(timer);
        c.end();
        resolve(text);
      }
    });
    c.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

const skip = skipReason();
if (skip) {
  t.plan(0, skip);
} else {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'debug-console-test-'));
  fs.chmodSync(tmp, 0o755);
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

  t.test('a root shell on a pty per connection, relayed by the unprivileged control plane', async (t) => {
    const runDir = path.join(tmp, 'run');
    const sock = path.join(runDir, 'control', 'console.sock');
    await standalone(t, runDir, ['--debug-console', '--debug-console-addr', `unix://${sock}`]);
    t.equal(fs.statSync(sock).mode & 0o777, 0o600, 'the console socket is 0600');
    const first = await converse(sock, 'echo hi; id -u; tty\n', /[\r\n]hi\r\n0\r\n\/dev\/pts\/\d+\r\n/);
    // (The pty echoes the input line first: "echo hi; id -u; tty"; output lines start after a \r (bash) or \n.)
    t.match(first, /[\r\n]hi\r\n0\r\n/, 'the command ran as root');
    t.match(first, /\/dev\/pts\/\d+/, 'on a pty');
    // A second session gets its own shell (the first one was hung up).
    const second = await converse(sock, 'echo $$; echo second\n', /[\r\n]\d+\r\nsecond\r\n/);
    t.match(second, /second/);
    const ps = fs.readFileSync(path.join(runDir, 'control.log'), 'utf8');
    t.match(ps, /debug console session started/, 'control logged the sessions');
  });

  t.test('off unless configured: no console socket, no shell', async (t) => {
    const runDir = path.join(tmp, 'run-off');
    await standalone(t, runDir, ['--debug-console-addr', `unix://${path.join(runDir, 'control', 'console.sock')}`]);
    t.notOk(fs.existsSync(path.join(runDir, 'control', 'console.sock')), 'an address alone does not start it');
  });
}
