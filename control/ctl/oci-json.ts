/**
 * Conversion of an OCI runtime-spec `config.json` (lower camel-case keys, as runc and the
 * runtime-spec write them) into the agent protocol's `grpc.Spec` (protos/oci.proto, whose fields
 * are capitalised: Version, Process.User.UID, Root.Path, Linux.Namespaces[].Type, … but
 * Mount keeps lower-case destination/source/type/options).
 *
 * Follows upstream agent-ctl `utils.rs oci_to_ttrpc` (kata-containers 6e4d4c329a), with these
 * deliberate differences:
 *  - `hostname` is kept (upstream forces it to ""): a stand-alone run has no runtime that would
 *    set it later. `{clearHostname: true}` restores the upstream behaviour.
 *  - `process.rlimits` are copied (upstream leaves them out, a FIXME there).
 *  - seccomp syscall `names` and `errnoRet`, cpu `cpus`/`mems` and network `priorities` are
 *    copied (upstream drops them).
 *  - A device cgroup rule without `major`/`minor` becomes -1, the wildcard the agent expects
 *    (`resources_grpc_to_oci`); upstream sends 0, which would name device 0:0 instead.
 *  - A relative `root.path` is resolved with path.resolve against the bundle dir, so the result
 *    is absolute even when the bundle dir itself was given relative.
 * As upstream: `hooks` and `annotations` are dropped, as are keys the proto has no field for
 * (process.user.umask, linux.resources.unified/rdma, linux.personality, …).
 *
 * Source of the input keys: OCI runtime-spec config.md, config-linux.md (v1.1).
 */
import * as path from 'node:path';
import type { grpc } from '../../shared/proto';
import { Code, StatusError } from '../../shared/protocol';

/** Options of {@link ociJsonToSpec}. */
export interface OciJsonOptions {
  /** Send Hostname "" whatever config.json says, as upstream agent-ctl does. Default false. */
  clearHostname?: boolean;
  /**
   * Carry `hooks` (as grpc.Hooks) and `annotations`; default false (upstream agent-ctl drops
   * both). The OCI runtime CLI (control/ctl/oci.ts) sets it: the spec's hooks are the runtime's.
   */
  keepHooks?: boolean;
}

type Json = { [k: string]: unknown };

function fail(where: string, what: string, value: unknown): never {
  const got = value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value;
  throw new StatusError(Code.INVALID_ARGUMENT, `OCI spec: ${where} must be ${what}, got ${got}`);
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Typed access to one JSON object's keys, naming the key's path in errors. */
class Obj {
  constructor(
    readonly o: Json,
    readonly where: string,
  ) {}

  private at(key: string): string {
    return this.where === '' ? key : `${this.where}.${key}`;
  }

  has(key: string): boolean {
    return this.o[key] !== undefined && this.o[key] !== null;
  }

  str(key: string): string {
    const v = this.o[key];
    if (v === undefined || v === null) return '';
    if (typeof v !== 'string') fail(this.at(key), 'a string', v);
    return v;
  }

  bool(key: string): boolean {
    const v = this.o[key];
    if (v === undefined || v === null) return false;
    if (typeof v !== 'boolean') fail(this.at(key), 'a boolean', v);
    return v;
  }

  /** An integer; `dflt` when absent. */
  int(key: string, dflt = 0): number {
    const v = this.o[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'number' || !Number.isInteger(v)) fail(this.at(key), 'an integer', v);
    return v;
  }

  strs(key: string): string[] {
    const v = this.o[key];
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) fail(this.at(key), 'an array of strings', v);
    return v as string[];
  }

  ints(key: string): number[] {
    const v = this.o[key];
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v) || v.some((n) => typeof n !== 'number' || !Number.isInteger(n))) {
      fail(this.at(key), 'an array of integers', v);
    }
    return v as number[];
  }

  /** A string→string map (sysctl). */
  strMap(key: string): Record<string, string> {
    const v = this.o[key];
    if (v === undefined || v === null) return {};
    if (!isObject(v) || Object.values(v).some((s) => typeof s !== 'string')) fail(this.at(key), 'an object of strings', v);
    return { ...(v as Record<string, string>) };
  }

  /** A sub-object, or null when absent. */
  obj(key: string): Obj | null {
    const v = this.o[key];
    if (v === undefined || v === null) return null;
    if (!isObject(v)) fail(this.at(key), 'an object', v);
    return new Obj(v, this.at(key));
  }

  /** An array of objects (empty when absent). */
  objs(key: string): Obj[] {
    const v = this.o[key];
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) fail(this.at(key), 'an array of objects', v);
    return v.map((e, i) => {
      if (!isObject(e)) fail(`${this.at(key)}[${i}]`, 'an object', e);
      return new Obj(e, `${this.at(key)}[${i}]`);
    });
  }
}

