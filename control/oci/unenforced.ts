/**
 * The OCI fields accepted but not enforced (docs/ARCHITECTURE.md "What the OCI spec gets").
 */
import type { grpc } from '../../shared/generated/protos';
import { devicesAllowAll } from './devices';

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
 * Linux.CgroupsPath are enforced: control/oci/cgroups.ts, helper/ops/cgroup.ts.)
 */
export function unenforcedFields(spec: grpc.Spec.$Properties, devicesEnforced = false): string[] {
  const out: string[] = [];
  const devices = spec.Linux?.Resources?.Devices;
  if (!devicesEnforced && (devices ?? []).length > 0 && !devicesAllowAll(devices)) out.push('OCI.Linux.Resources.Devices');
  setLeaves('OCI.Linux.IntelRdt', spec.Linux?.IntelRdt, out);
  if (spec.Process?.ApparmorProfile) out.push('OCI.Process.ApparmorProfile');
  return out;
}
