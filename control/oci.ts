/**
 * OCI spec (the agent protocol's `grpc.Spec`, protos/oci.proto) → the helper's plans
 * ({@link ContainerPlan}, {@link ProcessPlan} in shared/protocol.ts), with validation.
 *
 * Everything here is pure: no I/O, no state. Every rejection is a StatusError INVALID_ARGUMENT
 * whose message names the field (in proto spelling, e.g. `OCI.Linux.Sysctl["vm.swappiness"]`)
 * and the offending value; a feature we cannot honour yet is UNIMPLEMENTED rather than
 * silently dropped.
 *
 * Sources: OCI runtime-spec config.md / config-linux.md; Kata rustjail validator.rs (sysctl
 * allow-list, hostname/masked-path namespace rules, id mappings), kata-sys-util validate.rs
 * valid_env, rustjail mount.rs (mount destination and masked/readonly path rules), Kata agent
 * rpc.rs update_container_namespaces (namespace rewrite).
 *
 * What happens to each OCI field that restricts the container (docs/ARCHITECTURE.md "What the
 * OCI spec gets"):
 *  - enforced: namespaces, mounts, masked/readonly paths, sysctl, rlimits, user/groups,
 *    noNewPrivileges, Process.Capabilities (mapped to numbers here, applied by kata-init),
 *    Process.OOMScoreAdj, Linux.Seccomp ({@link seccompFromOci}; compiled by the helper with
 *    libseccomp, loaded by kata-init for the init and every exec);
 *  - Hooks → ContainerPlan.hooks ({@link hooksFromOci}; run by the helper);
 *  - refused (UNIMPLEMENTED naming the field): the seccomp action
 *    SCMP_ACT_NOTIFY, joining an existing user namespace (unless host-namespace mode);
 *  - Process.SelinuxLabel and Linux.MountLabel are carried; the helper applies them when the
 *    guest has SELinux and drops them with a warning otherwise;
 *  - a new user namespace with Linux.UIDMappings/GIDMappings → ContainerPlan.idMappings
 *    ({@link idMappingsFromOci}; the helper writes the maps);
 *  - cgroups: Linux.CgroupsPath and Linux.Resources become ContainerPlan.cgroup
 *    (control/oci-cgroups.ts; enforced by helper/ops/cgroup.ts); Resources.Devices only when
 *    `options.deviceCgroup` (the helper has a v1 devices hierarchy or cgroup v2 device programs);
 *  - Linux.Devices → ContainerPlan.devices ({@link devicesFromOci}; kata-init creates them);
 *  - accepted, not enforced, logged through `warn` and listed in `ContainerPlan.unenforced`
 *    ({@link unenforcedFields}): Linux.Resources.Devices without a device cgroup (see the
 *    interim below), Linux.IntelRdt, Process.ApparmorProfile
 *    (upstream ignores it too: the guest has no AppArmor);
 *  - device cgroup interim: with no device cgroup, linux.resources.devices cannot be enforced,
 *    so unless its rules allow every device ({@link devicesAllowAll}) CAP_MKNOD is removed
 *    from every capability set of the container and of its execs (container root cannot mknod
 *    a guest block device). The Kata runtime strips resources.devices before sending the spec
 *    (kata_agent.go constrainGRPCSpec), so under Kata containers never have CAP_MKNOD here.
 *
 * Host-namespace mode (ContainerPlanOptions.allowHostNamespaces: agent --allow-host-namespaces /
 * KATA_AGENT_ALLOW_HOST_NAMESPACES=1, off by default; runc semantics for stand-alone OCI use,
 * threat model in docs/ARCHITECTURE.md "Host namespaces"): a spec may omit any namespace, the
 * container then shares the agent's (the helper's), a mount namespace included (kata-init
 * chroots instead of pivot_root; masked/read-only paths, a read-only root and a rootfs
 * propagation are then refused, as runc refuses the first two); a namespace entry with a path is
 * joined as given, a user namespace too (without UIDMappings/GIDMappings). The Kata rewrite
 * (ipc/uts → the sandbox's, {@link rewriteNamespaces}) applies only to entries without a path: the
 * Kata runtime empties every path (kata_agent.go constrainGRPCSpec), so a path comes only from a
 * non-Kata client, which means that namespace. Off: a path other than the sandbox's is refused by
 * the helper, a missing mount namespace here, a missing pid namespace means a new one.
 * Annotations are not read. HOME is not derived here (control must not read the container's
 * /etc/passwd): kata-init sets it from the container's own /etc/passwd when the env has none
 * (helper/native/KATA-INIT.md step 8a).
 */
import type { grpc } from '../shared/generated/protos';
import * as path from 'node:path';
import { cgroupPlanFromSpec, checkDeviceRules } from './oci-cgroups';
import { validateIdMappings } from '../shared/idmap';
import {
  Code,
  StatusError,
  type CapabilitiesPlan,
  type ContainerPlan,
  type DeviceNodePlan,
  type HookPlan,
  type HooksPlan,
  type IdMappingsPlan,
  type MountPlan,
  type NamespacePlan,
  type NamespaceType,
  type ProcessPlan,
  type RlimitPlan,
  type SeccompAction,
  type SeccompOp,
  type SeccompPlan,
  type SeccompSyscallPlan,
  SECCOMP_ACTIONS,
  SECCOMP_ARCHES,
  SECCOMP_FLAGS,
  SECCOMP_LIMITS,
  SECCOMP_OPS,
} from '../shared/protocol';

/** OCI namespace types we accept (config-linux.md#namespaces; "time" is not supported yet). */
export const NAMESPACE_TYPES: readonly NamespaceType[] = ['pid', 'network', 'mount', 'ipc', 'uts', 'cgroup', 'user'];

/** rlimit type names Linux knows (getrlimit(2)); anything else is refused. */
export const RLIMIT_TYPES: readonly string[] = [
  'RLIMIT_AS', 'RLIMIT_CORE', 'RLIMIT_CPU', 'RLIMIT_DATA', 'RLIMIT_FSIZE', 'RLIMIT_LOCKS',
  'RLIMIT_MEMLOCK', 'RLIMIT_MSGQUEUE', 'RLIMIT_NICE', 'RLIMIT_NOFILE', 'RLIMIT_NPROC',
  'RLIMIT_RSS', 'RLIMIT_RTPRIO', 'RLIMIT_RTTIME', 'RLIMIT_SIGPENDING', 'RLIMIT_STACK',
];

/** Valid linux.rootfsPropagation values ("" = the default, rslave). */
export const ROOTFS_PROPAGATIONS: readonly string[] = [
  '', 'shared', 'slave', 'private', 'unbindable', 'rshared', 'rslave', 'rprivate', 'runbindable',
];

/**
 * IPC-namespaced sysctls Kata allows when the spec has an ipc namespace (rustjail validator.rs
 * SYSCTLS); `fs.mqueue.*` is allowed under the same condition.
 */