function processToGrpc(p: Obj): grpc.Process.$Properties {
  const out: grpc.Process.$Properties = {
    Terminal: p.bool('terminal'),
    Args: p.strs('args'),
    Env: p.strs('env'),
    Cwd: p.str('cwd'),
    Rlimits: p.objs('rlimits').map((r) => ({ Type: r.str('type'), Hard: r.int('hard'), Soft: r.int('soft') })),
    NoNewPrivileges: p.bool('noNewPrivileges'),
    ApparmorProfile: p.str('apparmorProfile'),
    OOMScoreAdj: p.int('oomScoreAdj'),
    SelinuxLabel: p.str('selinuxLabel'),
  };
  const cs = p.obj('consoleSize');
  if (cs) out.ConsoleSize = { Height: cs.int('height'), Width: cs.int('width') };
  const u = p.obj('user');
  out.User = u
    ? { UID: u.int('uid'), GID: u.int('gid'), AdditionalGids: u.ints('additionalGids'), Username: u.str('username') }
    : { UID: 0, GID: 0, AdditionalGids: [], Username: '' };
  const caps = p.obj('capabilities');
  if (caps) {
    out.Capabilities = {
      Bounding: caps.strs('bounding'),
      Effective: caps.strs('effective'),
      Inheritable: caps.strs('inheritable'),
      Permitted: caps.strs('permitted'),
      Ambient: caps.strs('ambient'),
    };
  }
  return out;
}

function rootToGrpc(r: Obj, bundleDir: string): grpc.Root.$Properties {
  const p = r.str('path');
  let abs = p;
  if (p !== '' && !path.isAbsolute(p)) {
    if (bundleDir === '') {
      throw new StatusError(Code.INVALID_ARGUMENT, `OCI spec: root.path ${JSON.stringify(p)} is relative but no bundle dir was given`);
    }
    abs = path.resolve(bundleDir, p);
  }
  return { Path: abs, Readonly: r.bool('readonly') };
}

function mountToGrpc(m: Obj): grpc.Mount.$Properties {
  return { destination: m.str('destination'), source: m.str('source'), type: m.str('type'), options: m.strs('options') };
}

function idMapsToGrpc(maps: Obj[]): grpc.LinuxIDMapping.$Properties[] {
  return maps.map((m) => ({ HostID: m.int('hostID'), ContainerID: m.int('containerID'), Size: m.int('size') }));
}

function throttleToGrpc(devs: Obj[]): grpc.LinuxThrottleDevice.$Properties[] {
  return devs.map((d) => ({ Major: d.int('major'), Minor: d.int('minor'), Rate: d.int('rate') }));
}

function resourcesToGrpc(r: Obj): grpc.LinuxResources.$Properties {
  const out: grpc.LinuxResources.$Properties = {
    Devices: r.objs('devices').map((d) => ({
      Allow: d.bool('allow'),
      Type: d.str('type'),
      Major: d.int('major', -1),
      Minor: d.int('minor', -1),
      Access: d.str('access'),
    })),
    HugepageLimits: r.objs('hugepageLimits').map((h) => ({ Pagesize: h.str('pageSize'), Limit: h.int('limit') })),
  };
  const mem = r.obj('memory');
  if (mem) {
    out.Memory = {
      Limit: mem.int('limit'),
      Reservation: mem.int('reservation'),
      Swap: mem.int('swap'),
      Kernel: mem.int('kernel'),
      KernelTCP: mem.int('kernelTCP'),
      Swappiness: mem.int('swappiness'),
      DisableOOMKiller: mem.bool('disableOOMKiller'),
    };
  }
  const cpu = r.obj('cpu');
  if (cpu) {
    out.CPU = {
      Shares: cpu.int('shares'),
      Quota: cpu.int('quota'),
      Period: cpu.int('period'),
      RealtimeRuntime: cpu.int('realtimeRuntime'),
      RealtimePeriod: cpu.int('realtimePeriod'),
      Cpus: cpu.str('cpus'),
      Mems: cpu.str('mems'),
    };
  }
  const pids = r.obj('pids');
  if (pids) out.Pids = { Limit: pids.int('limit') };
  const bio = r.obj('blockIO');
  if (bio) {
    out.BlockIO = {
      Weight: bio.int('weight'),
      LeafWeight: bio.int('leafWeight'),
      WeightDevice: bio.objs('weightDevice').map((d) => ({
        Major: d.int('major'),
        Minor: d.int('minor'),
        Weight: d.int('weight'),
        LeafWeight: d.int('leafWeight'),
      })),
      ThrottleReadBpsDevice: throttleToGrpc(bio.objs('throttleReadBpsDevice')),
      ThrottleWriteBpsDevice: throttleToGrpc(bio.objs('throttleWriteBpsDevice')),
      ThrottleReadIOPSDevice: throttleToGrpc(bio.objs('throttleReadIOPSDevice')),
      ThrottleWriteIOPSDevice: throttleToGrpc(bio.objs('throttleWriteIOPSDevice')),
    };
  }
  const net = r.obj('network');
  if (net) {
    out.Network = {
      ClassID: net.int('classID'),
      Priorities: net.objs('priorities').map((p) => ({ Name: p.str('name'), Priority: p.int('priority') })),
    };
  }
  return out;
}

