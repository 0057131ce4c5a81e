/**
 * The helper's storage, device, DNS and kernel-module ops (Kata agent storage/*, rpc.rs
 * create_sandbox / do_create_container / update_ephemeral_mounts /
 * remove_stale_virtiofs_share_mounts, network.rs setup_guest_dns at 6e4d4c329a).
 *
 * Storages are shared by mount point with a reference count: the first user sets one up, later
 * users only take a reference; when the last reference of a mount point is released it is
 * unmounted (only when this helper mounted it: a pre-mounted kataShared share is kept) and its
 * directory removed when empty. References are held per owner ("" = the sandbox, else a
 * container id) and released together (RemoveContainer, DestroySandbox).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  CONTAINER_ID_RE,
  Code,
  DEVICE_TYPES,
  StatusError,
  type AddStoragesArgs,
  type AddStoragesResult,
  type DevicePlan,
  type DeviceType,
  type LoadKernelModulesArgs,
  type LoadKernelModulesResult,
  type ReleaseStoragesArgs,
  type ReleaseStoragesResult,
  type SetupDnsArgs,
  type SetupDnsResult,
  type StatShareMountsArgs,
  type StatShareMountsResult,
  type StorageOps,
  type UpdateEphemeralMountsArgs,
  type UpdateEphemeralMountsResult,
  type WaitDevicesArgs,
  type WaitDevicesResult,
} from '../../shared/protocol';
import { invalidArgument as invalid } from '../../shared/protocol';
import { loadNative } from '../../shared/native';
import { silentLogger, type Logger } from '../../shared/log';
import type { BackendReply } from '../api';
import { DeviceWaiter } from './device';
import { MS, STORAGE_LIMITS, validateStorage, type Mounter, type ValidStorage } from './mount';
import type { ChildReaper } from './reaper';
import { runProgram } from './run';
import { BindWatcher } from './watcher';

/** The storage ops of a backend (shared/protocol.ts StorageOps). */
export type StorageBackendOps = {
  [K in keyof StorageOps]: (args: StorageOps[K][0]) => Promise<BackendReply<StorageOps[K][1]>>;
};

/** How modprobe is run: the real helper execs it, the mock records. Resolves with exit code and stderr. */
/** Bound of one modprobe run, in ms (a module's init may take long, never forever). */
const MODPROBE_TIMEOUT_MS = 60_000;

export type ModprobeRunner = (argv: string[]) => Promise<{ code: number; stderr: string }>;

export interface StorageBackendOptions {
  mounter: Mounter;
  devices: DeviceWaiter;
  /** Base directory (default /run/kata-containers). */
  kataDir: string;
  /** The file DNS is bound over (default /etc/resolv.conf). */
  resolvConf?: string;
  modprobe: ModprobeRunner;
  logger?: Logger;
  watchIntervalMs?: number;
}

interface StorageEntry {
  refs: number;
  /** What to unmount at the last release ("" = nothing: local, watchable-bind, a kept share). */
  mounted: string;
  /** Remove the (empty) directory at the last release. */
  rmdir: boolean;
}

/** Upstream's refusal of an empty module name, and our bounds on names and parameters. */
const MODULE_RE = /^[A-Za-z0-9_-]{1,64}$/;
const MODULE_PARAM_RE = /^[A-Za-z0-9_.-]{1,64}(=[^\s\0]{0,1024})?$/;

function checkOwner(owner: unknown): string {
  if (owner === '') return '';
  if (typeof owner !== 'string' || !CONTAINER_ID_RE.test(owner)) throw invalid(`invalid storage owner ${JSON.stringify(owner)}`);
  return owner;
}

function list(v: unknown, field: string, max: number): unknown[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw invalid(`${field} must be a list`);
  if (v.length > max) throw invalid(`${field} has ${v.length} entries (at most ${max})`);
  return v;
}

