/**
 * OCI process.capabilities (config.md#linux-process) → {@link CapabilitiesPlan}: capability
 * names → numbers, per set, and the set operations the CAP_MKNOD interim needs.
 */
import type { grpc } from '../../shared/generated/protos';
import type { CapabilitiesPlan } from '../../shared/protocol';
import type { OciWarn } from './common';

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

/** CAP_MKNOD's number (removed while device rules cannot be enforced, see control/oci.ts's file comment). */
export const CAP_MKNOD = 27;

/** Every capability set empty. */
export function emptyCapabilities(): CapabilitiesPlan {
  return { bounding: [], effective: [], inheritable: [], permitted: [], ambient: [] };
}

/** The capability sets of a {@link CapabilitiesPlan}, in OCI order. */
export const CAP_SETS = ['bounding', 'effective', 'inheritable', 'permitted', 'ambient'] as const;

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

/** A {@link CAP_SETS} name in proto spelling ("bounding" → "Bounding"). */
export function capitalised(set: (typeof CAP_SETS)[number]): 'Bounding' | 'Effective' | 'Inheritable' | 'Permitted' | 'Ambient' {
  return (set[0].toUpperCase() + set.slice(1)) as 'Bounding' | 'Effective' | 'Inheritable' | 'Permitted' | 'Ambient';
}

/** A copy of `caps` with `cap` removed from every set. */
export function withoutCapability(caps: CapabilitiesPlan, cap: number): CapabilitiesPlan {
  const out = emptyCapabilities();
  for (const set of CAP_SETS) out[set] = caps[set].filter((c) => c !== cap);
  return out;
}

/** A deep copy of `caps`. */
export function cloneCapabilities(caps: CapabilitiesPlan): CapabilitiesPlan {
  const out = emptyCapabilities();
  for (const set of CAP_SETS) out[set] = [...caps[set]];
  return out;
}
