/**
 * What a helper that died (SIGKILL, crash) leaves behind, and its clean-up by the next helper's
 * start-up (docs/ARCHITECTURE.md "Restart and adoption", helper loss).
 *
 * A helper records each container it creates in a journal directory (`<state-dir>/containers`,
 * one JSON file per container: the init's pid and start time, the container's cgroup) and
 * deletes the record when the container is removed. Likewise every mount it makes in the
 * guest's mount namespace (storages, the watchable tmpfs and binds, the resolv.conf bind:
 * {@link JournalingMounter}) is recorded in `<state-dir>/mounts` (one JSON file per mount point:
 * the point, the topmost directory created for it, the mount namespace) when made and dropped
 * when unmounted. Records are written atomically (temporary file + rename).
 *
 * A helper starting next to records left by its predecessor kills every process of each
 * recorded cgroup (cgroup.kill or freeze + SIGKILL) and the recorded init (only when its start
 * time still matches: no pid reuse), removes the cgroup directories, detaches each recorded
 * mount point that mountinfo still lists (deepest first, MNT_DETACH|UMOUNT_NOFOLLOW, only when
 * the path has no symlink on the way), removes the directories created for them when empty, then
 * detaches every mount below its state directory (the sandbox namespace bind mounts). Containers
 * cannot be re-adopted by a new helper: the parent ends of their stdio and their pidfds died
 * with the old one.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadNative } from '../../shared/native';
import type { Logger } from '../../shared/log';
import type { CgroupManager, ContainerCgroup } from './cgroup';
import { MS, parseMountPoints, type Mounter } from './mount';

/** One journal record. */
export interface LeftoverRecord {
  containerId: string;
  /** Host pid of the container's init. */
  pid: number;
  /** Field 22 of /proc/<pid>/stat (start time in clock ticks) when recorded; null if unreadable. */
  startTime: string | null;
  cgroup?: ContainerCgroup;
  /** A cgroup v2 device program was attached to the cgroup (its handle is not journaled). */
  deviceProgram?: boolean;
}

/** One mount record: a mount the helper made in the guest's mount namespace. */
export interface MountRecord {
  /** Absolute, normalised mount point. */
  mountPoint: string;
  /** The topmost directory created for it (mkdir -p), when the helper created any. */
  created?: string;
  /** Inode of the helper's /proc/self/ns/mnt when recorded (0 when unreadable). */
  mntns: number;
}

/** What {@link LeftoverJournal.cleanUp} did. */
export interface CleanUpSummary {
  containers: number;
  /** Recorded cgroups not empty after the kill bound. */
  cgroupsLeft: number;
  /** Mount points detached (recorded ones first, then those below the state dir). */
  unmounted: string[];
  /** Empty directories a previous helper had created for its mounts, removed. */
  removedDirs: string[];
}

const MNT_DETACH = 2;
const UMOUNT_NOFOLLOW = 8;

/** Inode of this process's mount namespace (0 when /proc is unreadable). */
export function mountNamespace(): number {
  try {
    return fs.statSync('/proc/self/ns/mnt').ino;
  } catch {
    return 0;
  }
}

/**
 * The cgroup record without what only means something inside the helper process that made it:
 * the device program's handle is an fd number of that process (in the next helper it would name
 * an unrelated fd, which the clean-up would close).
 */
function withoutProcessHandles(cg: ContainerCgroup): ContainerCgroup {
  const { deviceProgram: _fd, ...rest } = cg;
  void _fd;
  return rest;
}

