// kata-agent-ctl: argument parsing, remembered values, OCI config.json → grpc.Spec, the method
// table, and end-to-end runs of the CLI against a fake agent built from TtrpcServer.
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as protobuf from 'protobufjs';
import { grpc, google } from '../../shared/proto';
import { Code, StatusError } from '../../shared/protocol';
import { TtrpcServer, unaryHandler, type HandlerContext } from '../../control/ttrpc';
import { humanTimeToNs, parseCommandArgs, parseHexAddressList, signalNumber, strToBytes } from '../../control/ctl/args';
import { AgentClient } from '../../control/ctl/client';
import { AGENT_SERVICE, HEALTH_SERVICE, METHODS, METHOD_NAMES, resolveMethodName, type MethodName } from '../../control/ctl/methods';
import { ociJsonToSpec } from '../../control/ctl/oci-json';
import { formatResponseLine, printableBytes } from '../../control/ctl/output';
import { buildRequest, type RequestContext } from '../../control/ctl/requests';
import { commandListText, CtlSession } from '../../control/ctl/session';
import { examplesText, main as ctlMain } from '../../control/ctl/main';

// Compiled to dist/test/unit/, so the repository root is three levels up.
const repoRoot = path.resolve(__dirname, '..', '..', '..');
const bundleDir = path.join(repoRoot, 'test', 'fixtures', 'bundle');
const mainJs = path.join(repoRoot, 'dist', 'control', 'ctl', 'main.js');

function context(over: Partial<RequestContext> = {}): RequestContext {
  return { values: new Map(), autoValues: true, bundleDir: '', clearHostname: false, ...over };
}

/** The built request as a plain object with bytes as hex (for comparisons). */
function built(method: MethodName, args: string, ctx: RequestContext): Record<string, unknown> {
  const { request } = buildRequest(method, args, ctx);
  const codec = METHODS[method].request as unknown as { toObject(m: object, o: protobuf.IConversionOptions): Record<string, unknown> };
  const obj = codec.toObject(request, { longs: Number, enums: String, bytes: String, defaults: true });
  for (const [k, v] of Object.entries(obj)) {
    if (typeof v === 'string' && (k === 'data')) obj[k] = Buffer.from(v, 'base64').toString('hex');
  }
  return obj;
}

function rejectsCode(t: Test, fn: () => unknown, code: number, pattern: RegExp): void {
  try {
    fn();
    t.fail(`expected StatusError ${code}`);
  } catch (err) {
    t.ok(err instanceof StatusError, 'a StatusError');
    t.equal((err as StatusError).code, code, `code ${code}`);
    t.match((err as Error).message, pattern);
  }
}

// ---------------------------------------------------------------------------------------------
t.test('method table matches the services of protos/agent.proto and protos/health.proto', async (t) => {
  const root = new protobuf.Root();
  root.loadSync(['agent.proto', 'health.proto'].map((f) => path.join(repoRoot, 'protos', f)), { keepCase: true });
  root.resolveAll();
  const expected: Array<[string, string, string, string]> = [];
  for (const svc of [root.lookupService('grpc.AgentService'), root.lookupService('grpc.Health')]) {
    for (const m of svc.methodsArray) {
      expected.push([m.name, `grpc.${svc.name}`, m.resolvedRequestType!.fullName.slice(1), m.resolvedResponseType!.fullName.slice(1)]);
    }
  }
  t.equal(expected.length, 40, '38 AgentService + 2 Health rpcs in the protos');
  const actual = METHOD_NAMES.map((name) => {
    const m = METHODS[name];
    return [m.method, m.service, m.request.getTypeUrl('').slice(1), m.response.getTypeUrl('').slice(1)];
  });
  t.same(actual, expected, 'same names, services, request and response types, same order');
  t.equal(METHODS.Check.service, HEALTH_SERVICE);
  t.equal(METHODS.CreateContainer.service, AGENT_SERVICE);
  t.equal(resolveMethodName('GetIptables'), 'GetIPTables', 'upstream alias');
  t.equal(resolveMethodName('SetIptables'), 'SetIPTables', 'upstream alias');
  t.equal(resolveMethodName('getIPTables'), null);
});

// ---------------------------------------------------------------------------------------------
t.test('argument value parsing', async (t) => {
  const signals: Array<[string, number]> = [
    ['SIGKILL', 9], ['KILL', 9], ['kill', 9], ['9', 9], ['usr1', 10], ['SigTerm', 15], ['SIGCLD', 17], ['SIGCHLD', 17], ['hup', 1],
  ];
  for (const [name, n] of signals) t.equal(signalNumber(name), n, `signal ${name}`);
  rejectsCode(t, () => signalNumber('SIGFOO'), Code.INVALID_ARGUMENT, /invalid signal name: "SIGFOO"/);
  rejectsCode(t, () => signalNumber(''), Code.INVALID_ARGUMENT, /invalid signal/);
  t.equal(signalNumber('0'), 0, 'signal 0 (liveness check) is accepted, as by the agent');
  t.equal(signalNumber('64'), 64);
  rejectsCode(t, () => signalNumber('65'), Code.INVALID_ARGUMENT, /want 0\.\.64/);

  t.same(strToBytes('hello'), Buffer.from('hello'));
  t.same(strToBytes('hex:00ff10'), Buffer.from([0, 0xff, 0x10]));
  t.same(strToBytes('hex:'), Buffer.alloc(0));
  rejectsCode(t, () => strToBytes('hex:abc'), Code.INVALID_ARGUMENT, /invalid hex data/);
  rejectsCode(t, () => strToBytes('hex:zz'), Code.INVALID_ARGUMENT, /invalid hex data/);

  const times: Array<[string, number]> = [
    ['0', 0], ['99ns', 99], ['30us', 30_000], ['2ms', 2_000_000], ['5s', 5e9], ['7m', 420e9], ['1h 30m', 5400e9], ['1m30s', 90e9], ['1500', 1500],
  ];
  for (const [text, ns] of times) t.equal(humanTimeToNs(text), ns, `time ${text}`);
  rejectsCode(t, () => humanTimeToNs('5 parsecs'), Code.INVALID_ARGUMENT, /unknown time unit "parsecs"/);
  rejectsCode(t, () => humanTimeToNs('1.5s'), Code.INVALID_ARGUMENT, /invalid duration/);
  rejectsCode(t, () => humanTimeToNs('-5s'), Code.INVALID_ARGUMENT, /invalid duration/);

  t.same(parseHexAddressList('0x1c0000000,1d0000000'), [0x1c0000000, 0x1d0000000]);
  rejectsCode(t, () => parseHexAddressList('0xzz'), Code.INVALID_ARGUMENT, /invalid memory address/);
});