export const IPC_SYSCTLS: readonly string[] = [
  'kernel.msgmax', 'kernel.msgmnb', 'kernel.msgmni', 'kernel.sem',
  'kernel.shmall', 'kernel.shmmax', 'kernel.shmmni', 'kernel.shm_rmid_forced',
];

/** Longest hostname Linux accepts (HOST_NAME_MAX), in bytes. */
export const HOST_NAME_MAX = 64;

/**
 * Linux capability names by number (linux/capability.h, up to CAP_CHECKPOINT_RESTORE = 40, the
 * last one as of Linux 6.x). OCI process.capabilities uses these names.
 */
export const CAPABILITIES: readonly string[] = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_DAC_READ_SEARCH', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL',
  'CAP_SETGID', 'CAP_SETUID', 'CAP_SETPCAP', 'CAP_LINUX_IMMUTABLE', 'CAP_NET_BIND_SERVICE',
  'CAP_NET_BROADCAST', 'CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_IPC_LOCK', 'CAP_IPC_OWNER',
  'CAP_SYS_MODULE', 'CAP_SYS_RAWIO', 'CAP_SYS_CHROOT', 'CAP_SYS_PTRACE', 'CAP_SYS_PACCT',
  'CAP_SYS_ADMIN', 'CAP_SYS_BOOT', 'CAP_SYS_NICE', 'CAP_SYS_RESOURCE', 'CAP_SYS_TIME',
  'CAP_SYS_TTY_CONFIG', 'CAP_MKNOD', 'CAP_LEASE', 'CAP_AUDIT_WRITE', 'CAP_AUDIT_CONTROL',
  'CAP_SETFCAP', 'CAP_MAC_OVERRIDE', 'CAP_MAC_ADMIN', 'CAP_SYSLOG', 'CAP_WAKE_ALARM',
  'CAP_BLOCK_SUSPEND', 'CAP_AUDIT_READ', 'CAP_PERFMON', 'CAP_BPF', 'CAP_CHECKPOINT_RESTORE',
];

/** CAP_MKNOD's number (removed while device rules cannot be enforced, see the file comment). */
export const CAP_MKNOD = 27;

/** Valid OCI process.oomScoreAdj values (proc(5) /proc/pid/oom_score_adj). */
export const OOM_SCORE_ADJ_MIN = -1000;
export const OOM_SCORE_ADJ_MAX = 1000;

/** The OCI hook lists (config.md#posix-platform-hooks), in proto spelling. */
export const HOOK_FIELDS = ['Prestart', 'CreateRuntime', 'CreateContainer', 'StartContainer', 'Poststart', 'Poststop'] as const;

/**
 * Receives the conversion's warnings (pino's argument order: fields, then message): unknown
 * capability names (skipped, as upstream), fields accepted but not enforced.
 */
export type OciWarn = (fields: Record<string, unknown>, message: string) => void;

function invalid(field: string, value: unknown, why: string): StatusError {
  return new StatusError(Code.INVALID_ARGUMENT, `invalid ${field} ${JSON.stringify(value)}: ${why}`);
}

function checkString(field: string, value: string): string {
  if (value.includes('\0')) throw invalid(field, value, 'contains a NUL byte');
  return value;
}

/** True when `p` has a ".." path component. */
function hasDotDot(p: string): boolean {
  return p.split('/').includes('..');
}

/** An absolute path without NUL bytes (and, when `noDotDot`, without ".." components). */
function checkAbsPath(field: string, value: string, noDotDot: boolean): string {
  checkString(field, value);
  if (!value.startsWith('/')) throw invalid(field, value, 'must be an absolute path');
  if (noDotDot && hasDotDot(value)) throw invalid(field, value, 'must not contain ".." components');
  return value;
}

/**
 * Sanitise an OCI env list the way Kata's valid_env does: an entry needs a "="; the key is the
 * text before the first "=", the value the rest; both are trimmed; entries whose trimmed key is
 * empty or whose key or value contain a NUL byte are skipped (not an error — field case B18).
 * Kata checks the key for emptiness before trimming; we check after, so " =x" is skipped too.
 * Returns the kept entries as "KEY=VALUE", order preserved.
 */
export function sanitizeEnv(env: readonly string[] | null | undefined): string[] {
  const out: string[] = [];
  for (const entry of env ?? []) {
    if (typeof entry !== 'string') continue;
    const eq = entry.indexOf('=');
    if (eq < 0) continue;
    const key = entry.slice(0, eq).trim();
    const value = entry.slice(eq + 1).trim();
    if (key === '' || key.includes('\0') || value.includes('\0')) continue;
    out.push(`${key}=${value}`);
  }
  return out;
}

function toInt(value: number | { toNumber(): number } | null | undefined): number {
  return typeof value === 'number' ? value : value == null ? 0 : value.toNumber();
}

function toUint(field: string, value: number | { toNumber(): number } | null | undefined): number {
  const n = toInt(value);
  if (!Number.isFinite(n) || n < 0) throw invalid(field, n, 'must be a non-negative integer');
  return n;
}

function rlimitsFromOci(field: string, rlimits: readonly grpc.POSIXRlimit.$Properties[]): RlimitPlan[] {
  const seen = new Set<string>();
  return rlimits.map((r, i) => {
    const f = `${field}[${i}]`;
    const type = r.Type ?? '';
    if (!RLIMIT_TYPES.includes(type)) throw invalid(`${f}.Type`, type, `unknown rlimit type (want one of ${RLIMIT_TYPES.join(', ')})`);
    if (seen.has(type)) throw invalid(`${f}.Type`, type, 'duplicate rlimit type');
    seen.add(type);
    const hard = toUint(`${f}.Hard`, r.Hard);
    const soft = toUint(`${f}.Soft`, r.Soft);
    if (soft > hard) throw invalid(`${f}.Soft`, soft, `greater than Hard ${hard}`);
    return { type, hard, soft };
  });
}

/** Every capability set empty. */
export function emptyCapabilities(): CapabilitiesPlan {
  return { bounding: [], effective: [], inheritable: [], permitted: [], ambient: [] };
}

const CAP_SETS = ['bounding', 'effective', 'inheritable', 'permitted', 'ambient'] as const;

/**
 * OCI capability names → numbers ({@link CAPABILITIES}), per set, sorted and deduplicated.
 * Unknown names are skipped and reported through `warn`, as upstream rustjail capabilities.rs
 * to_capshashset does (a spec written for a newer kernel still runs); names are matched exactly
 * ("CAP_KILL"), as runc and upstream do. An ambient capability that is not in both the permitted
 * and the inheritable set is dropped with a warning (the kernel would refuse to raise it; runc
 * drops it too), so `runc spec`'s default config.json runs unchanged.
 */
