/**
 * Validation of a container's cgroup plan (shared/protocol.ts CgroupPlan), used by control
 * (after converting the OCI spec, control/oci/cgroups.ts) and re-done by the helper on every
 * createContainer (helper/ops/plan.ts). Errors are StatusError INVALID_ARGUMENT naming the OCI
 * field ("OCI.Linux.Resources.Memory.Limit", "OCI.Linux.CgroupsPath") and the value.
 */
import { Code, StatusError, type CgroupDeviceValue, type CgroupPlan, type CgroupResourcesPlan } from './protocol';

const R = 'OCI.Linux.Resources';
/** Largest integer accepted for a cgroup value (int64 values beyond 2^53 cannot be exact in JS). */
const MAX_VALUE = Number.MAX_SAFE_INTEGER;
/** cpuset list: "0-3,5". */
const CPUSET_RE = /^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$/;
/** Huge page size as OCI gives it. */
const PAGESIZE_RE = /^[0-9]{1,4}[KMG]B$/;
/** A network interface name (IFNAMSIZ - 1). */
const IFNAME_RE = /^[A-Za-z0-9_.:-]{1,15}$/;
/** A cgroup v2 interface file name (no "/", never the cgroup.* core files). */
const UNIFIED_KEY_RE = /^[a-z][a-z0-9_]*\.[a-z0-9_.]+$/;
/** Depth and length limits of a cgroup path. */
const MAX_PATH_LEN = 1024;
const PATH_COMPONENT_RE = /^[A-Za-z0-9_.:@=+-]{1,255}$/;

function bad(field: string, value: unknown, why: string): StatusError {
  return new StatusError(Code.INVALID_ARGUMENT, `${field} ${JSON.stringify(value)}: ${why}`);
}

function isMap(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function int(field: string, v: unknown, min: number, max = MAX_VALUE): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw bad(field, v, `must be an integer in ${min}..${max}`);
  return v;
}

function optInt(field: string, v: unknown, min: number, max = MAX_VALUE): number | undefined {
  return v === undefined ? undefined : int(field, v, min, max);
}

function map(field: string, v: unknown): Record<string, unknown> {
  if (!isMap(v)) throw bad(field, v, 'must be a map');
  return v;
}

function list(field: string, v: unknown, max = 256): unknown[] {
  if (!Array.isArray(v) || v.length > max) throw bad(field, v, `must be a list of at most ${max} entries`);
  return v;
}

function devices(field: string, v: unknown, max: number): CgroupDeviceValue[] | undefined {
  if (v === undefined) return undefined;
  return list(field, v).map((d, i) => {
    const m = map(`${field}[${i}]`, d);
    return {
      major: int(`${field}[${i}].Major`, m.major, 0, 0xfffff),
      minor: int(`${field}[${i}].Minor`, m.minor, 0, 0xfffff),
      value: int(`${field}[${i}]`, m.value, 0, max),
    };
  });
}

/**
 * Check a cgroup path: absolute "/a/b", components of letters, digits and "_.:@=+-", no "." or
 * "..", not the root itself, at most 1024 bytes. Returns it without a trailing "/".
 * Throws INVALID_ARGUMENT naming `field`.
 */
export function validateCgroupPath(field: string, p: unknown): string {
  if (typeof p !== 'string' || !p.startsWith('/') || p.length > MAX_PATH_LEN) {
    throw bad(field, p, `must be an absolute cgroup path of at most ${MAX_PATH_LEN} bytes`);
  }
  const parts = p.split('/').filter((c) => c !== '');
  if (parts.length === 0) throw bad(field, p, 'the root cgroup cannot be a container cgroup');
  for (const c of parts) {
    if (c === '.' || c === '..' || !PATH_COMPONENT_RE.test(c)) {
      throw bad(field, p, `component ${JSON.stringify(c)} is not allowed (letters, digits, "_.:@=+-"; no "." or "..")`);
    }
  }
  return '/' + parts.join('/');
}

/**
 * Validate a {@link CgroupResourcesPlan} (any input) and return a clean copy with only known
 * fields. Throws INVALID_ARGUMENT naming the OCI field.
 */
