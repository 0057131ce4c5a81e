// A Kubernetes pod as the Go runtime (src/runtime at 6e4d4c329a) drives its agent, replayed
// through the real agent and helper (root) with the helper's Kata directory in a temp dir:
//
//   kata_agent.go startSandbox: Check, GetGuestDetails(mem_block_size, mem_hotplug_probe),
//     CreateSandbox(hostname, dns + trailing "", storages [kataShared virtio-fs (pre-mounted,
//     kept), shm ephemeral], sandbox_pidns false);
//   sandbox.go / container.go per container: CreateContainer, OnlineCPUMem {}, StartContainer,
//     OnlineCPUMem {}, UpdateEphemeralMounts [] — first the pause container (its id is the
//     sandbox id, oom_score_adj -998, sandbox annotations), then an app container with the
//     Kubernetes volumes as constrainGRPCSpec / handleEphemeralStorage / handleLocalStorage /
//     handleShm / container.go mountSharedDirMounts (watchable) make them;
//   an exec (ExecProcess with only Terminal/User/Args/Env/Cwd, a fresh UUID exec id), stdout read
//     with 32 KiB ReadStdout calls;
//   stopContainer for each container: SignalProcess(exec "", 9), WaitProcess, RemoveContainer
//     (timeout 0), RemoveStaleVirtiofsShareMounts; then DestroySandbox.
//
// Asserted: what the app container sees (configMap and secret files, a configMap update as the
// kubelet's atomic writer makes it, both emptyDirs writable, /etc/hosts, hostname, resolv.conf,
// the sandbox shm), and that nothing is left mounted below the Kata directory but the share.
//
// On this host root lacks CAP_SYS_RESOURCE in its bounding set, so the pause container's
// oom_score_adj -998 cannot be applied: the agent must refuse it naming the field and the
// capability; the pause container is then replayed with oom_score_adj 0. With the capability
// (a guest), -998 is applied and checked.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { KataDirFixture } from './lib/kata-dir';
import { AgentHarness, Code, codeOf, eventually, skipReason } from './lib/agent-harness';

const CAP_SYS_RESOURCE = 24;
const PAUSE_OOM_SCORE_ADJ = -998;
const READ_LEN = 32 * 1024; // the shim's ReadStdout len

/** Whether CAP_SYS_RESOURCE is in this process's bounding set (a negative oom_score_adj needs it). */
function hasSysResource(): boolean {
  const m = /^CapBnd:\s*([0-9a-f]+)$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m !== null && (BigInt(`0x${m[1]}`) & (1n << BigInt(CAP_SYS_RESOURCE))) !== 0n;
}

