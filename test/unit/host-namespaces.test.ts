// Host-namespace mode (agent and helper --allow-host-namespaces; control/oci.ts "Host-namespace
// mode", helper/ops/plan.ts PlanCheckOptions.allowHostNamespaces): what control accepts and how
// it rewrites namespaces with the mode off (exactly as before) and on, what the helper accepts
// with its own switch off and on, and that a helper whose switch is off refuses a plan a control
// plane with the switch on (or a compromised one) sends.
//
// Own file: the mock backend reaps every child of this process (helper/ops/reaper.ts).
import t, { type Test } from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { grpc } from '../../shared/generated/protos';
import { Code, StatusError, type ContainerPlan } from '../../shared/protocol';
import { containerPlanFromSpec, type ContainerPlanOptions } from '../../control/oci';
import { serializeCreatePlan, serializeExecPlan, validateContainerPlan, validateProcessPlan, type PlanCheckOptions } from '../../helper/ops/plan';
import { createMockBackend } from '../../helper/mock/backend';
import { parseHelperArgs } from '../../helper/main';
import { loadConfig } from '../../control/config';
import { standaloneBanner } from '../../control/standalone';
import { minimalContainerPlan, processPlan } from '../lib/helper-fixtures';

const SANDBOX_IPC = '/run/kata-agent/sandbox-ns/ipc';
const SANDBOX_UTS = '/run/kata-agent/sandbox-ns/uts';
const off: ContainerPlanOptions = {
  sandboxPidns: false,
  sandbox: { namespaces: [{ type: 'ipc', path: SANDBOX_IPC }, { type: 'uts', path: SANDBOX_UTS }], pidns: '/proc/77/ns/pid' },
};
const on: ContainerPlanOptions = { ...off, allowHostNamespaces: true };

function spec(namespaces: grpc.LinuxNamespace.$Properties[], linux: Partial<grpc.Linux.$Properties> = {}, over: Partial<grpc.Spec.$Properties> = {}): grpc.Spec.$Properties {
  return {
    Version: '1.0.2',
    Root: { Path: '/run/bundle/rootfs' },
    Process: { Args: ['sh'], Env: ['PATH=/bin'], Cwd: '/', User: { UID: 0, GID: 0 } },
    Linux: { Namespaces: namespaces, ...linux },
    ...over,
  };
}

/** Expect `fn` to throw a StatusError with `code` whose message matches every part. */
function rejects(t: Test, fn: () => unknown, code: number, parts: (string | RegExp)[], name: string): void {
  try {
    fn();
    t.fail(`${name}: expected an error`);
  } catch (err) {
    t.ok(err instanceof StatusError, `${name}: StatusError`);
    t.equal((err as StatusError).code, code, `${name}: code ${code} (${(err as Error).message})`);
    for (const p of parts) t.match((err as Error).message, p, `${name}: message names ${String(p)}`);
  }
}

t.test('control, mode off: as before, and the refusals name the option', async (t) => {
  rejects(t, () => containerPlanFromSpec(spec([{ Type: 'pid' }]), off), Code.INVALID_ARGUMENT, ['OCI.Linux.Namespaces', 'mount namespace', '--allow-host-namespaces'], 'no mount namespace');
  rejects(
    t,
    () => containerPlanFromSpec(spec([{ Type: 'mount' }, { Type: 'user', Path: '/proc/9/ns/user' }]), off),
    Code.UNIMPLEMENTED,
    ['/proc/9/ns/user', '--allow-host-namespaces'],
    'user namespace path',
  );
  const p = containerPlanFromSpec(spec([{ Type: 'mount' }, { Type: 'ipc', Path: '/proc/9/ns/ipc' }, { Type: 'uts' }, { Type: 'network', Path: '/proc/9/ns/net' }]), off);
  t.same(
    p.namespaces,
    [
      { type: 'mount', path: '' },
      { type: 'ipc', path: SANDBOX_IPC },
      { type: 'uts', path: SANDBOX_UTS },
      { type: 'network', path: '/proc/9/ns/net' },
      { type: 'pid', path: '' },
    ],
    'ipc/uts (even with a path) get the sandbox\'s, a missing pid a new one, other paths go to the helper',
  );
});

