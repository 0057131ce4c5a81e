// The guest-operation rpcs end to end without privileges: Agent + ttRPC over the in-process
// mock helper, whose guest ops act on a fake sysfs tree and temp copy/volume roots and record
// clock, entropy and swap calls (helper/mock/guest.ts).
import t, { type Test } from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { MethodName, RequestOf, ResponseOf } from '../../control/ctl/methods';
import { pciPathText, STORAGE_HANDLERS } from '../../control/rpc/guest';
import { IMPLEMENTED_AGENT_METHODS } from '../../control/rpc';
import { addFakeBlockDevice, type MockHelperPair } from '../../helper/mock/main';
import { startMockAgent } from '../lib/mock-agent';
import { Code, StatusError } from '../../shared/protocol';

interface Harness {
  pair: MockHelperPair;
  call<K extends MethodName>(name: K, req: RequestOf<K>): Promise<ResponseOf<K>>;
  copyRoot: string;
  volumeRoot: string;
  sysfs: string;
  tmp: string;
}

async function harness(t: Test, policy?: string): Promise<Harness> {
  const h = await startMockAgent(t, {
    prefix: 'kata-guest-rpc-',
    agent: (pair) => ({ guest: { copyRoots: pair.guest.copyRoots, volumeRoots: pair.guest.volumeRoots, policy } }),
  });
  const g = h.pair.guest;
  return { pair: h.pair, call: h.call, copyRoot: g.copyRoots[0], volumeRoot: g.volumeRoots[0], sysfs: g.sysfsRoot, tmp: h.dir };
}

async function expectCode(t: Test, p: Promise<unknown>, code: number, message?: RegExp): Promise<void> {
  try {
    await p;
    t.fail(`expected status ${code}`);
  } catch (err) {
    t.ok(err instanceof StatusError, 'a status error');
    t.equal((err as StatusError).code, code, `code ${code}: ${(err as Error).message}`);
    if (message !== undefined) t.match((err as Error).message, message);
  }
}

const read = (f: string): string => fs.readFileSync(f, 'utf8').trim();

t.test('the guest rpcs are implemented', async (t) => {
  for (const m of ['GetGuestDetails', 'OnlineCPUMem', 'MemHotplugByProbe', 'ReseedRandomDev', 'SetGuestDateTime', 'AddSwap', 'GetVolumeStats', 'ResizeVolume', 'CopyFile', 'SetPolicy']) {
    t.ok(IMPLEMENTED_AGENT_METHODS.includes(m), m);
  }
});

t.test('GetGuestDetails: block size (hex), probe support, agent details', async (t) => {
  const h = await harness(t);
  const r = await h.call('GetGuestDetails', { mem_block_size: true, mem_hotplug_probe: true });
  t.equal(Number(r.mem_block_size_bytes), 0x8000000);
  t.equal(r.support_mem_hotplug_probe, true);
  t.equal(r.agent_details?.supports_seccomp, true);
  t.equal(r.agent_details?.init_daemon, false, 'control is not PID 1 here');
  t.same(r.agent_details?.storage_handlers, [...STORAGE_HANDLERS]);
  t.same(r.agent_details?.device_handlers, []);
  t.match(r.agent_details?.version, /^\d+\.\d+/);
  const none = await h.call('GetGuestDetails', {});
  t.equal(Number(none.mem_block_size_bytes), 0, 'not asked: 0');
  t.equal(none.support_mem_hotplug_probe, false);
  fs.writeFileSync(path.join(h.sysfs, 'devices/system/memory/block_size_bytes'), 'zz\n');
  await expectCode(t, h.call('GetGuestDetails', { mem_block_size: true }), Code.INTERNAL, /invalid memory block size "zz"/);
  fs.rmSync(path.join(h.sysfs, 'devices/system/memory/block_size_bytes'));
  fs.rmSync(path.join(h.sysfs, 'devices/system/memory/probe'));
  const gone = await h.call('GetGuestDetails', { mem_block_size: true, mem_hotplug_probe: true });
  t.equal(Number(gone.mem_block_size_bytes), 0, 'no block_size_bytes: 0, as upstream');
  t.equal(gone.support_mem_hotplug_probe, false);
});

