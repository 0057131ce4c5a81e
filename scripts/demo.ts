/**
 * The main job (`npm start`): a real busybox container through the agent, stand-alone.
 *
 * 1. builds a busybox rootfs (scripts/make-rootfs → .cache/rootfs);
 * 2. starts the helper (root) and the control plane (unprivileged) on unix sockets;
 * 3. over the ttRPC API, as the Kata runtime would: Health.Check, CreateSandbox (hostname
 *    "kata-demo"), CreateContainer + StartContainer of a container that prints a greeting and
 *    its hostname, ReadStdout/ReadStderr until EOF (shown on this terminal), WaitProcess,
 *    RemoveContainer, DestroySandbox;
 * 4. stops both processes and exits with the container's exit status.
 *
 * Environment: KATA_DEMO_LOG_LEVEL (default "info") for the agent's logs, which go to files in
 * the run directory printed at the end.
 */
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AgentClient } from '../control/ctl/client';
import { ociJsonToSpec } from '../control/ctl/oci-json';
import { PROJECT_ROOT, busyboxConfig, startStandaloneAgent, tail, type StandaloneAgent } from './lib/standalone';

const say = (line: string): void => {
  process.stdout.write(`\x1b[1m[demo]\x1b[0m ${line}\n`);
};

async function drain(agent: AgentClient, method: 'ReadStdout' | 'ReadStderr', cid: string, sink: NodeJS.WriteStream): Promise<number> {
  let total = 0;
  for (;;) {
    try {
      const { data } = await agent.call(method, { container_id: cid, exec_id: cid, len: 64 * 1024 });
      total += data.length;
      sink.write(Buffer.from(data));
    } catch (err) {
      // The agent ends a stream with an error status (upstream: "read meet eof"; ours: OUT_OF_RANGE "EOF").
      if ((err as { code?: number }).code === 11) return total;
      throw err;
    }
  }
}

async function main(): Promise<number> {
  if (process.getuid && process.getuid() !== 0) {
    console.error('npm start needs root: the helper creates namespaces and mounts (run it as root in this VM).');
    return 1;
  }
  const rootfs = path.join(PROJECT_ROOT, '.cache', 'rootfs');
  say(`building a busybox rootfs in ${rootfs}`);
  execFileSync(path.join(PROJECT_ROOT, 'scripts', 'make-rootfs'), [rootfs], { stdio: ['ignore', 'ignore', 'inherit'] });

  let standalone: StandaloneAgent | undefined;
  let client: AgentClient | undefined;
  try {
    standalone = await startStandaloneAgent({ logLevel: process.env.KATA_DEMO_LOG_LEVEL ?? 'info' });
    say(`helper pid ${standalone.helper.pid} (root), control plane pid ${standalone.control.pid} (${standalone.controlUser})`);
    say(`agent listening on ${standalone.address}`);

    client = await AgentClient.connect(standalone.address);
    const health = await client.callObject('Check', { service: '' });
    const version = await client.callObject('Version', { service: '' });
    say(`Health.Check: ${String(health.status)}; agent version ${String(version.agent_version)}, API ${String(version.grpc_version)}`);

    const sandboxId = crypto.randomBytes(32).toString('hex');
    await client.call('CreateSandbox', { sandbox_id: sandboxId, hostname: 'kata-demo' });
    say(`CreateSandbox ${sandboxId.slice(0, 12)}… hostname kata-demo`);

    const cid = `demo-${crypto.randomBytes(4).toString('hex')}`;
    const config = busyboxConfig(rootfs, [
      'sh',
      '-c',
      'echo "Hello from a Kata container, run by kata-agent-ts!"; echo "hostname: $(hostname)"; echo "pid in container: $$"; echo "kernel: $(uname -sr)"',
    ]);
    const spec = ociJsonToSpec(config, rootfs);
    await client.call('CreateContainer', { container_id: cid, exec_id: cid, OCI: spec });
    say(`CreateContainer ${cid}`);
    await client.call('StartContainer', { container_id: cid });
    say('StartContainer; container output follows');
    process.stdout.write('----------------------------------------------------------------\n');
    await Promise.all([drain(client, 'ReadStdout', cid, process.stdout), drain(client, 'ReadStderr', cid, process.stderr)]);
    process.stdout.write('----------------------------------------------------------------\n');
    const { status } = await client.call('WaitProcess', { container_id: cid, exec_id: cid });
    say(`WaitProcess: exit status ${status}`);

    if (standalone.debugUrl) {
      try {
        const res = await fetch(`${standalone.debugUrl}/v1/sandbox`);
        say(`debug endpoint ${standalone.debugUrl}/v1/sandbox → ${JSON.stringify(await res.json())}`);
      } catch (err) {
        say(`debug endpoint not reachable: ${(err as Error).message}`);
      }
    }

    await client.call('RemoveContainer', { container_id: cid, timeout: 10 });
    say(`RemoveContainer ${cid}`);
    await client.call('DestroySandbox', {});
    say('DestroySandbox');
    await client.close();
    client = undefined;
    const codes = await standalone.stop();
    // The run directory (sockets, state, logs) is a fresh /tmp/kata-agent-XXXXXX: removed after a
    // clean run, kept after a failure (or with KATA_DEMO_KEEP=1) for its logs.
    if (process.env.KATA_DEMO_KEEP === '1') {
      say(`agent stopped (control exit ${codes.control}, helper exit ${codes.helper}); logs kept in ${standalone.runDir}`);
    } else {
      fs.rmSync(standalone.runDir, { recursive: true, force: true });
      say(`agent stopped (control exit ${codes.control}, helper exit ${codes.helper}); removed ${standalone.runDir} (KATA_DEMO_KEEP=1 keeps its logs)`);
    }
    say(`container exit status ${status}`);
    return status;
  } catch (err) {
    console.error(`demo failed: ${(err as Error).message}`);
    if (standalone) {
      console.error(`logs kept in ${standalone.runDir}`);
      console.error(`--- control log (${standalone.controlLog}) ---\n${tail(standalone.controlLog)}`);
      console.error(`--- helper log (${standalone.helperLog}) ---\n${tail(standalone.helperLog)}`);
    }
    return 1;
  } finally {
    if (client) await client.close().catch(() => undefined);
    if (standalone) await standalone.stop(5000).catch(() => undefined);
  }
}

/** Exit once stdout has drained (it may be a non-blocking pipe; process.exit would drop output). */
function exitAfterFlush(code: number): void {
  process.stdout.write('', () => process.exit(code));
}

main().then(exitAfterFlush, (err: unknown) => {
  console.error(err);
  exitAfterFlush(1);
});
