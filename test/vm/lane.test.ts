// The VM lane itself (scripts/vm/): a QEMU guest whose PID 1 is this agent (init mode), driven
// over the serial ttRPC channel. Run by `npm run test:vm` (scripts/vm/run-tests); skipped
// unless $KATA_VM_LANE names the lane module (dist/scripts/vm/lane.js).
//   1. boot → Health.Check SERVING over the serial channel; the agent is PID 1 of the guest;
//   2. the host reconnects to the port: a new ttRPC connection is served (the port reopened);
//   3. CreateSandbox with the runtime's sandbox share as kata_agent.go sends it for 9p (driver
//      "9p", source "kataShared", mount point /run/kata-containers/shared/containers/): mounted;
//      a busybox container through the full ttRPC sequence (CreateContainer, StartContainer,
//      ReadStdout, WaitProcess, ExecProcess, RemoveContainer);
//   4. a container whose rootfs and a file bind mount come from that share (as the runtime lays
//      them out: <id>/rootfs, <id>-<random>-<name>) reads the host's file and writes back;
//   5. DestroySandbox powers the guest off by reboot(2) (QEMU exits by itself).
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { VM_LANE_SKIP } from './lib/lane';
import { hostRootfs, type BootedLane } from '../../scripts/vm/lane';
import { connectAgent, SHARED_TAG } from '../../scripts/vm/boot';