t.test('OnlineCPUMem: {} onlines memory only; nb_cpus onlines CPUs; too many CPUs fail', async (t) => {
  const h = await harness(t);
  const mem1 = path.join(h.sysfs, 'devices/system/memory/memory1/online');
  const cpu1 = path.join(h.sysfs, 'devices/system/cpu/cpu1/online');
  await h.call('OnlineCPUMem', {});
  t.equal(read(mem1), '1', 'offline memory block onlined');
  t.equal(read(cpu1), '0', 'CPUs left alone without nb_cpus');
  const before = fs.statSync(mem1).mtimeMs;
  await h.call('OnlineCPUMem', {});
  t.equal(fs.statSync(mem1).mtimeMs, before, 'nothing offline: nothing written');
  fs.writeFileSync(path.join(h.sysfs, 'devices/system/memory/memory0/online'), '0');
  await h.call('OnlineCPUMem', { nb_cpus: 2, cpu_only: true });
  t.equal(read(cpu1), '1', 'cpu1 onlined');
  t.equal(read(path.join(h.sysfs, 'devices/system/memory/memory0/online')), '0', 'cpu_only leaves memory alone');
  await expectCode(t, h.call('OnlineCPUMem', { nb_cpus: 3 }), Code.DEADLINE_EXCEEDED, /failed to online 3 CPU\(s\) after 100 retries/);
  await expectCode(t, h.call('OnlineCPUMem', { nb_cpus: 100000 }), Code.INVALID_ARGUMENT, /nb_cpus 100000/);
});

t.test('MemHotplugByProbe writes each address as 0x%X to the probe file', async (t) => {
  const h = await harness(t);
  await h.call('MemHotplugByProbe', { memHotplugProbeAddr: [0x1c0000000] });
  t.equal(read(path.join(h.sysfs, 'devices/system/memory/probe')), '0x1C0000000');
  await h.call('MemHotplugByProbe', {});
  fs.rmSync(path.join(h.sysfs, 'devices/system/memory/probe'));
  await expectCode(t, h.call('MemHotplugByProbe', { memHotplugProbeAddr: [4096] }), Code.FAILED_PRECONDITION, /no memory probe interface/);
});

t.test('ReseedRandomDev and SetGuestDateTime reach the helper; bad values are refused', async (t) => {
  const h = await harness(t);
  const sys = h.pair.guest.system;
  await expectCode(t, h.call('ReseedRandomDev', {}), Code.INVALID_ARGUMENT, /missing entropy data/);
  const data = Buffer.alloc(5000, 7);
  await h.call('ReseedRandomDev', { data });
  t.same(sys.entropy.map((b) => b.length), [4096, 904], 'split in 4 KiB pieces');
  t.ok(Buffer.concat(sys.entropy).equals(data));
  await h.call('SetGuestDateTime', { Sec: 1700000000, Usec: 250000 });
  t.same(sys.clock, [{ sec: 1700000000, nsec: 250000000 }]);
  await expectCode(t, h.call('SetGuestDateTime', { Sec: 1, Usec: 1000000 }), Code.INVALID_ARGUMENT, /Usec 1000000/);
  await expectCode(t, h.call('SetGuestDateTime', { Sec: -5, Usec: 0 }), Code.INVALID_ARGUMENT, /Sec -5/);
  t.equal(sys.clock.length, 1, 'refused calls set nothing');
});

