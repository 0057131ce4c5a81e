/**
 * Raw cgroup files (helper `cgroupStats` op: file name → trimmed content) → the agent protocol's
 * CgroupStats (protos/agent.proto), as upstream rustjail cgroups/fs/mod.rs get_stats builds it:
 * v1 files where present, else their v2 counterparts. Units: cpu times in ns (v2 cpu.stat's
 * usec are converted; upstream passes the usec through unconverted), memory in bytes.
 * Unparsable numbers count as 0; never throws.
 */
import Long from 'long';
import type { grpc as pb } from '../shared/generated/protos';

/** USER_HZ: the unit of v1 cpuacct.stat. */
const CLOCK_TICKS = 100;
const NS_PER_TICK = 1e9 / CLOCK_TICKS;
/** A uint64 field's value: a number while exact, else a Long carrying every digit. */
export type U64 = number | Long;
/** v2 "max" (no limit) is reported as 2^64 − 1, as containerd's cgroup v2 stats do. */
const U64_MAX = Long.MAX_UNSIGNED_VALUE;
const U64_RE = /^[0-9]{1,20}$/;

/**
 * A cgroup file's decimal value as a uint64: exact beyond 2^53 (v1's "no limit",
 * 9223372036854771712, arrives as itself, as upstream reports it); "max" is 2^64 − 1; absent,
 * negative, junk or over 2^64 − 1 is 0. Never throws.
 */
function num(v: string | undefined): U64 {
  if (v === undefined) return 0;
  if (v === 'max') return U64_MAX;
  if (!U64_RE.test(v)) return 0;
  const n = Number(v);
  if (n <= Number.MAX_SAFE_INTEGER) return n;
  const l = Long.fromString(v, true);
  return l.toString() === v.replace(/^0+(?=.)/, '') ? l : 0;
}

/** A U64 as a JS number (rounded beyond 2^53), for figures such as Prometheus gauges. */
export function u64ToNumber(v: U64 | null | undefined): number {
  if (v === null || v === undefined) return 0;
  return typeof v === 'number' ? v : v.toNumber();
}

/** "key value" lines → map of uint64 values (exact, see num). */
export function keyValuesU64(text: string | undefined): Record<string, U64> {
  const out: Record<string, U64> = {};
  for (const line of (text ?? '').split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v !== undefined) out[k] = num(v);
  }
  return out;
}

/** "key value" lines → map of numbers (for arithmetic; rounded beyond 2^53). */
export function keyValues(text: string | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(keyValuesU64(text))) out[k] = u64ToNumber(v);
  return out;
}

function cpuStats(f: Record<string, string>): pb.CpuStats.$Properties {
  const cpu = keyValues(f['cpu.stat']);
  const v1 = f['cpuacct.usage'] !== undefined;
  let usage: pb.CpuUsage.$Properties;
  if (v1) {
    const st = keyValues(f['cpuacct.stat']);
    usage = {
      total_usage: num(f['cpuacct.usage']),
      percpu_usage: (f['cpuacct.usage_percpu'] ?? '').split(/\s+/).filter(Boolean).map(num),
      usage_in_kernelmode: f['cpuacct.usage_sys'] !== undefined ? num(f['cpuacct.usage_sys']) : (st.system ?? 0) * NS_PER_TICK,
      usage_in_usermode: f['cpuacct.usage_user'] !== undefined ? num(f['cpuacct.usage_user']) : (st.user ?? 0) * NS_PER_TICK,
    };
  } else {
    usage = {
      total_usage: (cpu.usage_usec ?? 0) * 1000,
      percpu_usage: [],
      usage_in_kernelmode: (cpu.system_usec ?? 0) * 1000,
      usage_in_usermode: (cpu.user_usec ?? 0) * 1000,
    };
  }
  // throttling: v1 cpu.stat nr_periods/nr_throttled/throttled_time (ns); v2 also throttled_usec
  const throttled = cpu.throttled_time !== undefined ? cpu.throttled_time : (cpu.throttled_usec ?? 0) * 1000;
  return {
    cpu_usage: usage,
    throttling_data: { periods: cpu.nr_periods ?? 0, throttled_periods: cpu.nr_throttled ?? 0, throttled_time: throttled },
  };
}

function memoryStats(f: Record<string, string>): pb.MemoryStats.$Properties | undefined {
  const stat = keyValuesU64(f['memory.stat']);
  if (f['memory.usage_in_bytes'] !== undefined) {
    const data = (p: string): pb.MemoryData.$Properties => ({
      usage: num(f[`${p}.usage_in_bytes`]),
      max_usage: num(f[`${p}.max_usage_in_bytes`]),
      failcnt: num(f[`${p}.failcnt`]),
      limit: num(f[`${p}.limit_in_bytes`]),
    });
    return {
      cache: stat.cache ?? 0,
      usage: data('memory'),
      swap_usage: data('memory.memsw'),
      kernel_usage: data('memory.kmem'),
      use_hierarchy: f['memory.use_hierarchy'] === '1',
      stats: stat,
    };
  }
  if (f['memory.current'] !== undefined) {
    const events = keyValues(f['memory.events']);
    return {
      cache: stat.file ?? 0,
      usage: { usage: num(f['memory.current']), max_usage: num(f['memory.peak']), failcnt: events.max ?? 0, limit: num(f['memory.max']) },
      swap_usage: { usage: num(f['memory.swap.current']), limit: num(f['memory.swap.max']) },
      kernel_usage: { usage: stat.kernel ?? stat.kernel_stack ?? 0 },
      use_hierarchy: true,
      stats: stat,
    };
  }
  return undefined;
}

