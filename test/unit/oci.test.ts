// control/oci.ts: OCI spec → ContainerPlan / ProcessPlan conversion and validation.
import t, { type Test } from 'tap';
import type { grpc } from '../../shared/generated/protos';
import { Code, StatusError, type NamespacePlan } from '../../shared/protocol';
import {
  CAPABILITIES,
  capabilitiesFromOci,
  containerPlanFromSpec,
  devicesAllowAll,
  unenforcedFields,
  processPlanFromOci,
  rewriteNamespaces,
  sanitizeEnv,
  validateSysctl,
  type ContainerPlanOptions,
} from '../../control/oci';

const noSandbox: ContainerPlanOptions = { sandboxPidns: false, sandbox: { namespaces: [], pidns: null } };

function spec(overrides: Partial<grpc.Spec.$Properties> = {}, linux: Partial<grpc.Linux.$Properties> = {}): grpc.Spec.$Properties {
  return {
    Version: '1.0.2',
    Root: { Path: '/run/bundle/rootfs' },
    Process: { Args: ['sh'], Env: ['PATH=/bin'], Cwd: '/', User: { UID: 0, GID: 0 } },
    Linux: { Namespaces: [{ Type: 'mount' }, { Type: 'ipc' }, { Type: 'uts' }, { Type: 'pid' }], ...linux },
    ...overrides,
  };
}

/** Run fn, expect a StatusError with `code` whose message contains every `parts`. */
function rejects(t: Test, fn: () => unknown, code: number, parts: string[], name: string): void {
  try {
    fn();
    t.fail(`${name}: expected an error`);
  } catch (err) {
    t.ok(err instanceof StatusError, `${name}: StatusError`);
    t.equal((err as StatusError).code, code, `${name}: code ${code}`);
    for (const p of parts) t.match((err as Error).message, p, `${name}: message names ${JSON.stringify(p)}`);
  }
}

t.test('env is sanitised as Kata valid_env (B18): invalid entries skipped, keys and values trimmed', async (t) => {
  const cases: Array<[string[], string[]]> = [
    [['', '=x', 'FOO=bar', 'NOEQUALS'], ['FOO=bar']],
    [[' KEY = value ', 'A=b=c', 'EMPTY='], ['KEY=value', 'A=b=c', 'EMPTY=']],
    [[' =x', '   =', 'NUL\0KEY=1', 'V=nul\0value', 'OK=1'], ['OK=1']],
    [[], []],
  ];
  for (const [input, want] of cases) t.same(sanitizeEnv(input), want, JSON.stringify(input));
  t.same(sanitizeEnv(undefined), []);
});

t.test('process conversion', async (t) => {
  const p = processPlanFromOci(
    {
      Terminal: true,
      Args: ['sh', '-c', 'env'],
      Env: ['', 'FOO=bar'],
      Cwd: '',
      User: { UID: 1000, GID: 100, AdditionalGids: [10, 20] },
      NoNewPrivileges: true,
      Rlimits: [{ Type: 'RLIMIT_NOFILE', Soft: 1024, Hard: 4096 }],
    },
    'OCI.Process',
  );
  t.same(p, {
    args: ['sh', '-c', 'env'],
    env: ['FOO=bar'],
    cwd: '/',
    uid: 1000,
    gid: 100,
    additionalGids: [10, 20],
    terminal: true,
    noNewPrivileges: true,
    rlimits: [{ type: 'RLIMIT_NOFILE', soft: 1024, hard: 4096 }],
    capabilities: { bounding: [], effective: [], inheritable: [], permitted: [], ambient: [] },
    oomScoreAdj: 0,
  });
  t.equal(processPlanFromOci({ Args: ['x'], Cwd: '/work' }, 'process').cwd, '/work');

  rejects(t, () => processPlanFromOci(null, 'process'), Code.INVALID_ARGUMENT, ['process is required'], 'missing process');
  rejects(t, () => processPlanFromOci({ Args: [] }, 'process'), Code.INVALID_ARGUMENT, ['process.Args'], 'empty args');
  rejects(t, () => processPlanFromOci({ Args: [''] }, 'process'), Code.INVALID_ARGUMENT, ['process.Args[0]'], 'empty argv0');
  rejects(t, () => processPlanFromOci({ Args: ['a\0b'] }, 'process'), Code.INVALID_ARGUMENT, ['process.Args[0]', 'NUL'], 'NUL in args');
  rejects(t, () => processPlanFromOci({ Args: ['sh'], Cwd: 'rel/dir' }, 'process'), Code.INVALID_ARGUMENT, ['process.Cwd', 'rel/dir', 'absolute'], 'relative cwd');
  rejects(
    t,
    () => processPlanFromOci({ Args: ['sh'], Rlimits: [{ Type: 'RLIMIT_BOGUS', Soft: 1, Hard: 1 }] }, 'process'),
    Code.INVALID_ARGUMENT,
    ['process.Rlimits[0].Type', 'RLIMIT_BOGUS'],
    'unknown rlimit',
  );
  rejects(
    t,
    () => processPlanFromOci({ Args: ['sh'], Rlimits: [{ Type: 'RLIMIT_NOFILE', Soft: 10, Hard: 5 }] }, 'process'),
    Code.INVALID_ARGUMENT,
    ['process.Rlimits[0].Soft', '10'],
    'soft above hard',
  );
  rejects(
    t,
    () =>
      processPlanFromOci(
        { Args: ['sh'], Rlimits: [{ Type: 'RLIMIT_NOFILE', Soft: 1, Hard: 1 }, { Type: 'RLIMIT_NOFILE', Soft: 1, Hard: 1 }] },
        'process',
      ),
    Code.INVALID_ARGUMENT,
    ['process.Rlimits[1].Type', 'duplicate'],
    'duplicate rlimit',
  );
});