/** Start time of `pid` (field 22 of /proc/<pid>/stat), or null when the process is gone. */
export function processStartTime(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

/** The mount points of a mountinfo text (field 5, octal escapes decoded), each once. */
export function mountPointsOf(info: string): Set<string> {
  return new Set(parseMountPoints(info));
}

function readMountinfo(): string {
  try {
    return fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return '';
  }
}

/** `paths` deepest first (more components, then longer). */
function deepestFirst(paths: Iterable<string>): string[] {
  return [...new Set(paths)].sort((a, b) => b.split('/').length - a.split('/').length || b.length - a.length);
}

/** Mount points strictly below `root`, from /proc/self/mountinfo (or `info`), deepest first. */
export function mountsBelow(root: string, info: string = readMountinfo()): string[] {
  const prefix = `${path.resolve(root)}/`;
  return deepestFirst([...mountPointsOf(info)].filter((mp) => mp.startsWith(prefix)));
}

/** What {@link detachRecordedMounts} needs from the system (tests pass fakes). */
export interface MountCleanupSystem {
  /** The current /proc/self/mountinfo text. */
  mountinfo(): string;
  /** umount2(2); throws the errno error. */
  umount2(target: string, flags: number): void;
  /** Inode of the current mount namespace. */
  mntns(): number;
}

/** The real {@link MountCleanupSystem}. */
export function kernelMountCleanupSystem(): MountCleanupSystem {
  const native = loadNative();
  return { mountinfo: readMountinfo, umount2: (t, f) => native.umount2(t, f), mntns: mountNamespace };
}

/** True when `p` (absolute, normalised) resolves to itself: no symlink on the way. */
export function noSymlinkOnTheWay(p: string): boolean {
  try {
    return fs.realpathSync(p) === p;
  } catch {
    return false;
  }
}

/**
 * Detach the mount at `mountPoint` (MNT_DETACH|UMOUNT_NOFOLLOW) only when the path resolves to
 * itself (no symlink planted on the way by a process that can write below it). Returns false,
 * detaching nothing, when it does not; throws the errno error of umount2(2).
 */
export function detachWithoutFollowing(mountPoint: string, umount2: (target: string, flags: number) => void = (t, f) => loadNative().umount2(t, f)): boolean {
  if (!noSymlinkOnTheWay(mountPoint)) return false;
  umount2(mountPoint, MNT_DETACH | UMOUNT_NOFOLLOW);
  return true;
}

/**
 * Undo the mounts of `records` (a dead helper's journal): each mount point that the current
 * mountinfo still lists and that resolves to itself (no symlink planted on the way) is detached
 * (MNT_DETACH|UMOUNT_NOFOLLOW), deepest first; records of another mount namespace are skipped.
 * Then every directory from a mount point up to its recorded `created` directory is removed
 * when empty (rmdir: never follows the last component; parents checked symlink-free), deepest
 * first. Never throws; failures go to `log`.
 */
export function detachRecordedMounts(records: MountRecord[], sys: MountCleanupSystem, log: Logger): { unmounted: string[]; removedDirs: string[] } {
  const out = { unmounted: [] as string[], removedDirs: [] as string[] };
  const ns = sys.mntns();
  const ours = records.filter((r) => {
    if (r.mntns !== 0 && ns !== 0 && r.mntns !== ns) {
      log.warn({ mountPoint: r.mountPoint }, 'a leftover mount record of another mount namespace: skipped');
      return false;
    }
    return true;
  });
  for (const mp of deepestFirst(ours.map((r) => r.mountPoint))) {
    if (!mountPointsOf(sys.mountinfo()).has(mp)) continue; // already gone (or never made)
    try {
      if (!detachWithoutFollowing(mp, sys.umount2)) {
        log.warn({ mountPoint: mp }, 'a leftover mount point resolves elsewhere (symlink on the way): not detached');
        continue;
      }
      out.unmounted.push(mp);
    } catch (err) {
      log.warn({ err, mountPoint: mp }, 'cannot detach a mount left by a previous helper');
    }
  }
  const dirs: string[] = [];
  for (const r of ours) {
    if (!r.created || (r.created !== r.mountPoint && !r.mountPoint.startsWith(`${r.created}/`))) continue;
    for (let d = r.mountPoint; d.length >= r.created.length; d = path.dirname(d)) dirs.push(d);
  }
  for (const d of deepestFirst(dirs)) {
    if (mountPointsOf(sys.mountinfo()).has(d) || !noSymlinkOnTheWay(d)) continue;
    try {
      fs.rmdirSync(d);
      out.removedDirs.push(d);
    } catch {
      // not empty (or gone): left in place
    }
  }
  return out;
}

/** Atomically write `value` as `<dir>/<name>.json` (temporary file + rename). Throws the fs error. */
function writeRecord(dir: string, name: string, value: unknown): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, `${name}.json`);
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(value), { mode: 0o600 });
  fs.renameSync(tmp, file);
}

