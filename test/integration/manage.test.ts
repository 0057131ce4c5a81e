// Running containers through the real ttRPC API (real helper, busybox rootfs, real cgroups):
// PauseContainer stops a counter loop and ResumeContainer lets it go on; UpdateContainer lowers
// the memory limit so that a dd into tmpfs is OOM-killed and GetOOMEvent names the container
// once; StatsContainer shows the cpu time of a busy loop growing; GetMetrics is valid
// Prometheus text with the agent (control and helper), guest, per-rpc and container families.
import t from 'tap';
import * as fs from 'node:fs';
import { AgentHarness, Code, expectCode, skipReason, eventually, sleep } from './lib/agent-harness';
import { detectCgroupLayout } from '../../helper/ops/cgroup';
import { parsePromText } from '../lib/prom-text';

const MiB = 1024 * 1024;
const layout = detectCgroupLayout();
const TMPFS = { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'size=256m'] };

/** The counter the container writes into its /tmp, read through /proc/<pid>/root; -1 when not there yet. */
function counter(pid: number): number {
  try {
    const n = Number(fs.readFileSync(`/proc/${pid}/root/tmp/c`, 'utf8').trim());
    return Number.isFinite(n) ? n : -1;
  } catch {
    return -1;
  }
}

const skip = skipReason() ?? (layout.mode === 'none' ? 'no cgroup filesystem mounted' : undefined);
if (skip) {
  t.plan(0, skip);
} else {
  const h = new AgentHarness('manage');
  t.test('running containers', async (t) => {
    await h.start('mg');
    t.teardown(() => h.dispose());
    t.afterEach(async (tt) => {
      if (!tt.passing()) tt.comment(h.logs());
    });

    await t.test('PauseContainer freezes a counter loop, ResumeContainer lets it go on', async (t) => {
      const id = await h.run(t, ['sh', '-c', 'i=0; while true; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/c; sleep 0.05; done'], { mounts: [TMPFS] });
      const pid = await h.hostPid(id);
      t.ok(await eventually(() => counter(pid) > 2, 10_000), 'the counter advances');
      await h.client.call('PauseContainer', { container_id: id });
      const frozenAt = counter(pid);
      if (layout.v1.freezer) t.equal(fs.readFileSync(`${layout.v1.freezer}/${id}/freezer.state`, 'utf8').trim(), 'FROZEN');
      await sleep(600);
      t.equal(counter(pid), frozenAt, 'a paused container does not advance');
      await expectCode(t, h.client.call('PauseContainer', { container_id: id }), Code.FAILED_PRECONDITION, 'pause twice');
      await h.client.call('ResumeContainer', { container_id: id });
      t.ok(await eventually(() => counter(pid) > frozenAt + 2, 10_000), 'the counter advances again after resume');
      await expectCode(t, h.client.call('ResumeContainer', { container_id: id }), Code.FAILED_PRECONDITION, 'resume a running one');
      // a paused container is removed all the same
      await h.client.call('PauseContainer', { container_id: id });
      await h.client.call('RemoveContainer', { container_id: id, timeout: 10 });
      t.notOk(fs.existsSync(`/proc/${pid}`) && !fs.readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z'), 'the paused init is gone');
    });

    await t.test('UpdateContainer lowers the memory limit: dd into tmpfs is OOM-killed, GetOOMEvent names the container once', async (t) => {
      const id = await h.run(t, ['sleep', '1000'], { mounts: [TMPFS] });
      await h.client.call('UpdateContainer', { container_id: id, resources: { Memory: { Limit: 16 * MiB, Swap: 16 * MiB } } });
      const memDir = layout.v1.memory ? `${layout.v1.memory}/${id}` : `${layout.v2}/${id}`;
      t.equal(fs.readFileSync(`${memDir}/${layout.v1.memory ? 'memory.limit_in_bytes' : 'memory.max'}`, 'utf8').trim(), String(16 * MiB), 'the new limit is in the cgroup');
      const { status } = await h.execCollect(id, ['dd', 'if=/dev/zero', 'of=/tmp/fill', 'bs=1M', 'count=64']);
      t.equal(status, 137, 'dd was killed by the OOM killer');
      const ev = await h.client.call('GetOOMEvent', {}, { timeoutNs: 10e9 });
      t.equal(ev.container_id, id, 'GetOOMEvent names the container');
      await expectCode(t, h.client.call('GetOOMEvent', {}, { timeoutNs: 1e9 }), Code.DEADLINE_EXCEEDED, 'no second event for the same kill');
      await expectCode(t, h.client.call('UpdateContainer', { container_id: id, resources: { CPU: { Cpus: '4095' } } }), Code.INVALID_ARGUMENT, 'a cpuset the kernel refuses');
    });

    await t.test('StatsContainer shows the cpu time of a busy loop growing', async (t) => {
      const id = await h.run(t, ['sh', '-c', 'while :; do :; done']);
      const usage = async (): Promise<number> => Number((await h.client.call('StatsContainer', { container_id: id })).cgroup_stats!.cpu_stats!.cpu_usage!.total_usage);
      const first = await usage();
      let later = first;
      await sleep(300);
      for (let i = 0; i < 50 && later <= first + 1e8; i++) {
        await sleep(100);
        later = await usage();
      }
      t.ok(later > first + 1e8, `cpu time grew by more than 0.1 s (${first} → ${later} ns)`);
      const res = await h.client.call('StatsContainer', { container_id: id });
      t.ok(Number(res.cgroup_stats!.pids_stats!.current) >= 1, 'pids');
      t.ok(Number(res.cgroup_stats!.memory_stats!.usage!.usage) > 0, 'memory usage');
      t.ok(res.network_stats!.some((n) => n.name === 'lo'), 'network stats of the guest interfaces');
      await h.client.call('RemoveContainer', { container_id: id, timeout: 10 });
    });

    await t.test('GetMetrics is valid Prometheus text with the agent, guest, per-rpc and container families', async (t) => {
      const id = await h.run(t, ['sleep', '1000']);
      const { metrics } = await h.client.call('GetMetrics', {});
      const f = parsePromText(metrics);
      for (const name of ['kata_agent_threads', 'kata_agent_total_rss', 'kata_agent_control_process_cpu_seconds_total', 'kata_guest_meminfo', 'kata_guest_cpu_time', 'kata_guest_diskstat', 'kata_guest_netdev_stat', 'kata_agent_rpc_requests_total', 'kata_agent_rpc_duration_seconds', 'kata_agent_container_memory_usage_bytes']) {
        t.ok(f.has(name), name);
      }
      t.ok(f.get('kata_agent_total_rss')!.samples.some((s) => s.labels.process === 'helper' && s.value > 0), 'the helper process figures');
      t.ok(f.get('kata_agent_rpc_requests_total')!.samples.some((s) => s.labels.method === 'StartContainer' && s.value >= 1), 'per-rpc counter');
      t.ok(f.get('kata_agent_container_memory_usage_bytes')!.samples.some((s) => s.labels.container === id && s.value > 0), 'per-container figure');
    });
  });
}
