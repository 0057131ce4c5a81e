/**
 * The VM lane module for the tests (contract: test/vm/lib/lane.ts): `KATA_VM_LANE=<this file
 * compiled, dist/scripts/vm/lane.js>`. {@link connect} boots a guest of its own (scripts/vm/boot.ts;
 * a DestroySandbox powers it off, so guests are not shared between test files) and gives the
 * agent client (ttRPC over the serial channel), QMP, the debug console as `guestRun`, a host
 * directory for disk images, the host side of the guest's `kataShared` 9p share (vm.sharedDir)
 * and a writable busybox rootfs in the guest (an overlay on the project's .cache/rootfs, seen
 * read-only through 9p, outside /run/kata-containers/shared/containers/ so that a kataShared
 * storage mounted there does not hide it). close() stops QEMU if it still runs.
 *
 * CLI: `node dist/scripts/vm/lane.js` boots, checks health, lets go of its own connections
 * (each socket takes one client), prints the timings, run directory and sockets as JSON (and
 * example commands on stderr) and keeps the guest up until SIGINT/SIGTERM.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { AgentClient } from '../../control/ctl/client';
import type { VmLane } from '../../test/vm/lib/lane';
import { bootVm, PROJECT_ROOT, type RunningVm } from './boot';
import { DebugConsole } from './debug-console';
import { QmpClient } from './qmp';

/** A lane plus what the lane's own tests look at. */
export interface BootedLane extends VmLane {
  vm: RunningVm;
  debug: DebugConsole;
  qmpClient: QmpClient;
}

/** The project's busybox rootfs (scripts/make-rootfs), built when missing. */
export function hostRootfs(): string {
  const dir = path.join(PROJECT_ROOT, '.cache', 'rootfs');
  if (!fs.existsSync(path.join(dir, 'bin', 'busybox'))) {
    const r = spawnSync(path.join(PROJECT_ROOT, 'scripts', 'make-rootfs'), [dir], { stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`make-rootfs failed (${r.status})`);
  }
  return dir;
}

/** Where the lane puts the writable rootfs in the guest. */
export const GUEST_ROOTFS_BASE = '/run/kata-lane/busybox';

/** Boot a guest and connect everything (see the module comment). Errors as {@link bootVm}. */
export async function connect(): Promise<BootedLane> {
  const lower = hostRootfs();
  const vm = await bootVm();
  const hostDir = path.join(vm.dir, 'host');
  fs.mkdirSync(hostDir);
  let debug: DebugConsole | undefined;
  let qmpClient: QmpClient | undefined;
  try {
    debug = await DebugConsole.connect(vm.debugSocket);
    qmpClient = await QmpClient.connect(vm.qmpSocket);
    const b = GUEST_ROOTFS_BASE;
    const ov = await debug.run(['sh', '-c',
      `mkdir -p ${b}/upper ${b}/work ${b}/rootfs && mount -t overlay -o lowerdir=${lower},upperdir=${b}/upper,workdir=${b}/work overlay ${b}/rootfs`]);
    const guestRootfs = ov.status === 0 ? `${b}/rootfs` : lower;
    const d = debug;
    const q = qmpClient;
    const lane: BootedLane = {
      vm,
      debug: d,
      qmpClient: q,
      agent: vm.agent,
      qmp: q,
      guestRootfs,
      hostDir,
      guestRun: (argv) => d.run(argv),
      async close() {
        d.close();
        q.close();
        const current = lane.agent as Partial<Pick<AgentClient, 'close'>>;
        if (current !== vm.agent) await current.close?.().catch(() => undefined);
        await vm.agent.close().catch(() => undefined);
        await vm.stop();
      },
    };
    return lane;
  } catch (err) {
    debug?.close();
    qmpClient?.close();
    await vm.stop();
    throw err;
  }
}

if (require.main === module) {
  connect().then(
    async (lane) => {
      // QEMU's chardev and QMP sockets serve one client at a time: let go of ours so that
      // kata-agent-ctl, a QMP client and a shell on the debug console can connect.
      await lane.vm.agent.close().catch(() => undefined);
      lane.debug.close();
      lane.qmpClient.close();
      const v = lane.vm;
      process.stdout.write(`${JSON.stringify({ times: v.times, dir: v.dir, guestRootfs: lane.guestRootfs, agentSocket: v.agentSocket, qmpSocket: v.qmpSocket, debugSocket: v.debugSocket, sharedDir: v.sharedDir })}\n`);
      process.stderr.write(`guest up; ctrl-C stops it. Try:\n  bin/kata-agent-ctl connect --server-address unix://${v.agentSocket} -c Check\n  socat - UNIX-CONNECT:${v.debugSocket}   (a root shell in the guest)\n  socat - UNIX-CONNECT:${v.qmpSocket}     (QMP; send {"execute":"qmp_capabilities"} first)\n`);
      const stop = (): void => void lane.close().then(() => process.exit(0));
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    },
    (err: unknown) => {
      process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