/** Storage ops over a {@link Mounter}; one per helper. */
export class StorageBackend implements StorageBackendOps {
  readonly kataDir: string;
  private readonly entries = new Map<string, StorageEntry>();
  private readonly owners = new Map<string, string[]>();
  private readonly watcher: BindWatcher;
  private readonly log: Logger;
  private resolvBound = '';
  /** One storage change at a time (reference counts, mkdir, mount). */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: StorageBackendOptions) {
    this.kataDir = path.posix.normalize(opts.kataDir).replace(/\/+$/, '');
    this.log = (opts.logger ?? silentLogger()).child({ component: 'storage' });
    this.watcher = new BindWatcher({
      mounter: opts.mounter,
      watchableDir: path.join(this.kataDir, 'shared', 'containers', 'watchable'),
      intervalMs: opts.watchIntervalMs,
      logger: opts.logger,
    });
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  async addStorages(args: AddStoragesArgs): Promise<BackendReply<AddStoragesResult>> {
    const owner = checkOwner(args?.owner);
    const storages = list(args?.storages, 'storages', STORAGE_LIMITS.storages).map((s, i) => validateStorage(s, this.kataDir, `storages[${i}]`));
    return this.serial(async () => {
      const added: string[] = [];
      try {
        for (const s of storages) {
          const existing = this.entries.get(s.mountPoint);
          if (existing) {
            existing.refs++;
          } else {
            this.entries.set(s.mountPoint, await this.createStorage(s, owner));
          }
          added.push(s.mountPoint);
        }
      } catch (err) {
        for (const mp of added.reverse()) this.unref(mp);
        throw err instanceof StatusError ? err : new StatusError(Code.INTERNAL, `storage: ${(err as Error).message}`);
      }
      this.owners.set(owner, [...(this.owners.get(owner) ?? []), ...added]);
      return { result: { mountPoints: added } };
    });
  }

  async releaseStorages(args: ReleaseStoragesArgs): Promise<BackendReply<ReleaseStoragesResult>> {
    const owner = checkOwner(args?.owner);
    return this.serial(async () => {
      this.releaseOwner(owner);
      return { result: {} };
    });
  }

  private releaseOwner(owner: string): void {
    if (owner !== '') this.watcher.remove(owner);
    const errors: string[] = [];
    for (const mp of (this.owners.get(owner) ?? []).reverse()) {
      try {
        this.unref(mp);
      } catch (err) {
        errors.push(`${mp}: ${(err as Error).message}`);
      }
    }
    this.owners.delete(owner);
    if (owner === '') {
      this.watcher.close();
      if (this.resolvBound) {
        try {
          this.opts.mounter.umount(this.resolvBound);
        } catch (err) {
          errors.push(`${this.resolvBound}: ${(err as Error).message}`);
        }
        this.resolvBound = '';
      }
    }
    if (errors.length > 0) throw new StatusError(Code.INTERNAL, `releasing storages of ${owner || 'the sandbox'}: ${errors.join('; ')}`);
  }

  /** Drop one reference; unmount and rmdir at zero. */
  private unref(mp: string): void {
    const e = this.entries.get(mp);
    if (!e) return;
    if (--e.refs > 0) return;
    this.entries.delete(mp);
    if (e.mounted && this.opts.mounter.isMounted(e.mounted)) this.opts.mounter.umount(e.mounted);
    if (e.rmdir) {
      try {
        fs.rmdirSync(mp);
      } catch {
        // not empty, or a file: left in place as upstream
      }
    }
  }

  /**
   * mkdir -p `dir` below the Kata directory and check no component is a symlink. Returns the
   * topmost directory it created (undefined when `dir` existed).
   */
  private makeDir(dir: string, mode = 0o755): string | undefined {
    const created = fs.mkdirSync(dir, { recursive: true, mode });
    const real = fs.realpathSync(dir);
    if (real !== dir) throw invalid(`mount point ${dir} resolves to ${real} (a symlink on the way)`);
    return created;
  }

  private async createStorage(s: ValidStorage, owner: string): Promise<StorageEntry> {
    const m = this.opts.mounter;
    switch (s.driver) {
      case 'local': {
        this.makeDir(s.mountPoint);
        if (s.mount.fsGid !== undefined) fs.chownSync(s.mountPoint, -1, s.mount.fsGid);
        if (s.mount.mode !== undefined) fs.chmodSync(s.mountPoint, s.mount.mode | (s.mount.fsGid !== undefined ? 0o2000 : 0));
        return { refs: 1, mounted: '', rmdir: false };
      }
      case 'watchable-bind': {
        if (owner === '') return { refs: 1, mounted: '', rmdir: false }; // upstream: only with a container id
        this.watcher.add(owner, s.source, s.mountPoint);
        return { refs: 1, mounted: '', rmdir: false };
      }
      case '9p':
      case 'virtio-fs':
        if (s.source === 'kataShared' && m.isMounted(s.mountPoint)) {
          this.log.warn({ mountPoint: s.mountPoint }, 'kataShared is already mounted: kept');
          return { refs: 1, mounted: '', rmdir: false };
        }
        return this.commonMount(s, s.source);
      case 'ephemeral':
        if (s.fstype === 'hugetlbfs') this.allocateHugepages(s);
        return this.commonMount(s, s.source || 'tmpfs');
      case 'overlayfs': {
        let data = s.mount.data;
        if (s.mount.overlayRw) {
          if (owner === '') throw invalid(`overlayfs storage ${s.mountPoint}: a read-write overlay needs a container`);
          const upper = path.join(this.kataDir, owner, 'upper');
          const work = path.join(this.kataDir, owner, 'work');
          this.makeDir(upper);
          this.makeDir(work);
          data = [data, `upperdir=${upper}`, `workdir=${work}`].filter((x) => x !== '').join(',');
        }
        return this.commonMount({ ...s, mount: { ...s.mount, data } }, 'overlay');
      }
      case 'blk':
        if (s.source.startsWith('/dev/')) {
          const st = fs.statSync(s.source, { throwIfNoEntry: false });
          if (!st?.isBlockDevice()) throw invalid(`blk storage: ${s.source} is not a block device`);
          return this.commonMount(s, s.source);
        }
        return this.commonMount(s, await this.opts.devices.virtioBlkPci(s.source));
      case 'mmioblk':
        return this.commonMount(s, fs.existsSync(s.source) ? s.source : await this.opts.devices.blockByName(s.source));
      case 'nvdimm':
        return this.commonMount(s, await this.opts.devices.blockByName(s.source, (p) => p.startsWith('/devices/LNXSYSTM')));
      case 'scsi':
        return this.commonMount(s, await this.opts.devices.scsi(s.source));
      case 'blk-ccw':
        throw new StatusError(Code.UNIMPLEMENTED, 'CCW is only supported on s390x');
    }
  }

  /** Create the mount point, mount, apply fs_group (upstream common_storage_handler). */
  private commonMount(s: ValidStorage, source: string): StorageEntry {
    const m = this.opts.mounter;
    const created = this.makeDir(s.mountPoint);
    if (m.isMounted(s.mountPoint)) {
      // upstream baremount: already mounted → nothing to do; not ours to unmount later
      this.log.warn({ mountPoint: s.mountPoint }, 'already mounted: kept');
      return { refs: 1, mounted: '', rmdir: false };
    }
    m.mount(source, s.mountPoint, s.fstype, s.mount.flags, s.mount.data, created);
    try {
      if (s.mount.fsGid !== undefined) {
        fs.chownSync(s.mountPoint, -1, s.mount.fsGid);
        fs.chmodSync(s.mountPoint, fs.statSync(s.mountPoint).mode | 0o2000);
      }
      if (s.fsGroup) setOwnership(s.mountPoint, s.fsGroup.gid, s.mount.readOnly, s.fsGroup.onRootMismatch);
    } catch (err) {
      m.umount(s.mountPoint);
      throw err;
    }
    return { refs: 1, mounted: s.mountPoint, rmdir: true };
  }

  /** hugetlbfs: reserve size/pagesize pages (upstream allocate_hugepages). */
  private allocateHugepages(s: ValidStorage): void {
    const kv = new Map(s.mount.data.split(',').map((o) => o.split('=') as [string, string]));
    const pagesize = Number(kv.get('pagesize'));
    const size = Number(kv.get('size'));
    if (!(pagesize > 0) || !(size >= 0)) throw invalid(`hugetlbfs storage ${s.mountPoint}: no pagesize/size options found`);
    const file = `/sys/kernel/mm/hugepages/hugepages-${pagesize / 1024}kB/nr_hugepages`;
    const want = Math.floor(size / pagesize);
    fs.writeFileSync(file, String(want));
    const got = Number(fs.readFileSync(file, 'utf8').trim());
    if (got !== want) throw new StatusError(Code.RESOURCE_EXHAUSTED, `Only allocated ${got} of ${want} hugepages of size ${pagesize}`);
  }

  async updateEphemeralMounts(args: UpdateEphemeralMountsArgs): Promise<BackendReply<UpdateEphemeralMountsResult>> {
    const storages = list(args?.storages, 'storages', STORAGE_LIMITS.storages).map((s, i) => validateStorage(s, this.kataDir, `storages[${i}]`));
    for (const s of storages) {
      if (s.driver !== 'ephemeral') {
        throw invalid(`Unsupported storage type for syncing mounts ${s.driver}. Only ephemeral storage update is supported`);
      }
    }
    return this.serial(async () => {
      for (const s of storages) {
        const created = this.makeDir(s.mountPoint);
        if (s.options.length === 0) continue;
        const e = this.entries.get(s.mountPoint);
        if (e && e.mounted === s.mountPoint && this.opts.mounter.isMounted(s.mountPoint)) {
          // our own tmpfs: change its options in place
          this.opts.mounter.mount('', s.mountPoint, '', s.mount.flags | MS.REMOUNT, s.mount.data);
        } else if (this.opts.mounter.isMounted(s.mountPoint)) {
          throw new StatusError(Code.FAILED_PRECONDITION, `${s.mountPoint} is mounted but not by an ephemeral storage of this sandbox`);
        } else {
          this.opts.mounter.mount(s.source || 'tmpfs', s.mountPoint, s.fstype, s.mount.flags, s.mount.data, created);
          this.entries.set(s.mountPoint, { refs: 1, mounted: s.mountPoint, rmdir: true });
          this.owners.set('', [...(this.owners.get('') ?? []), s.mountPoint]);
        }
      }
      return { result: {} };
    });
  }

  async statShareMounts(_args: StatShareMountsArgs): Promise<BackendReply<StatShareMountsResult>> {
    const share = path.join(this.kataDir, 'shared', 'containers');
    const mountPoints = this.opts.mounter.mountsUnder(share);
    for (const mp of mountPoints) {
      try {
        fs.statSync(mp); // lets virtiofsd drop the stale entries of removed paths
      } catch (err) {
        this.log.info({ mountPoint: mp, err }, 'stat of a share mount failed');
      }
    }
    return { result: { mountPoints } };
  }

  async setupDns(args: SetupDnsArgs): Promise<BackendReply<SetupDnsResult>> {
    const lines = list(args?.lines, 'dns', 256).map((l, i) => {
      if (typeof l !== 'string' || /[\0\n\r]/.test(l) || l.length > 1024) throw invalid(`dns[${i}] ${JSON.stringify(l)} is not one resolv.conf line`);
      return l.trim();
    });
    while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
    if (lines.length === 0) return { result: { bound: false } };
    return this.serial(async () => {
      const dir = path.join(this.kataDir, 'sandbox');
      this.makeDir(dir);
      const file = path.join(dir, 'resolv.conf');
      fs.writeFileSync(file, lines.join('\n') + '\n', { mode: 0o644 });
      const target = this.opts.resolvConf ?? '/etc/resolv.conf';
      const st = fs.statSync(target, { throwIfNoEntry: false });
      if (!st) return { result: { bound: false } };
      if (st.isDirectory()) throw new StatusError(Code.FAILED_PRECONDITION, `${target} is a directory`);
      if (this.resolvBound !== target) {
        this.opts.mounter.mount(file, target, '', MS.BIND, '');
        this.resolvBound = target;
      }
      return { result: { bound: true } };
    });
  }

  async loadKernelModules(args: LoadKernelModulesArgs): Promise<BackendReply<LoadKernelModulesResult>> {
    const modules = list(args?.modules, 'kernel_modules', 64).map((raw, i) => {
      const m = raw as { name?: unknown; parameters?: unknown };
      if (m.name === '') throw invalid('Kernel module name is empty');
      if (typeof m.name !== 'string' || !MODULE_RE.test(m.name)) throw invalid(`kernel_modules[${i}].name ${JSON.stringify(m.name)} is not a module name`);
      const params = list(m.parameters, `kernel_modules[${i}].parameters`, 64).map((p, j) => {
        if (typeof p !== 'string' || !MODULE_PARAM_RE.test(p)) throw invalid(`kernel_modules[${i}].parameters[${j}] ${JSON.stringify(p)} is not NAME or NAME=VALUE`);
        return p;
      });
      return { name: m.name, params };
    });
    for (const m of modules) {
      const { code, stderr } = await this.opts.modprobe(['-v', m.name, ...m.params]);
      if (code !== 0) {
        throw new StatusError(Code.INTERNAL, `load_kernel_module ${m.name} return code: ${code} stderr: ${stderr.trim()}`);
      }
    }
    return { result: {} };
  }

  async waitDevices(args: WaitDevicesArgs): Promise<BackendReply<WaitDevicesResult>> {
    const timeout = typeof args?.timeoutMs === 'number' && args.timeoutMs > 0 ? Math.min(args.timeoutMs, 600_000) : undefined;
    const devices = list(args?.devices, 'devices', 256).map((raw, i) => validateDevice(raw, `devices[${i}]`));
    const out = [];
    for (const d of devices) out.push(await this.opts.devices.waitDevice(d, timeout));
    return { result: { devices: out } };
  }

  /** Release every owner's storages (helper shutdown). Never throws. */
  shutdown(): void {
    for (const owner of [...this.owners.keys()].sort((a, b) => (a === '' ? 1 : b === '' ? -1 : 0))) {
      try {
        this.releaseOwner(owner);
      } catch (err) {
        this.log.warn({ err, owner }, 'releasing storages at shutdown failed');
      }
    }
    this.watcher.close();
  }
}

