// Storages, devices, DNS and kernel modules without privileges: the control-side validation
// through the agent over the mock helper, and the helper's storage ops over the mock mounter
// (reference counts, the kept kataShared share, confinement, device waits on a uevent hub).
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { rewriteSpecDevices } from '../../control/rpc/storage';
import { startMockAgent } from '../lib/mock-agent';
import { createMockStorage } from '../../helper/mock/storage';
import { Code, StatusError, type StoragePlan } from '../../shared/protocol';
import type { grpc } from '../../shared/generated/protos';

function tmpKataDir(): string {
  return fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'kata-storage-')));
}

async function rejects(p: Promise<unknown>, code: number, re: RegExp): Promise<StatusError> {
  try {
    await p;
  } catch (err) {
    if (!(err instanceof StatusError)) throw err;
    if (err.code !== code || !re.test(err.message)) throw new Error(`expected ${code} ${re}, got ${err.code} ${err.message}`);
    return err;
  }
  throw new Error(`expected ${code} ${re}, got success`);
}

function eph(mountPoint: string, options: string[] = []): StoragePlan {
  return { driver: 'ephemeral', driverOptions: [], source: 'tmpfs', fstype: 'tmpfs', options, mountPoint };
}

t.test('helper storage ops over the mock mounter', async (t) => {
  const dir = tmpKataDir();
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const { storage, mounter, uevents } = createMockStorage({ kataDir: dir, hotplugTimeoutMs: 300 });
  const shm = path.join(dir, 'sandbox', 'shm');

  // the sandbox shm with its options; flags and data reach mount(2)
  await storage.addStorages({ owner: '', storages: [eph(shm, ['noexec', 'nosuid', 'nodev', 'mode=1777', 'size=67108864'])] });
  const m = mounter.mounts.get(shm);
  t.equal(m?.fstype, 'tmpfs');
  t.equal(m?.data, 'mode=1777,size=67108864');
  t.ok((m?.flags ?? 0) & 8 /* MS_NOEXEC */, 'noexec applied');

  // shared by mount point: two containers, unmounted after the last one
  const vol = path.join(dir, 'sandbox', 'ephemeral', 'cache');
  await storage.addStorages({ owner: 'c1', storages: [eph(vol)] });
  await storage.addStorages({ owner: 'c2', storages: [eph(vol)] });
  await storage.releaseStorages({ owner: 'c1' });
  t.ok(mounter.isMounted(vol), 'still held by c2');
  await storage.releaseStorages({ owner: 'c2' });
  t.notOk(mounter.isMounted(vol), 'unmounted after the last release');
  t.notOk(fs.existsSync(vol), 'its directory removed');

  // a pre-mounted kataShared share is kept, and never unmounted by us
  const share = path.join(dir, 'shared', 'containers');
  fs.mkdirSync(share, { recursive: true });
  mounter.mount('/host/share', share, 'virtiofs', 0, '');
  const r = await storage.addStorages({
    owner: '',
    storages: [{ driver: 'virtio-fs', driverOptions: [], source: 'kataShared', fstype: 'virtiofs', options: [], mountPoint: share + '/' }],
  });
  t.same(r.result.mountPoints, [share], 'the trailing "/" is normalised');
  t.equal(mounter.mounts.get(share)?.source, '/host/share', 'kept as it was');

  // refusals: nothing mounted
  const before = mounter.mounts.size;
  await rejects(storage.addStorages({ owner: '', storages: [eph('/etc/x')] }), Code.INVALID_ARGUMENT, /not below/);
  await rejects(storage.addStorages({ owner: '', storages: [eph(`${dir}/sandbox/../../etc`)] }), Code.INVALID_ARGUMENT, /"\.\."/);
  await rejects(storage.addStorages({ owner: '', storages: [{ ...eph(`${dir}/x`), fstype: 'proc' }] }), Code.INVALID_ARGUMENT, /fstype "proc"/);
  await rejects(storage.addStorages({ owner: '', storages: [eph(`${dir}/y`, ['remount'])] }), Code.INVALID_ARGUMENT, /remount/);
  await rejects(storage.addStorages({ owner: '', storages: [eph(`${dir}/y`, ['rbind'])] }), Code.INVALID_ARGUMENT, /rbind/);
  await rejects(
    storage.addStorages({ owner: 'c3', storages: [{ driver: 'overlayfs', driverOptions: [], source: 'overlay', fstype: 'overlay', options: ['lowerdir=/etc'], mountPoint: `${dir}/o` }] }),
    Code.INVALID_ARGUMENT,
    /lowerdir/,
  );
  // a failing second storage rolls back the first
  await rejects(storage.addStorages({ owner: 'c4', storages: [eph(`${dir}/ok1`), eph('/nope')] }), Code.INVALID_ARGUMENT, /not below/);
  t.equal(mounter.mounts.size, before, 'nothing mounted by the refused requests');

  // a symlink on the way is refused
  fs.mkdirSync(path.join(dir, 'sandbox', 'ephemeral'), { recursive: true });
  fs.symlinkSync('/tmp', path.join(dir, 'sandbox', 'ephemeral', 'evil'));
  await rejects(storage.addStorages({ owner: 'c5', storages: [eph(path.join(dir, 'sandbox', 'ephemeral', 'evil', 'x'))] }), Code.INVALID_ARGUMENT, /symlink/);

  // local: a directory with mode and fsgid
  const local = path.join(dir, 'shared', 'containers', 'sb', 'rootfs', 'local', 'data');
  await storage.addStorages({ owner: 'c6', storages: [{ driver: 'local', driverOptions: [], source: 'local', fstype: 'local', options: ['mode=0777'], mountPoint: local }] });
  t.equal(fs.statSync(local).mode & 0o7777, 0o777);

  // mmioblk: waits for the uevent of a device that appears after the request (fake sysfs)
  const waiting = storage.waitDevices({ devices: [{ type: 'mmioblk', id: '', vmPath: '/dev/vdz', containerPath: '/dev/data', options: [] }], timeoutMs: 2000 });
  await new Promise((r) => setTimeout(r, 20));
  t.pass('waiting');
  // publish before sysfs has it: ignored (not ready); the mock's sysfs is the real /sys, where vdz never appears
  uevents.publish({ action: 'add', devpath: '/devices/virtual/block/vdz', devname: 'vdz', subsystem: 'block', seqnum: '1' });
  await rejects(waiting, Code.DEADLINE_EXCEEDED, /Timeout after 2000ms waiting for uevent \/dev\/vdz/);

  await storage.releaseStorages({ owner: '' });
  t.notOk(mounter.isMounted(shm), 'the shm unmounted at DestroySandbox');
  t.ok(mounter.isMounted(share), 'the pre-mounted share kept');
});

