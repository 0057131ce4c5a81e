/**
 * What the benchmark's sections share: statistics over samples, tables (text and markdown),
 * child processes, the machine and its load, PSS of a process. No figure is judged here.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';

// ---------------------------------------------------------------------------------------------
// Statistics

/** Summary of one series of samples, all in ms. */
export interface Stats {
  n: number;
  median: number;
  p90: number;
  min: number;
  max: number;
  mean: number;
}

/** Median (mean of the two middle values for even n), p90 (nearest rank), min, max, mean; ms. */
export function stats(samples: number[]): Stats {
  if (samples.length === 0) return { n: 0, median: NaN, p90: NaN, min: NaN, max: NaN, mean: NaN };
  const s = [...samples].sort((a, b) => a - b);
  const n = s.length;
  const median = n % 2 === 1 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
  const p90 = s[Math.min(n - 1, Math.ceil(0.9 * n) - 1)];
  return { n, median, p90, min: s[0], max: s[n - 1], mean: s.reduce((a, b) => a + b, 0) / n };
}

/** Elapsed ms since `t0` (a process.hrtime.bigint() value). */
export function since(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

export const now = (): bigint => process.hrtime.bigint();

export interface Exited {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Spawn `cmd args` and resolve when it has exited *and* its stdout/stderr pipes are closed
 * ('close'), with what it wrote. stdio: stdin ignored, stdout/stderr piped.
 */
export function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<Exited> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.once('error', reject);
    child.once('close', (code, signal) =>
      resolve({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }),
    );
  });
}

/** Resolve when `child` has exited (not waiting for its pipes, which others may hold). */
export function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
}

export function check(what: string, r: Exited): void {
  if (r.code !== 0) {
    throw new Error(`${what} failed (exit ${r.code ?? r.signal}): ${r.stderr.trim() || r.stdout.trim()}`);
  }
}

/** Number of mounts of file system type `fstype` in this mount namespace. */
export function mountsOfType(fstype: string): number {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => {
      const sep = l.indexOf(' - ');
      return sep >= 0 && l.slice(sep + 3).split(' ')[0] === fstype;
    }).length;
}

export function machine(): Record<string, string> {
  const cpus = os.cpus();
  let cgroup = 'v1';
  if (fs.existsSync('/sys/fs/cgroup/cgroup.controllers')) cgroup = 'v2';
  let distro = '';
  try {
    distro = /^PRETTY_NAME="?([^"\n]*)/m.exec(fs.readFileSync('/etc/os-release', 'utf8'))?.[1] ?? '';
  } catch {
    /* not essential */
  }
  return {
    os: distro,
    kernel: `${os.type()} ${os.release()}`,
    cpu: `${cpus.length} × ${cpus[0]?.model ?? 'unknown'}`,
    memory: `${Math.round(os.totalmem() / 2 ** 30)} GiB`,
    node: process.version,
    load: `load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')} at the start`,
    cgroup,
    cgroupHierarchies:
      cgroup === 'v2'
        ? 'one cgroup2 hierarchy'
        : `${mountsOfType('cgroup')} v1 hierarchies${mountsOfType('cgroup2') > 0 ? ' plus the cgroup2 one' : ''}`,
  };
}

/** One result row: a series of samples of one variant of one scenario. */
export interface Row {
  scenario: string;
  variant: string;
  stats: Stats;
  /** Which runc row this row is compared with, by variant name (only for our rows). */
  compareWith?: string[];
}

/** ms with two decimals, "-" when not finite. */
export const fmt = (ms: number): string => (Number.isFinite(ms) ? ms.toFixed(2) : '-');

