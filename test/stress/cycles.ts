/**
 * Create/remove cycles (performance/reliability issue): N times CreateContainer → StartContainer
 * → WaitProcess → RemoveContainer of busybox `true` on a real stand-alone agent, counting what
 * a leak would leave behind before and after: open fds of the helper and of the control plane,
 * mounts in the helper's mount namespace, cgroup directories named after this run's containers
 * (every v1 hierarchy and the v2 tree, three levels deep), and the RSS of both processes.
 *
 *   npm run stress:cycles [-- CYCLES]        (default 10000; root; KATA_TEST_ROOTFS or .cache/rootfs)
 *
 * Used shortened by test/integration/cycles.test.ts, which asserts the counts come back to
 * their baseline; RSS is reported, never asserted.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AgentClient } from '../../control/ctl/client';
import { ociJsonToSpec } from '../../control/ctl/oci-json';
import { PROJECT_ROOT, busyboxConfig, startStandaloneAgent, type StandaloneAgent } from '../../scripts/lib/standalone';

/** What is counted before and after. */
export interface ResourceCounts {
  helperFds: number;
  controlFds: number;
  /**
   * Mounts in the helper's mount namespace under the agent's run directory or the rootfs, or
   * named after the run (the namespace is the host's: other mounts come and go on a shared
   * machine and are not ours to count).
   */
  helperMounts: number;
  /** cgroup directories whose name contains the run's tag. */
  cgroups: number;
  helperRssKiB: number;
  controlRssKiB: number;
}

/** Figures of one run. */
export interface CycleStats {
  cycles: number;
  before: ResourceCounts;
  after: ResourceCounts;
  /** Median ms of one cycle. */
  medianCycleMs: number;
  seconds: number;
}

function fdCount(pid: number): number {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return NaN;
  }
}

function rssKiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

/** cgroup directories under /sys/fs/cgroup (3 levels below each hierarchy) whose name contains `tag`. */
export function cgroupDirsWith(tag: string): number {
  let n = 0;
  const walk = (dir: string, depth: number): void => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      if (e.name.includes(tag)) n++;
      if (depth > 0) walk(path.join(dir, e.name), depth - 1);
    }
  };
  walk('/sys/fs/cgroup', 3);
  return n;
}

/** The counts of {@link ResourceCounts} for `agent`, for containers named with `tag`. */
export function countResources(agent: StandaloneAgent, tag: string, rootfs: string): ResourceCounts {
  const hp = agent.helper.pid ?? -1;
  const cp = agent.control.pid ?? -1;
  let helperMounts = NaN;
  try {
    helperMounts = fs
      .readFileSync(`/proc/${hp}/mountinfo`, 'utf8')
      .trimEnd()
      .split('\n')
      .map((l) => l.split(' ')[4] ?? '')
      .filter((m) => m.startsWith(agent.runDir) || m.startsWith(rootfs) || m.includes(tag)).length;
  } catch {
    /* helper gone: NaN */
  }
  return { helperFds: fdCount(hp), controlFds: fdCount(cp), helperMounts, cgroups: cgroupDirsWith(tag), helperRssKiB: rssKiB(hp), controlRssKiB: rssKiB(cp) };
}

/**
 * Run `cycles` create/start/wait/remove cycles of `true` on `agent` with containers named
 * `<tag>-<n>`; counts before (after one warm-up cycle) and after (after a 500 ms settle).
 * Throws when an rpc fails or the container exits non-zero.
 */
export async function runCycles(agent: StandaloneAgent, rootfs: string, cycles: number, tag: string, onProgress?: (n: number) => void): Promise<CycleStats> {
  const spec = ociJsonToSpec(busyboxConfig(rootfs, ['true']), rootfs);
  const client = await AgentClient.connect(agent.address);
  const times: number[] = [];
  const cycle = async (n: number): Promise<void> => {
    const cid = `${tag}-${n}`;
    const t0 = Date.now();
    await client.call('CreateContainer', { container_id: cid, exec_id: cid, OCI: spec });
    await client.call('StartContainer', { container_id: cid });
    const { status } = await client.call('WaitProcess', { container_id: cid, exec_id: cid });
    await client.call('RemoveContainer', { container_id: cid, timeout: 10 });
    if (status !== 0) throw new Error(`container ${cid} exited with status ${status}`);
    times.push(Date.now() - t0);
  };
  try {
    await cycle(-1); // warm-up: first-use allocations are not a leak
    await new Promise((r) => setTimeout(r, 500));
    const before = countResources(agent, tag, rootfs);
    times.length = 0;
    const t0 = Date.now();
    for (let n = 0; n < cycles; n++) {
      await cycle(n);
      if (onProgress && (n + 1) % 500 === 0) onProgress(n + 1);
    }
    const seconds = (Date.now() - t0) / 1000;
    await new Promise((r) => setTimeout(r, 500));
    const after = countResources(agent, tag, rootfs);
    const sorted = [...times].sort((a, b) => a - b);
    return { cycles, before, after, medianCycleMs: sorted[Math.floor(sorted.length / 2)] ?? NaN, seconds };
  } finally {
    await client.close();
  }
}

async function main(): Promise<number> {
  const cycles = Number(process.argv[2] ?? 10_000);
  const rootfs = process.env.KATA_TEST_ROOTFS ?? path.join(PROJECT_ROOT, '.cache', 'rootfs');
  if (!fs.existsSync(path.join(rootfs, 'bin', 'busybox'))) {
    console.error(`stress:cycles: no busybox rootfs at ${rootfs} (scripts/make-rootfs ${rootfs})`);
    return 1;
  }
  const agent = await startStandaloneAgent({ logLevel: 'info', debug: false });
  try {
    const tag = `cyc${process.pid}`;
    const s = await runCycles(agent, rootfs, cycles, tag, (n) => process.stdout.write(`  ${n} cycles\n`));
    console.log(JSON.stringify(s));
    const leaks = (['helperFds', 'controlFds', 'helperMounts', 'cgroups'] as const).filter((k) => s.after[k] !== s.before[k]);
    console.log(`${s.cycles} cycles in ${s.seconds.toFixed(0)} s (median ${s.medianCycleMs} ms); ` + (leaks.length === 0 ? 'fds, mounts and cgroups back to baseline' : `NOT back to baseline: ${leaks.join(', ')}`) +
      `; RSS helper ${s.before.helperRssKiB} → ${s.after.helperRssKiB} KiB, control ${s.before.controlRssKiB} → ${s.after.controlRssKiB} KiB`);
    return leaks.length === 0 ? 0 : 1;
  } finally {
    await agent.stop();
  }
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
