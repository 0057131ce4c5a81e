// Host-namespace mode (agent and helper --allow-host-namespaces; docs/ARCHITECTURE.md "Host
// namespaces"), through the real agent and helper: a container joins the net/uts/ipc
// namespaces of an `unshare` process by path; a container whose spec has no namespaces shares
// every namespace of the helper (runtime-tools linux_ns_itype), runs chrooted in its rootfs
// (exec too) and leaves no mount behind; and a helper without its own switch refuses what a
// control plane with the switch asks for (the control plane is not trusted).
import t, { type Test } from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AgentHarness, Code, expectCode, skipReason } from './lib/agent-harness';
import { readMountPoints } from '../../helper/ops/mount';

const ALL = ['mnt', 'pid', 'net', 'ipc', 'uts', 'cgroup', 'user'];
const FLAG = ['--allow-host-namespaces'];
/** Device rules that allow everything: no nodev stand-in, which a shared mount namespace refuses. */
const ALLOW_DEVICES = { devices: [{ allow: true, type: 'a', major: -1, minor: -1, access: 'rwm' }] };

const skip = skipReason() ?? (spawnSync('unshare', ['--version']).status === 0 ? undefined : 'unshare (util-linux) is not installed');

/** `unshare <flags> --fork sleep 1000`, once the unshare process is in its new namespaces. */
async function unshared(t: Test, flags: string[], types: string[]): Promise<ChildProcess> {
  const child = spawn('unshare', [...flags, '--fork', 'sleep', '1000'], { stdio: 'ignore', detached: true });
  t.teardown(() => {
    try {
      process.kill(-(child.pid ?? 0), 'SIGKILL');
    } catch {
      // already gone
    }
  });
  for (let i = 0; i < 100; i++) {
    if (types.every((ty) => nsLink(child.pid ?? 0, ty) !== nsLink(process.pid, ty))) return child;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`unshare ${flags.join(' ')} did not enter its namespaces`);
}

function nsLink(pid: number, type: string): string {
  try {
    return fs.readlinkSync(`/proc/${pid}/ns/${type}`);
  } catch {
    return '';
  }
}

