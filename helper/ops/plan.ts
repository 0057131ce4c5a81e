/**
 * Re-validation of the plans control sends (the helper trusts nothing that crosses the socket)
 * and their serialisation into kata-init's plan format (helper/native/KATA-INIT.md).
 *
 * Rules follow upstream Kata where it has them: rootfs (rustjail validator.rs `rootfs`: absolute,
 * existing directory, lexically clean path equal to its canonical path), mount destinations and
 * masked/readonly paths (rustjail mount.rs `check_paths`: absolute, no ".."), /proc protection
 * (mount.rs `check_proc_mount`), sysctl allow-list (validator.rs `sysctl`), env entries
 * (kata-sys-util validate.rs `valid_env`, but refused instead of skipped: control has already
 * sanitised them), hostname needs a uts namespace (validator.rs); capabilities are numbers 0..63
 * turned into masks (absent = every set empty), oomScoreAdj -1000..1000, a seccomp profile
 * ({@link validateSeccomp}; rustjail seccomp.rs: known actions, operators, architectures and the
 * three flags upstream accepts). kata-init applies the
 * /proc rule again to the symlink-resolved target (KATA-INIT.md `mount`). Every failure is a StatusError
 * INVALID_ARGUMENT naming the field and value, except a user namespace (UNIMPLEMENTED) and an
 * oversized plan (RESOURCE_EXHAUSTED).
 */
import { validateCgroupPlan } from '../../shared/cgroup';
import { DEFAULT_HOOK_TIMEOUT_SEC } from './hooks';
import type { CgroupPlan, DeviceNodePlan, HookPlan, HooksPlan, IdMappingPlan, IdMappingsPlan } from '../../shared/protocol';
import { MAX_ID_MAP_LINES, validateIdMappings } from '../../shared/idmap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  Code,
  SECCOMP_ACTIONS,
  SECCOMP_ARCHES,
  SECCOMP_FLAGS,
  SECCOMP_LIMITS,
  SECCOMP_OPS,
  StatusError,
  type ContainerPlan,
  type MountPlan,
  type NamespacePlan,
  type ProcessPlan,
  type SeccompAction,
  type SeccompArgPlan,
  type SeccompOp,
  type SeccompPlan,
  type SeccompSyscallPlan,
} from '../../shared/protocol';
import { invalidArgument as invalid } from '../../shared/protocol';

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
function ownKeysOnly<T extends object>(table: T): T {
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

/** OCI namespace type → kernel name (config-linux.md#namespaces). */
const NAMESPACE_NAMES: Record<string, KernelNamespace | undefined> = ownKeysOnly({
  pid: 'pid',
  network: 'net',
  mount: 'mnt',
  ipc: 'ipc',
  uts: 'uts',
  cgroup: 'cgroup',
  user: 'user',
});

/** Default PATH kata-init and the mock use when the plan's env has none. */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

// ---------------------------------------------------------------------------------------------
// Validated shapes

export interface ValidRlimit {
  name: string;
  resource: number;
  /** Decimal text; "-1" = RLIM_INFINITY. */
  soft: string;
  hard: string;
}

/**
 * Capability sets as 64-bit masks (bit n = capability n), in kata-init's `caps` record order.
 * Decimal text would be the same numbers; bigint keeps bits 53..63 exact.
 */
export interface ValidCapabilities {
  bounding: bigint;
  effective: bigint;
  permitted: bigint;
  inheritable: bigint;
  ambient: bigint;
}

/**
 * A re-validated ProcessPlan whose rlimits are resolved to kernel resource numbers and whose
 * capability sets are masks (absent capabilities = every set empty).
 */
export type ValidProcessPlan = Omit<ProcessPlan, 'rlimits' | 'capabilities'> & {
  rlimits: ValidRlimit[];
  capabilities: ValidCapabilities;
};

export interface ValidNamespace {
  type: KernelNamespace;
  /** "" = a new namespace; else the file to setns to. */
  path: string;
}

export interface ValidMount {
  source: string;
  /** Absolute, normalised path inside the container. */
  destination: string;
  fstype: string;
  flags: number;
  data: string;
  bind: boolean;
  /** Propagation changes to apply after all mounts (MS_* with MS_REC where asked). */
  propagation: number[];
}

export interface ValidContainerPlan {
  rootfs: string;
  readonly: boolean;
  hostname: string;
  namespaces: ValidNamespace[];
  /** The id mappings of the container's new user namespace (written by the launcher). */
  idMappings?: IdMappingsPlan;
  /** SELinux context of the container's mounts (helper/ops/selinux.ts applies or drops it). */
  mountLabel?: string;
  mounts: ValidMount[];
  maskedPaths: string[];
  readonlyPaths: string[];
  sysctl: [string, string][];
  /** MS_* flags for "/" before anything else. */
  rootfsPropagation: number;
  /**
   * Validated with the helper's host-namespace switch on (kata-init `hostns 1`): the plan may
   * lack a mount namespace (kata-init chroots) or join a mount or user namespace by path.
   */
  hostns?: boolean;
  process: ValidProcessPlan;
  /** The container's seccomp profile (compiled by the launcher, helper/ops/seccomp.ts); absent = none. */
  seccomp?: ValidSeccomp;
  /**
   * Mount everything but the /dev tmpfs and devpts `nodev` (kata-init `nodev` record): without a
   * device cgroup, unless the spec's device rules allow every device, device nodes that the
   * image ships (or a bind brings) must not be openable. True unless plan.devicesAllowAll or the
   * cgroup plan carries device rules (cgroup.resources.devices, enforced by the device cgroup).
   */
  nodev: boolean;
  /** The container's cgroup (re-validated, shared/cgroup.ts); absent: none of its own. */
  cgroup?: CgroupPlan;
  /** OCI linux.devices to create (kata-init `device` records, after the mounts). */
  devices: DeviceNodePlan[];
  /** The spec's OCI hooks (re-validated; every kind present, possibly empty). */
  hooks: Required<HooksPlan>;
  /**
   * The OCI state JSON of the createContainer and startContainer hooks, split around the pid
   * (kata-init's `hookstate`). Not from the wire: set by ContainerBackend from the container's
   * id, OCI version, annotations and bundle.
   */
  hookStates?: Partial<Record<'createContainer' | 'startContainer', [string, string]>>;
  /**
   * kata-init stops before pivot_root (`runtimehooks`) for the helper to run the prestart and
   * createRuntime hooks. Not from the wire: set by ContainerBackend.
   */
  runtimeHooksBeforePivot?: boolean;
}

export interface PlanCheckOptions {
  /**
   * Check the host side of paths: rootfs exists, is a directory and has no symlink; bind
   * sources exist (and are canonicalised); namespace files exist and are allowed. The mock
   * helper turns this off (only the shape of paths is checked).
   */
  hostChecks: boolean;
  /** With hostChecks: may a container join namespace `type` at `path`? Default: any existing file. */
  namespacePathAllowed?: (type: KernelNamespace, nsPath: string) => boolean;
  /** With hostChecks: the host's cgroup layout (default: read from the host). */
  hostCgroups?: HostCgroups;
  /**
   * The helper's own host-namespace switch (helper --allow-host-namespaces,
   * KATA_AGENT_ALLOW_HOST_NAMESPACES=1; docs/ARCHITECTURE.md "Host namespaces"): a plan may omit
   * the mount and pid namespaces (the container shares the helper's) and may join any namespace
   * file by path, a user namespace included. Off (default): what control asks makes no difference.
   */
  allowHostNamespaces?: boolean;
}

/** How a refusal names the helper's switch for host namespaces. */
export const HOST_NAMESPACES_OPTION = 'the helper\'s --allow-host-namespaces (KATA_AGENT_ALLOW_HOST_NAMESPACES=1) is off';

// ---------------------------------------------------------------------------------------------
// Primitive checks

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !Buffer.isBuffer(v);
}

