/**
 * Per-rpc counters and latency histograms, kept cheaply on every call and turned into the
 * `kata_agent_rpc_requests_total{method,code}` and `kata_agent_rpc_duration_seconds{method}`
 * families only when GetMetrics scrapes (control/metrics.ts registers {@link rpcMetrics} in
 * its prom-client registry).
 *
 * Why not prom-client's Counter and Histogram directly: they hash the label object on every
 * observation; in the Health.Check profile at concurrency 32 that was ~5% of the control
 * plane's time. Here a call costs one Map lookup and a few additions. This module does not load
 * prom-client (start-up time).
 */

/** Upper bounds of the latency buckets, seconds (`le` labels; +Inf implied). */
export const RPC_DURATION_BUCKETS: readonly number[] = [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30];

interface MethodStats {
  /** gRPC status code → calls. */
  readonly codes: Map<number, number>;
  /** Calls per bucket (not cumulative); the last entry is above the largest bound. */
  readonly buckets: Float64Array;
  sum: number;
  count: number;
}

/** One sample as prom-client's Registry formats it. */
export interface MetricSample {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

/** The shape prom-client's Registry reads from a registered metric. */
export interface CollectedMetric {
  readonly name: string;
  readonly help: string;
  readonly type: 'counter' | 'histogram';
  readonly aggregator: 'sum';
  get(): Promise<{ name: string; help: string; type: 'counter' | 'histogram'; aggregator: 'sum'; values: MetricSample[] }>;
}

/** Counts and latencies of every rpc, by wire method name. Memory: one entry per method seen. */
export class RpcStats {
  private readonly methods = new Map<string, MethodStats>();

  /** Count one rpc: wire method name, gRPC status code (0 = OK), duration in seconds. */
  observe(method: string, code: number, seconds: number): void {
    let m = this.methods.get(method);
    if (m === undefined) {
      m = { codes: new Map(), buckets: new Float64Array(RPC_DURATION_BUCKETS.length + 1), sum: 0, count: 0 };
      this.methods.set(method, m);
    }
    m.codes.set(code, (m.codes.get(code) ?? 0) + 1);
    let i = 0;
    while (i < RPC_DURATION_BUCKETS.length && seconds > RPC_DURATION_BUCKETS[i]) i++;
    m.buckets[i]++;
    if (Number.isFinite(seconds)) m.sum += seconds;
    m.count++;
  }

  /** Calls of `method` answered with `code` so far. */
  calls(method: string, code: number): number {
    return this.methods.get(method)?.codes.get(code) ?? 0;
  }

  /** Samples of kata_agent_rpc_requests_total: {method, code} → calls. */
  counterSamples(): MetricSample[] {
    const out: MetricSample[] = [];
    for (const [method, m] of this.methods) for (const [code, n] of m.codes) out.push({ labels: { method, code: String(code) }, value: n });
    return out;
  }

  /** Samples of kata_agent_rpc_duration_seconds (`name`): cumulative buckets, then _sum and _count per method. */
  histogramSamples(name: string): MetricSample[] {
    const out: MetricSample[] = [];
    for (const [method, m] of this.methods) {
      let acc = 0;
      RPC_DURATION_BUCKETS.forEach((le, i) => {
        acc += m.buckets[i];
        out.push({ labels: { le, method }, value: acc, metricName: `${name}_bucket` });
      });
      out.push({ labels: { le: '+Inf', method }, value: m.count, metricName: `${name}_bucket` });
      out.push({ labels: { method }, value: m.sum, metricName: `${name}_sum` });
      out.push({ labels: { method }, value: m.count, metricName: `${name}_count` });
    }
    return out;
  }
}

/** The two rpc families of `stats`, in the form prom-client's Registry.registerMetric takes. */
export function rpcMetrics(stats: RpcStats): CollectedMetric[] {
  const family = (name: string, help: string, type: 'counter' | 'histogram', values: () => MetricSample[]): CollectedMetric => ({
    name,
    help,
    type,
    aggregator: 'sum',
    get: async () => ({ name, help, type, aggregator: 'sum', values: values() }),
  });
  const duration = 'kata_agent_rpc_duration_seconds';
  return [
    family('kata_agent_rpc_requests_total', 'ttRPC requests by method and status code', 'counter', () => stats.counterSamples()),
    family(duration, 'ttRPC request latency by method, seconds', 'histogram', () => stats.histogramSamples(duration)),
  ];
}
