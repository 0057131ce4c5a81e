// Wire facts of the Kata agent protocol (protos/*.proto) checked against numbers read from
// upstream kata-containers src/libs/protocols/protos at 6e4d4c329a.
import t from 'tap';
import * as path from 'node:path';
import * as protobuf from 'protobufjs';
import { grpc, google } from '../../shared/proto';

// Compiled to dist/test/unit/, so the repository root is three levels up.
const protoDir = path.resolve(__dirname, '..', '..', '..', 'protos');
const protoFiles = ['agent.proto', 'oci.proto', 'types.proto', 'health.proto', 'csi.proto'];

/** Our protos loaded by reflection (keepCase, as scripts/gen-protos.js generates them). */
function loadOurProtos(): protobuf.Root {
  const root = new protobuf.Root();
  root.loadSync(protoFiles.map((f) => path.join(protoDir, f)), { keepCase: true });
  root.resolveAll();
  return root;
}

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

t.test('CreateContainerRequest encodes to hand-computed bytes and round-trips', async (t) => {
  const request = {
    container_id: 'ab',
    exec_id: 'ab',
    OCI: {
      Version: '1',
      Process: { Terminal: true, User: { UID: 1000, GID: 5 }, Args: ['sh'], Env: ['A=1'], Cwd: '/' },
      Root: { Path: '/r' },
      Hostname: 'h',
      Linux: { Namespaces: [{ Type: 'pid' }, { Type: 'network', Path: '/n' }] },
    },
    sandbox_pidns: true,
    stdin_port: 1025,
    stderr_port: 11,
  };
  t.equal(grpc.CreateContainerRequest.verify(request), null, 'the request is valid for the schema');
  const bytes = grpc.CreateContainerRequest.encode(request).finish();

  // Process: Terminal(1,varint) User(3){UID(1)=1000 GID(2)=5} Args(4) Env(5) Cwd(6)
  const processHex = '0801' + '1a05' + '08e807' + '1005' + '22027368' + '2a03413d31' + '32012f';
  // Linux: Namespaces(6) [{Type(1)="pid"}, {Type(1)="network", Path(2)="/n"}]
  const linuxHex = '3205' + '0a03706964' + '320d' + '0a076e6574776f726b' + '12022f6e';
  // Spec: Version(1) Process(2) Root(3){Path(1)} Hostname(4) Linux(8)
  const specHex = '0a0131' + '1215' + processHex + '1a04' + '0a022f72' + '220168' + '4216' + linuxHex;
  t.equal(specHex.length / 2, 0x3b, 'hand-computed Spec length');
  const expected =
    '0a026162' + // container_id (1) "ab"
    '12026162' + // exec_id (2) "ab"
    '323b' + specHex + // OCI (6)
    '3801' + // sandbox_pidns (7) true
    '488108' + // stdin_port (9) 1025
    '580b'; // stderr_port (11) 11
  t.equal(hex(bytes), expected);
  t.equal(hex(bytes.subarray(0, 4)), '0a026162', 'container_id "ab" is 0a 02 61 62');

  const back = grpc.CreateContainerRequest.decode(bytes);
  t.equal(back.container_id, 'ab');
  t.equal(back.exec_id, 'ab');
  t.equal(back.stdin_port, 1025);
  t.equal(back.stdout_port, 0, 'an absent uint32 decodes as 0');
  t.equal(back.stderr_port, 11);
  t.equal(back.sandbox_pidns, true);
  t.same(back.OCI?.Process?.Args, ['sh']);
  t.same(back.OCI?.Process?.Env, ['A=1']);
  t.equal(back.OCI?.Process?.Cwd, '/');
  t.equal(back.OCI?.Process?.Terminal, true);
  t.equal(back.OCI?.Process?.User?.UID, 1000);
  t.equal(back.OCI?.Process?.User?.GID, 5);
  t.equal(back.OCI?.Root?.Path, '/r');
  t.equal(back.OCI?.Hostname, 'h');
  t.same(
    back.OCI?.Linux?.Namespaces?.map((ns) => [ns.Type, ns.Path]),
    [['pid', ''], ['network', '/n']],
  );
  t.same(
    grpc.CreateContainerRequest.toObject(back),
    grpc.CreateContainerRequest.toObject(grpc.CreateContainerRequest.fromObject(request)),
    'decode(encode(x)) equals x',
  );
});

