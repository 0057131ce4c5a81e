// control/debug/server.ts: the debug endpoint's views of the sandbox model (fastify inject).
import t from 'tap';
import { buildDebugServer } from '../../control/debug/server';
import { Container } from '../../control/sandbox/container';
import { Process } from '../../control/sandbox/process';
import { Sandbox } from '../../control/sandbox/sandbox';
import type { ProcessStdio } from '../../control/sandbox/stdio';
import type { ContainerPlan } from '../../shared/protocol';

// The views read only `terminal` of a process's stdio (eviction also asks whether its output
// was read to the end).
const pipes = { terminal: false, outputDrained: true } as unknown as ProcessStdio;
const tty = { terminal: true, outputDrained: true } as unknown as ProcessStdio;
const plan = {} as ContainerPlan;

t.test('sandbox and container views', async (t) => {
  const sandbox = new Sandbox();
  sandbox.id = 'sb';
  sandbox.hostname = 'host';
  sandbox.created = true;
  const pause = new Container('pause', plan, new Process('pause', 'pause', true, 100, pipes));
  sandbox.addContainer(pause);
  pause.status = 'running';
  const web = new Container('web', plan, new Process('web', 'web', true, 200, pipes));
  sandbox.addContainer(web);
  web.status = 'running';
  web.execs.set('sh', new Process('web', 'sh', false, 201, tty));
  web.execs.set('ls', new Process('web', 'ls', false, 202, pipes));
  web.applyExit('ls', 202, 0);

  const app = buildDebugServer(sandbox);
  t.teardown(() => app.close());

  const s = await app.inject({ method: 'GET', url: '/v1/sandbox' });
  t.equal(s.statusCode, 200);
  t.same(s.json(), {
    id: 'sb',
    hostname: 'host',
    created: true,
    destroyed: false,
    pidns: '/proc/100/ns/pid',
    containers: [
      { id: 'pause', status: 'running', pid: 100, processes: 1 },
      { id: 'web', status: 'running', pid: 200, processes: 3 },
    ],
  });

  const c = await app.inject({ method: 'GET', url: '/v1/containers/web' });
  t.equal(c.statusCode, 200);
  const body = c.json() as { id: string; status: string; pid: number; processes: unknown[] };
  t.equal(body.status, 'running');
  t.equal(body.pid, 200);
  t.same(body.processes, [
    { execId: 'web', pid: 200, init: true, exited: false, exitStatus: null, terminal: false },
    { execId: 'sh', pid: 201, init: false, exited: false, exitStatus: null, terminal: true },
    { execId: 'ls', pid: 202, init: false, exited: true, exitStatus: 0, terminal: false },
  ]);

  const missing = await app.inject({ method: 'GET', url: '/v1/containers/nope' });
  t.equal(missing.statusCode, 404);
  t.match(missing.json(), { error: /nope/ });
  t.same((await app.inject({ method: 'GET', url: '/healthz' })).json(), { status: 'ok' });
  t.equal((await app.inject({ method: 'POST', url: '/v1/sandbox' })).statusCode, 404, 'read-only');
});

t.test('exited exec records are bounded per container, oldest exits evicted first', async (t) => {
  const init = new Process('c', 'c', true, 1, pipes);
  const c = new Container('c', plan, init);
  for (let i = 0; i < 5; i++) {
    c.execs.set(`e${i}`, new Process('c', `e${i}`, false, 10 + i, pipes));
  }
  c.applyExit('e3', 13, 0);
  c.applyExit('e0', 10, 1);
  c.applyExit('e4', 14, 2);
  t.same(c.evictExited(2).map((p) => p.execId), ['e3'], 'the oldest exit goes');
  t.same([...c.execs.keys()].sort(), ['e0', 'e1', 'e2', 'e4'], 'live processes and newer exits stay');
  t.equal(c.applyExit('e1', 999, 0), null, 'an exit with the wrong pid is ignored');
  t.equal(c.applyExit('', 1, 137), init, 'init exit');
  t.equal(c.status, 'stopped', 'the container is stopped when its init exits');
  t.equal(await init.wait(), 137);
});