t.test('command argument text: json://, file://, key=value', async (t) => {
  t.same(parseCommandArgs(''), { document: null, pairs: [] });
  t.same(parseCommandArgs('cid=abc exec_id=e1 data=a=b'), {
    document: null,
    pairs: [['cid', 'abc'], ['exec_id', 'e1'], ['data', 'a=b']],
  }, 'the value is everything after the first =');
  t.same(parseCommandArgs('json://{"mem_block_size": true, "x": "a } b"} cid=z'), {
    document: { mem_block_size: true, x: 'a } b' },
    pairs: [['cid', 'z']],
  }, 'JSON with spaces and braces in strings, followed by key=value');
  t.same(parseCommandArgs(`data="hello world" path='/a b'`).pairs, [['data', 'hello world'], ['path', '/a b']], 'quoted values');

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ctl-args-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'req.json');
  fs.writeFileSync(file, '{"container_id": "from-file", "len": 7}');
  t.same(parseCommandArgs(`file://${file}`).document, { container_id: 'from-file', len: 7 });

  rejectsCode(t, () => parseCommandArgs('json://{"a":'), Code.INVALID_ARGUMENT, /invalid JSON in json:\/\//);
  rejectsCode(t, () => parseCommandArgs('json://[1,2]'), Code.INVALID_ARGUMENT, /must hold a JSON object/);
  rejectsCode(t, () => parseCommandArgs('json://{} json://{}'), Code.INVALID_ARGUMENT, /more than one/);
  rejectsCode(t, () => parseCommandArgs('bogus'), Code.INVALID_ARGUMENT, /unexpected argument "bogus"/);
  rejectsCode(t, () => parseCommandArgs(`file://${dir}/missing.json`), Code.NOT_FOUND, /cannot read .*missing\.json/);
});

