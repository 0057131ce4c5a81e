/**
 * OCI spec (grpc.Spec) → {@link ContainerPlan}: the entry point of a CreateContainer
 * conversion, putting together every spec area of control/oci/ (see control/oci.ts).
 */
import * as path from 'node:path';
import type { grpc } from '../../shared/generated/protos';
import { Code, StatusError, type ContainerPlan, type NamespaceType } from '../../shared/protocol';
import { CAP_SETS, capitalised } from './capabilities';
import { cgroupPlanFromSpec, checkDeviceRules } from './cgroups';
import { checkAbsPath, checkString, invalid } from './common';
import { devicesAllowAll, devicesFromOci } from './devices';
import { hooksFromOci } from './hooks';
import { idMappingsFromOci } from './id-mappings';
import { checkSharedMountNamespace, mountsFromOci, ROOTFS_PROPAGATIONS } from './mounts';
import { HOST_NAMESPACES_OPTION, namespacesFromOci, rewriteNamespaces } from './namespaces';
import type { ContainerPlanOptions } from './options';
import { convertProcess } from './process';
import { seccompFromOci } from './seccomp';
import { validateSysctl } from './sysctl';
import { unenforcedFields } from './unenforced';

/** Longest hostname Linux accepts (HOST_NAME_MAX), in bytes. */
export const HOST_NAME_MAX = 64;

/**
 * Convert and validate the OCI spec of a CreateContainer request into a {@link ContainerPlan},
 * applying Kata's namespace rewrite ({@link rewriteNamespaces}).
 *
 * The init's capabilities follow {@link processPlanFromOci} (every set empty when the spec has
 * none); CAP_MKNOD is kept only when {@link devicesAllowAll} holds for
 * linux.resources.devices. `devicesAllowAll` and `unenforced` ({@link unenforcedFields}) are
 * recorded in the plan; unenforced fields, an ignored ApparmorProfile, unknown capability names
 * and a removed CAP_MKNOD are reported through `options.warn`.
 *
 * Throws StatusError INVALID_ARGUMENT (message names the field and value) when: Root or Root.Path
 * is missing or not absolute, or is the guest root "/"; Process is invalid
 * ({@link processPlanFromOci}); Linux is missing;
 * a namespace type is unknown or repeated or its path relative; there is no mount namespace; a mount destination is relative
 * or has a ".." component; a masked or read-only path is relative or has ".."; Hostname is given without a uts namespace or is too
 * long; a sysctl is not allowed ({@link validateSysctl}); RootfsPropagation is unknown; uid/gid
 * mappings are given without a user namespace; Linux.Seccomp is invalid ({@link seccompFromOci}).
 * bad uid/gid mappings ({@link idMappingsFromOci}).
 * UNIMPLEMENTED for joining an existing user namespace or the seccomp action SCMP_ACT_NOTIFY.
 * FAILED_PRECONDITION when `sandboxPidns` is asked for and the
 * sandbox has no pid namespace.
 */