/** Re-validate one device (agent.proto Device; upstream device.rs checks). */
function validateDevice(raw: unknown, f: string): DevicePlan {
  const d = (raw ?? {}) as Partial<Record<keyof DevicePlan, unknown>>;
  const s = (v: unknown, name: string): string => {
    if (typeof v !== 'string' || v.includes('\0') || v.length > 4096) throw invalid(`${f}.${name} must be a string`);
    return v;
  };
  const type = s(d.type, 'type');
  if (!(DEVICE_TYPES as readonly string[]).includes(type)) throw invalid(`${f}.type ${JSON.stringify(type)}: Unknown device type`);
  const id = s(d.id ?? '', 'id');
  const vmPath = s(d.vmPath ?? '', 'vm_path');
  const containerPath = s(d.containerPath ?? '', 'container_path');
  if (id === '' && vmPath === '') throw invalid(`${f}: id and vm_path are both empty`);
  if (containerPath === '') throw invalid(`${f}.container_path is empty`);
  if (vmPath !== '' && !/^\/dev\/[A-Za-z0-9_.-]{1,64}$/.test(vmPath)) throw invalid(`${f}.vm_path ${JSON.stringify(vmPath)} is not a /dev node`);
  const options = list(d.options, `${f}.options`, 64).map((o, i) => s(o, `options[${i}]`));
  return { type: type as DeviceType, id, vmPath, containerPath, options };
}

