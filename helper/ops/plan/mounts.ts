/** Re-validation of a plan's mounts: options, /proc protection, bind sources, cgroup mounts. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { MountPlan } from '../../../shared/protocol';
import { invalidArgument as invalid } from '../../../shared/protocol';
import { MAX_PATH, MAX_MOUNT_OPTIONS, MS, FLAG_OPTIONS, PROPAGATION, ALLOWED_MOUNT_TYPES } from './limits';
import type { ValidMount, PlanCheckOptions, HostCgroups } from './types';
import { isRecord, checkString, checkArray, checkConfinedPath } from './checks';

/** /proc entries a bind mount may cover (rustjail mount.rs check_proc_mount; LXCFS-style overrides). */
const PROC_BIND_ALLOWED = new Set([
  '/proc/cpuinfo',
  '/proc/diskstats',
  '/proc/meminfo',
  '/proc/stat',
  '/proc/swaps',
  '/proc/uptime',
  '/proc/loadavg',
  '/proc/net/dev',
]);

/**
 * Map OCI mount options to mount(2) arguments: MS_* flags, propagation changes and the data
 * string (every option that is not a flag, e.g. "mode=755,size=65536k").
 */
export function parseMountOptions(options: string[]): { flags: number; propagation: number[]; data: string } {
  let flags = 0;
  const propagation: number[] = [];
  const data: string[] = [];
  for (const opt of options) {
    const flag = FLAG_OPTIONS[opt];
    if (flag) {
      if (flag.set) flags |= flag.set;
      if (flag.clear) flags &= ~flag.clear;
      continue;
    }
    const prop = PROPAGATION[opt];
    if (prop !== undefined) {
      propagation.push(prop);
      continue;
    }
    if (opt !== '') data.push(opt);
  }
  return { flags, propagation, data: data.join(',') };
}

export function validateMount(raw: unknown, i: number, opts: PlanCheckOptions): ValidMount[] {
  const f = `mounts[${i}]`;
  if (!isRecord(raw)) throw invalid(`${f} must be a map`);
  const m = raw as Partial<Record<keyof MountPlan, unknown>>;
  const destination = checkConfinedPath(m.destination, `${f}.destination`);
  const type = checkString(m.type ?? '', `${f}.type`, 64);
  let source = checkString(m.source ?? '', `${f}.source`, MAX_PATH);
  const options = checkArray(m.options ?? [], `${f}.options`, MAX_MOUNT_OPTIONS).map((o, j) =>
    checkString(o, `${f}.options[${j}]`),
  );
  const { flags: parsedFlags, propagation, data } = parseMountOptions(options);
  let flags = parsedFlags;
  const bind = type === 'bind' || (flags & MS.BIND) !== 0;
  if (!bind && !ALLOWED_MOUNT_TYPES.has(type)) {
    throw invalid(`${f} (${destination}): mount type ${JSON.stringify(type)} is not allowed`);
  }
  // "local": the Kata runtime's disk emptyDir, sent with rbind options; mounted as a bind, as upstream rustjail does.
  if (bind && type !== 'bind' && type !== '' && type !== 'none' && type !== 'local' && !ALLOWED_MOUNT_TYPES.has(type)) {
    throw invalid(`${f} (${destination}): mount type ${JSON.stringify(type)} is not allowed`);
  }
  if ((flags & MS.REMOUNT) !== 0 && !bind) {
    // MS_REMOUNT on a new mount would reconfigure the superblock already at the destination
    // (a guest filesystem bound there by an earlier mount: `ro` made the guest's disk
    // read-only, `size=8k` shrank a guest tmpfs). For a bind it means MS_BIND|MS_REMOUNT of
    // the new mount only (kata-init).
    throw invalid(`${f} (${destination}): "remount" applies only to a bind mount, not to a ${JSON.stringify(type)} mount`);
  }
  if (bind) flags |= MS.BIND;
  if (destination === '/') throw invalid(`${f}: a mount on "/" is not allowed (use the rootfs)`);
  if (destination === '/proc' && type !== 'proc') {
    throw invalid(`${f}: only a proc filesystem may be mounted on /proc, got ${JSON.stringify(type)}`);
  }
  if (destination.startsWith('/proc/') && !(bind && PROC_BIND_ALLOWED.has(destination))) {
    throw invalid(`${f}: mounting over ${destination} is not allowed`);
  }
  if (bind) {
    if (!source.startsWith('/')) throw invalid(`${f}.source ${JSON.stringify(source)} of a bind mount is not an absolute path`);
    if (opts.hostChecks) {
      try {
        source = fs.realpathSync(source);
      } catch {
        throw invalid(`${f}.source ${JSON.stringify(source)} of a bind mount does not exist`);
      }
    }
  }
  const mount: ValidMount = { source, destination, fstype: bind ? 'bind' : type, flags, data, bind, propagation };
  if (!bind && type === 'cgroup' && opts.hostChecks) return expandCgroupMount(mount, opts.hostCgroups ?? readHostCgroups());
  return [mount];
}

/** Undo the octal escapes of /proc/self/mountinfo fields (\040 = space ...). */
function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Read the host's cgroup layout from /sys/fs/cgroup and /proc/self/mountinfo. */
export function readHostCgroups(): HostCgroups {
  const unified = fs.existsSync('/sys/fs/cgroup/cgroup.controllers');
  const v1: string[] = [];
  let text = '';
  try {
    text = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    // no /proc: no v1 hierarchies known
  }
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-');
    if (sep < 0 || f[sep + 1] !== 'cgroup') continue;
    v1.push(unescapeMountField(f[4]));
  }
  return { unified, v1 };
}

/**
 * An OCI `cgroup` mount (config.md#mounts; what runc and rustjail do with it): on a cgroup v2
 * host a cgroup2 mount; on a v1 host a tmpfs at the destination with one bind per host
 * hierarchy (destination/<basename of its mount point>), the binds taking the mount's
 * ro/nosuid/nodev/noexec flags. (kata-init mounts exactly what the plan says.)
 */
export function expandCgroupMount(m: ValidMount, host: HostCgroups): ValidMount[] {
  if (host.unified || host.v1.length === 0) return [{ ...m, fstype: 'cgroup2', source: m.source || 'cgroup2' }];
  const keep = m.flags & (MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC);
  const out: ValidMount[] = [
    {
      source: 'tmpfs',
      destination: m.destination,
      fstype: 'tmpfs',
      flags: MS.NOSUID | MS.NODEV | MS.NOEXEC,
      data: 'mode=755',
      bind: false,
      propagation: m.propagation,
    },
  ];
  for (const mountPoint of host.v1) {
    const name = path.posix.basename(mountPoint);
    if (name === '' || name === '.' || name === '..') continue;
    out.push({
      source: mountPoint,
      destination: `${m.destination}/${name}`,
      fstype: 'bind',
      flags: MS.BIND | MS.REC | keep,
      data: '',
      bind: true,
      propagation: [],
    });
  }
  return out;
}
