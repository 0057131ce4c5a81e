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
 * Not converted yet (later issues; the fields are accepted and not applied): Hooks,
 * Linux.Resources, Linux.CgroupsPath, Linux.Seccomp, Linux.Devices, Process.Capabilities,
 * Process.OOMScoreAdj, Process.SelinuxLabel, Process.ApparmorProfile, Annotations. HOME is not
 * derived here (control must not read the container's /etc/passwd): kata-init sets it from the
 * container's own /etc/passwd when the env has none (helper/native/KATA-INIT.md step 8a).
 */
import type { grpc } from '../shared/generated/protos';
import {
  Code,
  StatusError,
  type ContainerPlan,
  type MountPlan,
  type NamespacePlan,
  type NamespaceType,
  type ProcessPlan,
  type RlimitPlan,
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

function toUint(field: string, value: number | { toNumber(): number } | null | undefined): number {
  const n = typeof value === 'number' ? value : value == null ? 0 : value.toNumber();
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

/**
 * Convert an OCI process (config.md#process) to a {@link ProcessPlan}; used for a container's
 * init process (`field` "OCI.Process") and for ExecProcess ("process").
 *
 * Throws StatusError INVALID_ARGUMENT when the process is absent, Args is empty or Args[0] is
 * empty, a string carries a NUL byte, Cwd is relative, an rlimit type is unknown or repeated or
 * its soft limit exceeds the hard one. Env is sanitised ({@link sanitizeEnv}); an empty Cwd
 * becomes "/".
 */
export function processPlanFromOci(process: grpc.Process.$Properties | null | undefined, field: string): ProcessPlan {
  if (!process) throw new StatusError(Code.INVALID_ARGUMENT, `${field} is required`);
  const args = process.Args ?? [];
  if (args.length === 0) throw new StatusError(Code.INVALID_ARGUMENT, `${field}.Args must not be empty`);
  args.forEach((a, i) => checkString(`${field}.Args[${i}]`, a));
  if (args[0] === '') throw invalid(`${field}.Args[0]`, '', 'must not be empty');
  const cwd = process.Cwd ? checkAbsPath(`${field}.Cwd`, process.Cwd, false) : '/';
  const user = process.User ?? {};
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
  };
}

/** What the sandbox contributes to a container's namespaces. */
export interface SandboxNamespaceInfo {
  /** The sandbox's persistent namespaces (from the helper's createSandbox), e.g. ipc and uts. */
  namespaces: readonly NamespacePlan[];
  /** Path of the sandbox pid namespace (`/proc/<pid>/ns/pid` of the first container's init), or null. */
  pidns: string | null;
}

/** Options of {@link containerPlanFromSpec}. */
export interface ContainerPlanOptions {
  /** CreateContainerRequest.sandbox_pidns: join the sandbox pid namespace instead of a new one. */
  sandboxPidns: boolean;
  sandbox: SandboxNamespaceInfo;
}

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
    return { type: type as NamespaceType, path };
  });
}

/**
 * Kata's namespace rewrite (rpc.rs update_container_namespaces): ipc and uts entries of the
 * spec get the sandbox's persistent namespace of that type ("" = a new one when the sandbox has
 * none, as upstream); the pid entry is set to the sandbox pid namespace when `sandboxPidns`,
 * else to "" (a new pid namespace). Upstream appends a second pid entry; we replace any pid
 * entry of the spec, so the plan has exactly one.
 *
 * Throws StatusError FAILED_PRECONDITION "sandbox does not have a shared pid namespace" when
 * `sandboxPidns` is asked for and the sandbox has none yet (upstream: INTERNAL).
 */
export function rewriteNamespaces(namespaces: readonly NamespacePlan[], options: ContainerPlanOptions): NamespacePlan[] {
  const sandboxPath = (type: NamespaceType): string =>
    options.sandbox.namespaces.find((n) => n.type === type)?.path ?? '';
  const out: NamespacePlan[] = [];
  for (const ns of namespaces) {
    if (ns.type === 'pid') continue;
    if (ns.type === 'ipc' || ns.type === 'uts') out.push({ type: ns.type, path: sandboxPath(ns.type) });
    else out.push({ ...ns });
  }
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
 * ({@link IPC_SYSCTLS}) and `fs.mqueue.*` need an ipc namespace in the spec; `net.*` is allowed
 * (the network namespace is the sandbox's, never listed in the spec); `kernel.domainname` needs
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
    if (key.startsWith('net.')) continue;
    if (key === 'kernel.domainname') {
      if (!has('uts')) throw invalid(field, value, 'this sysctl needs a uts namespace in OCI.Linux.Namespaces');
      continue;
    }
    throw invalid(field, value, 'sysctl not allowed (only namespaced sysctls: net.*, kernel.domainname, IPC kernel.* and fs.mqueue.*)');
  }
}

