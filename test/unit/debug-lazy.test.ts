// control/debug/lazy.ts: the debug endpoint's address is bound at start-up and the app (fastify)
// is built on the first connection only; requests over that and later connections reach it.
import t from 'tap';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import Fastify from 'fastify';
import { startLazyDebugServer } from '../../control/debug/lazy';
import { Code } from '../../shared/protocol';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'debug-lazy-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

function get(socketPath: string, url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath, path: url }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.once('error', reject);
  });
}

t.test('built on the first connection, once; the socket is 0600; close removes it', async (t) => {
  const sock = path.join(tmp, 'a', 'debug.sock');
  let builds = 0;
  const endpoint = await startLazyDebugServer({ kind: 'unix', path: sock }, () => {
    builds++;
    const app = Fastify();
    app.get('/healthz', async () => ({ status: 'ok', builds }));
    return app;
  });
  t.equal(builds, 0, 'nothing built at start');
  t.equal(endpoint.built, false);
  t.equal(fs.statSync(sock).mode & 0o777, 0o600, 'socket mode 0600');
  t.same(await get(sock, '/healthz'), { status: 200, body: '{"status":"ok","builds":1}' }, 'first request answered');
  const [a, b] = await Promise.all([get(sock, '/healthz'), get(sock, '/nope')]);
  t.equal(a.status, 200, 'later connections reach the same app');
  t.equal(b.status, 404, 'unknown route: the app answers 404');
  t.equal(builds, 1, 'built once');
  t.equal(endpoint.built, true);
  // A keep-alive connection still open does not keep close() waiting.
  const agent = new http.Agent({ keepAlive: true });
  await new Promise<void>((resolve, reject) => http.get({ socketPath: sock, path: '/healthz', agent }, (res) => res.resume().on('end', resolve)).once('error', reject));
  await endpoint.close();
  agent.destroy();
  t.notOk(fs.existsSync(sock), 'socket file removed on close');
});

t.test('a build that throws drops that connection and is tried again on the next', async (t) => {
  const sock = path.join(tmp, 'b.sock');
  let attempts = 0;
  const endpoint = await startLazyDebugServer({ kind: 'unix', path: sock }, () => {
    attempts++;
    if (attempts === 1) throw new Error('cannot build');
    const app = Fastify();
    app.get('/healthz', async () => ({ status: 'ok' }));
    return app;
  });
  t.teardown(() => endpoint.close());
  await t.rejects(get(sock, '/healthz'), 'first connection closed');
  t.same(await get(sock, '/healthz'), { status: 200, body: '{"status":"ok"}' }, 'second one served');
  t.equal(attempts, 2);
});

t.test('where it may listen: loopback TCP only, no live socket taken over', async (t) => {
  await t.rejects(startLazyDebugServer({ kind: 'tcp', host: '0.0.0.0', port: 0 }, () => Fastify()), { code: Code.PERMISSION_DENIED });
  const sock = path.join(tmp, 'c.sock');
  const first = await startLazyDebugServer({ kind: 'unix', path: sock }, () => Fastify());
  t.teardown(() => first.close());
  await t.rejects(startLazyDebugServer({ kind: 'unix', path: sock }, () => Fastify()), { code: Code.ALREADY_EXISTS }, 'a live endpoint is left alone');
  const plain = path.join(tmp, 'plain');
  fs.writeFileSync(plain, 'x');
  await t.rejects(startLazyDebugServer({ kind: 'unix', path: plain }, () => Fastify()), { code: Code.ALREADY_EXISTS }, 'a regular file is left alone');
  t.equal(fs.readFileSync(plain, 'utf8'), 'x');
  const tcp = await startLazyDebugServer({ kind: 'tcp', host: '127.0.0.1', port: 0 }, () => Fastify());
  await tcp.close();
  t.pass('loopback TCP accepted');
});
