/** Re-validation of a plan's sysctls (rustjail validator.rs sysctl). */
import * as fs from 'node:fs';
import { invalidArgument as invalid } from '../../../shared/protocol';
import { MAX_SYSCTL } from './limits';
import type { ValidNamespace, PlanCheckOptions } from './types';
import { isRecord, checkString, describe } from './checks';

const IPC_SYSCTLS = new Set([
  'kernel.msgmax',
  'kernel.msgmnb',
  'kernel.msgmni',
  'kernel.sem',
  'kernel.shmall',
  'kernel.shmmax',
  'kernel.shmmni',
  'kernel.shm_rmid_forced',
]);

const SYSCTL_KEY_RE = /^[A-Za-z0-9_]+(\.[A-Za-z0-9_@:+-]+)+$/;

/**
 * Does the plan give the container a `type` namespace of its own: a new one, or a path that is
 * not the helper's own namespace of that type (compared by device and inode with hostChecks;
 * without them a path is taken as the container's)? Namespaced sysctls are written into it,
 * so joining the guest's namespace would set the guest's values.
 */
function ownNamespace(type: 'net' | 'ipc' | 'uts', namespaces: ValidNamespace[], opts: PlanCheckOptions): boolean {
  const ns = namespaces.find((n) => n.type === type);
  if (!ns) return false;
  if (ns.path === '' || !opts.hostChecks) return true;
  try {
    const theirs = fs.statSync(ns.path);
    const ours = fs.statSync(`/proc/self/ns/${type}`);
    return theirs.dev !== ours.dev || theirs.ino !== ours.ino;
  } catch {
    return false;
  }
}

export function validateSysctl(raw: unknown, namespaces: ValidNamespace[], opts: PlanCheckOptions): [string, string][] {
  if (raw === undefined || raw === null) return [];
  if (!isRecord(raw)) throw invalid(`sysctl must be a map, got ${describe(raw)}`);
  const entries = Object.entries(raw);
  if (entries.length > MAX_SYSCTL) throw invalid(`sysctl has ${entries.length} entries, more than ${MAX_SYSCTL}`);
  return entries.map(([key, value]) => {
    if (!SYSCTL_KEY_RE.test(key) || key.length > 256) throw invalid(`sysctl key ${JSON.stringify(key)} is not a valid name`);
    const v = checkString(value, `sysctl[${key}]`, 4096);
    if (IPC_SYSCTLS.has(key) || key.startsWith('fs.mqueue.')) {
      if (!ownNamespace('ipc', namespaces, opts)) throw invalid(`sysctl ${key} needs an ipc namespace of the container's own (not the guest's)`);
    } else if (key.startsWith('net.')) {
      // Upstream allows net.* always; without a network namespace of its own the container
      // would set the guest's (a container turned on the guest's ip_forward).
      if (!ownNamespace('net', namespaces, opts)) {
        throw invalid(`sysctl ${key} needs a network namespace of the container's own (not the guest's)`);
      }
    } else if (key === 'kernel.domainname') {
      if (!ownNamespace('uts', namespaces, opts)) throw invalid(`sysctl ${key} needs a uts namespace of the container's own (not the guest's)`);
    } else {
      throw invalid(`sysctl ${key} is not allowed in a container`);
    }
    return [key, v] as [string, string];
  });
}