t.test('control, mode on: missing namespaces stay missing, paths are kept, the Kata rewrite applies to entries without a path', async (t) => {
  t.same(containerPlanFromSpec(spec([]), on).namespaces, [], 'no namespace at all: every one shared with the agent');
  const p = containerPlanFromSpec(
    spec([
      { Type: 'mount', Path: '/proc/9/ns/mnt' },
      { Type: 'ipc', Path: '/proc/9/ns/ipc' },
      { Type: 'uts' },
      { Type: 'pid', Path: '/proc/9/ns/pid_for_children' },
      { Type: 'user', Path: '/proc/9/ns/user' },
    ]),
    on,
  );
  t.same(
    p.namespaces,
    [
      { type: 'mount', path: '/proc/9/ns/mnt' },
      { type: 'ipc', path: '/proc/9/ns/ipc' },
      { type: 'uts', path: SANDBOX_UTS },
      { type: 'pid', path: '/proc/9/ns/pid_for_children' },
      { type: 'user', path: '/proc/9/ns/user' },
    ],
    'explicit paths joined as given; uts without a path → the sandbox\'s',
  );
  t.equal(p.idMappings, undefined, 'a joined user namespace takes no mappings');
  t.same(containerPlanFromSpec(spec([{ Type: 'mount' }, { Type: 'pid' }]), on).namespaces, [{ type: 'mount', path: '' }, { type: 'pid', path: '' }], 'pid without a path: a new one');
  t.same(
    containerPlanFromSpec(spec([{ Type: 'mount' }]), { ...on, sandboxPidns: true }).namespaces,
    [{ type: 'mount', path: '' }, { type: 'pid', path: '/proc/77/ns/pid' }],
    'sandbox_pidns still gives the sandbox pid namespace',
  );
  rejects(
    t,
    () => containerPlanFromSpec(spec([{ Type: 'user', Path: '/proc/9/ns/user' }], { UIDMappings: [{ ContainerID: 0, HostID: 1000, Size: 1 }] }), on),
    Code.INVALID_ARGUMENT,
    ['UIDMappings', '/proc/9/ns/user'],
    'mappings with a joined user namespace',
  );
  rejects(t, () => containerPlanFromSpec(spec([{ Type: 'network', Path: 'proc/9/ns/net' }]), on), Code.INVALID_ARGUMENT, ['OCI.Linux.Namespaces[0].Path', 'absolute'], 'relative path');
  rejects(t, () => containerPlanFromSpec(spec([{ Type: 'ipc', Path: '/proc/9/ns/net' }]), on), Code.INVALID_ARGUMENT, ['OCI.Linux.Namespaces[0].Path', 'not ipc'], 'path of another type');
});

t.test('control, mode on without a mount namespace: what would change the agent\'s mounts is refused', async (t) => {
  rejects(t, () => containerPlanFromSpec(spec([], { MaskedPaths: ['/proc/kcore'] }), on), Code.INVALID_ARGUMENT, ['OCI.Linux.MaskedPaths', 'mount namespace'], 'masked paths');
  rejects(t, () => containerPlanFromSpec(spec([], { ReadonlyPaths: ['/proc/sys'] }), on), Code.INVALID_ARGUMENT, ['OCI.Linux.ReadonlyPaths'], 'read-only paths');
  rejects(t, () => containerPlanFromSpec(spec([], {}, { Root: { Path: '/run/bundle/rootfs', Readonly: true } }), on), Code.INVALID_ARGUMENT, ['OCI.Root.Readonly'], 'read-only root');
  rejects(t, () => containerPlanFromSpec(spec([], { RootfsPropagation: 'shared' }), on), Code.INVALID_ARGUMENT, ['OCI.Linux.RootfsPropagation'], 'rootfs propagation');
  t.ok(containerPlanFromSpec(spec([{ Type: 'mount' }], { MaskedPaths: ['/proc/kcore'] }), on), 'with a mount namespace masked paths are fine');
});

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'host-ns-'));
const rootfs = path.join(tmp, 'rootfs');
fs.mkdirSync(rootfs);
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
const helperOff: PlanCheckOptions = { hostChecks: true, hostCgroups: { unified: true, v1: [] }, namespacePathAllowed: () => false };
const helperOn: PlanCheckOptions = { ...helperOff, allowHostNamespaces: true };
const hplan = (over: Partial<ContainerPlan>): ContainerPlan => minimalContainerPlan(['true'], { rootfs, devicesAllowAll: true, ...over });

