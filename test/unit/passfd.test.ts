// passfd I/O (control/passfd.ts; upstream passfd_io.rs) without privileges: the agent with a
// passfd listener on a unix socket (there is no vsock loopback on the test machines; the
// listener, port mapping and copy code are the same, only the peer port comes from the peer's
// bound name instead of its vsock port), over the in-process mock helper. A python client
// connects one socket per stdio stream; the container's and an exec's stdin/stdout/stderr go
// through them.
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Agent } from '../../control/agent';
import { defaultConfig } from '../../control/config';
import { METHODS, type MethodName, type MethodSpec, type RequestOf, type ResponseOf } from '../../control/ctl/methods';
import { TtrpcClient } from '../../control/ttrpc';
import { startMockPair } from '../../helper/mock/main';
import { PROJECT_ROOT } from '../../scripts/lib/standalone';
import type { grpc } from '../../shared/generated/protos';

const CLIENT = path.join(PROJECT_ROOT, 'test', 'fixtures', 'passfd-client.py');
const python = ['/usr/bin/python3', '/bin/python3'].find((p) => fs.existsSync(p));

interface ClientRun {
  /** Resolves once the three connections are open. */
  connected: Promise<void>;
  /** What the client read from the stdout and stderr connections, at their EOF. */
  result: Promise<{ stdout: string; stderr: string }>;
}

/**
 * Run the python client. Only its stdout is used (not its exit event: the in-process mock
 * helper's reaper takes every child's status).
 */
function client(socketPath: string, ports: [number, number, number], input: string): ClientRun {
  const child = spawn(python!, [CLIENT, socketPath, ...ports.map(String), input], { stdio: ['ignore', 'pipe', 'inherit'] });
  let text = '';
  let onConnected: () => void = () => undefined;
  const connected = new Promise<void>((resolve) => (onConnected = resolve));
  const result = new Promise<{ stdout: string; stderr: string }>((resolve, reject) => {
    child.stdout.on('data', (b: Buffer) => {
      text += b.toString();
      if (text.startsWith('connected\n')) onConnected();
    });
    child.stdout.on('end', () => {
      const line = text.split('\n')[1];
      try {
        resolve(JSON.parse(line) as { stdout: string; stderr: string });
      } catch {
        reject(new Error(`passfd client output: ${JSON.stringify(text)}`));
      }
    });
  });
  return { connected, result };
}

function oci(args: string[]): grpc.Spec.$Properties {
  return {
    Version: '1.0.2',
    Root: { Path: '/run/kata-test/rootfs' },
    Process: { Args: args, Env: ['PATH=/usr/bin:/bin', 'HOME=/'], Cwd: '/' },
    Linux: { Namespaces: [{ Type: 'mount' }, { Type: 'ipc' }, { Type: 'uts' }, { Type: 'pid' }] },
  };
}

async function setup(t: Test): Promise<{ call: <K extends MethodName>(name: K, req: RequestOf<K>) => Promise<ResponseOf<K>>; passfdPath: string; agent: Agent }> {
  const pair = await startMockPair();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-passfd-'));
  const address = `unix://${path.join(dir, 'agent.sock')}`;
  const passfdPath = path.join(dir, 'passfd.sock');
  const agent = new Agent({
    config: { ...defaultConfig(), serverAddr: address, debugAddr: '', passfdListener: `unix://${passfdPath}` },
    helper: pair.client,
    defaultRemoveTimeoutMs: 5000,
  });
  await agent.start();
  const c = await TtrpcClient.connect(address);
  t.teardown(async () => {
    await c.close();
    await agent.stop();
    await pair.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const call = async <K extends MethodName>(name: K, req: RequestOf<K>): Promise<ResponseOf<K>> => {
    const spec = METHODS[name] as unknown as MethodSpec<object, object, object, object>;
    return spec.response.decode(await c.call(spec.service, spec.method, spec.request.encode(req).finish())) as ResponseOf<K>;
  };
  return { call, passfdPath, agent };
}

if (!python) {
  t.plan(0, 'python3 is not installed (the passfd test client)');
} else {
  t.test('container and exec stdio through passfd connections', async (t) => {
    const { call, passfdPath, agent } = await setup(t);
    const script = 'cat; echo "to stderr" >&2; exit 3';

    const init = client(passfdPath, [5101, 5102, 5103], 'hello init\n');
    await init.connected;
    await call('CreateContainer', { container_id: 'pfd', exec_id: 'pfd', OCI: oci(['sh', '-c', script]), stdin_port: 5101, stdout_port: 5102, stderr_port: 5103 });
    await call('StartContainer', { container_id: 'pfd' });
    const { status } = await call('WaitProcess', { container_id: 'pfd', exec_id: 'pfd' });
    t.equal(status, 3, 'exit status of the init');
    t.same(await init.result, { stdout: 'hello init\n', stderr: 'to stderr\n' }, 'the init read its stdin from and wrote its output to the connections');

    await call('RemoveContainer', { container_id: 'pfd', timeout: 5 });
    await call('CreateContainer', { container_id: 'pfd2', exec_id: 'pfd2', OCI: oci(['sleep', '1000']) });
    await call('StartContainer', { container_id: 'pfd2' });
    const exec = client(passfdPath, [5201, 5202, 5203], 'hello exec\n');
    await exec.connected;
    await call('ExecProcess', { container_id: 'pfd2', exec_id: 'x', process: oci(['sh', '-c', script]).Process, stdin_port: 5201, stdout_port: 5202, stderr_port: 5203 });
    t.equal((await call('WaitProcess', { container_id: 'pfd2', exec_id: 'x' })).status, 3, 'exit status of the exec');
    t.same(await exec.result, { stdout: 'hello exec\n', stderr: 'to stderr\n' }, 'the exec used the connections');
    t.equal(agent.service.core.passfd?.pendingCount, 0, 'every connection was claimed');
    await call('RemoveContainer', { container_id: 'pfd2', timeout: 5 });
  });

  t.test('a port without a connection leaves that stream to ReadStdout', async (t) => {
    const { call } = await setup(t);
    await call('CreateContainer', { container_id: 'nop', exec_id: 'nop', OCI: oci(['sh', '-c', 'echo plain']), stdout_port: 5999 });
    await call('StartContainer', { container_id: 'nop' });
    const { data } = await call('ReadStdout', { container_id: 'nop', exec_id: 'nop', len: 1024 });
    t.equal(Buffer.from(data).toString(), 'plain\n');
    t.equal((await call('WaitProcess', { container_id: 'nop', exec_id: 'nop' })).status, 0);
    await call('RemoveContainer', { container_id: 'nop', timeout: 5 });
  });
}
