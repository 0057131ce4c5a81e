/** Re-validation of a whole ContainerPlan (validateContainerPlan), from the per-area validators. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ContainerPlan } from '../../../shared/protocol';
import { invalidArgument as invalid } from '../../../shared/protocol';
import { validateCgroupPlan } from '../../../shared/cgroup';
import { MAX_MOUNTS, MAX_PATH_LIST, HOST_NAME_MAX, MS, PROPAGATION } from './limits';
import { type ValidContainerPlan, type PlanCheckOptions, HOST_NAMESPACES_OPTION } from './types';
import { isRecord, checkString, checkBool, checkArray, describe, checkAbsolute, checkConfinedPath, checkSelinuxLabel } from './checks';
import { validateProcessPlan } from './process';
import { validateNamespaces, validateIdMappingsPlan } from './namespaces';
import { validateMount } from './mounts';
import { validateSysctl } from './sysctl';
import { validateSeccomp } from './seccomp';
import { validateDevices } from './devices';
import { validateHooks } from './hooks';

/**
 * Validate a ContainerPlan from control. Besides the field checks above: the container must have
 * a new mount namespace (its rootfs is pivoted into); the rootfs has no ".." component and is
 * not "/"; with `hostChecks` it must be an existing directory whose path has no symlink
 * ("/"-clean and equal to its realpath); `net.*` sysctls need a network namespace of the
 * container's own (new, or with hostChecks a path that is not the helper's); `remount` only on
 * a bind mount.
 */