t.test('helper, switch off: no plan without a new mount and a pid namespace, no foreign path, no user path', async (t) => {
  rejects(t, () => validateContainerPlan(hplan({ namespaces: [{ type: 'pid', path: '' }] }), helperOff), Code.INVALID_ARGUMENT, ['mount namespace', '--allow-host-namespaces'], 'no mount namespace');
  rejects(t, () => validateContainerPlan(hplan({ namespaces: [{ type: 'mount', path: '/proc/self/ns/mnt' }, { type: 'pid', path: '' }] }), { ...helperOff, namespacePathAllowed: () => true }), Code.INVALID_ARGUMENT, ['new mount namespace', '--allow-host-namespaces'], 'joined mount namespace (even one of this sandbox)');
  rejects(t, () => validateContainerPlan(hplan({ namespaces: [{ type: 'mount', path: '' }] }), helperOff), Code.INVALID_ARGUMENT, ['pid namespace', '--allow-host-namespaces'], 'no pid namespace');
  rejects(
    t,
    () => validateContainerPlan(hplan({ namespaces: [{ type: 'mount', path: '' }, { type: 'pid', path: '' }, { type: 'network', path: '/proc/self/ns/net' }] }), helperOff),
    Code.INVALID_ARGUMENT,
    ['/proc/self/ns/net', 'not a network namespace of this sandbox', '--allow-host-namespaces'],
    'a path outside the sandbox',
  );
  rejects(
    t,
    () => validateContainerPlan(hplan({ namespaces: [{ type: 'mount', path: '' }, { type: 'pid', path: '' }, { type: 'user', path: '/proc/self/ns/user' }] }), helperOff),
    Code.UNIMPLEMENTED,
    ['user namespace', '--allow-host-namespaces'],
    'a user namespace path',
  );
  const v = validateContainerPlan(hplan({}), helperOff);
  t.notOk(serializeCreatePlan(v).toString().includes('hostns'), 'no hostns record without the switch');
});

t.test('helper, switch on: shared and joined namespaces pass, with kata-init told so', async (t) => {
  const v = validateContainerPlan(hplan({ namespaces: [] }), helperOn);
  t.same(v.namespaces, [], 'no namespace');
  const records = serializeCreatePlan(v).toString().split('\0');
  t.ok(records.join(' ').includes('hostns 1'), 'the hostns record');
  t.notOk(records.includes('ns'), 'no ns record');
  const j = validateContainerPlan(
    hplan({ namespaces: [{ type: 'mount', path: '/proc/self/ns/mnt' }, { type: 'user', path: '/proc/self/ns/user' }, { type: 'network', path: '/proc/self/ns/net' }] }),
    helperOn,
  );
  t.same(j.namespaces.map((n) => n.path), ['/proc/self/ns/mnt', '/proc/self/ns/user', '/proc/self/ns/net'], 'any existing namespace file, a user namespace too');
  rejects(t, () => validateContainerPlan(hplan({ namespaces: [{ type: 'network', path: '/nonexistent/net' }] }), helperOn), Code.INVALID_ARGUMENT, ['does not exist'], 'a missing file');
  const shared = (over: Partial<ContainerPlan>, what: string) =>
    rejects(t, () => validateContainerPlan(hplan({ namespaces: [], ...over }), helperOn), Code.INVALID_ARGUMENT, [what, 'mount namespace'], `${what} without a mount namespace`);
  shared({ maskedPaths: ['/proc/kcore'] }, 'maskedPaths');
  shared({ readonlyPaths: ['/proc/sys'] }, 'readonlyPaths');
  shared({ readonly: true }, 'readonly');
  shared({ rootfsPropagation: 'shared' }, 'rootfsPropagation');
  shared({ devicesAllowAll: false }, 'nodev');
  const exec = serializeExecPlan([], validateProcessPlan(processPlan(['true'])), undefined, [], '/proc/42/root').toString().split('\0');
  t.equal(exec[exec.indexOf('root') + 1], '/proc/42/root', 'an exec into a chrooted container gets its init\'s root');
});

