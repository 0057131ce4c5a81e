// Container cgroups through the real ttRPC API (real helper, busybox rootfs): the values the
// spec asks for are in the container's cgroup files, the init and exec processes are in the
// cgroup, a memory limit OOM-kills, pids.max stops a fork loop, RemoveContainer kills a
// grandchild in the shared sandbox pid namespace and removes the cgroup dirs.
// Every cgroup is made below /kata-cgtest-<pid> in each hierarchy, removed at the end even on failure.
import t, { type Test } from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AgentHarness, Code, expectCode, skipReason, eventually } from './lib/agent-harness';
import { detectCgroupLayout } from '../../helper/ops/cgroup';
import type { grpc } from '../../shared/generated/protos';

const PARENT = `kata-cgtest-${process.pid}`;
const MiB = 1024 * 1024;

const layout = detectCgroupLayout();
/** Directory of `rel` in the hierarchy of v1 controller `ctrl` (v2: the unified mount). */
function dirOf(ctrl: string, rel: string): string {
  const mp = layout.v1[ctrl] ?? layout.v2;
  if (!mp) throw new Error(`no hierarchy for ${ctrl}`);
  return path.join(mp, rel);
}
function read(file: string): string {
  return fs.readFileSync(file, 'utf8').trim();
}
/**
 * Assert that `procCgroup` (a /proc/<pid>/cgroup text) puts the process at /`rel` in every
 * hierarchy the helper manages, v1 and v2 (kata-init is born in the v2 cgroup by clone3
 * CLONE_INTO_CGROUP and moves itself into the v1 ones: `cgroupjoin`).
 */
