/** Re-validation of ProcessPlan: args, env, ids, rlimits, capabilities, oomScoreAdj, SELinux label. */
import { invalidArgument as invalid } from '../../../shared/protocol';
import { MAX_ENV, MAX_ARGS, MAX_GROUPS, MAX_CAPABILITY, OOM_SCORE_ADJ_MIN, OOM_SCORE_ADJ_MAX, RLIMITS, DEFAULT_PATH } from './limits';
import type { ValidCapabilities, ValidProcessPlan } from './types';
import { isRecord, checkString, checkBool, checkArray, checkId, describe, checkAbsolute, checkSelinuxLabel } from './checks';

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

/** The value of PATH in a plan's env (the last entry wins, as getenv would see it), or the default. */
export function planPath(env: string[]): string {
  let found: string | undefined;
  for (const e of env) if (e.startsWith('PATH=')) found = e.slice(5);
  return found ?? DEFAULT_PATH;
}