t.test('AddSwap: a disk already there, behind a bridge, hot-plugged after the request; refusals', async (t) => {
  const h = await harness(t);
  const g = h.pair.guest;
  t.equal(pciPathText([2, 3]), '02/03');
  t.equal(pciPathText([0x1f]), '1f');
  // Present before the request: found by the sysfs scan.
  addFakeBlockDevice(g, '/devices/pci0000:00/0000:00:05.0/virtio3/block/vdb');
  await h.call('AddSwap', { PCIPath: [5] });
  t.same(g.system.swaps, [path.join(g.devRoot, 'vdb')], 'swapon of the disk at 05');
  // Behind a bridge, hot-plugged after the request: the uevent ends the wait.
  fs.mkdirSync(path.join(g.sysfsRoot, 'devices/pci0000:00/0000:00:02.0/pci_bus/0000:01'), { recursive: true });
  const pending = h.call('AddSwap', { PCIPath: [2, 3] });
  let settled = false;
  void pending.then(() => (settled = true), () => (settled = true));
  await new Promise((r) => setTimeout(r, 100));
  t.notOk(settled, 'still waiting while the disk is absent');
  t.equal(g.system.swaps.length, 1, 'nothing swapped on meanwhile');
  g.uevents.publish(addFakeBlockDevice(g, '/devices/pci0000:00/0000:00:02.0/0000:01:03.0/virtio7/block/vdc'));
  await pending;
  t.same(g.system.swaps.at(-1), path.join(g.devRoot, 'vdc'), 'swapon of the hot-plugged disk behind the bridge');
  // A uevent for another slot does not end the wait: timeout (mock hotplug timeout 500 ms).
  const other = h.call('AddSwap', { PCIPath: [6] });
  g.uevents.publish(addFakeBlockDevice(g, '/devices/pci0000:00/0000:00:07.0/virtio9/block/vdd'));
  await expectCode(t, other, Code.DEADLINE_EXCEEDED, /Timeout after 500ms waiting for uevent PCI path 06/);
  await expectCode(t, h.call('AddSwap', { PCIPath: [4, 1] }), Code.NOT_FOUND, /no bridge/);
  await expectCode(t, h.call('AddSwap', { PCIPath: [32] }), Code.INVALID_ARGUMENT, /PCI slot 32/);
  await expectCode(t, h.call('AddSwap', {}), Code.INVALID_ARGUMENT, /PCI path of 0 slots/);
  t.equal(g.system.swaps.length, 2, 'refused and timed-out calls swap nothing');
  // The helper itself refuses what control never sends.
  await expectCode(t, h.pair.client.call('addSwap', { pciPath: '05', device: '/dev/vdb' }), Code.INVALID_ARGUMENT, /exactly one/);
  await expectCode(t, h.pair.client.call('addSwap', { device: '/etc/passwd' }), Code.INVALID_ARGUMENT, /not a \/dev path/);
  await expectCode(t, h.pair.client.call('addSwap', { pciPath: '05/../x' }), Code.INVALID_ARGUMENT, /invalid PCI path/);
});

t.test('GetVolumeStats: statfs of a path below the volume root; refusals', async (t) => {
  const h = await harness(t);
  const vol = path.join(h.volumeRoot, 'vol1');
  fs.mkdirSync(vol);
  const r = await h.call('GetVolumeStats', { volume_guest_path: vol });
  const st = fs.statfsSync(vol);
  t.equal(r.usage?.length, 2);
  const [bytes, inodes] = r.usage!;
  t.equal(bytes.unit, 1, 'BYTES');
  t.equal(Number(bytes.total), st.blocks * st.bsize);
  t.equal(Number(bytes.used), Number(bytes.total) - Number(bytes.available));
  t.equal(inodes.unit, 2, 'INODES');
  t.equal(Number(inodes.total), st.files);
  t.same(r.volume_condition, { abnormal: false, message: 'OK' });
  await expectCode(t, h.call('GetVolumeStats', { volume_guest_path: '/etc' }), Code.INVALID_ARGUMENT, /outside/);
  await expectCode(t, h.call('GetVolumeStats', { volume_guest_path: `${vol}/../../etc` }), Code.INVALID_ARGUMENT, /not normalised/);
  fs.symlinkSync('/etc', path.join(h.volumeRoot, 'escape'));
  await expectCode(t, h.call('GetVolumeStats', { volume_guest_path: path.join(h.volumeRoot, 'escape') }), Code.INVALID_ARGUMENT, /resolves to/);
  await expectCode(t, h.call('GetVolumeStats', { volume_guest_path: path.join(h.volumeRoot, 'missing') }), Code.NOT_FOUND);
  await expectCode(t, h.call('ResizeVolume', { volume_guest_path: vol, size: 1 << 20 }), Code.FAILED_PRECONDITION, /nothing is mounted/);
  await expectCode(t, h.call('ResizeVolume', { volume_guest_path: '/tmp/x' }), Code.INVALID_ARGUMENT, /outside/);
});