t.test('requests built from key=value, json:// and file:// (table)', async (t) => {
  const cases: Array<[MethodName, string, Record<string, unknown>]> = [
    ['WaitProcess', 'cid=abc exec_id=e1', { container_id: 'abc', exec_id: 'e1' }],
    ['WaitProcess', 'cid=abc', { container_id: 'abc', exec_id: 'abc' }],
    ['SignalProcess', 'cid=abc', { container_id: 'abc', exec_id: 'abc', signal: 9 }],
    ['SignalProcess', 'cid=abc signal=usr1', { container_id: 'abc', exec_id: 'abc', signal: 10 }],
    ['SignalProcess', 'cid=abc exec_id= signal=TERM', { container_id: 'abc', exec_id: '', signal: 15 }],
    ['SignalProcess', 'cid=abc signal=15', { container_id: 'abc', exec_id: 'abc', signal: 15 }],
    ['SignalProcess', 'cid=abc signal=0', { container_id: 'abc', exec_id: 'abc', signal: 0 }],
    ['TtyWinResize', 'cid=c row=24 column=80', { container_id: 'c', exec_id: 'c', row: 24, column: 80 }],
    ['ReadStdout', 'cid=c len=4096', { container_id: 'c', exec_id: 'c', len: 4096 }],
    ['WriteStdin', 'cid=c data=hi', { container_id: 'c', exec_id: 'c', data: '6869' }],
    ['WriteStdin', 'cid=c data=hex:000aff', { container_id: 'c', exec_id: 'c', data: '000aff' }],
    ['RemoveContainer', 'cid=c timeout=10', { container_id: 'c', timeout: 10 }],
    ['CopyFile', 'path=/run/kata-containers/x file_size=3 file_mode=0o644 uid=-1 gid=5 offset=0 data=abc', {
      path: '/run/kata-containers/x', file_size: 3, file_mode: 0o644, dir_mode: 0, uid: -1, gid: 5, offset: 0, data: '616263',
    }],
    ['OnlineCPUMem', 'nb_cpus=2 cpu_only=true wait=false', { wait: false, nb_cpus: 2, cpu_only: true }],
    ['SetGuestDateTime', 'sec=1700000000 usec=5', { Sec: 1700000000, Usec: 5 }],
    ['MemHotplugByProbe', 'memHotplugProbeAddr=0x1c0000000', { memHotplugProbeAddr: [0x1c0000000] }],
    ['GetGuestDetails', '', { mem_block_size: true, mem_hotplug_probe: true }],
    ['GetGuestDetails', 'json://{"mem_block_size": false}', { mem_block_size: false, mem_hotplug_probe: true }],
    ['CreateSandbox', 'sid=sb1 hostname=box', { hostname: 'box', dns: [], storages: [], sandbox_pidns: false, sandbox_id: 'sb1', guest_hook_path: '', kernel_modules: [] }],
    ['GetVolumeStats', 'volume_guest_path=/v', { volume_guest_path: '/v' }],
    ['StatsContainer', 'json://{"container_id": "from-json"}', { container_id: 'from-json' }],
    ['PauseContainer', 'cid=p', { container_id: 'p' }],
    ['ResumeContainer', 'cid=p', { container_id: 'p' }],
    ['GetMetrics', '', {}],
    ['UpdateContainer', 'json://{"container_id": "u", "resources": {"Memory": {"Limit": 16777216}}}', {
      container_id: 'u',
      resources: {
        Devices: [], Memory: { Limit: 16777216, Reservation: 0, Swap: 0, Kernel: 0, KernelTCP: 0, Swappiness: 0, DisableOOMKiller: false },
        CPU: null, Pids: null, BlockIO: null, HugepageLimits: [], Network: null,
      },
    }],
    ['StatsContainer', 'json://{"container_id": "from-json"} cid=from-key', { container_id: 'from-key' }],
    ['WaitProcess', 'container_id=by-field-name', { container_id: 'by-field-name', exec_id: 'by-field-name' }],
    ['Check', 'json://{"service": "x"}', { service: 'x' }],
    ['GetIPTables', 'is_ipv6=true', { is_ipv6: true }],
    ['AddSwap', 'pci_path=02/1f', { PCIPath: [2, 31] }],
    ['GetVolumeStats', 'volume=/run/kata-containers/v', { volume_guest_path: '/run/kata-containers/v' }],
    ['ResizeVolume', 'volume=/run/kata-containers/v size=1048576', { volume_guest_path: '/run/kata-containers/v', size: 1048576 }],
    ['ReseedRandomDev', 'data=hex:00ff', { data: '00ff' }],
    ['SetPolicy', 'json://{"policy": "{\\"default\\": \\"deny\\"}"}', { policy: '{"default": "deny"}' }],
    ['CopyFile', 'path=/run/kata-containers/shared/containers/d file_mode=0o40755', {
      path: '/run/kata-containers/shared/containers/d', file_size: 0, file_mode: 0o40755, dir_mode: 0, uid: 0, gid: 0, offset: 0, data: '',
    }],
  ];
  for (const [method, args, expected] of cases) {
    t.same(built(method, args, context()), expected, `${method} ${args}`);
  }

  const policyFile = path.join(os.tmpdir(), `kata-ctl-policy-${process.pid}.json`);
  fs.writeFileSync(policyFile, '{"rpcs": {"ExecProcess": "deny"}}');
  t.teardown(() => fs.rmSync(policyFile, { force: true }));
  t.same(built('SetPolicy', `policy_file=file://${policyFile}`, context()), { policy: '{"rpcs": {"ExecProcess": "deny"}}' }, 'policy from a file');
  t.throws(() => built('AddSwap', 'pci_path=20', context()), /invalid PCI path "20"/);

  const noAuto = context({ autoValues: false });
  t.same(built('SignalProcess', 'cid=abc', noAuto), { container_id: 'abc', exec_id: '', signal: 0 }, 'no auto values: no exec_id, no default signal');
  t.same(built('GetGuestDetails', '', context({ autoValues: false })), { mem_block_size: false, mem_hotplug_probe: false });

  const auto = context();
  const created = built('CreateSandbox', '', auto);
  t.match(created.sandbox_id, /^[0-9a-f]{64}$/, 'generated sandbox id: 64 hex chars');
  t.equal(auto.values.get('sid'), created.sandbox_id, 'generated sid is remembered');

  rejectsCode(t, () => buildRequest('WaitProcess', 'json://{"containerid": "x"}', context()), Code.INVALID_ARGUMENT,
    /unknown field "containerid" in grpc\.WaitProcessRequest \(fields: container_id, exec_id\)/);
  rejectsCode(t, () => buildRequest('SignalProcess', 'cid=a signal=SIGNOPE', context()), Code.INVALID_ARGUMENT, /invalid signal name/);
  rejectsCode(t, () => buildRequest('TtyWinResize', 'row=-1', context()), Code.INVALID_ARGUMENT, /invalid row "-1"/);
  rejectsCode(t, () => buildRequest('CreateContainer', 'json://{"OCI": 5}', context()), Code.INVALID_ARGUMENT,
    /invalid CreateContainer request: .*OCI: object expected/);
  rejectsCode(t, () => buildRequest('CreateSandbox', 'dns=x', context()), Code.INVALID_ARGUMENT, /cannot set grpc\.CreateSandboxRequest\.dns/);
  rejectsCode(t, () => buildRequest('CreateContainer', 'cid=abc', context()), Code.INVALID_ARGUMENT, /needs an OCI spec/);

  const warned = buildRequest('Check', 'cid=abc', context());
  t.match(warned.warnings, [/key "cid" is not a field of grpc\.CheckRequest/], 'an unused key is reported');
});

