/**
 * OCI mounts (config.md#mounts), linux.rootfsPropagation, and what a container sharing the
 * agent's mount namespace may not ask for.
 */
import type { grpc } from '../../shared/generated/protos';
import type { MountPlan } from '../../shared/protocol';
import { checkAbsPath, checkString, invalid } from './common';

/** Valid linux.rootfsPropagation values ("" = the default, rslave). */
export const ROOTFS_PROPAGATIONS: readonly string[] = [
  '', 'shared', 'slave', 'private', 'unbindable', 'rshared', 'rslave', 'rprivate', 'runbindable',
];

/**
 * OCI mounts → {@link MountPlan}s. INVALID_ARGUMENT naming `OCI.Mounts[i].<field>` for a
 * relative destination or one with "..", a NUL byte, or "remount" on a mount that is not a bind.
 */
export function mountsFromOci(mounts: readonly grpc.Mount.$Properties[]): MountPlan[] {
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
 * Host-namespace mode without a mount namespace: the container shares the agent's, so nothing
 * may change mounts outside its rootfs. INVALID_ARGUMENT naming the field for
 * Linux.MaskedPaths / ReadonlyPaths (runc: "unable to restrict sys entries without a private MNT
 * namespace"), Root.Readonly and Linux.RootfsPropagation.
 */
export function checkSharedMountNamespace(spec: grpc.Spec.$Properties, linux: grpc.Linux.$Properties): void {
  const why = 'needs a mount namespace in OCI.Linux.Namespaces (without one the container shares the agent\'s)';
  if ((linux.MaskedPaths ?? []).length > 0) throw invalid('OCI.Linux.MaskedPaths', linux.MaskedPaths, why);
  if ((linux.ReadonlyPaths ?? []).length > 0) throw invalid('OCI.Linux.ReadonlyPaths', linux.ReadonlyPaths, why);
  if (spec.Root?.Readonly === true) throw invalid('OCI.Root.Readonly', true, why);
  if (linux.RootfsPropagation) throw invalid('OCI.Linux.RootfsPropagation', linux.RootfsPropagation, why);
}
