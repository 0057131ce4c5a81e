// Adversarial review (restart): a crash at the worst moment must not lose an exit status. An
// exec whose output was already read to the end was released in the helper (releaseProcess: the
// helper forgets the process and its status) *before* the WaitProcess answer was written: a
// control plane killed between the two left the runtime with UNAVAILABLE and the next control
// plane with no such exec (a retried WaitProcess: NOT_FOUND). Now the release waits until the
// answer has been written (RpcContext.onWritten: once the socket write completed). GetOOMEvent's ackOomEvents
// (the helper forgets the event) had the same window: it left right before the answer's write.
import t from 'tap';
import { startMockAgent } from '../lib/mock-agent';
import type { grpc } from '../../shared/generated/protos';
import type { ReleaseProcessArgs } from '../../shared/protocol';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function proc(args: string[]): grpc.Process.$Properties {
  return { Args: args, Env: ['PATH=/usr/bin:/bin', 'HOME=/'], Cwd: '/' };
}

t.test('WaitProcess: the helper keeps the exit status until the answer is written', async (t) => {
  const h = await startMockAgent(t, { prefix: 'kata-wait-release-' });
  await h.call('CreateSandbox', { hostname: 'sb', sandbox_id: 'sb-wait' });
  await h.call('CreateContainer', {
    container_id: 'ww',
    OCI: { Version: '1.0.2', Root: { Path: '/run/kata-test/rootfs' }, Process: proc(['sleep', '1000']), Linux: { Namespaces: [{ Type: 'mount' }, { Type: 'pid' }] } },
  });
  await h.call('StartContainer', { container_id: 'ww' });
  await h.call('ExecProcess', { container_id: 'ww', exec_id: 'xx', process: proc(['sh', '-c', 'echo out; exit 3']) });
  for (const m of ['ReadStdout', 'ReadStderr'] as const) {
    for (;;) {
      const r = await h.call(m, { container_id: 'ww', exec_id: 'xx', len: 1024 }).catch(() => null);
      if (r === null) break;
    }
  }
  const released: string[] = [];
  const backend = h.pair.backend;
  const original = backend.releaseProcess.bind(backend);
  backend.releaseProcess = async (args: ReleaseProcessArgs) => {
    released.push(args.execId);
    return original(args);
  };
  const hooks: (() => void)[] = [];
  const { status } = await h.agent.service.waitProcess({ container_id: 'ww', exec_id: 'xx' } as grpc.WaitProcessRequest, { onWritten: (fn) => hooks.push(fn) });
  t.equal(status, 3);
  await sleep(100);
  t.same(released, [], 'not released while the answer is not written (a crash now keeps the status in the helper)');
  const { result } = await backend.state({ withFds: false });
  t.same(result.processes.filter((p) => p.execId === 'xx').map((p) => [p.exited, p.exitStatus]), [[true, 3]], 'the helper still has the status');
  for (const fn of hooks) fn();
  for (let i = 0; i < 100 && released.length === 0; i++) await sleep(10);
  t.same(released, ['xx'], 'released once the answer is written');
  await h.call('RemoveContainer', { container_id: 'ww', timeout: 5 });
});

t.test('GetOOMEvent: the helper is told to forget the event only after the answer is written', async (t) => {
  const h = await startMockAgent(t, { prefix: 'kata-oom-ack-' });
  const core = h.agent.service.core;
  const sent: string[] = [];
  const original = core.callNoFds.bind(core);
  core.callNoFds = ((op: never, args: never, ms?: number) => {
    sent.push(op);
    return original(op, args, ms);
  }) as typeof core.callNoFds;
  core.handleOom('ww', 7);
  const hooks: (() => void)[] = [];
  const ev = await h.agent.service.getOOMEvent({} as grpc.GetOOMEventRequest, { onWritten: (fn) => hooks.push(fn) });
  t.equal(ev.container_id, 'ww');
  await new Promise((r) => setImmediate(r));
  t.same(sent, [], 'no ackOomEvents leaves before the answer is written');
  for (const fn of hooks) fn(); // what the connection runs once the answer's write completed
  await new Promise((r) => setImmediate(r));
  t.same(sent, ['ackOomEvents'], 'acked right after');
});