/** v1 blkio "MAJ:MIN Op value" lines (a last "Total" line is skipped). */
function blkioEntries(text: string | undefined): pb.BlkioStatsEntry.$Properties[] {
  const out: pb.BlkioStatsEntry.$Properties[] = [];
  for (const line of (text ?? '').split('\n')) {
    const m = /^([0-9]+):([0-9]+) (?:(\S+) )?([0-9]+)$/.exec(line.trim());
    if (m) out.push({ major: Number(m[1]), minor: Number(m[2]), op: m[3] ?? '', value: num(m[4]) });
  }
  return out;
}

function blkioStats(f: Record<string, string>): pb.BlkioStats.$Properties | undefined {
  if (f['blkio.io_service_bytes_recursive'] !== undefined || f['blkio.throttle.io_service_bytes_recursive'] !== undefined) {
    // the CFQ files are empty without that scheduler: fall back to the throttle ones (as upstream)
    const pick = (a: string, b: string): pb.BlkioStatsEntry.$Properties[] => {
      const e = blkioEntries(f[a]);
      return e.length > 0 ? e : blkioEntries(f[b]);
    };
    return {
      io_service_bytes_recursive: pick('blkio.io_service_bytes_recursive', 'blkio.throttle.io_service_bytes_recursive'),
      io_serviced_recursive: pick('blkio.io_serviced_recursive', 'blkio.throttle.io_serviced_recursive'),
      io_queued_recursive: blkioEntries(f['blkio.io_queued_recursive']),
      io_service_time_recursive: blkioEntries(f['blkio.io_service_time_recursive']),
      io_wait_time_recursive: blkioEntries(f['blkio.io_wait_time_recursive']),
      io_merged_recursive: blkioEntries(f['blkio.io_merged_recursive']),
      io_time_recursive: blkioEntries(f['blkio.time_recursive']),
      sectors_recursive: blkioEntries(f['blkio.sectors_recursive']),
    };
  }
  if (f['io.stat'] !== undefined) {
    // v2 io.stat: "MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N"
    const bytes: pb.BlkioStatsEntry.$Properties[] = [];
    const ios: pb.BlkioStatsEntry.$Properties[] = [];
    for (const line of f['io.stat'].split('\n')) {
      const [dev, ...kv] = line.trim().split(/\s+/);
      const m = /^([0-9]+):([0-9]+)$/.exec(dev ?? '');
      if (!m) continue;
      const v = keyValues(kv.map((p) => p.replace('=', ' ')).join('\n'));
      const major = Number(m[1]);
      const minor = Number(m[2]);
      bytes.push({ major, minor, op: 'Read', value: v.rbytes ?? 0 }, { major, minor, op: 'Write', value: v.wbytes ?? 0 });
      ios.push({ major, minor, op: 'Read', value: v.rios ?? 0 }, { major, minor, op: 'Write', value: v.wios ?? 0 });
    }
    return { io_service_bytes_recursive: bytes, io_serviced_recursive: ios };
  }
  return undefined;
}

function hugetlbStats(f: Record<string, string>): Record<string, pb.HugetlbStats.$Properties> {
  const out: Record<string, pb.HugetlbStats.$Properties> = {};
  for (const name of Object.keys(f)) {
    let m = /^hugetlb\.([0-9]+[KMG]B)\.usage_in_bytes$/.exec(name);
    if (m) {
      const s = m[1];
      out[s] = { usage: num(f[name]), max_usage: num(f[`hugetlb.${s}.max_usage_in_bytes`]), failcnt: num(f[`hugetlb.${s}.failcnt`]) };
      continue;
    }
    m = /^hugetlb\.([0-9]+[KMG]B)\.current$/.exec(name);
    if (m && out[m[1]] === undefined) {
      out[m[1]] = { usage: num(f[name]), failcnt: keyValues(f[`hugetlb.${m[1]}.events`]).max ?? 0 };
    }
  }
  return out;
}

/**
 * Build CgroupStats from the raw files of a container's cgroup. Sections whose files are all
 * absent are left out (memory, blkio); cpu and pids are always present (zeros when unknown).
 */
export function cgroupStatsFromFiles(files: Record<string, string>): pb.CgroupStats.$Properties {
  const max = files['pids.max'];
  return {
    cpu_stats: cpuStats(files),
    memory_stats: memoryStats(files),
    pids_stats: { current: num(files['pids.current']), limit: max === 'max' || max === undefined ? 0 : num(max) },
    blkio_stats: blkioStats(files),
    hugetlb_stats: hugetlbStats(files),
  };
}