t.test('values are remembered across the commands of a run', async (t) => {
  const ctx = context();
  t.same(built('WaitProcess', 'cid=c1', ctx), { container_id: 'c1', exec_id: 'c1' });
  t.same(built('StartContainer', '', ctx), { container_id: 'c1' }, 'cid remembered');
  t.same(built('SignalProcess', 'exec_id=e1 signal=hup', ctx), { container_id: 'c1', exec_id: 'e1', signal: 1 });
  t.same(built('SignalProcess', '', ctx), { container_id: 'c1', exec_id: 'e1', signal: 1 }, 'exec_id and signal remembered');
  t.same(built('WaitProcess', 'cid=c2', ctx), { container_id: 'c2', exec_id: 'c2' }, 'a new cid resets the remembered exec_id');
  t.same(built('WaitProcess', 'json://{"container_id": "c3"}', ctx), { container_id: 'c3', exec_id: 'c3' }, 'an id from the document is used');
  t.same(built('StatsContainer', '', ctx), { container_id: 'c3' }, 'and remembered');
  t.same(built('ReadStdout', 'len=10', ctx), { container_id: 'c3', exec_id: 'c3', len: 10 });
  t.same(built('ReadStderr', '', ctx), { container_id: 'c3', exec_id: 'c3', len: 10 }, 'len remembered');
  t.equal(ctx.values.get('cid'), 'c3');

  const gen = context();
  const first = built('StartContainer', '', gen);
  t.match(first.container_id, /^[0-9a-f]{64}$/, 'generated cid');
  t.same(built('WaitProcess', '', gen), { container_id: first.container_id, exec_id: first.container_id }, 'generated cid reused; exec_id = cid');
});

// ---------------------------------------------------------------------------------------------
t.test('OCI config.json → grpc.Spec (runc-style busybox bundle)', async (t) => {
  const json: unknown = JSON.parse(fs.readFileSync(path.join(bundleDir, 'config.json'), 'utf8'));
  const spec = ociJsonToSpec(json, bundleDir);
  t.equal(grpc.Spec.verify(spec), null, 'valid for grpc.Spec');
  t.equal(spec.Version, '1.0.2-dev');
  t.equal(spec.Hostname, 'busybox', 'hostname kept by default');
  t.same(spec.Root, { Path: path.join(bundleDir, 'rootfs'), Readonly: true }, 'relative root.path resolved against the bundle');
  t.same(spec.Process?.Args, ['sh', '-c', 'echo hello']);
  t.same(spec.Process?.User, { UID: 0, GID: 0, AdditionalGids: [10, 11], Username: '' });
  t.equal(spec.Process?.Cwd, '/');
  t.equal(spec.Process?.Terminal, false);
  t.equal(spec.Process?.NoNewPrivileges, true);
  t.same(spec.Process?.Env, ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'TERM=xterm']);
  t.same(spec.Process?.Capabilities?.Bounding, ['CAP_AUDIT_WRITE', 'CAP_KILL', 'CAP_NET_BIND_SERVICE']);
  t.same(spec.Process?.Capabilities?.Inheritable, []);
  t.same(spec.Process?.Rlimits, [{ Type: 'RLIMIT_NOFILE', Hard: 1024, Soft: 1024 }], 'rlimits copied');
  t.same(spec.Mounts?.map((m) => [m.destination, m.type, m.source]), [
    ['/proc', 'proc', 'proc'],
    ['/dev', 'tmpfs', 'tmpfs'],
    ['/dev/pts', 'devpts', 'devpts'],
    ['/dev/shm', 'tmpfs', 'shm'],
    ['/dev/mqueue', 'mqueue', 'mqueue'],
    ['/sys', 'sysfs', 'sysfs'],
  ]);
  t.same(spec.Mounts?.[0].options, [], 'absent options → []');
  t.same(spec.Mounts?.[5].options, ['nosuid', 'noexec', 'nodev', 'ro']);
  const linux = spec.Linux!;
  t.same(linux.Namespaces, [
    { Type: 'pid', Path: '' }, { Type: 'network', Path: '' }, { Type: 'ipc', Path: '' }, { Type: 'uts', Path: '' }, { Type: 'mount', Path: '' },
  ]);
  t.same(linux.UIDMappings, [{ HostID: 100000, ContainerID: 0, Size: 65536 }]);
  t.same(linux.Sysctl, { 'net.ipv4.ip_forward': '1' });
  t.equal(linux.CgroupsPath, '/kata-agent-ts/busybox');
  t.equal(linux.RootfsPropagation, 'rslave');
  t.equal(linux.MaskedPaths?.length, 10);
  t.same(linux.ReadonlyPaths, ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger']);
  t.same(linux.Resources?.Devices, [
    { Allow: false, Type: '', Major: -1, Minor: -1, Access: 'rwm' },
    { Allow: true, Type: 'c', Major: 1, Minor: 3, Access: 'rwm' },
  ], 'absent major/minor → -1 wildcard');
  t.equal(linux.Resources?.Memory?.Limit, 134217728);
  t.same(linux.Resources?.Pids, { Limit: 64 });
  t.same(linux.Seccomp?.Syscalls, [{ Names: ['kexec_load'], Action: 'SCMP_ACT_ERRNO', Args: [], errnoret: 1 }]);
  t.notOk('Hooks' in spec, 'hooks dropped');
  t.notOk('Annotations' in spec, 'annotations dropped');

  // Field casing survives the wire: encode, decode, check proto names.
  const back = grpc.Spec.toObject(grpc.Spec.decode(grpc.Spec.encode(spec).finish()), { longs: Number, defaults: true });
  t.equal(back.Process.User.UID, 0);
  t.same(back.Process.Args, ['sh', '-c', 'echo hello']);
  t.equal(back.Root.Path, path.join(bundleDir, 'rootfs'));
  t.same(back.Process.User.AdditionalGids, [10, 11]);
  t.equal(back.Linux.Namespaces[1].Type, 'network');
  t.equal(back.Mounts[3].destination, '/dev/shm');
  t.equal(back.Linux.Resources.Devices[0].Major, -1, 'int64 -1 round-trips');

  t.equal(ociJsonToSpec(json, bundleDir, { clearHostname: true }).Hostname, '', 'upstream behaviour on request');
  t.equal(ociJsonToSpec({ root: { path: '/abs/rootfs' } }, '').Root?.Path, '/abs/rootfs', 'absolute root.path unchanged');
  t.equal(ociJsonToSpec({ root: { path: 'rootfs' } }, 'rel/bundle').Root?.Path, path.resolve('rel/bundle', 'rootfs'), 'relative bundle dir resolved too');
  rejectsCode(t, () => ociJsonToSpec({ root: { path: 'rootfs' } }, ''), Code.INVALID_ARGUMENT, /relative but no bundle dir/);
  rejectsCode(t, () => ociJsonToSpec({ process: { args: 'sh' } }, ''), Code.INVALID_ARGUMENT, /process\.args must be an array of strings, got string/);
  rejectsCode(t, () => ociJsonToSpec({ linux: { namespaces: [{ type: 1 }] } }, ''), Code.INVALID_ARGUMENT, /linux\.namespaces\[0\]\.type must be a string/);
  rejectsCode(t, () => ociJsonToSpec([], ''), Code.INVALID_ARGUMENT, /must be a JSON object/);
});