if (skip) {
  t.plan(0, skip);
} else {
  const h = new AgentHarness('hostns');
  t.before(async () => {
    await h.start('kata-hostns', FLAG, FLAG);
  });
  t.teardown(() => h.dispose());

  t.test('a container joins the net, uts and ipc namespaces of another process by path', async (t) => {
    const u = await unshared(t, ['--net', '--uts', '--ipc'], ['net', 'uts', 'ipc']);
    const pid = u.pid ?? 0;
    const r = await h.runToEnd(t, ['sh', '-c', 'for n in net uts ipc; do readlink /proc/self/ns/$n; done'], {
      namespaces: [
        { type: 'mount' },
        { type: 'pid' },
        { type: 'network', path: `/proc/${pid}/ns/net` },
        { type: 'uts', path: `/proc/${pid}/ns/uts` },
        { type: 'ipc', path: `/proc/${pid}/ns/ipc` },
      ],
    });
    t.equal(r.status, 0, r.stderr);
    t.same(r.stdout.split('\n').filter(Boolean), ['net', 'uts', 'ipc'].map((n) => nsLink(pid, n)), "the unshare process's namespaces, not the sandbox's");
  });

  t.test('a container joins a user namespace by path', async (t) => {
    const u = await unshared(t, ['--user', '--map-root-user'], ['user']);
    const pid = u.pid ?? 0;
    const spec = h.spec(['sh', '-c', 'readlink /proc/self/ns/user; cat /proc/self/uid_map'], {
      namespaces: [{ type: 'mount' }, { type: 'pid' }, { type: 'user', path: `/proc/${pid}/ns/user` }],
      resources: ALLOW_DEVICES,
    });
    spec.Mounts = (spec.Mounts ?? []).filter((m) => m.destination === '/proc');
    if (spec.Linux) {
      spec.Linux.MaskedPaths = [];
      spec.Linux.ReadonlyPaths = [];
    }
    const id = h.id('userpath');
    h.removeOnTeardown(t, id);
    try {
      await h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec });
    } catch (e) {
      t.fail(`CreateContainer: ${(e as Error).message}`);
      return;
    }
    await h.client.call('StartContainer', { container_id: id });
    const [out, err] = await Promise.all([h.readAll('ReadStdout', id, id), h.readAll('ReadStderr', id, id)]);
    t.equal(await h.wait(id, id), 0, err.toString());
    const lines = out.toString().split('\n').filter(Boolean);
    t.equal(lines[0], nsLink(pid, 'user'), "the unshare process's user namespace");
    t.same(lines[1]?.trim().split(/\s+/), ['0', '0', '1'], 'its uid map (root mapped to root)');
  });

  t.test('a namespace path of the wrong type is refused by kata-init', async (t) => {
    const u = await unshared(t, ['--net'], ['net']);
    const id = h.id('wrongtype');
    h.removeOnTeardown(t, id);
    // /proc/<pid>/ns/net given as the ipc namespace under another name (a bind mount of it).
    const file = path.join(h.tmp, 'not-ipc');
    fs.writeFileSync(file, '');
    spawnSync('mount', ['--bind', `/proc/${u.pid}/ns/net`, file]);
    t.teardown(() => {
      spawnSync('umount', [file]);
    });
    const err = await expectCode(
      t,
      h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: h.spec(['true'], { namespaces: [{ type: 'mount' }, { type: 'pid' }, { type: 'ipc', path: file }] }) }),
      Code.INVALID_ARGUMENT,
      'a net namespace file as the ipc namespace',
    );
    t.match(err?.message ?? '', /not a ipc namespace/, err?.message ?? '');
  });

  t.test('a spec without namespaces shares the helper\'s, runs chrooted and leaves no mount', async (t) => {
    // A private copy of the rootfs: its mounts are made in the helper's (our) mount namespace.
    const rootfs = path.join(h.tmp, 'shared-rootfs');
    const cp = spawnSync('cp', ['-a', h.rootfs, rootfs]);
    t.equal(cp.status, 0, 'rootfs copied');
    fs.writeFileSync(path.join(rootfs, 'marker'), 'inside the rootfs\n');
    const spec = h.spec(['sh', '-c', `for n in ${ALL.join(' ')}; do readlink /proc/self/ns/$n; done; cat /marker; sleep 1000`], {
      namespaces: [],
      rootfs,
      resources: ALLOW_DEVICES,
    });
    if (spec.Linux) {
      spec.Linux.MaskedPaths = [];
      spec.Linux.ReadonlyPaths = [];
    }
    const id = h.id('nons');
    h.removeOnTeardown(t, id);
    await h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec });
    await h.client.call('StartContainer', { container_id: id });
    const { data } = await h.client.call('ReadStdout', { container_id: id, exec_id: id, len: 64 * 1024 });
    let out = Buffer.from(data).toString();
    while (!out.includes('inside the rootfs')) {
      const more = await h.client.call('ReadStdout', { container_id: id, exec_id: id, len: 64 * 1024 });
      out += Buffer.from(more.data).toString();
    }
    const lines = out.split('\n').filter(Boolean);
    t.same(lines.slice(0, ALL.length), ALL.map((n) => nsLink(process.pid, n)), 'every namespace is the helper\'s (the test process\'s)');
    t.equal(lines[ALL.length], 'inside the rootfs', 'the root is the rootfs (chroot)');
    t.ok(readMountPoints().includes(path.join(rootfs, 'proc')), 'the spec\'s /proc is mounted below the rootfs in the shared mount namespace');

    const ex = await h.execCollect(id, ['cat', '/marker']);
    t.equal(ex.status, 0, ex.stderr.toString());
    t.equal(ex.stdout.toString(), 'inside the rootfs\n', 'an exec runs in the container\'s root too');

    await h.client.call('RemoveContainer', { container_id: id, timeout: 10 });
    t.same(readMountPoints().filter((m) => m.startsWith(`${rootfs}/`)), [], 'no mount left below the rootfs after removal');
  });

  t.test('a helper without its own switch refuses what control asks for', async (t) => {
    const h2 = new AgentHarness('hostns-off');
    t.teardown(() => h2.dispose());
    await h2.start('kata-hostns-off', [], FLAG); // control has the switch, the helper not
    const id = h2.id('noswitch');
    const spec = h2.spec(['true'], { namespaces: [], resources: ALLOW_DEVICES });
    if (spec.Linux) {
      spec.Linux.MaskedPaths = [];
      spec.Linux.ReadonlyPaths = [];
    }
    const err = await expectCode(t, h2.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec }), Code.INVALID_ARGUMENT, 'no mount namespace');
    t.match(err?.message ?? '', /--allow-host-namespaces/, 'the refusal names the helper\'s option');
    const u = await unshared(t, ['--net'], ['net']);
    const id2 = h2.id('noswitch-path');
    const err2 = await expectCode(
      t,
      h2.client.call('CreateContainer', {
        container_id: id2,
        exec_id: id2,
        OCI: h2.spec(['true'], { namespaces: [{ type: 'mount' }, { type: 'pid' }, { type: 'network', path: `/proc/${u.pid}/ns/net` }] }),
      }),
      Code.INVALID_ARGUMENT,
      'a namespace path outside the sandbox',
    );
    t.match(err2?.message ?? '', /--allow-host-namespaces/, 'the refusal names the helper\'s option');
  });
}
