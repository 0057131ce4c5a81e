/**
 * The guest family of helper ops that are neither sysfs nor CopyFile: entropy (ReseedRandomDev),
 * the realtime clock (SetGuestDateTime), swap (AddSwap), volume statistics (GetVolumeStats) and
 * online volume growth (ResizeVolume). Validation and path confinement live here; the system
 * calls go through a {@link GuestSystem} — the native addon for the real helper
 * ({@link nativeGuestSystem}), a recording double for the mock (helper/mock/guest.ts) — as the
 * container ops go through a Launcher.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  Code,
  GUEST_PATHS,
  MAX_ENTROPY_BYTES,
  StatusError,
  type AddEntropyArgs,
  type AddSwapArgs,
  type EmptyResult,
  type ResizeVolumeArgs,
  type ResizeVolumeResult,
  type SetTimeArgs,
  type VolumeStatsArgs,
  type VolumeStatsResult,
} from '../../shared/protocol';
import { loadNative } from '../../shared/native';
import { silentLogger, type Logger } from '../../shared/log';
import type { BackendReply, GuestFamily } from '../api';
import type { CopyFileOps } from './copy-file';
import type { DebugConsoleOps } from './debug-console';
import type { DeviceWaiter } from './device';
import type { ChildReaper } from './reaper';
import { runProgram } from './run';
import type { SysfsOps } from './sysfs';
import { bytesArg, checkArgs, confinedPath, errnoStatus, intArg } from './guest-args';

/** The system calls behind the guest ops (each throws the errno error). */
export interface GuestSystem {
  /** RNDADDENTROPY + RNDRESEEDCRNG on /dev/random. */
  addEntropy(data: Buffer): void;
  /** clock_settime(CLOCK_REALTIME). */
  setRealtime(sec: number, nsec: number): void;
  /** swapon(2) of a block device. */
  swapon(device: string): void;
  /** Whether `p` (a real path) is a block device node (the mock accepts its stand-in files). */
  isBlockDevice(p: string): boolean;
  /** Run a filesystem tool (resize2fs, xfs_growfs); rejects with ENOENT when it is not installed. */
  runTool(tool: string, args: string[]): Promise<void>;
  /** The mount at `mountPoint` (source, fstype), or undefined when nothing is mounted exactly there. */
  mountAt(mountPoint: string): { source: string; fstype: string } | undefined;
}

/** Where the filesystem tools are looked for, in order. */
const TOOL_DIRS = ['/usr/sbin', '/sbin', '/usr/bin', '/bin'];
/** How long a resize tool may run, in ms. */
const TOOL_TIMEOUT_MS = 5 * 60 * 1000;
/** /dev names a swap device may have (a path under /dev, no "." or ".." component). */
const DEV_PATH_RE = /^\/dev(\/[A-Za-z0-9_+:@-][A-Za-z0-9._+:@-]*)+$/;

/** Undo /proc/self/mountinfo's octal escapes (\040 for a space, ...). */
function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** The last mount at `mountPoint` in /proc/self/mountinfo (the one visible there). */
export function findMount(mountPoint: string, mountinfo = '/proc/self/mountinfo'): { source: string; fstype: string } | undefined {
  let found: { source: string; fstype: string } | undefined;
  for (const line of fs.readFileSync(mountinfo, 'utf8').split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    if (left.length < 5 || right.length < 2) continue;
    if (unescapeMountinfo(left[4]) === mountPoint) found = { fstype: right[0], source: unescapeMountinfo(right[1]) };
  }
  return found;
}

/** The real {@link GuestSystem}: the native addon, /proc/self/mountinfo, the tools from TOOL_DIRS. */
export function nativeGuestSystem(reaper: ChildReaper, randomDevice = '/dev/random'): GuestSystem {
  const native = loadNative();
  return {
    addEntropy: (data) => native.addEntropy(randomDevice, data),
    setRealtime: (sec, nsec) => native.setRealtime(sec, nsec),
    swapon: (device) => native.swapon(device, 0),
    isBlockDevice: (p) => fs.statSync(p, { throwIfNoEntry: false })?.isBlockDevice() === true,
    mountAt: (mountPoint) => findMount(mountPoint),
    runTool: (tool, args) => {
      const file = TOOL_DIRS.map((d) => path.join(d, tool)).find((f) => fs.existsSync(f));
      if (!file) {
        const err: NodeJS.ErrnoException = new Error(`${tool} is not installed in the guest (looked in ${TOOL_DIRS.join(', ')})`);
        err.code = 'ENOENT';
        return Promise.reject(err);
      }
      return runProgram(
        { native, reaper },
        { file, argv: [tool, ...args], envp: [`PATH=${TOOL_DIRS.join(':')}`], timeoutMs: TOOL_TIMEOUT_MS, maxOutput: 64 * 1024 },
      ).then((r) => {
        if (r.exitCode === 0) return;
        const why = r.timedOut ? `killed after ${TOOL_TIMEOUT_MS} ms` : r.signal !== null ? `killed by signal ${r.signal}` : `exit status ${r.exitCode}`;
        throw new StatusError(Code.INTERNAL, `${tool} ${args.join(' ')} failed: ${r.stderr.trim() || why}`);
      });
    },
  };
}