export function capabilitiesFromOci(
  caps: grpc.LinuxCapabilities.$Properties,
  field: string,
  warn?: OciWarn,
): CapabilitiesPlan {
  const out = emptyCapabilities();
  const unknown: string[] = [];
  for (const set of CAP_SETS) {
    const nums = new Set<number>();
    for (const name of caps[capitalised(set)] ?? []) {
      const n = CAPABILITIES.indexOf(name);
      if (n < 0) unknown.push(`${set}:${name}`);
      else nums.add(n);
    }
    out[set] = [...nums].sort((a, b) => a - b);
  }
  if (unknown.length > 0) warn?.({ field, unknown }, 'unknown capability names skipped');
  // The kernel raises an ambient capability only when it is permitted and inheritable
  // (capabilities(7)); runc drops the others with a warning rather than failing (runc spec's
  // default config.json asks for ambient CAP_KILL etc. with no inheritable set).
  const dropped = out.ambient.filter((c) => !out.permitted.includes(c) || !out.inheritable.includes(c));
  if (dropped.length > 0) {
    out.ambient = out.ambient.filter((c) => !dropped.includes(c));
    warn?.({ field: `${field}.Ambient`, dropped: dropped.map((c) => CAPABILITIES[c]) }, 'ambient capabilities not in both the permitted and the inheritable set dropped (as runc)');
  }
  return out;
}

function capitalised(set: (typeof CAP_SETS)[number]): 'Bounding' | 'Effective' | 'Inheritable' | 'Permitted' | 'Ambient' {
  return (set[0].toUpperCase() + set.slice(1)) as 'Bounding' | 'Effective' | 'Inheritable' | 'Permitted' | 'Ambient';
}

function withoutCapability(caps: CapabilitiesPlan, cap: number): CapabilitiesPlan {
  const out = emptyCapabilities();
  for (const set of CAP_SETS) out[set] = caps[set].filter((c) => c !== cap);
  return out;
}

function cloneCapabilities(caps: CapabilitiesPlan): CapabilitiesPlan {
  const out = emptyCapabilities();
  for (const set of CAP_SETS) out[set] = [...caps[set]];
  return out;
}

/** What an exec process takes from its container: see {@link processPlanFromOci}. */
export interface ExecContext {
  /** The container's plan (its init's capabilities and its devicesAllowAll). */
  container?: Pick<ContainerPlan, 'process' | 'devicesAllowAll' | 'devicesEnforced'>;
  warn?: OciWarn;
}

function convertProcess(
  process: grpc.Process.$Properties | null | undefined,
  field: string,
  opts: { inherit: CapabilitiesPlan | undefined; allowMknod: boolean; warn?: OciWarn },
): ProcessPlan {
  if (!process) throw new StatusError(Code.INVALID_ARGUMENT, `${field} is required`);
  const args = process.Args ?? [];
  if (args.length === 0) throw new StatusError(Code.INVALID_ARGUMENT, `${field}.Args must not be empty`);
  args.forEach((a, i) => checkString(`${field}.Args[${i}]`, a));
  if (args[0] === '') throw invalid(`${field}.Args[0]`, '', 'must not be empty');
  const cwd = process.Cwd ? checkAbsPath(`${field}.Cwd`, process.Cwd, false) : '/';
  const user = process.User ?? {};
  const selinuxLabel = process.SelinuxLabel ? checkString(`${field}.SelinuxLabel`, process.SelinuxLabel) : '';
  if (process.ApparmorProfile) {
    opts.warn?.({ field: `${field}.ApparmorProfile`, value: process.ApparmorProfile }, 'AppArmor profile ignored (the guest has no AppArmor; upstream ignores it too)');
  }
  const oomScoreAdj = toInt(process.OOMScoreAdj);
  if (!Number.isInteger(oomScoreAdj) || oomScoreAdj < OOM_SCORE_ADJ_MIN || oomScoreAdj > OOM_SCORE_ADJ_MAX) {
    throw invalid(`${field}.OOMScoreAdj`, oomScoreAdj, `must be in ${OOM_SCORE_ADJ_MIN}..${OOM_SCORE_ADJ_MAX}`);
  }
  let capabilities = process.Capabilities
    ? capabilitiesFromOci(process.Capabilities, `${field}.Capabilities`, opts.warn)
    : opts.inherit
      ? cloneCapabilities(opts.inherit)
      : emptyCapabilities();
  if (!opts.allowMknod) capabilities = withoutCapability(capabilities, CAP_MKNOD);
  return {
    args: [...args],
    env: sanitizeEnv(process.Env),
    cwd,
    uid: toUint(`${field}.User.UID`, user.UID),
    gid: toUint(`${field}.User.GID`, user.GID),
    additionalGids: (user.AdditionalGids ?? []).map((g, i) => toUint(`${field}.User.AdditionalGids[${i}]`, g)),
    terminal: process.Terminal === true,
    noNewPrivileges: process.NoNewPrivileges === true,
    rlimits: rlimitsFromOci(`${field}.Rlimits`, process.Rlimits ?? []),
    capabilities,
    oomScoreAdj,
    // applied by the helper when the guest has SELinux, else dropped with a warning
    ...(selinuxLabel !== '' ? { selinuxLabel } : {}),
  };
}

/**
 * Convert an OCI process (config.md#process) to a {@link ProcessPlan}; used for a container's
 * init process (through {@link containerPlanFromSpec}, `field` "OCI.Process") and for
 * ExecProcess ("process", with `exec.container` the container's plan).
 *
 * Capabilities (config.md#linux-process): the names are mapped to numbers
 * ({@link capabilitiesFromOci}). When the process has none: an exec takes its container init's
 * sets (Kata rustjail container.rs does the same, and errors "missing process capabilities"
 * when the container has none either; we give the container's, possibly empty, sets); without
 * `exec.container` (a container's init) every set is empty, as runc does for a spec without a
 * capabilities object (upstream Kata keeps the agent's full set: we do not). CAP_MKNOD is
 * removed unless `exec.container.devicesAllowAll` (see the file comment; without a container
 * it is always removed here and {@link containerPlanFromSpec} decides for an init).
 * OOMScoreAdj is carried as is (0 when unset, as upstream: the process does not inherit the
 * agent's -997).
 *
 * Throws StatusError INVALID_ARGUMENT when the process is absent, Args is empty or Args[0] is
 * empty, a string carries a NUL byte, Cwd is relative, an rlimit type is unknown or repeated or
 * its soft limit exceeds the hard one, or OOMScoreAdj is outside -1000..1000; UNIMPLEMENTED for
 * a non-empty SelinuxLabel. Env is sanitised ({@link sanitizeEnv}); an empty Cwd becomes "/".
 * A non-empty ApparmorProfile is ignored and reported through `exec.warn`.
 */
export function processPlanFromOci(process: grpc.Process.$Properties | null | undefined, field: string, exec: ExecContext = {}): ProcessPlan {
  return convertProcess(process, field, {
    inherit: exec.container?.process.capabilities,
    allowMknod: exec.container?.devicesAllowAll === true || exec.container?.devicesEnforced === true,
    warn: exec.warn,
  });
}

/** What the sandbox contributes to a container's namespaces. */
export interface SandboxNamespaceInfo {
  /** The sandbox's persistent namespaces (from the helper's createSandbox), e.g. ipc and uts. */
  namespaces: readonly NamespacePlan[];
  /** Path of the sandbox pid namespace (`/proc/<pid>/ns/pid` of the first container's init), or null. */
  pidns: string | null;
  /** The sandbox's hostname (CreateSandboxRequest.hostname; "" = none given). */
  hostname?: string;
}

