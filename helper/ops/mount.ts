/**
 * Storage validation and the mount primitives of the helper's storage ops (Kata agent
 * storage/mod.rs, mount.rs at 6e4d4c329a), with one thing upstream lacks: confinement. A
 * storage's mount point must lie strictly below the helper's Kata directory (default
 * /run/kata-containers, `--kata-dir`), without "..", with a filesystem type from an allow list
 * and options that cannot bind or remount something the sandbox does not own. Every failure is
 * INVALID_ARGUMENT naming the field and the value.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadNative } from '../../shared/native';
import { STORAGE_DRIVERS, StatusError, type StorageDriver, type StoragePlan } from '../../shared/protocol';
import { invalidArgument as invalid } from '../../shared/protocol';
import { FLAG_OPTIONS, MS } from './plan';
import { PCI_PATH_RE } from '../../shared/paths';

/** Default base directory of the sandbox's storages (upstream CONTAINER_BASE / KATA_GUEST_SHARE_DIR's parent). */
export const DEFAULT_KATA_DIR = '/run/kata-containers';

/** Filesystem types a storage may mount (besides the pseudo types "local" and "bind"). */
export const STORAGE_FSTYPES = new Set([
  'tmpfs',
  'hugetlbfs',
  '9p',
  'virtiofs',
  'overlay',
  'ext2',
  'ext3',
  'ext4',
  'xfs',
  'btrfs',
  'vfat',
  'erofs',
  'squashfs',
  'iso9660',
]);

/** Bounds of a storage request. */
export const STORAGE_LIMITS = { storages: 256, options: 64, optionBytes: 4096, pathBytes: 4096 } as const;

/** Flag words refused in storage options: they would bind or remount something else. */
const REFUSED_FLAGS = new Set(['bind', 'rbind', 'remount']);

function str(v: unknown, field: string, max: number = STORAGE_LIMITS.pathBytes): string {
  if (typeof v !== 'string') throw invalid(`${field} must be a string, got ${typeof v}`);
  if (v.includes('\0')) throw invalid(`${field} ${JSON.stringify(v)} contains a NUL byte`);
  if (Buffer.byteLength(v) > max) throw invalid(`${field} is longer than ${max} bytes`);
  return v;
}

function strList(v: unknown, field: string, maxItems: number): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw invalid(`${field} must be a list`);
  if (v.length > maxItems) throw invalid(`${field} has ${v.length} entries (at most ${maxItems})`);
  return v.map((x, i) => str(x, `${field}[${i}]`, STORAGE_LIMITS.optionBytes));
}

/**
 * `p` normalised (no trailing "/") when it is absolute, has no "." or ".." component and lies
 * strictly below `base`; INVALID_ARGUMENT otherwise.
 */
export function confinedPath(p: unknown, base: string, field: string): string {
  const s = str(p, field);
  if (!s.startsWith('/')) throw invalid(`${field} ${JSON.stringify(s)} is not an absolute path`);
  const parts = s.split('/');
  if (parts.includes('..') || parts.includes('.')) throw invalid(`${field} ${JSON.stringify(s)} contains a "." or ".." component`);
  const norm = path.posix.normalize(s).replace(/\/+$/, '');
  if (!norm.startsWith(base + '/')) throw invalid(`${field} ${JSON.stringify(s)} is not below ${base}`);
  return norm;
}

/** Mount flags and data of validated storage options (agent-only options such as fsgid removed). */
export interface StorageMountOptions {
  flags: number;
  data: string;
  /** `fsgid=N` (ephemeral, local). */
  fsGid?: number;
  /** `mode=OOO` of a `local` storage. */
  mode?: number;
  readOnly: boolean;
  /** Kata's `io.katacontainers.fs-opt.overlay-rw`. */
  overlayRw: boolean;
}

/** A storage the helper re-validated. `mountPoint` is normalised (no trailing "/"). */
export interface ValidStorage extends StoragePlan {
  mount: StorageMountOptions;
}

const TAG_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,35}$/;
const WORD_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const DEV_RE = /^\/dev\/[A-Za-z0-9_.-]{1,64}$/;
const SCSI_RE = /^[0-9]{1,5}:[0-9]{1,5}$/;
const CCW_RE = /^[0-9a-fA-F]\.[0-3]\.[0-9a-fA-F]{4}$/;