t.test('attack: a helper whose switch is off refuses what a control plane with the switch sends', async (t) => {
  const backend = createMockBackend(); // allowHostNamespaces off
  t.teardown(() => backend.shutdown());
  const asked = containerPlanFromSpec(spec([]), { ...on, containerId: 'hostns' });
  t.same(asked.namespaces, [], 'control (switch on) asks for no namespace');
  await t.rejects(backend.createContainer({ containerId: 'hostns', plan: { ...asked, rootfs, devicesAllowAll: true } }), {
    code: Code.INVALID_ARGUMENT,
    message: /mount namespace.*--allow-host-namespaces/,
  });
  const userPath = containerPlanFromSpec(spec([{ Type: 'mount' }, { Type: 'user', Path: '/proc/self/ns/user' }]), on);
  await t.rejects(backend.createContainer({ containerId: 'hostns-user', plan: { ...userPath, rootfs } }), {
    code: Code.UNIMPLEMENTED,
    message: /--allow-host-namespaces/,
  });
});

t.test('the switches: agent flag/env, helper flag/env, both off by default', async (t) => {
  const cfg = (argv: string[], env: NodeJS.ProcessEnv) => {
    const r = loadConfig(argv, env, { cmdline: '' });
    return r.help ? undefined : r.config.allowHostNamespaces === true;
  };
  t.equal(cfg([], {}), false, 'agent: off by default');
  t.equal(cfg(['--allow-host-namespaces'], {}), true, 'agent: --allow-host-namespaces');
  t.equal(cfg([], { KATA_AGENT_ALLOW_HOST_NAMESPACES: '1' }), true, 'agent: KATA_AGENT_ALLOW_HOST_NAMESPACES=1');
  t.throws(() => cfg([], { KATA_AGENT_ALLOW_HOST_NAMESPACES: 'maybe' }), /KATA_AGENT_ALLOW_HOST_NAMESPACES/, 'agent: a bad value is refused');
  const toml = path.join(tmp, 'agent.toml');
  fs.writeFileSync(toml, 'allow_host_namespaces = true\n');
  t.equal(cfg(['--config', toml], {}), true, 'agent: TOML allow_host_namespaces');
  fs.writeFileSync(toml, 'allow_host_namespaces = "yes"\n');
  t.throws(() => cfg(['--config', toml], {}), /allow_host_namespaces/, 'agent: a TOML value of the wrong type is refused');
  t.equal(parseHelperArgs([], {}).allowHostNamespaces, false, 'helper: off by default');
  t.equal(parseHelperArgs(['--allow-host-namespaces'], {}).allowHostNamespaces, true, 'helper: --allow-host-namespaces');
  t.equal(parseHelperArgs([], { KATA_AGENT_ALLOW_HOST_NAMESPACES: 'true' }).allowHostNamespaces, true, 'helper: KATA_AGENT_ALLOW_HOST_NAMESPACES=true');
  t.equal(parseHelperArgs([], { KATA_AGENT_DEBUG_CONSOLE: '1' }).allowHostNamespaces, false, 'helper: another switch does not turn it on');
  const base = { address: 'unix:///r/agent.sock', runDir: '/r', controlUser: 'nobody', controlLog: 'c', helperLog: 'h', debugAddr: '', pid: 1 };
  t.match(standaloneBanner({ ...base, config: { debugConsole: false, debugConsoleVport: 0, allowHostNamespaces: true } }), /host namespaces: allowed/, 'the stand-alone banner says so');
  t.notMatch(standaloneBanner({ ...base, config: { debugConsole: false, debugConsoleVport: 0 } }), /host namespaces/, 'not shown when off');
});