const ENV = ['PATH=/bin:/usr/bin'];
/** Where the runtime mounts its sandbox share in the guest (kata_agent.go kataGuestSharedDir()). */
const GUEST_SHARED = '/run/kata-containers/shared/containers/';
/** The sandbox share storage as kata_agent.go sends it for 9p (sharedDir9pOptions + msize, default Msize9p 8192). */
const SHARED_STORAGE = {
  driver: '9p',
  source: SHARED_TAG,
  mount_point: GUEST_SHARED,
  fstype: '9p',
  options: ['trans=virtio,version=9p2000.L,cache=mmap', 'nodev', 'msize=8192'],
};

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
    t.match(argv[1] ?? '', /bin\/kata-agent$/, `PID 1 runs the agent (${argv.slice(0, 3).join(' ')})`);
    const mounts = (await lane.guestRun(['cat', '/proc/mounts'])).stdout;
    const details = await lane.agent.call('GetGuestDetails', { mem_block_size: true });
    t.equal(details.agent_details?.init_daemon, true, 'GetGuestDetails: init_daemon (the agent is PID 1)');
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

  /** CreateContainer `id` (exec id the same) running `sh -c script` as root on `rootfs`, /proc mounted, plus `mounts`. */
  const createBusybox = (id: string, script: string, rootfs: string, mounts: { destination: string; type: string; source: string; options: string[] }[] = []): Promise<unknown> =>
    lane.agent.call('CreateContainer', {
      container_id: id,
      exec_id: id,
      OCI: {
        Version: '1.1.0',
        Process: { Args: ['sh', '-c', script], Env: ENV, Cwd: '/', User: { UID: 0, GID: 0 } },
        Root: { Path: rootfs, Readonly: false },
        Mounts: [{ destination: '/proc', type: 'proc', source: 'proc', options: [] }, ...mounts],
        Linux: { Namespaces: [{ Type: 'mount' }, { Type: 'uts' }, { Type: 'ipc' }] },
      },
    });
  const sandboxId = `vm-lane-${process.pid}`;
  await timed('CreateSandbox mounts the kataShared 9p share; a busybox container through ttRPC in the guest', async (t) => {
    await lane.agent.call('CreateSandbox', { sandbox_id: sandboxId, hostname: 'vm-lane', sandbox_pidns: false, storages: [SHARED_STORAGE], dns: [] });
    const mounts = (await lane.guestRun(['cat', '/proc/mounts'])).stdout;
    t.match(mounts, new RegExp(`^${SHARED_TAG} ${GUEST_SHARED.slice(0, -1)} 9p .*trans=virtio`, 'm'), 'kataShared is mounted by 9p on the shared directory');
    const id = 'bb1';
    await createBusybox(id, 'echo hello-from-$(hostname); read line; echo got-$line', lane.guestRootfs);
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

  await timed('a container whose rootfs and a bind mount come from the kataShared share', async (t) => {
    // The runtime's layout in the share: <id>/rootfs (a bind of the image's rootfs on the host;
    // a copy here) and <id>-<random>-<name> for each file mount.
    const id = 'shared1';
    const host = lane.vm.sharedDir;
    fs.mkdirSync(path.join(host, id, 'rootfs'), { recursive: true });
    const cp = spawnSync('cp', ['-a', `${hostRootfs()}/.`, path.join(host, id, 'rootfs')], { encoding: 'utf8' });
    t.equal(cp.status, 0, `rootfs copied into the share on the host ${cp.stderr}`);
    const mountFile = `${id}-0123456789abcdef-hello.txt`;
    fs.writeFileSync(path.join(host, mountFile), `written-on-the-host-${process.pid}\n`);
    await createBusybox(id, 'cat /etc/hello.txt && echo from-the-container > /written-in-guest', `${GUEST_SHARED}${id}/rootfs`, [
      { destination: '/etc/hello.txt', type: 'bind', source: `${GUEST_SHARED}${mountFile}`, options: ['rbind', 'ro'] },
    ]);
    await lane.agent.call('StartContainer', { container_id: id });
    const out = await lane.agent.call('ReadStdout', { container_id: id, exec_id: id, len: 4096 });
    t.equal(Buffer.from(out.data).toString(), `written-on-the-host-${process.pid}\n`, 'the container read the host file through the share');
    const wait = await lane.agent.call('WaitProcess', { container_id: id, exec_id: id });
    t.equal(wait.status, 0, 'the container exited 0');
    t.equal(fs.readFileSync(path.join(host, id, 'rootfs', 'written-in-guest'), 'utf8'), 'from-the-container\n', 'its write to the rootfs reached the host directory');
    await lane.agent.call('RemoveContainer', { container_id: id, timeout: 0 });
  });

  await timed('PID 1 starts a new control plane after a SIGKILL; it adopts the running container, no line lost', async (t) => {
    const id = 'restart1';
    await createBusybox(id, 'i=0; while :; do echo line $i; i=$((i+1)); sleep 0.1; done', lane.guestRootfs);
    await lane.agent.call('StartContainer', { container_id: id });
    let text = Buffer.from((await lane.agent.call('ReadStdout', { container_id: id, exec_id: id, len: 64 })).data).toString();
    // The control plane is PID 1's child running bin/kata-agent (PID 1 runs the agent too); the helper runs bin/kata-agent-helper.
    const found = await lane.guestRun(['pgrep', '-P', '1', '-f', 'bin/kata-agent( |$)']);
    const pids = found.stdout.trim().split(/\s+/).filter(Boolean);
    t.equal(pids.length, 1, `one control plane (${found.stdout.trim()})`);
    t.equal((await lane.guestRun(['kill', '-9', pids[0]])).status, 0, `control plane ${pids[0]} SIGKILLed`);
    // Reconnect as the runtime does after a lost agent connection: a new connection and a health
    // check with a short deadline, again until one answers (bytes the host sends before the new
    // control plane opened the port are not delivered to it).
    type Closable = Partial<Pick<Awaited<ReturnType<typeof connectAgent>>, 'close'>>;
    await (lane.agent as Closable).close?.().catch(() => undefined);
    let status: number | undefined;
    for (let attempt = 1; attempt <= 30 && status === undefined; attempt++) {
      const client = await connectAgent(lane.vm.agentSocket);
      try {
        status = (await client.call('Check', { service: '' }, { timeoutNs: 5e9 })).status ?? undefined;
        lane.agent = client;
        t.comment(`SERVING again at attempt ${attempt}`);
      } catch {
        await client.close().catch(() => undefined);
      }
    }
    t.equal(status, 1, 'SERVING again');
    const again = await lane.guestRun(['pgrep', '-P', '1', '-f', 'bin/kata-agent( |$)']);
    t.notSame(again.stdout.trim(), pids[0], `a new control plane (${again.stdout.trim()})`);
    while (!/line 20\n/.test(text)) {
      text += Buffer.from((await lane.agent.call('ReadStdout', { container_id: id, exec_id: id, len: 4096 })).data).toString();
    }
    const numbers = [...text.matchAll(/line (\d+)/g)].map((m) => Number(m[1]));
    t.same(numbers, numbers.map((_, i) => i), `every line once, in order, across the restart (${numbers.length} lines)`);
    await lane.agent.call('SignalProcess', { container_id: id, exec_id: id, signal: 9 });
    const wait = await lane.agent.call('WaitProcess', { container_id: id, exec_id: id });
    t.equal(wait.status, 137, 'the adopted container is waited for (SIGKILL: 137)');
    await lane.agent.call('RemoveContainer', { container_id: id, timeout: 0 });
  });

  await timed('DestroySandbox powers the guest off', async (t) => {
    await lane.agent.call('DestroySandbox', {});
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([lane.vm.exited, new Promise<string>((r) => (timer = setTimeout(() => r('still running after 120 s'), 120_000)))]);
    clearTimeout(timer);
    t.equal(code, 0, 'QEMU exited 0 by itself (the guest powered off; -no-reboot)');
    const console = fs.readFileSync(lane.vm.consoleLog, 'utf8');
    t.match(console, /init: powering off/, 'init mode logged the power-off');
    t.match(console, /"why":"sandbox destroyed"/, 'because the sandbox was destroyed');
    t.notMatch(console, /reboot\(RB_POWER_OFF\) failed/, 'by the addon\'s reboot(2), not the busybox fallback');
  });
}

main().catch((err: unknown) => {
  t.fail(`VM lane: ${(err as Error).stack ?? String(err)}`);
});
