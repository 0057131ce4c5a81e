// helper/ops/plan.ts: the helper's own validation of container/process plans and their
// serialisation into kata-init's NUL-separated records (helper/native/KATA-INIT.md).
import t, { type Test } from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Code, StatusError, type ContainerPlan, type ProcessPlan, type SeccompPlan } from '../../shared/protocol';
import { kataInitError } from '../../helper/ops/process';
import { applySelinuxLabels } from '../../helper/ops/selinux';
import {
  MS,
  expandCgroupMount,
  parseMountOptions,
  planPath,
  serializeCreatePlan,
  serializeExecPlan,
  serializeSandboxPlan,
  validateContainerPlan,
  validateProcessPlan,
  validateSeccomp,
  type PlanCheckOptions,
} from '../../helper/ops/plan';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'helper-plan-'));
const rootfs = path.join(tmp, 'rootfs');
fs.mkdirSync(rootfs);
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

const host: PlanCheckOptions = { hostChecks: true, hostCgroups: { unified: true, v1: [] } };
const relaxed: PlanCheckOptions = { hostChecks: false };

function proc(over: Partial<ProcessPlan> = {}): ProcessPlan {
  return {
    args: ['sh', '-c', 'echo hi'],
    env: ['PATH=/bin', 'A=b=c'],
    cwd: '/',
    uid: 1000,
    gid: 1000,
    additionalGids: [10, 20],
    terminal: false,
    noNewPrivileges: true,
    rlimits: [{ type: 'RLIMIT_NOFILE', soft: 1024, hard: 4096 }],
    ...over,
  };
}

function plan(over: Partial<ContainerPlan> = {}): ContainerPlan {
  return {
    rootfs,
    readonly: false,
    hostname: 'box',
    namespaces: [
      { type: 'mount', path: '' },
      { type: 'uts', path: '' },
      { type: 'network', path: '' },
      { type: 'pid', path: '' },
    ],
    mounts: [],
    process: proc(),
    maskedPaths: [],
    readonlyPaths: [],
    sysctl: {},
    rootfsPropagation: '',
    ...over,
  };
}

function throwsStatus(t: Test, fn: () => unknown, code: number, re?: RegExp): void {
  try {
    fn();
  } catch (err) {
    t.ok(err instanceof StatusError, 'throws a StatusError');
    t.equal((err as StatusError).code, code, `code ${code}: ${(err as Error).message}`);
    if (re) t.match((err as Error).message, re);
    return;
  }
  t.fail('expected a throw');
}

/** Decode a serialised plan back into records split at tags known from `tags`. */
function fields(buf: Buffer): string[] {
  const s = buf.toString();
  t.equal(s[s.length - 1], '\0', 'every field is NUL-terminated');
  return s.slice(0, -1).split('\0');
}

t.test('mount options map to MS_* flags, propagation and data', async (t) => {
  const r = parseMountOptions(['nosuid', 'noexec', 'nodev', 'relatime', 'ro', 'mode=755', 'size=65536k', 'rprivate']);
  t.equal(r.flags, MS.NOSUID | MS.NOEXEC | MS.NODEV | MS.RELATIME | MS.RDONLY);
  t.same(r.propagation, [MS.PRIVATE | MS.REC]);
  t.equal(r.data, 'mode=755,size=65536k');
  t.equal(parseMountOptions(['ro', 'rw']).flags, 0, 'rw clears ro');
  t.equal(parseMountOptions(['rbind']).flags, MS.BIND | MS.REC);
  t.equal(parseMountOptions(['newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5']).data, 'newinstance,ptmxmode=0666,mode=0620,gid=5');
  t.equal(parseMountOptions(['strictatime', 'nostrictatime', 'noatime', 'nodiratime', 'sync', 'dirsync', 'mand']).flags, MS.NOATIME | MS.NODIRATIME | MS.SYNCHRONOUS | MS.DIRSYNC | MS.MANDLOCK);
  t.same(parseMountOptions(['shared', 'rslave', 'runbindable']).propagation, [MS.SHARED, MS.SLAVE | MS.REC, MS.UNBINDABLE | MS.REC]);
});

