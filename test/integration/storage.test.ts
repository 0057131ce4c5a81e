// Storages through the real agent and helper (root), with the helper's Kata directory in a temp
// dir: the sequence the Go runtime sends for `ctr run` (kata_agent.go createSandbox /
// createContainer / stopContainer: GetGuestDetails skipped), with the shm ephemeral storage, a
// pre-mounted kataShared virtio-fs share (kept), dns; then a local storage, an overlay, a
// watchable-bind that follows host changes, a loop block device attached after the request
// (uevent), refusals that mount nothing, and no mount left after RemoveContainer/DestroySandbox.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { KataDirFixture } from './lib/kata-dir';
import { AgentHarness, Code, eventually, expectCode, leftoverMounts, skipReason, sleep } from './lib/agent-harness';

const skip = skipReason() ?? (spawnSync('losetup', ['--version']).status === 0 && spawnSync('mkfs.ext4', ['-V']).status === 0 ? undefined : 'losetup or mkfs.ext4 missing');
if (skip) {
  t.plan(0, skip);
} else {
  const h = new AgentHarness('storage');
  const fx = new KataDirFixture(h.tmp);
  const { kata, share, hostShare, shm, resolv } = fx;
  const mountsUnderKata = (): string[] => fx.mountsUnderKata();
  const bind = (src: string, dst: string): void => fx.bind(src, dst);

  t.before(async () => {
    fx.prepare(); // the guest pre-mounted the share
    await h.start(undefined, fx.helperArgs(['--hotplug-timeout-ms', '20000']));
  });
  t.teardown(async () => {
    fx.cleanup();
    await h.dispose();
  });

  /** The container's rootfs as the host would share it (a bind of the test rootfs, inside the share). */
  const shareRootfs = (id: string): string => {
    const dst = path.join(share, id, 'rootfs');
    bind(h.rootfs, dst);
    return dst;
  };

  t.test('CreateSandbox as the runtime sends it: shm, kataShared (kept), dns', async (t) => {
    await h.client.call('CreateSandbox', {
      hostname: 'kata-storage',
      sandbox_id: 'sb-storage',
      dns: ['nameserver 10.1.2.3', 'search svc.local', ''],
      storages: [
        { driver: 'virtio-fs', source: 'kataShared', mount_point: share + '/', fstype: 'virtiofs', options: [] },
        { driver: 'ephemeral', source: 'shm', mount_point: shm, fstype: 'tmpfs', options: ['noexec', 'nosuid', 'nodev', 'mode=1777', 'size=67108864'] },
      ],
      sandbox_pidns: false,
      guest_hook_path: '',
      kernel_modules: [],
    });
    const line = leftoverMounts([shm])[0] ?? '';
    t.match(line, /tmpfs rw,nosuid,nodev,noexec/, 'the shm is a tmpfs with its options');
    t.match(line, /size=65536k/, 'and its size');
    t.equal(fs.readFileSync(resolv, 'utf8'), 'nameserver 10.1.2.3\nsearch svc.local\n', 'resolv.conf bound over the target');
    t.equal(fs.readFileSync(path.join(kata, 'sandbox', 'resolv.conf'), 'utf8'), 'nameserver 10.1.2.3\nsearch svc.local\n');
  });

  t.test('a container as the runtime creates it: rootfs in the share, shm bind, share files, local + ephemeral volumes', async (t) => {
    const id = h.id('ctr');
    const rootfs = shareRootfs(id);
    fs.writeFileSync(path.join(hostShare, `${id}-hostname`), 'from-the-share\n');
    const local = path.join(share, 'sb-storage', 'rootfs', 'local', 'scratch');
    const eph = path.join(kata, 'sandbox', 'ephemeral', 'mem');
    h.removeOnTeardown(t, id);
    await h.client.call('CreateContainer', {
      container_id: id,
      exec_id: id,
      storages: [
        { driver: 'local', source: 'local', fstype: 'local', mount_point: local, options: ['mode=0777'] },
        { driver: 'ephemeral', source: 'tmpfs', fstype: 'tmpfs', mount_point: eph, options: [] },
      ],
      OCI: h.spec(['sh', '-c', 'cat /etc/hostname; echo shared > /dev/shm/x; echo l > /scratch/f; echo m > /mem/f; cat /scratch/f /mem/f'], {
        rootfs,
        mounts: [
          { destination: '/dev/shm', type: 'bind', source: shm, options: ['rbind'] },
          { destination: '/etc/hostname', type: 'bind', source: path.join(share, `${id}-hostname`), options: ['rbind', 'ro'] },
          { destination: '/scratch', type: 'local', source: local, options: ['rbind'] },
          { destination: '/mem', type: 'bind', source: eph, options: ['rbind'] },
        ],
      }),
    });
    t.ok(mountsUnderKata().includes(eph), 'the ephemeral volume is mounted');
    await h.client.call('StartContainer', { container_id: id });
    await h.client.call('UpdateEphemeralMounts', { storages: [] }); // kata_agent.go startContainer
    const [out, err] = await Promise.all([h.readAll('ReadStdout', id, id), h.readAll('ReadStderr', id, id)]);
    t.equal(await h.wait(id, id), 0, err.toString());
    // stopContainer: SIGKILL (errors ignored), WaitProcess again, RemoveContainer timeout 0
    await h.client.call('SignalProcess', { container_id: id, exec_id: '', signal: 9 }).catch(() => undefined);
    t.equal(await h.wait(id, id), 0, 'the cached status');
    t.equal(out.toString(), 'from-the-share\nl\nm\n');
    t.equal(fs.readFileSync(path.join(shm, 'x'), 'utf8'), 'shared\n', 'the container wrote into the sandbox shm');
    t.equal(fs.statSync(local).mode & 0o777, 0o777, 'local storage made with mode 0777');
    await h.client.call('RemoveContainer', { container_id: id, timeout: 0 });
    t.notOk(mountsUnderKata().includes(eph), 'the ephemeral volume is unmounted after RemoveContainer');
    await h.client.call('RemoveStaleVirtiofsShareMounts', {});
    execFileSync('umount', [rootfs]); // the host's unshare of the rootfs
    fx.binds.shift();
  });

  t.test('overlayfs storage (read-write overlay) is mounted and cleaned', async (t) => {
    const id = h.id('ovl');
    const lower = path.join(kata, 'sandbox', 'lower');
    fs.mkdirSync(lower, { recursive: true });
    fs.writeFileSync(path.join(lower, 'f'), 'lower\n');
    const merged = path.join(kata, 'sandbox', 'merged');
    h.removeOnTeardown(t, id);
    await h.client.call('CreateContainer', {
      container_id: id,
      exec_id: id,
      storages: [{ driver: 'overlayfs', source: 'overlay', fstype: 'overlay', mount_point: merged, options: [`lowerdir=${lower}`, 'io.katacontainers.fs-opt.overlay-rw'] }],
      OCI: h.spec(['sh', '-c', 'cat /o/f; echo up > /o/g'], { mounts: [{ destination: '/o', type: 'bind', source: merged, options: ['rbind'] }] }),
    });
    await h.client.call('StartContainer', { container_id: id });
    const out = await h.readAll('ReadStdout', id, id);
    t.equal(await h.wait(id, id), 0);
    t.equal(out.toString(), 'lower\n');
    t.equal(fs.readFileSync(path.join(kata, id, 'upper', 'g'), 'utf8'), 'up\n', 'writes land in <kata>/<id>/upper');
    await h.client.call('RemoveContainer', { container_id: id, timeout: 0 });
    t.notOk(mountsUnderKata().includes(merged), 'overlay unmounted');
  });

  t.test('watchable-bind: a file changed on the host side reaches the container', async (t) => {
    const id = h.id('cm');
    fs.mkdirSync(path.join(hostShare, `${id}-cm`));
    fs.writeFileSync(path.join(hostShare, `${id}-cm`, 'key'), 'v1\n');
    const target = path.join(share, 'watchable', `${id}-cm`);
    h.removeOnTeardown(t, id);
    await h.client.call('CreateContainer', {
      container_id: id,
      exec_id: id,
      storages: [{ driver: 'watchable-bind', source: path.join(share, `${id}-cm`), fstype: 'bind', mount_point: target, options: [] }],
      OCI: h.spec(['sleep', '1000'], { mounts: [{ destination: '/cm', type: 'bind', source: target, options: ['rbind', 'ro'] }] }),
    });
    await h.client.call('StartContainer', { container_id: id });
    t.equal(fs.readFileSync(path.join(target, 'key'), 'utf8'), 'v1\n', 'copied at once');
    fs.writeFileSync(path.join(hostShare, `${id}-cm`, 'key'), 'v2-longer\n');
    const seen = await eventually(() => fs.readFileSync(path.join(target, 'key'), 'utf8') === 'v2-longer\n', 15_000, 100);
    t.ok(seen, 'the change was copied (upstream polls every 2 s)');
    const r = await h.execCollect(id, ['cat', '/cm/key']);
    t.equal(r.stdout.toString(), 'v2-longer\n', 'and the container sees it');
    await h.client.call('RemoveContainer', { container_id: id, timeout: 0 });
    t.notOk(fs.existsSync(target), 'target removed with the container');
  });

  t.test('a loop block device attached after the request is waited for (uevent) and mounted', async (t) => {
    const id = h.id('blk');
    const img = path.join(h.tmp, 'disk.img');
    execFileSync('truncate', ['-s', '16M', img]);
    const content = path.join(h.tmp, 'disk-content');
    fs.mkdirSync(path.join(content, 'etc'), { recursive: true });
    fs.writeFileSync(path.join(content, 'etc', 'hostname'), 'on-the-disk\n');
    execFileSync('mkfs.ext4', ['-q', '-F', '-d', content, img]);
    let n = 200 + (process.pid % 50);
    while (fs.existsSync(`/dev/loop${n}`) || fs.existsSync(`/sys/class/block/loop${n}`)) n++;
    const dev = `/dev/loop${n}`;
    t.teardown(() => {
      spawnSync('losetup', ['-d', dev]);
      spawnSync('python3', ['-c', `import fcntl,os;fd=os.open('/dev/loop-control',os.O_RDWR);fcntl.ioctl(fd,0x4C81,${n})`]);
    });
    const mp = path.join(kata, 'sandbox', 'storage', 'blk');
    h.removeOnTeardown(t, id);
    const creating = h.client.call('CreateContainer', {
      container_id: id,
      exec_id: id,
      storages: [{ driver: 'mmioblk', source: dev, fstype: 'ext4', mount_point: mp, options: ['ro'] }],
      OCI: h.spec(['cat', '/disk/hostname'], { mounts: [{ destination: '/disk', type: 'bind', source: path.join(mp, 'etc'), options: ['rbind', 'ro'] }] }),
    });
    await sleep(300);
    t.notOk(mountsUnderKata().includes(mp), 'not mounted before the device exists');
    execFileSync('losetup', [dev, img]);
    await creating;
    t.ok(mountsUnderKata().includes(mp), 'mounted once the device appeared');
    await h.client.call('StartContainer', { container_id: id });
    const out = await h.readAll('ReadStdout', id, id);
    t.equal(await h.wait(id, id), 0);
    t.equal(out.toString(), 'on-the-disk\n', 'the container read the block device');
    await h.client.call('RemoveContainer', { container_id: id, timeout: 0 });
    t.notOk(mountsUnderKata().includes(mp), 'unmounted after RemoveContainer');
  });

  t.test('refusals mount nothing and create no container', async (t) => {
    const before = mountsUnderKata();
    const spec = h.spec(['true']);
    const bad: [{ driver: string; source: string; fstype: string; mount_point: string; options?: string[] }, RegExp][] = [
      [{ driver: 'ephemeral', source: 'tmpfs', fstype: 'tmpfs', mount_point: path.join(h.tmp, 'outside') }, /not below/],
      [{ driver: 'ephemeral', source: 'tmpfs', fstype: 'tmpfs', mount_point: `${kata}/sandbox/../../x` }, /"\.\."/],
      [{ driver: 'ephemeral', source: 'tmpfs', fstype: 'proc', mount_point: `${kata}/sandbox/p` }, /fstype "proc"/],
      [{ driver: 'ephemeral', source: 'tmpfs', fstype: 'tmpfs', mount_point: `${kata}/sandbox/r`, options: ['remount'] }, /remount/],
    ];
    for (const [storage, re] of bad) {
      const id = h.id('bad');
      const e = await expectCode(t, h.client.call('CreateContainer', { container_id: id, exec_id: id, storages: [storage], OCI: spec }), Code.INVALID_ARGUMENT, `refused: ${re}`);
      t.match(e?.message ?? '', re);
      await expectCode(t, h.client.call('StartContainer', { container_id: id }), Code.NOT_FOUND, 'no container was made');
    }
    t.same(mountsUnderKata(), before, 'no mount added');
  });

  t.test('the runtime stop sequence ends with DestroySandbox: no storage mount left, the share kept', async (t) => {
    await h.client.call('DestroySandbox', {});
    t.same(mountsUnderKata(), [share], 'only the pre-mounted share remains');
    t.equal(fs.readFileSync(resolv, 'utf8'), 'nameserver 127.0.0.53\n', 'resolv.conf unbound');
  });
}
