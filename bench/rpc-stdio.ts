/**
 * ttRPC and stdio throughput, ours next to Go references in one run, every figure taken by the
 * same Go client (bench/go/main.go, containerd's ttrpc) so that only the server differs:
 *  - Health.Check on one connection at concurrency 1 and 32: our agent vs containerd's Go
 *    ttrpc server (calls/s; ratio ours/Go, goal ≥ 1.0×);
 *  - stdout: a container writing zeros (`dd if=/dev/zero bs=1M`) read with ReadStdout at
 *    len 1 MiB, 64 KiB, 32 KiB: ours vs the Go server reading a pipe per call as upstream does vs
 *    a raw pipe read of the same dd (MB/s = 10^6 bytes/s; byte count and content checked);
 *  - stdin: WriteStdin in chunks of 1 MiB and 32 KiB into `wc -c`: ours vs the Go server vs a
 *    raw pipe write (count checked).
 * Each round runs every variant once in a rotating order; medians over rounds.
 */
import { goClient, type GoResult } from './go-ref';
import { median, progress, progressDone, rotated, type Target } from './lib';

/** Result rows of this section: one per variant, medians. */
export interface ThroughputRow {
  what: string;
  variant: string;
  /** Rounds measured. */
  n: number;
  /** Median throughput in the row's unit. */
  median: number;
  unit: 'calls/s' | 'MB/s';
  /** Median per-call µs. */
  perCallUs: number;
}

export interface RpcStdioResult {
  rows: ThroughputRow[];
  targets: Target[];
}

const MIB = 1 << 20;

/**
 * Run the section. `ours` and `goServer` are ttRPC addresses (unix:///path or a path); `rootfs`
 * the busybox rootfs for our containers. Rounds: `rounds` (≥ 1). Throws when a client fails
 * (a mismatch in the data is a failure, not a figure).
 */
export async function rpcAndStdio(bin: string, ours: string, goServer: string, rootfs: string, rounds: number, tag: string): Promise<RpcStdioResult> {
  const samples = new Map<string, { rate: number[]; us: number[]; unit: ThroughputRow['unit'] }>();
  const add = (key: string, r: GoResult, unit: ThroughputRow['unit']): void => {
    const s = samples.get(key) ?? { rate: [], us: [], unit };
    s.rate.push(unit === 'calls/s' ? (r.ops / r.ms) * 1000 : r.bytes / r.ms / 1000);
    s.us.push((r.ms * 1000) / r.ops);
    samples.set(key, s);
  };
  let seq = 0;
  const cid = (): string => `tp-${tag}-${seq++}`;
  const sock = (a: string): string => a.replace(/^unix:\/\//, '');

  const checkCalls = (c: number): string => String(c === 1 ? 3000 : 9600);
  const readMiB = (len: number): string => String(len >= MIB ? 256 : 64);
  const writeMiB = (len: number): string => String(len >= MIB ? 256 : 64);
  for (let i = 0; i < rounds; i++) {
    progress(`ttRPC and stdio: round ${i + 1}/${rounds}`);
    for (const c of [1, 32]) {
      await rotated(i, [
        async () => add(`Health.Check c=${c}/ours`, await goClient(bin, ['check', sock(ours), String(c), checkCalls(c)]), 'calls/s'),
        async () => add(`Health.Check c=${c}/Go ttrpc`, await goClient(bin, ['check', sock(goServer), String(c), checkCalls(c)]), 'calls/s'),
      ]);
    }
    for (const len of [MIB, 64 * 1024, 32 * 1024]) {
      const k = `stdout len ${len >= MIB ? '1 MiB' : `${len / 1024} KiB`}`;
      await rotated(i, [
        async () => add(`${k}/ours`, await goClient(bin, ['read', sock(ours), rootfs, cid(), String(len), readMiB(len)]), 'MB/s'),
        async () => add(`${k}/Go ttrpc`, await goClient(bin, ['read', sock(goServer), rootfs, cid(), String(len), readMiB(len)]), 'MB/s'),
        async () => add(`${k}/pipe`, await goClient(bin, ['pipe-read', String(len), readMiB(len)]), 'MB/s'),
      ]);
    }
    for (const len of [MIB, 32 * 1024]) {
      const k = `stdin len ${len >= MIB ? '1 MiB' : `${len / 1024} KiB`}`;
      await rotated(i, [
        async () => add(`${k}/ours`, await goClient(bin, ['write', sock(ours), rootfs, cid(), String(len), writeMiB(len)]), 'MB/s'),
        async () => add(`${k}/Go ttrpc`, await goClient(bin, ['write', sock(goServer), rootfs, cid(), String(len), writeMiB(len)]), 'MB/s'),
        async () => add(`${k}/pipe`, await goClient(bin, ['pipe-write', String(len), writeMiB(len)]), 'MB/s'),
      ]);
    }
  }
  progressDone();

  const rows: ThroughputRow[] = [...samples.entries()].map(([key, s]) => {
    const [what, variant] = key.split('/');
    return { what, variant, n: s.rate.length, median: median(s.rate), unit: s.unit, perCallUs: median(s.us) };
  });
  const get = (what: string, variant: string): ThroughputRow | undefined => rows.find((r) => r.what === what && r.variant === variant);
  const fig = (r: ThroughputRow | undefined): string => (r ? `${r.median.toFixed(0)} ${r.unit}` : '-');
  const targets: Target[] = [];
  for (const c of [1, 32]) {
    const o = get(`Health.Check c=${c}`, 'ours');
    const g = get(`Health.Check c=${c}`, 'Go ttrpc');
    const ratio = o && g ? o.median / g.median : NaN;
    targets.push({ target: `ttRPC Health.Check, concurrency ${c}`, ours: fig(o), reference: `${fig(g)} (Go ttrpc)`, figure: `${ratio.toFixed(2)}×`, goal: '≥ 1.0×', met: ratio >= 1 });
  }
  for (const [what, goal] of [['stdout len 1 MiB', 1000], ['stdout len 32 KiB', 250], ['stdin len 1 MiB', 1000], ['stdin len 32 KiB', 250]] as const) {
    const o = get(what, 'ours');
    const g = get(what, 'Go ttrpc');
    const p = get(what, 'pipe');
    targets.push({
      target: `${what.replace('len', 'MB/s at len')}`,
      ours: fig(o),
      reference: `${fig(g)} (Go ttrpc); ${fig(p)} (pipe)`,
      figure: fig(o),
      goal: `≥ ${goal} MB/s`,
      met: (o?.median ?? 0) >= goal,
    });
  }
  return { rows, targets };
}