t.test('WaitProcessResponse.status is field 1, int32', async (t) => {
  t.equal(hex(grpc.WaitProcessResponse.encode({ status: 137 }).finish()), '088901');
  // int32 negatives are ten-byte sign-extended varints (not zigzag as sint32 would be).
  t.equal(hex(grpc.WaitProcessResponse.encode({ status: -1 }).finish()), '08ffffffffffffffffff01');
  t.equal(grpc.WaitProcessResponse.decode(Buffer.from('08ffffffffffffffffff01', 'hex')).status, -1);
  const field = loadOurProtos().lookupType('grpc.WaitProcessResponse').fields.status;
  t.equal(field.id, 1);
  t.equal(field.type, 'int32');
  t.equal(field.repeated, false);
});

t.test('int64 fields decode as numbers; empty message encodes to no bytes', async (t) => {
  const bytes = grpc.SetGuestDateTimeRequest.encode({ Sec: 1706659200, Usec: 5 }).finish();
  t.equal(hex(bytes), '08809be6ad061005');
  const back = grpc.SetGuestDateTimeRequest.decode(bytes);
  t.equal(back.Sec, 1706659200);
  t.equal(typeof back.Sec, 'number');
  t.equal(grpc.SetGuestDateTimeRequest.decode(bytes).Usec, 5);
  t.equal(google.protobuf.Empty.encode({}).finish().length, 0);
});

