// The guest-operation rpcs with the real helper (root): the real backend runs in-process behind a
// HelperServer over a socketpair, the Agent serves ttRPC on a temp unix socket. Sysfs is the real
// one for GetGuestDetails and a fake tree for OnlineCPUMem; CopyFile and volume roots are temp
// directories; swap uses a loop device when this machine allows swapon.
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Agent } from '../../control/agent';
import { defaultConfig } from '../../control/config';
import { METHODS, type MethodName, type MethodSpec, type RequestOf, type ResponseOf } from '../../control/ctl/methods';
import { TtrpcClient } from '../../control/ttrpc';
import { createRealBackend } from '../../helper/backend';
import { makeFakeSysfs } from '../../helper/mock/guest';
import { HelperServer } from '../../helper/server';
import { HelperClient } from '../../shared/helper-client';
import { loadNative } from '../../shared/native';
import { Code, StatusError } from '../../shared/protocol';

if (process.getuid?.() !== 0) {
  t.plan(0, 'needs root (real helper: chown, mount, swapon)');
  process.exit(0);
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-guest-it-'));
const fakeSysfs = makeFakeSysfs(path.join(tmp, 'sysfs'), { cpus: 4, offlineCpus: [2, 3], memoryBlocks: 3, offlineMemory: [0, 2] });
const copyRoot = path.join(tmp, 'shared', 'containers');
const volumeRoot = path.join(tmp, 'volumes');
fs.mkdirSync(volumeRoot, { recursive: true });

interface Harness {
  call<K extends MethodName>(name: K, req: RequestOf<K>): Promise<ResponseOf<K>>;
  /** The helper client control uses (ops control never sends, e.g. addSwap by /dev name). */
  helper: HelperClient;
}

async function harness(t: Test, sysfsRoot: string): Promise<Harness> {
  const backend = createRealBackend({
    guest: { sysfsRoot, copyRoots: [copyRoot], volumeRoots: [volumeRoot] },
    sandboxNsDir: path.join(tmp, 'ns'),
    hotplugTimeoutMs: 20_000,
  });
  const server = new HelperServer({ backend, controlUid: 0 });
  const [a, b] = loadNative().seqpacketPair();
  server.addConnection(b);
  const helper = await HelperClient.fromFd(a);
  const address = `unix://${path.join(fs.mkdtempSync(path.join(tmp, 'sock-')), 'agent.sock')}`;
  const agent = new Agent({
    config: { ...defaultConfig(), serverAddr: address, debugAddr: '' },
    helper,
    guest: { copyRoots: [copyRoot], volumeRoots: [volumeRoot] },
  });
  await agent.start();
  const client = await TtrpcClient.connect(address);
  t.teardown(async () => {
    await client.close();
    await agent.stop();
    server.close();
    await backend.shutdown();
  });
  return {
    helper,
    call: async (name, req) => {
      const spec = METHODS[name] as unknown as MethodSpec<object, object, object, object>;
      const reply = await client.call(spec.service, spec.method, spec.request.encode(req).finish());
      return spec.response.decode(reply) as never;
    },
  };
}

async function expectCode(t: Test, p: Promise<unknown>, code: number, message?: RegExp): Promise<void> {
  try {
    await p;
    t.fail(`expected status ${code}`);
  } catch (err) {
    t.equal((err as StatusError).code, code, (err as Error).message);
    if (message) t.match((err as Error).message, message);
  }
}

t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

t.test('GetGuestDetails: the block size equals the real sysfs value', async (t) => {
  const h = await harness(t, '/sys');
  const r = await h.call('GetGuestDetails', { mem_block_size: true, mem_hotplug_probe: true });
  const file = '/sys/devices/system/memory/block_size_bytes';
  const want = fs.existsSync(file) ? parseInt(fs.readFileSync(file, 'utf8').trim(), 16) : 0;
  t.equal(Number(r.mem_block_size_bytes), want, `block size ${want}`);
  t.equal(r.support_mem_hotplug_probe, fs.existsSync('/sys/devices/system/memory/probe'));
  await h.call('OnlineCPUMem', {}); // the runtime's constant call: a no-op on this machine
});

t.test('OnlineCPUMem onlines the offline entries of a fake sysfs tree', async (t) => {
  const h = await harness(t, fakeSysfs);
  await h.call('OnlineCPUMem', { nb_cpus: 4 });
  const cpu = (n: number): string => fs.readFileSync(path.join(fakeSysfs, `devices/system/cpu/cpu${n}/online`), 'utf8').trim();
  const mem = (n: number): string => fs.readFileSync(path.join(fakeSysfs, `devices/system/memory/memory${n}/online`), 'utf8').trim();
  t.same([cpu(1), cpu(2), cpu(3)], ['1', '1', '1']);
  t.same([mem(0), mem(1), mem(2)], ['1', '1', '1']);
});

t.test('GetVolumeStats equals statfs of a tmpfs the test mounts', async (t) => {
  const h = await harness(t, fakeSysfs);
  const mnt = path.join(volumeRoot, 'tmpfs');
  fs.mkdirSync(mnt);
  const native = loadNative();
  native.mount('tmpfs', mnt, 'tmpfs', 0, 'size=8m,nr_inodes=1000');
  t.teardown(() => native.umount2(mnt, 2));
  fs.writeFileSync(path.join(mnt, 'f'), Buffer.alloc(1 << 20));
  const r = await h.call('GetVolumeStats', { volume_guest_path: mnt });
  const st = fs.statfsSync(mnt);
  const [bytes, inodes] = r.usage!;
  t.equal(Number(bytes.total), st.blocks * st.bsize);
  t.equal(Number(bytes.total), 8 << 20, '8 MiB tmpfs');
  t.equal(Number(bytes.available), st.bfree * st.bsize);
  t.equal(Number(inodes.total), 1000);
  t.equal(Number(inodes.available), st.ffree);
  await expectCode(t, h.call('ResizeVolume', { volume_guest_path: mnt }), Code.INVALID_ARGUMENT, /cannot grow a tmpfs/);
});

t.test('CopyFile as root: mode, uid/gid, dirs, symlinks; refusals write nothing', async (t) => {
  const h = await harness(t, fakeSysfs);
  const file = path.join(copyRoot, 'c1', 'cfg', 'a.json');
  await h.call('CopyFile', { path: file, file_size: 5, file_mode: 0o104750, dir_mode: 0o700, uid: 1234, gid: 5678, data: Buffer.from('hello') });
  const st = fs.statSync(file);
  t.equal(fs.readFileSync(file, 'utf8'), 'hello');
  t.equal(st.mode & 0o7777, 0o4750, 'mode with setuid kept (chown before chmod)');
  t.same([st.uid, st.gid], [1234, 5678]);
  t.same([fs.statSync(path.dirname(file)).uid, fs.statSync(path.dirname(file)).gid], [1234, 5678], 'immediate parent chowned');
  const dir = path.join(copyRoot, 'c1', 'd');
  await h.call('CopyFile', { path: dir, file_mode: 0o040750, uid: 42, gid: 43 });
  t.same([fs.statSync(dir).uid, fs.statSync(dir).gid, fs.statSync(dir).mode & 0o7777], [42, 43, 0o750]);
  const link = path.join(copyRoot, 'c1', 'l');
  await h.call('CopyFile', { path: link, file_mode: 0o120777, uid: 7, gid: 8, data: Buffer.from('/etc/passwd') });
  t.equal(fs.readlinkSync(link), '/etc/passwd');
  t.same([fs.lstatSync(link).uid, fs.lstatSync(link).gid], [7, 8], 'lchown, not the target');
  t.equal(fs.statSync('/etc/passwd').uid, 0, 'target untouched');
  const outside = fs.mkdtempSync(path.join(tmp, 'outside-'));
  fs.symlinkSync(outside, path.join(copyRoot, 'c1', 'out'));
  for (const p of [`${copyRoot}/../x`, path.join(outside, 'x'), path.join(copyRoot, 'c1', 'out', 'x'), path.join(copyRoot, 'c1', 'l', 'x')]) {
    await expectCode(t, h.call('CopyFile', { path: p, file_size: 1, file_mode: 0o100644, data: Buffer.from('x') }), Code.INVALID_ARGUMENT);
  }
  t.same(fs.readdirSync(outside), [], 'nothing written outside');
  // A regular file copied over an existing symlink replaces the link itself (rename), never its target.
  const passwd = fs.readFileSync('/etc/passwd');
  await h.call('CopyFile', { path: link, file_size: 1, file_mode: 0o100644, data: Buffer.from('x') });
  t.ok(fs.lstatSync(link).isFile(), 'the link is replaced by the file');
  t.ok(fs.readFileSync('/etc/passwd').equals(passwd), '/etc/passwd untouched');
});

t.test('AddSwap waits for a loop device attached after the request, then swapons it', async (t) => {
  // The wire's AddSwap names a PCI path, which needs a VM (test/vm/hotplug.test.ts); here the
  // helper op is called with the /dev name of a loop device (the test-only reference, as the
  // storage test's mmioblk), through the same device waiter and uevent socket.
  const img = path.join(tmp, 'swap.img');
  fs.writeFileSync(img, Buffer.alloc(16 << 20));
  if (spawnSync('mkswap', [img], { stdio: 'ignore' }).status !== 0) return t.plan(0, 'mkswap not available');
  if (!fs.existsSync('/dev/loop-control')) return t.plan(0, 'no /dev/loop-control');
  let n = 250 + (process.pid % 50);
  while (fs.existsSync(`/dev/loop${n}`) || fs.existsSync(`/sys/class/block/loop${n}`)) n++;
  const dev = `/dev/loop${n}`;
  t.teardown(() => {
    spawnSync('swapoff', [dev]);
    spawnSync('losetup', ['-d', dev]);
    spawnSync('python3', ['-c', `import fcntl,os;fd=os.open('/dev/loop-control',os.O_RDWR);fcntl.ioctl(fd,0x4C81,${n})`]);
  });
  const h = await harness(t, fakeSysfs);
  let settled = false;
  const pending = h.helper.call('addSwap', { device: dev });
  pending.then(() => (settled = true), () => (settled = true));
  await new Promise((r) => setTimeout(r, 300));
  t.notOk(settled, 'still waiting: the device does not exist yet');
  t.notMatch(fs.readFileSync('/proc/swaps', 'utf8'), new RegExp(`^${dev}\\s`, 'm'), 'not swapped on yet');
  const lo = spawnSync('losetup', [dev, img], { encoding: 'utf8' });
  if (lo.status !== 0) {
    await pending.catch(() => undefined);
    return t.plan(0, `no loop device: ${lo.stderr.trim()}`);
  }
  try {
    await pending;
  } catch (err) {
    if ((err as StatusError).code === Code.PERMISSION_DENIED) return t.plan(0, `swapon not allowed here: ${(err as Error).message}`);
    throw err;
  }
  t.match(fs.readFileSync('/proc/swaps', 'utf8'), new RegExp(`^${dev}\\s`, 'm'), `${dev} in /proc/swaps`);
  await expectCode(t, h.helper.call('addSwap', { device: dev }), Code.FAILED_PRECONDITION, /swapon/);
  t.equal(spawnSync('swapoff', [dev]).status, 0, 'swapoff');
  t.notMatch(fs.readFileSync('/proc/swaps', 'utf8'), new RegExp(`^${dev}\\s`, 'm'), 'gone from /proc/swaps');
});

t.test('ReseedRandomDev with the real ioctl', async (t) => {
  const h = await harness(t, fakeSysfs);
  await h.call('ReseedRandomDev', { data: Buffer.from(Array.from({ length: 64 }, (_v, i) => (i * 37) & 255)) });
  t.pass('RNDADDENTROPY + RNDRESEEDCRNG accepted');
});

t.test('SetGuestDateTime with the real clock', async (t) => {
  if (process.env.KATA_TEST_SET_CLOCK !== '1') {
    return t.plan(0, "sets this machine's CLOCK_REALTIME (a time namespace cannot isolate it); run with KATA_TEST_SET_CLOCK=1");
  }
  const h = await harness(t, fakeSysfs);
  const now = Date.now();
  await h.call('SetGuestDateTime', { Sec: Math.floor(now / 1000), Usec: (now % 1000) * 1000 });
  t.ok(Math.abs(Date.now() - now) < 60_000, 'clock set to (about) now');
});

t.test('SetPolicy denying an rpc', async (t) => {
  const h = await harness(t, fakeSysfs);
  await h.call('SetPolicy', { policy: JSON.stringify({ rpcs: { CopyFile: 'deny' } }) });
  const p = path.join(copyRoot, 'denied');
  await expectCode(t, h.call('CopyFile', { path: p, file_size: 1, file_mode: 0o100644, data: Buffer.from('x') }), Code.PERMISSION_DENIED, /CopyFileRequest is blocked by policy/);
  t.notOk(fs.existsSync(p), 'nothing written');
});