const skip = skipReason();
if (skip) {
  t.plan(0, skip);
} else {
  const h = new AgentHarness('pod-replay');
  const fx = new KataDirFixture(h.tmp);
  const { kata, share, hostShare, shm, resolv } = fx;
  const ephemeralDir = path.join(kata, 'sandbox', 'ephemeral'); // ephemeralPath()
  const binds = fx.binds;
  const mountsUnderKata = (): string[] => fx.mountsUnderKata();
  const bind = (src: string, dst: string): void => fx.bind(src, dst);

  const sandboxId = `pod${process.pid}${Date.now().toString(16)}`; // the pause container's id
  const appId = `app${process.pid}${Date.now().toString(16)}`;
  const rand = (): string => randomUUID().replace(/-/g, '').slice(0, 16); // ShareFile's 8 random bytes
  const shared: Record<string, string> = {}; // destination → guest path in the share

  /** kubelet's atomic writer: <dir>/..<ts>/<key> files, ..data → ..<ts>, <key> → ..data/<key>. */
  const atomicWrite = (dir: string, files: Record<string, string>, ts: string): void => {
    fs.mkdirSync(path.join(dir, ts), { recursive: true });
    for (const [k, v] of Object.entries(files)) fs.writeFileSync(path.join(dir, ts, k), v);
    const tmpLink = path.join(dir, '..data_tmp');
    fs.symlinkSync(ts, tmpLink);
    const old = fs.existsSync(path.join(dir, '..data')) ? fs.readlinkSync(path.join(dir, '..data')) : undefined;
    fs.renameSync(tmpLink, path.join(dir, '..data'));
    for (const k of Object.keys(files)) if (!fs.existsSync(path.join(dir, k))) fs.symlinkSync(path.join('..data', k), path.join(dir, k));
    if (old) fs.rmSync(path.join(dir, old), { recursive: true, force: true });
  };

  t.before(async () => {
    // The pause rootfs, shared by the host: a static busybox as the pause binary.
    const pauseRoot = path.join(hostShare, sandboxId, 'rootfs');
    for (const d of ['bin', 'proc', 'dev', 'sys', 'etc', 'tmp']) fs.mkdirSync(path.join(pauseRoot, d), { recursive: true });
    fs.copyFileSync(path.join(h.rootfs, 'bin', 'busybox'), path.join(pauseRoot, 'bin', 'busybox'));
    fs.chmodSync(path.join(pauseRoot, 'bin', 'busybox'), 0o755);
    fs.symlinkSync('busybox', path.join(pauseRoot, 'bin', 'sleep'));
    // The app's files as ShareFile binds them into the share: <cid>-<rand>-<base of destination>.
    const file = (dest: string, content: string): void => {
      const name = `${appId}-${rand()}-${path.basename(dest)}`;
      fs.writeFileSync(path.join(hostShare, name), content);
      shared[dest] = path.join(share, name);
    };
    file('/etc/hosts', '127.0.0.1\tlocalhost\n10.244.1.7\tweb-0\n');
    file('/etc/hostname', 'web-0\n');
    file('/etc/resolv.conf', 'nameserver 10.96.0.10\nsearch default.svc.cluster.local\n');
    file('/dev/termination-log', '');
    const dir = (dest: string, files: Record<string, string>): void => {
      const name = `${appId}-${rand()}-${path.basename(dest)}`;
      atomicWrite(path.join(hostShare, name), files, '..2026_12_02_08_00_00.1');
      shared[dest] = path.join(share, name);
    };
    dir('/etc/config', { 'app.properties': 'color=blue\n', mode: 'debug\n' });
    dir('/etc/secret', { password: 's3cr3t\n' });
    fx.prepare(); // watchableHostPath; the guest mounted kataShared before the agent got CreateSandbox
    await h.start(undefined, fx.helperArgs());
  });
  t.teardown(async () => {
    fx.cleanup();
    await h.dispose();
  });

  /** kata_agent.go createContainer → OnlineCPUMem {}; startContainer → OnlineCPUMem {}, UpdateEphemeralMounts []. */
  const createAndStart = async (req: Parameters<typeof h.client.call<'CreateContainer'>>[1]): Promise<void> => {
    await h.client.call('CreateContainer', req).catch((e: Error) => {
      throw new Error(`CreateContainer ${req.container_id}: status ${codeOf(e)}: ${e.message}`);
    });
    await h.client.call('OnlineCPUMem', {});
    await h.client.call('StartContainer', { container_id: req.container_id });
    await h.client.call('OnlineCPUMem', {});
    await h.client.call('UpdateEphemeralMounts', { storages: [] });
  };

  t.test('startSandbox: Check, GetGuestDetails, CreateSandbox', async (t) => {
    const health = await h.client.call('Check', { service: '' });
    t.equal(health.status, 1, 'SERVING');
    const details = await h.client.call('GetGuestDetails', { mem_block_size: true, mem_hotplug_probe: true });
    const blockSize = parseInt(fs.readFileSync('/sys/devices/system/memory/block_size_bytes', 'utf8').trim(), 16);
    t.equal(Number(details.mem_block_size_bytes), blockSize, 'mem_block_size_bytes is the guest sysfs value');
    t.equal(details.support_mem_hotplug_probe, fs.existsSync('/sys/devices/system/memory/probe'), 'probe support as sysfs has it');
    t.equal(details.agent_details?.supports_seccomp, true, 'supports_seccomp (the runtime refuses containers otherwise)');
    t.ok(details.agent_details?.storage_handlers?.includes('watchable-bind'), 'storage handlers announced');
    await h.client.call('CreateSandbox', {
      hostname: 'web-0',
      sandbox_id: sandboxId,
      dns: ['nameserver 10.96.0.10', 'search default.svc.cluster.local', 'options ndots:5', ''],
      storages: [
        { driver: 'virtio-fs', source: 'kataShared', mount_point: share + '/', fstype: 'virtiofs', options: [] },
        { driver: 'ephemeral', source: 'shm', mount_point: shm, fstype: 'tmpfs', options: ['noexec', 'nosuid', 'nodev', 'mode=1777', 'size=67108864'] },
      ],
      sandbox_pidns: false,
      guest_hook_path: '',
      kernel_modules: [],
    });
    t.same(mountsUnderKata().sort(), [share, shm].sort(), 'the share kept, the shm mounted');
    t.equal(fs.readFileSync(resolv, 'utf8'), 'nameserver 10.96.0.10\nsearch default.svc.cluster.local\noptions ndots:5\n', 'the sandbox DNS');
  });

  t.test('the pause container (oom_score_adj -998, sandbox annotations)', async (t) => {
    const pauseRoot = path.join(share, sandboxId, 'rootfs');
    const pauseSpec = (oomScoreAdj: number): ReturnType<typeof h.spec> => {
      const spec = h.spec(['sleep', '2147483647'], { rootfs: pauseRoot, oomScoreAdj, capabilities: [] });
      spec.Annotations = {
        'io.kubernetes.cri.container-type': 'sandbox',
        'io.kubernetes.cri.sandbox-id': sandboxId,
        'io.kubernetes.cri.sandbox-name': 'web-0',
        'io.kubernetes.cri.sandbox-namespace': 'default',
      };
      spec.Mounts = (spec.Mounts ?? []).filter((m) => m.destination !== '/dev/shm');
      spec.Mounts.push({ destination: '/dev/shm', type: 'bind', source: shm, options: ['rbind'] }); // handleShm
      return spec;
    };
    const req = { container_id: sandboxId, exec_id: sandboxId, storages: [], sandbox_pidns: false };
    let applied = PAUSE_OOM_SCORE_ADJ;
    if (hasSysResource()) {
      await createAndStart({ ...req, OCI: pauseSpec(PAUSE_OOM_SCORE_ADJ) });
    } else {
      let err: unknown;
      try {
        await h.client.call('CreateContainer', { ...req, OCI: pauseSpec(PAUSE_OOM_SCORE_ADJ) });
      } catch (e) {
        err = e;
      }
      t.ok(err, 'oom_score_adj -998 without CAP_SYS_RESOURCE is refused');
      const msg = (err as Error | undefined)?.message ?? '';
      t.not(codeOf(err), Code.INTERNAL, `not an internal error: ${msg}`);
      t.match(msg, /oom_score_adj/, 'the error names the field');
      t.match(msg, /-998/, 'and the value');
      t.match(msg, /CAP_SYS_RESOURCE/, 'and the missing capability');
      t.notOk(mountsUnderKata().some((m) => m.startsWith(pauseRoot)), 'the failed create left no mount on the pause rootfs');
      applied = 0;
      await createAndStart({ ...req, OCI: pauseSpec(0) });
    }
    const pid = await h.hostPid(sandboxId);
    t.equal(fs.readFileSync(`/proc/${pid}/oom_score_adj`, 'utf8').trim(), String(applied), `the pause process runs with oom_score_adj ${applied}`);
  });

  t.test('the app container with the Kubernetes volumes; an exec sees them', async (t) => {
    const appRootfs = path.join(share, appId, 'rootfs');
    bind(h.rootfs, appRootfs); // the host shares the container's rootfs
    const watchable = (dest: string): string => path.join(share, 'watchable', path.basename(shared[dest]));
    const k8sRw = ['rbind', 'rprivate', 'rw'];
    const k8sRo = ['rbind', 'rprivate', 'ro'];
    const memEmptyDir = path.join(ephemeralDir, 'cache-volume');
    const diskEmptyDir = path.join(share, sandboxId, 'rootfs', 'local', 'scratch-volume');
    const spec = h.spec(['sleep', '2147483647'], { rootfs: appRootfs, hostname: 'web-0' });
    spec.Annotations = { 'io.kubernetes.cri.container-type': 'container', 'io.kubernetes.cri.sandbox-id': sandboxId, 'io.kubernetes.cri.container-name': 'web' };
    spec.Mounts = (spec.Mounts ?? []).filter((m) => m.destination !== '/dev/shm');
    spec.Mounts.push(
      { destination: '/etc/config', type: 'bind', source: watchable('/etc/config'), options: k8sRo },
      { destination: '/etc/secret', type: 'bind', source: watchable('/etc/secret'), options: k8sRo },
      { destination: '/cache', type: 'bind', source: memEmptyDir, options: k8sRw },
      { destination: '/scratch', type: 'local', source: diskEmptyDir, options: k8sRw },
      { destination: '/etc/hosts', type: 'bind', source: shared['/etc/hosts'], options: k8sRw },
      { destination: '/etc/hostname', type: 'bind', source: shared['/etc/hostname'], options: k8sRw },
      { destination: '/etc/resolv.conf', type: 'bind', source: shared['/etc/resolv.conf'], options: k8sRw },
      { destination: '/dev/termination-log', type: 'bind', source: shared['/dev/termination-log'], options: k8sRw },
      { destination: '/dev/shm', type: 'bind', source: shm, options: ['rbind'] },
    );
    await createAndStart({
      container_id: appId,
      exec_id: appId,
      sandbox_pidns: false,
      storages: [
        // container.go: watchable mounts carry the Kubernetes mount's options
        { driver: 'watchable-bind', source: shared['/etc/config'], fstype: 'bind', mount_point: watchable('/etc/config'), options: k8sRo },
        { driver: 'watchable-bind', source: shared['/etc/secret'], fstype: 'bind', mount_point: watchable('/etc/secret'), options: k8sRo },
        // kata_agent.go handleEphemeralStorage / handleLocalStorage
        { driver: 'ephemeral', source: 'tmpfs', fstype: 'tmpfs', mount_point: memEmptyDir, options: [] },
        { driver: 'local', source: 'local', fstype: 'local', mount_point: diskEmptyDir, options: ['mode=0777'] },
      ],
      OCI: spec,
    });
    const script = [
      'cat /etc/config/app.properties /etc/config/mode /etc/secret/password',
      'echo mem > /cache/f && cat /cache/f',
      'echo disk > /scratch/f && cat /scratch/f',
      'echo shared > /dev/shm/from-app',
      'cat /etc/hosts /etc/hostname /etc/resolv.conf',
      'echo bye > /dev/termination-log',
      'grep -c " /cache tmpfs " /proc/mounts',
    ].join('; ');
    const out = await execAndRead(['sh', '-c', script]);
    t.equal(out.status, 0, `the exec succeeded: ${out.stdout}`);
    t.equal(
      out.stdout,
      'color=blue\ndebug\ns3cr3t\nmem\ndisk\n127.0.0.1\tlocalhost\n10.244.1.7\tweb-0\nweb-0\nnameserver 10.96.0.10\nsearch default.svc.cluster.local\n1\n',
      'configMap, secret, both emptyDirs, hosts, hostname, resolv.conf as the container sees them',
    );
    t.equal(fs.readFileSync(path.join(shm, 'from-app'), 'utf8'), 'shared\n', 'the app wrote into the sandbox shm');
    t.equal(fs.readFileSync(path.join(hostShare, path.basename(shared['/dev/termination-log'])), 'utf8'), 'bye\n', 'termination-log reaches the host');
    t.equal(fs.readFileSync(path.join(hostShare, sandboxId, 'rootfs', 'local', 'scratch-volume', 'f'), 'utf8'), 'disk\n', 'the disk emptyDir lives in the pause rootfs (handleLocalStorage)');

    // The kubelet updates the configMap (atomic writer); the guest polls the share and copies.
    atomicWrite(path.join(hostShare, path.basename(shared['/etc/config'])), { 'app.properties': 'color=green\n', mode: 'debug\n' }, '..2026_12_02_08_05_00.2');
    const target = path.join(watchable('/etc/config'), 'app.properties');
    t.ok(await eventually(() => readOr(target) === 'color=green\n', 20_000, 100), 'the update was copied into the watchable mount');
    const after = await execAndRead(['cat', '/etc/config/app.properties']);
    t.equal(after.stdout, 'color=green\n', 'and the container sees it');
  });

  t.test('stopContainer for each container, then DestroySandbox: nothing left mounted', async (t) => {
    for (const id of [appId, sandboxId]) {
      await h.client.call('SignalProcess', { container_id: id, exec_id: '', signal: 9 }).catch(() => undefined);
      const { status } = await h.client.call('WaitProcess', { container_id: id, exec_id: id });
      t.equal(status, 137, `${id === appId ? 'app' : 'pause'} killed by SIGKILL`);
      await h.client.call('RemoveContainer', { container_id: id, timeout: 0 });
      await h.client.call('RemoveStaleVirtiofsShareMounts', {});
    }
    t.notOk(fs.existsSync(path.join(share, 'watchable', path.basename(shared['/etc/config']))), 'watchable targets removed with the app');
    await h.client.call('DestroySandbox', {});
    const appRootfs = path.join(share, appId, 'rootfs');
    t.same(mountsUnderKata().sort(), [share, appRootfs].sort(), 'only what the host mounted remains: the share and the rootfs it shared');
    execFileSync('umount', [appRootfs]); // the host unshares the rootfs
    binds.splice(binds.indexOf(appRootfs), 1);
    t.same(mountsUnderKata(), [share], 'then only the share');
    t.equal(fs.readFileSync(resolv, 'utf8'), 'nameserver 127.0.0.53\n', 'resolv.conf unbound');
  });

  /** ExecProcess as the runtime sends it (only Terminal/User/Args/Env/Cwd, UUID exec id), 32 KiB reads, WaitProcess. */
  async function execAndRead(args: string[]): Promise<{ stdout: string; status: number }> {
    const execId = randomUUID();
    await h.client.call('ExecProcess', {
      container_id: appId,
      exec_id: execId,
      process: {
        Terminal: false,
        User: { UID: 0, GID: 0 },
        Args: args,
        Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOSTNAME=web-0', h.mark],
        Cwd: '/',
      },
    });
    const [stdout] = await Promise.all([h.readAll('ReadStdout', appId, execId, READ_LEN), h.readAll('ReadStderr', appId, execId, READ_LEN)]);
    return { stdout: stdout.toString(), status: await h.wait(appId, execId) };
  }

  function readOr(p: string): string {
    try {
      return fs.readFileSync(p, 'utf8');
    } catch {
      return '';
    }
  }
}