/** Options of {@link GuestOps}. */
export interface GuestOpsOptions {
  system: GuestSystem;
  /**
   * The device waiter AddSwap waits for its disk with (helper/ops/device.ts; the backend's one,
   * over its uevent source, bounded by the hotplug timeout). Its `dev` is the root swap devices
   * must resolve below.
   */
  devices: DeviceWaiter;
  /** Roots GetVolumeStats / ResizeVolume paths must lie below (default [GUEST_PATHS.volumeRoot]). */
  volumeRoots?: string[];
  logger?: Logger;
}

/** The guest ops over a {@link GuestSystem}. */
export class GuestOps {
  readonly volumeRoots: string[];
  private readonly system: GuestSystem;
  private readonly devices: DeviceWaiter;
  private readonly log: Logger;

  constructor(opts: GuestOpsOptions) {
    this.system = opts.system;
    this.devices = opts.devices;
    this.volumeRoots = (opts.volumeRoots ?? [GUEST_PATHS.volumeRoot]).map((r) => path.resolve(r));
    this.log = (opts.logger ?? silentLogger()).child({ component: 'guest' });
  }

  /** Mix 1..4096 bytes into the entropy pool and reseed (Kata random.rs). Empty → INVALID_ARGUMENT "missing entropy data". */
  async addEntropy(rawArgs: AddEntropyArgs): Promise<BackendReply<EmptyResult>> {
    const args = checkArgs(rawArgs, 'addEntropy');
    const data = bytesArg(args.data, 'addEntropy.data', MAX_ENTROPY_BYTES);
    if (data.length === 0) throw new StatusError(Code.INVALID_ARGUMENT, 'missing entropy data');
    try {
      this.system.addEntropy(data);
    } catch (err) {
      throw errnoStatus(err, 'reseed the random device');
    }
    this.log.info({ bytes: data.length }, 'entropy added');
    return { result: {} };
  }

  /** Set CLOCK_REALTIME to sec + usec (Kata rpc.rs do_set_guest_date_time). Bad values → INVALID_ARGUMENT. */
  async setTime(rawArgs: SetTimeArgs): Promise<BackendReply<EmptyResult>> {
    const args = checkArgs(rawArgs, 'setTime');
    const sec = intArg(args.sec, 'setTime.sec', 0, Number.MAX_SAFE_INTEGER);
    const usec = intArg(args.usec, 'setTime.usec', 0, 999_999);
    try {
      this.system.setRealtime(sec, usec * 1000);
    } catch (err) {
      throw errnoStatus(err, `set the guest clock to ${sec}.${String(usec).padStart(6, '0')}`);
    }
    this.log.info({ sec, usec }, 'guest clock set');
    return { result: {} };
  }

  /**
   * swapon a hot-plugged disk (Kata rpc.rs do_add_swap: no mkswap, the host formats the swap
   * image). Exactly one of `pciPath` (a virtio-blk disk, "02/03") or `device` (a /dev node
   * name); either is waited for through the device waiter (uevents; DEADLINE_EXCEEDED after the
   * hotplug timeout, NOT_FOUND for a missing bridge, INVALID_ARGUMENT for a malformed value).
   * The node found must resolve to a block device below the waiter's /dev (INVALID_ARGUMENT
   * otherwise); swapon's errno otherwise (EINVAL: no swap signature → INVALID_ARGUMENT, EBUSY:
   * already in use → FAILED_PRECONDITION).
   */
  async addSwap(rawArgs: AddSwapArgs): Promise<BackendReply<EmptyResult>> {
    const args = checkArgs(rawArgs, 'addSwap');
    const { pciPath, device } = args;
    if ((pciPath === undefined) === (device === undefined)) {
      throw new StatusError(Code.INVALID_ARGUMENT, 'addSwap: give exactly one of pciPath and device');
    }
    let node: string;
    if (pciPath !== undefined) {
      if (typeof pciPath !== 'string') throw new StatusError(Code.INVALID_ARGUMENT, `swap PCI path ${JSON.stringify(pciPath)} is not a string`);
      node = await this.devices.virtioBlkPci(pciPath);
    } else {
      if (typeof device !== 'string' || !DEV_PATH_RE.test(device)) {
        throw new StatusError(Code.INVALID_ARGUMENT, `swap device ${JSON.stringify(device)} is not a /dev path`);
      }
      node = await this.devices.blockByName(path.join(this.devices.dev, device.slice('/dev/'.length)));
    }
    let real: string;
    try {
      real = fs.realpathSync(node);
    } catch (err) {
      throw errnoStatus(err, `swap device ${node}`);
    }
    const devRoot = path.resolve(this.devices.dev);
    if (!real.startsWith(devRoot + '/') || !this.system.isBlockDevice(real)) {
      throw new StatusError(Code.INVALID_ARGUMENT, `swap device ${node} (${real}) is not a block device under ${devRoot}`);
    }
    try {
      this.system.swapon(real);
    } catch (err) {
      throw errnoStatus(err, `swapon ${real}`);
    }
    this.log.info({ device: real, pciPath }, 'swap added');
    return { result: {} };
  }