t.test('device spec rewrite (upstream update_spec_devices)', async (t) => {
  const spec: grpc.ISpec = {
    Linux: {
      Devices: [{ Path: '/dev/xda', Type: 'b', Major: 8, Minor: 0 }],
      Resources: { Devices: [{ Allow: false, Type: 'b', Major: 8, Minor: 0, Access: 'rwm' }] },
    },
  };
  rewriteSpecDevices(spec, [{ containerPath: '/dev/xda', vmPath: '/dev/vdb', kind: 'b', major: 254, minor: 16 }]);
  t.equal(spec.Linux?.Devices?.[0].Major, 254);
  t.equal(spec.Linux?.Devices?.[0].Minor, 16);
  t.equal(spec.Linux?.Resources?.Devices?.[0].Major, 254, 'the cgroup rule follows');
  t.same(spec.Linux?.Resources?.Devices?.[1], { Allow: true, Type: 'b', Major: 254, Minor: 16, Access: 'rwm' });
  t.throws(() => rewriteSpecDevices(spec, [{ containerPath: '/dev/none', vmPath: '/dev/vdc', kind: 'b', major: 1, minor: 1 }]), /not in OCI.Linux.Devices/);
});

t.test('control-side validation through the agent (mock helper)', async (t) => {
  const dir = tmpKataDir();
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const { call } = await startMockAgent(t, { prefix: 'kata-storage-unit-', pair: { kataDir: dir } });
  const st = (over: Partial<grpc.IStorage>): grpc.IStorage => ({ driver: 'ephemeral', source: 'tmpfs', fstype: 'tmpfs', mount_point: `${dir}/sandbox/shm`, ...over });
  await rejects(call('CreateSandbox', { hostname: 'h', storages: [st({ driver: 'nbd' })] }), Code.INVALID_ARGUMENT, /storages\[0\]\.driver "nbd"/);
  await rejects(call('CreateSandbox', { hostname: 'h', storages: [st({ mount_point: 'rel/x' })] }), Code.INVALID_ARGUMENT, /mount_point "rel\/x"/);
  await rejects(call('CreateSandbox', { hostname: 'h', storages: [st({ mount_point: `${dir}/../x` })] }), Code.INVALID_ARGUMENT, /"\.\."/);
  await rejects(call('CreateSandbox', { hostname: 'h', storages: [st({ fstype: 'proc' })] }), Code.INVALID_ARGUMENT, /fstype "proc"/);
  await rejects(call('CreateSandbox', { hostname: 'h', storages: [st({ mount_point: '/run/elsewhere/shm' })] }), Code.INVALID_ARGUMENT, /not below/);
  await rejects(call('CreateSandbox', { hostname: 'h', kernel_modules: [{ name: '' }] }), Code.INVALID_ARGUMENT, /Kernel module name is empty/);
  await rejects(call('CreateSandbox', { hostname: 'h', kernel_modules: [{ name: 'missing-module' }] }), Code.INTERNAL, /load_kernel_module missing-module/);
  await rejects(call('CreateSandbox', { hostname: 'h', guest_hook_path: 'hooks' }), Code.INVALID_ARGUMENT, /guest_hook_path "hooks"/);
  await rejects(call('CreateSandbox', { hostname: 'h', guest_hook_path: '/a/../b' }), Code.INVALID_ARGUMENT, /guest_hook_path/);
  // a refused sandbox left nothing: a correct one follows
  await call('CreateSandbox', { hostname: 'h', storages: [st({})], dns: ['nameserver 10.0.0.1', 'search x', ''], kernel_modules: [{ name: 'loop', parameters: ['max_loop=8'] }] });
  t.equal(fs.readFileSync(path.join(dir, 'sandbox', 'resolv.conf'), 'utf8'), 'nameserver 10.0.0.1\nsearch x\n', 'trailing empty entry ignored');
  await rejects(call('UpdateEphemeralMounts', { storages: [st({ driver: 'local' })] }), Code.INVALID_ARGUMENT, /Only ephemeral/);
  await call('UpdateEphemeralMounts', { storages: [st({ options: ['size=1024'] })] });
  await call('RemoveStaleVirtiofsShareMounts', {});
  await rejects(
    call('CreateContainer', { container_id: 'vf', OCI: { Root: { Path: dir } }, devices: [{ type: 'vfio-pci', id: 'x', container_path: '/dev/vfio/1' }] }),
    Code.UNIMPLEMENTED,
    /VFIO/,
  );
  await call('DestroySandbox', {});
});