function seccompToGrpc(s: Obj): grpc.LinuxSeccomp.$Properties {
  return {
    DefaultAction: s.str('defaultAction'),
    Architectures: s.strs('architectures'),
    Flags: s.strs('flags'),
    Syscalls: s.objs('syscalls').map((sc) => {
      const out: grpc.LinuxSyscall.$Properties = {
        Names: sc.strs('names'),
        Action: sc.str('action'),
        Args: sc.objs('args').map((a) => ({
          Index: a.int('index'),
          Value: a.int('value'),
          ValueTwo: a.int('valueTwo'),
          Op: a.str('op'),
        })),
      };
      if (sc.has('errnoRet')) out.errnoret = sc.int('errnoRet');
      return out;
    }),
  };
}

function linuxToGrpc(l: Obj): grpc.Linux.$Properties {
  const out: grpc.Linux.$Properties = {
    UIDMappings: idMapsToGrpc(l.objs('uidMappings')),
    GIDMappings: idMapsToGrpc(l.objs('gidMappings')),
    Sysctl: l.strMap('sysctl'),
    CgroupsPath: l.str('cgroupsPath'),
    Namespaces: l.objs('namespaces').map((n) => ({ Type: n.str('type'), Path: n.str('path') })),
    Devices: l.objs('devices').map((d) => ({
      Path: d.str('path'),
      Type: d.str('type'),
      Major: d.int('major'),
      Minor: d.int('minor'),
      FileMode: d.int('fileMode'),
      UID: d.int('uid'),
      GID: d.int('gid'),
    })),
    RootfsPropagation: l.str('rootfsPropagation'),
    MaskedPaths: l.strs('maskedPaths'),
    ReadonlyPaths: l.strs('readonlyPaths'),
    MountLabel: l.str('mountLabel'),
  };
  const res = l.obj('resources');
  if (res) out.Resources = resourcesToGrpc(res);
  const sec = l.obj('seccomp');
  if (sec) out.Seccomp = seccompToGrpc(sec);
  const rdt = l.obj('intelRdt');
  if (rdt) out.IntelRdt = { L3CacheSchema: rdt.str('l3CacheSchema') };
  return out;
}

/**
 * Convert a parsed OCI runtime-spec config.json object to the agent protocol's grpc.Spec, as a
 * plain object with the proto's field names (ready for `grpc.Spec.fromObject`/`encode`, or for
 * `CreateContainerRequest.OCI`).
 *
 * - `json`: the parsed config.json (keys as in OCI runtime-spec config.md / config-linux.md).
 * - `bundleDir`: the bundle directory; a relative `root.path` is resolved against it.
 *   May be "" when root.path is absolute.
 * - `opts.clearHostname`: send Hostname "" (upstream agent-ctl behaviour); default keeps it.
 * - `opts.keepHooks`: carry hooks and annotations (the OCI CLI); default drops them as upstream.
 *
 * Sections absent from the input are absent from the result (Process, Root, Linux and their
 * optional sub-messages); Hooks and Annotations only with `opts.keepHooks`; Solaris and Windows never.
 *
 * Throws StatusError INVALID_ARGUMENT when `json` is not an object, a key has the wrong JSON
 * type (the message names the key path, e.g. `process.args`), or root.path is relative and
 * `bundleDir` is "".
 */
export function ociJsonToSpec(json: unknown, bundleDir: string, opts: OciJsonOptions = {}): grpc.Spec.$Properties {
  if (!isObject(json)) fail('the document', 'a JSON object', json);
  const s = new Obj(json, '');
  const spec: grpc.Spec.$Properties = {
    Version: s.str('ociVersion'),
    Hostname: opts.clearHostname ? '' : s.str('hostname'),
    Mounts: s.objs('mounts').map(mountToGrpc),
  };
  const proc = s.obj('process');
  if (proc) spec.Process = processToGrpc(proc);
  const root = s.obj('root');
  if (root) spec.Root = rootToGrpc(root, bundleDir);
  const linux = s.obj('linux');
  if (linux) spec.Linux = linuxToGrpc(linux);
  if (opts.keepHooks) {
    const hooks = s.obj('hooks');
    if (hooks) spec.Hooks = hooksToGrpc(hooks);
    const annotations = s.strMap('annotations');
    if (Object.keys(annotations).length > 0) spec.Annotations = annotations;
  }
  return spec;
}

/** config.md#posix-platform-hooks: each kind a list of {path, args, env, timeout}. */
function hooksToGrpc(h: Obj): grpc.Hooks.$Properties {
  const list = (key: string): grpc.Hook.$Properties[] =>
    h.objs(key).map((e) => ({ Path: e.str('path'), Args: e.strs('args'), Env: e.strs('env'), Timeout: e.int('timeout') }));
  return {
    Prestart: list('prestart'),
    CreateRuntime: list('createRuntime'),
    CreateContainer: list('createContainer'),
    StartContainer: list('startContainer'),
    Poststart: list('poststart'),
    Poststop: list('poststop'),
  };
}
