/**
 * The mock twin of the guest ops family (helper/ops/sysfs.ts, copy-file.ts, guest.ts): the same
 * classes and validation, acting on things an ordinary user owns.
 *
 * - sysfs: a fake tree in a temp directory ({@link makeFakeSysfs}: 2 CPUs with cpu1 offline, 2
 *   memory blocks with memory1 offline, block size 0x8000000, a probe file), or the tree given.
 * - CopyFile: the real code below a temp root (or the roots given), without chown.
 * - entropy, clock, swap: recorded in {@link MockGuestSystem} instead of done; volume stats are
 *   real statfs calls (unprivileged); resize runs no tool: it reports the mount's fstype.
 * - AddSwap's device wait: the real DeviceWaiter over the fake sysfs, a fake /dev directory
 *   (any file there stands in for a block node) and a {@link UeventHub} tests publish to
 *   ({@link addFakeBlockDevice} makes the sysfs + /dev side of a disk).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { GuestFamily } from '../api';
import { CopyFileOps } from '../ops/copy-file';
import { GuestOps, findMount, guestFamily, type GuestPaths, type GuestSystem } from '../ops/guest';
import { DeviceWaiter } from '../ops/device';
import { DebugConsoleOps } from '../ops/debug-console';
import { getReaper } from '../ops/reaper';
import { loadNative } from '../../shared/native';
import { SysfsOps } from '../ops/sysfs';
import { UeventHub, type Uevent } from '../ops/uevent';

/** What the mock did instead of the system calls. */
export class MockGuestSystem implements GuestSystem {
  readonly entropy: Buffer[] = [];
  readonly clock: Array<{ sec: number; nsec: number }> = [];
  readonly swaps: string[] = [];
  readonly tools: Array<{ tool: string; args: string[] }> = [];

  addEntropy(data: Buffer): void {
    this.entropy.push(Buffer.from(data));
  }
  setRealtime(sec: number, nsec: number): void {
    this.clock.push({ sec, nsec });
  }
  swapon(device: string): void {
    this.swaps.push(device);
  }
  isBlockDevice(p: string): boolean {
    return fs.existsSync(p);
  }
  async runTool(tool: string, args: string[]): Promise<void> {
    this.tools.push({ tool, args });
  }
  mountAt(mountPoint: string): { source: string; fstype: string } | undefined {
    return findMount(mountPoint);
  }
}

/**
 * Write a fake sysfs tree under `root`: devices/system/cpu/{cpu0 (no online file), cpu1..cpuN-1
 * with online files}, devices/system/memory/{block_size_bytes, probe, memory0..}. `offlineCpus`
 * and `offlineMemory` list the entries that read "0". Returns `root`.
 */
export function makeFakeSysfs(
  root: string,
  opts: { cpus?: number; offlineCpus?: number[]; memoryBlocks?: number; offlineMemory?: number[]; blockSize?: string; probe?: boolean } = {},
): string {
  const cpus = opts.cpus ?? 2;
  const offlineCpus = new Set(opts.offlineCpus ?? [1]);
  const blocks = opts.memoryBlocks ?? 2;
  const offlineMemory = new Set(opts.offlineMemory ?? [1]);
  const cpuDir = path.join(root, 'devices/system/cpu');
  const memDir = path.join(root, 'devices/system/memory');
  fs.mkdirSync(cpuDir, { recursive: true });
  fs.mkdirSync(memDir, { recursive: true });
  for (let i = 0; i < cpus; i++) {
    fs.mkdirSync(path.join(cpuDir, `cpu${i}`), { recursive: true });
    if (i > 0) fs.writeFileSync(path.join(cpuDir, `cpu${i}`, 'online'), offlineCpus.has(i) ? '0\n' : '1\n');
  }
  for (let i = 0; i < blocks; i++) {
    fs.mkdirSync(path.join(memDir, `memory${i}`), { recursive: true });
    fs.writeFileSync(path.join(memDir, `memory${i}`, 'online'), offlineMemory.has(i) ? '0\n' : '1\n');
  }
  fs.writeFileSync(path.join(memDir, 'block_size_bytes'), `${opts.blockSize ?? '8000000'}\n`);
  if (opts.probe ?? true) fs.writeFileSync(path.join(memDir, 'probe'), '');
  return root;
}

/** The mock guest family and what a test may inspect. */
export interface MockGuest {
  family: GuestFamily;
  system: MockGuestSystem;
  sysfsRoot: string;
  copyRoots: string[];
  volumeRoots: string[];
  /** The fake /dev directory of the device waiter. */
  devRoot: string;
  /** Uevents the device waiter listens to (publish to simulate a hot-plug). */
  uevents: UeventHub;
  /** The device waiter over the fake sysfs (also the network ops' NIC wait). */
  devices: DeviceWaiter;
  /** Remove the temp trees the mock made. */
  cleanup(): void;
}

