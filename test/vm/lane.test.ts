// The VM lane itself (scripts/vm/): a QEMU guest whose PID 1 is this agent (init mode), driven
// over the serial ttRPC channel. Run by `npm run test:vm` (scripts/vm/run-tests); skipped
// unless $KATA_VM_LANE names the lane module (dist/scripts/vm/lane.js).
//   1. boot → Health.Check SERVING over the serial channel; the agent is PID 1 of the guest;
//   2. the host reconnects to the port: a new ttRPC connection is served (the port reopened);
//   3. a busybox container through the full ttRPC sequence (CreateSandbox, CreateContainer,
//      StartContainer, ReadStdout, WaitProcess, ExecProcess, RemoveContainer);
//   4. DestroySandbox powers the guest off (QEMU exits by itself).
import t, { type Test } from 'tap';
import { VM_LANE_SKIP } from './lib/lane';
import type { BootedLane } from '../../scripts/vm/lane';
import { connectAgent } from '../../scripts/vm/boot';

const ENV = ['PATH=/bin:/usr/bin'];

async function main(): Promise<void> {
  const mod = process.env.KATA_VM_LANE;
  if (!mod) {
    t.plan(0, VM_LANE_SKIP);
    return;
  }
  const started = Date.now();
  const { connect } = (await import(mod)) as { connect: () => Promise<BootedLane> };
  const lane = await connect();
  t.teardown(() => lane.close());
  t.comment(`boot: init mode at ${lane.vm.times.initMs} ms, agent announced at ${lane.vm.times.announceMs} ms, Health SERVING at ${lane.vm.times.healthMs} ms (connect() took ${Date.now() - started} ms)`);
  const timed = (name: string, fn: (t: Test) => Promise<void>): Promise<unknown> =>
    t.test(name, async (tt) => {
      const t0 = Date.now();
      await fn(tt);
      tt.comment(`${name}: ${Date.now() - t0} ms`);
    });

  await timed('Health.Check SERVING over the serial channel; the agent is PID 1', async (t) => {
    const health = await lane.agent.call('Check', { service: '' });
    t.equal(health.status, 1, 'SERVING');
    const cmdline = await lane.guestRun(['cat', '/proc/1/cmdline']);
    t.equal(cmdline.status, 0);
    const argv = cmdline.stdout.split('\0');
    t.match(argv[1] ?? '', /dist\/control\/main\.js$/, `PID 1 runs the agent (${argv.slice(0, 3).join(' ')})`);
    const mounts = (await lane.guestRun(['cat', '/proc/mounts'])).stdout;
    for (const [target, fstype] of [['/proc', 'proc'], ['/run', 'tmpfs'], ['/tmp', 'tmpfs'], ['/sys/fs/cgroup', 'cgroup2'], ['/dev/pts', 'devpts']]) {
      t.match(mounts, new RegExp(`^\\S+ ${target} ${fstype} `, 'm'), `init mode mounted ${fstype} on ${target}`);
    }
  });

  await timed('a host reconnect gets a new ttRPC connection over the same port', async (t) => {
    // QEMU's chardev takes one client at a time: drop the lane's, then connect anew.
    await lane.vm.agent.close();
    const again = await connectAgent(lane.vm.agentSocket);
    const health = await again.call('Check', { service: '' }, { timeoutNs: 60e9 });
    t.equal(health.status, 1, 'SERVING on the new connection');
    lane.agent = again; // closed by lane.close()
  });

  const sandboxId = `vm-lane-${process.pid}`;
  await timed('a busybox container through ttRPC in the guest', async (t) => {
    await lane.agent.call('CreateSandbox', { sandbox_id: sandboxId, hostname: 'vm-lane', sandbox_pidns: false, storages: [], dns: [] });
    const id = 'bb1';
    await lane.agent.call('CreateContainer', {
      container_id: id,
      exec_id: id,
      OCI: {
        Version: '1.1.0',
        Process: { Args: ['sh', '-c', 'echo hello-from-$(hostname); read line; echo got-$line'], Env: ENV, Cwd: '/', User: { UID: 0, GID: 0 } },
        Root: { Path: lane.guestRootfs, Readonly: false },
        Mounts: [{ destination: '/proc', type: 'proc', source: 'proc', options: [] }],
        Linux: { Namespaces: [{ Type: 'mount' }, { Type: 'uts' }, { Type: 'ipc' }] },
      },
    });
    await lane.agent.call('StartContainer', { container_id: id });
    const first = await lane.agent.call('ReadStdout', { container_id: id, exec_id: id, len: 4096 });
    t.equal(Buffer.from(first.data).toString(), 'hello-from-vm-lane\n', 'the container ran, with the sandbox hostname');
    const exec = await lane.agent.call('ExecProcess', {
      container_id: id,
      exec_id: 'e1',
      process: { Args: ['cat', '/proc/self/status'], Env: ENV, Cwd: '/', User: { UID: 0, GID: 0 } },
    });
    t.ok(exec, 'ExecProcess answered');
    let out = '';
    for (;;) {
      const r = await lane.agent.call('ReadStdout', { container_id: id, exec_id: 'e1', len: 65536 }).catch(() => undefined);
      if (!r || r.data.length === 0) break;
      out += Buffer.from(r.data).toString();
    }
    t.match(out, /^Name:\s+cat$/m, 'the exec ran cat in the container');
    const execWait = await lane.agent.call('WaitProcess', { container_id: id, exec_id: 'e1' });
    t.equal(execWait.status, 0, 'exec exit 0');
    await lane.agent.call('WriteStdin', { container_id: id, exec_id: id, data: Buffer.from('ping\n') });
    const second = await lane.agent.call('ReadStdout', { container_id: id, exec_id: id, len: 4096 });
    t.equal(Buffer.from(second.data).toString(), 'got-ping\n', 'stdin reached the container');
    const wait = await lane.agent.call('WaitProcess', { container_id: id, exec_id: id });
    t.equal(wait.status, 0, 'the container exited 0');
    await lane.agent.call('RemoveContainer', { container_id: id, timeout: 0 });
    const ps = (await lane.guestRun(['ps', '-o', 'args'])).stdout;
    t.notMatch(ps, /echo hello-from/, 'no container process left in the guest');
  });

  await timed('DestroySandbox powers the guest off', async (t) => {
    await lane.agent.call('DestroySandbox', {});
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([lane.vm.exited, new Promise<string>((r) => (timer = setTimeout(() => r('still running after 120 s'), 120_000)))]);
    clearTimeout(timer);
    t.equal(code, 0, 'QEMU exited 0 by itself (the guest powered off; -no-reboot)');
    const fs = await import('node:fs');
    const console = fs.readFileSync(lane.vm.consoleLog, 'utf8');
    t.match(console, /init: powering off/, 'init mode logged the power-off');
    t.match(console, /"why":"sandbox destroyed"/, 'because the sandbox was destroyed');
  });
}

main().catch((err: unknown) => {
  t.fail(`VM lane: ${(err as Error).stack ?? String(err)}`);
});
