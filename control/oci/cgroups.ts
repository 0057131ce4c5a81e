/**
 * OCI linux.cgroupsPath and linux.resources → the container's cgroup plan (shared/protocol.ts
 * CgroupPlan), as upstream rustjail's cgroupfs manager takes them (container.rs
 * LinuxContainer::new with use_systemd_cgroup false; resources as cgroups/fs/mod.rs sets them).
 */
import type { grpc } from '../../shared/generated/protos';
import { validateCgroupPath, validateCgroupResources } from '../../shared/cgroup';
import { Code, StatusError, type CgroupDeviceRule, type CgroupDeviceValue, type CgroupPlan, type CgroupResourcesPlan } from '../../shared/protocol';
import { toInt } from './common';

/** protobuf int64 as decoded here (numbers; shared/proto.ts disables Long). */
type Num = number | { toNumber(): number } | null | undefined;

/** The value when set (proto3: 0 means unset), else undefined. */
function opt(v: Num): number | undefined {
  const x = toInt(v);
  return x === 0 ? undefined : x;
}

/**
 * The container's cgroup path, as upstream maps it for the cgroupfs manager: empty → "/<id>";
 * the systemd form "slice:prefix:name" → "slice/prefix/name" (every ":" becomes "/", upstream
 * does the same when systemd does not manage cgroups); a relative path is taken from the root.
 * `parent` (agent config, "" = none) is put in front. Throws INVALID_ARGUMENT naming
 * OCI.Linux.CgroupsPath for "..", ".", odd characters or the root cgroup (shared/cgroup.ts).
 */
export function cgroupPathFromSpec(cgroupsPath: string, containerId: string, parent = ''): string {
  let p = cgroupsPath === '' ? `/${containerId}` : cgroupsPath.replaceAll(':', '/');
  if (!p.startsWith('/')) p = `/${p}`;
  if (parent !== '' && parent !== '/') p = `${parent.replace(/\/+$/, '')}${p}`;
  // Checked with the spec's own value in the message.
  try {
    return validateCgroupPath('OCI.Linux.CgroupsPath', p);
  } catch (err) {
    if (p === `/${containerId}` || cgroupsPath === p) throw err;
    throw validateError(cgroupsPath, p, err);
  }
}

function validateError(given: string, mapped: string, err: unknown): Error {
  const e = err as Error;
  e.message = `${e.message} (mapped from ${JSON.stringify(given)} to ${JSON.stringify(mapped)})`;
  return e;
}

function devs(list: readonly grpc.LinuxWeightDevice.$Properties[] | readonly grpc.LinuxThrottleDevice.$Properties[] | null | undefined, weight: boolean): CgroupDeviceValue[] | undefined {
  if (!list || list.length === 0) return undefined;
  return list.map((d) => ({
    major: toInt(d.Major),
    minor: toInt(d.Minor),
    value: weight ? toInt((d as grpc.LinuxWeightDevice.$Properties).Weight) : toInt((d as grpc.LinuxThrottleDevice.$Properties).Rate),
  }));
}

/**
 * linux.resources (proto spelling, zero = unset as proto3 makes it) → CgroupResourcesPlan,
 * validated (shared/cgroup.ts validateCgroupResources: INVALID_ARGUMENT naming the field, e.g.
 * "OCI.Linux.Resources.CPU.Shares 1: must be an integer in 2..262144"). Devices
 * ({@link deviceRulesFromSpec}) are carried only when `deviceCgroup` (the helper enforces them);
 * otherwise the interim applies (docs/ARCHITECTURE.md "Device cgroup interim").
 */
export function cgroupResourcesFromSpec(res: grpc.LinuxResources.$Properties | null | undefined, deviceCgroup = false): CgroupResourcesPlan {
  const out: Record<string, unknown> = {};
  if (deviceCgroup) out.devices = deviceRulesFromSpec(res?.Devices);
  if (!res) return deviceCgroup ? validateCgroupResources(out) : {};
  const m = res.Memory;
  if (m) {
    out.memory = {
      limit: opt(m.Limit),
      reservation: opt(m.Reservation),
      swap: opt(m.Swap),
      kernel: opt(m.Kernel),
      kernelTcp: opt(m.KernelTCP),
      swappiness: opt(m.Swappiness),
      disableOomKiller: m.DisableOOMKiller === true ? true : undefined,
    };
  }
  const c = res.CPU;
  if (c) {
    out.cpu = {
      shares: opt(c.Shares),
      quota: opt(c.Quota),
      period: opt(c.Period),
      realtimeRuntime: opt(c.RealtimeRuntime),
      realtimePeriod: opt(c.RealtimePeriod),
      cpus: c.Cpus ? c.Cpus : undefined,
      mems: c.Mems ? c.Mems : undefined,
    };
  }
  if (res.Pids && opt(res.Pids.Limit) !== undefined) out.pids = { limit: toInt(res.Pids.Limit) };
  const b = res.BlockIO;
  if (b) {
    out.blockIo = {
      weight: opt(b.Weight),
      leafWeight: opt(b.LeafWeight),
      weightDevice: devs(b.WeightDevice, true),
      throttleReadBps: devs(b.ThrottleReadBpsDevice, false),
      throttleWriteBps: devs(b.ThrottleWriteBpsDevice, false),
      throttleReadIops: devs(b.ThrottleReadIOPSDevice, false),
      throttleWriteIops: devs(b.ThrottleWriteIOPSDevice, false),
    };
  }
  if ((res.HugepageLimits ?? []).length > 0) {
    out.hugepageLimits = (res.HugepageLimits ?? []).map((h) => ({ pageSize: h.Pagesize ?? '', limit: toInt(h.Limit) }));
  }
  const net = res.Network;
  if (net) {
    out.network = {
      classId: opt(net.ClassID),
      priorities: (net.Priorities ?? []).length > 0 ? (net.Priorities ?? []).map((p) => ({ name: p.Name ?? '', priority: toInt(p.Priority) })) : undefined,
    };
  }
  return validateCgroupResources(JSON.parse(JSON.stringify(out)) as unknown);
}

