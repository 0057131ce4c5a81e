/**
 * Start-up and idle memory: from spawning the helper and the control plane together (as an
 * init system would) to the first Health.Check answering SERVING, polled every 2 ms on a fresh
 * connection, with the debug endpoint on a unix socket as in a guest; then, after 2 s idle, the
 * PSS and USS of each process. References in the same run: Node
 * starting an empty script (the floor of one Node process) and the Go ttrpc server's start to
 * its first Check.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AgentClient } from '../control/ctl/client';
import { agentEnv, startStandaloneAgent } from '../scripts/lib/standalone';
import { goClient, startGoServer } from './go-ref';
import { check, median, now, processesRunning, progress, progressDone, pssBytes, rotated, run, since, ussBytes, type Target } from './lib';

export interface StartupResult {
  /** ms from spawn to SERVING, per round. */
  servingMs: number[];
  /** ms for `node -e 0` to exit, per round. */
  nodeEmptyMs: number[];
  /** ms from spawning the Go server to its first answered Check, per round. */
  goServingMs: number[];
  /** Idle PSS in bytes, per round. */
  helperPss: number[];
  controlPss: number[];
  /** Idle USS (private memory) in bytes, per round. */
  helperUss: number[];
  controlUss: number[];
  /** Node processes on the machine when the PSS was read (they share Node's text pages), per round. */
  nodeProcesses: number[];
  targets: Target[];
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll a Check on a new connection to `address` every 2 ms until it answers SERVING (status 1). */
async function untilServing(address: string, deadlineMs: number): Promise<void> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    try {
      const c = await AgentClient.connect(address);
      try {
        const r = await c.call('Check', { service: '' });
        if (r.status === 1) return;
      } finally {
        await c.close();
      }
    } catch {
      /* not up yet */
    }
    if (Date.now() > end) throw new Error(`${address} did not answer SERVING within ${deadlineMs} ms`);
    await sleep(2);
  }
}

/** Run `rounds` start-ups of a fresh agent (runDir under `work`), interleaved with the references. */
export async function startup(work: string, goBin: string | undefined, rounds: number): Promise<StartupResult> {
  const r: StartupResult = {
    servingMs: [], nodeEmptyMs: [], goServingMs: [], helperPss: [], controlPss: [], helperUss: [], controlUss: [], nodeProcesses: [], targets: [],
  };
  // One untimed start first: the launcher's own once-per-process probe (can uid 65534 read the
  // code? a Node process of ~100 ms) is no part of the agent's start-up, and the files get cached.
  const warm = await startStandaloneAgent({ logLevel: 'info', debug: false, runDir: path.join(work, 'startup-warm'), together: true });
  await warm.stop();
  fs.rmSync(warm.runDir, { recursive: true, force: true });
  for (let i = 0; i < rounds; i++) {
    progress(`start-up: round ${i + 1}/${rounds}`);
    await rotated(i, [
      async () => {
        const runDir = path.join(work, `startup-${i}`);
        const address = `unix://${path.join(runDir, 'control', 'agent.sock')}`;
        const t0 = now();
        // The debug endpoint on a unix socket, as a guest has it by default (bound at start,
        // built on first use: control/debug/lazy.ts).
        const started = startStandaloneAgent({ logLevel: 'info', debugAddr: `unix://${path.join(runDir, 'control', 'debug.sock')}`, runDir, together: true });
        await untilServing(address, 20_000);
        r.servingMs.push(since(t0));
        const agent = await started;
        await sleep(2000);
        r.helperPss.push(pssBytes(agent.helper.pid ?? -1));
        r.controlPss.push(pssBytes(agent.control.pid ?? -1));
        r.helperUss.push(ussBytes(agent.helper.pid ?? -1));
        r.controlUss.push(ussBytes(agent.control.pid ?? -1));
        r.nodeProcesses.push(processesRunning(process.execPath));
        await agent.stop();
        fs.rmSync(runDir, { recursive: true, force: true });
      },
      async () => {
        const t0 = now();
        // In the environment the agent's processes get (no NODE_EXTRA_CA_CERTS: see agentEnv).
        check('node -e 0', await run(process.execPath, ['-e', '0'], agentEnv()));
        r.nodeEmptyMs.push(since(t0));
      },
      async () => {
        if (!goBin) return;
        const sock = path.join(work, `go-startup-${i}.sock`);
        const t0 = now();
        const child = await startGoServer(goBin, sock);
        await goClient(goBin, ['check', sock, '1', '1']);
        r.goServingMs.push(since(t0));
        child.kill('SIGKILL');
      },
    ]);
  }
  progressDone();
  const serving = median(r.servingMs);
  const pss = median(r.helperPss) + median(r.controlPss);
  r.targets.push({
    target: 'start of both processes to Health.Check SERVING',
    ours: `${serving.toFixed(0)} ms`,
    reference: `node -e 0: ${median(r.nodeEmptyMs).toFixed(0)} ms; Go ttrpc server: ${median(r.goServingMs).toFixed(0)} ms`,
    figure: `${serving.toFixed(0)} ms`,
    goal: '≤ 150 ms',
    met: serving <= 150,
  });
  r.targets.push({
    target: 'idle PSS, helper + control plane',
    ours: `${(median(r.helperPss) / 2 ** 20).toFixed(1)} + ${(median(r.controlPss) / 2 ** 20).toFixed(1)} MiB`,
    // PSS splits Node's shared text among every Node process on the machine: USS and that count say how much is the agent's own.
    reference: `USS ${(median(r.helperUss) / 2 ** 20).toFixed(1)} + ${(median(r.controlUss) / 2 ** 20).toFixed(1)} MiB; ${median(r.nodeProcesses)} node processes`,
    figure: `${(pss / 2 ** 20).toFixed(1)} MiB`,
    goal: '≤ 60 MB',
    met: pss <= 60e6,
  });
  return r;
}
