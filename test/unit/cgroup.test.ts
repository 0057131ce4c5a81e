// Container cgroups without root: layout detection from mountinfo text, the OCI → plan mapping
// (control/oci/cgroups.ts), validation (shared/cgroup.ts) and the files the manager writes,
// in the mock's simulated tree (helper/mock/cgroup.ts), through the mock backend.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseCgroupMounts } from '../../helper/ops/cgroup';
import { parseHelperArgs } from '../../helper/main';
import { createMockCgroups } from '../../helper/mock/cgroup';
import { MOCK_DEVICE_PROGRAM_FILE, mockDevicePrograms } from '../../helper/mock/bpf-devices';
import { createMockBackend } from '../../helper/mock/backend';
import { cgroupPathFromSpec, cgroupResourcesFromSpec } from '../../control/oci/cgroups';
import { sharesToWeight, validateCgroupPlan } from '../../shared/cgroup';
import { loadNative } from '../../shared/native';
import { Code, StatusError } from '../../shared/protocol';
import type { BackendReply } from '../../helper/api';
import type { grpc } from '../../shared/generated/protos';
import { minimalContainerPlan } from '../lib/helper-fixtures';

const HYBRID = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`;

function code(fn: () => unknown): { code?: number; message: string } {
  try {
    fn();
  } catch (err) {
    return { code: err instanceof StatusError ? err.code : undefined, message: (err as Error).message };
  }
  return { message: 'no error' };
}

t.test('layout: hybrid, co-mounted v1, v2 only, unified_cgroup_hierarchy', async (t) => {
  const l = parseCgroupMounts(HYBRID);
  t.equal(l.mode, 'hybrid');
  t.equal(l.v1.cpu, '/sys/fs/cgroup/cpu,cpuacct', 'co-mounted cpu');
  t.equal(l.v1.cpuacct, '/sys/fs/cgroup/cpu,cpuacct', 'co-mounted cpuacct');
  t.equal(l.v1.memory, '/sys/fs/cgroup/memory');
  t.notOk('systemd' in l.v1, 'name=systemd is not a controller');
  t.equal(l.v2, '/sys/fs/cgroup/unified');
  const v2 = parseCgroupMounts('25 1 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n');
  t.equal(v2.mode, 'v2');
  t.same(v2.v1, {});
  const only = parseCgroupMounts(HYBRID, true);
  t.equal(only.mode, 'v2', 'unified_cgroup_hierarchy ignores the v1 hierarchies');
  t.equal(parseCgroupMounts('').mode, 'none');
  t.equal(parseHelperArgs(['--mock'], {}).unifiedCgroupHierarchy, false, 'helper option off by default');
  t.equal(parseHelperArgs(['--mock', '--unified-cgroup-hierarchy'], {}).unifiedCgroupHierarchy, true, '--unified-cgroup-hierarchy');
  t.equal(parseHelperArgs(['--mock'], { KATA_AGENT_UNIFIED_CGROUP_HIERARCHY: 'true' }).unifiedCgroupHierarchy, true, 'or the environment');
  t.equal(parseCgroupMounts('35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n').mode, 'v1');
});

t.test('path mapping as upstream cgroupfs manager; confinement', async (t) => {
  t.equal(cgroupPathFromSpec('', 'c1'), '/c1', 'empty → /<id>');
  t.equal(cgroupPathFromSpec('/kubepods/pod1/c1', 'c1'), '/kubepods/pod1/c1');
  t.equal(cgroupPathFromSpec('system.slice:cri:c1', 'c1'), '/system.slice/cri/c1', 'systemd form: ":" → "/"');
  t.equal(cgroupPathFromSpec('a/b', 'c1'), '/a/b', 'relative: from the root');
  t.equal(cgroupPathFromSpec('/a', 'c1', '/kata_agent'), '/kata_agent/a', 'configured parent');
  for (const bad of ['/../etc', '/a/../../b', '/', '/a/./b', '/a b', ':..:x']) {
    const e = code(() => cgroupPathFromSpec(bad, 'c1'));
    t.equal(e.code, Code.INVALID_ARGUMENT, `${JSON.stringify(bad)} refused`);
    t.match(e.message, 'OCI.Linux.CgroupsPath', 'naming the field');
  }
  t.equal(code(() => validateCgroupPlan({ path: '/x/..', resources: {} })).code, Code.INVALID_ARGUMENT, 'the helper re-checks');
});

t.test('resources: proto zero = unset; bad values name the field', async (t) => {
  t.same(cgroupResourcesFromSpec({ Memory: { Limit: 0, Swap: 0 }, CPU: { Shares: 0 }, Pids: { Limit: 0 } }), { memory: {}, cpu: {} });
  t.same(cgroupResourcesFromSpec({ Memory: { Limit: 1024, Swappiness: 10 }, Pids: { Limit: -1 } }), { memory: { limit: 1024, swappiness: 10 }, pids: { limit: -1 } });
  for (const [res, field] of [
    [{ CPU: { Shares: 1 } }, 'OCI.Linux.Resources.CPU.Shares'],
    [{ CPU: { Cpus: '0;1' } }, 'OCI.Linux.Resources.CPU.Cpus'],
    [{ CPU: { Period: 10 } }, 'OCI.Linux.Resources.CPU.Period'],
    [{ Memory: { Limit: -5 } }, 'OCI.Linux.Resources.Memory.Limit'],
    [{ Memory: { Limit: 4096, Swap: 1024 } }, 'OCI.Linux.Resources.Memory.Swap'],
    [{ Memory: { Swappiness: 101 } }, 'OCI.Linux.Resources.Memory.Swappiness'],
    [{ BlockIO: { Weight: 5 } }, 'OCI.Linux.Resources.BlockIO.Weight'],
    [{ HugepageLimits: [{ Pagesize: '2MB/../x', Limit: 1 }] }, 'OCI.Linux.Resources.HugepageLimits[0].Pagesize'],
    [{ Network: { Priorities: [{ Name: 'eth0/x', Priority: 1 }] } }, 'OCI.Linux.Resources.Network.Priorities[0].Name'],
  ] as const) {
    const e = code(() => cgroupResourcesFromSpec(res as grpc.LinuxResources.$Properties));
    t.equal(e.code, Code.INVALID_ARGUMENT, `${JSON.stringify(res)} refused`);
    t.match(e.message, field, `names ${field}`);
  }
  const u = code(() => validateCgroupPlan({ path: '/a', resources: { unified: { '../memory.max': '1' } } }));
  t.equal(u.code, Code.INVALID_ARGUMENT, 'a unified key with "/" is refused');
  t.equal(code(() => validateCgroupPlan({ path: '/a', resources: { unified: { 'cgroup.procs': '1' } } })).code, Code.INVALID_ARGUMENT, 'cgroup.* files are refused');
  t.equal(sharesToWeight(2), 1);
  t.equal(sharesToWeight(1024), 39, 'runc conversion');
  t.equal(sharesToWeight(262144), 10000);
});

t.test('manager (simulated): v1 files in hybrid, v2 files in v2, removal', async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cg-unit-'));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const res = {
    memory: { limit: 64 << 20, swap: 96 << 20, swappiness: 0, kernel: 1 << 20 },
    cpu: { shares: 1024, quota: 50000, period: 100000, cpus: '0' },
    pids: { limit: -1 },
    hugepageLimits: [{ pageSize: '2MB', limit: 4 << 20 }],
  };
  const hy = createMockCgroups({ root: path.join(root, 'hy') });
  const cg = hy.manager.create('c1', { path: '/k/c1', resources: { ...res, hugepageLimits: [] } });
  const r = (f: string): string => fs.readFileSync(path.join(hy.root, f), 'utf8');
  t.equal(r('memory/k/c1/memory.limit_in_bytes'), String(64 << 20));
  t.equal(r('memory/k/c1/memory.memsw.limit_in_bytes'), String(96 << 20), 'v1 swap = memory+swap');
  t.equal(r('memory/k/c1/memory.swappiness'), '0');
  t.equal(r('cpu/k/c1/cpu.shares'), '1024');
  t.equal(r('cpu/k/c1/cpu.cfs_quota_us'), '50000');
  t.equal(r('cpuset/k/c1/cpuset.cpus'), '0');
  t.equal(r('pids/k/c1/pids.max'), 'max');
  hy.manager.join(cg, 4242);
  t.equal(r('unified/k/c1/cgroup.procs'), '4242\n', 'joined in v2 too');
  t.equal(r('memory/k/c1/cgroup.procs'), '4242\n');
  t.same(hy.manager.remove(cg), []);
  t.notOk(fs.existsSync(path.join(hy.root, 'memory/k')), 'created parents removed too');

  const v2 = createMockCgroups({ root: path.join(root, 'v2'), mode: 'v2' });
  const cg2 = v2.manager.create('c2', { path: '/c2', resources: res });
  const r2 = (f: string): string => fs.readFileSync(path.join(v2.root, 'unified/c2', f), 'utf8');
  t.equal(r2('memory.max'), String(64 << 20));
  t.equal(r2('memory.swap.max'), String(32 << 20), 'v2 swap = swap - limit');
  t.notOk(fs.existsSync(path.join(v2.root, 'unified/c2/memory.kmem.limit_in_bytes')), 'kernel memory ignored on v2');
  t.equal(r2('cpu.weight'), '39');
  t.equal(r2('cpu.max'), '50000 100000');
  t.equal(r2('pids.max'), 'max');
  t.equal(r2('hugetlb.2MB.max'), String(4 << 20));
  v2.manager.remove(cg2);
  t.notOk(fs.existsSync(path.join(v2.root, 'unified/c2')));
});

t.test('mock backend: the init joins the cgroup, cgroupStats, removeContainer removes the dirs', async (t) => {
  const native = loadNative();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cg-mock-'));
  const cgroups = createMockCgroups({ root });
  const backend = createMockBackend({ cgroups });
  t.teardown(async () => {
    await backend.shutdown();
    cgroups.cleanup();
  });
  const close = (reply: BackendReply<unknown>): void => {
    for (const f of reply.fds ?? []) native.close(f.fd);
    reply.onSent?.();
  };
  const plan = minimalContainerPlan(['sleep', '1000'], { cgroup: { path: '/kata/cg1', resources: { pids: { limit: 10 } } } });
  const reply = await backend.createContainer({ containerId: 'cg1', plan });
  close(reply);
  const procs = fs.readFileSync(path.join(root, 'pids/kata/cg1/cgroup.procs'), 'utf8');
  t.equal(procs, `${reply.result.pid}\n`, 'the init pid was written into cgroup.procs');
  const stats = await backend.cgroupStats({ containerId: 'cg1' });
  t.equal(stats.result.files['pids.max'], '10');
  t.equal(stats.result.mode, 'hybrid');
  const bad = await backend
    .createContainer({ containerId: 'cg2', plan: { ...plan, cgroup: { path: '/kata/../x', resources: {} } } })
    .then(() => undefined, (e: unknown) => e as StatusError);
  t.equal(bad?.code, Code.INVALID_ARGUMENT, 'the helper re-validates the path');
  await backend.removeContainer({ containerId: 'cg1', timeoutMs: 5000 });
  t.notOk(fs.existsSync(path.join(root, 'pids/kata')), 'cgroup dirs removed');
  const nf = await backend.cgroupStats({ containerId: 'cg1' }).then(() => undefined, (e: unknown) => e as StatusError);
  t.equal(nf?.code, Code.NOT_FOUND);
});

t.test('device rules: v1 devices hierarchy and v2 device program; FAILED_PRECONDITION with neither (never silently unenforced)', async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cg-dev-'));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const devices = [
    { allow: false, type: 'a', major: -1, minor: -1, access: 'rwm' },
    { allow: true, type: 'b', major: 7, minor: -1, access: 'r' },
  ];
  const hy = createMockCgroups({ root: path.join(root, 'hy') });
  t.ok(hy.manager.enforcesDevices());
  const cg = hy.manager.create('c1', { path: '/d/c1', resources: { devices } });
  const r = (f: string): string => fs.readFileSync(path.join(hy.root, 'devices/d/c1', f), 'utf8');
  // the simulated tree keeps the last write of each file
  t.equal(r('devices.deny'), 'a', 'type a is written as "a"');
  t.equal(r('devices.allow'), 'b 7:* r', '-1 is written as "*"');
  t.equal(fs.readFileSync(path.join(hy.root, 'unified/d/c1', MOCK_DEVICE_PROGRAM_FILE), 'utf8'), 'deny a *:* rwm\nallow b 7:* r\n', 'hybrid: the v2 program too');
  hy.manager.remove(cg);

  const v2 = createMockCgroups({ root: path.join(root, 'v2'), mode: 'v2' });
  const cg2 = v2.manager.create('c2', { path: '/c2', resources: { devices } });
  const prog = path.join(v2.root, 'unified/c2', MOCK_DEVICE_PROGRAM_FILE);
  t.equal(fs.readFileSync(prog, 'utf8'), 'deny a *:* rwm\nallow b 7:* r\n', 'v2: the rules go to the device program');
  v2.manager.update(cg2, { devices: [devices[0]] });
  t.equal(fs.readFileSync(prog, 'utf8'), 'deny a *:* rwm\n', 'UpdateContainer replaces the program (the new one is not detached)');
  v2.manager.remove(cg2);

  // a cgroup dir that existed before (not ours to remove): the program is detached at removal
  fs.mkdirSync(path.join(v2.root, 'unified/pre'), { recursive: true });
  const pre = v2.manager.create('c4', { path: '/pre', resources: { devices } });
  t.ok(fs.existsSync(path.join(v2.root, 'unified/pre', MOCK_DEVICE_PROGRAM_FILE)), 'attached to the existing dir');
  v2.manager.remove(pre);
  t.ok(fs.existsSync(path.join(v2.root, 'unified/pre')), 'the existing dir stays');
  t.notOk(fs.existsSync(path.join(v2.root, 'unified/pre', MOCK_DEVICE_PROGRAM_FILE)), 'its program is detached');

  const bare = createMockCgroups({ root: path.join(root, 'bare'), mode: 'v2', devicePrograms: mockDevicePrograms(false) });
  t.notOk(bare.manager.enforcesDevices(), 'no v1 devices and a kernel without device programs');
  const err = code(() => bare.manager.create('c3', { path: '/c3', resources: { devices } }));
  t.equal(err.code, Code.FAILED_PRECONDITION);
  t.match(err.message, /OCI\.Linux\.Resources\.Devices: the guest has neither a v1 devices cgroup hierarchy nor cgroup v2 device programs/);
  t.notOk(fs.existsSync(path.join(bare.root, 'unified/c3')), 'nothing left behind');
});