function checkSource(driver: StorageDriver, source: string, base: string, f: string): string {
  const bad = (what: string): StatusError => invalid(`${f}.source ${JSON.stringify(source)} is not ${what} (driver ${driver})`);
  switch (driver) {
    case '9p':
    case 'virtio-fs':
      if (!TAG_RE.test(source)) throw bad('a mount tag');
      return source;
    case 'ephemeral':
    case 'overlayfs':
    case 'local':
      if (source !== '' && !WORD_RE.test(source)) throw bad('a word such as "tmpfs"');
      return source;
    case 'watchable-bind':
      return confinedPath(source, base, `${f}.source`);
    case 'blk':
      if (!DEV_RE.test(source) && !PCI_PATH_RE.test(source)) throw bad('a PCI path ("02/03") or a /dev node');
      return source;
    case 'mmioblk':
    case 'nvdimm':
      if (!DEV_RE.test(source)) throw bad('a /dev node');
      return source;
    case 'scsi':
      if (!SCSI_RE.test(source)) throw bad('a SCSI "id:lun" address');
      return source;
    case 'blk-ccw':
      if (!CCW_RE.test(source)) throw bad('a CCW bus id');
      return source;
  }
}

/** Mount propagation words (refused in storages; ignored in a watchable-bind's options). */
const PROPAGATION = ['private', 'rprivate', 'shared', 'rshared', 'slave', 'rslave', 'unbindable', 'runbindable'];

const DATA_RE = /^[A-Za-z0-9_.-]{1,64}(=[^,\0]{0,4000})?$/;

/**
 * Parse a storage's options into mount(2) flags and data, refusing bind, rbind, remount and
 * propagation words and any data value that names a path outside `base` (e.g. an overlay
 * lowerdir). `fsgid=` and a `local` storage's `mode=` are agent options and do not reach mount.
 */
export function parseStorageOptions(options: string[], driver: StorageDriver, fstype: string, base: string, f: string): StorageMountOptions {
  let flags = 0;
  const data: string[] = [];
  const out: StorageMountOptions = { flags: 0, data: '', readOnly: false, overlayRw: false };
  options.forEach((raw, i) => {
    const field = `${f}.options[${i}]`;
    // Some runtimes pass "a=b,c=d" as one entry (the hugetlbfs storage does).
    for (const opt of raw.split(',')) {
      if (opt === '') continue;
      if (driver === 'watchable-bind') {
        // The Go runtime copies the Kubernetes mount's options here (container.go: "rbind",
        // "rprivate", "ro"); upstream's watcher ignores them and so do we: the OCI bind mount of
        // the target applies them. Only mount flag words are accepted.
        if (REFUSED_FLAGS.has(opt) || PROPAGATION.includes(opt) || FLAG_OPTIONS[opt]) continue;
        throw invalid(`${field} ${JSON.stringify(opt)} is not a mount flag (watchable-bind takes none but the Kubernetes mount's)`);
      }
      if (REFUSED_FLAGS.has(opt)) throw invalid(`${field} ${JSON.stringify(opt)} is not allowed in a storage`);
      const flag = FLAG_OPTIONS[opt];
      if (flag) {
        if (flag.set) flags |= flag.set;
        if (flag.clear) flags &= ~flag.clear;
        if (opt === 'ro') out.readOnly = true;
        continue;
      }
      if (opt === 'io.katacontainers.fs-opt.overlay-rw') {
        out.overlayRw = true;
        continue;
      }
      if (!DATA_RE.test(opt)) throw invalid(`${field} ${JSON.stringify(opt)} is not a mount option (KEY or KEY=VALUE)`);
      const eq = opt.indexOf('=');
      const key = eq < 0 ? opt : opt.slice(0, eq);
      const value = eq < 0 ? '' : opt.slice(eq + 1);
      if (PROPAGATION.includes(key)) {
        throw invalid(`${field} ${JSON.stringify(opt)}: propagation options are not allowed in a storage`);
      }
      if (key === 'fsgid') {
        out.fsGid = parseId(value, `${field} fsgid`);
        continue;
      }
      if (key === 'mode' && driver === 'local') {
        if (!/^[0-7]{1,4}$/.test(value)) throw invalid(`${field} ${JSON.stringify(opt)}: mode must be octal`);
        out.mode = parseInt(value, 8);
        continue;
      }
      for (const part of value.split(':')) {
        if (part.startsWith('/')) confinedPath(part, base, `${field} ${key}`);
      }
      if (fstype === 'overlay' && ['lowerdir', 'upperdir', 'workdir'].includes(key) && value.split(':').some((p) => !p.startsWith('/'))) {
        throw invalid(`${field} ${key} must list absolute paths below ${base}`);
      }
      data.push(opt);
    }
  });
  out.flags = flags;
  out.data = data.join(',');
  return out;
}

function parseId(v: string, field: string): number {
  if (!/^[0-9]{1,10}$/.test(v) || Number(v) > 2 ** 32 - 2) throw invalid(`${field} ${JSON.stringify(v)} is not a group id`);
  return Number(v);
}

