/**
 * OCI linux.seccomp (config-linux.md#seccomp) → {@link SeccompPlan}.
 */
import type { grpc } from '../../shared/generated/protos';
import {
  Code,
  StatusError,
  type SeccompAction,
  type SeccompOp,
  type SeccompPlan,
  type SeccompSyscallPlan,
  SECCOMP_ACTIONS,
  SECCOMP_ARCHES,
  SECCOMP_FLAGS,
  SECCOMP_LIMITS,
  SECCOMP_OPS,
} from '../../shared/protocol';
import { checkString, invalid, toInt } from './common';

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