t.test('CreateContainer and ExecProcess take the spec from the bundle or spec=file://', async (t) => {
  const ctx = context({ bundleDir });
  const { request } = buildRequest('CreateContainer', 'cid=abc', ctx);
  const req = request as grpc.CreateContainerRequest;
  t.equal(req.container_id, 'abc');
  t.equal(req.exec_id, 'abc');
  t.equal(req.OCI?.Root?.Path, path.join(bundleDir, 'rootfs'));
  t.same(req.OCI?.Process?.Args, ['sh', '-c', 'echo hello']);
  t.equal(req.OCI?.Hostname, 'busybox');

  const exec = buildRequest('ExecProcess', 'exec_id=e1', ctx).request as grpc.ExecProcessRequest;
  t.equal(exec.container_id, 'abc');
  t.equal(exec.exec_id, 'e1');
  t.same(exec.process?.Args, ['sh', '-c', 'echo hello'], 'process from the spec');

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ctl-spec-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'custom.json'), JSON.stringify({ process: { args: ['true'] }, root: { path: 'r' } }));
  const ctx2 = context({ clearHostname: true });
  const custom = buildRequest('CreateContainer', `cid=xyz spec=file://${dir}/custom.json`, ctx2).request as grpc.CreateContainerRequest;
  t.same(custom.OCI?.Process?.Args, ['true']);
  t.equal(custom.OCI?.Root?.Path, path.join(dir, 'r'), 'relative root against the spec file dir when no bundle');
  t.equal(ctx2.values.get('spec'), `${dir}/custom.json`, 'spec remembered');

  const noAuto = buildRequest('CreateContainer', 'cid=abc', context({ bundleDir, autoValues: false })).request as grpc.CreateContainerRequest;
  t.equal(noAuto.OCI, null, 'no spec without auto values');
});

t.test('response printing', async (t) => {
  t.equal(printableBytes(Buffer.from('hello\n')), 'hello\n');
  t.equal(printableBytes(Buffer.from([0xff, 0x00, 0x80])), 'base64:/wCA');
  t.equal(formatResponseLine({ data: Buffer.from('out') }), '{"data":"out"}');
  t.equal(formatResponseLine({ status: 0 }), '{"status":0}');
});

// ---------------------------------------------------------------------------------------------
// A fake agent: records every request it gets.

interface Seen {
  service: string;
  method: string;
  request: Record<string, unknown>;
  metadata: Record<string, string[]>;
}