/** Expected fstype per driver ("" = whatever the request says, from the allow list). */
function checkFstype(driver: StorageDriver, fstype: string, f: string): string {
  const ok = (() => {
    switch (driver) {
      case 'local':
        return fstype === '' || fstype === 'local';
      case 'watchable-bind':
        return fstype === '' || fstype === 'bind';
      case 'ephemeral':
        return fstype === 'tmpfs' || fstype === 'hugetlbfs' || fstype === '';
      case 'overlayfs':
        return fstype === 'overlay' || fstype === '';
      case '9p':
        return fstype === '9p';
      case 'virtio-fs':
        return fstype === 'virtiofs';
      default:
        return STORAGE_FSTYPES.has(fstype) && fstype !== 'tmpfs' && fstype !== 'hugetlbfs';
    }
  })();
  if (!ok) throw invalid(`${f}.fstype ${JSON.stringify(fstype)} is not allowed for driver ${driver}`);
  if (driver === 'ephemeral' && fstype === '') return 'tmpfs';
  if (driver === 'overlayfs') return 'overlay';
  return fstype;
}

/**
 * Re-validate one storage from the peer (shared/protocol.ts StoragePlan) against base
 * directory `base`. Throws INVALID_ARGUMENT naming `field` and the bad value.
 */
export function validateStorage(raw: unknown, base: string, field: string): ValidStorage {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw invalid(`${field} must be a map`);
  const s = raw as Partial<Record<keyof StoragePlan, unknown>>;
  const driver = str(s.driver, `${field}.driver`, 64);
  if (!(STORAGE_DRIVERS as readonly string[]).includes(driver)) {
    throw invalid(`${field}.driver ${JSON.stringify(driver)} is not a storage driver (${STORAGE_DRIVERS.join(', ')})`);
  }
  const d = driver as StorageDriver;
  const mountPoint = confinedPath(s.mountPoint, base, `${field}.mount_point`);
  const fstype = checkFstype(d, str(s.fstype ?? '', `${field}.fstype`, 64), field);
  const source = checkSource(d, str(s.source ?? '', `${field}.source`), base, field);
  const options = strList(s.options, `${field}.options`, STORAGE_LIMITS.options);
  const driverOptions = strList(s.driverOptions, `${field}.driver_options`, STORAGE_LIMITS.options);
  let fsGroup: StoragePlan['fsGroup'];
  if (s.fsGroup !== undefined && s.fsGroup !== null) {
    const g = s.fsGroup as { gid?: unknown; onRootMismatch?: unknown };
    if (typeof g.gid !== 'number' || !Number.isInteger(g.gid) || g.gid < 0 || g.gid > 2 ** 32 - 2) {
      throw invalid(`${field}.fs_group.group_id ${JSON.stringify(g.gid)} is not a group id`);
    }
    fsGroup = { gid: g.gid, onRootMismatch: g.onRootMismatch === true };
  }
  const mount = parseStorageOptions(options, d, fstype, base, field);
  return { driver: d, driverOptions, source, fstype, options, mountPoint, fsGroup, mount };
}

// ---------------------------------------------------------------------------------------------
// Mount primitives

/** What the storage ops need from the kernel; the mock records instead of mounting. */
export interface Mounter {
  /**
   * mount(2). Throws the errno error. `created`: the topmost directory the caller created for
   * this mount point (mkdir -p), which a journaling mounter records so that the next helper can
   * remove it after a crash (helper/ops/leftovers.ts); ignored by the others.
   */
  mount(source: string, target: string, fstype: string, flags: number, data: string, created?: string): void;
  /** umount2(target, 0), then MNT_DETACH when busy. Throws the errno error. */
  umount(target: string): void;
  /** Whether `target` (normalised, no trailing "/") is a mount point. */
  isMounted(target: string): boolean;
  /** Mount points at or below `dir`. */
  mountsUnder(dir: string): string[];
}

/** Decode the octal escapes of /proc/self/mountinfo fields ("\040" = space). */
function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Mount points listed in /proc/self/mountinfo (or `file`). Throws the fs error. */
export function readMountPoints(file = '/proc/self/mountinfo'): string[] {
  return parseMountPoints(fs.readFileSync(file, 'utf8'));
}

/** The mount points (field 5, escapes decoded) of a mountinfo text, in its order. */
export function parseMountPoints(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    if (fields.length > 4) out.push(unescapeMountinfo(fields[4]));
  }
  return out;
}

/** The real {@link Mounter}: mount(2)/umount2(2) through the addon, state from mountinfo. */
export class KernelMounter implements Mounter {
  private readonly native = loadNative();

  mount(source: string, target: string, fstype: string, flags: number, data: string): void {
    this.native.mount(source, target, fstype, flags, data);
  }

  umount(target: string): void {
    try {
      this.native.umount2(target, 0);
    } catch (err) {
      if ((err as { code?: string }).code !== 'EBUSY') throw err;
      this.native.umount2(target, 2 /* MNT_DETACH */);
    }
  }

  isMounted(target: string): boolean {
    return readMountPoints().includes(target);
  }

  mountsUnder(dir: string): string[] {
    return readMountPoints().filter((m) => m === dir || m.startsWith(dir + '/'));
  }
}

/** MS_* flags re-exported for the storage ops. */
export { MS };