/** Options of {@link containerPlanFromSpec}. */
export interface ContainerPlanOptions {
  /** CreateContainerRequest.sandbox_pidns: join the sandbox pid namespace instead of a new one. */
  sandboxPidns: boolean;
  sandbox: SandboxNamespaceInfo;
  /** Receives warnings: fields accepted but not enforced, unknown capability names. */
  warn?: OciWarn;
  /**
   * The container id: with it the plan gets the container's cgroup (control/oci-cgroups.ts:
   * Linux.CgroupsPath, or "/<id>" when empty, and Linux.Resources). Absent: no cgroup plan.
   */
  containerId?: string;
  /** Parent of container cgroups (agent config; "" = the path as the runtime gives it, as upstream). */
  cgroupParent?: string;
  /**
   * The helper enforces device cgroup rules (CreateSandboxResult.deviceCgroup). With it and a
   * containerId, linux.resources.devices goes into the cgroup plan after the default rules and
   * the CAP_MKNOD interim does not apply (ContainerPlan.devicesEnforced).
   */
  deviceCgroup?: boolean;
  /** Host-namespace mode (see the file comment); default off. */
  allowHostNamespaces?: boolean;
}

/** How a refusal names the host-namespace option. */
export const HOST_NAMESPACES_OPTION = 'the agent option --allow-host-namespaces (KATA_AGENT_ALLOW_HOST_NAMESPACES=1) is off';

function namespacesFromOci(field: string, list: readonly grpc.LinuxNamespace.$Properties[]): NamespacePlan[] {
  const seen = new Set<string>();
  return list.map((ns, i) => {
    const f = `${field}[${i}]`;
    const type = ns.Type ?? '';
    if (!(NAMESPACE_TYPES as readonly string[]).includes(type)) {
      throw invalid(`${f}.Type`, type, `unknown namespace type (want one of ${NAMESPACE_TYPES.join(', ')})`);
    }
    if (seen.has(type)) throw invalid(`${f}.Type`, type, 'duplicate namespace type');
    seen.add(type);
    const path = ns.Path ? checkAbsPath(`${f}.Path`, ns.Path, false) : '';
    // A /proc/<pid>/ns/<file> path names its type: a file of another type is a wrong path even
    // where the rewrite replaces it (runtime-spec config-linux.md#namespaces: "an error MUST be
    // generated" for a path of the wrong type; runtime-tools linux_ns_path_type).
    const file = /^\/proc\/(?:self|thread-self|[0-9]+)\/ns\/([a-z_]+)$/.exec(path)?.[1];
    if (file !== undefined && !NS_FILES[type as NamespaceType].includes(file)) {
      throw invalid(`${f}.Path`, path, `is a ${file} namespace file, not ${type} (want /proc/<pid>/ns/${NS_FILES[type as NamespaceType][0]})`);
    }
    return { type: type as NamespaceType, path };
  });
}

/** The /proc/<pid>/ns file names of each namespace type (pid_for_children is a pid namespace). */
const NS_FILES: Readonly<Record<NamespaceType, readonly string[]>> = {
  pid: ['pid', 'pid_for_children'],
  network: ['net'],
  mount: ['mnt'],
  ipc: ['ipc'],
  uts: ['uts'],
  cgroup: ['cgroup'],
  user: ['user'],
};

/**
 * Kata's namespace rewrite (rpc.rs update_container_namespaces): ipc and uts entries of the
 * spec get the sandbox's persistent namespace of that type ("" = a new one when the sandbox has
 * none, as upstream); the pid entry is set to the sandbox pid namespace when `sandboxPidns`,
 * else to "" (a new pid namespace). Upstream appends a second pid entry; we replace any pid
 * entry of the spec, so the plan has exactly one.
 *
 * Departure: a container whose spec sets a `hostname` ("" = none) other than the sandbox's gets
 * a uts namespace of its own, where kata-init sets that hostname; upstream joins the sandbox's
 * and ignores the spec's hostname without a word (the Kata runtime gives every container of a
 * pod the pod's hostname, so with it nothing changes). Stand-alone, one sandbox serves
 * containers of unrelated specs (kata-agent-oci, the OCI conformance suite's `hostname`).
 *
 * Host-namespace mode (`options.allowHostNamespaces`): an entry with a path is kept as given
 * (pid included, whatever `sandboxPidns` says: the Kata runtime empties paths, so a path comes
 * from a non-Kata client); the rewrite above applies to entries without one; a spec without a
 * pid entry gets none (the container shares the agent's) unless `sandboxPidns`.
 *
 * Throws StatusError FAILED_PRECONDITION "sandbox does not have a shared pid namespace" when
 * `sandboxPidns` is asked for and the sandbox has none yet (upstream: INTERNAL).
 */
export function rewriteNamespaces(namespaces: readonly NamespacePlan[], options: ContainerPlanOptions, hostname = ''): NamespacePlan[] {
  const sandboxPath = (type: NamespaceType): string =>
    options.sandbox.namespaces.find((n) => n.type === type)?.path ?? '';
  const ownUts = hostname !== '' && hostname !== (options.sandbox.hostname ?? '');
  const hostns = options.allowHostNamespaces === true;
  const out: NamespacePlan[] = [];
  for (const ns of namespaces) {
    if (hostns && ns.path !== '') {
      out.push({ ...ns });
      continue;
    }
    if (ns.type === 'pid') continue;
    if (ns.type === 'uts' && ownUts) out.push({ type: 'uts', path: '' });
    else if (ns.type === 'ipc' || ns.type === 'uts') out.push({ type: ns.type, path: sandboxPath(ns.type) });
    else out.push({ ...ns });
  }
  if (hostns && namespaces.some((n) => n.type === 'pid' && n.path !== '')) return out;
  if (hostns && !options.sandboxPidns && !namespaces.some((n) => n.type === 'pid')) return out;
  let pidPath = '';
  if (options.sandboxPidns) {
    if (!options.sandbox.pidns) {
      throw new StatusError(Code.FAILED_PRECONDITION, 'sandbox does not have a shared pid namespace (sandbox_pidns requested)');
    }
    pidPath = options.sandbox.pidns;
  }
  out.push({ type: 'pid', path: pidPath });
  return out;
}

/**
 * Check linux.sysctl against Kata's allow-list (rustjail validator.rs sysctl): the IPC sysctls
 * ({@link IPC_SYSCTLS}) and `fs.mqueue.*` need an ipc namespace in the spec; `net.*` needs a
 * network namespace in the spec (upstream allows it always, which sets the guest's own
 * values when the container shares the guest's network namespace); `kernel.domainname` needs
 * a uts namespace; everything else — `kernel.hostname` and every non-namespaced key such as
 * `vm.*` — is refused (field case B22: rejected with a clear error, never silently ignored).
 * Throws StatusError INVALID_ARGUMENT naming the key and value.
 */