/** Delete `<dir>/<name>.json` if present. Never throws. */
function dropRecord(dir: string, name: string): void {
  try {
    fs.rmSync(path.join(dir, `${name}.json`), { force: true });
  } catch {
    // nothing to forget
  }
}

/** Read and delete every record of `dir` (unreadable ones and temporaries are dropped with a warning). */
function takeRecords(dir: string, log: Logger): unknown[] {
  let names: string[] = [];
  try {
    names = fs.readdirSync(dir).filter((n) => n.endsWith('.json') || n.endsWith('.tmp'));
  } catch {
    return []; // no journal: a first start
  }
  const out: unknown[] = [];
  for (const name of names) {
    const file = path.join(dir, name);
    try {
      if (name.endsWith('.json')) out.push(JSON.parse(fs.readFileSync(file, 'utf8')) as unknown);
    } catch (err) {
      log.warn({ err, file }, 'unreadable leftover record dropped');
    }
    fs.rmSync(file, { force: true });
  }
  return out;
}

function isMountRecord(v: unknown): v is MountRecord {
  const r = v as Partial<MountRecord> | null;
  return (
    typeof r === 'object' && r !== null && typeof r.mountPoint === 'string' && path.isAbsolute(r.mountPoint) && path.normalize(r.mountPoint) === r.mountPoint &&
    (r.created === undefined || (typeof r.created === 'string' && path.isAbsolute(r.created) && path.normalize(r.created) === r.created)) &&
    typeof r.mntns === 'number'
  );
}

/**
 * The journal of a helper's containers (`<stateDir>/containers`) and guest mounts
 * (`<stateDir>/mounts`); see the module comment. Recording never throws (a failure is logged).
 */
export class LeftoverJournal {
  /** `<stateDir>/containers`. */
  readonly dir: string;
  /** `<stateDir>/mounts`. */
  readonly mountsDir: string;
  private readonly mntns = mountNamespace();

  constructor(
    readonly stateDir: string,
    private readonly log: Logger,
    private readonly sys: () => MountCleanupSystem = kernelMountCleanupSystem,
  ) {
    this.dir = path.join(stateDir, 'containers');
    this.mountsDir = path.join(stateDir, 'mounts');
  }

  /** Record a created container (atomically: write + rename). */
  record(rec: LeftoverRecord): void {
    try {
      writeRecord(this.dir, rec.containerId, { ...rec, ...(rec.cgroup ? { cgroup: withoutProcessHandles(rec.cgroup), deviceProgram: rec.cgroup.deviceProgram !== undefined } : {}) });
    } catch (err) {
      this.log.warn({ err, containerId: rec.containerId }, 'cannot record the container for a clean-up after a helper crash');
    }
  }

  /** The container is gone: drop its record. */
  forget(containerId: string): void {
    dropRecord(this.dir, containerId);
  }

  /** File name of a mount point's record (a hash: mount points are paths). */
  private mountName(mountPoint: string): string {
    return crypto.createHash('sha256').update(mountPoint).digest('hex').slice(0, 32);
  }

  /** Record a mount the helper made at `mountPoint`; `created`: the topmost directory it created for it. */
  recordMount(mountPoint: string, created?: string): void {
    const rec: MountRecord = { mountPoint, mntns: this.mntns, ...(created ? { created } : {}) };
    try {
      writeRecord(this.mountsDir, this.mountName(mountPoint), rec);
    } catch (err) {
      this.log.warn({ err, mountPoint }, 'cannot record the mount for a clean-up after a helper crash');
    }
  }

  /** The mount at `mountPoint` is gone: drop its record. */
  forgetMount(mountPoint: string): void {
    dropRecord(this.mountsDir, this.mountName(mountPoint));
  }

