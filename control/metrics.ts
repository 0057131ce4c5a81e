/**
 * GetMetrics: the agent's metrics in the Prometheus text exposition format, with prom-client,
 * family names as upstream (src/agent/src/metrics.rs at 6e4d4c329a: `kata_agent_*` for the
 * agent's processes, `kata_guest_*` for the guest), plus per-rpc counters and latency
 * histograms and per-container cgroup figures. The same text is served on the debug
 * endpoint's /metrics (control/debug/server.ts).
 *
 * - agent: prom-client's default metrics of control (prefix `kata_agent_control_`), and
 *   kata_agent_{threads,total_time,total_vm,total_rss,fds}{process="control"|"helper"} (the
 *   helper's from its `helperStats` op, /proc/self); kata_agent_scrape_count.
 * - guest (read by control from world-readable /proc): kata_guest_load{item}, kata_guest_tasks{item},
 *   kata_guest_cpu_time{cpu,item} (seconds), kata_guest_meminfo{item} (bytes),
 *   kata_guest_netdev_stat{interface,item}, kata_guest_diskstat{disk,item}, kata_guest_vm_stat{item}.
 * - rpcs: kata_agent_rpc_requests_total{method,code}, kata_agent_rpc_duration_seconds{method}.
 * - containers: kata_agent_container_cpu_seconds_total{container},
 *   kata_agent_container_memory_usage_bytes{container}, kata_agent_container_memory_limit_bytes{container},
 *   kata_agent_container_pids{container}.
 */
import * as fs from 'node:fs';
import * as client from 'prom-client';
import type { Logger } from 'pino';
import { cgroupStatsFromFiles, u64ToNumber } from './cgroup-stats';
import type { HelperStatsResult } from '../shared/protocol';
import { readSelfStats } from '../shared/self-stats';
import { rpcMetrics, RpcStats } from './rpc-stats';

/** Gauges that exist only while the scrape sees them are reset before each scrape. */
type Labels<K extends string> = Partial<Record<K, string | number>>;

/** What a scrape needs from the agent (the helper and the containers). */
export interface MetricsSource {
  /** The helper's /proc/self figures; may throw (then the helper's gauges are left out). */
  helperStats(): Promise<HelperStatsResult>;
  /** Ids of the sandbox's containers. */
  containerIds(): string[];
  /** Raw cgroup files of a container (helper cgroupStats); may throw (then it is left out). */
  cgroupFiles(containerId: string): Promise<Record<string, string>>;
}

/** USER_HZ of /proc/stat. */
const USER_HZ = 100;
/** Containers scraped at most (a bound on helper calls per scrape). */
const MAX_SCRAPED_CONTAINERS = 256;