  /** A volume path: confined, resolved, and still confined once resolved (a symlink out → INVALID_ARGUMENT). */
  private volumePath(v: unknown, op: string): string {
    confinedPath(v, `${op} volume path`, this.volumeRoots);
    let real: string;
    try {
      real = fs.realpathSync(v as string);
    } catch (err) {
      throw errnoStatus(err, `${op} volume ${JSON.stringify(v)}`);
    }
    confinedPath(real, `${op} volume path ${JSON.stringify(v)} resolves to`, this.volumeRoots);
    return real;
  }

  /** statfs of a volume below the volume roots (Kata rpc.rs get_volume_stats). */
  async volumeStats(rawArgs: VolumeStatsArgs): Promise<BackendReply<VolumeStatsResult>> {
    const args = checkArgs(rawArgs, 'volumeStats');
    const real = this.volumePath(args.path, 'GetVolumeStats');
    let st: fs.StatsFs;
    try {
      st = fs.statfsSync(real);
    } catch (err) {
      throw errnoStatus(err, `statfs ${real}`);
    }
    return { result: { bsize: st.bsize, blocks: st.blocks, bfree: st.bfree, bavail: st.bavail, files: st.files, ffree: st.ffree } };
  }

  /**
   * Grow the filesystem mounted exactly at a volume path to fill its block device (upstream has
   * no ResizeVolume: the host has grown the device already). ext2/3/4 → `resize2fs <source>
   * [<size>K]`, xfs → `xfs_growfs <mount point>` (xfs_growfs takes sizes in fs blocks, so it
   * always grows to the device size). Not a mount point → FAILED_PRECONDITION; another fstype
   * → INVALID_ARGUMENT; tool not installed → FAILED_PRECONDITION naming it.
   */
  async resizeVolume(rawArgs: ResizeVolumeArgs): Promise<BackendReply<ResizeVolumeResult>> {
    const args = checkArgs(rawArgs, 'resizeVolume');
    const real = this.volumePath(args.path, 'ResizeVolume');
    const size = intArg(args.size, 'resizeVolume.size', 0, Number.MAX_SAFE_INTEGER);
    const mount = this.system.mountAt(real);
    if (!mount) throw new StatusError(Code.FAILED_PRECONDITION, `ResizeVolume: nothing is mounted at ${real}`);
    let tool: string;
    let toolArgs: string[];
    if (/^ext[234]$/.test(mount.fstype)) {
      if (!mount.source.startsWith('/dev/')) {
        throw new StatusError(Code.INVALID_ARGUMENT, `ResizeVolume: ${real} is not backed by a block device (${mount.source})`);
      }
      tool = 'resize2fs';
      toolArgs = size > 0 ? [mount.source, `${Math.floor(size / 1024)}K`] : [mount.source];
    } else if (mount.fstype === 'xfs') {
      tool = 'xfs_growfs';
      toolArgs = [real];
    } else {
      throw new StatusError(Code.INVALID_ARGUMENT, `ResizeVolume: cannot grow a ${mount.fstype} filesystem (ext2/3/4 and xfs only) at ${real}`);
    }
    try {
      await this.system.runTool(tool, toolArgs);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new StatusError(Code.FAILED_PRECONDITION, `ResizeVolume: ${(err as Error).message}`);
      throw errnoStatus(err, `ResizeVolume ${real}`);
    }
    this.log.info({ path: real, fstype: mount.fstype, tool, size }, 'volume grown');
    return { result: { fstype: mount.fstype, tool } };
  }
}

/** The guest family of a backend (helper/api.ts composeBackend) from its four parts. */
export function guestFamily(sysfs: SysfsOps, copy: CopyFileOps, guest: GuestOps, console: DebugConsoleOps): GuestFamily {
  return {
    memoryInfo: (a) => sysfs.memoryInfo(a),
    onlineCpuMem: (a) => sysfs.onlineCpuMem(a),
    memHotplugProbe: (a) => sysfs.memHotplugProbe(a),
    addEntropy: (a) => guest.addEntropy(a),
    setTime: (a) => guest.setTime(a),
    addSwap: (a) => guest.addSwap(a),
    volumeStats: (a) => guest.volumeStats(a),
    resizeVolume: (a) => guest.resizeVolume(a),
    copyFile: (a) => copy.copyFile(a),
    debugConsole: (a) => console.debugConsole(a),
  };
}

/** Where the guest ops act (defaults: GUEST_PATHS); tests point them at temp trees. */
export interface GuestPaths {
  sysfsRoot?: string;
  copyRoots?: string[];
  volumeRoots?: string[];
}
