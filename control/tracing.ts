/**
 * OpenTelemetry tracing of the control plane (upstream: kata-containers src/agent/src/tracer.rs
 * and the `trace_rpc_call!` macro of rpc.rs at 6e4d4c329a), on when `agent.trace` /
 * KATA_AGENT_TRACING / `tracing = true` is set.
 *
 * - One span per ttRPC call (`grpc.AgentService/<Method>`), opened by the interceptor of
 *   control/rpc/index.ts around the policy check and the handler. Its parent is the context the
 *   Kata runtime sends in the request's ttRPC metadata: the Go runtime injects the W3C
 *   TraceContext `traceparent` (and `tracestate`) keys with its global propagator
 *   (virtcontainers/pkg/agent/protocols/client/client.go inject(), katatrace SetTextMapPropagator);
 *   upstream extracts them with TraceContextPropagator from the metadata (values joined with ",").
 * - One child span per helper call (`helper <op>`), opened by {@link Tracing.wrapHelper} around
 *   the helper connection, under the span of the rpc that caused it (AsyncLocalStorage context).
 *
 * Exporters ({@link parseTraceExporter}): upstream sends spans over vsock (port 10240 of the
 * host, CID 2) to the host's kata-trace-forwarder. This agent does not: it never connects to
 * the host's CID, and no forwarder listens in the stand-alone or test setups. Instead:
 * `otlp:URL` (OTLP/HTTP protobuf-JSON, e.g. a collector at http://127.0.0.1:4318/v1/traces),
 * `file:PATH` (one JSON record per span, appended), `console` (stdout), `memory` (tests).
 *
 * Zero cost when tracing is off: this module imports the OpenTelemetry packages for their types
 * only; the packages are loaded (require) in {@link startTracing}, which runs only when tracing
 * is on, and no interceptor or helper wrapper is installed otherwise.
 */
import * as fs from 'node:fs';
import type * as OtelApi from '@opentelemetry/api';
import type * as OtelSdk from '@opentelemetry/sdk-trace-base';
import type { ExportResult } from '@opentelemetry/core';
import { Code, StatusError, type OpName, type Ops } from '../shared/protocol';
import type { HelperCallResult, HelperConnection } from './helper';
import { silentLogger, type Logger } from '../shared/log';

/** Where spans go. */
export type TraceExporterSpec =
  | { kind: 'otlp'; url: string }
  | { kind: 'file'; path: string }
  | { kind: 'console' }
  | { kind: 'memory' };

/** Default exporter when tracing is on and none is configured (stdout, see the module comment). */
export const DEFAULT_TRACE_EXPORTER = 'console';

/**
 * Parse an exporter spec: `otlp:http(s)://…`, `file:/absolute/path`, `console` or `memory`.
 * Throws StatusError INVALID_ARGUMENT naming the value otherwise.
 */
export function parseTraceExporter(spec: string): TraceExporterSpec {
  if (spec === 'console' || spec === 'memory') return { kind: spec };
  if (spec.startsWith('otlp:')) {
    const url = spec.slice('otlp:'.length);
    let ok = false;
    try {
      ok = ['http:', 'https:'].includes(new URL(url).protocol);
    } catch {
      ok = false;
    }
    if (ok) return { kind: 'otlp', url };
  } else if (spec.startsWith('file:') && spec.slice(5).startsWith('/')) {
    return { kind: 'file', path: spec.slice(5) };
  }
  throw new StatusError(
    Code.INVALID_ARGUMENT,
    `invalid trace exporter ${JSON.stringify(spec)} (want otlp:http://host:port/v1/traces, file:/absolute/path, console or memory)`,
  );
}

/** The tracing of one agent (see the module comment). */
export interface Tracing {
  /**
   * Run `fn` inside a span for rpc `service/method`, parented on the W3C trace context of
   * `metadata` (ttRPC request metadata, keys matched case-insensitively); the span records the
   * gRPC status code (a non-StatusError counts as UNKNOWN) and ends when `fn` settles.
   */
  rpc<T>(service: string, method: string, metadata: Readonly<Record<string, string[]>>, fn: () => Promise<T>): Promise<T>;
  /** `helper` whose `call` opens a child span `helper <op>` of the current rpc span. */
  wrapHelper(helper: HelperConnection): HelperConnection;
  /** Spans ended so far (exporter `memory` only; [] otherwise). */
  finishedSpans(): OtelSdk.ReadableSpan[];
  /** Flush and stop the exporter. Never throws. */
  shutdown(): Promise<void>;
}

/** An OpenTelemetry HrTime ([seconds, nanoseconds]) as a decimal string of nanoseconds since the epoch (OTLP JSON's form). */
function nanos(t: OtelApi.HrTime): string {
  return `${t[0]}${String(t[1]).padStart(9, '0')}`;
}

/** A span exporter appending one JSON line per span to a file (opened on each export); the first failure is logged. */
function fileExporter(file: string, log: Logger): OtelSdk.SpanExporter {
  let warned = false;
  return {
    export(spans: OtelSdk.ReadableSpan[], done: (result: ExportResult) => void): void {
      const lines = spans.map((s) => {
        const ctx = s.spanContext();
        return JSON.stringify({
          traceId: ctx.traceId,
          spanId: ctx.spanId,
          parentSpanId: s.parentSpanContext?.spanId,
          name: s.name,
          startTimeUnixNano: nanos(s.startTime),
          endTimeUnixNano: nanos(s.endTime),
          status: s.status,
          attributes: s.attributes,
        });
      });
      fs.appendFile(file, lines.map((l) => `${l}\n`).join(''), (err) => {
        if (err && !warned) {
          warned = true;
          log.warn({ err, file }, 'cannot write spans to the trace file (further failures not logged)');
        }
        done({ code: err ? 1 : 0, error: err ?? undefined });
      });
    },
    shutdown: async () => undefined,
  };
}

