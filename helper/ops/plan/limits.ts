/** Limits, mount(2) flag tables, RLIMIT_* and namespace names of the kata-init plan (helper/native/KATA-INIT.md). */

// ---------------------------------------------------------------------------------------------
// Limits

export const MAX_MOUNTS = 1024;
export const MAX_ENV = 4096;
export const MAX_ARGS = 4096;
export const MAX_STRING = 64 * 1024;
export const MAX_PATH = 4096;
export const MAX_PATH_LIST = 1024;
export const MAX_SYSCTL = 1024;
export const MAX_GROUPS = 65536;
export const MAX_MOUNT_OPTIONS = 256;
/** kata-init reads at most this many plan bytes. */
export const MAX_PLAN_BYTES = 1024 * 1024;
/** Largest valid uid/gid: (uid_t)-1 is "no change", so 2^32 - 2. */
export const MAX_ID = 2 ** 32 - 2;
export const HOST_NAME_MAX = 64;
/** Capability numbers the plan may name: a 64-bit mask's bits (Linux has 0..40 today). */
export const MAX_CAPABILITY = 63;
/** proc(5) /proc/pid/oom_score_adj range. */
export const OOM_SCORE_ADJ_MIN = -1000;
export const OOM_SCORE_ADJ_MAX = 1000;

// ---------------------------------------------------------------------------------------------
// mount(2) flags (linux/mount.h)

export const MS = {
  RDONLY: 0x1,
  NOSUID: 0x2,
  NODEV: 0x4,
  NOEXEC: 0x8,
  SYNCHRONOUS: 0x10,
  REMOUNT: 0x20,
  MANDLOCK: 0x40,
  DIRSYNC: 0x80,
  NOATIME: 0x400,
  NODIRATIME: 0x800,
  BIND: 0x1000,
  MOVE: 0x2000,
  REC: 0x4000,
  UNBINDABLE: 0x20000,
  PRIVATE: 0x40000,
  SLAVE: 0x80000,
  SHARED: 0x100000,
  RELATIME: 0x200000,
  STRICTATIME: 0x1000000,
} as const;

/**
 * `table` without a prototype: a name from a plan such as "constructor" or "__proto__" finds
 * nothing instead of an Object.prototype member (which was taken as a namespace type, a
 * propagation or an rlimit and reached kata-init as garbage).
 */
export function ownKeysOnly<T extends object>(table: T): T {
  return Object.setPrototypeOf(table, null) as T;
}

/** Mount options that set (`set`) or clear (`clear`) MS_* flags (mount(8) option names). */
export const FLAG_OPTIONS: Record<string, { set?: number; clear?: number }> = ownKeysOnly({
  defaults: {},
  ro: { set: MS.RDONLY },
  rw: { clear: MS.RDONLY },
  nosuid: { set: MS.NOSUID },
  suid: { clear: MS.NOSUID },
  nodev: { set: MS.NODEV },
  dev: { clear: MS.NODEV },
  noexec: { set: MS.NOEXEC },
  exec: { clear: MS.NOEXEC },
  sync: { set: MS.SYNCHRONOUS },
  async: { clear: MS.SYNCHRONOUS },
  dirsync: { set: MS.DIRSYNC },
  mand: { set: MS.MANDLOCK },
  nomand: { clear: MS.MANDLOCK },
  noatime: { set: MS.NOATIME },
  atime: { clear: MS.NOATIME },
  nodiratime: { set: MS.NODIRATIME },
  diratime: { clear: MS.NODIRATIME },
  relatime: { set: MS.RELATIME },
  norelatime: { clear: MS.RELATIME },
  strictatime: { set: MS.STRICTATIME },
  nostrictatime: { clear: MS.STRICTATIME },
  bind: { set: MS.BIND },
  rbind: { set: MS.BIND | MS.REC },
  remount: { set: MS.REMOUNT },
});

/** Propagation words (mount options and OCI linux.rootfsPropagation) → MS_* flags. */
export const PROPAGATION: Record<string, number> = ownKeysOnly({
  private: MS.PRIVATE,
  rprivate: MS.PRIVATE | MS.REC,
  shared: MS.SHARED,
  rshared: MS.SHARED | MS.REC,
  slave: MS.SLAVE,
  rslave: MS.SLAVE | MS.REC,
  unbindable: MS.UNBINDABLE,
  runbindable: MS.UNBINDABLE | MS.REC,
});

/** Filesystem types a container mount may have ("bind" = a bind mount). */
export const ALLOWED_MOUNT_TYPES = new Set(['bind', 'proc', 'sysfs', 'tmpfs', 'devpts', 'mqueue', 'cgroup', 'cgroup2']);

/** RLIMIT_* names → resource numbers (asm-generic/resource.h; the same on x86_64 and arm64). */
export const RLIMITS: Record<string, number> = ownKeysOnly({
  RLIMIT_CPU: 0,
  RLIMIT_FSIZE: 1,
  RLIMIT_DATA: 2,
  RLIMIT_STACK: 3,
  RLIMIT_CORE: 4,
  RLIMIT_RSS: 5,
  RLIMIT_NPROC: 6,
  RLIMIT_NOFILE: 7,
  RLIMIT_MEMLOCK: 8,
  RLIMIT_AS: 9,
  RLIMIT_LOCKS: 10,
  RLIMIT_SIGPENDING: 11,
  RLIMIT_MSGQUEUE: 12,
  RLIMIT_NICE: 13,
  RLIMIT_RTPRIO: 14,
  RLIMIT_RTTIME: 15,
});

/** Namespace names as kata-init and /proc/<pid>/ns/ spell them. */
export type KernelNamespace = 'pid' | 'net' | 'mnt' | 'ipc' | 'uts' | 'cgroup' | 'user';

/** Default PATH kata-init and the mock use when the plan's env has none. */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