export function table(headers: string[], rows: string[][], markdown: boolean): string {
  const widths = headers.map((h, i) => Math.max(markdown ? 3 : 0, h.length, ...rows.map((r) => r[i].length)));
  const numeric = headers.map((h) => /ms$|^n$|medians/.test(h));
  const cell = (s: string, i: number): string => (numeric[i] ? s.padStart(widths[i]) : s.padEnd(widths[i]));
  const line = (r: string[]): string => (markdown ? `| ${r.map(cell).join(' | ')} |` : r.map(cell).join('  '));
  const sep = markdown
    ? `| ${widths.map((w, i) => (numeric[i] ? '-'.repeat(w - 1) + ':' : '-'.repeat(w))).join(' | ')} |`
    : widths.map((w) => '-'.repeat(w)).join('  ');
  return [line(headers), sep, ...rows.map(line)].join('\n');
}

/** Rows of RESULT_HEADERS for `rows`. */
export function resultRows(rows: Row[]): string[][] {
  return rows.map((r) => [r.scenario, r.variant, String(r.stats.n), fmt(r.stats.median), fmt(r.stats.p90), fmt(r.stats.min), fmt(r.stats.max)]);
}

/** Headers of a result table. */
export const RESULT_HEADERS = ['scenario', 'variant', 'n', 'median ms', 'p90 ms', 'min ms', 'max ms'];

export function envInt(name: string, dflt: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) {
    console.error(`bench: ${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return n;
}

/** Rotate `fns` by `i` and run them one after the other. */
export async function rotated(i: number, fns: Array<() => Promise<void>>): Promise<void> {
  for (let k = 0; k < fns.length; k++) await fns[(i + k) % fns.length]();
}

export function progress(text: string): void {
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K${text}`);
}

export function progressDone(): void {
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
}


/**
 * Proportional set size of process `pid` in bytes (/proc/PID/smaps_rollup "Pss:"), or NaN when
 * it cannot be read (the process is gone).
 */
export function pssBytes(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

/**
 * USS of `pid` in bytes (Private_Clean + Private_Dirty of /proc/PID/smaps_rollup): the memory
 * only this process holds, NaN if unreadable. Unlike PSS it does not depend on how many other
 * processes map the same file pages (on a shared machine, every Node process there shares
 * /usr/bin/node's ~40 MB of text).
 */
export function ussBytes(pid: number): number {
  try {
    const text = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const clean = /^Private_Clean:\s+(\d+) kB/m.exec(text);
    const dirty = /^Private_Dirty:\s+(\d+) kB/m.exec(text);
    return clean && dirty ? (Number(clean[1]) + Number(dirty[1])) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** How many processes on the machine run `exe` (e.g. process.execPath), from /proc/<pid>/exe. */
export function processesRunning(exe: string): number {
  let n = 0;
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(entry)) continue;
    try {
      if (fs.readlinkSync(`/proc/${entry}/exe`) === exe) n++;
    } catch {
      // gone or not ours to read
    }
  }
  return n;
}

/** The 1-minute load average now, as text. */
export function loadNow(): string {
  return os.loadavg()[0].toFixed(2);
}

/**
 * One line of the targets table (the performance issue's goals): what ours measured, its
 * reference in the same run, the figure compared with the goal, and whether it is met.
 */
export interface Target {
  /** e.g. "ttRPC Health.Check, concurrency 1". */
  target: string;
  /** Our figure with its unit, e.g. "8123 calls/s". */
  ours: string;
  /** The reference's figure with its unit ("" when the goal is absolute). */
  reference: string;
  /** The compared figure, e.g. "1.04×" or "612 MB/s". */
  figure: string;
  /** The goal, e.g. "≥ 1.0×". */
  goal: string;
  met: boolean;
}

/** Headers and rows of a targets table. */
export function targetRows(targets: Target[]): { headers: string[]; rows: string[][] } {
  return {
    headers: ['target', 'ours', 'reference', 'figure', 'goal', 'met'],
    rows: targets.map((t) => [t.target, t.ours, t.reference, t.figure, t.goal, t.met ? 'yes' : 'NO']),
  };
}

/** Median of `xs` (NaN when empty). */
export function median(xs: number[]): number {
  return stats(xs).median;
}