t.test('field numbers of the messages the agent relies on match upstream', async (t) => {
  const root = loadOurProtos();
  // [message, field, number, type, label] as in upstream 6e4d4c329a.
  const table: Array<[string, string, number, string, 'optional' | 'repeated' | 'map']> = [
    ['grpc.CreateContainerRequest', 'container_id', 1, 'string', 'optional'],
    ['grpc.CreateContainerRequest', 'exec_id', 2, 'string', 'optional'],
    ['grpc.CreateContainerRequest', 'string_user', 3, 'StringUser', 'optional'],
    ['grpc.CreateContainerRequest', 'devices', 4, 'Device', 'repeated'],
    ['grpc.CreateContainerRequest', 'storages', 5, 'Storage', 'repeated'],
    ['grpc.CreateContainerRequest', 'OCI', 6, 'Spec', 'optional'],
    ['grpc.CreateContainerRequest', 'sandbox_pidns', 7, 'bool', 'optional'],
    ['grpc.CreateContainerRequest', 'shared_mounts', 8, 'SharedMount', 'repeated'],
    ['grpc.CreateContainerRequest', 'stdin_port', 9, 'uint32', 'optional'],
    ['grpc.CreateContainerRequest', 'stdout_port', 10, 'uint32', 'optional'],
    ['grpc.CreateContainerRequest', 'stderr_port', 11, 'uint32', 'optional'],
    ['grpc.ExecProcessRequest', 'container_id', 1, 'string', 'optional'],
    ['grpc.ExecProcessRequest', 'exec_id', 2, 'string', 'optional'],
    ['grpc.ExecProcessRequest', 'string_user', 3, 'StringUser', 'optional'],
    ['grpc.ExecProcessRequest', 'process', 4, 'Process', 'optional'],
    ['grpc.ExecProcessRequest', 'stdin_port', 5, 'uint32', 'optional'],
    ['grpc.ExecProcessRequest', 'stderr_port', 7, 'uint32', 'optional'],
    ['grpc.SignalProcessRequest', 'container_id', 1, 'string', 'optional'],
    ['grpc.SignalProcessRequest', 'exec_id', 2, 'string', 'optional'],
    ['grpc.SignalProcessRequest', 'signal', 3, 'uint32', 'optional'],
    ['grpc.WaitProcessRequest', 'container_id', 1, 'string', 'optional'],
    ['grpc.WaitProcessRequest', 'exec_id', 2, 'string', 'optional'],
    ['grpc.WaitProcessResponse', 'status', 1, 'int32', 'optional'],
    ['grpc.ReadStreamRequest', 'container_id', 1, 'string', 'optional'],
    ['grpc.ReadStreamRequest', 'exec_id', 2, 'string', 'optional'],
    ['grpc.ReadStreamRequest', 'len', 3, 'uint32', 'optional'],
    ['grpc.ReadStreamResponse', 'data', 1, 'bytes', 'optional'],
    ['grpc.WriteStreamRequest', 'container_id', 1, 'string', 'optional'],
    ['grpc.WriteStreamRequest', 'exec_id', 2, 'string', 'optional'],
    ['grpc.WriteStreamRequest', 'data', 3, 'bytes', 'optional'],
    ['grpc.WriteStreamResponse', 'len', 1, 'uint32', 'optional'],
    ['grpc.CloseStdinRequest', 'container_id', 1, 'string', 'optional'],
    ['grpc.CloseStdinRequest', 'exec_id', 2, 'string', 'optional'],
    ['grpc.RemoveContainerRequest', 'container_id', 1, 'string', 'optional'],
    ['grpc.RemoveContainerRequest', 'timeout', 2, 'uint32', 'optional'],
    ['grpc.CreateSandboxRequest', 'hostname', 1, 'string', 'optional'],
    ['grpc.CreateSandboxRequest', 'dns', 2, 'string', 'repeated'],
    ['grpc.CreateSandboxRequest', 'storages', 3, 'Storage', 'repeated'],
    ['grpc.CreateSandboxRequest', 'sandbox_pidns', 4, 'bool', 'optional'],
    ['grpc.CreateSandboxRequest', 'sandbox_id', 5, 'string', 'optional'],
    ['grpc.CreateSandboxRequest', 'guest_hook_path', 6, 'string', 'optional'],
    ['grpc.CreateSandboxRequest', 'kernel_modules', 7, 'KernelModule', 'repeated'],
    ['grpc.CheckRequest', 'service', 1, 'string', 'optional'],
    ['grpc.HealthCheckResponse', 'status', 1, 'ServingStatus', 'optional'],
    ['grpc.VersionCheckResponse', 'grpc_version', 1, 'string', 'optional'],
    ['grpc.VersionCheckResponse', 'agent_version', 2, 'string', 'optional'],
    ['grpc.Spec', 'Version', 1, 'string', 'optional'],
    ['grpc.Spec', 'Process', 2, 'Process', 'optional'],
    ['grpc.Spec', 'Root', 3, 'Root', 'optional'],
    ['grpc.Spec', 'Hostname', 4, 'string', 'optional'],
    ['grpc.Spec', 'Mounts', 5, 'Mount', 'repeated'],
    ['grpc.Spec', 'Annotations', 7, 'string', 'map'],
    ['grpc.Spec', 'Linux', 8, 'Linux', 'optional'],
    ['grpc.Process', 'Terminal', 1, 'bool', 'optional'],
    ['grpc.Process', 'User', 3, 'User', 'optional'],
    ['grpc.Process', 'Args', 4, 'string', 'repeated'],
    ['grpc.Process', 'Env', 5, 'string', 'repeated'],
    ['grpc.Process', 'Cwd', 6, 'string', 'optional'],
    ['grpc.Process', 'Capabilities', 7, 'LinuxCapabilities', 'optional'],
    ['grpc.Process', 'Rlimits', 8, 'POSIXRlimit', 'repeated'],
    ['grpc.Process', 'NoNewPrivileges', 9, 'bool', 'optional'],
    ['grpc.Process', 'OOMScoreAdj', 11, 'int64', 'optional'],
    ['grpc.User', 'UID', 1, 'uint32', 'optional'],
    ['grpc.User', 'GID', 2, 'uint32', 'optional'],
    ['grpc.User', 'AdditionalGids', 3, 'uint32', 'repeated'],
    ['grpc.User', 'Username', 4, 'string', 'optional'],
    ['grpc.Root', 'Path', 1, 'string', 'optional'],
    ['grpc.Root', 'Readonly', 2, 'bool', 'optional'],
    ['grpc.Mount', 'destination', 1, 'string', 'optional'],
    ['grpc.Mount', 'source', 2, 'string', 'optional'],
    ['grpc.Mount', 'type', 3, 'string', 'optional'],
    ['grpc.Mount', 'options', 4, 'string', 'repeated'],
    ['grpc.Linux', 'Namespaces', 6, 'LinuxNamespace', 'repeated'],
    ['grpc.Linux', 'MaskedPaths', 10, 'string', 'repeated'],
    ['grpc.Linux', 'ReadonlyPaths', 11, 'string', 'repeated'],
    ['grpc.LinuxNamespace', 'Type', 1, 'string', 'optional'],
    ['grpc.LinuxNamespace', 'Path', 2, 'string', 'optional'],
    ['grpc.LinuxSyscall', 'errnoret', 3, 'uint32', 'optional'],
  ];
  for (const [message, name, id, type, label] of table) {
    const field = root.lookupType(message).fields[name];
    t.ok(field, `${message}.${name} exists`);
    if (!field) continue;
    const rule = field instanceof protobuf.MapField ? 'map' : field.repeated ? 'repeated' : 'optional';
    t.same([field.id, field.type, rule], [id, type, label], `${message}.${name}`);
  }
  const annotations = root.lookupType('grpc.Spec').fields.Annotations;
  t.ok(annotations instanceof protobuf.MapField && annotations.keyType === 'string', 'Spec.Annotations is map<string, string>');
  t.same(
    root.lookupType('grpc.LinuxSyscall').oneofs.ErrnoRet?.fieldsArray.map((f) => f.name),
    ['errnoret'],
    'LinuxSyscall keeps its oneof ErrnoRet',
  );
  t.same(root.lookupEnum('grpc.HealthCheckResponse.ServingStatus').values, {
    UNKNOWN: 0,
    SERVING: 1,
    NOT_SERVING: 2,
  });
});

