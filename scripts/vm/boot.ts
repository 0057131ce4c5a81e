/**
 * The VM lane (host side), booting: boots a QEMU (TCG) guest whose PID 1 is this agent in init mode,
 * from this machine's root shared read-only over 9p, and drives it:
 *
 * - the agent's ttRPC over a virtio-serial port (`serial://agent.channel.0` in the guest,
 *   QEMU's chardev unix socket `agent.sock` here) with the project's own ttRPC client;
 * - QMP (`qmp.sock`) for hot-plug;
 * - the agent's debug console (`agent.debug_console`, port `agent.debug.0`, `debug.sock` here)
 *   for looking inside the guest ({@link VmLane.guestRun});
 * - a writable 9p share of the run directory's `shared/` with mount tag `kataShared`, the
 *   runtime's sandbox share (kata_agent.go mounts it by a CreateSandbox storage on
 *   /run/kata-containers/shared/containers/).
 *
 * The test-facing module is scripts/vm/lane.ts (test/vm/lib/lane.ts contract).
 * Every boot is a guest of its own (a DestroySandbox powers it off).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { AgentClient } from '../../control/ctl/client';
import { TtrpcClient } from '../../control/ttrpc/client';
import { BRIDGE_ID } from '../../test/vm/lib/lane';

/** Project root (this file is dist/scripts/vm/lane.js once compiled). */
export const PROJECT_ROOT = path.resolve(__dirname, '..', '..', '..');
/** Where the kernel and initramfs are cached. */
export const VM_CACHE = path.join(PROJECT_ROOT, '.cache', 'vm');
/** The mount tag of the sandbox share, as the Go runtime names it (kata_agent.go mountGuestTag). */
export const SHARED_TAG = 'kataShared';
/** agent.hotplug_timeout on the guest's kernel command line, in seconds. */
export const HOTPLUG_TIMEOUT_S = 5;
/** How long boot + agent start may take before {@link bootVm} gives up, in ms (TCG is ~50x slower). */
export const BOOT_TIMEOUT_MS = 240_000;

/** Milestones of a boot, in ms since QEMU was started. */
export interface BootTimes {
  /** The agent's init mode logged its early mounts (kernel + initramfs + Node start as PID 1). */
  initMs: number;
  /** The control plane logged "announce" (serving on the serial port). */
  announceMs: number;
  /** The first Health.Check answered SERVING over the serial channel. */
  healthMs: number;
}

