// control/tracing.ts: with tracing on, an rpc whose ttRPC metadata carries a W3C traceparent
// (as the Kata runtime's client.go inject() sends it) gets a server span in that trace, with a
// child span for the helper op it caused; with tracing off nothing of OpenTelemetry is loaded.
import t from 'tap';
import { parseTraceExporter, startTracing } from '../../control/tracing';
import { loadConfig } from '../../control/config';
import { Code, StatusError } from '../../shared/protocol';
import { startMockAgent } from '../lib/mock-agent';

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT_SPAN = '00f067aa0ba902b7';
const TRACEPARENT = `00-${TRACE_ID}-${PARENT_SPAN}-01`;

const sdkLoaded = (): boolean => Object.keys(require.cache).some((k) => k.includes('@opentelemetry/sdk-trace-base'));

// First, in this fresh process: an agent without tracing serves rpcs without loading the SDK.
t.test('tracing off: no OpenTelemetry SDK loaded, rpcs served', async (t) => {
  const h = await startMockAgent(t, { prefix: 'kata-trace-off-' });
  const r = await h.call('GetGuestDetails', { mem_block_size: true }, { metadata: { traceparent: TRACEPARENT } });
  t.ok(r.agent_details, 'answered');
  t.equal(sdkLoaded(), false, 'the SDK was never required');
});

t.test('tracing on: the rpc span continues the runtime trace; the helper op is its child', async (t) => {
  const tracing = startTracing({ kind: 'memory' });
  t.teardown(() => tracing.shutdown());
  const h = await startMockAgent(t, { prefix: 'kata-trace-on-', agent: () => ({ tracing }) });
  await h.call('GetGuestDetails', { mem_block_size: true }, { metadata: { traceparent: TRACEPARENT } });
  const spans = tracing.finishedSpans();
  const rpc = spans.find((s) => s.name === 'grpc.AgentService/GetGuestDetails');
  const op = spans.find((s) => s.name === 'helper memoryInfo');
  t.ok(rpc, 'rpc span');
  t.ok(op, 'helper op span');
  if (!rpc || !op) return;
  t.equal(rpc.spanContext().traceId, TRACE_ID, 'rpc span in the runtime trace');
  t.equal(rpc.parentSpanContext?.spanId, PARENT_SPAN, 'parent: the runtime span');
  t.equal(rpc.attributes['rpc.grpc.status_code'], Code.OK);
  t.equal(op.spanContext().traceId, TRACE_ID, 'helper span in the same trace');
  t.equal(op.parentSpanContext?.spanId, rpc.spanContext().spanId, 'helper span is a child of the rpc span');

  // Without metadata: a new trace (root span), still one per rpc.
  await h.call('Check', {});
  const check = tracing.finishedSpans().find((s) => s.name === 'grpc.Health/Check');
  t.ok(check, 'Health span');
  t.not(check?.spanContext().traceId, TRACE_ID, 'a fresh trace');
  t.equal(check?.parentSpanContext, undefined, 'root span');

  // A failing rpc records its status code.
  await t.rejects(h.call('RemoveContainer', { container_id: 'nope' }), StatusError);
  const failed = tracing.finishedSpans().find((s) => s.name === 'grpc.AgentService/RemoveContainer');
  t.equal(failed?.attributes['rpc.grpc.status_code'], Code.NOT_FOUND);
});

// Adversarial review 6: a client (any allowed peer) controls the metadata. Malformed, giant,
// repeated or injected traceparent/tracestate values must neither fail the rpc nor graft the
// span onto a trace the value does not validly name, nor carry oversized state.
t.test('crafted traceparent / tracestate metadata: rpc served, span is a root span or bounded', async (t) => {
  const tracing = startTracing({ kind: 'memory' });
  t.teardown(() => tracing.shutdown());
  const h = await startMockAgent(t, { prefix: 'kata-trace-bad-', agent: () => ({ tracing }) });
  const bad: Record<string, string | string[]>[] = [
    { traceparent: `00-${'0'.repeat(32)}-${PARENT_SPAN}-01` }, // all-zero trace id
    { traceparent: `00-${TRACE_ID}-${'0'.repeat(16)}-01` }, // all-zero span id
    { traceparent: `ff-${TRACE_ID}-${PARENT_SPAN}-01` }, // forbidden version
    { traceparent: `00-${TRACE_ID}-${PARENT_SPAN}-01\r\nx-injected: 1` },
    { traceparent: `00-${TRACE_ID}-${PARENT_SPAN}-01-${'a'.repeat(1 << 20)}` }, // 1 MiB
    { traceparent: [TRACEPARENT, `00-${'1'.repeat(32)}-${PARENT_SPAN}-01`] }, // two values: ambiguous
    { TraceParent: `00-${TRACE_ID.toUpperCase()}-${PARENT_SPAN}-01` }, // upper-case hex
  ];
  for (const [i, metadata] of bad.entries()) {
    const r = await h.call('GetGuestDetails', { mem_block_size: true }, { metadata });
    t.ok(r.agent_details, `case ${i}: answered`);
    const span = tracing.finishedSpans().filter((s) => s.name === 'grpc.AgentService/GetGuestDetails').at(-1);
    t.equal(span?.parentSpanContext, undefined, `case ${i}: a root span, not a child of the crafted parent`);
    t.not(span?.spanContext().traceId, TRACE_ID, `case ${i}: not in the crafted trace`);
  }
  // a valid parent with a giant tracestate: the trace is continued, the state is not kept whole
  const giant = Array.from({ length: 5000 }, (_, i) => `k${i}=${'v'.repeat(200)}`).join(',');
  await h.call('GetGuestDetails', { mem_block_size: true }, { metadata: { traceparent: TRACEPARENT, tracestate: giant } });
  const span = tracing.finishedSpans().filter((s) => s.name === 'grpc.AgentService/GetGuestDetails').at(-1);
  t.equal(span?.spanContext().traceId, TRACE_ID, 'a valid traceparent is still honoured');
  const state = span?.spanContext().traceState?.serialize() ?? '';
  t.ok(state.length <= 512, `tracestate kept bounded (${state.length} chars of ${giant.length})`);
});

t.test('exporter specs and the tracing flags', async (t) => {
  t.same(parseTraceExporter('otlp:http://127.0.0.1:4318/v1/traces'), { kind: 'otlp', url: 'http://127.0.0.1:4318/v1/traces' });
  t.same(parseTraceExporter('file:/tmp/spans.jsonl'), { kind: 'file', path: '/tmp/spans.jsonl' });
  t.same(parseTraceExporter('console'), { kind: 'console' });
  for (const bad of ['vsock://2:10240', 'otlp:ftp://x', 'file:relative', 'jaeger']) {
    t.throws(() => parseTraceExporter(bad), { code: Code.INVALID_ARGUMENT, message: new RegExp(JSON.stringify(bad).replace(/[/.:]/g, '.')) }, bad);
  }
  const c = loadConfig(['--trace', '--trace-exporter', 'file:/tmp/x.jsonl'], {}, { cmdline: '' });
  t.match(c, { help: false, config: { tracing: true, traceExporter: 'file:/tmp/x.jsonl' } });
  t.match(loadConfig([], { KATA_AGENT_TRACE_EXPORTER: 'console' }, { cmdline: 'agent.trace' }), { config: { tracing: true, traceExporter: 'console' } });
  t.throws(() => loadConfig(['--trace-exporter', 'nope'], {}, { cmdline: '' }), { code: Code.INVALID_ARGUMENT });
});
