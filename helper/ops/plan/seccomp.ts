/** Re-validation of a plan's seccomp profile (OCI config-linux.md#seccomp; Kata rustjail seccomp.rs). */
import { SECCOMP_ACTIONS, SECCOMP_ARCHES, SECCOMP_FLAGS, SECCOMP_LIMITS, SECCOMP_OPS, type SeccompAction, type SeccompOp, type SeccompPlan } from '../../../shared/protocol';
import { invalidArgument as invalid } from '../../../shared/protocol';
import type { ValidSeccomp } from './types';
import { isRecord, checkString, checkArray, describe } from './checks';

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
