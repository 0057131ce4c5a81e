/**
 * OCI linux.uidMappings / gidMappings (config-linux.md#user-namespace-mappings) →
 * {@link IdMappingsPlan} for a new user namespace.
 */
import type { grpc } from '../../shared/generated/protos';
import { validateIdMappings } from '../../shared/idmap';
import { Code, StatusError, type IdMappingsPlan, type NamespacePlan } from '../../shared/protocol';
import { HOST_NAMESPACES_OPTION } from './namespaces';

/**
 * Linux.UIDMappings / GIDMappings for a new user namespace (config-linux.md#user-namespace-mappings;
 * runc validates the same): both required with a `user` namespace, refused without one; each
 * list checked by shared/idmap.ts validateIdMappings (size ≥ 1, at most 340 entries, no
 * overlapping container or host ranges). Joining an existing user namespace (a path) is
 * UNIMPLEMENTED unless `allowHostNamespaces` (host-namespace mode), where it takes no mappings
 * (the namespace has its own; INVALID_ARGUMENT when some are given). INVALID_ARGUMENT names the
 * field, e.g. `OCI.Linux.UIDMappings[0].Size`.
 */
export function idMappingsFromOci(linux: grpc.Linux.$Properties, namespaces: readonly NamespacePlan[], allowHostNamespaces = false): IdMappingsPlan | undefined {
  const user = namespaces.find((n) => n.type === 'user');
  const uids = linux.UIDMappings ?? [];
  const gids = linux.GIDMappings ?? [];
  if (!user) {
    if (uids.length > 0 || gids.length > 0) throw new StatusError(Code.INVALID_ARGUMENT, 'OCI.Linux.UIDMappings/GIDMappings given without a user namespace');
    return undefined;
  }
  if (user.path !== '') {
    if (!allowHostNamespaces) {
      throw new StatusError(Code.UNIMPLEMENTED, `OCI.Linux.Namespaces user path ${JSON.stringify(user.path)}: joining an existing user namespace is not supported (a new one with UIDMappings/GIDMappings is; ${HOST_NAMESPACES_OPTION})`);
    }
    if (uids.length > 0 || gids.length > 0) {
      throw new StatusError(Code.INVALID_ARGUMENT, `OCI.Linux.UIDMappings/GIDMappings given with user namespace path ${JSON.stringify(user.path)} (a joined namespace has its own mappings)`);
    }
    return undefined;
  }
  const names = { containerId: 'ContainerID', hostId: 'HostID', size: 'Size' };
  const conv = (list: readonly grpc.LinuxIDMapping.$Properties[]) =>
    list.map((m) => ({ containerId: m.ContainerID ?? 0, hostId: m.HostID ?? 0, size: m.Size ?? 0 }));
  return {
    uid: validateIdMappings('OCI.Linux.UIDMappings', conv(uids), names),
    gid: validateIdMappings('OCI.Linux.GIDMappings', conv(gids), names),
  };
}
