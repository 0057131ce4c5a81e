/**
 * Compiling a container's seccomp profile (OCI linux.seccomp, already re-validated by
 * helper/ops/plan.ts validateSeccomp) into the BPF program kata-init loads (KATA-INIT.md
 * `seccomp`), with libseccomp through the native addon (shared/native.ts seccompCompile).
 *
 * Behaviour follows upstream Kata rustjail seccomp.rs: the default action's errno is EPERM,
 * listed architectures are added, rules whose action equals the default are skipped, unknown
 * syscall names are skipped (and reported: field case B23, an unknown name must not fail the
 * container or the agent), SCMP_CMP_MASKED_EQ takes `value` as the mask and `valueTwo` as the
 * datum, flags TSYNC/LOG/SPEC_ALLOW, the NNP control bit cleared. The filter is compiled once
 * per container and applied to its init and to every exec process, as runc and Kata do.
 */
import { Code, StatusError } from '../../shared/protocol';
import type { NativeAddon } from '../../shared/native';
import type { SeccompFilter, ValidSeccomp } from './plan';

/** The kernel's limit on a classic BPF program (BPF_MAXINSNS), in instructions. */
export const BPF_MAXINSNS = 4096;
/** Bytes per BPF instruction (struct sock_filter). */
export const BPF_INSN_BYTES = 8;

/** A compiled profile: what kata-init gets, and the syscall names that were skipped. */
export interface CompiledSeccomp extends SeccompFilter {
  /** Syscall names libseccomp does not know (each once): skipped, to be logged by the caller. */
  skipped: string[];
}

/**
 * Compile `profile` with the addon's libseccomp. Throws StatusError INVALID_ARGUMENT
 * "seccomp profile cannot be compiled: <libseccomp error>" when libseccomp refuses it (e.g. an
 * architecture this libseccomp does not know, a flag the kernel lacks), or when the program
 * exceeds the kernel's 4096 instructions; INTERNAL when the addon rejects the validated
 * profile's shape (a helper bug) or returns a malformed program.
 */
export function compileSeccomp(native: Pick<NativeAddon, 'seccompCompile'>, profile: ValidSeccomp): CompiledSeccomp {
  let out;
  try {
    out = native.seccompCompile(profile);
  } catch (err) {
    if (err instanceof TypeError) {
      throw new StatusError(Code.INTERNAL, `seccomp profile rejected by the compiler after validation: ${err.message}`);
    }
    throw new StatusError(Code.INVALID_ARGUMENT, `seccomp profile cannot be compiled: ${(err as Error).message}`);
  }
  const { bpf, flags, skipped } = out;
  if (bpf.length === 0 || bpf.length % BPF_INSN_BYTES !== 0) {
    throw new StatusError(Code.INTERNAL, `libseccomp exported a BPF program of ${bpf.length} bytes (not a whole number of instructions)`);
  }
  const insns = bpf.length / BPF_INSN_BYTES;
  if (insns > BPF_MAXINSNS) {
    throw new StatusError(
      Code.INVALID_ARGUMENT,
      `seccomp profile compiles to ${insns} BPF instructions, more than the kernel's ${BPF_MAXINSNS} (too many rules or architectures)`,
    );
  }
  return { bpf, flags, skipped };
}