/** A booted guest. */
export interface RunningVm {
  qemu: ChildProcess;
  dir: string;
  consoleLog: string;
  agentSocket: string;
  qmpSocket: string;
  debugSocket: string;
  /** Host side of the `kataShared` 9p share (`<dir>/shared`). */
  sharedDir: string;
  agent: AgentClient;
  times: BootTimes;
  /** Resolves with QEMU's exit code once it exited. */
  exited: Promise<number | null>;
  /** Stop QEMU (SIGTERM, SIGKILL after 5 s) and remove the run directory unless `keep` or $KATA_VM_KEEP is set. */
  stop(keep?: boolean): Promise<void>;
}

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} failed (${r.status ?? r.signal}): ${r.stderr || r.stdout}`);
}

/** Fetch the kernel and build the initramfs when missing or older than their scripts. */
export function prepareImages(): { kernel: string; initrd: string } {
  const kernel = path.join(VM_CACHE, 'kernel', 'vmlinux');
  const initrd = path.join(VM_CACHE, 'initrd.cpio.gz');
  run(path.join(PROJECT_ROOT, 'scripts', 'vm', 'fetch-kernel'), []);
  const mtime = (f: string): number => (fs.existsSync(f) ? fs.statSync(f).mtimeMs : 0);
  const inputs = ['make-initramfs', 'init.sh'].map((f) => mtime(path.join(PROJECT_ROOT, 'scripts', 'vm', f)));
  if (mtime(initrd) < Math.max(...inputs)) run(path.join(PROJECT_ROOT, 'scripts', 'vm', 'make-initramfs'), []);
  return { kernel, initrd };
}

/** QEMU's argv for a lane guest (see docs/ARCHITECTURE.md "VM lane"). */
export function qemuArgs(kernel: string, initrd: string, dir: string): string[] {
  // agent.hotplug_timeout: 5 s rather than 3 (TCG on a loaded machine); hotplug.test checks it applies.
  const append = ['console=ttyS0', 'panic=-1', 'quiet', 'agent.debug_console', `agent.hotplug_timeout=${HOTPLUG_TIMEOUT_S}`, `KATA_AGENT_ROOT=${PROJECT_ROOT}`, `KATA_NODE=${process.execPath}`];
  return [
    '-accel', 'tcg', '-cpu', 'max', '-m', '1G,slots=4,maxmem=4G', '-smp', '1,maxcpus=2',
    '-nodefaults', '-display', 'none', '-serial', 'stdio', '-no-reboot',
    '-kernel', kernel, '-initrd', initrd, '-append', append.join(' '),
    '-device', `pci-bridge,id=${BRIDGE_ID},chassis_nr=1,bus=pci.0,addr=0x2`,
    '-virtfs', 'local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap',
    // The sandbox share, as the runtime's QEMU gets it (qemu.go: virtio-9p, security_model=none).
    '-virtfs', `local,path=${path.join(dir, 'shared')},mount_tag=${SHARED_TAG},security_model=none,multidevs=remap`,
    '-device', 'virtio-serial-pci,id=vser0',
    '-chardev', `socket,id=agentch,path=${path.join(dir, 'agent.sock')},server=on,wait=off`,
    '-device', 'virtserialport,chardev=agentch,name=agent.channel.0',
    '-chardev', `socket,id=debugch,path=${path.join(dir, 'debug.sock')},server=on,wait=off`,
    '-device', 'virtserialport,chardev=debugch,name=agent.debug.0',
    '-qmp', `unix:${path.join(dir, 'qmp.sock')},server=on,wait=off`,
  ];
}

function connectUnix(socketPath: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection({ path: socketPath });
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/** Connect the project's ttRPC client to the agent through QEMU's chardev socket. */
export async function connectAgent(agentSocket: string): Promise<AgentClient> {
  const socket = await connectUnix(agentSocket);
  return AgentClient.fromTtrpc(TtrpcClient.fromStream(socket));
}

/**
 * Boot a guest (see the module comment). Resolves once Health.Check answered SERVING; rejects
 * (with the console's tail) when QEMU exits first or {@link BOOT_TIMEOUT_MS} passes.
 */
export async function bootVm(): Promise<RunningVm> {
  const { kernel, initrd } = prepareImages();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-vm-'));
  const consoleLog = path.join(dir, 'console.log');
  fs.mkdirSync(path.join(dir, 'shared'));
  const out = fs.openSync(consoleLog, 'a');
  const t0 = Date.now();
  const qemu = spawn('qemu-system-x86_64', qemuArgs(kernel, initrd, dir), { stdio: ['ignore', out, out] });
  fs.closeSync(out);
  const exited = new Promise<number | null>((resolve) => qemu.once('exit', (code) => resolve(code)));
  let qemuDone = false;
  void exited.then(() => (qemuDone = true));
  const consoleText = (): string => {
    try {
      return fs.readFileSync(consoleLog, 'utf8');
    } catch {
      return '';
    }
  };
  const fail = (why: string): Error => new Error(`VM lane: ${why}; console (${consoleLog}):\n${consoleText().split('\n').slice(-30).join('\n')}`);
  const stop = async (keep = false): Promise<void> => {
    if (!qemuDone) {
      qemu.kill('SIGTERM');
      const timer = setTimeout(() => qemu.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    if (!keep && !process.env.KATA_VM_KEEP) fs.rmSync(dir, { recursive: true, force: true });
  };
  const deadline = t0 + BOOT_TIMEOUT_MS;
  let initMs = -1;
  for (;;) {
    const text = consoleText();
    if (initMs < 0 && text.includes('init: early mounts done')) initMs = Date.now() - t0;
    if (text.includes('"msg":"announce"')) break;
    if (qemuDone) throw fail('QEMU exited before the agent served');
    if (Date.now() > deadline) {
      await stop(true);
      throw fail(`the agent did not announce within ${BOOT_TIMEOUT_MS} ms`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const announceMs = Date.now() - t0;
  const agent = await connectAgent(path.join(dir, 'agent.sock'));
  const health = await agent.call('Check', { service: '' }, { timeoutNs: 60e9 });
  if (health.status !== 1) {
    await stop(true);
    throw fail(`Health.Check answered status ${health.status}, not SERVING (1)`);
  }
  const healthMs = Date.now() - t0;
  return {
    qemu,
    dir,
    consoleLog,
    agentSocket: path.join(dir, 'agent.sock'),
    qmpSocket: path.join(dir, 'qmp.sock'),
    debugSocket: path.join(dir, 'debug.sock'),
    sharedDir: path.join(dir, 'shared'),
    agent,
    times: { initMs, announceMs, healthMs },
    exited,
    stop,
  };
}