  /**
   * Kill and remove what the container records of a previous helper name, undo its recorded
   * mounts ({@link detachRecordedMounts}), then detach every mount below the state directory.
   * Call before serving anything (no container or mount of ours exists yet).
   */
  async cleanUp(cgroups: CgroupManager | undefined): Promise<CleanUpSummary> {
    const summary: CleanUpSummary = { containers: 0, cgroupsLeft: 0, unmounted: [], removedDirs: [] };
    for (const raw of takeRecords(this.dir, this.log)) {
      const rec = raw as Partial<LeftoverRecord> | null;
      if (!rec || typeof rec.pid !== 'number' || typeof rec.containerId !== 'string') continue;
      summary.containers++;
      if (rec.pid > 0 && typeof rec.startTime === 'string' && processStartTime(rec.pid) === rec.startTime) {
        try {
          process.kill(rec.pid, 'SIGKILL');
        } catch {
          // gone meanwhile
        }
      }
      if (rec.cgroup && cgroups) {
        const cg = withoutProcessHandles(rec.cgroup);
        if ((rec.deviceProgram === true || rec.cgroup.deviceProgram !== undefined) && cg.v2 && !cg.created.includes(cg.v2)) {
          // its fd died with the old helper; the program stays attached to a dir we keep
          // (it only denies more: every attached program must allow)
          this.log.warn({ dir: cg.v2 }, 'a device program of a previous helper may stay attached to a cgroup it did not create');
        }
        if (!(await cgroups.killAll(cg))) summary.cgroupsLeft++;
        cgroups.remove(cg);
      }
      this.log.warn({ containerId: rec.containerId, pid: rec.pid, cgroup: rec.cgroup?.path }, 'killed a container left by a previous helper');
    }
    const sys = this.sys();
    const mounts = takeRecords(this.mountsDir, this.log).filter(isMountRecord);
    const undone = detachRecordedMounts(mounts, sys, this.log);
    summary.unmounted.push(...undone.unmounted);
    summary.removedDirs.push(...undone.removedDirs);
    for (const mp of mountsBelow(this.stateDir, sys.mountinfo())) {
      try {
        sys.umount2(mp, MNT_DETACH);
        summary.unmounted.push(mp);
      } catch (err) {
        this.log.warn({ err, mountPoint: mp }, 'cannot detach a mount left by a previous helper');
      }
    }
    if (summary.unmounted.length > 0 || summary.removedDirs.length > 0) {
      this.log.warn({ mounts: summary.unmounted, dirs: summary.removedDirs }, 'detached mounts left by a previous helper');
    }
    return summary;
  }
}

/**
 * `target` with symlinks resolved (what mount(2) mounts on and mountinfo lists, e.g. an
 * /etc/resolv.conf that links elsewhere); `target` itself when it does not resolve.
 */
function resolved(target: string): string {
  try {
    return fs.realpathSync(target);
  } catch {
    return target;
  }
}

/**
 * A {@link Mounter} that journals every mount it makes ({@link LeftoverJournal.recordMount},
 * before mount(2): a crash right after the mount still leaves a record; a record of a mount
 * that failed is dropped at once) and forgets it when unmounted. Remounts (MS_REMOUNT) are not
 * new mounts and are not recorded.
 */
export class JournalingMounter implements Mounter {
  constructor(
    private readonly inner: Mounter,
    private readonly journal: LeftoverJournal,
  ) {}

  mount(source: string, target: string, fstype: string, flags: number, data: string, created?: string): void {
    if ((flags & MS.REMOUNT) !== 0) return this.inner.mount(source, target, fstype, flags, data, created);
    const point = resolved(target);
    this.journal.recordMount(point, created);
    try {
      this.inner.mount(source, target, fstype, flags, data, created);
    } catch (err) {
      this.journal.forgetMount(point); // mount(2) failed: nothing of ours is there
      throw err;
    }
  }

  umount(target: string): void {
    const point = resolved(target);
    try {
      this.inner.umount(target);
    } catch (err) {
      if ((err as { code?: string }).code === 'EINVAL') this.journal.forgetMount(point); // not a mount point (any more)
      throw err;
    }
    this.journal.forgetMount(point);
  }

  isMounted(target: string): boolean {
    return this.inner.isMounted(target);
  }

  mountsUnder(dir: string): string[] {
    return this.inner.mountsUnder(dir);
  }
}