/**
 * The whole cgroup plan of a container ({@link cgroupPathFromSpec}, {@link cgroupResourcesFromSpec});
 * `deviceCgroup`: the helper enforces device rules, so they are carried.
 */
export function cgroupPlanFromSpec(linux: grpc.Linux.$Properties, containerId: string, parent = '', deviceCgroup = false): CgroupPlan {
  return { path: cgroupPathFromSpec(linux.CgroupsPath ?? '', containerId, parent), resources: cgroupResourcesFromSpec(linux.Resources, deviceCgroup) };
}

function rule(type: 'c' | 'b', major: number, minor: number, access: string): CgroupDeviceRule {
  return { allow: true, type, major, minor, access };
}

/**
 * Device rules every container gets after its own (upstream rustjail cgroups/fs/mod.rs
 * DEFAULT_DEVICES + DEFAULT_ALLOWED_DEVICES, runc libcontainer/specconv AllowedDevices): mknod
 * of any char or block device (a node is useless without r/w access), read/write of /dev/null,
 * zero, full, random, urandom, tty, console (5:1), the pts slaves (136:*), ptmx (5:2) and
 * /dev/net/tun (10:200).
 */
export const DEFAULT_DEVICE_RULES: readonly CgroupDeviceRule[] = [
  rule('c', -1, -1, 'm'), rule('b', -1, -1, 'm'),
  rule('c', 1, 3, 'rwm'), rule('c', 1, 5, 'rwm'), rule('c', 1, 7, 'rwm'), rule('c', 1, 8, 'rwm'),
  rule('c', 1, 9, 'rwm'), rule('c', 5, 0, 'rwm'), rule('c', 5, 1, 'rwm'), rule('c', 136, -1, 'rwm'),
  rule('c', 5, 2, 'rwm'), rule('c', 10, 200, 'rwm'),
];

/**
 * Check OCI linux.resources.devices (config-linux.md#allowed-device-list) without converting:
 * Type "a", "b", "c" or "" (= "a"), Access letters of "rwm" ("" = "rwm"), Major/Minor -1
 * (any) or 0..2^20-1. Throws INVALID_ARGUMENT naming `OCI.Linux.Resources.Devices[i].<field>`.
 */
export function checkDeviceRules(rules: readonly grpc.LinuxDeviceCgroup.$Properties[] | null | undefined): void {
  (rules ?? []).forEach((r, i) => {
    const f = `OCI.Linux.Resources.Devices[${i}]`;
    const type = r.Type ?? '';
    if (!['', 'a', 'b', 'c'].includes(type)) {
      throw new StatusError(Code.INVALID_ARGUMENT, `invalid ${f}.Type ${JSON.stringify(type)}: must be "a", "b" or "c"`);
    }
    const access = r.Access ?? '';
    if (!/^[rwm]{0,3}$/.test(access)) {
      throw new StatusError(Code.INVALID_ARGUMENT, `invalid ${f}.Access ${JSON.stringify(access)}: must be letters of "rwm"`);
    }
    for (const [k, v] of [['Major', toInt(r.Major)], ['Minor', toInt(r.Minor)]] as const) {
      if (!Number.isInteger(v) || v < -1 || v > 0xfffff) {
        throw new StatusError(Code.INVALID_ARGUMENT, `invalid ${f}.${k} ${v}: must be -1 (any) or 0..${0xfffff}`);
      }
    }
  });
}

/**
 * The spec's rules in order, then {@link DEFAULT_DEVICE_RULES} (later rules win; the helper
 * denies everything first, as rustjail setup_devcg_whitelist does). The order is runc's
 * (specconv CreateCgroupConfig appends AllowedDevices after the spec's rules): a spec that
 * starts with "deny all", as `runc spec` and containerd write, keeps /dev/null, the pts and the
 * other defaults, and a spec rule cannot take a default device away. Type "" becomes "a",
 * Access "" becomes "rwm". Throws as {@link checkDeviceRules}.
 */
export function deviceRulesFromSpec(rules: readonly grpc.LinuxDeviceCgroup.$Properties[] | null | undefined): CgroupDeviceRule[] {
  checkDeviceRules(rules);
  return [
    ...(rules ?? []).map((r) => ({
      allow: r.Allow === true,
      type: r.Type || 'a',
      major: toInt(r.Major),
      minor: toInt(r.Minor),
      access: r.Access || 'rwm',
    })),
    ...DEFAULT_DEVICE_RULES.map((r) => ({ ...r })),
  ];
}
