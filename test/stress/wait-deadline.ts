/**
 * Memory-growth measurement (security review item 5): N WaitProcess calls that end by deadline
 * (ttRPC timeout_nano) against a long-running process, with the control RSS before and after.
 *
 *   npm run stress:wait [-- CALLS [CONCURRENCY]]     (default 300000 calls, 500 in flight)
 *
 * Runs `kata-agent` (control plane, heap capped at 128 MB as in the review) and the mock helper
 * (`kata-agent-helper --mock`) as two processes, no root needed. Prints the figures and whether
 * control stayed alive and under 200 MB RSS; a report, not a test (exit 1 only if control died).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { METHODS, type MethodName, type RequestOf, type ResponseOf, type MethodSpec } from '../../control/ctl/methods';
import { TtrpcClient } from '../../control/ttrpc';
import { StatusError } from '../../shared/protocol';

/** Project whose bin/ is measured (KATA_STRESS_ROOT to measure another checkout, e.g. before a fix). */
const root = process.env.KATA_STRESS_ROOT ?? path.resolve(__dirname, '..', '..', '..');

function rssMiB(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) / 1024 : NaN;
}

async function waitFor(cond: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function main(): Promise<void> {
  const calls = Number(process.argv[2] ?? 300_000);
  const concurrency = Number(process.argv[3] ?? 500);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-stress-wait-'));
  const helperSock = path.join(dir, 'helper.sock');
  const agentSock = path.join(dir, 'agent.sock');
  const children: ChildProcess[] = [];
  try {
    const helper = spawn(process.execPath, [path.join(root, 'bin', 'kata-agent-helper'), '--mock', '--socket', helperSock, '--log-level', 'warn'], { stdio: 'ignore' });
    children.push(helper);
    await waitFor(() => fs.existsSync(helperSock), 10_000);
    const control = spawn(
      process.execPath,
      ['--max-old-space-size=128', path.join(root, 'bin', 'kata-agent'), '--server-address', `unix://${agentSock}`, '--helper-socket', helperSock, '--debug-addr', '', '--log-level', 'warn'],
      { stdio: 'ignore' },
    );
    children.push(control);
    await waitFor(() => fs.existsSync(agentSock), 10_000);
    const client = await TtrpcClient.connect(`unix://${agentSock}`);
    const call = async <K extends MethodName>(name: K, req: RequestOf<K>, timeoutNs?: number): Promise<ResponseOf<K>> => {
      const spec = METHODS[name] as unknown as MethodSpec<object, object, object, object>;
      const reply = await client.call(spec.service, spec.method, spec.request.encode(req).finish(), { timeoutNs });
      return spec.response.decode(reply) as ResponseOf<K>;
    };
    await call('CreateSandbox', { hostname: 'stress', sandbox_id: 'stress-1' });
    await call('CreateContainer', {
      container_id: 'long',
      OCI: {
        Version: '1.0.2',
        Root: { Path: '/run/kata-test/rootfs' },
        Process: { Args: ['sleep', '100000'], Env: ['PATH=/usr/bin:/bin'], Cwd: '/' },
        Linux: { Namespaces: [{ Type: 'mount' }, { Type: 'ipc' }, { Type: 'uts' }, { Type: 'pid' }] },
      },
    });
    await call('StartContainer', { container_id: 'long' });
    const gc = (): Promise<void> => new Promise((r) => setTimeout(r, 2000));
    await gc();
    const before = rssMiB(control.pid!);
    let peak = before;
    let deadlines = 0;
    let other = 0;
    const started = Date.now();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < calls && control.exitCode === null && control.signalCode === null) {
        next++;
        try {
          await call('WaitProcess', { container_id: 'long', exec_id: '' }, 1e6); // 1 ms deadline
          other++;
        } catch (err) {
          if (err instanceof StatusError && err.code === 4) deadlines++;
          else other++;
        }
        if (next % 20_000 === 0) peak = Math.max(peak, rssMiB(control.pid!));
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    const seconds = (Date.now() - started) / 1000;
    await gc();
    const alive = control.exitCode === null && control.signalCode === null;
    const after = alive ? rssMiB(control.pid!) : NaN;
    if (alive) peak = Math.max(peak, after);
    if (alive) await call('RemoveContainer', { container_id: 'long', timeout: 5 }).catch(() => undefined);
    await client.close();
    const out = {
      calls,
      concurrency,
      deadlineExceeded: deadlines,
      otherOutcomes: other,
      seconds: Number(seconds.toFixed(1)),
      controlRssMiB: { before: Number(before.toFixed(1)), peak: Number(peak.toFixed(1)), after: Number(after.toFixed(1)) },
      controlAlive: alive,
      under200MiB: alive && peak < 200,
    };
    console.log(JSON.stringify(out, null, 2));
    if (!alive) process.exitCode = 1;
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 500));
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