export function validateCgroupResources(raw: unknown): CgroupResourcesPlan {
  const r = map(R, raw ?? {});
  const out: CgroupResourcesPlan = {};
  if (r.memory !== undefined) {
    const m = map(`${R}.Memory`, r.memory);
    const mem: NonNullable<CgroupResourcesPlan['memory']> = {};
    for (const [k, f] of [
      ['limit', 'Limit'],
      ['reservation', 'Reservation'],
      ['swap', 'Swap'],
      ['kernel', 'Kernel'],
      ['kernelTcp', 'KernelTCP'],
    ] as const) {
      const v = optInt(`${R}.Memory.${f}`, m[k], -1);
      if (v !== undefined) mem[k] = v;
    }
    const sw = optInt(`${R}.Memory.Swappiness`, m.swappiness, 0, 100);
    if (sw !== undefined) mem.swappiness = sw;
    if (m.disableOomKiller !== undefined) {
      if (typeof m.disableOomKiller !== 'boolean') throw bad(`${R}.Memory.DisableOOMKiller`, m.disableOomKiller, 'must be a boolean');
      mem.disableOomKiller = m.disableOomKiller;
    }
    if (mem.limit !== undefined && mem.swap !== undefined && mem.limit > 0 && mem.swap > 0 && mem.swap < mem.limit) {
      throw bad(`${R}.Memory.Swap`, mem.swap, `memory+swap must not be below the memory limit ${mem.limit}`);
    }
    out.memory = mem;
  }
  if (r.cpu !== undefined) {
    const c = map(`${R}.CPU`, r.cpu);
    const cpu: NonNullable<CgroupResourcesPlan['cpu']> = {};
    const shares = optInt(`${R}.CPU.Shares`, c.shares, 2, 262144);
    if (shares !== undefined) cpu.shares = shares;
    const quota = optInt(`${R}.CPU.Quota`, c.quota, -1);
    if (quota !== undefined) cpu.quota = quota;
    const period = optInt(`${R}.CPU.Period`, c.period, 1000, 1_000_000);
    if (period !== undefined) cpu.period = period;
    const rtr = optInt(`${R}.CPU.RealtimeRuntime`, c.realtimeRuntime, -1);
    if (rtr !== undefined) cpu.realtimeRuntime = rtr;
    const rtp = optInt(`${R}.CPU.RealtimePeriod`, c.realtimePeriod, 1);
    if (rtp !== undefined) cpu.realtimePeriod = rtp;
    for (const [k, f] of [
      ['cpus', 'Cpus'],
      ['mems', 'Mems'],
    ] as const) {
      const v = c[k];
      if (v === undefined) continue;
      if (typeof v !== 'string' || v.length > 4096 || !CPUSET_RE.test(v)) throw bad(`${R}.CPU.${f}`, v, 'must be a cpuset list such as "0-2,4"');
      cpu[k] = v;
    }
    out.cpu = cpu;
  }
  if (r.pids !== undefined) {
    const p = map(`${R}.Pids`, r.pids);
    out.pids = { limit: int(`${R}.Pids.Limit`, p.limit, -1, 4194304) };
  }
  if (r.blockIo !== undefined) {
    const b = map(`${R}.BlockIO`, r.blockIo);
    const bio: NonNullable<CgroupResourcesPlan['blockIo']> = {};
    const w = optInt(`${R}.BlockIO.Weight`, b.weight, 10, 1000);
    if (w !== undefined) bio.weight = w;
    const lw = optInt(`${R}.BlockIO.LeafWeight`, b.leafWeight, 10, 1000);
    if (lw !== undefined) bio.leafWeight = lw;
    for (const [k, f, max] of [
      ['weightDevice', 'WeightDevice', 1000],
      ['throttleReadBps', 'ThrottleReadBpsDevice', MAX_VALUE],
      ['throttleWriteBps', 'ThrottleWriteBpsDevice', MAX_VALUE],
      ['throttleReadIops', 'ThrottleReadIOPSDevice', MAX_VALUE],
      ['throttleWriteIops', 'ThrottleWriteIOPSDevice', MAX_VALUE],
    ] as const) {
      const d = devices(`${R}.BlockIO.${f}`, b[k], max);
      if (d) bio[k] = d;
    }
    out.blockIo = bio;
  }
  if (r.hugepageLimits !== undefined) {
    out.hugepageLimits = list(`${R}.HugepageLimits`, r.hugepageLimits, 16).map((h, i) => {
      const f = `${R}.HugepageLimits[${i}]`;
      const m = map(f, h);
      if (typeof m.pageSize !== 'string' || !PAGESIZE_RE.test(m.pageSize)) throw bad(`${f}.Pagesize`, m.pageSize, 'must be a size such as "2MB" or "1GB"');
      return { pageSize: m.pageSize, limit: int(`${f}.Limit`, m.limit, 0) };
    });
  }
  if (r.network !== undefined) {
    const n = map(`${R}.Network`, r.network);
    const net: NonNullable<CgroupResourcesPlan['network']> = {};
    const cls = optInt(`${R}.Network.ClassID`, n.classId, 0, 0xffffffff);
    if (cls !== undefined) net.classId = cls;
    if (n.priorities !== undefined) {
      net.priorities = list(`${R}.Network.Priorities`, n.priorities, 64).map((p, i) => {
        const f = `${R}.Network.Priorities[${i}]`;
        const m = map(f, p);
        if (typeof m.name !== 'string' || !IFNAME_RE.test(m.name)) throw bad(`${f}.Name`, m.name, 'must be a network interface name');
        return { name: m.name, priority: int(`${f}.Priority`, m.priority, 0, 0xffffffff) };
      });
    }
    out.network = net;
  }
  if (r.unified !== undefined) {
    const u = map(`${R}.Unified`, r.unified);
    const unified: Record<string, string> = {};
    for (const [k, v] of Object.entries(u)) {
      if (!UNIFIED_KEY_RE.test(k) || k.startsWith('cgroup.') || k.length > 255) {
        throw bad(`${R}.Unified`, k, 'key must be a cgroup v2 controller file name (no "/", not a cgroup.* core file)');
      }
      if (typeof v !== 'string' || v.length > 4096 || v.includes('\0')) throw bad(`${R}.Unified.${k}`, v, 'must be a string of at most 4096 bytes');
      unified[k] = v;
    }
    out.unified = unified;
  }
  if (r.devices !== undefined) {
    out.devices = list(`${R}.Devices`, r.devices, 1024).map((d, i) => {
      const f = `${R}.Devices[${i}]`;
      const m = map(f, d);
      if (typeof m.allow !== 'boolean') throw bad(`${f}.Allow`, m.allow, 'must be a boolean');
      const type = m.type === undefined || m.type === '' ? 'a' : m.type;
      if (type !== 'a' && type !== 'b' && type !== 'c') throw bad(`${f}.Type`, type, 'must be "a", "b" or "c"');
      const access = m.access === undefined || m.access === '' ? 'rwm' : m.access;
      if (typeof access !== 'string' || !/^[rwm]{1,3}$/.test(access)) throw bad(`${f}.Access`, access, 'must be letters of "rwm"');
      return { allow: m.allow, type, major: int(`${f}.Major`, m.major ?? -1, -1, 0xfffff), minor: int(`${f}.Minor`, m.minor ?? -1, -1, 0xfffff), access };
    });
  }
  return out;
}

/** Validate a whole {@link CgroupPlan}; throws INVALID_ARGUMENT naming the field. */
export function validateCgroupPlan(raw: unknown): CgroupPlan {
  const m = map('cgroup plan', raw);
  return { path: validateCgroupPath('OCI.Linux.CgroupsPath', m.path), resources: validateCgroupResources(m.resources) };
}

/**
 * cgroup v2 cpu.weight from v1 cpu.shares, as runc (libcontainer/cgroups/utils.go
 * ConvertCPUSharesToCgroupV2Value): 2..262144 → 1..10000; 0 → 0 (unset).
 */
export function sharesToWeight(shares: number): number {
  if (shares === 0) return 0;
  return 1 + Math.floor(((shares - 2) * 9999) / 262142);
}

/** cgroup v2 io.weight from a v1 blkio weight (10..1000 → 1..10000), as runc ConvertBlkIOToIOWeightValue. */
export function blkioToIoWeight(weight: number): number {
  if (weight === 0) return 0;
  return 1 + Math.floor(((weight - 10) * 9999) / 990);
}
