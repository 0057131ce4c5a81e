/** Re-validation of ContainerPlan.devices (OCI linux.devices). */
import type { DeviceNodePlan } from '../../../shared/protocol';
import { invalidArgument as invalid } from '../../../shared/protocol';
import { isRecord, checkArray, checkId, describe, checkConfinedPath } from './checks';

/**
 * Re-check ContainerPlan.devices (control/oci.ts devicesFromOci made them): at most 256, path
 * absolute below /dev without "..", type c/u/b/p, major/minor 0..2^32-1, fileMode 0..0o7777,
 * uid/gid ids. INVALID_ARGUMENT naming devices[i].
 */
export function validateDevices(raw: unknown): DeviceNodePlan[] {
  if (raw === undefined) return [];
  return checkArray(raw, 'devices', 256).map((d, i) => {
    const f = `devices[${i}]`;
    if (!isRecord(d)) throw invalid(`${f} must be a map, got ${describe(d)}`);
    const p = checkConfinedPath(d.path, `${f}.path`);
    if (!p.startsWith('/dev/')) throw invalid(`${f}.path ${JSON.stringify(p)} is not below /dev`);
    const type = d.type;
    if (type !== 'c' && type !== 'u' && type !== 'b' && type !== 'p') throw invalid(`${f}.type must be "c", "u", "b" or "p", got ${describe(type)}`);
    const num = (v: unknown, k: string, max: number): number => {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) throw invalid(`${f}.${k} must be an integer in 0..${max}, got ${describe(v)}`);
      return v;
    };
    return {
      path: p,
      type,
      major: num(d.major, 'major', 0xffffffff),
      minor: num(d.minor, 'minor', 0xffffffff),
      fileMode: num(d.fileMode, 'fileMode', 0o7777),
      uid: checkId(d.uid, `${f}.uid`),
      gid: checkId(d.gid, `${f}.gid`),
    };
  });
}
