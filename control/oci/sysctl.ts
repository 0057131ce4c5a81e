/**
 * OCI linux.sysctl (config-linux.md#sysctl) against Kata's allow-list (rustjail validator.rs).
 */
import type { NamespacePlan, NamespaceType } from '../../shared/protocol';
import { checkString, invalid } from './common';

/**
 * IPC-namespaced sysctls Kata allows when the spec has an ipc namespace (rustjail validator.rs
 * SYSCTLS); `fs.mqueue.*` is allowed under the same condition.
 */
export const IPC_SYSCTLS: readonly string[] = [
  'kernel.msgmax', 'kernel.msgmnb', 'kernel.msgmni', 'kernel.sem',
  'kernel.shmall', 'kernel.shmmax', 'kernel.shmmni', 'kernel.shm_rmid_forced',
];

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
