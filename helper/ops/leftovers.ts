/**
 * What a helper that died (SIGKILL, crash) leaves behind, and its clean-up by the next helper's
 * start-up (docs/ARCHITECTURE.md "Restart and adoption", helper loss).
 *
 * A helper records each container it creates in a journal directory (`<state-dir>/containers`,
 * one JSON file per container: the init's pid and start time, the container's cgroup) and
 * deletes the record when the container is removed. A helper starting next to records left by
 * its predecessor kills every process of each recorded cgroup (cgroup.kill or freeze + SIGKILL)
 * and the recorded init (only when its start time still matches: no pid reuse), removes the
 * cgroup directories, then detaches every mount below its state directory (the sandbox
 * namespace bind mounts, deepest first). Containers cannot be re-adopted by a new helper: the
 * parent ends of their stdio and their pidfds died with the old one.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadNative } from '../../shared/native';
import type { Logger } from '../../shared/log';
import type { CgroupManager, ContainerCgroup } from './cgroup';

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

/** What {@link LeftoverJournal.cleanUp} did. */
export interface CleanUpSummary {
  containers: number;
  /** Recorded cgroups not empty after the kill bound. */
  cgroupsLeft: number;
  /** Mount points detached. */
  unmounted: string[];
}

const MNT_DETACH = 2;

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

/** Mount points strictly below `root`, from /proc/self/mountinfo, deepest first. */
export function mountsBelow(root: string): string[] {
  let info: string;
  try {
    info = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  const prefix = `${path.resolve(root)}/`;
  const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  const points = info
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((mp): mp is string => mp !== undefined)
    .map(unescape)
    .filter((mp) => mp.startsWith(prefix));
  return [...new Set(points)].sort((a, b) => b.split('/').length - a.split('/').length || b.length - a.length);
}

/** The journal of a helper's containers (see the module comment). Never throws. */
export class LeftoverJournal {
  constructor(
    readonly dir: string,
    private readonly log: Logger,
  ) {}

  private file(containerId: string): string {
    return path.join(this.dir, `${containerId}.json`);
  }

  /** Record a created container (atomically: write + rename). */
  record(rec: LeftoverRecord): void {
    try {
      fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      const tmp = `${this.file(rec.containerId)}.tmp`;
      fs.writeFileSync(tmp, JSON.stringify({ ...rec, ...(rec.cgroup ? { cgroup: withoutProcessHandles(rec.cgroup), deviceProgram: rec.cgroup.deviceProgram !== undefined } : {}) }), { mode: 0o600 });
      fs.renameSync(tmp, this.file(rec.containerId));
    } catch (err) {
      this.log.warn({ err, containerId: rec.containerId }, 'cannot record the container for a clean-up after a helper crash');
    }
  }

  /** The container is gone: drop its record. */
  forget(containerId: string): void {
    try {
      fs.rmSync(this.file(containerId), { force: true });
    } catch {
      // nothing to forget
    }
  }

  /**
   * Kill and remove what the records of a previous helper name, then detach every mount below
   * `stateDir`. Call before serving anything (no container of ours exists yet).
   */
  async cleanUp(cgroups: CgroupManager | undefined, stateDir: string): Promise<CleanUpSummary> {
    const summary: CleanUpSummary = { containers: 0, cgroupsLeft: 0, unmounted: [] };
    let names: string[] = [];
    try {
      names = fs.readdirSync(this.dir).filter((n) => n.endsWith('.json') || n.endsWith('.tmp'));
    } catch {
      // no journal: a first start
    }
    for (const name of names) {
      const file = path.join(this.dir, name);
      let rec: LeftoverRecord | null = null;
      try {
        rec = JSON.parse(fs.readFileSync(file, 'utf8')) as LeftoverRecord;
      } catch (err) {
        this.log.warn({ err, file }, 'unreadable leftover record dropped');
      }
      if (rec && typeof rec.pid === 'number' && typeof rec.containerId === 'string') {
        summary.containers++;
        if (rec.pid > 0 && rec.startTime !== null && processStartTime(rec.pid) === rec.startTime) {
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
      fs.rmSync(file, { force: true });
    }
    const native = loadNative();
    for (const mp of mountsBelow(stateDir)) {
      try {
        native.umount2(mp, MNT_DETACH);
        summary.unmounted.push(mp);
      } catch (err) {
        this.log.warn({ err, mountPoint: mp }, 'cannot detach a mount left by a previous helper');
      }
    }
    if (summary.unmounted.length > 0) this.log.warn({ mounts: summary.unmounted }, 'detached mounts left by a previous helper');
    return summary;
  }
}