function checkString(v: unknown, field: string, max = MAX_STRING): string {
  if (typeof v !== 'string') throw invalid(`${field} must be a string, got ${describe(v)}`);
  if (Buffer.byteLength(v) > max) throw invalid(`${field} is longer than ${max} bytes`);
  if (v.includes('\0')) throw invalid(`${field} ${JSON.stringify(v)} contains a NUL byte`);
  return v;
}

function checkBool(v: unknown, field: string): boolean {
  if (typeof v !== 'boolean') throw invalid(`${field} must be a boolean, got ${describe(v)}`);
  return v;
}

function checkArray(v: unknown, field: string, max: number): unknown[] {
  if (!Array.isArray(v)) throw invalid(`${field} must be an array, got ${describe(v)}`);
  if (v.length > max) throw invalid(`${field} has ${v.length} entries, more than ${max}`);
  return v;
}

function checkId(v: unknown, field: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > MAX_ID) {
    throw invalid(`${field} must be an integer in 0..${MAX_ID}, got ${describe(v)}`);
  }
  return v;
}

function describe(v: unknown): string {
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'string') return JSON.stringify(v.length > 80 ? v.slice(0, 80) + '…' : v);
  if (Buffer.isBuffer(v)) return `bytes(${v.length})`;
  if (Array.isArray(v)) return 'an array';
  if (v === null) return 'null';
  if (typeof v === 'object') return 'a map';
  return String(v);
}

/** An absolute path without NUL, at most PATH_MAX bytes. */
function checkAbsolute(v: unknown, field: string): string {
  const p = checkString(v, field, MAX_PATH);
  if (!p.startsWith('/')) throw invalid(`${field} ${JSON.stringify(p)} is not an absolute path`);
  return p;
}

/** An absolute path with no ".." component, normalised ("//" and "." removed). */
function checkConfinedPath(v: unknown, field: string): string {
  const p = checkAbsolute(v, field);
  if (p.split('/').includes('..')) throw invalid(`${field} ${JSON.stringify(p)} contains a ".." component`);
  const normal = path.posix.normalize(p);
  return normal.length > 1 && normal.endsWith('/') ? normal.slice(0, -1) : normal;
}

const RLIM_INFINITY = 2n ** 64n - 1n;

/**
 * An rlimit value: a non-negative integer (number or, from msgpack uint64, bigint). Anything at
 * or above 2^64 - 1 is RLIM_INFINITY (a JS number cannot hold 2^64 - 1 exactly: it rounds up).
 */
function checkRlimitValue(v: unknown, field: string): bigint {
  let n: bigint;
  if (typeof v === 'bigint') n = v;
  else if (typeof v === 'number' && Number.isInteger(v)) n = BigInt(v);
  else if (v === Infinity) n = RLIM_INFINITY;
  else throw invalid(`${field} must be a non-negative integer, got ${describe(v)}`);
  if (n < 0n) throw invalid(`${field} must not be negative, got ${n}`);
  return n > RLIM_INFINITY ? RLIM_INFINITY : n;
}

function rlimitText(v: bigint): string {
  return v >= RLIM_INFINITY ? '-1' : v.toString();
}

// ---------------------------------------------------------------------------------------------
// Process

const CAP_SETS = ['bounding', 'effective', 'permitted', 'inheritable', 'ambient'] as const;

/**
 * Validate ProcessPlan.capabilities: absent → every set empty (never "keep the helper's own");
 * else a map with the five sets, each an array of at most 64 integers 0..63 (duplicates are
 * merged). Throws StatusError INVALID_ARGUMENT naming the set and the value.
 */