t.test('container plan: fields carried over', async (t) => {
  const plan = containerPlanFromSpec(
    spec(
      {
        Hostname: 'web',
        Root: { Path: '/rootfs', Readonly: true },
        Mounts: [{ destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid'] }],
      },
      {
        Namespaces: [{ Type: 'mount' }, { Type: 'ipc' }, { Type: 'uts' }, { Type: 'pid' }, { Type: 'network' }],
        MaskedPaths: ['/proc/kcore'],
        ReadonlyPaths: ['/proc/sys'],
        Sysctl: { 'net.ipv4.ip_forward': '1', 'kernel.shmmax': '100' },
        RootfsPropagation: 'rprivate',
      },
    ),
    noSandbox,
  );
  t.equal(plan.rootfs, '/rootfs');
  t.equal(plan.readonly, true);
  t.equal(plan.hostname, 'web');
  t.same(plan.mounts, [{ destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid'] }]);
  t.same(plan.maskedPaths, ['/proc/kcore']);
  t.same(plan.readonlyPaths, ['/proc/sys']);
  t.same(plan.sysctl, { 'net.ipv4.ip_forward': '1', 'kernel.shmmax': '100' });
  t.equal(plan.rootfsPropagation, 'rprivate');
  t.same(plan.process.args, ['sh']);
});

t.test('container plan: validation errors name the field and value', async (t) => {
  const cases: Array<[string, grpc.Spec.$Properties, number, string[]]> = [
    ['no root', spec({ Root: null }), Code.INVALID_ARGUMENT, ['OCI.Root.Path']],
    ['relative root', spec({ Root: { Path: 'rootfs' } }), Code.INVALID_ARGUMENT, ['OCI.Root.Path', '"rootfs"', 'absolute']],
    ['no process', spec({ Process: null }), Code.INVALID_ARGUMENT, ['OCI.Process is required']],
    ['no args', spec({ Process: { Args: [] } }), Code.INVALID_ARGUMENT, ['OCI.Process.Args']],
    ['no linux', spec({ Linux: null }), Code.INVALID_ARGUMENT, ['OCI.Linux']],
    ['unknown namespace', spec({}, { Namespaces: [{ Type: 'time' }] }), Code.INVALID_ARGUMENT, ['OCI.Linux.Namespaces[0].Type', '"time"']],
    ['bogus namespace', spec({}, { Namespaces: [{ Type: 'net' }] }), Code.INVALID_ARGUMENT, ['"net"']],
    ['duplicate namespace', spec({}, { Namespaces: [{ Type: 'ipc' }, { Type: 'ipc' }] }), Code.INVALID_ARGUMENT, ['Namespaces[1]', 'duplicate']],
    ['relative ns path', spec({}, { Namespaces: [{ Type: 'network', Path: 'x' }] }), Code.INVALID_ARGUMENT, ['Namespaces[0].Path', '"x"']],
    ['user namespace without mappings', spec({}, { Namespaces: [{ Type: 'mount' }, { Type: 'user' }] }), Code.INVALID_ARGUMENT, ['OCI.Linux.UIDMappings is empty']],
    ['joining a user namespace', spec({}, { Namespaces: [{ Type: 'mount' }, { Type: 'user', Path: '/proc/1/ns/user' }] }), Code.UNIMPLEMENTED, ['existing user namespace']],
    ['ns path of another type', spec({}, { Namespaces: [{ Type: 'mount' }, { Type: 'ipc', Path: '/proc/self/ns/mnt' }] }), Code.INVALID_ARGUMENT, ['OCI.Linux.Namespaces[1].Path "/proc/self/ns/mnt"', 'a mnt namespace file, not ipc']],
    ['ns path of another type (pid)', spec({}, { Namespaces: [{ Type: 'mount' }, { Type: 'pid', Path: '/proc/42/ns/user' }] }), Code.INVALID_ARGUMENT, ['Namespaces[1].Path', 'not pid']],
    ['id mappings without userns', spec({}, { Namespaces: [{ Type: 'mount' }], UIDMappings: [{ HostID: 1, ContainerID: 0, Size: 1 }] }), Code.INVALID_ARGUMENT, ['UIDMappings']],
    ['relative mount', spec({ Mounts: [{ destination: 'proc', type: 'proc' }] }), Code.INVALID_ARGUMENT, ['OCI.Mounts[0].destination', '"proc"', 'absolute']],
    ['mount with ..', spec({ Mounts: [{ destination: '/a/../etc', type: 'bind' }] }), Code.INVALID_ARGUMENT, ['OCI.Mounts[0].destination', '/a/../etc', '".."']],
    ['mount dest ..', spec({ Mounts: [{ destination: '/ok' }, { destination: '/..' }] }), Code.INVALID_ARGUMENT, ['OCI.Mounts[1].destination']],
    ['masked relative', spec({}, { MaskedPaths: ['proc/kcore'] }), Code.INVALID_ARGUMENT, ['OCI.Linux.MaskedPaths[0]', 'proc/kcore']],
    ['readonly ..', spec({}, { ReadonlyPaths: ['/proc/../etc'] }), Code.INVALID_ARGUMENT, ['OCI.Linux.ReadonlyPaths[0]', '".."']],
    ['no mount namespace', spec({}, { Namespaces: [{ Type: 'pid' }] }), Code.INVALID_ARGUMENT, ['OCI.Linux.Namespaces', 'mount namespace']],
    ['hostname without uts', spec({ Hostname: 'h' }, { Namespaces: [{ Type: 'mount' }] }), Code.INVALID_ARGUMENT, ['OCI.Hostname', '"h"', 'uts']],
    ['hostname too long', spec({ Hostname: 'h'.repeat(65) }), Code.INVALID_ARGUMENT, ['OCI.Hostname']],
    ['bad propagation', spec({}, { RootfsPropagation: 'sideways' }), Code.INVALID_ARGUMENT, ['OCI.Linux.RootfsPropagation', '"sideways"']],
    ['vm sysctl', spec({}, { Sysctl: { 'vm.overcommit_memory': '1' } }), Code.INVALID_ARGUMENT, ['vm.overcommit_memory', 'not allowed']],
    ['cwd relative', spec({ Process: { Args: ['sh'], Cwd: 'x' } }), Code.INVALID_ARGUMENT, ['OCI.Process.Cwd']],
    ['root is the guest root', spec({ Root: { Path: '/' } }), Code.INVALID_ARGUMENT, ['OCI.Root.Path "/"', 'pivot_root']],
    ['root is the guest root, spelt //.', spec({ Root: { Path: '//.' } }), Code.INVALID_ARGUMENT, ['OCI.Root.Path']],
    ['seccomp notify default', spec({}, { Seccomp: { DefaultAction: 'SCMP_ACT_NOTIFY' } }), Code.UNIMPLEMENTED, ['OCI.Linux.Seccomp.DefaultAction', 'SCMP_ACT_NOTIFY']],
    ['seccomp notify rule', spec({}, { Seccomp: { DefaultAction: 'SCMP_ACT_ALLOW', Syscalls: [{ Names: ['mount'], Action: 'SCMP_ACT_NOTIFY' }] } }), Code.UNIMPLEMENTED, ['OCI.Linux.Seccomp.Syscalls[0].Action', 'SCMP_ACT_NOTIFY']],
    ['selinux label with NUL', spec({ Process: { Args: ['sh'], SelinuxLabel: 'a\0b' } }), Code.INVALID_ARGUMENT, ['OCI.Process.SelinuxLabel']],
    ['oom score too high', spec({ Process: { Args: ['sh'], OOMScoreAdj: 1001 } }), Code.INVALID_ARGUMENT, ['OCI.Process.OOMScoreAdj', '1001']],
    ['oom score too low', spec({ Process: { Args: ['sh'], OOMScoreAdj: -1001 } }), Code.INVALID_ARGUMENT, ['OCI.Process.OOMScoreAdj', '-1001']],
  ];
  for (const [name, s, code, parts] of cases) rejects(t, () => containerPlanFromSpec(s, noSandbox), code, parts, name);
});

t.test('sysctl allow-list (rustjail validator.rs; field case B22)', async (t) => {
  const ipc: NamespacePlan[] = [{ type: 'ipc', path: '' }];
  const uts: NamespacePlan[] = [{ type: 'uts', path: '' }];
  const none: NamespacePlan[] = [];
  const net: NamespacePlan[] = [{ type: 'network', path: '' }];
  const allowed: Array<[Record<string, string>, NamespacePlan[]]> = [
    [{ 'net.ipv4.ip_unprivileged_port_start': '0', 'net.ipv4.ping_group_range': '0 2147483647' }, net],
    [{ 'kernel.shm_rmid_forced': '1', 'kernel.msgmax': '8192', 'kernel.sem': '1 2 3 4' }, ipc],
    [{ 'fs.mqueue.msg_max': '10' }, ipc],
    [{ 'kernel.domainname': 'example.com' }, uts],
  ];
  for (const [sysctl, ns] of allowed) t.doesNotThrow(() => validateSysctl(sysctl, ns), JSON.stringify(sysctl));

  const refused: Array<[Record<string, string>, NamespacePlan[], string]> = [
    [{ 'kernel.shmmax': '1' }, none, 'ipc namespace'],
    // Security issue item 9: net.* without a network namespace of its own set the guest's.
    [{ 'net.ipv4.ip_forward': '1' }, ipc, 'network namespace'],
    [{ 'fs.mqueue.msg_max': '10' }, uts, 'ipc namespace'],
    [{ 'kernel.domainname': 'x' }, ipc, 'uts namespace'],
    [{ 'kernel.hostname': 'x' }, uts, 'not allowed'],
    [{ 'vm.overcommit_memory': '1' }, ipc, 'not allowed'],
    [{ 'kernel.msgfoo': '1' }, ipc, 'not allowed'],
    [{ 'fs.file-max': '1' }, ipc, 'not allowed'],
  ];
  for (const [sysctl, ns, why] of refused) {
    rejects(t, () => validateSysctl(sysctl, ns), Code.INVALID_ARGUMENT, [Object.keys(sysctl)[0], why], JSON.stringify(sysctl));
  }
});

t.test('namespace rewrite (rpc.rs update_container_namespaces)', async (t) => {
  const sandbox = {
    namespaces: [
      { type: 'ipc' as const, path: '/var/run/sandbox-ns/ipc' },
      { type: 'uts' as const, path: '/var/run/sandbox-ns/uts' },
    ],
    pidns: '/proc/42/ns/pid',
  };
  const specNs = containerPlanFromSpec(
    spec({}, { Namespaces: [{ Type: 'ipc', Path: '/proc/1/ns/ipc' }, { Type: 'uts' }, { Type: 'mount' }, { Type: 'network', Path: '/proc/9/ns/net' }, { Type: 'pid', Path: '/proc/7/ns/pid' }] }),
    { sandboxPidns: true, sandbox },
  ).namespaces;
  t.same(
    specNs,
    [
      { type: 'ipc', path: '/var/run/sandbox-ns/ipc' },
      { type: 'uts', path: '/var/run/sandbox-ns/uts' },
      { type: 'mount', path: '' },
      { type: 'network', path: '/proc/9/ns/net' },
      { type: 'pid', path: '/proc/42/ns/pid' },
    ],
    'ipc/uts get the sandbox namespaces, pid the sandbox pidns, exactly one pid entry',
  );

  const own = containerPlanFromSpec(spec(), { sandboxPidns: false, sandbox }).namespaces;
  t.same(own.filter((n) => n.type === 'pid'), [{ type: 'pid', path: '' }], 'without sandbox_pidns: a new pid namespace');

  const noPid = containerPlanFromSpec(spec({}, { Namespaces: [{ Type: 'mount' }] }), { sandboxPidns: false, sandbox }).namespaces;
  t.same(noPid, [{ type: 'mount', path: '' }, { type: 'pid', path: '' }], 'a pid entry is added when the spec has none; ipc/uts are not added');

  const bare = rewriteNamespaces([{ type: 'ipc', path: '/proc/1/ns/ipc' }], { sandboxPidns: false, sandbox: { namespaces: [], pidns: null } });
  t.same(bare, [{ type: 'ipc', path: '' }, { type: 'pid', path: '' }], 'no sandbox namespaces: a new ipc namespace (upstream)');

  // A spec hostname other than the sandbox's: a uts namespace of its own (the conformance
  // suite's containers all saw the sandbox's hostname; upstream ignores the spec's).
  const withHost = { namespaces: [{ type: 'uts' as const, path: '/var/run/sandbox-ns/uts' }], pidns: null, hostname: 'pod' };
  const utsOf = (hostname: string) => containerPlanFromSpec(spec({ Hostname: hostname }), { sandboxPidns: false, sandbox: withHost }).namespaces.find((n) => n.type === 'uts');
  t.same(utsOf('other'), { type: 'uts', path: '' }, 'another hostname: a new uts namespace');
  t.same(utsOf('pod'), { type: 'uts', path: '/var/run/sandbox-ns/uts' }, 'the sandbox\'s hostname: the sandbox\'s uts namespace (upstream)');
  t.same(utsOf(''), { type: 'uts', path: '/var/run/sandbox-ns/uts' }, 'no hostname: the sandbox\'s uts namespace (upstream)');
  t.equal(containerPlanFromSpec(spec({ Hostname: 'other' }), { sandboxPidns: false, sandbox: withHost }).hostname, 'other', 'and the plan sets it');

  rejects(
    t,
    () => containerPlanFromSpec(spec(), { sandboxPidns: true, sandbox: { namespaces: [], pidns: null } }),
    Code.FAILED_PRECONDITION,
    ['sandbox does not have a shared pid namespace'],
    'sandbox_pidns without a sandbox pidns',
  );
});

const DOCKER = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW', 'CAP_SETGID',
  'CAP_SETUID', 'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE',
];
const ALLOW_ALL = { Devices: [{ Allow: true, Type: 'a', Major: -1, Minor: -1, Access: 'rwm' }] };

t.test('capabilities: names → numbers, unknown names skipped with a warning', async (t) => {
  t.equal(CAPABILITIES.length, 41, 'CAP_CHOWN 0 .. CAP_CHECKPOINT_RESTORE 40');
  t.equal(CAPABILITIES[0], 'CAP_CHOWN');
  t.equal(CAPABILITIES[27], 'CAP_MKNOD');
  t.equal(CAPABILITIES[40], 'CAP_CHECKPOINT_RESTORE');
  const warnings: Record<string, unknown>[] = [];
  const caps = capabilitiesFromOci(
    { Bounding: ['CAP_KILL', 'CAP_CHOWN', 'CAP_KILL', 'CAP_BOGUS', 'cap_kill'], Effective: ['CAP_KILL'], Permitted: ['CAP_BPF'], Inheritable: ['CAP_BPF'], Ambient: ['CAP_BPF'] },
    'OCI.Process.Capabilities',
    (f) => warnings.push(f),
  );
  t.same(caps, { bounding: [0, 5], effective: [5], inheritable: [39], permitted: [39], ambient: [39] }, 'sorted, deduplicated, exact names only');
  t.same(warnings, [{ field: 'OCI.Process.Capabilities', unknown: ['bounding:CAP_BOGUS', 'bounding:cap_kill'] }], 'unknown names reported');
});

t.test('capabilities: ambient ones not both permitted and inheritable are dropped with a warning (runc; `runc spec` config)', async (t) => {
  const warnings: [Record<string, unknown>, string][] = [];
  const runcSpec = ['CAP_AUDIT_WRITE', 'CAP_KILL', 'CAP_NET_BIND_SERVICE'];
  const caps = capabilitiesFromOci(
    { Bounding: runcSpec, Effective: runcSpec, Permitted: runcSpec, Ambient: [...runcSpec, 'CAP_CHOWN'], Inheritable: ['CAP_KILL', 'CAP_CHOWN'] },
    'OCI.Process.Capabilities',
    (f, m) => warnings.push([f, m]),
  );
  t.same(caps.ambient, [5], 'only CAP_KILL is permitted and inheritable');
  t.same(caps.permitted, [5, 10, 29], 'the other sets are untouched');
  t.same(warnings[0][0], { field: 'OCI.Process.Capabilities.Ambient', dropped: ['CAP_CHOWN', 'CAP_NET_BIND_SERVICE', 'CAP_AUDIT_WRITE'] }, 'the dropped ones are named');
});

t.test('capabilities: init default, exec inheritance, CAP_MKNOD only with allow-all device rules', async (t) => {
  const withCaps = (names: string[], linux: Partial<grpc.Linux.$Properties> = {}): grpc.Spec.$Properties =>
    spec({ Process: { Args: ['sh'], Capabilities: { Bounding: names, Effective: names, Permitted: names } } }, linux);
  const mask = (nums: number[]): number => nums.reduce((m, n) => m + 2 ** n, 0);

  const none = containerPlanFromSpec(spec(), noSandbox);
  t.same(none.process.capabilities, { bounding: [], effective: [], inheritable: [], permitted: [], ambient: [] }, 'no capabilities object: every set empty (runc)');

  const denied = containerPlanFromSpec(withCaps(DOCKER), noSandbox);
  t.equal(mask(denied.process.capabilities!.bounding), 0xa00425fb, 'Docker set without CAP_MKNOD (no device rules)');
  t.equal(denied.devicesAllowAll, false);
  const allowed = containerPlanFromSpec(withCaps(DOCKER, { Resources: ALLOW_ALL }), noSandbox);
  t.equal(mask(allowed.process.capabilities!.bounding), 0xa80425fb, 'Docker set with CAP_MKNOD (allow-all rule)');
  t.equal(mask(allowed.process.capabilities!.effective), 0xa80425fb);
  t.equal(allowed.devicesAllowAll, true);

  const execNone = processPlanFromOci({ Args: ['id'] }, 'process', { container: allowed });
  t.same(execNone.capabilities, allowed.process.capabilities, 'an exec without capabilities gets the container\'s');
  t.not(execNone.capabilities, allowed.process.capabilities, '(a copy)');
  const execOwn = processPlanFromOci({ Args: ['id'], Capabilities: { Bounding: ['CAP_MKNOD', 'CAP_KILL'] } }, 'process', { container: denied });
  t.same(execOwn.capabilities?.bounding, [5], 'an exec asking for CAP_MKNOD in a deny container does not get it');
  const execAllowed = processPlanFromOci({ Args: ['id'], Capabilities: { Bounding: ['CAP_MKNOD'] } }, 'process', { container: allowed });
  t.same(execAllowed.capabilities?.bounding, [27], 'in an allow-all container it does');
  const noContainer = processPlanFromOci({ Args: ['id'], Capabilities: { Bounding: ['CAP_MKNOD'] } }, 'process');
  t.same(noContainer.capabilities?.bounding, [], 'without a container: CAP_MKNOD removed (fail closed)');

  const warnings: string[] = [];
  containerPlanFromSpec(withCaps(DOCKER), { ...noSandbox, warn: (_f, m) => warnings.push(m) });
  t.match(warnings.join('\n'), /CAP_MKNOD removed/, 'the removal is logged');
});

t.test('devicesAllowAll: an allow-all rule not followed by a deny rule', async (t) => {
  const rule = (o: Partial<grpc.LinuxDeviceCgroup.$Properties>): grpc.LinuxDeviceCgroup.$Properties => ({ Allow: true, Type: 'a', Major: -1, Minor: -1, Access: 'rwm', ...o });
  const cases: Array<[string, grpc.LinuxDeviceCgroup.$Properties[] | undefined, boolean]> = [
    ['no rules', undefined, false],
    ['empty', [], false],
    ['allow all', [rule({})], true],
    ['allow all, empty type', [rule({ Type: '' })], true],
    ['allow all then allow c 1:3', [rule({}), rule({ Type: 'c', Major: 1, Minor: 3 })], true],
    ['deny all then allow all', [rule({ Allow: false }), rule({})], true],
    ['allow all then deny c 1:3', [rule({}), rule({ Allow: false, Type: 'c', Major: 1, Minor: 3 })], false],
    ['docker: deny all, allow some', [rule({ Allow: false }), rule({ Type: 'c', Major: 1, Minor: 3 })], false],
    ['allow all without m', [rule({ Access: 'rw' })], false],
    ['allow block devices only', [rule({ Type: 'b' })], false],
    ['allow a with a major', [rule({ Major: 8 })], false],
    ['allow a with proto-default 0:0', [rule({ Major: 0, Minor: 0 })], false],
  ];
  for (const [name, rules, want] of cases) t.equal(devicesAllowAll(rules), want, name);
});

t.test('unenforced fields are listed and logged; the container is still accepted', async (t) => {
  const s = spec(
    { Process: { Args: ['sh'], ApparmorProfile: 'docker-default' } },
    {
      CgroupsPath: '/kubepods/pod1/c1',
      Resources: {
        Memory: { Limit: 67108864, Swap: 0 },
        CPU: { Shares: 512, Cpus: '0-1' },
        Pids: { Limit: 100 },
        HugepageLimits: [{ Pagesize: '2MB', Limit: 1 }],
        Devices: [{ Allow: false, Access: 'rwm', Major: -1, Minor: -1 }],
      },
    },
  );
  // Resources but Devices, and CgroupsPath, are enforced (cgroups): not listed.
  const want = ['OCI.Linux.Resources.Devices', 'OCI.Process.ApparmorProfile'];
  t.same(unenforcedFields(s), want);
  const logged: Array<[Record<string, unknown>, string]> = [];
  const plan = containerPlanFromSpec(s, { ...noSandbox, warn: (f, m) => logged.push([f, m]) });
  t.same(plan.unenforced, want, 'recorded in the plan');
  t.ok(logged.some(([f, m]) => /not enforced/.test(m) && JSON.stringify(f.unenforced) === JSON.stringify(want)), 'one warning lists them');
  t.ok(logged.some(([f]) => f.field === 'OCI.Process.ApparmorProfile'), 'the AppArmor profile is logged as ignored');
  t.same(unenforcedFields(spec()), [], 'nothing for a plain spec');
  t.same(unenforcedFields(spec({}, { Resources: ALLOW_ALL })), [], 'an allow-all device list is not "unenforced"');
  t.doesNotThrow(() => containerPlanFromSpec(spec({}, { Seccomp: { DefaultAction: 'SCMP_ACT_ALLOW' } }), noSandbox), 'an allow-only seccomp profile is accepted');
  t.doesNotThrow(() => containerPlanFromSpec(spec({ Hooks: { Prestart: [] } }), noSandbox), 'empty hook lists are accepted');
});

t.test('seccomp: OCI linux.seccomp converted to a SeccompPlan (rustjail seccomp.rs rules)', async (t) => {
  const plan = containerPlanFromSpec(
    spec({}, {
      Seccomp: {
        DefaultAction: 'SCMP_ACT_ERRNO',
        Architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X86_64'],
        Flags: ['SECCOMP_FILTER_FLAG_TSYNC', 'SECCOMP_FILTER_FLAG_LOG', 'SECCOMP_FILTER_FLAG_SPEC_ALLOW'],
        Syscalls: [
          { Names: ['read', 'write', 'no_such_syscall_xyz'], Action: 'SCMP_ACT_ALLOW' },
          { Names: ['mkdir'], Action: 'SCMP_ACT_ERRNO', errnoret: 13 },
          { Names: ['socket'], Action: 'SCMP_ACT_ERRNO', errnoret: 0, Args: [{ Index: 0, Value: 2, Op: 'SCMP_CMP_EQ' }] },
          { Names: ['personality'], Action: 'SCMP_ACT_ALLOW', Args: [{ Index: 0, Value: 0xffffffff, ValueTwo: 8, Op: 'SCMP_CMP_MASKED_EQ' }] },
          { Names: ['ptrace'], Action: 'SCMP_ACT_TRACE', errnoret: 7 },
          { Names: ['kill'], Action: 'SCMP_ACT_KILL_PROCESS', errnoret: 5 },
        ],
      },
    }),
    noSandbox,
  );
  t.same(plan.seccomp, {
    defaultAction: 'SCMP_ACT_ERRNO',
    architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86'],
    flags: ['SECCOMP_FILTER_FLAG_TSYNC', 'SECCOMP_FILTER_FLAG_LOG', 'SECCOMP_FILTER_FLAG_SPEC_ALLOW'],
    syscalls: [
      { names: ['read', 'write', 'no_such_syscall_xyz'], action: 'SCMP_ACT_ALLOW', args: [] },
      { names: ['mkdir'], action: 'SCMP_ACT_ERRNO', errnoRet: 13, args: [] },
      { names: ['socket'], action: 'SCMP_ACT_ERRNO', errnoRet: 0, args: [{ index: 0, value: 2, valueTwo: 0, op: 'SCMP_CMP_EQ' }] },
      { names: ['personality'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: 0xffffffff, valueTwo: 8, op: 'SCMP_CMP_MASKED_EQ' }] },
      { names: ['ptrace'], action: 'SCMP_ACT_TRACE', errnoRet: 7, args: [] },
      { names: ['kill'], action: 'SCMP_ACT_KILL_PROCESS', args: [] },
    ],
  }, 'architectures and flags deduplicated, errnoret kept for ERRNO/TRACE only, unknown names kept for the helper');
  t.equal(plan.seccomp?.syscalls[1].errnoRet, 13);
  t.notOk('errnoRet' in (plan.seccomp?.syscalls[0] ?? {}), 'no errnoret: absent (the helper uses EPERM)');

  t.equal(containerPlanFromSpec(spec(), noSandbox).seccomp, undefined, 'no profile: no seccomp');
  t.equal(containerPlanFromSpec(spec({}, { Seccomp: {} }), noSandbox).seccomp, undefined, 'an empty message is no profile');
  t.same(containerPlanFromSpec(spec({}, { Seccomp: { DefaultAction: 'SCMP_ACT_ALLOW' } }), noSandbox).seccomp, {
    defaultAction: 'SCMP_ACT_ALLOW',
    architectures: [],
    flags: [],
    syscalls: [],
  });

  const S = (seccomp: grpc.LinuxSeccomp.$Properties): grpc.Spec.$Properties => spec({}, { Seccomp: seccomp });
  const rule = (r: Partial<grpc.LinuxSyscall.$Properties>): grpc.LinuxSeccomp.$Properties => ({
    DefaultAction: 'SCMP_ACT_ALLOW',
    Syscalls: [{ Names: ['mkdir'], Action: 'SCMP_ACT_ERRNO', ...r }],
  });
  const arg = (a: Partial<grpc.LinuxSeccompArg.$Properties>): grpc.LinuxSeccomp.$Properties =>
    rule({ Args: [{ Index: 0, Value: 1, Op: 'SCMP_CMP_EQ', ...a }] });
  const cases: Array<[string, grpc.Spec.$Properties, number, string[]]> = [
    ['empty default action with rules', S({ Syscalls: [{ Names: ['mkdir'], Action: 'SCMP_ACT_ERRNO' }] }), Code.INVALID_ARGUMENT, ['OCI.Linux.Seccomp.DefaultAction', 'action is required']],
    ['unknown default action', S({ DefaultAction: 'SCMP_ACT_MAYBE' }), Code.INVALID_ARGUMENT, ['OCI.Linux.Seccomp.DefaultAction', 'SCMP_ACT_MAYBE']],
    ['unknown rule action', S(rule({ Action: 'allow' })), Code.INVALID_ARGUMENT, ['OCI.Linux.Seccomp.Syscalls[0].Action', '"allow"']],
    ['empty rule action', S(rule({ Action: '' })), Code.INVALID_ARGUMENT, ['OCI.Linux.Seccomp.Syscalls[0].Action']],
    ['no names', S(rule({ Names: [] })), Code.INVALID_ARGUMENT, ['OCI.Linux.Seccomp.Syscalls[0].Names', 'must not be empty']],
    ['empty name', S(rule({ Names: ['mkdir', ''] })), Code.INVALID_ARGUMENT, ['OCI.Linux.Seccomp.Syscalls[0].Names[1]']],
    ['NUL in name', S(rule({ Names: ['mk\0dir'] })), Code.INVALID_ARGUMENT, ['OCI.Linux.Seccomp.Syscalls[0].Names[0]', 'NUL']],
    ['long name', S(rule({ Names: ['x'.repeat(257)] })), Code.INVALID_ARGUMENT, ['OCI.Linux.Seccomp.Syscalls[0].Names[0]', '256 bytes']],
    ['unknown arch', S({ DefaultAction: 'SCMP_ACT_ALLOW', Architectures: ['x86_64'] }), Code.INVALID_ARGUMENT, ['OCI.Linux.Seccomp.Architectures[0]', '"x86_64"']],
    ['unsupported flag', S({ DefaultAction: 'SCMP_ACT_ALLOW', Flags: ['SECCOMP_FILTER_FLAG_NEW_LISTENER'] }), Code.INVALID_ARGUMENT, ['OCI.Linux.Seccomp.Flags[0]', 'SECCOMP_FILTER_FLAG_NEW_LISTENER']],
    ['missing op', S(arg({ Op: '' })), Code.INVALID_ARGUMENT, ['OCI.Linux.Seccomp.Syscalls[0].Args[0].Op', 'operator is required']],
    ['unknown op', S(arg({ Op: 'SCMP_CMP_LIKE' })), Code.INVALID_ARGUMENT, ['OCI.Linux.Seccomp.Syscalls[0].Args[0].Op', 'SCMP_CMP_LIKE']],
    ['index 6', S(arg({ Index: 6 })), Code.INVALID_ARGUMENT, ['OCI.Linux.Seccomp.Syscalls[0].Args[0].Index', '0..5']],
    ['value beyond 2^53', S(arg({ Value: 2 ** 60 })), Code.INVALID_ARGUMENT, ['OCI.Linux.Seccomp.Syscalls[0].Args[0].Value', 'exactly']],
    ['valueTwo beyond 2^53', S(arg({ ValueTwo: 2 ** 64 })), Code.INVALID_ARGUMENT, ['OCI.Linux.Seccomp.Syscalls[0].Args[0].ValueTwo']],
    ['seven args', S(rule({ Args: Array.from({ length: 7 }, () => ({ Index: 0, Value: 1, Op: 'SCMP_CMP_EQ' })) })), Code.INVALID_ARGUMENT, ['OCI.Linux.Seccomp.Syscalls[0].Args', 'more than 6']],
    ['errno too big', S(rule({ errnoret: 65536 })), Code.INVALID_ARGUMENT, ['OCI.Linux.Seccomp.Syscalls[0].errnoret', '65536']],
    ['too many rules', S({ DefaultAction: 'SCMP_ACT_ALLOW', Syscalls: Array.from({ length: 4097 }, () => ({ Names: ['mkdir'], Action: 'SCMP_ACT_ERRNO' })) }), Code.INVALID_ARGUMENT, ['OCI.Linux.Seccomp.Syscalls', 'more than 4096']],
    ['too many names', S({ DefaultAction: 'SCMP_ACT_ALLOW', Syscalls: Array.from({ length: 5 }, () => ({ Names: Array.from({ length: 4000 }, () => 'mkdir'), Action: 'SCMP_ACT_ERRNO' })) }), Code.INVALID_ARGUMENT, ['OCI.Linux.Seccomp.Syscalls', 'in all']],
    ['too many archs', S({ DefaultAction: 'SCMP_ACT_ALLOW', Architectures: Array.from({ length: 33 }, () => 'SCMP_ARCH_X86') }), Code.INVALID_ARGUMENT, ['OCI.Linux.Seccomp.Architectures', 'more than 32']],
  ];
  for (const [name, s, code, parts] of cases) rejects(t, () => containerPlanFromSpec(s, noSandbox), code, parts, name);
});

t.test('OOMScoreAdj is carried for the init and for execs (0 when unset)', async (t) => {
  t.equal(containerPlanFromSpec(spec({ Process: { Args: ['sh'], OOMScoreAdj: -999 } }), noSandbox).process.oomScoreAdj, -999);
  t.equal(containerPlanFromSpec(spec(), noSandbox).process.oomScoreAdj, 0);
  t.equal(processPlanFromOci({ Args: ['sh'], OOMScoreAdj: 1000 }, 'process').oomScoreAdj, 1000);
});

t.test('device cgroup enforced (CreateSandboxResult.deviceCgroup): rules carried before the defaults, CAP_MKNOD kept, not listed as unenforced', async (t) => {
  const names = ['CAP_MKNOD', 'CAP_KILL'];
  const deny = { Resources: { Devices: [{ Allow: false, Type: 'c', Major: 1, Minor: 5, Access: 'rwm' }, { Allow: true, Type: '', Major: -1, Minor: -1, Access: '' }] } };
  const s = spec({ Process: { Args: ['sh'], Capabilities: { Bounding: names, Effective: names, Permitted: names } } }, deny);
  const plan = containerPlanFromSpec(s, { ...noSandbox, containerId: 'c1', deviceCgroup: true });
  t.equal(plan.devicesEnforced, true);
  t.same(plan.process.capabilities?.bounding, [5, 27], 'CAP_MKNOD kept');
  t.notOk(plan.unenforced?.includes('OCI.Linux.Resources.Devices'), 'Resources.Devices is enforced');
  const rules = plan.cgroup?.resources.devices ?? [];
  t.same(rules.slice(0, 2), [
    { allow: false, type: 'c', major: 1, minor: 5, access: 'rwm' },
    { allow: true, type: 'a', major: -1, minor: -1, access: 'rwm' },
  ], 'the spec rules first, in order ("" type → a, "" access → rwm)');
  t.same(rules[2], { allow: true, type: 'c', major: -1, minor: -1, access: 'm' }, 'then the defaults (c *:* m first), as runc');
  t.equal(rules.length, 14);
  const exec = processPlanFromOci({ Args: ['id'], Capabilities: { Bounding: ['CAP_MKNOD'] } }, 'process', { container: plan });
  t.same(exec.capabilities?.bounding, [27], 'an exec keeps CAP_MKNOD too');

  const interim = containerPlanFromSpec(s, { ...noSandbox, containerId: 'c1' });
  t.equal(interim.devicesEnforced, undefined);
  t.same(interim.process.capabilities?.bounding, [5], 'without a device cgroup: the interim removes CAP_MKNOD');
  t.equal(interim.cgroup?.resources.devices, undefined, 'and no rules are sent');
  t.ok(interim.unenforced?.includes('OCI.Linux.Resources.Devices'));

  for (const [dev, field] of [
    [{ Allow: true, Type: 'x', Access: 'rwm' }, 'Devices[0].Type "x"'],
    [{ Allow: true, Type: 'c', Access: 'rwx' }, 'Devices[0].Access "rwx"'],
    [{ Allow: true, Type: 'c', Major: -2, Access: 'r' }, 'Devices[0].Major -2'],
  ] as const) {
    rejects(t, () => containerPlanFromSpec(spec({}, { Resources: { Devices: [dev] } }), noSandbox), Code.INVALID_ARGUMENT, [field], field);
  }
});

t.test('linux.devices → device node plans (rustjail create_devices rules)', async (t) => {
  const plan = containerPlanFromSpec(
    spec({}, { Devices: [
      { Path: '/dev/fuse', Type: 'c', Major: 10, Minor: 229, FileMode: 0o600, UID: 0, GID: 0 },
      { Path: '/dev/vdb', Type: 'b', Major: 254, Minor: 16 },
      { Path: '/dev/vdb', Type: 'b', Major: 254, Minor: 17, UID: 5 },
    ] }),
    noSandbox,
  );
  t.same(plan.devices, [
    { path: '/dev/fuse', type: 'c', major: 10, minor: 229, fileMode: 0o600, uid: 0, gid: 0 },
    { path: '/dev/vdb', type: 'b', major: 254, minor: 17, fileMode: 0o666, uid: 5, gid: 0 },
  ], 'FileMode 0 → 0666 (runc default); a repeated path: the last entry wins');
  t.notOk(plan.unenforced?.includes('OCI.Linux.Devices'), 'no longer listed as unenforced');
  for (const [dev, field] of [
    [{ Path: '/dev/x', Type: 'z' }, 'OCI.Linux.Devices[0].Type "z"'],
    [{ Path: 'dev/x', Type: 'c' }, 'OCI.Linux.Devices[0].Path "dev/x"'],
    [{ Path: '/etc/passwd', Type: 'c' }, 'below /dev'],
    [{ Path: '/dev/../etc/x', Type: 'c' }, '".." components'],
    [{ Path: '/dev/x', Type: 'c', FileMode: 0o10644 }, 'OCI.Linux.Devices[0].FileMode'],
  ] as const) {
    rejects(t, () => containerPlanFromSpec(spec({}, { Devices: [dev] }), noSandbox), Code.INVALID_ARGUMENT, [field], field);
  }
});

t.test('OCI hooks → HooksPlan (every kind, CreateContainer/StartContainer for kata-init); bad hooks name the field', async (t) => {
  const plan = containerPlanFromSpec(
    spec({ Hooks: { Prestart: [{ Path: '/bin/a', Args: ['a', 'x'], Env: ['K=v'], Timeout: 3 }], Poststop: [{ Path: '/bin/b' }] } }),
    noSandbox,
  );
  t.same(plan.hooks, { prestart: [{ path: '/bin/a', args: ['a', 'x'], env: ['K=v'], timeoutSec: 3 }], poststop: [{ path: '/bin/b', args: [], env: [] }] });
  t.equal(containerPlanFromSpec(spec({ Hooks: {} }), noSandbox).hooks, undefined, 'no hooks: none carried');
  const inside = containerPlanFromSpec(spec({ Hooks: { CreateContainer: [{ Path: '/c', Timeout: 2 }], StartContainer: [{ Path: '/s', Args: ['s', '1'] }] } }), noSandbox);
  t.same(inside.hooks, { createContainer: [{ path: '/c', args: [], env: [], timeoutSec: 2 }], startContainer: [{ path: '/s', args: ['s', '1'], env: [] }] });
  for (const [name, hooks, code, parts] of [
    ['createContainer relative', { CreateContainer: [{ Path: 'x' }] }, Code.INVALID_ARGUMENT, ['OCI.Hooks.CreateContainer[0].Path "x"']],
    ['startContainer timeout', { StartContainer: [{ Path: '/x', Timeout: -2 }] }, Code.INVALID_ARGUMENT, ['OCI.Hooks.StartContainer[0].Timeout']],
    ['relative path', { Poststart: [{ Path: 'x' }] }, Code.INVALID_ARGUMENT, ['OCI.Hooks.Poststart[0].Path "x"', 'absolute']],
    ['empty path', { CreateRuntime: [{ Path: '' }] }, Code.INVALID_ARGUMENT, ['OCI.Hooks.CreateRuntime[0].Path is required']],
    ['timeout', { Prestart: [{ Path: '/x', Timeout: 4000 }] }, Code.INVALID_ARGUMENT, ['OCI.Hooks.Prestart[0].Timeout 4000']],
    ['env NUL', { Prestart: [{ Path: '/x', Env: ['A=\0'] }] }, Code.INVALID_ARGUMENT, ['OCI.Hooks.Prestart[0].Env[0]']],
  ] as [string, grpc.Hooks.$Properties, number, string[]][]) {
    rejects(t, () => containerPlanFromSpec(spec({ Hooks: hooks }), noSandbox), code, [...parts], name);
  }
});

t.test('user namespace id mappings: carried to the plan; zero size, overlaps, limits, u32 overflow refused naming the field', async (t) => {
  const userns = [{ Type: 'mount' }, { Type: 'uts' }, { Type: 'user' }];
  const m = (ContainerID: number, HostID: number, Size: number) => ({ ContainerID, HostID, Size });
  const ok = containerPlanFromSpec(spec({}, { Namespaces: userns, UIDMappings: [m(0, 100000, 65536)], GIDMappings: [m(0, 100000, 1), m(1, 200000, 10)] }), noSandbox);
  t.same(ok.idMappings, { uid: [{ containerId: 0, hostId: 100000, size: 65536 }], gid: [{ containerId: 0, hostId: 100000, size: 1 }, { containerId: 1, hostId: 200000, size: 10 }] });
  t.ok(ok.namespaces.some((n) => n.type === 'user' && n.path === ''), 'a new user namespace in the plan');
  for (const [name, uid, gid, parts] of [
    ['zero size', [m(0, 100000, 0)], [m(0, 1, 1)], ['OCI.Linux.UIDMappings[0].Size 0']],
    ['container overlap', [m(0, 100000, 10), m(9, 300000, 1)], [m(0, 1, 1)], ['OCI.Linux.UIDMappings[1].ContainerID range 9..9 overlaps OCI.Linux.UIDMappings[0]']],
    ['host overlap', [m(0, 1, 1)], [m(0, 100000, 10), m(20, 100005, 1)], ['OCI.Linux.GIDMappings[1].HostID range 100005..100005 overlaps']],
    ['past u32', [m(4294967200, 1, 1000)], [m(0, 1, 1)], ['OCI.Linux.UIDMappings[0].ContainerID 4294967200 + Size 1000']],
    ['too many', Array.from({ length: 341 }, (_, i) => m(i, 1000 + i, 1)), [m(0, 1, 1)], ['OCI.Linux.UIDMappings has 341 entries', 'at most 340']],
    ['no gid mappings', [m(0, 1, 1)], [], ['OCI.Linux.GIDMappings is empty']],
  ] as [string, ReturnType<typeof m>[], ReturnType<typeof m>[], string[]][]) {
    rejects(t, () => containerPlanFromSpec(spec({}, { Namespaces: userns, UIDMappings: uid, GIDMappings: gid }), noSandbox), Code.INVALID_ARGUMENT, parts, name);
  }
});

t.test('SELinux labels are carried to the plan (the helper applies or drops them)', async (t) => {
  const p = containerPlanFromSpec(spec({ Process: { Args: ['sh'], SelinuxLabel: 'system_u:system_r:container_t:s0' } }, { MountLabel: 'system_u:object_r:container_file_t:s0' }), noSandbox);
  t.equal(p.process.selinuxLabel, 'system_u:system_r:container_t:s0');
  t.equal(p.mountLabel, 'system_u:object_r:container_file_t:s0');
});