t.test('services have upstream method names in upstream order', async (t) => {
  const root = loadOurProtos();
  const agent = root.lookupService('grpc.AgentService');
  t.same(
    agent.methodsArray.map((m) => m.name),
    [
      'CreateContainer', 'StartContainer', 'RemoveContainer', 'ExecProcess', 'SignalProcess',
      'WaitProcess', 'UpdateContainer', 'UpdateEphemeralMounts', 'StatsContainer',
      'PauseContainer', 'ResumeContainer', 'RemoveStaleVirtiofsShareMounts',
      'WriteStdin', 'ReadStdout', 'ReadStderr', 'CloseStdin', 'TtyWinResize',
      'UpdateInterface', 'UpdateRoutes', 'ListInterfaces', 'ListRoutes', 'AddARPNeighbors',
      'GetIPTables', 'SetIPTables', 'GetMetrics',
      'CreateSandbox', 'DestroySandbox', 'OnlineCPUMem', 'ReseedRandomDev', 'GetGuestDetails',
      'MemHotplugByProbe', 'SetGuestDateTime', 'CopyFile', 'GetOOMEvent', 'AddSwap',
      'GetVolumeStats', 'ResizeVolume', 'SetPolicy',
    ],
  );
  t.equal(agent.methodsArray.length, 38);
  const io = (service: protobuf.Service, name: string): [string, string] => {
    const m = service.methods[name];
    m.resolve();
    return [m.resolvedRequestType!.fullName, m.resolvedResponseType!.fullName];
  };
  t.same(io(agent, 'CreateContainer'), ['.grpc.CreateContainerRequest', '.google.protobuf.Empty']);
  t.same(io(agent, 'WaitProcess'), ['.grpc.WaitProcessRequest', '.grpc.WaitProcessResponse']);
  t.same(io(agent, 'ReadStderr'), ['.grpc.ReadStreamRequest', '.grpc.ReadStreamResponse']);
  t.same(io(agent, 'UpdateInterface'), ['.grpc.UpdateInterfaceRequest', '.types.Interface']);
  t.same(io(agent, 'GetVolumeStats'), ['.grpc.VolumeStatsRequest', '.grpc.VolumeStatsResponse']);

  const health = root.lookupService('grpc.Health');
  t.same(health.methodsArray.map((m) => m.name), ['Check', 'Version']);
  t.same(io(health, 'Check'), ['.grpc.CheckRequest', '.grpc.HealthCheckResponse']);
  t.same(io(health, 'Version'), ['.grpc.CheckRequest', '.grpc.VersionCheckResponse']);
});