export function validateSysctl(sysctl: Readonly<Record<string, string>>, namespaces: readonly NamespacePlan[]): void {
  const has = (type: NamespaceType): boolean => namespaces.some((n) => n.type === type);
  for (const [key, value] of Object.entries(sysctl)) {
    const field = `OCI.Linux.Sysctl[${JSON.stringify(key)}]`;
    checkString(field, key);
    checkString(field, value);
    if (IPC_SYSCTLS.includes(key) || key.startsWith('fs.mqueue.')) {
      if (!has('ipc')) throw invalid(field, value, 'this sysctl needs an ipc namespace in OCI.Linux.Namespaces');
      continue;
    }
    if (key.startsWith('net.')) {
      // Departure from upstream (which allows net.* always): without a network namespace of
      // its own the container would set the guest's (a container set ip_forward this way).
      if (!has('network')) throw invalid(field, value, 'net.* sysctls need a network namespace of the container in OCI.Linux.Namespaces');
      continue;
    }
    if (key === 'kernel.domainname') {
      if (!has('uts')) throw invalid(field, value, 'this sysctl needs a uts namespace in OCI.Linux.Namespaces');
      continue;
    }
    throw invalid(field, value, 'sysctl not allowed (only namespaced sysctls: net.*, kernel.domainname, IPC kernel.* and fs.mqueue.*)');
  }
}

function isWildcard(v: number | { toNumber(): number } | null | undefined): boolean {
  return toInt(v) === -1;
}

/**
 * True when OCI linux.resources.devices (config-linux.md#allowed-device-list; later rules win)
 * allows every device: some rule is an allow rule for all devices (type "a" or "", major and
 * minor -1, access with r, w and m) and no deny rule follows the last such rule. No rules at
 * all is false (runc and rustjail start from "deny all").
 */
export function devicesAllowAll(rules: readonly grpc.LinuxDeviceCgroup.$Properties[] | null | undefined): boolean {
  let allowAll = false;
  for (const r of rules ?? []) {
    const access = r.Access ?? '';
    const all = (r.Type === 'a' || !r.Type) && isWildcard(r.Major) && isWildcard(r.Minor) && ['r', 'w', 'm'].every((c) => access.includes(c));
    if (r.Allow === true && all) allowAll = true;
    else if (r.Allow !== true) allowAll = false;
  }
  return allowAll;
}

/** Dotted names of the set leaves of a protobuf message object: non-zero, non-empty, true. */
function setLeaves(prefix: string, value: unknown, out: string[]): void {
  if (value === null || value === undefined || value === false || value === 0 || value === '') return;
  if (Array.isArray(value)) {
    if (value.length > 0) out.push(prefix);
    return;
  }
  if (typeof value === 'object') {
    if (typeof (value as { toNumber?: unknown }).toNumber === 'function') {
      if ((value as { toNumber(): number }).toNumber() !== 0) out.push(prefix);
      return;
    }
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) setLeaves(`${prefix}.${k}`, v, out);
    return;
  }
  out.push(prefix);
}

/**
 * The OCI fields of `spec` that are accepted but not enforced, in proto spelling:
 * Linux.Resources.Devices when `devicesEnforced` is false and its rules do not allow everything
 * (they are stood in for by the CAP_MKNOD removal), Linux.IntelRdt and
 * Process.ApparmorProfile. Empty when there is nothing of the kind. (The other resources and
 * Linux.CgroupsPath are enforced: control/oci-cgroups.ts, helper/ops/cgroup.ts.)
 */
export function unenforcedFields(spec: grpc.Spec.$Properties, devicesEnforced = false): string[] {
  const out: string[] = [];
  const devices = spec.Linux?.Resources?.Devices;
  if (!devicesEnforced && (devices ?? []).length > 0 && !devicesAllowAll(devices)) out.push('OCI.Linux.Resources.Devices');
  setLeaves('OCI.Linux.IntelRdt', spec.Linux?.IntelRdt, out);
  if (spec.Process?.ApparmorProfile) out.push('OCI.Process.ApparmorProfile');
  return out;
}

/** Most hooks of one kind, and the longest hook timeout in seconds. */
export const MAX_HOOKS = 64;
export const MAX_HOOK_TIMEOUT_SEC = 3600;

/**
 * OCI hooks (config.md#posix-platform-hooks) → {@link HooksPlan}, run by the helper in the
 * guest's (the runtime's) namespaces with the OCI state on stdin (helper/ops/hooks.ts).
 * Prestart, CreateRuntime, Poststart, Poststop are carried. CreateContainer and StartContainer
 * must run inside the container's namespaces, which is not built: UNIMPLEMENTED naming the
 * field. INVALID_ARGUMENT naming `OCI.Hooks.<Kind>[i].<field>` for a Path that is empty or not
 * absolute or has a NUL, a NUL in Args or Env, a Timeout outside 0..3600 (0 = the default
 * 10 s), more than {@link MAX_HOOKS} hooks of a kind. Undefined when there are none.
 */
