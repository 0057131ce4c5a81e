/** Re-validation of a plan's namespaces and user-namespace id mappings. */
import * as fs from 'node:fs';
import { Code, StatusError, type IdMappingPlan, type IdMappingsPlan, type NamespacePlan } from '../../../shared/protocol';
import { invalidArgument as invalid } from '../../../shared/protocol';
import { MAX_ID_MAP_LINES, validateIdMappings } from '../../../shared/idmap';
import { MAX_PATH, ownKeysOnly, type KernelNamespace } from './limits';
import { type ValidNamespace, type PlanCheckOptions, HOST_NAMESPACES_OPTION } from './types';
import { isRecord, checkString, checkArray, describe } from './checks';

/** OCI namespace type → kernel name (config-linux.md#namespaces). */
const NAMESPACE_NAMES: Record<string, KernelNamespace | undefined> = ownKeysOnly({
  pid: 'pid',
  network: 'net',
  mount: 'mnt',
  ipc: 'ipc',
  uts: 'uts',
  cgroup: 'cgroup',
  user: 'user',
});

/**
 * Validate OCI namespaces: known types, no duplicates, "" or an absolute path; joining a user
 * namespace by path is UNIMPLEMENTED (a new one is fine). Paths are checked against the host only with `hostChecks`.
 */
export function validateNamespaces(raw: unknown, opts: PlanCheckOptions, field = 'namespaces'): ValidNamespace[] {
  const list = checkArray(raw, field, 16);
  const seen = new Set<string>();
  return list.map((n, i) => {
    const f = `${field}[${i}]`;
    if (!isRecord(n)) throw invalid(`${f} must be a map`);
    const ociType = checkString(n.type, `${f}.type`, 32);
    if (!(ociType in NAMESPACE_NAMES)) throw invalid(`${f}.type ${JSON.stringify(ociType)} is not a namespace type`);
    const type = NAMESPACE_NAMES[ociType];
    if (type === undefined) throw invalid(`${f}.type ${JSON.stringify(ociType)} is not a namespace type`);
    if (seen.has(type)) throw invalid(`${f}: namespace ${ociType} appears more than once`);
    seen.add(type);
    const p = n.path === undefined ? '' : checkString(n.path, `${f}.path`, MAX_PATH);
    if (type === 'user' && p !== '' && opts.allowHostNamespaces !== true) {
      throw new StatusError(Code.UNIMPLEMENTED, `${f}.path ${JSON.stringify(p)}: joining an existing user namespace is not supported (a new one with idMappings is; ${HOST_NAMESPACES_OPTION})`);
    }
    if (p !== '') {
      if (!p.startsWith('/')) throw invalid(`${f}.path ${JSON.stringify(p)} is not an absolute path`);
      if (opts.hostChecks) {
        // With the switch on any file is taken: kata-init checks on the fd it joins by that it
        // is a namespace file (nsfs) of this type (KATA-INIT.md `ns`).
        if (opts.allowHostNamespaces !== true && opts.namespacePathAllowed && !opts.namespacePathAllowed(type, p)) {
          throw invalid(
            `${f}.path ${JSON.stringify(p)} is not a ${ociType} namespace of this sandbox (a tracked process's /proc/<pid>/ns/${type}, a sandbox namespace file${type === 'net' ? ', or /run/netns/<name>' : ''}; ${HOST_NAMESPACES_OPTION})`,
          );
        }
        if (!fs.existsSync(p)) throw invalid(`${f}.path ${JSON.stringify(p)} does not exist`);
      }
    }
    return { type, path: p };
  });
}

/**
 * Re-check ContainerPlan.idMappings: required (uid and gid lists) with a new user namespace,
 * refused without one; each list as shared/idmap.ts validateIdMappings. INVALID_ARGUMENT
 * naming idMappings.<uid|gid>[i].<part>.
 */
export function validateIdMappingsPlan(raw: unknown, userns: boolean): IdMappingsPlan | undefined {
  if (raw === undefined) {
    if (userns) throw invalid('a user namespace needs idMappings (uid and gid mappings)');
    return undefined;
  }
  if (!userns) throw invalid('idMappings given without a user namespace');
  if (!isRecord(raw)) throw invalid(`idMappings must be a map, got ${describe(raw)}`);
  const list = (k: 'uid' | 'gid'): IdMappingPlan[] =>
    checkArray(raw[k] ?? [], `idMappings.${k}`, MAX_ID_MAP_LINES + 1).map((m, i) => {
      if (!isRecord(m)) throw invalid(`idMappings.${k}[${i}] must be a map, got ${describe(m)}`);
      return m as unknown as IdMappingPlan;
    });
  return { uid: validateIdMappings('idMappings.uid', list('uid')), gid: validateIdMappings('idMappings.gid', list('gid')) };
}

/** Re-exported for callers that only need the namespace mapping. */
export function kernelNamespaceName(ociType: NamespacePlan['type']): KernelNamespace | undefined {
  return NAMESPACE_NAMES[ociType];
}
