/**
 * OCI process (config.md#process) → {@link ProcessPlan}: args, cwd, env, user, rlimits,
 * capabilities, oomScoreAdj, labels; for a container's init and for ExecProcess.
 */
import type { grpc } from '../../shared/generated/protos';
import { Code, StatusError, type CapabilitiesPlan, type ContainerPlan, type ProcessPlan, type RlimitPlan } from '../../shared/protocol';
import { CAP_MKNOD, capabilitiesFromOci, cloneCapabilities, emptyCapabilities, withoutCapability } from './capabilities';
import { checkAbsPath, checkString, invalid, toInt, toUint, type OciWarn } from './common';

/** rlimit type names Linux knows (getrlimit(2)); anything else is refused. */
export const RLIMIT_TYPES: readonly string[] = [
  'RLIMIT_AS', 'RLIMIT_CORE', 'RLIMIT_CPU', 'RLIMIT_DATA', 'RLIMIT_FSIZE', 'RLIMIT_LOCKS',
  'RLIMIT_MEMLOCK', 'RLIMIT_MSGQUEUE', 'RLIMIT_NICE', 'RLIMIT_NOFILE', 'RLIMIT_NPROC',
  'RLIMIT_RSS', 'RLIMIT_RTPRIO', 'RLIMIT_RTTIME', 'RLIMIT_SIGPENDING', 'RLIMIT_STACK',
];

/** Valid OCI process.oomScoreAdj values (proc(5) /proc/pid/oom_score_adj). */
export const OOM_SCORE_ADJ_MIN = -1000;
export const OOM_SCORE_ADJ_MAX = 1000;

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

/** What an exec process takes from its container: see {@link processPlanFromOci}. */
export interface ExecContext {
  /** The container's plan (its init's capabilities and its devicesAllowAll). */
  container?: Pick<ContainerPlan, 'process' | 'devicesAllowAll' | 'devicesEnforced'>;
  warn?: OciWarn;
}

/**
 * The conversion behind {@link processPlanFromOci} (and a container's init, through
 * containerPlanFromSpec): `inherit` is the container init's capabilities for an exec,
 * `allowMknod` false removes CAP_MKNOD. Throws as processPlanFromOci documents.
 */
export function convertProcess(
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
 * removed unless `exec.container.devicesAllowAll` (see control/oci.ts's file comment; without a container
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