t.test('CopyFile: chunked files, directories, symlinks; refusals write nothing', async (t) => {
  const h = await harness(t);
  const root = h.copyRoot;
  const file = path.join(root, 'c1', 'etc', 'hosts');
  const content = Buffer.alloc(1536 * 1024);
  for (let i = 0; i < content.length; i++) content[i] = i % 251;
  const base = { path: file, file_size: content.length, file_mode: 0o100640, dir_mode: 0o750, uid: process.getuid!(), gid: process.getgid!() };
  await h.call('CopyFile', { ...base, offset: 0, data: content.subarray(0, 1024 * 1024) });
  t.notOk(fs.existsSync(file), 'not in place before the last chunk');
  await h.call('CopyFile', { ...base, offset: 1024 * 1024, data: content.subarray(1024 * 1024) });
  t.ok(fs.readFileSync(file).equals(content), 'content');
  t.equal(fs.statSync(file).mode & 0o7777, 0o640, 'mode');
  t.equal(fs.statSync(path.dirname(file)).mode & 0o777, 0o750, 'created parent gets dir_mode');
  t.same(fs.readdirSync(path.dirname(file)), ['hosts'], 'no temp file left');

  const empty = path.join(root, 'c1', 'empty');
  await h.call('CopyFile', { path: empty, file_size: 0, file_mode: 0o100600 });
  t.equal(fs.readFileSync(empty).length, 0, 'empty file');

  const dir = path.join(root, 'c1', 'secret');
  await h.call('CopyFile', { path: dir, file_mode: 0o040711 });
  t.ok(fs.statSync(dir).isDirectory());
  t.equal(fs.statSync(dir).mode & 0o7777, 0o711);
  const link = path.join(dir, '..data');
  await h.call('CopyFile', { path: link, file_mode: 0o120777, data: Buffer.from('..2024_01') });
  t.equal(fs.readlinkSync(link), '..2024_01');
  await h.call('CopyFile', { path: link, file_mode: 0o120777, data: Buffer.from('..2024_02') });
  t.equal(fs.readlinkSync(link), '..2024_02', 'an existing symlink is replaced');

  // Refusals.
  const outside = fs.mkdtempSync(path.join(h.tmp, 'outside-'));
  fs.symlinkSync(outside, path.join(root, 'c1', 'out'));
  const refusals: Array<[string, RegExp]> = [
    [`${root}/../escape`, /not normalised/],
    [`${root}/c1/../../escape`, /not normalised/],
    [path.join(outside, 'x'), /outside/],
    ['/etc/kata-copy-test', /outside/],
    ['relative/x', /not absolute/],
    [path.join(root, 'c1', 'out', 'x'), /symlink/],
    [path.join(root, 'c1', 'out', 'new', 'x'), /symlink/],
  ];
  for (const [p, re] of refusals) {
    await expectCode(t, h.call('CopyFile', { path: p, file_size: 1, file_mode: 0o100644, data: Buffer.from('x') }), Code.INVALID_ARGUMENT, re);
  }
  await expectCode(t, h.call('CopyFile', { path: path.join(root, 'c1', 'out', 'd'), file_mode: 0o040755 }), Code.INVALID_ARGUMENT, /symlink/);
  t.same(fs.readdirSync(outside), [], 'nothing written through the symlink');
  t.notOk(fs.existsSync(path.join(path.dirname(root), 'escape')));
  await expectCode(t, h.call('CopyFile', { path: path.join(root, 'dev'), file_mode: 0o020666 }), Code.INVALID_ARGUMENT, /only regular files/);
  await expectCode(t, h.call('CopyFile', { path: path.join(root, 'big'), file_size: 2, offset: 1, file_mode: 0o100644, data: Buffer.from('xy') }), Code.INVALID_ARGUMENT, /past file_size/);
  await expectCode(t, h.call('CopyFile', { path: path.join(root, 'l'), file_mode: 0o120777 }), Code.INVALID_ARGUMENT, /symlink target/);
});