t.test('a valid container plan serialises to kata-init records', async (t) => {
  const src = path.join(tmp, 'data');
  fs.mkdirSync(src, { recursive: true });
  const v = validateContainerPlan(
    plan({
      mounts: [
        { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
        { destination: '/data/', type: 'bind', source: src, options: ['rbind', 'ro', 'rprivate'] },
      ],
      maskedPaths: ['/proc/kcore'],
      readonlyPaths: ['/proc/sys'],
      sysctl: { 'net.ipv4.ip_forward': '1' },
    }),
    host,
  );
  t.equal(v.rootfsPropagation, MS.SLAVE | MS.REC, '"" is rslave');
  t.equal(v.rootfsPropagation, 540672);
  t.equal(v.nodev, true, 'no devicesAllowAll: everything but /dev and devpts is nodev');
  t.equal(validateContainerPlan(plan({ devicesAllowAll: true }), host).nodev, false, 'devicesAllowAll: devices openable');
  t.throws(() => validateContainerPlan(plan({ devicesAllowAll: 'yes' as unknown as boolean }), host), /devicesAllowAll/, 'devicesAllowAll must be a boolean');
  const f = fields(serializeCreatePlan(v));
  t.same(f, [
    'rootfs', rootfs,
    'readonly', '0',
    'nodev', '1',
    'propagation', '540672',
    'ns', 'mnt', '',
    'ns', 'uts', '',
    'ns', 'net', '',
    'ns', 'pid', '',
    'hostname', 'box',
    'mount', 'proc', '/proc', 'proc', String(MS.NOSUID | MS.NOEXEC | MS.NODEV), '',
    'mount', fs.realpathSync(src), '/data', 'bind', String(MS.BIND | MS.REC | MS.RDONLY), '',
    'mountprop', '/data', String(MS.PRIVATE | MS.REC),
    'masked', '/proc/kcore',
    'readonlypath', '/proc/sys',
    'sysctl', 'net.ipv4.ip_forward', '1',
    'rlimit', '7', '1024', '4096',
    'caps', '0', '0', '0', '0', '0',
    'gid', '1000',
    'group', '10',
    'group', '20',
    'uid', '1000',
    'cwd', '/',
    'nonewprivs', '1',
    'arg', 'sh', 'arg', '-c', 'arg', 'echo hi',
    'env', 'PATH=/bin', 'env', 'A=b=c',
    'tty', '0',
  ]);
});

t.test('hostname is only sent for a new uts namespace; joined namespaces keep their paths', async (t) => {
  const nsFile = path.join(tmp, 'uts-ns');
  fs.writeFileSync(nsFile, '');
  const v = validateContainerPlan(
    plan({ namespaces: [{ type: 'mount', path: '' }, { type: 'uts', path: nsFile }, { type: 'pid', path: '' }] }),
    { ...host, namespacePathAllowed: (type, p) => type === 'uts' && p === nsFile },
  );
  const f = fields(serializeCreatePlan(v));
  t.notOk(f.includes('hostname'));
  t.ok(f.join(' ').includes(`ns uts ${nsFile}`));
  throwsStatus(
    t,
    () => validateContainerPlan(plan({ namespaces: [{ type: 'mount', path: '' }, { type: 'uts', path: nsFile }, { type: 'pid', path: '' }] }), { ...host, namespacePathAllowed: () => false }),
    Code.INVALID_ARGUMENT,
    /not a uts namespace of this sandbox/,
  );
});

t.test('rootfs rules (rustjail validator.rs): absolute, existing directory, no symlink', async (t) => {
  const link = path.join(tmp, 'link');
  fs.symlinkSync(rootfs, link);
  const file = path.join(tmp, 'file');
  fs.writeFileSync(file, '');
  throwsStatus(t, () => validateContainerPlan(plan({ rootfs: 'rel/path' }), host), Code.INVALID_ARGUMENT, /absolute/);
  throwsStatus(t, () => validateContainerPlan(plan({ rootfs: path.join(tmp, 'missing') }), host), Code.INVALID_ARGUMENT, /does not exist/);
  throwsStatus(t, () => validateContainerPlan(plan({ rootfs: link }), host), Code.INVALID_ARGUMENT, /canonical/);
  throwsStatus(t, () => validateContainerPlan(plan({ rootfs: path.join(link, '.') }), host), Code.INVALID_ARGUMENT, /canonical/);
  throwsStatus(t, () => validateContainerPlan(plan({ rootfs: file }), host), Code.INVALID_ARGUMENT, /not a directory/);
  t.ok(validateContainerPlan(plan({ rootfs: '/does/not/matter' }), relaxed), 'the mock only needs an absolute path');
});

t.test('mount rules', async (t) => {
  const m = (over: Partial<ContainerPlan['mounts'][0]>) => plan({ mounts: [{ destination: '/x', type: 'tmpfs', source: 'tmpfs', options: [], ...over }] });
  throwsStatus(t, () => validateContainerPlan(m({ destination: 'relative' }), host), Code.INVALID_ARGUMENT, /absolute/);
  throwsStatus(t, () => validateContainerPlan(m({ destination: '/a/../../etc' }), host), Code.INVALID_ARGUMENT, /\.\./);
  throwsStatus(t, () => validateContainerPlan(m({ type: 'ext4', source: '/dev/vda' }), host), Code.INVALID_ARGUMENT, /not allowed/);
  throwsStatus(t, () => validateContainerPlan(m({ type: 'bind', source: 'relative' }), host), Code.INVALID_ARGUMENT, /absolute/);
  throwsStatus(t, () => validateContainerPlan(m({ type: 'bind', source: path.join(tmp, 'nope') }), host), Code.INVALID_ARGUMENT, /does not exist/);
  throwsStatus(t, () => validateContainerPlan(m({ destination: '/proc', type: 'tmpfs' }), host), Code.INVALID_ARGUMENT, /proc/);
  throwsStatus(t, () => validateContainerPlan(m({ destination: '/proc/kcore', type: 'bind', source: '/dev/null' }), host), Code.INVALID_ARGUMENT, /not allowed/);
  t.ok(validateContainerPlan(m({ destination: '/proc/cpuinfo', type: 'bind', source: '/dev/null' }), host), '/proc/cpuinfo may be bound (lxcfs)');
  throwsStatus(t, () => validateContainerPlan(m({ options: ['mode=7\0'] }), host), Code.INVALID_ARGUMENT, /NUL/);
  const bindNone = validateContainerPlan(m({ type: 'none', source: '/dev/null', options: ['bind'] }), host);
  t.equal(bindNone.mounts[0].fstype, 'bind', 'type "none" with a bind option is a bind mount');
  const many = plan({ mounts: Array.from({ length: 1025 }, () => ({ destination: '/x', type: 'tmpfs', source: 'tmpfs', options: [] })) });
  throwsStatus(t, () => validateContainerPlan(many, host), Code.INVALID_ARGUMENT, /1025 entries/);
});

t.test('cgroup mounts: cgroup2 on a v2 host, tmpfs + per-hierarchy binds on v1', async (t) => {
  const v = validateContainerPlan(plan({ mounts: [{ destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['ro', 'nosuid'] }] }), host);
  t.equal(v.mounts.length, 1);
  t.equal(v.mounts[0].fstype, 'cgroup2');
  const base = v.mounts[0];
  const v1 = expandCgroupMount({ ...base, fstype: 'cgroup' }, { unified: false, v1: ['/sys/fs/cgroup/memory', '/sys/fs/cgroup/cpu,cpuacct'] });
  t.same(
    v1.map((x) => [x.fstype, x.source, x.destination, x.flags]),
    [
      ['tmpfs', 'tmpfs', '/sys/fs/cgroup', MS.NOSUID | MS.NODEV | MS.NOEXEC],
      ['bind', '/sys/fs/cgroup/memory', '/sys/fs/cgroup/memory', MS.BIND | MS.REC | MS.RDONLY | MS.NOSUID],
      ['bind', '/sys/fs/cgroup/cpu,cpuacct', '/sys/fs/cgroup/cpu,cpuacct', MS.BIND | MS.REC | MS.RDONLY | MS.NOSUID],
    ],
  );
});

t.test('namespaces: OCI names mapped, a new user ns needs idMappings, joining one is refused, duplicates and a missing mount ns refused', async (t) => {
  const v = validateContainerPlan(
    plan({ hostname: '', namespaces: [{ type: 'mount', path: '' }, { type: 'network', path: '' }, { type: 'pid', path: '' }, { type: 'cgroup', path: '' }] }),
    host,
  );
  t.same(v.namespaces.map((n) => n.type), ['mnt', 'net', 'pid', 'cgroup']);
  throwsStatus(t, () => validateContainerPlan(plan({ namespaces: [{ type: 'mount', path: '' }, { type: 'uts', path: '' }, { type: 'user', path: '' }] }), host), Code.INVALID_ARGUMENT, /user namespace needs idMappings/);
  throwsStatus(t, () => validateContainerPlan(plan({ namespaces: [{ type: 'mount', path: '' }, { type: 'user', path: '/proc/1/ns/user' }] }), host), Code.UNIMPLEMENTED, /joining an existing user namespace/);
  const idMappings = { uid: [{ containerId: 0, hostId: 100000, size: 65536 }], gid: [{ containerId: 0, hostId: 100000, size: 65536 }] };
  const u = validateContainerPlan(plan({ namespaces: [{ type: 'mount', path: '' }, { type: 'uts', path: '' }, { type: 'pid', path: '' }, { type: 'user', path: '' }], idMappings }), host);
  t.same(u.idMappings, idMappings, 'mappings carried');
  t.ok(fields(serializeCreatePlan(u)).join(' ').includes('ns user '), 'kata-init gets "ns user" (new)');
  throwsStatus(t, () => validateContainerPlan(plan({ idMappings }), host), Code.INVALID_ARGUMENT, /idMappings given without a user namespace/);
  throwsStatus(
    t,
    () => validateContainerPlan(plan({ namespaces: [{ type: 'mount', path: '' }, { type: 'uts', path: '' }, { type: 'user', path: '' }], idMappings: { ...idMappings, gid: [{ containerId: 0, hostId: 5, size: 0 }] } }), host),
    Code.INVALID_ARGUMENT,
    /idMappings\.gid\[0\]\.size 0/,
  );
  throwsStatus(t, () => validateContainerPlan(plan({ namespaces: [{ type: 'mount', path: '' }, { type: 'mount', path: '' }] }), host), Code.INVALID_ARGUMENT, /more than once/);
  throwsStatus(t, () => validateContainerPlan(plan({ namespaces: [{ type: 'uts', path: '' }] }), host), Code.INVALID_ARGUMENT, /mount namespace/);
  throwsStatus(t, () => validateContainerPlan(plan({ namespaces: [{ type: 'mount', path: '' }, { type: 'time' as never, path: '' }] }), host), Code.INVALID_ARGUMENT);
  throwsStatus(t, () => validateContainerPlan(plan({ namespaces: [{ type: 'mount', path: '' }] }), host), Code.INVALID_ARGUMENT, /needs a uts namespace/);
});

t.test('process rules', async (t) => {
  throwsStatus(t, () => validateProcessPlan(proc({ args: [] })), Code.INVALID_ARGUMENT, /empty/);
  throwsStatus(t, () => validateProcessPlan(proc({ env: ['NOEQUALS'] })), Code.INVALID_ARGUMENT, /KEY=VALUE/);
  throwsStatus(t, () => validateProcessPlan(proc({ env: ['=value'] })), Code.INVALID_ARGUMENT, /KEY=VALUE/);
  throwsStatus(t, () => validateProcessPlan(proc({ env: ['A=b\0c'] })), Code.INVALID_ARGUMENT, /NUL/);
  throwsStatus(t, () => validateProcessPlan(proc({ uid: 2 ** 32 - 1 })), Code.INVALID_ARGUMENT, /uid/);
  throwsStatus(t, () => validateProcessPlan(proc({ gid: -1 })), Code.INVALID_ARGUMENT, /gid/);
  throwsStatus(t, () => validateProcessPlan(proc({ cwd: 'tmp' })), Code.INVALID_ARGUMENT, /cwd/);
  throwsStatus(t, () => validateProcessPlan(proc({ args: ['x'.repeat(64 * 1024 + 1)] })), Code.INVALID_ARGUMENT, /longer/);
  throwsStatus(t, () => validateProcessPlan(proc({ env: Array.from({ length: 4097 }, (_, i) => `K${i}=v`) })), Code.INVALID_ARGUMENT, /4097/);
  throwsStatus(t, () => validateProcessPlan(proc({ rlimits: [{ type: 'RLIMIT_BOGUS', soft: 1, hard: 1 }] })), Code.INVALID_ARGUMENT, /RLIMIT_BOGUS/);
  throwsStatus(t, () => validateProcessPlan(proc({ rlimits: [{ type: 'RLIMIT_NOFILE', soft: 10, hard: 1 }] })), Code.INVALID_ARGUMENT, /soft/);
  throwsStatus(t, () => validateProcessPlan({ ...proc(), terminal: 'yes' }), Code.INVALID_ARGUMENT, /terminal/);
  const inf = validateProcessPlan(proc({ rlimits: [{ type: 'RLIMIT_CORE', soft: 2 ** 64 - 1, hard: 2n ** 64n - 1n as unknown as number }] }));
  t.same(inf.rlimits[0], { name: 'RLIMIT_CORE', resource: 4, soft: '-1', hard: '-1' }, 'RLIM_INFINITY → -1');
  t.equal(validateProcessPlan(proc({ uid: 2 ** 32 - 2 })).uid, 2 ** 32 - 2);
});

t.test('sysctl allow-list (rustjail validator.rs sysctl)', async (t) => {
  const withIpc = (sysctl: Record<string, string>) =>
    plan({ namespaces: [{ type: 'mount', path: '' }, { type: 'uts', path: '' }, { type: 'ipc', path: '' }, { type: 'pid', path: '' }], sysctl });
  t.ok(validateContainerPlan(withIpc({ 'kernel.shmmax': '1', 'fs.mqueue.msg_max': '10', 'kernel.domainname': 'd' }), host));
  const withNet = plan({ namespaces: [{ type: 'mount', path: '' }, { type: 'uts', path: '' }, { type: 'network', path: '' }, { type: 'pid', path: '' }], sysctl: { 'net.core.somaxconn': '10' } });
  t.ok(validateContainerPlan(withNet, host), 'net.* with a new network namespace');
  throwsStatus(t, () => validateContainerPlan(withIpc({ 'net.core.somaxconn': '10' }), host), Code.INVALID_ARGUMENT, /needs a network namespace/);
  throwsStatus(t, () => validateContainerPlan(plan({ sysctl: { 'kernel.shmmax': '1' } }), host), Code.INVALID_ARGUMENT, /ipc namespace/);
  throwsStatus(t, () => validateContainerPlan(withIpc({ 'kernel.hostname': 'x' }), host), Code.INVALID_ARGUMENT, /not allowed/);
  throwsStatus(t, () => validateContainerPlan(withIpc({ 'vm.swappiness': '1' }), host), Code.INVALID_ARGUMENT, /not allowed/);
  throwsStatus(t, () => validateContainerPlan(withIpc({ 'net/../../x': '1' }), host), Code.INVALID_ARGUMENT, /not a valid name/);
});

t.test('ipc/uts sysctls joining the guest\'s own ipc/uts namespace by path are refused', async (t) => {
  // The net.* rule, applied to the other namespaced sysctls: a plan that joins an ipc or uts
  // namespace by path (e.g. /proc/<pid>/ns/ipc of a container created without one, i.e. the
  // guest's) would set the guest's kernel.shm*/msg*/sem or kernel.domainname.
  const allowAll: PlanCheckOptions = { ...host, namespacePathAllowed: () => true };
  const joined = (type: 'ipc' | 'uts', p: string, sysctl: Record<string, string>) =>
    plan({ namespaces: [{ type: 'mount', path: '' }, { type: type === 'ipc' ? 'uts' : 'ipc', path: '' }, { type, path: p }, { type: 'pid', path: '' }], sysctl });
  throwsStatus(t, () => validateContainerPlan(joined('ipc', '/proc/self/ns/ipc', { 'kernel.shmmax': '1' }), allowAll), Code.INVALID_ARGUMENT, /needs an ipc namespace of the container's own/);
  throwsStatus(t, () => validateContainerPlan(joined('ipc', '/proc/self/ns/ipc', { 'fs.mqueue.msg_max': '10' }), allowAll), Code.INVALID_ARGUMENT, /ipc namespace of the container's own/);
  throwsStatus(t, () => validateContainerPlan(joined('uts', '/proc/self/ns/uts', { 'kernel.domainname': 'd' }), allowAll), Code.INVALID_ARGUMENT, /needs a uts namespace of the container's own/);
  t.ok(validateContainerPlan(joined('ipc', '/proc/self/ns/ipc', {}), allowAll), 'joining without sysctls is fine');
});

t.test('exec and sandbox plans; PATH lookup', async (t) => {
  const p = validateProcessPlan(proc({ args: ['id'], env: ['PATH=/a', 'PATH=/b'], additionalGids: [], rlimits: [], terminal: true }));
  t.same(fields(serializeExecPlan([{ type: 'pid', path: '/proc/1/ns/pid' }], p)), [
    'ns', 'pid', '/proc/1/ns/pid',
    'caps', '0', '0', '0', '0', '0',
    'gid', '1000', 'uid', '1000', 'cwd', '/', 'nonewprivs', '1', 'arg', 'id', 'env', 'PATH=/a', 'env', 'PATH=/b', 'tty', '1',
  ]);
  t.equal(planPath(p.env), '/b', 'the last PATH wins');
  t.equal(planPath([]), '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
  t.same(fields(serializeSandboxPlan('pod', [{ type: 'ipc', path: '/r/ipc' }, { type: 'uts', path: '/r/uts' }])), [
    'hostname', 'pod', 'nsfile', 'ipc', '/r/ipc', 'nsfile', 'uts', '/r/uts',
  ]);
  t.same(fields(serializeSandboxPlan('', [{ type: 'ipc', path: '/r/ipc' }])), ['nsfile', 'ipc', '/r/ipc']);
});

t.test('capabilities and oomScoreAdj: validated, serialised as masks and a number', async (t) => {
  const p = validateProcessPlan(
    proc({
      capabilities: { bounding: [5, 0, 5, 40], effective: [5], permitted: [5, 63], inheritable: [], ambient: [5] },
      oomScoreAdj: -500,
      rlimits: [],
    }),
  );
  t.same(
    p.capabilities,
    { bounding: (1n << 40n) | (1n << 5n) | 1n, effective: 32n, permitted: (1n << 63n) | 32n, inheritable: 0n, ambient: 32n },
    'masks; duplicates merged; bit 63 exact',
  );
  const f = fields(serializeExecPlan([], p));
  t.same(f.slice(0, 8), ['oomscoreadj', '-500', 'caps', String((1n << 40n) | 33n), '32', String((1n << 63n) | 32n), '0', '32'], 'oomscoreadj first, then caps: bounding effective permitted inheritable ambient');
  t.same(validateProcessPlan(proc()).capabilities, { bounding: 0n, effective: 0n, permitted: 0n, inheritable: 0n, ambient: 0n }, 'absent: every set empty');
  t.equal(validateProcessPlan(proc()).oomScoreAdj, undefined, 'absent oomScoreAdj: no record');
  t.notOk(fields(serializeExecPlan([], validateProcessPlan(proc()))).includes('oomscoreadj'));
  throwsStatus(t, () => validateProcessPlan(proc({ capabilities: { bounding: [64], effective: [], permitted: [], inheritable: [], ambient: [] } })), Code.INVALID_ARGUMENT, /capabilities\.bounding\[0\].*0\.\.63, got 64/);
  throwsStatus(t, () => validateProcessPlan(proc({ capabilities: { bounding: [-1], effective: [], permitted: [], inheritable: [], ambient: [] } })), Code.INVALID_ARGUMENT, /got -1/);
  throwsStatus(t, () => validateProcessPlan(proc({ capabilities: { bounding: [], effective: ['CAP_KILL' as unknown as number], permitted: [], inheritable: [], ambient: [] } })), Code.INVALID_ARGUMENT, /effective\[0\]/);
  throwsStatus(t, () => validateProcessPlan(proc({ capabilities: { bounding: Array.from({ length: 65 }, () => 1), effective: [], permitted: [], inheritable: [], ambient: [] } })), Code.INVALID_ARGUMENT, /65 entries/);
  throwsStatus(t, () => validateProcessPlan({ ...proc(), capabilities: 'all' }), Code.INVALID_ARGUMENT, /capabilities must be a map/);
  throwsStatus(t, () => validateProcessPlan(proc({ oomScoreAdj: 1001 })), Code.INVALID_ARGUMENT, /oomScoreAdj.*-1000\.\.1000, got 1001/);
  throwsStatus(t, () => validateProcessPlan(proc({ oomScoreAdj: 1.5 })), Code.INVALID_ARGUMENT, /oomScoreAdj/);
});

t.test('seccomp: re-validated; the compiled filter is sent as hex with its flags (create and exec)', async (t) => {
  const seccomp: SeccompPlan = {
    defaultAction: 'SCMP_ACT_ALLOW',
    architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X86'],
    flags: ['SECCOMP_FILTER_FLAG_LOG'],
    syscalls: [
      { names: ['mkdir', 'no_such_syscall_xyz'], action: 'SCMP_ACT_ERRNO', errnoRet: 1, args: [] },
      { names: ['socket'], action: 'SCMP_ACT_ERRNO', args: [{ index: 0, value: 2, valueTwo: 0, op: 'SCMP_CMP_EQ' }] },
    ],
  };
  const v = validateContainerPlan(plan({ seccomp }), host);
  t.same(v.seccomp, {
    defaultAction: 'SCMP_ACT_ALLOW',
    architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86'],
    flags: ['SECCOMP_FILTER_FLAG_LOG'],
    syscalls: [
      { names: ['mkdir', 'no_such_syscall_xyz'], action: 'SCMP_ACT_ERRNO', errnoRet: 1, args: [] },
      { names: ['socket'], action: 'SCMP_ACT_ERRNO', args: [{ index: 0, value: 2n, valueTwo: 0n, op: 'SCMP_CMP_EQ' }] },
    ],
  }, 'architectures merged, values as unsigned 64-bit bigints, unknown names kept (the compiler skips them)');
  t.equal(validateContainerPlan(plan(), host).seccomp, undefined, 'no profile: no seccomp');
  t.same(validateSeccomp({ defaultAction: 'SCMP_ACT_ERRNO', defaultErrnoRet: 38, syscalls: [{ names: ['x'], action: 'SCMP_ACT_ALLOW', args: [{ index: 5, value: 2n ** 64n - 1n, op: 'SCMP_CMP_MASKED_EQ' }] }] }), {
    defaultAction: 'SCMP_ACT_ERRNO',
    defaultErrnoRet: 38,
    architectures: [],
    flags: [],
    syscalls: [{ names: ['x'], action: 'SCMP_ACT_ALLOW', args: [{ index: 5, value: 2n ** 64n - 1n, valueTwo: 0n, op: 'SCMP_CMP_MASKED_EQ' }] }],
  }, 'bigint values up to 2^64-1, absent lists empty');

  const filter = { bpf: Buffer.from([0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0x7f]), flags: 3 };
  const create = fields(serializeCreatePlan(v, filter));
  t.same(create.slice(-4), ['seccomp', '060000000000ff7f', 'seccompflags', '3'], 'create: the filter after the process records');
  t.notOk(fields(serializeCreatePlan(v)).includes('seccomp'), 'no filter: no record');
  const exec = fields(serializeExecPlan([], validateProcessPlan(proc()), { ...filter, flags: 0 }));
  t.same(exec.slice(-2), ['seccomp', '060000000000ff7f'], 'exec: the container\'s filter; no seccompflags record for 0');

  const bad: Array<[unknown, RegExp]> = [
    ['allow', /seccomp must be a map/],
    [{ ...seccomp, defaultAction: 'SCMP_ACT_NOTIFY' }, /seccomp\.defaultAction must be one of .*, got "SCMP_ACT_NOTIFY"/],
    [{ ...seccomp, defaultAction: undefined }, /seccomp\.defaultAction/],
    [{ ...seccomp, defaultErrnoRet: 70000 }, /seccomp\.defaultErrnoRet must be an integer in 0\.\.65535, got 70000/],
    [{ ...seccomp, architectures: ['amd64'] }, /seccomp\.architectures\[0\] is not a known SCMP_ARCH_\* name, got "amd64"/],
    [{ ...seccomp, architectures: Array.from({ length: 33 }, () => 'SCMP_ARCH_X86') }, /architectures has 33 entries, more than 32/],
    [{ ...seccomp, flags: ['SECCOMP_FILTER_FLAG_NEW_LISTENER'] }, /seccomp\.flags\[0\] must be one of/],
    [{ ...seccomp, syscalls: 'mkdir' }, /seccomp\.syscalls must be an array/],
    [{ ...seccomp, syscalls: [{ names: [], action: 'SCMP_ACT_ERRNO' }] }, /seccomp\.syscalls\[0\]\.names must not be empty/],
    [{ ...seccomp, syscalls: [{ names: [''], action: 'SCMP_ACT_ERRNO' }] }, /seccomp\.syscalls\[0\]\.names\[0\] must not be empty/],
    [{ ...seccomp, syscalls: [{ names: ['a\0b'], action: 'SCMP_ACT_ERRNO' }] }, /names\[0\].*NUL/],
    [{ ...seccomp, syscalls: [{ names: ['x'.repeat(257)], action: 'SCMP_ACT_ERRNO' }] }, /names\[0\] is longer than 256 bytes/],
    [{ ...seccomp, syscalls: [{ names: ['mkdir'], action: 'SCMP_ACT_DENY' }] }, /seccomp\.syscalls\[0\]\.action must be one of/],
    [{ ...seccomp, syscalls: [{ names: ['mkdir'], action: 'SCMP_ACT_ERRNO', errnoRet: -1 }] }, /errnoRet must be an integer in 0\.\.65535, got -1/],
    [{ ...seccomp, syscalls: [{ names: ['mkdir'], action: 'SCMP_ACT_ERRNO', args: [{ index: 6, value: 0, op: 'SCMP_CMP_EQ' }] }] }, /args\[0\]\.index must be an integer in 0\.\.5, got 6/],
    [{ ...seccomp, syscalls: [{ names: ['mkdir'], action: 'SCMP_ACT_ERRNO', args: [{ index: 0, value: 0, op: '' }] }] }, /args\[0\]\.op must be one of/],
    [{ ...seccomp, syscalls: [{ names: ['mkdir'], action: 'SCMP_ACT_ERRNO', args: [{ index: 0, value: 2 ** 53, op: 'SCMP_CMP_EQ' }] }] }, /args\[0\]\.value must be an unsigned 64-bit integer/],
    [{ ...seccomp, syscalls: [{ names: ['mkdir'], action: 'SCMP_ACT_ERRNO', args: [{ index: 0, value: 2n ** 64n, op: 'SCMP_CMP_EQ' }] }] }, /args\[0\]\.value must be an unsigned 64-bit integer/],
    [{ ...seccomp, syscalls: [{ names: ['mkdir'], action: 'SCMP_ACT_ERRNO', args: Array.from({ length: 7 }, () => ({ index: 0, value: 0, op: 'SCMP_CMP_EQ' })) }] }, /args has 7 entries, more than 6/],
    [{ ...seccomp, syscalls: Array.from({ length: 4097 }, () => ({ names: ['mkdir'], action: 'SCMP_ACT_ERRNO' })) }, /syscalls has 4097 entries, more than 4096/],
    [{ ...seccomp, syscalls: Array.from({ length: 5 }, () => ({ names: Array.from({ length: 4000 }, () => 'mkdir'), action: 'SCMP_ACT_ERRNO' })) }, /more than 16384 syscall names in all/],
  ];
  for (const [raw, re] of bad) throwsStatus(t, () => validateContainerPlan(plan({ seccomp: raw as SeccompPlan }), host), Code.INVALID_ARGUMENT, re);
});

t.test('forged plans refused by shape, with or without host checks (security issue item 4 and 9)', async (t) => {
  for (const opts of [host, relaxed]) {
    for (const rootfs of ['/', '//', '/.', '/a/../', `${'/tmp'}/../tmp`]) {
      throwsStatus(t, () => validateContainerPlan(plan({ rootfs }), opts), Code.INVALID_ARGUMENT, /rootfs/);
    }
    const mounts = [
      { destination: '/vol', type: 'bind', source: '/tmp', options: ['rbind'] },
      { destination: '/vol', type: 'tmpfs', source: 'tmpfs', options: ['remount', 'ro'] },
    ];
    throwsStatus(t, () => validateContainerPlan(plan({ mounts }), opts), Code.INVALID_ARGUMENT, /"remount" applies only to a bind mount/);
  }
});

t.test('kata-init oom_score_adj failure: FAILED_PRECONDITION naming the field, the value and CAP_SYS_RESOURCE', async (t) => {
  // Regression: the pause container's -998 on a host without CAP_SYS_RESOURCE answered
  // INVALID_ARGUMENT "oom: writing -998 to /proc/self/oom_score_adj: Permission denied".
  const e = kataInitError('oom: writing -998 to /proc/self/oom_score_adj: Permission denied', 'create container pod');
  t.equal(e.code, Code.FAILED_PRECONDITION);
  t.match(e.message, /^create container pod: process\.oomScoreAdj \(oom_score_adj\) -998 cannot be applied: a negative oom_score_adj needs CAP_SYS_RESOURCE/);
  const other = kataInitError('exec: executable "nope" not found in $PATH', 'create container c');
  t.equal(other.code, Code.INVALID_ARGUMENT, 'other stages unchanged');
});

t.test('createContainer/startContainer hooks: hook, hookarg, hookenv (entries without "=" skipped) and hookstate records; default timeout 10 s', async (t) => {
  const v = validateContainerPlan(
    plan({ hooks: { createContainer: [{ path: '/bin/c', args: ['c', 'x'], env: ['A=1', 'bad'], timeoutSec: 3 }], startContainer: [{ path: '/bin/s', args: [], env: [] }] } }),
    host,
  );
  v.hookStates = { createContainer: ['{"pid":', ',"id":"c1"}'] };
  const f = fields(serializeCreatePlan(v)).join(' ');
  t.ok(f.includes('hookstate createContainer {"pid": ,"id":"c1"} hook createContainer /bin/c 3 hookarg c hookarg x hookenv A=1 hook startContainer /bin/s 10'), f);
  t.notOk(f.includes('hookenv bad'), 'an env entry without "=" is skipped');
  t.notOk(f.includes('hookstate startContainer'), 'no state given: no record');
  throwsStatus(t, () => validateContainerPlan(plan({ hooks: { startContainer: [{ path: 'rel', args: [], env: [] }] } }), host), Code.INVALID_ARGUMENT, /hooks\.startContainer\[0\]\.path/);
  t.equal(kataInitError('hook: createContainer hook [0] /bin/false exited with status 1', 'create container c1').code, Code.FAILED_PRECONDITION, 'a failing hook is FAILED_PRECONDITION');
});

t.test('SELinux: with SELinux the mount label goes to tmpfs/devpts/mqueue data and the process label to a `selinux` record; without, both are dropped with a warning', async (t) => {
  const raw = plan({
    mountLabel: 'system_u:object_r:container_file_t:s0',
    process: proc({ selinuxLabel: 'system_u:system_r:container_t:s0' }),
    mounts: [
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['mode=755'] },
      { destination: '/proc', type: 'proc', source: 'proc', options: [] },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['context="x:y:z:s0"'] },
    ],
  });
  const on = validateContainerPlan(raw, host);
  const warnings: string[] = [];
  const log = { warn: (_o: unknown, msg: string) => warnings.push(msg) } as unknown as Parameters<typeof applySelinuxLabels>[2];
  applySelinuxLabels(on, true, log, 'c1');
  t.same(on.mounts.map((m) => m.data), ['mode=755,context="system_u:object_r:container_file_t:s0"', '', 'context="x:y:z:s0"'], 'labelled types only, an explicit context kept');
  t.ok(fields(serializeCreatePlan(on)).join(' ').includes('selinux system_u:system_r:container_t:s0'), 'the exec label record');
  t.same(warnings, []);
  const off = validateContainerPlan(raw, host);
  applySelinuxLabels(off, false, log, 'c1');
  t.notOk(fields(serializeCreatePlan(off)).includes('selinux'), 'no label record without SELinux');
  t.equal(off.mountLabel, undefined);
  t.same(off.mounts[0].data, 'mode=755', 'no context added');
  t.equal(warnings.length, 2, 'one warning per dropped label');
  throwsStatus(t, () => validateContainerPlan(plan({ mountLabel: 'a"b' }), host), Code.INVALID_ARGUMENT, /mountLabel/);
});

// Adversarial review 8: names in a hand-written helper plan that are Object.prototype members.
// The helper's name tables were plain objects, so "constructor" was taken as a namespace type
// (a function), "toString" as a propagation or rlimit: the plan was accepted and kata-init got
// "function Object() { [native code] }" as a record field. Fails on the old code (accepted).
t.test('Object.prototype names are not namespace types, rlimits or propagations', async (t) => {
  for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty']) {
    throwsStatus(t, () => validateContainerPlan(plan({ namespaces: [{ type: 'mount', path: '' }, { type: name as 'uts', path: '' }] }), relaxed), Code.INVALID_ARGUMENT, new RegExp(`namespaces\\[1\\]\\.type "${name}" is not a namespace type`));
    throwsStatus(t, () => validateContainerPlan(plan({ rootfsPropagation: name }), relaxed), Code.INVALID_ARGUMENT, new RegExp(`rootfsPropagation "${name}" is not a propagation type`));
    throwsStatus(t, () => validateProcessPlan(proc({ rlimits: [{ type: name, soft: 1, hard: 1 }] })), Code.INVALID_ARGUMENT, new RegExp(`rlimits\\[0\\]\\.type "${name}" is not a known RLIMIT_\\* name`));
    t.same(parseMountOptions([name, 'ro']), { flags: MS.RDONLY, propagation: [], data: name }, `mount option ${name} is data, not a flag or a propagation`);
  }
});