export function containerPlanFromSpec(spec: grpc.Spec.$Properties, options: ContainerPlanOptions): ContainerPlan {
  const rootPath = spec.Root?.Path ?? '';
  if (rootPath === '') throw new StatusError(Code.INVALID_ARGUMENT, 'OCI.Root.Path is required');
  checkAbsPath('OCI.Root.Path', rootPath, true);
  if (path.posix.normalize(rootPath) === '/') {
    throw invalid('OCI.Root.Path', rootPath, 'the guest root "/" cannot be a container rootfs (pivot_root needs a directory below it)');
  }

  const linux = spec.Linux;
  if (!linux) throw new StatusError(Code.INVALID_ARGUMENT, 'OCI.Linux is required');

  const hooks = hooksFromOci(spec.Hooks);
  const seccomp = seccompFromOci(linux.Seccomp);
  const mountLabel = linux.MountLabel ? checkString('OCI.Linux.MountLabel', linux.MountLabel) : '';

  checkDeviceRules(linux.Resources?.Devices);
  const allowAllDevices = devicesAllowAll(linux.Resources?.Devices);
  const devicesEnforced = options.deviceCgroup === true && options.containerId !== undefined;
  const process = convertProcess(spec.Process, 'OCI.Process', { inherit: undefined, allowMknod: allowAllDevices || devicesEnforced, warn: options.warn });

  const specNamespaces = namespacesFromOci('OCI.Linux.Namespaces', linux.Namespaces ?? []);
  const has = (type: NamespaceType): boolean => specNamespaces.some((n) => n.type === type);

  const hostns = options.allowHostNamespaces === true;
  if (!has('mount')) {
    if (!hostns) {
      throw new StatusError(Code.INVALID_ARGUMENT, `OCI.Linux.Namespaces must include a mount namespace (the container gets its own rootfs; ${HOST_NAMESPACES_OPTION})`);
    }
    checkSharedMountNamespace(spec, linux);
  }
  const idMappings = idMappingsFromOci(linux, specNamespaces, hostns);

  const hostname = checkString('OCI.Hostname', spec.Hostname ?? '');
  if (hostname !== '') {
    if (Buffer.byteLength(hostname) > HOST_NAME_MAX) throw invalid('OCI.Hostname', hostname, `longer than ${HOST_NAME_MAX} bytes`);
    if (!has('uts')) throw invalid('OCI.Hostname', hostname, 'setting a hostname needs a uts namespace in OCI.Linux.Namespaces');
  }

  const devices = devicesFromOci(linux.Devices);
  const maskedPaths = (linux.MaskedPaths ?? []).map((p, i) => checkAbsPath(`OCI.Linux.MaskedPaths[${i}]`, p, true));
  const readonlyPaths = (linux.ReadonlyPaths ?? []).map((p, i) => checkAbsPath(`OCI.Linux.ReadonlyPaths[${i}]`, p, true));

  const rootfsPropagation = linux.RootfsPropagation ?? '';
  if (!ROOTFS_PROPAGATIONS.includes(rootfsPropagation)) {
    throw invalid('OCI.Linux.RootfsPropagation', rootfsPropagation, `want one of ${ROOTFS_PROPAGATIONS.filter((p) => p).join(', ')}`);
  }

  const namespaces = rewriteNamespaces(specNamespaces, options, hostname);
  const joinedUts = specNamespaces.find((n) => n.type === 'uts' && n.path !== '');
  if (hostns && hostname !== '' && joinedUts) {
    options.warn?.({ field: 'OCI.Hostname', value: hostname, uts: joinedUts.path }, 'hostname not set: the container joins an existing uts namespace');
  }
  const sysctl: Record<string, string> = { ...(linux.Sysctl ?? {}) };
  validateSysctl(sysctl, namespaces);

  const cgroup = options.containerId !== undefined ? cgroupPlanFromSpec(linux, options.containerId, options.cgroupParent ?? '', devicesEnforced) : undefined;
  const unenforced = unenforcedFields(spec, devicesEnforced);
  if (unenforced.length > 0) {
    options.warn?.({ unenforced }, 'OCI fields accepted but not enforced');
  }
  const caps = spec.Process?.Capabilities;
  const askedMknod = caps ? CAP_SETS.some((set) => (caps[capitalised(set)] ?? []).includes('CAP_MKNOD')) : false;
  if (!allowAllDevices && !devicesEnforced && askedMknod) {
    options.warn?.({ field: 'OCI.Process.Capabilities' }, 'CAP_MKNOD removed: device cgroup rules cannot be enforced yet and they do not allow every device');
  }

  return {
    rootfs: rootPath,
    readonly: spec.Root?.Readonly === true,
    hostname,
    namespaces,
    mounts: mountsFromOci(spec.Mounts ?? []),
    process,
    maskedPaths,
    readonlyPaths,
    sysctl,
    rootfsPropagation,
    ...(seccomp ? { seccomp } : {}),
    devicesAllowAll: allowAllDevices,
    ...(devicesEnforced ? { devicesEnforced } : {}),
    unenforced,
    ...(cgroup ? { cgroup } : {}),
    ...(devices.length > 0 ? { devices } : {}),
    ...(hooks ? { hooks } : {}),
    ...(idMappings ? { idMappings } : {}),
    ...(mountLabel !== '' ? { mountLabel } : {}),
  };
}