function assertEveryHierarchy(t: Test, procCgroup: string, rel: string, who: string): void {
  for (const ctrl of Object.keys(layout.v1)) {
    t.match(procCgroup, new RegExp(`^[0-9]+:([^:]*,)?${ctrl}(,[^:]*)?:/${rel}$`, 'm'), `${who} is in the ${ctrl} cgroup`);
  }
  if (layout.v2) t.match(procCgroup, new RegExp(`^0::/${rel}$`, 'm'), `${who} is in the v2 cgroup`);
}
/** Every directory the test may have left: <mount>/<PARENT>/** (children first). */
function cleanupCgroups(): void {
  const mounts = new Set([...Object.values(layout.v1), ...(layout.v2 ? [layout.v2] : [])]);
  for (const mp of mounts) {
    const top = path.join(mp, PARENT);
    const rm = (d: string): void => {
      if (!fs.existsSync(d)) return;
      for (const e of fs.readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) rm(path.join(d, e.name));
      try {
        fs.rmdirSync(d);
      } catch {
        // busy: reported by the tests
      }
    };
    rm(top);
  }
}
/** Host pids whose cmdline is exactly `args` and whose environment has `mark`. */
function pidsRunning(args: string[], mark: string): number[] {
  const out: number[] = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (fs.readFileSync(`/proc/${p}/cmdline`, 'utf8') !== args.join('\0') + '\0') continue;
      if (!fs.readFileSync(`/proc/${p}/environ`, 'utf8').split('\0').includes(mark)) continue;
      out.push(Number(p));
    } catch {
      // gone
    }
  }
  return out;
}
/** Alive and not a zombie. */
function running(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

const skip = skipReason() ?? (layout.mode === 'none' ? 'no cgroup filesystem mounted' : undefined);
if (skip) {
  t.plan(0, skip);
} else {
  const h = new AgentHarness('cgroups');
  t.teardown(cleanupCgroups);
  t.test('container cgroups', async (t) => {
    await h.start('cg');
    t.teardown(() => h.dispose());
    t.afterEach(async (tt) => {
      if (!tt.passing()) tt.comment(h.logs());
    });

    /** CreateContainer with resources and a cgroup path below PARENT; returns the id and the relative path. */
    const create = async (t: Parameters<typeof h.create>[0], args: string[], resources: grpc.LinuxResources.$Properties) => {
      const id = h.id('cg');
      const rel = `${PARENT}/${id}`;
      const spec = h.spec(args);
      spec.Linux!.CgroupsPath = `/${rel}`;
      spec.Linux!.Resources = resources;
      h.removeOnTeardown(t, id);
      await h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec });
      return { id, rel };
    };

    await t.test('memory, cpu and pids values are in the cgroup files; init and exec are in the cgroup; RemoveContainer removes the dirs', async (t) => {
      const { id, rel } = await create(t, ['sleep', '1000'], {
        Memory: { Limit: 64 * MiB },
        CPU: { Quota: 50000, Period: 100000, Shares: 512 },
        Pids: { Limit: 32 },
      });
      // Placed before it runs: the parked init is already in the cgroup.
      const pid = await h.hostPid(id);
      t.match(read(`/proc/${pid}/cgroup`), new RegExp(`memory:/${rel}$`, 'm'), 'created (parked) init is in the memory cgroup');
      assertEveryHierarchy(t, read(`/proc/${pid}/cgroup`), rel, 'the parked init');
      await h.client.call('StartContainer', { container_id: id });
      if (layout.v1.memory) t.equal(read(path.join(dirOf('memory', rel), 'memory.limit_in_bytes')), String(64 * MiB), 'memory.limit_in_bytes');
      else t.equal(read(path.join(dirOf('memory', rel), 'memory.max')), String(64 * MiB), 'memory.max');
      if (layout.v1.cpu) {
        t.equal(read(path.join(dirOf('cpu', rel), 'cpu.cfs_quota_us')), '50000', 'cpu.cfs_quota_us');
        t.equal(read(path.join(dirOf('cpu', rel), 'cpu.shares')), '512', 'cpu.shares');
      } else {
        t.equal(read(path.join(dirOf('cpu', rel), 'cpu.max')), '50000 100000', 'cpu.max');
      }
      t.equal(read(path.join(dirOf('pids', rel), 'pids.max')), '32', 'pids.max');
      t.ok(read(path.join(dirOf('pids', rel), 'cgroup.procs')).split('\n').includes(String(pid)), 'init pid in cgroup.procs');

      const { stdout, status } = await h.execCollect(id, ['cat', '/proc/self/cgroup']);
      t.equal(status, 0);
      t.match(stdout.toString(), new RegExp(`pids:/${rel}$`, 'm'), 'an exec process is in the container cgroup (pids)');
      if (layout.v2) t.match(stdout.toString(), new RegExp(`^0::/${rel}$`, 'm'), 'and in the v2 cgroup');
      assertEveryHierarchy(t, stdout.toString(), rel, 'an exec process');

      const stats = await h.client.call('RemoveContainer', { container_id: id, timeout: 10 });
      t.ok(stats !== undefined);
      for (const ctrl of ['memory', 'cpu', 'pids']) t.notOk(fs.existsSync(dirOf(ctrl, rel)), `${ctrl} cgroup dir removed`);
      if (layout.v2) t.notOk(fs.existsSync(path.join(layout.v2, rel)), 'v2 cgroup dir removed');
    });

    await t.test('a memory limit OOM-kills the init (exit 137)', async (t) => {
      const { id } = await create(t, ['sh', '-c', 'a=$(head -c 268435456 /dev/zero | tr "\\0" a); echo survived ${#a}'], {
        Memory: { Limit: 32 * MiB, Swap: 32 * MiB },
      });
      await h.client.call('StartContainer', { container_id: id });
      const [out] = await Promise.all([h.readAll('ReadStdout', id, id), h.readAll('ReadStderr', id, id)]);
      t.equal(await h.wait(id, id), 137, 'killed by SIGKILL (the OOM killer)');
      t.notMatch(out.toString(), /survived/);
    });

    await t.test('a memory limit OOM-kills a dd into a tmpfs (tmpfs pages are charged to the container)', async (t) => {
      const id = h.id('cg');
      const spec = h.spec(['sh', '-c', 'dd if=/dev/zero of=/scratch/f bs=1M count=128 2>/dev/null; echo dd-status:$?'], {
        mounts: [{ destination: '/scratch', type: 'tmpfs', source: 'tmpfs', options: ['size=256m'] }],
      });
      spec.Linux!.CgroupsPath = `/${PARENT}/${id}`;
      spec.Linux!.Resources = { Memory: { Limit: 32 * MiB, Swap: 32 * MiB } };
      h.removeOnTeardown(t, id);
      await h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec });
      await h.client.call('StartContainer', { container_id: id });
      const [out] = await Promise.all([h.readAll('ReadStdout', id, id), h.readAll('ReadStderr', id, id)]);
      const status = await h.wait(id, id);
      t.ok(status === 137 || /dd-status:137/.test(out.toString()), `dd (or the shell) was SIGKILLed by the OOM killer (exit ${status}, output ${JSON.stringify(out.toString())})`);
      t.notMatch(out.toString(), /dd-status:0/, 'dd did not write its 128 MiB');
    });

    await t.test('pids.max stops a fork loop', async (t) => {
      const { id, rel } = await create(t, ['sh', '-c', 'i=0; while [ $i -lt 40 ]; do sleep 1000 & i=$((i+1)); done; echo forked'], {
        Pids: { Limit: 8 },
      });
      await h.client.call('StartContainer', { container_id: id });
      const [out, err] = await Promise.all([h.readAll('ReadStdout', id, id), h.readAll('ReadStderr', id, id)]);
      t.not(await h.wait(id, id), 0, 'the shell failed');
      t.match(err.toString(), /can't fork|Resource temporarily unavailable/, `the shell saw fork fail (${err.toString().trim()})`);
      t.notMatch(out.toString(), /forked/, 'the loop did not complete');
      t.equal(read(path.join(dirOf('pids', rel), 'pids.max')), '8');
      await h.client.call('RemoveContainer', { container_id: id, timeout: 10 });
      t.notOk(fs.existsSync(dirOf('pids', rel)), 'cgroup removed');
    });

    await t.test('a grandchild in the shared sandbox pid namespace is gone after RemoveContainer', async (t) => {
      // The sandbox pid namespace is the first container's: a fresh agent for this test.
      const h2 = new AgentHarness('cgroups-pidns');
      t.teardown(() => h2.dispose());
      await h2.start('cg2');
      const owner = await h2.run(t, ['sleep', '1000']);
      const id = h2.id('cg');
      const rel = `${PARENT}/${id}`;
      const spec = h2.spec(['sh', '-c', '(sleep 1001 &); sleep 1002']);
      spec.Linux!.CgroupsPath = `/${rel}`;
      h2.removeOnTeardown(t, id);
      await h2.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec, sandbox_pidns: true });
      await h2.client.call('StartContainer', { container_id: id });
      let grand: number[] = [];
      t.ok(await eventually(() => (grand = pidsRunning(['sleep', '1001'], h2.mark)).length === 1, 10_000), 'the grandchild runs');
      t.match(read(`/proc/${grand[0]}/cgroup`), new RegExp(`pids:/${rel}$`, 'm'), 'in the container cgroup');
      await h2.client.call('RemoveContainer', { container_id: id, timeout: 10 });
      t.notOk(running(grand[0]), `grandchild ${grand[0]} killed`);
      t.notOk(fs.existsSync(dirOf('pids', rel)), 'cgroup removed');
      t.ok(running(await h2.hostPid(owner)), 'the sandbox pid namespace owner still runs');
    });

    await t.test('a bad cgroupsPath or resource is INVALID_ARGUMENT naming the field; nothing is left', async (t) => {
      for (const [cpath, res, field] of [
        ['/../etc', {}, 'OCI.Linux.CgroupsPath'],
        ['/', {}, 'OCI.Linux.CgroupsPath'],
        [`/${PARENT}/bad-shares`, { CPU: { Shares: 1 } }, 'OCI.Linux.Resources.CPU.Shares'],
        [`/${PARENT}/bad-cpus`, { CPU: { Cpus: '0-1;rm' } }, 'OCI.Linux.Resources.CPU.Cpus'],
        [`/${PARENT}/bad-hugepage`, { HugepageLimits: [{ Pagesize: '../x', Limit: 1 }] }, 'OCI.Linux.Resources.HugepageLimits[0].Pagesize'],
      ] as const) {
        const spec = h.spec(['true']);
        spec.Linux!.CgroupsPath = cpath;
        spec.Linux!.Resources = res as grpc.LinuxResources.$Properties;
        const id = h.id('bad');
        h.removeOnTeardown(t, id);
        const err = await expectCode(t, h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec }), Code.INVALID_ARGUMENT, `${cpath} ${JSON.stringify(res)}`);
        t.match(err?.message ?? '', field);
      }
      t.notOk(fs.existsSync(dirOf('cpu', `${PARENT}/bad-shares`)), 'no dir left');
    });

    await t.test('a cpuset the kernel refuses is INVALID_ARGUMENT and leaves no cgroup', async (t) => {
      const spec = h.spec(['true']);
      const id = h.id('cpuset');
      spec.Linux!.CgroupsPath = `/${PARENT}/${id}`;
      spec.Linux!.Resources = { CPU: { Cpus: '4095' } };
      h.removeOnTeardown(t, id);
      const err = await expectCode(t, h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec }), Code.INVALID_ARGUMENT, 'cpus 4095');
      t.match(err?.message ?? '', 'OCI.Linux.Resources.CPU.Cpus');
      t.notOk(fs.existsSync(dirOf('cpuset', `${PARENT}/${id}`)), 'no dir left');
      t.notOk(fs.existsSync(dirOf('pids', `${PARENT}/${id}`)), 'no dir left in other hierarchies');
    });
  });
}
