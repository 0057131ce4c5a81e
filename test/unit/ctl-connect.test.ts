/**
 * Clients and launchers facing an agent that is still starting or already running:
 * connectRetrying (kata-agent-ctl and kata-agent-oci), unixSocketServing and controlEnv
 * (scripts/lib/standalone.ts, the stand-alone launcher).
 */
import t from 'tap';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Code, StatusError } from '../../shared/protocol';
import { connectRetrying } from '../../control/ctl/connect';
import { controlEnv, unixSocketServing } from '../../scripts/lib/standalone';

t.test('connectRetrying retries a missing/refused unix socket, then succeeds', async (t) => {
  let calls = 0;
  const got = await connectRetrying('unix:///run/x.sock', async () => {
    calls++;
    if (calls < 3) throw new StatusError(Code.UNAVAILABLE, 'cannot connect to unix:///run/x.sock: connect ENOENT /run/x.sock');
    return 'client';
  });
  t.equal(got, 'client');
  t.equal(calls, 3, 'two failures retried');
});

t.test('connectRetrying does not retry other failures, other transports, or past its deadline', async (t) => {
  let calls = 0;
  await t.rejects(connectRetrying('unix:///run/x.sock', async () => {
    calls++;
    throw new StatusError(Code.PERMISSION_DENIED, 'peer check failed');
  }), { code: Code.PERMISSION_DENIED });
  t.equal(calls, 1, 'PERMISSION_DENIED not retried');
  calls = 0;
  await t.rejects(connectRetrying('vsock://3:1024', async () => {
    calls++;
    throw new StatusError(Code.UNAVAILABLE, 'connect ECONNREFUSED');
  }), { code: Code.UNAVAILABLE });
  t.equal(calls, 1, 'vsock not retried');
  calls = 0;
  await t.rejects(connectRetrying('unix:///run/x.sock', async () => {
    calls++;
    throw new StatusError(Code.UNAVAILABLE, 'connect ENOENT');
  }, 250), { code: Code.UNAVAILABLE });
  t.ok(calls >= 2 && calls <= 5, `retried until the deadline (${calls} calls)`);
});

t.test('unixSocketServing: a listening socket is serving; a stale file or none is not', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'serving-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 's.sock');
  t.equal(await unixSocketServing(file), false, 'missing');
  const srv = net.createServer((c) => c.destroy());
  await new Promise<void>((r) => srv.listen(file, r));
  t.equal(await unixSocketServing(file), true, 'listening');
  await new Promise<void>((r) => srv.close(() => r()));
  fs.writeFileSync(file, ''); // a plain file where a socket was
  t.equal(await unixSocketServing(file), false, 'stale file');
});

t.test('controlEnv: PATH and KATA_AGENT_BUNDLE only', (t) => {
  t.same(controlEnv({ PATH: '/bin', KATA_AGENT_BUNDLE: '0', HOME: '/root', NODE_EXTRA_CA_CERTS: '/x' }), { PATH: '/bin', KATA_AGENT_BUNDLE: '0' });
  t.same(controlEnv({ HOME: '/root' }), { PATH: '/usr/bin:/bin' });
  t.end();
});
