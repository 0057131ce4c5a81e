/**
 * PauseContainer, ResumeContainer, UpdateContainer, StatsContainer, GetOOMEvent and GetMetrics
 * over the mock helper: the mock cgroup manager writes into a temp tree, where the test reads
 * what was written (freezer.state, memory.limit_in_bytes) and plants what the kernel would
 * report (cpuacct.usage, memory.oom_control's oom_kill counter).
 */
import t, { type Test } from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { buildDebugServer } from '../../control/debug/server';
import { cgroupStatsFromFiles } from '../../control/cgroup-stats';
import { startMockAgent, type MockAgent } from '../lib/mock-agent';
import { parsePromText } from '../lib/prom-text';
import { Code, StatusError } from '../../shared/protocol';
import { grpc } from '../../shared/generated/protos';

function oci(args: string[], resources?: grpc.LinuxResources.$Properties): grpc.Spec.$Properties {
  return {
    Version: '1.0.2',
    Root: { Path: '/run/kata-test/rootfs' },
    Process: { Args: args, Env: ['PATH=/usr/bin:/bin'], Cwd: '/' },
    Linux: { Namespaces: [{ Type: 'mount' }, { Type: 'pid' }], Resources: resources },
  };
}

async function expectCode(t: Test, p: Promise<unknown>, code: number, re?: RegExp): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof StatusError, `rejected with a status (${String(err)})`);
  t.equal((err as StatusError).code, code, (err as StatusError).message);
  if (re) t.match((err as StatusError).message, re);
}

/** The mock tree's directory of `ctrl` ("" = v2) for the container's cgroup "/<id>". */
function cgDir(h: MockAgent, ctrl: string, id: string): string {
  const layout = h.pair.backend.cgroups!.layout;
  return path.join(ctrl === '' ? layout.v2! : layout.v1[ctrl], id);
}

async function run(h: MockAgent, id: string): Promise<void> {
  await h.call('CreateContainer', { container_id: id, OCI: oci(['sleep', '1000']) });
  await h.call('StartContainer', { container_id: id });
}

t.test('PauseContainer / ResumeContainer drive the freezer and check the state', async (t) => {
  const h = await startMockAgent(t);
  await h.call('CreateContainer', { container_id: 'p1', OCI: oci(['sleep', '1000']) });
  await expectCode(t, h.call('PauseContainer', { container_id: 'p1' }), Code.FAILED_PRECONDITION, /created, not running/);
  await h.call('StartContainer', { container_id: 'p1' });
  const state = path.join(cgDir(h, 'freezer', 'p1'), 'freezer.state');
  await h.call('PauseContainer', { container_id: 'p1' });
  t.equal(fs.readFileSync(state, 'utf8'), 'FROZEN');
  await expectCode(t, h.call('PauseContainer', { container_id: 'p1' }), Code.FAILED_PRECONDITION, /paused, not running/);
  await h.call('ResumeContainer', { container_id: 'p1' });
  t.equal(fs.readFileSync(state, 'utf8'), 'THAWED');
  await expectCode(t, h.call('ResumeContainer', { container_id: 'p1' }), Code.FAILED_PRECONDITION, /not paused/);
  await expectCode(t, h.call('PauseContainer', { container_id: 'nope' }), Code.NOT_FOUND, /nope/);
  await expectCode(t, h.call('PauseContainer', { container_id: '../x' }), Code.INVALID_ARGUMENT);
  // a paused container can still be removed
  await h.call('PauseContainer', { container_id: 'p1' });
  await h.call('RemoveContainer', { container_id: 'p1', timeout: 5 });
  t.notOk(fs.existsSync(state), 'cgroup removed');
});