/** Codes a span marks as an error (others, e.g. NOT_FOUND, are answers). */
function isError(code: number): boolean {
  return code === Code.INTERNAL || code === Code.UNKNOWN || code === Code.UNAVAILABLE || code === Code.DATA_LOSS;
}

/**
 * Start tracing with `spec`: loads the OpenTelemetry SDK, a tracer provider (service name
 * `kata-agent`) with a simple (memory, console) or batch (otlp, file) span processor, the W3C
 * TraceContext propagator and an AsyncLocalStorage context manager (not registered globally).
 * Export failures are logged on `log` (warn): the SDK's diag logger is pointed at it.
 */
export function startTracing(spec: TraceExporterSpec, log: Logger = silentLogger()): Tracing {
  /* eslint-disable @typescript-eslint/no-require-imports */
  const api = require('@opentelemetry/api') as typeof OtelApi;
  const sdk = require('@opentelemetry/sdk-trace-base') as typeof OtelSdk;
  const core = require('@opentelemetry/core') as typeof import('@opentelemetry/core');
  const hooks = require('@opentelemetry/context-async-hooks') as typeof import('@opentelemetry/context-async-hooks');
  const resources = require('@opentelemetry/resources') as typeof import('@opentelemetry/resources');
  let memory: OtelSdk.InMemorySpanExporter | undefined;
  let processor: OtelSdk.SpanProcessor;
  if (spec.kind === 'memory') {
    memory = new sdk.InMemorySpanExporter();
    processor = new sdk.SimpleSpanProcessor(memory);
  } else if (spec.kind === 'console') {
    processor = new sdk.SimpleSpanProcessor(new sdk.ConsoleSpanExporter());
  } else if (spec.kind === 'file') {
    processor = new sdk.BatchSpanProcessor(fileExporter(spec.path, log));
  } else {
    const otlp = require('@opentelemetry/exporter-trace-otlp-http') as typeof import('@opentelemetry/exporter-trace-otlp-http');
    processor = new sdk.BatchSpanProcessor(new otlp.OTLPTraceExporter({ url: spec.url }));
  }
  /* eslint-enable @typescript-eslint/no-require-imports */
  // The SDK reports export failures (e.g. an unreachable OTLP collector) through its diag logger.
  api.diag.setLogger(
    {
      error: (message: string, ...args: unknown[]) => log.warn({ args }, `opentelemetry: ${message}`),
      warn: (message: string, ...args: unknown[]) => log.warn({ args }, `opentelemetry: ${message}`),
      info: () => undefined,
      debug: () => undefined,
      verbose: () => undefined,
    },
    api.DiagLogLevel.WARN,
  );
  const provider = new sdk.BasicTracerProvider({
    resource: resources.resourceFromAttributes({ 'service.name': 'kata-agent' }),
    spanProcessors: [processor],
  });
  const tracer = provider.getTracer('kata-agent');
  const propagator = new core.W3CTraceContextPropagator();
  const contexts = new hooks.AsyncLocalStorageContextManager().enable();
  const getter: OtelApi.TextMapGetter<Readonly<Record<string, string[]>>> = {
    keys: (carrier) => Object.keys(carrier),
    get: (carrier, key) => {
      const found = Object.keys(carrier).find((k) => k.toLowerCase() === key);
      return found === undefined ? undefined : carrier[found].join(',');
    },
  };
  const settle = <T>(span: OtelApi.Span, run: () => Promise<T>): Promise<T> =>
    run().then(
      (value) => {
        span.end();
        return value;
      },
      (err: unknown) => {
        const code = err instanceof StatusError ? err.code : Code.UNKNOWN;
        span.setAttribute('rpc.grpc.status_code', code);
        if (isError(code)) span.setStatus({ code: api.SpanStatusCode.ERROR, message: (err as Error).message });
        span.end();
        throw err;
      },
    );

  return {
    rpc(service, method, metadata, fn) {
      const parent = propagator.extract(api.ROOT_CONTEXT, metadata, getter);
      const span = tracer.startSpan(
        `${service}/${method}`,
        { kind: api.SpanKind.SERVER, attributes: { 'rpc.system': 'ttrpc', 'rpc.service': service, 'rpc.method': method } },
        parent,
      );
      return contexts.with(api.trace.setSpan(parent, span), () =>
        settle(span, async () => {
          const value = await fn();
          span.setAttribute('rpc.grpc.status_code', Code.OK);
          return value;
        }),
      );
    },
    wrapHelper(helper) {
      return {
        call<K extends OpName>(op: K, args: Ops[K][0], opts?: { timeoutMs?: number }): Promise<HelperCallResult<K>> {
          const span = tracer.startSpan(`helper ${op}`, { kind: api.SpanKind.CLIENT, attributes: { 'helper.op': op } }, contexts.active());
          return settle(span, () => helper.call(op, args, opts));
        },
        on: (event: 'event' | 'close', listener: never) => helper.on(event as 'close', listener),
        off: (event: 'event' | 'close', listener: never) => helper.off(event as 'close', listener),
        close: () => helper.close(),
      } as HelperConnection;
    },
    finishedSpans: () => memory?.getFinishedSpans() ?? [],
    async shutdown() {
      try {
        await provider.shutdown();
      } catch {
        // an exporter that cannot flush must not stop the agent's exit
      }
      contexts.disable();
    },
  };
}