t.test('SetPolicy: deny by rpc, field rules, SetPolicy itself; Health is never checked', async (t) => {
  const h = await harness(t);
  await expectCode(t, h.call('SetPolicy', { policy: '{"rpcs": {"Nope": "deny"}}' }), Code.INVALID_ARGUMENT, /not an AgentService rpc/);
  await expectCode(t, h.call('SetPolicy', { policy: 'package agent_policy' }), Code.INVALID_ARGUMENT, /not JSON/);
  await h.call('SetPolicy', { policy: JSON.stringify({ rpcs: { GetGuestDetails: 'deny' }, ExecProcess: { commands: ['/bin/echo .*'] } }) });
  await expectCode(t, h.call('GetGuestDetails', {}), Code.PERMISSION_DENIED, /^GetGuestDetailsRequest is blocked by policy: rpcs.GetGuestDetails is "deny"$/);
  await h.call('OnlineCPUMem', {});
  await expectCode(
    t,
    h.call('ExecProcess', { container_id: 'nope', exec_id: 'e', process: { Args: ['/bin/sh', '-c', 'id'], Cwd: '/' } }),
    Code.PERMISSION_DENIED,
    /ExecProcess.commands does not allow "\/bin\/sh -c id"/,
  );
  await expectCode(t, h.call('ExecProcess', { container_id: 'nope', exec_id: 'e', process: { Args: ['/bin/echo', 'hi'], Cwd: '/' } }), Code.NOT_FOUND, undefined);
  const check = await h.call('Check', {});
  t.equal(check.status, 1, 'Health is not policy-checked');
  await h.call('SetPolicy', { policy: JSON.stringify({ default: 'deny', rpcs: { GetGuestDetails: 'allow' } }) });
  await h.call('GetGuestDetails', {});
  await expectCode(t, h.call('SetPolicy', { policy: '{}' }), Code.PERMISSION_DENIED, /SetPolicyRequest is blocked by policy: default is "deny"/);
  await expectCode(t, h.call('ListInterfaces', {}), Code.PERMISSION_DENIED, /ListInterfacesRequest is blocked/);
});

t.test('a policy given at start: privileged containers and host bind mounts refused', async (t) => {
  const policy = JSON.stringify({ CreateContainer: { allowPrivileged: false, allowHostMounts: false } });
  const h = await harness(t, policy);
  const spec = (extra: object) => ({
    container_id: 'pol',
    OCI: { Version: '1.0.2', Root: { Path: '/r' }, Process: { Args: ['true'], Cwd: '/' }, ...extra },
  });
  await expectCode(
    t,
    h.call('CreateContainer', spec({ Process: { Args: ['true'], Cwd: '/', Capabilities: { Bounding: ['CAP_SYS_ADMIN'] } } })),
    Code.PERMISSION_DENIED,
    /allowPrivileged is false/,
  );
  await expectCode(
    t,
    h.call('CreateContainer', spec({ Mounts: [{ destination: '/h', source: '/etc', type: 'bind', options: ['rbind'] }] })),
    Code.PERMISSION_DENIED,
    /allowHostMounts is false and "\/h" binds "\/etc"/,
  );
  await expectCode(
    t,
    h.call('CreateContainer', spec({ Mounts: [{ destination: '/h', source: '/run/kata-containers/../../etc', type: 'bind' }] })),
    Code.PERMISSION_DENIED,
    /allowHostMounts/,
  );
});