t.test('UpdateContainer writes new resources, validated as at create', async (t) => {
  const h = await startMockAgent(t);
  await run(h, 'u1');
  await h.call('UpdateContainer', { container_id: 'u1', resources: { Memory: { Limit: 64 << 20 }, Pids: { Limit: 42 }, BlockIO: { Weight: 300 } } });
  t.equal(fs.readFileSync(path.join(cgDir(h, 'memory', 'u1'), 'memory.limit_in_bytes'), 'utf8'), String(64 << 20));
  t.equal(fs.readFileSync(path.join(cgDir(h, 'pids', 'u1'), 'pids.max'), 'utf8'), '42');
  t.equal(fs.readFileSync(path.join(cgDir(h, 'blkio', 'u1'), 'blkio.weight'), 'utf8'), '300');
  await expectCode(t, h.call('UpdateContainer', { container_id: 'u1', resources: { CPU: { Shares: 1 } } }), Code.INVALID_ARGUMENT, /OCI\.Linux\.Resources\.CPU\.Shares/);
  await expectCode(t, h.call('UpdateContainer', { container_id: 'u1', resources: { CPU: { Cpus: '0-a' } } }), Code.INVALID_ARGUMENT, /Cpus/);
  await h.call('UpdateContainer', { container_id: 'u1' }); // no resources: nothing to do, as upstream
  await expectCode(t, h.call('UpdateContainer', { container_id: 'gone', resources: { Pids: { Limit: 1 } } }), Code.NOT_FOUND);
  // the helper re-validates on its own
  const bad = await h.pair.client.call('cgroupUpdate', { containerId: 'u1', resources: { pids: { limit: 'x' } } as never }).then(() => undefined, (e: unknown) => e as StatusError);
  t.equal(bad?.code, Code.INVALID_ARGUMENT, 'the helper refuses bad resources');
});

t.test('StatsContainer: cgroup figures from the files, network stats from the helper', async (t) => {
  const h = await startMockAgent(t);
  await run(h, 's1');
  fs.writeFileSync(path.join(cgDir(h, 'cpuacct', 's1'), 'cpuacct.usage'), '5000000000\n');
  fs.writeFileSync(path.join(cgDir(h, 'cpuacct', 's1'), 'cpuacct.usage_percpu'), '3000000000 2000000000 \n');
  fs.writeFileSync(path.join(cgDir(h, 'cpuacct', 's1'), 'cpuacct.stat'), 'user 300\nsystem 200\n');
  fs.writeFileSync(path.join(cgDir(h, 'cpu', 's1'), 'cpu.stat'), 'nr_periods 10\nnr_throttled 3\nthrottled_time 777\n');
  fs.writeFileSync(path.join(cgDir(h, 'memory', 's1'), 'memory.usage_in_bytes'), '1048576\n');
  fs.writeFileSync(path.join(cgDir(h, 'memory', 's1'), 'memory.failcnt'), '4\n');
  fs.writeFileSync(path.join(cgDir(h, 'memory', 's1'), 'memory.stat'), 'cache 4096\nrss 8192\n');
  fs.writeFileSync(path.join(cgDir(h, 'pids', 's1'), 'pids.current'), '2\n');
  fs.writeFileSync(path.join(cgDir(h, 'blkio', 's1'), 'blkio.throttle.io_service_bytes_recursive'), '8:0 Read 512\n8:0 Write 1024\nTotal 1536\n');
  const res = await h.call('StatsContainer', { container_id: 's1' });
  const cpu = res.cgroup_stats!.cpu_stats!;
  t.equal(Number(cpu.cpu_usage!.total_usage), 5e9);
  t.same(cpu.cpu_usage!.percpu_usage!.map(Number), [3e9, 2e9]);
  t.equal(Number(cpu.cpu_usage!.usage_in_usermode), 3e9, 'USER_HZ ticks → ns');
  t.equal(Number(cpu.throttling_data!.throttled_periods), 3);
  const mem = res.cgroup_stats!.memory_stats!;
  t.equal(Number(mem.usage!.usage), 1048576);
  t.equal(Number(mem.usage!.failcnt), 4);
  t.equal(Number(mem.cache), 4096);
  t.equal(Number(mem.stats!.rss), 8192);
  t.equal(Number(res.cgroup_stats!.pids_stats!.current), 2);
  t.same(res.cgroup_stats!.blkio_stats!.io_service_bytes_recursive!.map((e) => [e.op, Number(e.value)]), [['Read', 512], ['Write', 1024]]);
  t.same(res.network_stats!.map((n) => n.name), ['lo', 'eth0'], 'one entry per guest interface');
  await expectCode(t, h.call('StatsContainer', { container_id: 'nope' }), Code.NOT_FOUND);
});