function readProc(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** "MemTotal" → "mem_total", "Active(anon)" → "active_anon" (upstream's item names). */
export function snakeCase(key: string): string {
  return key
    .replace(/\(([^)]*)\)/g, '_$1')
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .replace(/[^A-Za-z0-9_]/g, '_')
    .toLowerCase();
}

const CPU_ITEMS = ['user', 'nice', 'system', 'idle', 'iowait', 'irq', 'softirq', 'steal', 'guest', 'guest_nice'];
const NETDEV_ITEMS = [
  'recv_bytes', 'recv_packets', 'recv_errs', 'recv_drop', 'recv_fifo', 'recv_frame', 'recv_compressed', 'recv_multicast',
  'sent_bytes', 'sent_packets', 'sent_errs', 'sent_drop', 'sent_fifo', 'sent_colls', 'sent_carrier', 'sent_compressed',
];
const DISK_ITEMS = [
  'reads', 'merged', 'sectors_read', 'time_reading', 'writes', 'writes_merged', 'sectors_written', 'time_writing',
  'in_progress', 'time_in_progress', 'weighted_time_in_progress', 'discards', 'discards_merged', 'sectors_discarded',
  'time_discarding', 'flushes', 'time_flushing',
];

/**
 * The agent's metrics registry. `observeRpc` is called by control/rpc/index.ts registerRpc for
 * every rpc; `render` scrapes and returns the exposition text (content type {@link contentType}).
 */
export class AgentMetrics {
  readonly registry = new client.Registry();
  readonly contentType = client.Registry.PROMETHEUS_CONTENT_TYPE;
  private readonly scrapes: client.Counter;
  private readonly proc: Record<'threads' | 'total_time' | 'total_vm' | 'total_rss' | 'fds', client.Gauge<'process'>>;
  private readonly guest: {
    load: client.Gauge<'item'>;
    tasks: client.Gauge<'item'>;
    cpu: client.Gauge<'cpu' | 'item'>;
    meminfo: client.Gauge<'item'>;
    vmstat: client.Gauge<'item'>;
    netdev: client.Gauge<'interface' | 'item'>;
    disk: client.Gauge<'disk' | 'item'>;
  };
  private readonly ctr: Record<'cpu' | 'mem' | 'limit' | 'pids', client.Gauge<'container'>>;

  constructor(
    private readonly source: MetricsSource,
    private readonly log?: Logger,
    private readonly procDir = '/proc',
    /** The per-rpc figures (the agent's own, kept before this registry is loaded). */
    readonly rpcs: RpcStats = new RpcStats(),
  ) {
    const r = [this.registry];
    client.collectDefaultMetrics({ register: this.registry, prefix: 'kata_agent_control_' });
    this.scrapes = new client.Counter({ name: 'kata_agent_scrape_count', help: 'Metrics scrape count', registers: r });
    // The rpc families are counted by RpcStats (cheap per call) and read at scrape time.
    for (const m of rpcMetrics(this.rpcs)) this.registry.registerMetric(m as unknown as client.Metric);
    const pg = (name: string, help: string): client.Gauge<'process'> => new client.Gauge({ name: `kata_agent_${name}`, help, labelNames: ['process'], registers: r });
    this.proc = {
      threads: pg('threads', 'Agent process threads'),
      total_time: pg('total_time', 'Agent process total CPU time, seconds'),
      total_vm: pg('total_vm', 'Agent process total VM size, bytes'),
      total_rss: pg('total_rss', 'Agent process total RSS size, bytes'),
      fds: pg('fds', 'Agent process open file descriptors'),
    };
    const gg = <K extends string>(name: string, help: string, labelNames: K[]): client.Gauge<K> =>
      new client.Gauge({ name: `kata_guest_${name}`, help, labelNames, registers: r });
    this.guest = {
      load: gg('load', 'Guest system load.', ['item']),
      tasks: gg('tasks', 'Guest system tasks.', ['item']),
      cpu: gg('cpu_time', 'Guest CPU statistics, seconds.', ['cpu', 'item']),
      meminfo: gg('meminfo', 'Statistics about memory usage in the system, bytes.', ['item']),
      vmstat: gg('vm_stat', 'Guest virtual memory statistics.', ['item']),
      netdev: gg('netdev_stat', 'Guest net devices statistics.', ['interface', 'item']),
      disk: gg('diskstat', 'Disks statistics in system.', ['disk', 'item']),
    };
    const cg = (name: string, help: string): client.Gauge<'container'> => new client.Gauge({ name: `kata_agent_container_${name}`, help, labelNames: ['container'], registers: r });
    this.ctr = {
      cpu: cg('cpu_seconds_total', 'Container cgroup CPU time, seconds'),
      mem: cg('memory_usage_bytes', 'Container cgroup memory usage, bytes'),
      limit: cg('memory_limit_bytes', 'Container cgroup memory limit, bytes'),
      pids: cg('pids', 'Container cgroup task count'),
    };
  }

  /** Count one rpc: wire method name, gRPC status code (0 = OK), duration in seconds. */
  observeRpc(method: string, code: number, seconds: number): void {
    this.rpcs.observe(method, code, seconds);
  }

  /** Scrape everything and answer the exposition text. Never throws for a missing source. */
  async render(): Promise<string> {
    this.scrapes.inc();
    this.setProcess('control', this.selfStats());
    try {
      this.setProcess('helper', await this.source.helperStats());
    } catch (err) {
      this.log?.debug({ err }, 'metrics: helper figures unavailable');
      for (const g of Object.values(this.proc)) g.remove({ process: 'helper' });
    }
    this.scrapeGuest();
    await this.scrapeContainers();
    return this.registry.metrics();
  }

  private setProcess(process: string, s: HelperStatsResult): void {
    this.proc.threads.set({ process }, s.threads);
    this.proc.total_time.set({ process }, s.cpuUserSeconds + s.cpuSystemSeconds);
    this.proc.total_vm.set({ process }, s.vsizeBytes);
    this.proc.total_rss.set({ process }, s.rssBytes);
    this.proc.fds.set({ process }, s.fds);
  }

  /** Control's own /proc/self figures (shared/self-stats.ts, as the helper reads its own). */
  private selfStats(): HelperStatsResult {
    return readSelfStats(`${this.procDir}/self`);
  }


  private scrapeGuest(): void {
    const g = this.guest;
    const load = readProc(`${this.procDir}/loadavg`).trim().split(/\s+/);
    if (load.length >= 4) {
      g.load.set({ item: 'load1' }, Number(load[0]));
      g.load.set({ item: 'load5' }, Number(load[1]));
      g.load.set({ item: 'load15' }, Number(load[2]));
      const [cur, max] = (load[3] ?? '').split('/').map(Number);
      if (Number.isFinite(cur)) g.tasks.set({ item: 'cur' }, cur);
      if (Number.isFinite(max)) g.tasks.set({ item: 'max' }, max);
    }
    for (const line of readProc(`${this.procDir}/stat`).split('\n')) {
      const m = /^cpu([0-9]*)\s+(.*)$/.exec(line);
      if (!m) continue;
      const cpu = m[1] === '' ? 'total' : m[1];
      m[2].split(/\s+/).forEach((v, i) => {
        if (CPU_ITEMS[i]) g.cpu.set({ cpu, item: CPU_ITEMS[i] }, Number(v) / USER_HZ);
      });
    }
    for (const line of readProc(`${this.procDir}/meminfo`).split('\n')) {
      const m = /^([^:]+):\s+([0-9]+)(?:\s+kB)?$/.exec(line.trim());
      if (m) g.meminfo.set({ item: snakeCase(m[1]) }, Number(m[2]) * (line.trim().endsWith('kB') ? 1024 : 1));
    }
    for (const line of readProc(`${this.procDir}/vmstat`).split('\n')) {
      const [k, v] = line.split(' ');
      if (k && v !== undefined && /^[0-9]+$/.test(v)) g.vmstat.set({ item: k }, Number(v));
    }
    g.netdev.reset();
    for (const line of readProc(`${this.procDir}/net/dev`).split('\n').slice(2)) {
      const i = line.indexOf(':');
      if (i < 0) continue;
      const iface = line.slice(0, i).trim();
      line.slice(i + 1).trim().split(/\s+/).forEach((v, j) => {
        if (NETDEV_ITEMS[j]) g.netdev.set({ interface: iface, item: NETDEV_ITEMS[j] }, Number(v));
      });
    }
    g.disk.reset();
    for (const line of readProc(`${this.procDir}/diskstats`).split('\n')) {
      const f = line.trim().split(/\s+/);
      if (f.length < 14) continue;
      f.slice(3).forEach((v, j) => {
        if (DISK_ITEMS[j]) g.disk.set({ disk: f[2], item: DISK_ITEMS[j] }, Number(v));
      });
    }
  }

  private async scrapeContainers(): Promise<void> {
    for (const gauge of Object.values(this.ctr)) gauge.reset();
    for (const id of this.source.containerIds().slice(0, MAX_SCRAPED_CONTAINERS)) {
      let files: Record<string, string>;
      try {
        files = await this.source.cgroupFiles(id);
      } catch {
        continue; // no cgroup of its own, or removed meanwhile
      }
      const s = cgroupStatsFromFiles(files);
      const container: Labels<'container'> = { container: id };
      this.ctr.cpu.set(container, u64ToNumber(s.cpu_stats?.cpu_usage?.total_usage) / 1e9);
      this.ctr.pids.set(container, u64ToNumber(s.pids_stats?.current));
      if (s.memory_stats?.usage) {
        this.ctr.mem.set(container, u64ToNumber(s.memory_stats.usage.usage));
        this.ctr.limit.set(container, u64ToNumber(s.memory_stats.usage.limit));
      }
    }
  }
}
