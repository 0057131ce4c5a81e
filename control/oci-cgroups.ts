/**
 * OCI linux.cgroupsPath and linux.resources → the container's cgroup plan (shared/protocol.ts
 * CgroupPlan), as upstream rustjail's cgroupfs manager takes them (container.rs
 * LinuxContainer::new with use_systemd_cgroup false; resources as cgroups/fs/mod.rs sets them).
 */
import type { grpc } from '../shared/generated/protos';
import { validateCgroupPath, validateCgroupResources } from '../shared/cgroup';
import type { CgroupDeviceValue, CgroupPlan, CgroupResourcesPlan } from '../shared/protocol';

/** protobuf int64 as decoded here (numbers; shared/proto.ts disables Long). */
type Num = number | { toNumber(): number } | null | undefined;

function n(v: Num): number {
  if (v === null || v === undefined) return 0;
  return typeof v === 'number' ? v : v.toNumber();
}

/** The value when set (proto3: 0 means unset), else undefined. */
function opt(v: Num): number | undefined {
  const x = n(v);
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
    major: n(d.Major),
    minor: n(d.Minor),
    value: weight ? n((d as grpc.LinuxWeightDevice.$Properties).Weight) : n((d as grpc.LinuxThrottleDevice.$Properties).Rate),
  }));
}

/**
 * linux.resources (proto spelling, zero = unset as proto3 makes it) → CgroupResourcesPlan,
 * validated (shared/cgroup.ts validateCgroupResources: INVALID_ARGUMENT naming the field, e.g.
 * "OCI.Linux.Resources.CPU.Shares 1: must be an integer in 2..262144"). Devices are not carried
 * (the device cgroup is not enforced yet: docs/ARCHITECTURE.md "Device cgroup interim").
 */
export function cgroupResourcesFromSpec(res: grpc.LinuxResources.$Properties | null | undefined): CgroupResourcesPlan {
  const out: Record<string, unknown> = {};
  if (!res) return {};
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
  if (res.Pids && opt(res.Pids.Limit) !== undefined) out.pids = { limit: n(res.Pids.Limit) };
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
    out.hugepageLimits = (res.HugepageLimits ?? []).map((h) => ({ pageSize: h.Pagesize ?? '', limit: n(h.Limit) }));
  }
  const net = res.Network;
  if (net) {
    out.network = {
      classId: opt(net.ClassID),
      priorities: (net.Priorities ?? []).length > 0 ? (net.Priorities ?? []).map((p) => ({ name: p.Name ?? '', priority: n(p.Priority) })) : undefined,
    };
  }
  return validateCgroupResources(JSON.parse(JSON.stringify(out)) as unknown);
}

/** The whole cgroup plan of a container ({@link cgroupPathFromSpec}, {@link cgroupResourcesFromSpec}). */
export function cgroupPlanFromSpec(linux: grpc.Linux.$Properties, containerId: string, parent = ''): CgroupPlan {
  return { path: cgroupPathFromSpec(linux.CgroupsPath ?? '', containerId, parent), resources: cgroupResourcesFromSpec(linux.Resources) };
}