t.test('cgroup v2 files: usec converted to ns, memory.current/max, io.stat', async (t) => {
  const s = cgroupStatsFromFiles({
    'cpu.stat': 'usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 4\nnr_throttled 1\nthrottled_usec 20',
    'memory.current': '2048',
    'memory.max': 'max',
    'memory.events': 'low 0\nhigh 0\nmax 7\noom 1\noom_kill 1',
    'memory.stat': 'anon 1024\nfile 512',
    'pids.current': '3',
    'pids.max': 'max',
    'io.stat': '8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0',
  });
  t.equal(Number(s.cpu_stats!.cpu_usage!.total_usage), 1_500_000);
  t.equal(Number(s.cpu_stats!.throttling_data!.throttled_time), 20_000);
  t.equal(Number(s.memory_stats!.usage!.usage), 2048);
  t.equal(Number(s.memory_stats!.usage!.failcnt), 7);
  t.equal(Number(s.memory_stats!.cache), 512);
  t.equal(Number(s.pids_stats!.limit), 0, 'max = no limit');
  t.same(s.blkio_stats!.io_serviced_recursive!.map((e) => Number(e.value)), [1, 2]);
  t.same(cgroupStatsFromFiles({ 'cpuacct.usage': 'garbage', 'pids.current': '-5' }).pids_stats, { current: 0, limit: 0 }, 'junk is 0, never a throw');
});

/** Varint bytes of a uint64 field `no` as protobuf encodes them (hex, tag included). */
function u64Field(no: number, v: bigint): string {
  const out = [no << 3];
  for (let x = v; ; ) {
    const b = Number(x & 0x7fn);
    x >>= 7n;
    if (x === 0n) {
      out.push(b);
      break;
    }
    out.push(b | 0x80);
  }
  return Buffer.from(out).toString('hex');
}

t.test('uint64 figures beyond 2^53 are exact on the wire: v1 "no limit", v2 "max", junk', async (t) => {
  const v1 = cgroupStatsFromFiles({
    'memory.usage_in_bytes': '4096',
    'memory.limit_in_bytes': '9223372036854771712',
    'memory.stat': 'cache 5\nhierarchical_memory_limit 9223372036854771712',
  });
  const usage = Buffer.from(grpc.MemoryData.encode(v1.memory_stats!.usage!).finish()).toString('hex');
  t.ok(usage.includes(u64Field(4, 9223372036854771712n)), 'v1 no-limit value encoded as the kernel wrote it');
  t.ok(usage.includes(u64Field(1, 4096n)), 'usage');
  const stats = Buffer.from(grpc.MemoryStats.encode(v1.memory_stats!).finish()).toString('hex');
  t.ok(stats.includes(u64Field(2, 9223372036854771712n)), 'memory.stat map value exact too');
  const v2 = cgroupStatsFromFiles({ 'memory.current': '1', 'memory.max': 'max' });
  const v2hex = Buffer.from(grpc.MemoryData.encode(v2.memory_stats!.usage!).finish()).toString('hex');
  t.ok(v2hex.includes(u64Field(4, 2n ** 64n - 1n)), 'v2 max is 2^64-1 (containerd cgroup v2 stats)');
  const junk = cgroupStatsFromFiles({ 'memory.usage_in_bytes': '99999999999999999999999', 'memory.limit_in_bytes': '1e3' });
  t.equal(String(junk.memory_stats!.usage!.usage), '0', 'over 2^64-1 is 0');
  t.equal(String(junk.memory_stats!.usage!.limit), '0', 'non-decimal is 0');
});

/** Set the mock tree's oom_kill counter of `id` (what the kernel counts in memory.oom_control). */
function setOomKills(h: MockAgent, id: string, n: number): void {
  fs.writeFileSync(path.join(cgDir(h, 'memory', id), 'memory.oom_control'), `oom_kill_disable 0\nunder_oom 0\noom_kill ${n}\n`);
}

t.test('GetOOMEvent: each OOM kill delivered once, queued while nobody asks, waiters released', async (t) => {
  const h = await startMockAgent(t);
  await run(h, 'o1');
  await run(h, 'o2');
  // nobody waiting: the event is queued in control and taken by a later call
  setOomKills(h, 'o1', 1);
  const first = await h.call('GetOOMEvent', {});
  t.equal(first.container_id, 'o1');
  // exactly once: the next call gets nothing until a new kill
  await expectCode(t, h.call('GetOOMEvent', {}, { timeoutNs: 600e6 }), Code.DEADLINE_EXCEEDED);
  // a waiter whose call ended takes nothing: the event goes to the next caller
  await expectCode(t, h.call('GetOOMEvent', {}, { timeoutNs: 50e6 }), Code.DEADLINE_EXCEEDED);
  const waiting = h.call('GetOOMEvent', {});
  setOomKills(h, 'o2', 1);
  t.equal((await waiting).container_id, 'o2');
  t.equal(h.agent.service.core.oomWaiters.length, 0, 'no waiter left behind');
  // two kills in two containers before anyone asks: both delivered, in order
  setOomKills(h, 'o1', 2);
  await new Promise((r) => setTimeout(r, 500));
  setOomKills(h, 'o2', 3);
  const a = await h.call('GetOOMEvent', {});
  const b = await h.call('GetOOMEvent', {});
  t.same([a.container_id, b.container_id], ['o1', 'o2']);
});