t.test('watchable-bind takes the Kubernetes mount options the Go runtime copies (container.go), other storages do not', async (t) => {
  // Regression: ["rbind","rprivate","ro"] (CRI's configMap mount options) was INVALID_ARGUMENT.
  const dir = tmpKataDir();
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const { storage } = createMockStorage({ kataDir: dir });
  const src = path.join(dir, 'shared', 'containers', 'app-1234-config');
  fs.mkdirSync(src, { recursive: true });
  fs.writeFileSync(path.join(src, 'key'), 'v\n');
  fs.mkdirSync(path.join(dir, 'shared', 'containers', 'watchable')); // the runtime made it in the share
  const target = path.join(dir, 'shared', 'containers', 'watchable', 'app-1234-config');
  const watch = (options: string[]): StoragePlan => ({ driver: 'watchable-bind', driverOptions: [], source: src, fstype: 'bind', options, mountPoint: target });
  await storage.addStorages({ owner: 'app', storages: [watch(['rbind', 'rprivate', 'ro'])] });
  t.equal(fs.readFileSync(path.join(target, 'key'), 'utf8'), 'v\n', 'copied to the target');
  await storage.releaseStorages({ owner: 'app' });
  await rejects(storage.addStorages({ owner: 'app', storages: [watch(['upperdir=/etc'])] }), Code.INVALID_ARGUMENT, /not a mount flag/);
  await rejects(storage.addStorages({ owner: 'app', storages: [eph(path.join(dir, 'sandbox', 'e'), ['rbind'])] }), Code.INVALID_ARGUMENT, /"rbind" is not allowed/);
  storage.shutdown();
});

t.test('RemoveContainer releases the container\'s storages (removeContainer releaseStorages, one helper call)', async (t) => {
  const dir = tmpKataDir();
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const h = await startMockAgent(t, { prefix: 'kata-storage-unit-', pair: { kataDir: dir } });
  const vol = path.join(dir, 'sandbox', 'ephemeral', 'scratch');
  const storages: grpc.IStorage[] = [{ driver: 'ephemeral', source: 'tmpfs', fstype: 'tmpfs', mount_point: vol }];
  const OCI: grpc.Spec.$Properties = {
    Version: '1.0.2',
    Root: { Path: '/run/kata-test/rootfs' },
    Process: { Args: ['sleep', '1000'], Env: ['PATH=/usr/bin:/bin'], Cwd: '/' },
    Linux: { Namespaces: [{ Type: 'mount' }, { Type: 'pid' }] },
  };
  await h.call('CreateContainer', { container_id: 'st1', OCI, storages });
  t.ok(fs.existsSync(vol), 'the storage is there while the container is');
  await h.call('RemoveContainer', { container_id: 'st1', timeout: 5 });
  t.notOk(fs.existsSync(vol), 'released with the container');
  // the helper refuses a malformed flag itself
  await rejects(h.pair.client.call('removeContainer', { containerId: 'nope', timeoutMs: 0, releaseStorages: 'yes' as unknown as boolean }), Code.INVALID_ARGUMENT, /releaseStorages/);
});