async function fakeAgent(t: Test): Promise<{ address: string; seen: Seen[]; dir: string; hybridAddress: string; hybridLines: string[] }> {
  let hybrid: net.Server;
  const hybridLines: string[] = [];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ctl-e2e-'));
  const address = `unix://${dir}/s.sock`;
  const seen: Seen[] = [];
  const record = (ctx: HandlerContext, request: Record<string, unknown>): void => {
    seen.push({ service: ctx.service, method: ctx.method, request, metadata: ctx.metadata });
  };
  const asObject = (codec: { toObject(m: never, o: object): Record<string, unknown> }, m: unknown): Record<string, unknown> =>
    codec.toObject(m as never, { longs: Number, enums: String });
  const server = new TtrpcServer();
  server.register(HEALTH_SERVICE, 'Check', unaryHandler(grpc.CheckRequest, grpc.HealthCheckResponse, (req, ctx) => {
    record(ctx, asObject(grpc.CheckRequest, req));
    return { status: grpc.HealthCheckResponse.ServingStatus.SERVING };
  }));
  server.register(HEALTH_SERVICE, 'Version', unaryHandler(grpc.CheckRequest, grpc.VersionCheckResponse, (req, ctx) => {
    record(ctx, asObject(grpc.CheckRequest, req));
    return { agent_version: '3.3.0-alpha0', grpc_version: '0.0.1' };
  }));
  server.register(AGENT_SERVICE, 'WaitProcess', unaryHandler(grpc.WaitProcessRequest, grpc.WaitProcessResponse, (req, ctx) => {
    record(ctx, asObject(grpc.WaitProcessRequest, req));
    if (req.container_id !== 'running') throw new StatusError(Code.NOT_FOUND, `container ${JSON.stringify(req.container_id)} not found`);
    return { status: 0 };
  }));
  server.register(AGENT_SERVICE, 'CreateContainer', unaryHandler(grpc.CreateContainerRequest, google.protobuf.Empty, (req, ctx) => {
    record(ctx, asObject(grpc.CreateContainerRequest, req));
    return {};
  }));
  server.register(AGENT_SERVICE, 'ReadStdout', unaryHandler(grpc.ReadStreamRequest, grpc.ReadStreamResponse, (req, ctx) => {
    record(ctx, asObject(grpc.ReadStreamRequest, req));
    return { data: req.exec_id === 'bin' ? Buffer.from([0xff, 0xfe]) : Buffer.from('hello\n') };
  }));
  server.register(AGENT_SERVICE, 'SignalProcess', unaryHandler(grpc.SignalProcessRequest, google.protobuf.Empty, (req, ctx) => {
    record(ctx, asObject(grpc.SignalProcessRequest, req));
    return {};
  }));
  server.register(AGENT_SERVICE, 'DestroySandbox', unaryHandler(grpc.DestroySandboxRequest, google.protobuf.Empty, (req, ctx) => {
    record(ctx, asObject(grpc.DestroySandboxRequest, req));
    return {};
  }));
  server.register(AGENT_SERVICE, 'GetOOMEvent', unaryHandler(grpc.GetOOMEventRequest, grpc.OOMEvent, async (req, ctx) => {
    record(ctx, asObject(grpc.GetOOMEventRequest, req));
    // Long-poll that never fires: answers only when the deadline aborts the handler.
    await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve));
    throw ctx.signal.reason;
  }));
  await server.listen(address);
  hybrid = net.createServer((socket) => {
    socket.once('data', (line: Buffer) => {
      hybridLines.push(line.toString());
      socket.write('OK 1073741824\n');
      server.handleConnection(socket);
    });
  });
  await new Promise<void>((resolve) => hybrid.listen(path.join(dir, 'hv.sock'), resolve));
  t.teardown(async () => {
    await new Promise((resolve) => hybrid.close(resolve));
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { address, seen, dir, hybridAddress: `unix://${dir}/hv.sock`, hybridLines };
}

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [mainJs, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

t.test('CLI end to end: Check, Version, WaitProcess → NOT_FOUND', async (t) => {
  const agent = await fakeAgent(t);
  const r = await runCli(['connect', '--server-address', agent.address, '-c', 'Check', '-c', 'Version', '-c', 'WaitProcess cid=abc exec_id=abc', '-c', 'Check']);
  const lines = r.stdout.trim().split('\n');
  t.equal(lines.length, 2, 'two JSON lines on stdout');
  t.same(lines[0], 'Check: {"status":"SERVING"}', 'each response labelled with its command');
  t.same(JSON.parse(lines[1].replace(/^Version: /, '')), { grpc_version: '0.0.1', agent_version: '3.3.0-alpha0' });
  t.equal(r.stderr.trim(), 'NOT_FOUND: container "abc" not found', 'status on stderr');
  t.equal(r.code, 1, 'non-zero exit status');
  t.same(agent.seen.map((s) => `${s.service}/${s.method}`), ['grpc.Health/Check', 'grpc.Health/Version', 'grpc.AgentService/WaitProcess'],
    'the run stops at the first failure');
  t.same(agent.seen[2].request, { container_id: 'abc', exec_id: 'abc' });
  t.same(agent.seen[0].metadata, { 'agent-ctl-cfg': ['no-auto-values'] }, 'metadata sent with auto values on, as upstream');
});

t.test('CLI end to end: --ignore-errors, --no-auto-values, bundle spec, bytes output', async (t) => {
  const agent = await fakeAgent(t);
  const r = await runCli([
    'connect', '--server-address', agent.address, '--bundle-dir', bundleDir, '--ignore-errors',
    '-c', 'WaitProcess cid=nope',
    '-c', 'CreateContainer cid=running',
    '-c', 'WaitProcess',
    '-c', 'ReadStdout len=64',
    '-c', 'ReadStdout exec_id=bin',
    '-c', 'SignalProcess signal=term',
    '-c', 'Bogus',
  ]);
  t.equal(r.code, 0, '--ignore-errors: exit 0');
  t.same(r.stdout.trim().split('\n').map((l) => l.slice(0, l.indexOf(': '))), ['CreateContainer', 'WaitProcess', 'ReadStdout', 'ReadStdout', 'SignalProcess']);
  t.same(r.stdout.trim().split('\n').map((l) => JSON.parse(l.slice(l.indexOf(': ') + 2))), [
    {},
    { status: 0 },
    { data: 'hello\n' },
    { data: 'base64://4=' },
    {},
  ], 'Empty as {}, defaults shown, bytes as text or base64');
  t.match(r.stderr, /NOT_FOUND: container "nope" not found/);
  t.match(r.stderr, /ERROR: invalid command "Bogus"/);
  const create = agent.seen.find((s) => s.method === 'CreateContainer')!.request as { container_id: string; exec_id: string; OCI: Record<string, any> };
  t.equal(create.container_id, 'running');
  t.equal(create.exec_id, 'running');
  t.equal(create.OCI.Root.Path, path.join(bundleDir, 'rootfs'), 'the agent received the absolute rootfs path');
  t.same(create.OCI.Process.Args, ['sh', '-c', 'echo hello']);
  t.equal(create.OCI.Hostname, 'busybox');
  t.same(create.OCI.Linux.Namespaces.map((n: { Type: string }) => n.Type), ['pid', 'network', 'ipc', 'uts', 'mount']);
  const reads = agent.seen.filter((s) => s.method === 'ReadStdout').map((s) => s.request);
  t.same(reads, [{ container_id: 'running', exec_id: 'running', len: 64 }, { container_id: 'running', exec_id: 'bin', len: 64 }]);
  t.same(agent.seen.find((s) => s.method === 'SignalProcess')!.request, { container_id: 'running', exec_id: 'bin', signal: 15 });

  const n = await runCli(['connect', '--server-address', agent.address, '-n', '-c', 'Check json://{"service": "x"}']);
  t.equal(n.code, 0);
  t.same(agent.seen[agent.seen.length - 1].metadata, {}, 'no metadata with --no-auto-values');
  t.same(agent.seen[agent.seen.length - 1].request, { service: 'x' });
});

t.test('CLI end to end: --timeout, --hybrid-vsock, -l debug', async (t) => {
  const agent = await fakeAgent(t);
  const slow = await runCli(['connect', '--server-address', agent.address, '--timeout', '100ms', '-c', 'GetOOMEvent']);
  t.equal(slow.code, 1);
  t.match(slow.stderr, /^DEADLINE_EXCEEDED: /, 'the deadline ends the call');
  t.equal(agent.seen.filter((s) => s.method === 'GetOOMEvent').length, 1);

  const hv = await runCli(['connect', '--server-address', agent.hybridAddress, '--hybrid-vsock', '--hybrid-vsock-port', '1024', '-c', 'Check']);
  t.equal(hv.code, 0, hv.stderr);
  t.same(agent.hybridLines, ['CONNECT 1024\n'], 'hybrid vsock handshake as upstream');
  t.equal(hv.stdout, 'Check: {"status":"SERVING"}\n');

  const dbg = await runCli(['-l', 'debug', 'connect', '--server-address', agent.address, '-c', 'Check']);
  t.equal(dbg.code, 0);
  t.equal(dbg.stdout, 'Check: {"status":"SERVING"}\n', 'stdout keeps only the response');
  t.match(dbg.stderr, /"msg":"sending request"/, 'debug log on stderr');
});

t.test('CLI usage errors and offline commands', async (t) => {
  const noAddr = await runCli(['connect', '-c', 'Check']);
  t.equal(noAddr.code, 2);
  t.match(noAddr.stderr, /needs --server-address/);
  const badOpt = await runCli(['connect', '--server-address', 'unix:///x', '--frobnicate']);
  t.equal(badOpt.code, 2);
  const sid = await runCli(['generate-sid']);
  t.match(sid.stdout, /^[0-9a-f]{64}\n$/);
  const cid = await runCli(['generate-cid']);
  t.match(cid.stdout, /^[0-9a-f]{64}\n$/);
  t.not(sid.stdout, cid.stdout);
  const list = await runCli(['connect', '--server-address', 'unix:///nonexistent/s.sock', '-c', 'list']);
  t.equal(list.code, 0, 'list needs no agent');
  t.match(list.stdout, /CreateContainer \(grpc\.AgentService\)/);
  t.match(list.stdout, /Check \(grpc\.Health\)/);
  t.match(list.stdout, /GetIPTables \(grpc\.AgentService, alias GetIptables\)/);
  const down = await runCli(['connect', '--server-address', 'unix:///nonexistent/s.sock', '-c', 'Check']);
  t.equal(down.code, 1);
  t.match(down.stderr, /^UNAVAILABLE: cannot connect to unix:\/\/\/nonexistent\/s\.sock/);
  const badArg = await runCli(['connect', '--server-address', 'unix:///nonexistent/s.sock', '-c', 'SignalProcess signal=NOPE']);
  t.equal(badArg.code, 1);
  t.match(badArg.stderr, /ERROR: SignalProcess: invalid signal name: "NOPE"/);
});

t.test('AgentClient and CtlSession in-process (repeat, echo, quit, interactive)', async (t) => {
  const agent = await fakeAgent(t);
  const client = await AgentClient.connect(agent.address);
  t.teardown(() => client.close());
  const health = await client.call('Check', {});
  t.equal(health.status, grpc.HealthCheckResponse.ServingStatus.SERVING);
  t.same(await client.callObject('Version', { service: '' }), { grpc_version: '0.0.1', agent_version: '3.3.0-alpha0' });
  await t.rejects(client.call('WaitProcess', { container_id: 'x', exec_id: 'x' }), { code: Code.NOT_FOUND, message: 'container "x" not found' });
  await t.rejects(client.call('Check', { service: 5 } as never), { code: Code.INVALID_ARGUMENT, message: /invalid Check request/ });

  const out: string[] = [];
  const err: string[] = [];
  const session = new CtlSession({ serverAddress: agent.address, stdout: (l) => out.push(l), stderr: (l) => err.push(l) });
  t.teardown(() => session.close());
  const before = agent.seen.length;
  t.equal(await session.runAll(['repeat 3', 'Check', 'echo done', 'quit', 'Check']), 0);
  t.same(out, ['Check: {"status":"SERVING"}', 'Check: {"status":"SERVING"}', 'Check: {"status":"SERVING"}', 'done'], 'repeat 3 then echo; quit stops');
  t.equal(agent.seen.length - before, 3);
  t.same(err, []);

  out.length = 0;
  t.equal(await session.runAll(['DestroySandbox', 'Check']), 0);
  t.same(out, ['DestroySandbox: {}'], 'DestroySandbox ends the run');

  const { PassThrough } = await import('node:stream');
  const input = new PassThrough();
  const out2: string[] = [];
  const err2: string[] = [];
  const s2 = new CtlSession({ serverAddress: agent.address, stdout: (l) => out2.push(l), stderr: (l) => err2.push(l) });
  t.teardown(() => s2.close());
  const done = s2.runInteractive(input);
  input.write('WaitProcess cid=gone\n');
  input.write('Check\n');
  input.end('quit\nCheck\n');
  t.equal(await done, 0);
  t.same(out2.filter((l) => l.startsWith('Check: ')), ['Check: {"status":"SERVING"}'], 'interactive: goes on after a failure, stops at quit');
  t.same(err2, ['NOT_FOUND: container "gone" not found']);
});

t.test('ReadStdout/ReadStderr: len defaults to 64 KiB with auto values, an explicit len wins, none without', async (t) => {
  t.equal(built('ReadStdout', 'cid=abc', context()).len, 65536);
  t.equal(built('ReadStderr', 'cid=abc len=10', context()).len, 10);
  t.equal(built('ReadStdout', 'cid=abc', context({ autoValues: false })).len, 0);
});

t.test('examples show every guest rpc driven by name with key=value arguments', async (t) => {
  let out = '';
  const code = await ctlMain(['examples'], { stdout: (s: string) => void (out += s), stderr: () => undefined, stdin: process.stdin });
  t.equal(code, 0);
  for (const m of ['OnlineCPUMem nb_cpus=', 'MemHotplugByProbe memHotplugProbeAddr=', 'ReseedRandomDev data=', 'SetGuestDateTime sec=', 'AddSwap pci_path=', 'GetVolumeStats volume=', 'ResizeVolume volume=', 'CopyFile path=', 'SetPolicy policy_file=', 'GetGuestDetails']) {
    t.ok(out.includes(m), m);
  }
});

t.test('examples: every command shown builds (no example that cannot work)', async (t) => {
  const text = examplesText();
  const commands: string[] = [];
  for (const m of text.matchAll(/(?:^|\s)(?:-c|--cmd) (?:'([^']*)'|"([^"]*)"|(\S+))/g)) commands.push(m[1] ?? m[2] ?? m[3]);
  t.ok(commands.length >= 30, `${commands.length} example commands`);
  // Files an example creates itself (`> /tmp/x`) exist for the following commands.
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ctl-examples-'));
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const created = new Map<string, string>();
  for (const m of text.matchAll(/echo '([^']*)' > (\/\S+)/g)) {
    const file = path.join(tmp, path.basename(m[2]));
    fs.writeFileSync(file, m[1]);
    created.set(m[2], file);
  }
  for (let command of commands) {
    for (const [from, to] of created) command = command.split(from).join(to);
    command = command.replace('$container_id', 'c1').replace('$(date +%s)', '1700000000').replace('$bundle_dir', bundleDir);
    const space = command.indexOf(' ');
    const name = space < 0 ? command : command.slice(0, space);
    if (/^[a-z]/.test(name)) continue; // built-ins (repeat, sleep)
    const method = resolveMethodName(name);
    if (!method) {
      t.fail(`unknown method in example: ${command}`);
      continue;
    }
    t.doesNotThrow(() => buildRequest(method, space < 0 ? '' : command.slice(space + 1), context({ bundleDir, values: new Map([['cid', 'c1']]) })), command);
  }
});

t.test('list marks methods the agent does not implement (none now)', async (t) => {
  t.notMatch(commandListText().join('\n'), /not implemented/, 'all methods implemented');
  const marked = commandListText(new Set(['AddSwap'] as const));
  t.same(marked.filter((l) => l.includes('not implemented')), ['  AddSwap (grpc.AgentService) [not implemented by this agent]']);
});

t.test('json:// documents: OCI-style lowercase keys are refused with the path and the proto name, never dropped', async (t) => {
  const ctx = context({ autoValues: false });
  t.throws(() => buildRequest('CreateContainer', 'cid=c json://{"OCI": {"process": {"args": ["sh"]}}}', ctx), {
    code: Code.INVALID_ARGUMENT,
    message: /unknown field "process" at OCI.process of grpc.Spec \(did you mean "Process"\?/,
  });
  t.throws(() => buildRequest('CreateContainer', 'cid=c json://{"OCI": {"Process": {"Args": ["sh"], "User": {"uid": 0}}}}', ctx), {
    message: /unknown field "uid" at OCI.Process.User.uid of grpc.User \(did you mean "UID"\?/,
  });
  t.throws(() => buildRequest('UpdateRoutes', 'json://{"routes": {"Routes": [{"dest": "1.2.3.0/24", "bogus": 1}]}}', ctx), {
    message: /unknown field "bogus" at routes.Routes\[0\].bogus of types.Route \(fields: /,
  });
  const ok = built('CreateContainer', 'cid=c json://{"OCI": {"Process": {"Args": ["sh"]}, "Annotations": {"a": "b"}}}', ctx);
  t.same((ok.OCI as { Process: { Args: string[] } }).Process.Args, ['sh'], 'proto names accepted');
});

t.test('examples paste into a shell: no variable inside single quotes, no broken line continuation', async (t) => {
  const lines = examplesText().split('\n').filter((l) => l.trimStart().startsWith('$ '));
  for (const l of lines) {
    // A shell does not expand $x inside '...': the agent would get the literal "$container_id".
    for (const m of l.matchAll(/'([^']*)'/g)) t.notMatch(m[1], /\$[a-z_(]/, `no shell variable inside single quotes: ${l}`);
    // A template-literal "\<newline>" vanishes: the continuation turns into a run of spaces.
    t.notMatch(l.replace(/^\s*\$ /, ''), /\S {2,}-/, `no run of spaces before an option: ${l}`);
  }
  t.match(examplesText(), `--cmd "SignalProcess signal=usr1 cid=$container_id"`);
});

t.test('a connect command given as a subcommand says where it goes', async (t) => {
  for (const sub of ['list', 'Check']) {
    let err = '';
    const code = await ctlMain([sub], { stdout: () => undefined, stderr: (s: string) => void (err += s), stdin: process.stdin });
    t.equal(code, 2, sub);
    t.match(err, `invalid subcommand "${sub}"; "${sub}" is a command of connect: kata-agent-ctl connect --server-address ADDR -c ${sub}`);
  }
  let err = '';
  t.equal(await ctlMain(['bogus'], { stdout: () => undefined, stderr: (s: string) => void (err += s), stdin: process.stdin }), 2);
  t.notMatch(err, /is a command of connect/, 'no hint for an unknown word');
});