t.test('GetMetrics: Prometheus text with agent, guest, per-rpc and container families', async (t) => {
  const h = await startMockAgent(t);
  await run(h, 'm1');
  await h.call('PauseContainer', { container_id: 'm1' });
  await h.call('ResumeContainer', { container_id: 'm1' });
  await expectCode(t, h.call('ResumeContainer', { container_id: 'm1' }), Code.FAILED_PRECONDITION);
  fs.writeFileSync(path.join(cgDir(h, 'cpuacct', 'm1'), 'cpuacct.usage'), '2500000000');
  const { metrics } = await h.call('GetMetrics', {});
  const families = parsePromText(metrics);
  for (const name of [
    'kata_agent_scrape_count', 'kata_agent_threads', 'kata_agent_total_rss', 'kata_agent_total_time', 'kata_agent_fds',
    'kata_agent_control_process_cpu_seconds_total', 'kata_guest_load', 'kata_guest_meminfo', 'kata_guest_cpu_time',
    'kata_guest_netdev_stat', 'kata_agent_rpc_requests_total', 'kata_agent_rpc_duration_seconds', 'kata_agent_container_cpu_seconds_total',
  ]) {
    t.ok(families.has(name), `family ${name}`);
  }
  const threads = families.get('kata_agent_threads')!.samples;
  t.same(threads.map((s) => s.labels.process).sort(), ['control', 'helper'], 'control and helper figures');
  t.ok(threads.every((s) => s.value >= 1));
  const rpc = families.get('kata_agent_rpc_requests_total')!.samples;
  const count = (method: string, code: string): number => rpc.find((s) => s.labels.method === method && s.labels.code === code)?.value ?? 0;
  t.equal(count('PauseContainer', '0'), 1);
  t.equal(count('ResumeContainer', '0'), 1);
  t.equal(count('ResumeContainer', String(Code.FAILED_PRECONDITION)), 1);
  t.ok(families.get('kata_agent_rpc_duration_seconds')!.samples.some((s) => s.name === 'kata_agent_rpc_duration_seconds_count' && s.labels.method === 'StartContainer'));
  t.same(families.get('kata_agent_container_cpu_seconds_total')!.samples.map((s) => [s.labels.container, s.value]), [['m1', 2.5]]);
  t.ok(families.get('kata_guest_meminfo')!.samples.some((s) => s.labels.item === 'mem_total' && s.value > 0), 'guest MemTotal in bytes');

  const app = buildDebugServer(h.agent.sandbox, { metrics: h.agent.service.metrics });
  t.teardown(() => app.close());
  const res = await app.inject({ method: 'GET', url: '/metrics' });
  t.equal(res.statusCode, 200);
  t.match(res.headers['content-type'], /text\/plain/);
  t.ok(parsePromText(res.body).has('kata_guest_load'), 'the debug endpoint serves the same text');
});

t.test('the strict text check refuses malformed exposition', async (t) => {
  t.throws(() => parsePromText('x 1\n'), /undeclared/);
  t.throws(() => parsePromText('# TYPE x gauge\nx{a=b} 1\n'), /bad labels/);
  t.throws(() => parsePromText('# TYPE x gauge\nx one\n'), /bad value/);
  t.throws(() => parsePromText('# TYPE x gauge\nx 1'), /newline/);
});

t.test('a reused cgroup dir with an old oom_kill count gives no event', async (t) => {
  const h = await startMockAgent(t);
  fs.mkdirSync(cgDir(h, 'memory', 'old1'), { recursive: true });
  setOomKills(h, 'old1', 5);
  await run(h, 'old1');
  await expectCode(t, h.call('GetOOMEvent', {}, { timeoutNs: 600e6 }), Code.DEADLINE_EXCEEDED);
  setOomKills(h, 'old1', 6);
  t.equal((await h.call('GetOOMEvent', {})).container_id, 'old1', 'a new kill is reported');
});