function mountsFromOci(mounts: readonly grpc.Mount.$Properties[]): MountPlan[] {
  return mounts.map((m, i) => {
    const f = `OCI.Mounts[${i}]`;
    const destination = checkAbsPath(`${f}.destination`, m.destination ?? '', true);
    const options = (m.options ?? []).map((o, j) => checkString(`${f}.options[${j}]`, o));
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
 * Throws StatusError INVALID_ARGUMENT (message names the field and value) when: Root or Root.Path
 * is missing or not absolute; Process is invalid ({@link processPlanFromOci}); Linux is missing;
 * a namespace type is unknown or repeated or its path relative; there is no mount namespace; a mount destination is relative
 * or has a ".." component; a masked or read-only path is relative or has ".."; Hostname is given without a uts namespace or is too
 * long; a sysctl is not allowed ({@link validateSysctl}); RootfsPropagation is unknown; uid/gid
 * mappings are given without a user namespace. UNIMPLEMENTED for a user namespace (the plan
 * cannot carry id mappings yet). FAILED_PRECONDITION when `sandboxPidns` is asked for and the
 * sandbox has no pid namespace.
 */
export function containerPlanFromSpec(spec: grpc.Spec.$Properties, options: ContainerPlanOptions): ContainerPlan {
  const rootPath = spec.Root?.Path ?? '';
  if (rootPath === '') throw new StatusError(Code.INVALID_ARGUMENT, 'OCI.Root.Path is required');
  checkAbsPath('OCI.Root.Path', rootPath, true);

  const process = processPlanFromOci(spec.Process, 'OCI.Process');

  const linux = spec.Linux;
  if (!linux) throw new StatusError(Code.INVALID_ARGUMENT, 'OCI.Linux is required');

  const specNamespaces = namespacesFromOci('OCI.Linux.Namespaces', linux.Namespaces ?? []);
  const has = (type: NamespaceType): boolean => specNamespaces.some((n) => n.type === type);

  if (!has('mount')) {
    throw new StatusError(Code.INVALID_ARGUMENT, 'OCI.Linux.Namespaces must include a mount namespace (the container gets its own rootfs)');
  }
  if (has('user')) {
    throw new StatusError(Code.UNIMPLEMENTED, 'user namespaces (OCI.Linux.Namespaces type "user") are not supported yet');
  }
  if ((linux.UIDMappings ?? []).length > 0 || (linux.GIDMappings ?? []).length > 0) {
    throw new StatusError(Code.INVALID_ARGUMENT, 'OCI.Linux.UIDMappings/GIDMappings given without a user namespace');
  }

  const hostname = checkString('OCI.Hostname', spec.Hostname ?? '');
  if (hostname !== '') {
    if (Buffer.byteLength(hostname) > HOST_NAME_MAX) throw invalid('OCI.Hostname', hostname, `longer than ${HOST_NAME_MAX} bytes`);
    if (!has('uts')) throw invalid('OCI.Hostname', hostname, 'setting a hostname needs a uts namespace in OCI.Linux.Namespaces');
  }

  const maskedPaths = (linux.MaskedPaths ?? []).map((p, i) => checkAbsPath(`OCI.Linux.MaskedPaths[${i}]`, p, true));
  const readonlyPaths = (linux.ReadonlyPaths ?? []).map((p, i) => checkAbsPath(`OCI.Linux.ReadonlyPaths[${i}]`, p, true));

  const rootfsPropagation = linux.RootfsPropagation ?? '';
  if (!ROOTFS_PROPAGATIONS.includes(rootfsPropagation)) {
    throw invalid('OCI.Linux.RootfsPropagation', rootfsPropagation, `want one of ${ROOTFS_PROPAGATIONS.filter((p) => p).join(', ')}`);
  }

  const namespaces = rewriteNamespaces(specNamespaces, options);
  const sysctl: Record<string, string> = { ...(linux.Sysctl ?? {}) };
  validateSysctl(sysctl, namespaces);

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
  };
}