export function validateCapabilities(raw: unknown, field: string): ValidCapabilities {
  const out: ValidCapabilities = { bounding: 0n, effective: 0n, permitted: 0n, inheritable: 0n, ambient: 0n };
  if (raw === undefined || raw === null) return out;
  if (!isRecord(raw)) throw invalid(`${field} must be a map, got ${describe(raw)}`);
  for (const set of CAP_SETS) {
    const list = checkArray(raw[set] ?? [], `${field}.${set}`, MAX_CAPABILITY + 1);
    for (const [i, cap] of list.entries()) {
      if (typeof cap !== 'number' || !Number.isInteger(cap) || cap < 0 || cap > MAX_CAPABILITY) {
        throw invalid(`${field}.${set}[${i}] must be a capability number 0..${MAX_CAPABILITY}, got ${describe(cap)}`);
      }
      out[set] |= 1n << BigInt(cap);
    }
  }
  return out;
}

/**
 * Validate a ProcessPlan (OCI `process`, config.md#process) as received from control:
 * capabilities per {@link validateCapabilities} (absent = none), oomScoreAdj an integer in
 * -1000..1000 when present. Throws StatusError INVALID_ARGUMENT naming the field and value.
 */
export function validateProcessPlan(raw: unknown, field = 'process'): ValidProcessPlan {
  if (!isRecord(raw)) throw invalid(`${field} must be a map, got ${describe(raw)}`);
  const args = checkArray(raw.args, `${field}.args`, MAX_ARGS).map((a, i) => checkString(a, `${field}.args[${i}]`));
  if (args.length === 0) throw invalid(`${field}.args must not be empty`);
  if (args[0] === '') throw invalid(`${field}.args[0] must not be empty`);
  const env = checkArray(raw.env, `${field}.env`, MAX_ENV).map((e, i) => {
    const s = checkString(e, `${field}.env[${i}]`);
    if (s.indexOf('=') <= 0) throw invalid(`${field}.env[${i}] ${JSON.stringify(s)} is not KEY=VALUE`);
    return s;
  });
  const cwd = checkAbsolute(raw.cwd, `${field}.cwd`);
  const uid = checkId(raw.uid, `${field}.uid`);
  const gid = checkId(raw.gid, `${field}.gid`);
  const additionalGids = checkArray(raw.additionalGids, `${field}.additionalGids`, MAX_GROUPS).map((g, i) =>
    checkId(g, `${field}.additionalGids[${i}]`),
  );
  const terminal = checkBool(raw.terminal, `${field}.terminal`);
  const noNewPrivileges = checkBool(raw.noNewPrivileges, `${field}.noNewPrivileges`);
  const seen = new Set<string>();
  const rlimits = checkArray(raw.rlimits, `${field}.rlimits`, 64).map((r, i) => {
    const f = `${field}.rlimits[${i}]`;
    if (!isRecord(r)) throw invalid(`${f} must be a map`);
    const name = checkString(r.type, `${f}.type`, 64);
    const resource = RLIMITS[name];
    if (resource === undefined) throw invalid(`${f}.type ${JSON.stringify(name)} is not a known RLIMIT_* name`);
    if (seen.has(name)) throw invalid(`${f}.type ${name} appears more than once`);
    seen.add(name);
    const soft = checkRlimitValue(r.soft, `${f}.soft`);
    const hard = checkRlimitValue(r.hard, `${f}.hard`);
    if (soft > hard) throw invalid(`${f}: soft limit ${soft} is above the hard limit ${hard}`);
    return { name, resource, soft: rlimitText(soft), hard: rlimitText(hard) };
  });
  const capabilities = validateCapabilities(raw.capabilities, `${field}.capabilities`);
  let oomScoreAdj: number | undefined;
  if (raw.oomScoreAdj !== undefined && raw.oomScoreAdj !== null) {
    const v = raw.oomScoreAdj;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < OOM_SCORE_ADJ_MIN || v > OOM_SCORE_ADJ_MAX) {
      throw invalid(`${field}.oomScoreAdj must be an integer in ${OOM_SCORE_ADJ_MIN}..${OOM_SCORE_ADJ_MAX}, got ${describe(v)}`);
    }
    oomScoreAdj = v;
  }
  const selinuxLabel = raw.selinuxLabel === undefined ? undefined : checkSelinuxLabel(raw.selinuxLabel, `${field}.selinuxLabel`);
  return { args, env, cwd, uid, gid, additionalGids, terminal, noNewPrivileges, rlimits, capabilities, oomScoreAdj, ...(selinuxLabel ? { selinuxLabel } : {}) };
}

