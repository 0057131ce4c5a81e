/**
 * A process's own figures for GetMetrics (control's, and the helper's through its helperStats
 * op), read from /proc/self as upstream's metrics.rs reads its process through procfs
 * (kata_agent_process_* families).
 */
import * as fs from 'node:fs';
import type { HelperStatsResult } from './protocol';

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on every Linux architecture). */
const USER_HZ = 100;

/**
 * Parse /proc/self/stat + /proc/self/fd + /proc/stat btime into {@link HelperStatsResult}.
 * Never throws: unreadable figures are 0.
 */
export function readSelfStats(procDir = '/proc/self'): HelperStatsResult {
  const out: HelperStatsResult = { pid: process.pid, cpuUserSeconds: 0, cpuSystemSeconds: 0, rssBytes: 0, vsizeBytes: 0, fds: 0, threads: 0, startTimeSeconds: 0 };
  try {
    const stat = fs.readFileSync(`${procDir}/stat`, 'utf8');
    // fields after "(comm)", which may hold spaces: state is field 3
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const field = (n: number): number => Number(f[n - 3] ?? 0);
    out.cpuUserSeconds = field(14) / USER_HZ;
    out.cpuSystemSeconds = field(15) / USER_HZ;
    out.threads = field(20);
    out.vsizeBytes = field(23);
    out.rssBytes = field(24) * 4096;
    const btime = /^btime ([0-9]+)$/m.exec(fs.readFileSync('/proc/stat', 'utf8'));
    if (btime) out.startTimeSeconds = Number(btime[1]) + field(22) / USER_HZ;
  } catch {
    // no procfs
  }
  try {
    out.fds = fs.readdirSync(`${procDir}/fd`).length;
  } catch {
    // no procfs
  }
  if (out.rssBytes === 0) out.rssBytes = process.memoryUsage.rss();
  return out;
}
