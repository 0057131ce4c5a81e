/**
 * OCI linux.namespaces (config-linux.md#namespaces) → {@link NamespacePlan}s, and Kata's
 * namespace rewrite (rpc.rs update_container_namespaces).
 */
import type { grpc } from '../../shared/generated/protos';
import { Code, StatusError, type NamespacePlan, type NamespaceType } from '../../shared/protocol';
import { checkAbsPath, invalid } from './common';
import type { ContainerPlanOptions } from './options';

/** OCI namespace types we accept (config-linux.md#namespaces; "time" is not supported yet). */
export const NAMESPACE_TYPES: readonly NamespaceType[] = ['pid', 'network', 'mount', 'ipc', 'uts', 'cgroup', 'user'];

/** How a refusal names the host-namespace option. */
export const HOST_NAMESPACES_OPTION = 'the agent option --allow-host-namespaces (KATA_AGENT_ALLOW_HOST_NAMESPACES=1) is off';

/**
 * `list` (at `field`, e.g. "OCI.Linux.Namespaces") → plans. INVALID_ARGUMENT naming
 * `<field>[i].Type` / `.Path` for an unknown or repeated type, a relative path, or a
 * /proc/<pid>/ns file of another type.
 */
export function namespacesFromOci(field: string, list: readonly grpc.LinuxNamespace.$Properties[]): NamespacePlan[] {
  const seen = new Set<string>();
  return list.map((ns, i) => {
    const f = `${field}[${i}]`;
    const type = ns.Type ?? '';
    if (!(NAMESPACE_TYPES as readonly string[]).includes(type)) {
      throw invalid(`${f}.Type`, type, `unknown namespace type (want one of ${NAMESPACE_TYPES.join(', ')})`);
    }
    if (seen.has(type)) throw invalid(`${f}.Type`, type, 'duplicate namespace type');
    seen.add(type);
    const path = ns.Path ? checkAbsPath(`${f}.Path`, ns.Path, false) : '';
    // A /proc/<pid>/ns/<file> path names its type: a file of another type is a wrong path even
    // where the rewrite replaces it (runtime-spec config-linux.md#namespaces: "an error MUST be
    // generated" for a path of the wrong type; runtime-tools linux_ns_path_type).
    const file = /^\/proc\/(?:self|thread-self|[0-9]+)\/ns\/([a-z_]+)$/.exec(path)?.[1];
    if (file !== undefined && !NS_FILES[type as NamespaceType].includes(file)) {
      throw invalid(`${f}.Path`, path, `is a ${file} namespace file, not ${type} (want /proc/<pid>/ns/${NS_FILES[type as NamespaceType][0]})`);
    }
    return { type: type as NamespaceType, path };
  });
}

/** The /proc/<pid>/ns file names of each namespace type (pid_for_children is a pid namespace). */
const NS_FILES: Readonly<Record<NamespaceType, readonly string[]>> = {
  pid: ['pid', 'pid_for_children'],
  network: ['net'],
  mount: ['mnt'],
  ipc: ['ipc'],
  uts: ['uts'],
  cgroup: ['cgroup'],
  user: ['user'],
};

/**
 * Kata's namespace rewrite (rpc.rs update_container_namespaces): ipc and uts entries of the
 * spec get the sandbox's persistent namespace of that type ("" = a new one when the sandbox has
 * none, as upstream); the pid entry is set to the sandbox pid namespace when `sandboxPidns`,
 * else to "" (a new pid namespace). Upstream appends a second pid entry; we replace any pid
 * entry of the spec, so the plan has exactly one.
 *
 * Departure: a container whose spec sets a `hostname` ("" = none) other than the sandbox's gets
 * a uts namespace of its own, where kata-init sets that hostname; upstream joins the sandbox's
 * and ignores the spec's hostname without a word (the Kata runtime gives every container of a
 * pod the pod's hostname, so with it nothing changes). Stand-alone, one sandbox serves
 * containers of unrelated specs (kata-agent-oci, the OCI conformance suite's `hostname`).
 *
 * Host-namespace mode (`options.allowHostNamespaces`): an entry with a path is kept as given
 * (pid included, whatever `sandboxPidns` says: the Kata runtime empties paths, so a path comes
 * from a non-Kata client); the rewrite above applies to entries without one; a spec without a
 * pid entry gets none (the container shares the agent's) unless `sandboxPidns`.
 *
 * Throws StatusError FAILED_PRECONDITION "sandbox does not have a shared pid namespace" when
 * `sandboxPidns` is asked for and the sandbox has none yet (upstream: INTERNAL).
 */
export function rewriteNamespaces(namespaces: readonly NamespacePlan[], options: ContainerPlanOptions, hostname = ''): NamespacePlan[] {
  const sandboxPath = (type: NamespaceType): string =>
    options.sandbox.namespaces.find((n) => n.type === type)?.path ?? '';
  const ownUts = hostname !== '' && hostname !== (options.sandbox.hostname ?? '');
  const hostns = options.allowHostNamespaces === true;
  const out: NamespacePlan[] = [];
  for (const ns of namespaces) {
    if (hostns && ns.path !== '') {
      out.push({ ...ns });
      continue;
    }
    if (ns.type === 'pid') continue;
    if (ns.type === 'uts' && ownUts) out.push({ type: 'uts', path: '' });
    else if (ns.type === 'ipc' || ns.type === 'uts') out.push({ type: ns.type, path: sandboxPath(ns.type) });
    else out.push({ ...ns });
  }
  if (hostns && namespaces.some((n) => n.type === 'pid' && n.path !== '')) return out;
  if (hostns && !options.sandboxPidns && !namespaces.some((n) => n.type === 'pid')) return out;
  let pidPath = '';
  if (options.sandboxPidns) {
    if (!options.sandbox.pidns) {
      throw new StatusError(Code.FAILED_PRECONDITION, 'sandbox does not have a shared pid namespace (sandbox_pidns requested)');
    }
    pidPath = options.sandbox.pidns;
  }
  out.push({ type: 'pid', path: pidPath });
  return out;
}