/** Create the mock guest family; paths not given are fresh temp trees. */
export function createMockGuest(paths: GuestPaths & { hotplugTimeoutMs?: number; debugConsoleShells?: string[] } = {}): MockGuest {
  const made: string[] = [];
  const temp = (prefix: string): string => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    made.push(d);
    return d;
  };
  const sysfsRoot = paths.sysfsRoot ?? makeFakeSysfs(temp('kata-mock-sysfs-'));
  const copyRoots = paths.copyRoots ?? [path.join(temp('kata-mock-shared-'), 'containers')];
  const volumeRoots = paths.volumeRoots ?? [temp('kata-mock-volumes-')];
  const devRoot = temp('kata-mock-dev-');
  const uevents = new UeventHub();
  const devices = new DeviceWaiter({ uevents, sysfs: sysfsRoot, dev: devRoot, timeoutMs: paths.hotplugTimeoutMs ?? 500 });
  const system = new MockGuestSystem();
  const family = guestFamily(
    new SysfsOps({ root: sysfsRoot, retryWaitMs: 1 }),
    new CopyFileOps({ roots: copyRoots, chown: false }),
    new GuestOps({ system, devices, volumeRoots }),
    // The debug console's twin is the real class, unprivileged: a pty and a shell as this user.
    new DebugConsoleOps({ native: loadNative(), reaper: getReaper(), shells: paths.debugConsoleShells }),
  );
  return {
    family,
    system,
    sysfsRoot,
    copyRoots,
    volumeRoots,
    devRoot,
    uevents,
    devices,
    cleanup: () => {
      for (const d of made) fs.rmSync(d, { recursive: true, force: true });
    },
  };
}

/**
 * Make a hot-plugged disk appear in the mock: its sysfs device directory `<sysfs><devpath>`
 * (devpath e.g. "/devices/pci0000:00/0000:00:05.0/virtio3/block/vdb") with a non-zero `size`,
 * the `class/block/<name>` link to it, and the stand-in node `<devRoot>/<name>`. Returns the
 * "add" uevent the kernel would send (publish it to `mock.uevents`).
 */
export function addFakeBlockDevice(mock: Pick<MockGuest, 'sysfsRoot' | 'devRoot'>, devpath: string): Uevent {
  const name = path.basename(devpath);
  const dir = path.join(mock.sysfsRoot, devpath);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'size'), '32768\n');
  fs.mkdirSync(path.join(mock.sysfsRoot, 'class', 'block'), { recursive: true });
  fs.symlinkSync(path.join('..', '..', devpath), path.join(mock.sysfsRoot, 'class', 'block', name));
  fs.writeFileSync(path.join(mock.devRoot, name), '');
  return { action: 'add', devpath, devname: name, subsystem: 'block', seqnum: '1' };
}

/**
 * Make a hot-plugged NIC appear in the mock's sysfs: the device directory `<sysfs><devpath>`
 * (devpath e.g. "/devices/pci0000:00/0000:00:02.0/0000:01:05.0/virtio4/net/eth1"), the
 * `class/net/<name>` link to it and, for a path behind a bridge, the bridge's `pci_bus` entry.
 * Returns the "add" uevent the kernel would send (publish it to `mock.uevents`); the link itself
 * is the network mock's (MockNetlink.addLink).
 */
export function addFakeNetDevice(mock: Pick<MockGuest, 'sysfsRoot'>, devpath: string): Uevent {
  const name = path.basename(devpath);
  fs.mkdirSync(path.join(mock.sysfsRoot, devpath), { recursive: true });
  // "/devices/pci0000:00/0000:00:02.0/0000:01:05.0/..." → bridge 0000:00:02.0 has bus 0000:01.
  const parts = devpath.split('/').filter((p) => /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/.test(p));
  for (let i = 0; i + 1 < parts.length; i++) {
    const bridge = path.join(mock.sysfsRoot, devpath.slice(0, devpath.indexOf(parts[i]) + parts[i].length));
    fs.mkdirSync(path.join(bridge, 'pci_bus', parts[i + 1].slice(0, 7)), { recursive: true });
  }
  fs.mkdirSync(path.join(mock.sysfsRoot, 'class', 'net'), { recursive: true });
  fs.symlinkSync(path.join('..', '..', devpath), path.join(mock.sysfsRoot, 'class', 'net', name));
  return { action: 'add', devpath, devname: '', subsystem: 'net', seqnum: '1' };
}
