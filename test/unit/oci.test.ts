// control/oci.ts: OCI spec → ContainerPlan / ProcessPlan conversion and validation.
import t, { type Test } from 'tap';
import type { grpc } from '../../shared/generated/protos';
import { Code, StatusError, type NamespacePlan } from '../../shared/protocol';
import {
  containerPlanFromSpec,
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
    ['user namespace', spec({}, { Namespaces: [{ Type: 'mount' }, { Type: 'user' }] }), Code.UNIMPLEMENTED, ['user namespace']],
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
  ];
  for (const [name, s, code, parts] of cases) rejects(t, () => containerPlanFromSpec(s, noSandbox), code, parts, name);
});

t.test('sysctl allow-list (rustjail validator.rs; field case B22)', async (t) => {
  const ipc: NamespacePlan[] = [{ type: 'ipc', path: '' }];
  const uts: NamespacePlan[] = [{ type: 'uts', path: '' }];
  const none: NamespacePlan[] = [];
  const allowed: Array<[Record<string, string>, NamespacePlan[]]> = [
    [{ 'net.ipv4.ip_unprivileged_port_start': '0', 'net.ipv4.ping_group_range': '0 2147483647' }, none],
    [{ 'kernel.shm_rmid_forced': '1', 'kernel.msgmax': '8192', 'kernel.sem': '1 2 3 4' }, ipc],
    [{ 'fs.mqueue.msg_max': '10' }, ipc],
    [{ 'kernel.domainname': 'example.com' }, uts],
  ];
  for (const [sysctl, ns] of allowed) t.doesNotThrow(() => validateSysctl(sysctl, ns), JSON.stringify(sysctl));

  const refused: Array<[Record<string, string>, NamespacePlan[], string]> = [
    [{ 'kernel.shmmax': '1' }, none, 'ipc namespace'],
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

  rejects(
    t,
    () => containerPlanFromSpec(spec(), { sandboxPidns: true, sandbox: { namespaces: [], pidns: null } }),
    Code.FAILED_PRECONDITION,
    ['sandbox does not have a shared pid namespace'],
    'sandbox_pidns without a sandbox pidns',
  );
});