/** An SELinux context: 1..4096 bytes, no NUL, no newline, no quote (it goes into mount data as context="..."). */
function checkSelinuxLabel(v: unknown, field: string): string {
  const s = checkString(v, field, 4096);
  if (s === '' || /[\n"]/.test(s)) throw invalid(`${field} ${JSON.stringify(s)} is not an SELinux context`);
  return s;
}

/** The value of PATH in a plan's env (the last entry wins, as getenv would see it), or the default. */
export function planPath(env: string[]): string {
  let found: string | undefined;
  for (const e of env) if (e.startsWith('PATH=')) found = e.slice(5);
  return found ?? DEFAULT_PATH;
}

// ---------------------------------------------------------------------------------------------
// Namespaces

/**
 * Validate OCI namespaces: known types, no duplicates, "" or an absolute path; joining a user
 * namespace by path is UNIMPLEMENTED (a new one is fine). Paths are checked against the host only with `hostChecks`.
 */
export function validateNamespaces(raw: unknown, opts: PlanCheckOptions, field = 'namespaces'): ValidNamespace[] {
  const list = checkArray(raw, field, 16);
  const seen = new Set<string>();
  return list.map((n, i) => {
    const f = `${field}[${i}]`;
    if (!isRecord(n)) throw invalid(`${f} must be a map`);
    const ociType = checkString(n.type, `${f}.type`, 32);
    if (!(ociType in NAMESPACE_NAMES)) throw invalid(`${f}.type ${JSON.stringify(ociType)} is not a namespace type`);
    const type = NAMESPACE_NAMES[ociType];
    if (type === undefined) throw invalid(`${f}.type ${JSON.stringify(ociType)} is not a namespace type`);
    if (seen.has(type)) throw invalid(`${f}: namespace ${ociType} appears more than once`);
    seen.add(type);
    const p = n.path === undefined ? '' : checkString(n.path, `${f}.path`, MAX_PATH);
    if (type === 'user' && p !== '' && opts.allowHostNamespaces !== true) {
      throw new StatusError(Code.UNIMPLEMENTED, `${f}.path ${JSON.stringify(p)}: joining an existing user namespace is not supported (a new one with idMappings is; ${HOST_NAMESPACES_OPTION})`);
    }
    if (p !== '') {
      if (!p.startsWith('/')) throw invalid(`${f}.path ${JSON.stringify(p)} is not an absolute path`);
      if (opts.hostChecks) {
        // With the switch on any file is taken: kata-init checks on the fd it joins by that it
        // is a namespace file (nsfs) of this type (KATA-INIT.md `ns`).
        if (opts.allowHostNamespaces !== true && opts.namespacePathAllowed && !opts.namespacePathAllowed(type, p)) {
          throw invalid(
            `${f}.path ${JSON.stringify(p)} is not a ${ociType} namespace of this sandbox (a tracked process's /proc/<pid>/ns/${type}, a sandbox namespace file${type === 'net' ? ', or /run/netns/<name>' : ''}; ${HOST_NAMESPACES_OPTION})`,
          );
        }
        if (!fs.existsSync(p)) throw invalid(`${f}.path ${JSON.stringify(p)} does not exist`);
      }
    }
    return { type, path: p };
  });
}

/**
 * Re-check ContainerPlan.idMappings: required (uid and gid lists) with a new user namespace,
 * refused without one; each list as shared/idmap.ts validateIdMappings. INVALID_ARGUMENT
 * naming idMappings.<uid|gid>[i].<part>.
 */
function validateIdMappingsPlan(raw: unknown, userns: boolean): IdMappingsPlan | undefined {
  if (raw === undefined) {
    if (userns) throw invalid('a user namespace needs idMappings (uid and gid mappings)');
    return undefined;
  }
  if (!userns) throw invalid('idMappings given without a user namespace');
  if (!isRecord(raw)) throw invalid(`idMappings must be a map, got ${describe(raw)}`);
  const list = (k: 'uid' | 'gid'): IdMappingPlan[] =>
    checkArray(raw[k] ?? [], `idMappings.${k}`, MAX_ID_MAP_LINES + 1).map((m, i) => {
      if (!isRecord(m)) throw invalid(`idMappings.${k}[${i}] must be a map, got ${describe(m)}`);
      return m as unknown as IdMappingPlan;
    });
  return { uid: validateIdMappings('idMappings.uid', list('uid')), gid: validateIdMappings('idMappings.gid', list('gid')) };
}

// ---------------------------------------------------------------------------------------------
// Mounts

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

function validateMount(raw: unknown, i: number, opts: PlanCheckOptions): ValidMount[] {
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

// ---------------------------------------------------------------------------------------------
// cgroup mounts

/** The host's cgroup layout, as far as container `cgroup` mounts need it. */
export interface HostCgroups {
  /** cgroup v2 only (/sys/fs/cgroup/cgroup.controllers exists). */
  unified: boolean;
  /** Mount points of the v1 hierarchies (fstype cgroup), e.g. /sys/fs/cgroup/memory. */
  v1: string[];
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

// ---------------------------------------------------------------------------------------------
// Sysctl (rustjail validator.rs sysctl)

const IPC_SYSCTLS = new Set([
  'kernel.msgmax',
  'kernel.msgmnb',
  'kernel.msgmni',
  'kernel.sem',
  'kernel.shmall',
  'kernel.shmmax',
  'kernel.shmmni',
  'kernel.shm_rmid_forced',
]);

const SYSCTL_KEY_RE = /^[A-Za-z0-9_]+(\.[A-Za-z0-9_@:+-]+)+$/;

/**
 * Does the plan give the container a `type` namespace of its own: a new one, or a path that is
 * not the helper's own namespace of that type (compared by device and inode with hostChecks;
 * without them a path is taken as the container's)? Namespaced sysctls are written into it,
 * so joining the guest's namespace would set the guest's values.
 */
function ownNamespace(type: 'net' | 'ipc' | 'uts', namespaces: ValidNamespace[], opts: PlanCheckOptions): boolean {
  const ns = namespaces.find((n) => n.type === type);
  if (!ns) return false;
  if (ns.path === '' || !opts.hostChecks) return true;
  try {
    const theirs = fs.statSync(ns.path);
    const ours = fs.statSync(`/proc/self/ns/${type}`);
    return theirs.dev !== ours.dev || theirs.ino !== ours.ino;
  } catch {
    return false;
  }
}

function validateSysctl(raw: unknown, namespaces: ValidNamespace[], opts: PlanCheckOptions): [string, string][] {
  if (raw === undefined || raw === null) return [];
  if (!isRecord(raw)) throw invalid(`sysctl must be a map, got ${describe(raw)}`);
  const entries = Object.entries(raw);
  if (entries.length > MAX_SYSCTL) throw invalid(`sysctl has ${entries.length} entries, more than ${MAX_SYSCTL}`);
  return entries.map(([key, value]) => {
    if (!SYSCTL_KEY_RE.test(key) || key.length > 256) throw invalid(`sysctl key ${JSON.stringify(key)} is not a valid name`);
    const v = checkString(value, `sysctl[${key}]`, 4096);
    if (IPC_SYSCTLS.has(key) || key.startsWith('fs.mqueue.')) {
      if (!ownNamespace('ipc', namespaces, opts)) throw invalid(`sysctl ${key} needs an ipc namespace of the container's own (not the guest's)`);
    } else if (key.startsWith('net.')) {
      // Upstream allows net.* always; without a network namespace of its own the container
      // would set the guest's (a container turned on the guest's ip_forward).
      if (!ownNamespace('net', namespaces, opts)) {
        throw invalid(`sysctl ${key} needs a network namespace of the container's own (not the guest's)`);
      }
    } else if (key === 'kernel.domainname') {
      if (!ownNamespace('uts', namespaces, opts)) throw invalid(`sysctl ${key} needs a uts namespace of the container's own (not the guest's)`);
    } else {
      throw invalid(`sysctl ${key} is not allowed in a container`);
    }
    return [key, v] as [string, string];
  });
}

// ---------------------------------------------------------------------------------------------
// Seccomp (OCI config-linux.md#seccomp; Kata rustjail seccomp.rs)

/** A re-validated {@link SeccompPlan}: arguments as bigints (unsigned 64-bit), duplicates merged. */
export interface ValidSeccomp {
  defaultAction: SeccompAction;
  defaultErrnoRet?: number;
  architectures: string[];
  flags: string[];
  syscalls: (Omit<SeccompSyscallPlan, 'args'> & { args: (Omit<SeccompArgPlan, 'value' | 'valueTwo'> & { value: bigint; valueTwo: bigint })[] })[];
}

const U64_MAX = 2n ** 64n - 1n;

function checkU64(v: unknown, field: string): bigint {
  if (typeof v === 'bigint' && v >= 0n && v <= U64_MAX) return v;
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return BigInt(v);
  throw invalid(`${field} must be an unsigned 64-bit integer (a safe integer or a bigint), got ${describe(v)}`);
}

function checkSeccompAction(v: unknown, field: string): SeccompAction {
  if (typeof v !== 'string' || !(SECCOMP_ACTIONS as readonly string[]).includes(v)) {
    throw invalid(`${field} must be one of ${SECCOMP_ACTIONS.join(', ')}, got ${describe(v)}`);
  }
  return v as SeccompAction;
}

function checkErrno(v: unknown, field: string): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > SECCOMP_LIMITS.errno) {
    throw invalid(`${field} must be an integer in 0..${SECCOMP_LIMITS.errno}, got ${describe(v)}`);
  }
  return v;
}

/**
 * Validate ContainerPlan.seccomp (absent/null → undefined): actions from SECCOMP_ACTIONS (never
 * SCMP_ACT_NOTIFY), architectures from SECCOMP_ARCHES, flags from SECCOMP_FLAGS, every rule with
 * 1.. names (non-empty, NUL-free, ≤ 256 bytes), at most 6 arguments with an index 0..5, an
 * operator from SECCOMP_OPS and unsigned 64-bit values, errnos 0..65535, the sizes of
 * SECCOMP_LIMITS. Syscall names are not looked up here (the compiler skips unknown ones).
 * Throws StatusError INVALID_ARGUMENT naming the field and value.
 */
export function validateSeccomp(raw: unknown, field = 'seccomp'): ValidSeccomp | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (!isRecord(raw)) throw invalid(`${field} must be a map, got ${describe(raw)}`);
  const plan = raw as Partial<Record<keyof SeccompPlan, unknown>>;
  const defaultAction = checkSeccompAction(plan.defaultAction, `${field}.defaultAction`);
  const defaultErrnoRet = checkErrno(plan.defaultErrnoRet, `${field}.defaultErrnoRet`);
  const architectures = [
    ...new Set(
      checkArray(plan.architectures ?? [], `${field}.architectures`, SECCOMP_LIMITS.architectures).map((a, i) => {
        if (typeof a !== 'string' || !(SECCOMP_ARCHES as readonly string[]).includes(a)) {
          throw invalid(`${field}.architectures[${i}] is not a known SCMP_ARCH_* name, got ${describe(a)}`);
        }
        return a;
      }),
    ),
  ];
  const flags = [
    ...new Set(
      checkArray(plan.flags ?? [], `${field}.flags`, SECCOMP_FLAGS.length * 4).map((f, i) => {
        if (typeof f !== 'string' || !(SECCOMP_FLAGS as readonly string[]).includes(f)) {
          throw invalid(`${field}.flags[${i}] must be one of ${SECCOMP_FLAGS.join(', ')}, got ${describe(f)}`);
        }
        return f;
      }),
    ),
  ];
  let totalNames = 0;
  const syscalls = checkArray(plan.syscalls ?? [], `${field}.syscalls`, SECCOMP_LIMITS.syscalls).map((r, i) => {
    const f = `${field}.syscalls[${i}]`;
    if (!isRecord(r)) throw invalid(`${f} must be a map, got ${describe(r)}`);
    const names = checkArray(r.names, `${f}.names`, SECCOMP_LIMITS.namesPerRule).map((n, j) => {
      const name = checkString(n, `${f}.names[${j}]`, SECCOMP_LIMITS.nameBytes);
      if (name === '') throw invalid(`${f}.names[${j}] must not be empty`);
      return name;
    });
    if (names.length === 0) throw invalid(`${f}.names must not be empty`);
    totalNames += names.length;
    if (totalNames > SECCOMP_LIMITS.names) throw invalid(`${field}.syscalls has more than ${SECCOMP_LIMITS.names} syscall names in all`);
    const action = checkSeccompAction(r.action, `${f}.action`);
    const errnoRet = checkErrno(r.errnoRet, `${f}.errnoRet`);
    const args = checkArray(r.args ?? [], `${f}.args`, SECCOMP_LIMITS.args).map((a, k) => {
      const af = `${f}.args[${k}]`;
      if (!isRecord(a)) throw invalid(`${af} must be a map, got ${describe(a)}`);
      const index = a.index;
      if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index > 5) {
        throw invalid(`${af}.index must be an integer in 0..5, got ${describe(index)}`);
      }
      if (typeof a.op !== 'string' || !(SECCOMP_OPS as readonly string[]).includes(a.op)) {
        throw invalid(`${af}.op must be one of ${SECCOMP_OPS.join(', ')}, got ${describe(a.op)}`);
      }
      return { index, op: a.op as SeccompOp, value: checkU64(a.value, `${af}.value`), valueTwo: checkU64(a.valueTwo ?? 0, `${af}.valueTwo`) };
    });
    return { names, action, args, ...(errnoRet !== undefined ? { errnoRet } : {}) };
  });
  return { defaultAction, architectures, flags, syscalls, ...(defaultErrnoRet !== undefined ? { defaultErrnoRet } : {}) };
}