/** O_PATH (Linux, every architecture we build for): an fd naming an inode without opening it. */
const O_PATH = 0o10000000;

/**
 * Recursive group ownership of a volume (upstream set_ownership / recursive_ownership_change):
 * chgrp every entry (symlinks skipped), files |0660 (|0440 read-only), directories also |0110
 * and setgid. With `onRootMismatch`, nothing when the root already has the group and bits.
 * Every entry is reached through O_PATH|O_NOFOLLOW fds relative to its parent's fd and changed
 * through /proc/self/fd/N (the inode the fd names): an entry swapped for a symlink during the
 * walk is skipped, never followed, and device nodes are not opened.
 */
export function setOwnership(root: string, gid: number, readOnly: boolean, onRootMismatch: boolean): void {
  const mask = (readOnly ? 0o440 : 0o660) | 0o110;
  const st = fs.lstatSync(root);
  if (onRootMismatch && st.gid === gid && (st.mode & mask) === mask && (st.mode & 0o2000) !== 0) return;
  const change = (p: string): void => {
    let fd: number;
    try {
      fd = fs.openSync(p, O_PATH | fs.constants.O_NOFOLLOW);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return; // removed meanwhile
      throw err;
    }
    try {
      const s = fs.fstatSync(fd);
      if (s.isSymbolicLink()) return;
      const self = `/proc/self/fd/${fd}`;
      fs.chownSync(self, s.uid, gid);
      let mode = (s.mode & 0o7777) | (readOnly ? 0o440 : 0o660);
      if (s.isDirectory()) mode |= 0o110 | 0o2000;
      fs.chmodSync(self, mode);
      if (s.isDirectory()) for (const name of fs.readdirSync(self)) change(`${self}/${name}`);
    } finally {
      fs.closeSync(fd);
    }
  };
  change(root);
}

/**
 * The real modprobe runner: execs `modprobe` (default /sbin/modprobe) with an empty
 * environment but PATH, stdout to /dev/null, stderr collected; the exit status comes from the
 * helper's reaper. FAILED_PRECONDITION when the program is missing.
 */
export function kernelModprobe(reaper: ChildReaper, program = '/sbin/modprobe'): ModprobeRunner {
  return async (argv) => {
    if (!fs.existsSync(program)) throw new StatusError(Code.FAILED_PRECONDITION, `cannot load kernel modules: ${program} is missing`);
    const r = await runProgram(
      { native: loadNative(), reaper },
      { file: program, argv: ['modprobe', ...argv], envp: ['PATH=/sbin:/usr/sbin:/bin:/usr/bin'], timeoutMs: MODPROBE_TIMEOUT_MS, maxOutput: 8192 },
    );
    const why = r.timedOut ? ` (killed after ${MODPROBE_TIMEOUT_MS} ms)` : '';
    return { code: r.exitCode ?? 128 + (r.signal ?? 0), stderr: r.stderr + why };
  };
}