export function hooksFromOci(hooks: grpc.Hooks.$Properties | null | undefined): HooksPlan | undefined {
  if (!hooks) return undefined;
  const out: HooksPlan = {};
  const kinds = [
    ['Prestart', 'prestart'], ['CreateRuntime', 'createRuntime'], ['CreateContainer', 'createContainer'],
    ['StartContainer', 'startContainer'], ['Poststart', 'poststart'], ['Poststop', 'poststop'],
  ] as const;
  for (const [name, key] of kinds) {
    const list = hooks[name] ?? [];
    if (list.length === 0) continue;
    if (list.length > MAX_HOOKS) throw invalid(`OCI.Hooks.${name}`, list.length, `more than ${MAX_HOOKS} hooks`);
    out[key] = list.map((h, i): HookPlan => {
      const f = `OCI.Hooks.${name}[${i}]`;
      const p = h.Path ?? '';
      if (p === '') throw new StatusError(Code.INVALID_ARGUMENT, `${f}.Path is required`);
      checkAbsPath(`${f}.Path`, p, false);
      const args = (h.Args ?? []).map((a, j) => checkString(`${f}.Args[${j}]`, a));
      const env = (h.Env ?? []).map((e, j) => checkString(`${f}.Env[${j}]`, e));
      const timeout = toInt(h.Timeout);
      if (!Number.isInteger(timeout) || timeout < 0 || timeout > MAX_HOOK_TIMEOUT_SEC) {
        throw invalid(`${f}.Timeout`, timeout, `must be 0..${MAX_HOOK_TIMEOUT_SEC} seconds (0 = the default)`);
      }
      return { path: p, args, env, ...(timeout > 0 ? { timeoutSec: timeout } : {}) };
    });
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/** True when a protobuf LinuxSeccomp message carries nothing at all (the same as no profile). */
function seccompEmpty(s: grpc.LinuxSeccomp.$Properties): boolean {
  return !s.DefaultAction && (s.Architectures ?? []).length === 0 && (s.Flags ?? []).length === 0 && (s.Syscalls ?? []).length === 0;
}

function seccompAction(field: string, action: string): SeccompAction {
  if (action === 'SCMP_ACT_NOTIFY') {
    throw new StatusError(
      Code.UNIMPLEMENTED,
      `${field} "SCMP_ACT_NOTIFY" is not supported: it needs a seccomp user-space notification listener, which this agent does not have`,
    );
  }
  if (!(SECCOMP_ACTIONS as readonly string[]).includes(action)) {
    throw invalid(field, action, action === '' ? 'an action is required' : `unknown seccomp action (want one of ${SECCOMP_ACTIONS.join(', ')}, SCMP_ACT_NOTIFY)`);
  }
  return action as SeccompAction;
}

/** An unsigned 64-bit comparison value that JavaScript holds exactly (protobufjs decodes uint64 to a number). */
function seccompValue(field: string, value: number | { toNumber(): number } | null | undefined): number {
  const n = toInt(value);
  if (!Number.isSafeInteger(n) || n < 0) {
    throw invalid(field, n, `must be an integer in 0..${Number.MAX_SAFE_INTEGER} (larger uint64 values cannot be carried exactly)`);
  }
  return n;
}

function seccompErrno(field: string, value: number | null | undefined): number | undefined {
  if (value === null || value === undefined) return undefined;
  if (!Number.isInteger(value) || value < 0 || value > SECCOMP_LIMITS.errno) {
    throw invalid(field, value, `must be an integer in 0..${SECCOMP_LIMITS.errno}`);
  }
  return value;
}

/**
 * OCI linux.seccomp (config-linux.md#seccomp; Kata rustjail seccomp.rs) → {@link SeccompPlan}.
 * Undefined when there is no profile or the message is entirely empty.
 *
 * Checks, each an INVALID_ARGUMENT naming the field and value: DefaultAction and every rule's
 * Action is a known SCMP_ACT_* name (an empty DefaultAction is refused, as upstream's
 * ScmpAction::from_str does); Architectures are OCI SCMP_ARCH_* names; Flags are
 * SECCOMP_FILTER_FLAG_TSYNC, _LOG or _SPEC_ALLOW (upstream refuses every other flag); a rule has
 * at least one name (upstream: "syscall name is required"), names are non-empty, NUL-free and
 * at most 256 bytes; an argument has an Op (upstream: "seccomp opreator is required"), Index
 * 0..5 and Value/ValueTwo below 2^53; errnoret is 0..65535; the sizes of
 * {@link SECCOMP_LIMITS}. UNIMPLEMENTED for SCMP_ACT_NOTIFY (no listener). Names are not
 * checked against a syscall table: the helper's libseccomp skips the ones it does not know and
 * logs them (field case B23). Duplicate architectures and flags are merged. errnoret is kept
 * for SCMP_ACT_ERRNO and SCMP_ACT_TRACE only (the other actions ignore it, as upstream).
 */
export function seccompFromOci(seccomp: grpc.LinuxSeccomp.$Properties | null | undefined, field = 'OCI.Linux.Seccomp'): SeccompPlan | undefined {
  if (!seccomp || seccompEmpty(seccomp)) return undefined;
  const defaultAction = seccompAction(`${field}.DefaultAction`, seccomp.DefaultAction ?? '');

  const archList = seccomp.Architectures ?? [];
  if (archList.length > SECCOMP_LIMITS.architectures) {
    throw invalid(`${field}.Architectures`, archList.length, `more than ${SECCOMP_LIMITS.architectures} entries`);
  }
  const architectures: string[] = [];
  archList.forEach((a, i) => {
    if (!(SECCOMP_ARCHES as readonly string[]).includes(a)) {
      throw invalid(`${field}.Architectures[${i}]`, a, `unknown seccomp architecture (want one of ${SECCOMP_ARCHES.join(', ')})`);
    }
    if (!architectures.includes(a)) architectures.push(a);
  });

  const flags: string[] = [];
  (seccomp.Flags ?? []).forEach((f, i) => {
    if (!(SECCOMP_FLAGS as readonly string[]).includes(f)) {
      throw invalid(`${field}.Flags[${i}]`, f, `unsupported seccomp flag (only ${SECCOMP_FLAGS.join(', ')}, as upstream)`);
    }
    if (!flags.includes(f)) flags.push(f);
  });

  const rules = seccomp.Syscalls ?? [];
  if (rules.length > SECCOMP_LIMITS.syscalls) {
    throw invalid(`${field}.Syscalls`, rules.length, `more than ${SECCOMP_LIMITS.syscalls} rules`);
  }
  let totalNames = 0;
  const syscalls = rules.map((rule, i): SeccompSyscallPlan => {
    const f = `${field}.Syscalls[${i}]`;
    const names = rule.Names ?? [];
    if (names.length === 0) throw new StatusError(Code.INVALID_ARGUMENT, `${f}.Names must not be empty (a rule needs at least one syscall name)`);
    if (names.length > SECCOMP_LIMITS.namesPerRule) throw invalid(`${f}.Names`, names.length, `more than ${SECCOMP_LIMITS.namesPerRule} names`);
    totalNames += names.length;
    if (totalNames > SECCOMP_LIMITS.names) throw invalid(`${field}.Syscalls`, totalNames, `more than ${SECCOMP_LIMITS.names} syscall names in all`);
    names.forEach((n, j) => {
      checkString(`${f}.Names[${j}]`, n);
      if (n === '') throw invalid(`${f}.Names[${j}]`, n, 'must not be empty');
      if (Buffer.byteLength(n) > SECCOMP_LIMITS.nameBytes) throw invalid(`${f}.Names[${j}]`, n, `longer than ${SECCOMP_LIMITS.nameBytes} bytes`);
    });
    const action = seccompAction(`${f}.Action`, rule.Action ?? '');
    const errnoRet = seccompErrno(`${f}.errnoret`, rule.errnoret);
    const argList = rule.Args ?? [];
    if (argList.length > SECCOMP_LIMITS.args) throw invalid(`${f}.Args`, argList.length, `more than ${SECCOMP_LIMITS.args} comparisons`);
    const args = argList.map((a, k) => {
      const af = `${f}.Args[${k}]`;
      const op = a.Op ?? '';
      if (!(SECCOMP_OPS as readonly string[]).includes(op)) {
        throw invalid(`${af}.Op`, op, op === '' ? 'an operator is required' : `unknown seccomp operator (want one of ${SECCOMP_OPS.join(', ')})`);
      }
      const index = toInt(a.Index);
      if (!Number.isInteger(index) || index < 0 || index > 5) throw invalid(`${af}.Index`, index, 'must be a syscall argument index 0..5');
      return { index, value: seccompValue(`${af}.Value`, a.Value), valueTwo: seccompValue(`${af}.ValueTwo`, a.ValueTwo), op: op as SeccompOp };
    });
    const out: SeccompSyscallPlan = { names: [...names], action, args };
    if (errnoRet !== undefined && (action === 'SCMP_ACT_ERRNO' || action === 'SCMP_ACT_TRACE')) out.errnoRet = errnoRet;
    return out;
  });
  return { defaultAction, architectures, flags, syscalls };
}

/** Most linux.devices entries accepted (kata-init's plan limit is far above). */
export const MAX_DEVICES = 256;

/**
 * OCI linux.devices (config-linux.md#devices) → {@link DeviceNodePlan}s. Path absolute, below
 * /dev, no ".." (upstream rustjail mount.rs create_devices: "can only create devices in /dev");
 * Type c, u, b or p; Major/Minor 0..2^32-1 (ignored for p); FileMode the permission bits only
 * (0 = 0666 as runc's default when unset, since proto3 cannot tell unset from 0); UID/GID as
 * given (0 = root). Duplicate paths: the last entry wins (as runc). Throws INVALID_ARGUMENT
 * naming `OCI.Linux.Devices[i].<field>`.
 */
export function devicesFromOci(devices: readonly grpc.LinuxDevice.$Properties[] | null | undefined): DeviceNodePlan[] {
  const list = devices ?? [];
  if (list.length > MAX_DEVICES) throw invalid('OCI.Linux.Devices', list.length, `more than ${MAX_DEVICES} entries`);
  const byPath = new Map<string, DeviceNodePlan>();
  list.forEach((d, i) => {
    const f = `OCI.Linux.Devices[${i}]`;
    const p = checkAbsPath(`${f}.Path`, d.Path ?? '', true);
    const normal = path.posix.normalize(p);
    if (!normal.startsWith('/dev/') || normal === '/dev/') throw invalid(`${f}.Path`, p, 'a device node must be below /dev');
    const type = d.Type ?? '';
    if (!['c', 'u', 'b', 'p'].includes(type)) throw invalid(`${f}.Type`, type, 'must be "c", "u", "b" or "p"');
    const num = (k: 'Major' | 'Minor'): number => {
      const v = toInt(d[k]);
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw invalid(`${f}.${k}`, v, 'must be an integer in 0..4294967295');
      return type === 'p' ? 0 : v;
    };
    const mode = d.FileMode ?? 0;
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) throw invalid(`${f}.FileMode`, mode, 'must be permission bits 0..0o7777');
    byPath.set(normal, {
      path: normal,
      type: type as DeviceNodePlan['type'],
      major: num('Major'),
      minor: num('Minor'),
      fileMode: mode === 0 ? 0o666 : mode,
      uid: toUint(`${f}.UID`, d.UID),
      gid: toUint(`${f}.GID`, d.GID),
    });
  });
  return [...byPath.values()];
}

function mountsFromOci(mounts: readonly grpc.Mount.$Properties[]): MountPlan[] {
  return mounts.map((m, i) => {
    const f = `OCI.Mounts[${i}]`;
    const destination = checkAbsPath(`${f}.destination`, m.destination ?? '', true);
    const options = (m.options ?? []).map((o, j) => checkString(`${f}.options[${j}]`, o));
    const type = m.type ?? '';
    const bind = type === 'bind' || options.includes('bind') || options.includes('rbind');
    const remount = options.indexOf('remount');
    if (remount >= 0 && !bind) {
      // A remount of a new mount would reconfigure whatever superblock already sits at the
      // destination (a guest filesystem bound there by an earlier mount).
      throw invalid(`${f}.options[${remount}]`, 'remount', `"remount" applies only to a bind mount, not to a ${JSON.stringify(type)} mount at ${destination}`);
    }
    return {
      destination,
      type: checkString(`${f}.type`, m.type ?? ''),
      source: checkString(`${f}.source`, m.source ?? ''),
      options,
    };
  });
}

/**
 * Convert and validate the OCI spec of a CreateContainer request into a {@link ContainerPlan},
 * applying Kata's namespace rewrite ({@link rewriteNamespaces}).
 *
 * The init's capabilities follow {@link processPlanFromOci} (every set empty when the spec has
 * none); CAP_MKNOD is kept only when {@link devicesAllowAll} holds for
 * linux.resources.devices. `devicesAllowAll` and `unenforced` ({@link unenforcedFields}) are
 * recorded in the plan; unenforced fields, an ignored ApparmorProfile, unknown capability names
 * and a removed CAP_MKNOD are reported through `options.warn`.
 *
 * Throws StatusError INVALID_ARGUMENT (message names the field and value) when: Root or Root.Path
 * is missing or not absolute, or is the guest root "/"; Process is invalid
 * ({@link processPlanFromOci}); Linux is missing;
 * a namespace type is unknown or repeated or its path relative; there is no mount namespace; a mount destination is relative
 * or has a ".." component; a masked or read-only path is relative or has ".."; Hostname is given without a uts namespace or is too
 * long; a sysctl is not allowed ({@link validateSysctl}); RootfsPropagation is unknown; uid/gid
 * mappings are given without a user namespace; Linux.Seccomp is invalid ({@link seccompFromOci}).
 * bad uid/gid mappings ({@link idMappingsFromOci}).
 * UNIMPLEMENTED for joining an existing user namespace or the seccomp action SCMP_ACT_NOTIFY.
 * FAILED_PRECONDITION when `sandboxPidns` is asked for and the
 * sandbox has no pid namespace.
 */
export function containerPlanFromSpec(spec: grpc.Spec.$Properties, options: ContainerPlanOptions): ContainerPlan {
  const rootPath = spec.Root?.Path ?? '';
  if (rootPath === '') throw new StatusError(Code.INVALID_ARGUMENT, 'OCI.Root.Path is required');
  checkAbsPath('OCI.Root.Path', rootPath, true);
  if (path.posix.normalize(rootPath) === '/') {
    throw invalid('OCI.Root.Path', rootPath, 'the guest root "/" cannot be a container rootfs (pivot_root needs a directory below it)');
  }

  const linux = spec.Linux;
  if (!linux) throw new StatusError(Code.INVALID_ARGUMENT, 'OCI.Linux is required');

  const hooks = hooksFromOci(spec.Hooks);
  const seccomp = seccompFromOci(linux.Seccomp);
  const mountLabel = linux.MountLabel ? checkString('OCI.Linux.MountLabel', linux.MountLabel) : '';

  checkDeviceRules(linux.Resources?.Devices);
  const allowAllDevices = devicesAllowAll(linux.Resources?.Devices);
  const devicesEnforced = options.deviceCgroup === true && options.containerId !== undefined;
  const process = convertProcess(spec.Process, 'OCI.Process', { inherit: undefined, allowMknod: allowAllDevices || devicesEnforced, warn: options.warn });

  const specNamespaces = namespacesFromOci('OCI.Linux.Namespaces', linux.Namespaces ?? []);
  const has = (type: NamespaceType): boolean => specNamespaces.some((n) => n.type === type);

  const hostns = options.allowHostNamespaces === true;
  if (!has('mount')) {
    if (!hostns) {
      throw new StatusError(Code.INVALID_ARGUMENT, `OCI.Linux.Namespaces must include a mount namespace (the container gets its own rootfs; ${HOST_NAMESPACES_OPTION})`);
    }
    checkSharedMountNamespace(spec, linux);
  }
  const idMappings = idMappingsFromOci(linux, specNamespaces, hostns);

  const hostname = checkString('OCI.Hostname', spec.Hostname ?? '');
  if (hostname !== '') {
    if (Buffer.byteLength(hostname) > HOST_NAME_MAX) throw invalid('OCI.Hostname', hostname, `longer than ${HOST_NAME_MAX} bytes`);
    if (!has('uts')) throw invalid('OCI.Hostname', hostname, 'setting a hostname needs a uts namespace in OCI.Linux.Namespaces');
  }

  const devices = devicesFromOci(linux.Devices);
  const maskedPaths = (linux.MaskedPaths ?? []).map((p, i) => checkAbsPath(`OCI.Linux.MaskedPaths[${i}]`, p, true));
  const readonlyPaths = (linux.ReadonlyPaths ?? []).map((p, i) => checkAbsPath(`OCI.Linux.ReadonlyPaths[${i}]`, p, true));

  const rootfsPropagation = linux.RootfsPropagation ?? '';
  if (!ROOTFS_PROPAGATIONS.includes(rootfsPropagation)) {
    throw invalid('OCI.Linux.RootfsPropagation', rootfsPropagation, `want one of ${ROOTFS_PROPAGATIONS.filter((p) => p).join(', ')}`);
  }

  const namespaces = rewriteNamespaces(specNamespaces, options, hostname);
  const joinedUts = specNamespaces.find((n) => n.type === 'uts' && n.path !== '');
  if (hostns && hostname !== '' && joinedUts) {
    options.warn?.({ field: 'OCI.Hostname', value: hostname, uts: joinedUts.path }, 'hostname not set: the container joins an existing uts namespace');
  }
  const sysctl: Record<string, string> = { ...(linux.Sysctl ?? {}) };
  validateSysctl(sysctl, namespaces);

  const cgroup = options.containerId !== undefined ? cgroupPlanFromSpec(linux, options.containerId, options.cgroupParent ?? '', devicesEnforced) : undefined;
  const unenforced = unenforcedFields(spec, devicesEnforced);
  if (unenforced.length > 0) {
    options.warn?.({ unenforced }, 'OCI fields accepted but not enforced');
  }
  const caps = spec.Process?.Capabilities;
  const askedMknod = caps ? CAP_SETS.some((set) => (caps[capitalised(set)] ?? []).includes('CAP_MKNOD')) : false;
  if (!allowAllDevices && !devicesEnforced && askedMknod) {
    options.warn?.({ field: 'OCI.Process.Capabilities' }, 'CAP_MKNOD removed: device cgroup rules cannot be enforced yet and they do not allow every device');
  }

  return {
    rootfs: rootPath,
    readonly: spec.Root?.Readonly === true,
    hostname,
    namespaces,
    mounts: mountsFromOci(spec.Mounts ?? []),
    process,
    maskedPaths,
    readonlyPaths,
    sysctl,
    rootfsPropagation,
    ...(seccomp ? { seccomp } : {}),
    devicesAllowAll: allowAllDevices,
    ...(devicesEnforced ? { devicesEnforced } : {}),
    unenforced,
    ...(cgroup ? { cgroup } : {}),
    ...(devices.length > 0 ? { devices } : {}),
    ...(hooks ? { hooks } : {}),
    ...(idMappings ? { idMappings } : {}),
    ...(mountLabel !== '' ? { mountLabel } : {}),
  };
}

/**
 * Host-namespace mode without a mount namespace: the container shares the agent's, so nothing
 * may change mounts outside its rootfs. INVALID_ARGUMENT naming the field for
 * Linux.MaskedPaths / ReadonlyPaths (runc: "unable to restrict sys entries without a private MNT
 * namespace"), Root.Readonly and Linux.RootfsPropagation.
 */
function checkSharedMountNamespace(spec: grpc.Spec.$Properties, linux: grpc.Linux.$Properties): void {
  const why = 'needs a mount namespace in OCI.Linux.Namespaces (without one the container shares the agent\'s)';
  if ((linux.MaskedPaths ?? []).length > 0) throw invalid('OCI.Linux.MaskedPaths', linux.MaskedPaths, why);
  if ((linux.ReadonlyPaths ?? []).length > 0) throw invalid('OCI.Linux.ReadonlyPaths', linux.ReadonlyPaths, why);
  if (spec.Root?.Readonly === true) throw invalid('OCI.Root.Readonly', true, why);
  if (linux.RootfsPropagation) throw invalid('OCI.Linux.RootfsPropagation', linux.RootfsPropagation, why);
}

/**
 * Linux.UIDMappings / GIDMappings for a new user namespace (config-linux.md#user-namespace-mappings;
 * runc validates the same): both required with a `user` namespace, refused without one; each
 * list checked by shared/idmap.ts validateIdMappings (size ≥ 1, at most 340 entries, no
 * overlapping container or host ranges). Joining an existing user namespace (a path) is
 * UNIMPLEMENTED unless `allowHostNamespaces` (host-namespace mode), where it takes no mappings
 * (the namespace has its own; INVALID_ARGUMENT when some are given). INVALID_ARGUMENT names the
 * field, e.g. `OCI.Linux.UIDMappings[0].Size`.
 */
export function idMappingsFromOci(linux: grpc.Linux.$Properties, namespaces: readonly NamespacePlan[], allowHostNamespaces = false): IdMappingsPlan | undefined {
  const user = namespaces.find((n) => n.type === 'user');
  const uids = linux.UIDMappings ?? [];
  const gids = linux.GIDMappings ?? [];
  if (!user) {
    if (uids.length > 0 || gids.length > 0) throw new StatusError(Code.INVALID_ARGUMENT, 'OCI.Linux.UIDMappings/GIDMappings given without a user namespace');
    return undefined;
  }
  if (user.path !== '') {
    if (!allowHostNamespaces) {
      throw new StatusError(Code.UNIMPLEMENTED, `OCI.Linux.Namespaces user path ${JSON.stringify(user.path)}: joining an existing user namespace is not supported (a new one with UIDMappings/GIDMappings is; ${HOST_NAMESPACES_OPTION})`);
    }
    if (uids.length > 0 || gids.length > 0) {
      throw new StatusError(Code.INVALID_ARGUMENT, `OCI.Linux.UIDMappings/GIDMappings given with user namespace path ${JSON.stringify(user.path)} (a joined namespace has its own mappings)`);
    }
    return undefined;
  }
  const names = { containerId: 'ContainerID', hostId: 'HostID', size: 'Size' };
  const conv = (list: readonly grpc.LinuxIDMapping.$Properties[]) =>
    list.map((m) => ({ containerId: m.ContainerID ?? 0, hostId: m.HostID ?? 0, size: m.Size ?? 0 }));
  return {
    uid: validateIdMappings('OCI.Linux.UIDMappings', conv(uids), names),
    gid: validateIdMappings('OCI.Linux.GIDMappings', conv(gids), names),
  };
}