export function validateContainerPlan(raw: unknown, opts: PlanCheckOptions): ValidContainerPlan {
  if (!isRecord(raw)) throw invalid(`plan must be a map, got ${describe(raw)}`);
  const plan = raw as Partial<Record<keyof ContainerPlan, unknown>>;
  const rootfs = checkAbsolute(plan.rootfs, 'rootfs');
  // Refused by the shape alone, whatever hostChecks says: a ".." component (the canonical-path
  // check below compares against path.resolve, which folds "..") and the guest root itself.
  if (rootfs.split('/').includes('..')) throw invalid(`rootfs ${JSON.stringify(rootfs)} contains a ".." component`);
  if (path.posix.normalize(rootfs) === '/' || /^\/+\.?\/*$/.test(rootfs)) {
    throw invalid(`rootfs ${JSON.stringify(rootfs)} is the guest root "/" (a container needs a rootfs below it)`);
  }
  if (opts.hostChecks) {
    let real: string;
    try {
      real = fs.realpathSync(rootfs);
    } catch {
      throw invalid(`rootfs ${JSON.stringify(rootfs)} does not exist`);
    }
    if (path.resolve(rootfs) !== real) {
      throw invalid(`rootfs ${JSON.stringify(rootfs)} is not a canonical path (it resolves to ${JSON.stringify(real)})`);
    }
    if (!fs.statSync(real).isDirectory()) throw invalid(`rootfs ${JSON.stringify(rootfs)} is not a directory`);
  }
  const readonly = checkBool(plan.readonly, 'readonly');
  const namespaces = validateNamespaces(plan.namespaces, opts);
  const hostns = opts.allowHostNamespaces === true;
  const mnt = namespaces.find((n) => n.type === 'mnt');
  if (!hostns && (!mnt || mnt.path !== '')) {
    throw invalid(`a container needs a new mount namespace (namespaces: {type: "mount", path: ""}; ${HOST_NAMESPACES_OPTION})`);
  }
  const user = namespaces.find((n) => n.type === 'user');
  const idMappings = validateIdMappingsPlan(plan.idMappings, user !== undefined && user.path === '');
  const mountLabel = plan.mountLabel === undefined ? undefined : checkSelinuxLabel(plan.mountLabel, 'mountLabel');
  const hostname = checkString(plan.hostname ?? '', 'hostname', HOST_NAME_MAX);
  if (hostname !== '' && !namespaces.some((n) => n.type === 'uts')) {
    throw invalid(`hostname ${JSON.stringify(hostname)} needs a uts namespace`);
  }
  if (opts.hostChecks && !hostns && !namespaces.some((n) => n.type === 'pid')) {
    // Without one, container root could signal or ptrace the helper (uid 0 to uid 0 needs no capability).
    throw invalid(`a container needs its own pid namespace (namespaces: {type: "pid", path: ""} or the sandbox's; ${HOST_NAMESPACES_OPTION})`);
  }
  const mounts = checkArray(plan.mounts ?? [], 'mounts', MAX_MOUNTS).flatMap((m, i) => validateMount(m, i, opts));
  const maskedPaths = checkArray(plan.maskedPaths ?? [], 'maskedPaths', MAX_PATH_LIST).map((p, i) =>
    checkConfinedPath(p, `maskedPaths[${i}]`),
  );
  const readonlyPaths = checkArray(plan.readonlyPaths ?? [], 'readonlyPaths', MAX_PATH_LIST).map((p, i) =>
    checkConfinedPath(p, `readonlyPaths[${i}]`),
  );
  const sysctl = validateSysctl(plan.sysctl, namespaces, opts);
  const propName = checkString(plan.rootfsPropagation ?? '', 'rootfsPropagation', 32);
  let rootfsPropagation: number;
  if (propName === '') {
    rootfsPropagation = MS.SLAVE | MS.REC;
  } else {
    const p = PROPAGATION[propName];
    if (p === undefined) throw invalid(`rootfsPropagation ${JSON.stringify(propName)} is not a propagation type`);
    rootfsPropagation = p | MS.REC;
  }
  const proc = validateProcessPlan(plan.process);
  const seccomp = validateSeccomp(plan.seccomp);
  const devicesAllowAll = plan.devicesAllowAll === undefined ? false : checkBool(plan.devicesAllowAll, 'devicesAllowAll');
  const cgroup = plan.cgroup !== undefined ? validateCgroupPlan(plan.cgroup) : undefined;
  // Device rules in the cgroup plan are enforced by the device cgroup (or the container is
  // refused), so the nodev stand-in is not needed then.
  const devicesEnforced = cgroup?.resources.devices !== undefined;
  const nodev = !devicesAllowAll && !devicesEnforced;
  if (hostns && !mnt) {
    checkSharedMountNamespace({ readonly, maskedPaths, readonlyPaths, nodev, propName });
  }
  return {
    nodev,
    ...(hostns ? { hostns: true } : {}),
    rootfs,
    readonly,
    hostname,
    namespaces,
    ...(idMappings ? { idMappings } : {}),
    ...(mountLabel ? { mountLabel } : {}),
    mounts,
    maskedPaths,
    readonlyPaths,
    sysctl,
    rootfsPropagation,
    process: proc,
    ...(seccomp ? { seccomp } : {}),
    ...(cgroup !== undefined ? { cgroup } : {}),
    devices: validateDevices(plan.devices),
    hooks: validateHooks(plan.hooks),
  };
}

/**
 * A container without a mount namespace of its own (host-namespace mode) shares the helper's:
 * whatever would change mounts outside its rootfs is refused (runc refuses masked and read-only
 * paths without one too: configs/validate "unable to restrict sys entries without a private MNT
 * namespace"). INVALID_ARGUMENT naming the field.
 */
function checkSharedMountNamespace(p: { readonly: boolean; maskedPaths: string[]; readonlyPaths: string[]; nodev: boolean; propName: string }): void {
  const why = 'needs a mount namespace of the container (it shares the helper\'s)';
  if (p.readonly) throw invalid(`readonly ${why}`);
  if (p.maskedPaths.length > 0) throw invalid(`maskedPaths ${JSON.stringify(p.maskedPaths[0])} ${why}`);
  if (p.readonlyPaths.length > 0) throw invalid(`readonlyPaths ${JSON.stringify(p.readonlyPaths[0])} ${why}`);
  if (p.propName !== '') throw invalid(`rootfsPropagation ${JSON.stringify(p.propName)} ${why}`);
  if (p.nodev) throw invalid(`device rules that cannot be enforced (nodev on every mount) ${why}: give a device cgroup or allow every device`);
}