// ---------------------------------------------------------------------------------------------
// Container

/**
 * Validate a ContainerPlan from control. Besides the field checks above: the container must have
 * a new mount namespace (its rootfs is pivoted into); the rootfs has no ".." component and is
 * not "/"; with `hostChecks` it must be an existing directory whose path has no symlink
 * ("/"-clean and equal to its realpath); `net.*` sysctls need a network namespace of the
 * container's own (new, or with hostChecks a path that is not the helper's); `remount` only on
 * a bind mount.
 */
export function validateContainerPlan(raw: unknown, opts: PlanCheckOptions): ValidContainerPlan {
  if (!isRecord(raw)) throw invalid(`plan must be a map, got ${describe(raw)}`);
  const plan = raw as Partial<Record<keyof ContainerPlan, unknown>>;
  const rootfs = checkAbsolute(plan.rootfs, 'rootfs');
  // Refused by the shape alone, whatever hostChecks says: a ".." component (the canonical-path
  // check below compares against path.resolve, which folds "..") and the guest root itself.
  if (rootfs.split('/').includes('..')) throw invalid(`rootfs ${JSON.stringify(rootfs)} contains a ".." component`);
  if (path.posix.normalize(rootfs) === '/' || /^\/+\.?\/*$/.test(rootfs)) {
    throw invalid(`rootfs ${JSON.stringify(rootfs)} is the guest root "/" (a container needs a rootfs below it)`);
  }
  if (opts.hostChecks) {
    let real: string;
    try {
      real = fs.realpathSync(rootfs);
    } catch {
      throw invalid(`rootfs ${JSON.stringify(rootfs)} does not exist`);
    }
    if (path.resolve(rootfs) !== real) {
      throw invalid(`rootfs ${JSON.stringify(rootfs)} is not a canonical path (it resolves to ${JSON.stringify(real)})`);
    }
    if (!fs.statSync(real).isDirectory()) throw invalid(`rootfs ${JSON.stringify(rootfs)} is not a directory`);
  }
  const readonly = checkBool(plan.readonly, 'readonly');
  const namespaces = validateNamespaces(plan.namespaces, opts);
  const hostns = opts.allowHostNamespaces === true;
  const mnt = namespaces.find((n) => n.type === 'mnt');
  if (!hostns && (!mnt || mnt.path !== '')) {
    throw invalid(`a container needs a new mount namespace (namespaces: {type: "mount", path: ""}; ${HOST_NAMESPACES_OPTION})`);
  }
  const user = namespaces.find((n) => n.type === 'user');
  const idMappings = validateIdMappingsPlan(plan.idMappings, user !== undefined && user.path === '');
  const mountLabel = plan.mountLabel === undefined ? undefined : checkSelinuxLabel(plan.mountLabel, 'mountLabel');
  const hostname = checkString(plan.hostname ?? '', 'hostname', HOST_NAME_MAX);
  if (hostname !== '' && !namespaces.some((n) => n.type === 'uts')) {
    throw invalid(`hostname ${JSON.stringify(hostname)} needs a uts namespace`);
  }
  if (opts.hostChecks && !hostns && !namespaces.some((n) => n.type === 'pid')) {
    // Without one, container root could signal or ptrace the helper (uid 0 to uid 0 needs no capability).
    throw invalid(`a container needs its own pid namespace (namespaces: {type: "pid", path: ""} or the sandbox's; ${HOST_NAMESPACES_OPTION})`);
  }
  const mounts = checkArray(plan.mounts ?? [], 'mounts', MAX_MOUNTS).flatMap((m, i) => validateMount(m, i, opts));
  const maskedPaths = checkArray(plan.maskedPaths ?? [], 'maskedPaths', MAX_PATH_LIST).map((p, i) =>
    checkConfinedPath(p, `maskedPaths[${i}]`),
  );
  const readonlyPaths = checkArray(plan.readonlyPaths ?? [], 'readonlyPaths', MAX_PATH_LIST).map((p, i) =>
    checkConfinedPath(p, `readonlyPaths[${i}]`),
  );
  const sysctl = validateSysctl(plan.sysctl, namespaces, opts);
  const propName = checkString(plan.rootfsPropagation ?? '', 'rootfsPropagation', 32);
  let rootfsPropagation: number;
  if (propName === '') {
    rootfsPropagation = MS.SLAVE | MS.REC;
  } else {
    const p = PROPAGATION[propName];
    if (p === undefined) throw invalid(`rootfsPropagation ${JSON.stringify(propName)} is not a propagation type`);
    rootfsPropagation = p | MS.REC;
  }
  const proc = validateProcessPlan(plan.process);
  const seccomp = validateSeccomp(plan.seccomp);
  const devicesAllowAll = plan.devicesAllowAll === undefined ? false : checkBool(plan.devicesAllowAll, 'devicesAllowAll');
  const cgroup = plan.cgroup !== undefined ? validateCgroupPlan(plan.cgroup) : undefined;
  // Device rules in the cgroup plan are enforced by the device cgroup (or the container is
  // refused), so the nodev stand-in is not needed then.
  const devicesEnforced = cgroup?.resources.devices !== undefined;
  const nodev = !devicesAllowAll && !devicesEnforced;
  if (hostns && !mnt) {
    checkSharedMountNamespace({ readonly, maskedPaths, readonlyPaths, nodev, propName });
  }
  return {
    nodev,
    ...(hostns ? { hostns: true } : {}),
    rootfs,
    readonly,
    hostname,
    namespaces,
    ...(idMappings ? { idMappings } : {}),
    ...(mountLabel ? { mountLabel } : {}),
    mounts,
    maskedPaths,
    readonlyPaths,
    sysctl,
    rootfsPropagation,
    process: proc,
    ...(seccomp ? { seccomp } : {}),
    ...(cgroup !== undefined ? { cgroup } : {}),
    devices: validateDevices(plan.devices),
    hooks: validateHooks(plan.hooks),
  };
}

/**
 * A container without a mount namespace of its own (host-namespace mode) shares the helper's:
 * whatever would change mounts outside its rootfs is refused (runc refuses masked and read-only
 * paths without one too: configs/validate "unable to restrict sys entries without a private MNT
 * namespace"). INVALID_ARGUMENT naming the field.
 */
function checkSharedMountNamespace(p: { readonly: boolean; maskedPaths: string[]; readonlyPaths: string[]; nodev: boolean; propName: string }): void {
  const why = 'needs a mount namespace of the container (it shares the helper\'s)';
  if (p.readonly) throw invalid(`readonly ${why}`);
  if (p.maskedPaths.length > 0) throw invalid(`maskedPaths ${JSON.stringify(p.maskedPaths[0])} ${why}`);
  if (p.readonlyPaths.length > 0) throw invalid(`readonlyPaths ${JSON.stringify(p.readonlyPaths[0])} ${why}`);
  if (p.propName !== '') throw invalid(`rootfsPropagation ${JSON.stringify(p.propName)} ${why}`);
  if (p.nodev) throw invalid(`device rules that cannot be enforced (nodev on every mount) ${why}: give a device cgroup or allow every device`);
}

// ---------------------------------------------------------------------------------------------
// Serialisation (KATA-INIT.md "Plan format")

/** Builds a kata-init plan: NUL-terminated fields, each record a tag and its fields. */
export class PlanWriter {
  private readonly parts: string[] = [];

  record(tag: string, ...fields: (string | number)[]): this {
    this.parts.push(tag, ...fields.map(String));
    return this;
  }

  /** The plan bytes; RESOURCE_EXHAUSTED when larger than kata-init accepts. */
  toBuffer(): Buffer {
    const buf = Buffer.from(this.parts.join('\0') + '\0');
    if (buf.length > MAX_PLAN_BYTES) {
      throw new StatusError(Code.RESOURCE_EXHAUSTED, `plan of ${buf.length} bytes exceeds kata-init's ${MAX_PLAN_BYTES}-byte limit`);
    }
    return buf;
  }
}

/**
 * A compiled seccomp filter as kata-init loads it (KATA-INIT.md `seccomp`): the BPF program
 * (struct sock_filter array, 8 bytes per instruction) and the SECCOMP_FILTER_FLAG_* bits for
 * seccomp(2). Made by helper/ops/seccomp.ts compileSeccomp.
 */
export interface SeccompFilter {
  bpf: Buffer;
  flags: number;
}

function writeSeccomp(w: PlanWriter, filter: SeccompFilter | undefined): void {
  if (!filter) return;
  w.record('seccomp', filter.bpf.toString('hex'));
  if (filter.flags !== 0) w.record('seccompflags', filter.flags);
}

function writeProcess(w: PlanWriter, p: ValidProcessPlan): void {
  if (p.oomScoreAdj !== undefined) w.record('oomscoreadj', p.oomScoreAdj);
  for (const r of p.rlimits) w.record('rlimit', r.resource, r.soft, r.hard);
  const c = p.capabilities;
  w.record('caps', c.bounding.toString(), c.effective.toString(), c.permitted.toString(), c.inheritable.toString(), c.ambient.toString());
  w.record('gid', p.gid);
  for (const g of p.additionalGids) w.record('group', g);
  w.record('uid', p.uid);
  w.record('cwd', p.cwd);
  w.record('nonewprivs', p.noNewPrivileges ? 1 : 0);
  for (const a of p.args) w.record('arg', a);
  for (const e of p.env) w.record('env', e);
  w.record('tty', p.terminal ? 1 : 0);
  if (p.selinuxLabel) w.record('selinux', p.selinuxLabel);
}

/**
 * Re-check ContainerPlan.devices (control/oci.ts devicesFromOci made them): at most 256, path
 * absolute below /dev without "..", type c/u/b/p, major/minor 0..2^32-1, fileMode 0..0o7777,
 * uid/gid ids. INVALID_ARGUMENT naming devices[i].
 */
function validateDevices(raw: unknown): DeviceNodePlan[] {
  if (raw === undefined) return [];
  return checkArray(raw, 'devices', 256).map((d, i) => {
    const f = `devices[${i}]`;
    if (!isRecord(d)) throw invalid(`${f} must be a map, got ${describe(d)}`);
    const p = checkConfinedPath(d.path, `${f}.path`);
    if (!p.startsWith('/dev/')) throw invalid(`${f}.path ${JSON.stringify(p)} is not below /dev`);
    const type = d.type;
    if (type !== 'c' && type !== 'u' && type !== 'b' && type !== 'p') throw invalid(`${f}.type must be "c", "u", "b" or "p", got ${describe(type)}`);
    const num = (v: unknown, k: string, max: number): number => {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) throw invalid(`${f}.${k} must be an integer in 0..${max}, got ${describe(v)}`);
      return v;
    };
    return {
      path: p,
      type,
      major: num(d.major, 'major', 0xffffffff),
      minor: num(d.minor, 'minor', 0xffffffff),
      fileMode: num(d.fileMode, 'fileMode', 0o7777),
      uid: checkId(d.uid, `${f}.uid`),
      gid: checkId(d.gid, `${f}.gid`),
    };
  });
}

/**
 * Re-check ContainerPlan.hooks (control/oci.ts hooksFromOci): a map of prestart, createRuntime,
 * createContainer, startContainer, poststart, poststop lists (at most 64 each) of {path absolute, args, env (strings without
 * NUL), timeoutSec 1..3600 or absent}. INVALID_ARGUMENT naming hooks.<kind>[i].
 */
const HOOK_KINDS = ['prestart', 'createRuntime', 'createContainer', 'startContainer', 'poststart', 'poststop'] as const;

function validateHooks(raw: unknown): Required<HooksPlan> {
  const out: Required<HooksPlan> = { prestart: [], createRuntime: [], createContainer: [], startContainer: [], poststart: [], poststop: [] };
  if (raw === undefined) return out;
  if (!isRecord(raw)) throw invalid(`hooks must be a map, got ${describe(raw)}`);
  for (const kind of Object.keys(raw)) if (!(kind in out)) throw invalid(`hooks.${kind} is not a hook kind the helper runs`);
  for (const kind of HOOK_KINDS) {
    if (raw[kind] === undefined) continue;
    out[kind] = checkArray(raw[kind], `hooks.${kind}`, 64).map((h, i): HookPlan => {
      const f = `hooks.${kind}[${i}]`;
      if (!isRecord(h)) throw invalid(`${f} must be a map, got ${describe(h)}`);
      const args = checkArray(h.args ?? [], `${f}.args`, 1024).map((a, j) => checkString(a, `${f}.args[${j}]`));
      const env = checkArray(h.env ?? [], `${f}.env`, 1024).map((e, j) => checkString(e, `${f}.env[${j}]`));
      const t = h.timeoutSec;
      if (t !== undefined && (typeof t !== 'number' || !Number.isInteger(t) || t < 1 || t > 3600)) {
        throw invalid(`${f}.timeoutSec must be an integer in 1..3600, got ${describe(t)}`);
      }
      return { path: checkAbsolute(h.path, `${f}.path`), args, env, ...(t !== undefined ? { timeoutSec: t } : {}) };
    });
  }
  return out;
}

/**
 * kata-init `create` plan for a validated container, with its compiled seccomp filter if any;
 * kata-init moves itself into each of `cgroupDirs` (cgroup v1 directories, `cgroupjoin`) first.
 */
export function serializeCreatePlan(plan: ValidContainerPlan, seccomp?: SeccompFilter, cgroupDirs: readonly string[] = []): Buffer {
  const w = new PlanWriter();
  for (const d of cgroupDirs) w.record('cgroupjoin', d);
  w.record('rootfs', plan.rootfs);
  w.record('readonly', plan.readonly ? 1 : 0);
  w.record('nodev', plan.nodev ? 1 : 0);
  w.record('propagation', plan.rootfsPropagation);
  if (plan.hostns) w.record('hostns', 1);
  for (const ns of plan.namespaces) w.record('ns', ns.type, ns.path);
  const uts = plan.namespaces.find((n) => n.type === 'uts');
  if (plan.hostname !== '' && uts && uts.path === '') w.record('hostname', plan.hostname);
  for (const m of plan.mounts) w.record('mount', m.source, m.destination, m.fstype, m.flags, m.data);
  for (const m of plan.mounts) for (const p of m.propagation) w.record('mountprop', m.destination, p);
  for (const p of plan.maskedPaths) w.record('masked', p);
  for (const p of plan.readonlyPaths) w.record('readonlypath', p);
  for (const [k, v] of plan.sysctl) w.record('sysctl', k, v);
  for (const d of plan.devices) w.record('device', d.path, d.type === 'u' ? 'c' : d.type, d.major, d.minor, d.fileMode, d.uid, d.gid);
  writeProcess(w, plan.process);
  writeSeccomp(w, seccomp);
  writeInContainerHooks(w, plan);
  if (plan.runtimeHooksBeforePivot) w.record('runtimehooks', 1);
  return w.toBuffer();
}

/**
 * `hook`/`hookarg`/`hookenv` records of the createContainer and startContainer hooks and their
 * `hookstate` (KATA-INIT.md). Env entries without "=" are skipped (Kata valid_env), as the
 * helper's own hook runner does.
 */
function writeInContainerHooks(w: PlanWriter, plan: ValidContainerPlan): void {
  for (const kind of ['createContainer', 'startContainer'] as const) {
    const hooks = plan.hooks[kind];
    if (hooks.length === 0) continue;
    const state = plan.hookStates?.[kind];
    if (state) w.record('hookstate', kind, state[0], state[1]);
    for (const h of hooks) {
      w.record('hook', kind, h.path, h.timeoutSec ?? DEFAULT_HOOK_TIMEOUT_SEC);
      for (const a of h.args) w.record('hookarg', a);
      for (const e of h.env) if (e.indexOf('=') > 0) w.record('hookenv', e);
    }
  }
}

/**
 * kata-init `exec` plan: join `cgroupDirs` (cgroup v1 directories) and `namespaces` (all with
 * paths), chroot into `root` when given (a container sharing the helper's mount namespace:
 * /proc/<init>/root), and run `proc` under the container's `seccomp` filter.
 */
export function serializeExecPlan(namespaces: ValidNamespace[], proc: ValidProcessPlan, seccomp?: SeccompFilter, cgroupDirs: readonly string[] = [], root?: string): Buffer {
  const w = new PlanWriter();
  for (const d of cgroupDirs) w.record('cgroupjoin', d);
  for (const ns of namespaces) w.record('ns', ns.type, ns.path);
  if (root !== undefined) w.record('root', root);
  writeProcess(w, proc);
  writeSeccomp(w, seccomp);
  return w.toBuffer();
}

/** kata-init `sandbox` plan: persistent ipc/uts namespaces bound onto `files`. */
export function serializeSandboxPlan(hostname: string, files: { type: 'ipc' | 'uts'; path: string }[]): Buffer {
  const w = new PlanWriter();
  if (hostname !== '') w.record('hostname', hostname);
  for (const f of files) w.record('nsfile', f.type, f.path);
  return w.toBuffer();
}

/** Re-exported for callers that only need the namespace mapping. */
export function kernelNamespaceName(ociType: NamespacePlan['type']): KernelNamespace | undefined {
  return NAMESPACE_NAMES[ociType];
}
