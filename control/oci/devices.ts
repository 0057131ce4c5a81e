/**
 * OCI linux.devices (config-linux.md#devices) → {@link DeviceNodePlan}s, and whether
 * linux.resources.devices allows every device (the CAP_MKNOD interim).
 */
import * as path from 'node:path';
import type { grpc } from '../../shared/generated/protos';
import type { DeviceNodePlan } from '../../shared/protocol';
import { checkAbsPath, invalid, toInt, toUint } from './common';

/** Most linux.devices entries accepted (kata-init's plan limit is far above). */
export const MAX_DEVICES = 256;

/**
 * OCI linux.devices (config-linux.md#devices) → {@link DeviceNodePlan}s. Path absolute, below
 * /dev, no ".." (upstream rustjail mount.rs create_devices: "can only create devices in /dev");
 * Type c, u, b or p; Major/Minor 0..2^32-1 (ignored for p); FileMode the permission bits only
 * (0 = 0666 as runc's default when unset, since proto3 cannot tell unset from 0); UID/GID as
 * given (0 = root). Duplicate paths: the last entry wins (as runc). Throws INVALID_ARGUMENT
 * naming `OCI.Linux.Devices[i].<field>`.
 */
export function devicesFromOci(devices: readonly grpc.LinuxDevice.$Properties[] | null | undefined): DeviceNodePlan[] {
  const list = devices ?? [];
  if (list.length > MAX_DEVICES) throw invalid('OCI.Linux.Devices', list.length, `more than ${MAX_DEVICES} entries`);
  const byPath = new Map<string, DeviceNodePlan>();
  list.forEach((d, i) => {
    const f = `OCI.Linux.Devices[${i}]`;
    const p = checkAbsPath(`${f}.Path`, d.Path ?? '', true);
    const normal = path.posix.normalize(p);
    if (!normal.startsWith('/dev/') || normal === '/dev/') throw invalid(`${f}.Path`, p, 'a device node must be below /dev');
    const type = d.Type ?? '';
    if (!['c', 'u', 'b', 'p'].includes(type)) throw invalid(`${f}.Type`, type, 'must be "c", "u", "b" or "p"');
    const num = (k: 'Major' | 'Minor'): number => {
      const v = toInt(d[k]);
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw invalid(`${f}.${k}`, v, 'must be an integer in 0..4294967295');
      return type === 'p' ? 0 : v;
    };
    const mode = d.FileMode ?? 0;
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) throw invalid(`${f}.FileMode`, mode, 'must be permission bits 0..0o7777');
    byPath.set(normal, {
      path: normal,
      type: type as DeviceNodePlan['type'],
      major: num('Major'),
      minor: num('Minor'),
      fileMode: mode === 0 ? 0o666 : mode,
      uid: toUint(`${f}.UID`, d.UID),
      gid: toUint(`${f}.GID`, d.GID),
    });
  });
  return [...byPath.values()];
}

function isWildcard(v: number | { toNumber(): number } | null | undefined): boolean {
  return toInt(v) === -1;
}

/**
 * True when OCI linux.resources.devices (config-linux.md#allowed-device-list; later rules win)
 * allows every device: some rule is an allow rule for all devices (type "a" or "", major and
 * minor -1, access with r, w and m) and no deny rule follows the last such rule. No rules at
 * all is false (runc and rustjail start from "deny all").
 */
export function devicesAllowAll(rules: readonly grpc.LinuxDeviceCgroup.$Properties[] | null | undefined): boolean {
  let allowAll = false;
  for (const r of rules ?? []) {
    const access = r.Access ?? '';
    const all = (r.Type === 'a' || !r.Type) && isWildcard(r.Major) && isWildcard(r.Minor) && ['r', 'w', 'm'].every((c) => access.includes(c));
    if (r.Allow === true && all) allowAll = true;
    else if (r.Allow !== true) allowAll = false;
  }
  return allowAll;
}
