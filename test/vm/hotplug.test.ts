// Hot-plug cases that need a real guest (QEMU + QMP): written now, run by the VM lane once it
// exists. Not run by `npm test` (scripts/run-tests.js runs dist/test/unit and
// dist/test/integration only); run with
//   KATA_VM_LANE=/abs/path/lane.js node_modules/.bin/tap dist/test/vm/hotplug.test.js
// The lane contract is test/vm/lib/lane.ts (an agent client, a QMP handle, a host directory,
// a way to run a command in the guest).
//
// Cases, as the Go runtime drives them (kata_agent.go, sandbox.go at 6e4d4c329a):
//   1. a blk storage by PCI path "02/03" sent before the disk is hot-plugged behind the bridge:
//      waited for (uevent) and mounted; the container reads the disk;
//   2. AddSwap by PCI path [2, 4] sent before the swap disk is hot-plugged: swapped on;
//   3. OnlineCPUMem after a vCPU hot-add ({nb_cpus: 1, cpu_only: true}) and after a pc-dimm
//      hot-add ({}): the new CPU and every memory block are online in the guest;
//   4. GetGuestDetails: mem_block_size_bytes equals the guest's block_size_bytes;
//   5. NICs hot-plugged by QMP (netdev user,restrict=on + virtio-net-pci with a known MAC behind
//      the bridge): UpdateInterface by MAC with the pciPath (network.go generateVCNetworkStructures)
//      sent before the NIC exists (waited for) and right after device_add, UpdateRoutes, then
//      ListInterfaces / ListRoutes and the guest's sysfs agree.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BRIDGE_ID, connectVmLane, VM_LANE_SKIP, type VmLane } from './lib/lane';
import type { BootedLane } from '../../scripts/vm/lane';
import { HOTPLUG_TIMEOUT_S } from '../../scripts/vm/boot';

/** How long a test lets QEMU take to hot-plug before the agent's wait would end (ms). */
const PLUG_DELAY_MS = 500;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Make a disk image on the host: `kind` ext4 (with /hello = "from-the-disk\n") or swap. */
function makeImage(lane: VmLane, name: string, kind: 'ext4' | 'swap'): string {
  const img = path.join(lane.hostDir, name);
  fs.writeFileSync(img, Buffer.alloc(32 << 20));
  if (kind === 'swap') {
    const r = spawnSync('mkswap', [img], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`mkswap: ${r.stderr}`);
  } else {
    const content = path.join(lane.hostDir, `${name}.d`);
    fs.mkdirSync(content, { recursive: true });
    fs.writeFileSync(path.join(content, 'hello'), 'from-the-disk\n');
    const r = spawnSync('mkfs.ext4', ['-q', '-F', '-d', content, img], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`mkfs.ext4: ${r.stderr}`);
  }
  return img;
}

/** Hot-plug `img` as a virtio-blk disk at slot `addr` (hex) of the guest's bridge (QMP blockdev-add + device_add). */
async function plugDisk(lane: VmLane, img: string, id: string, addr: string): Promise<void> {
  await lane.qmp.execute('blockdev-add', { driver: 'raw', 'node-name': id, file: { driver: 'file', filename: img } });
  await lane.qmp.execute('device_add', { driver: 'virtio-blk-pci', drive: id, id: `${id}-dev`, bus: BRIDGE_ID, addr });
}

async function unplugDisk(lane: VmLane, id: string): Promise<void> {
  await lane.qmp.execute('device_del', { id: `${id}-dev` }).catch(() => undefined);
  await sleep(1000); // the guest acknowledges the ACPI/SHPC eject
  await lane.qmp.execute('blockdev-del', { 'node-name': id }).catch(() => undefined);
}

/**
 * Hot-plug a virtio-net NIC with `mac` at slot `addr` (hex) of the bridge: a restricted user-mode
 * netdev, nothing leaves the host. Its IPv6 is off: slirp's router advertisements would give the
 * guest a SLAAC fec0::/64 address whenever one arrived after UpdateInterface.
 */
async function plugNic(lane: VmLane, id: string, mac: string, addr: string): Promise<void> {
  await lane.qmp.execute('netdev_add', { type: 'user', id: `${id}-net`, restrict: true, ipv6: false });
  await lane.qmp.execute('device_add', { driver: 'virtio-net-pci', netdev: `${id}-net`, id, mac, bus: BRIDGE_ID, addr });
}

async function main(): Promise<void> {
  const lane = await connectVmLane();
  if (!lane) {
    t.plan(0, VM_LANE_SKIP);
    return;
  }
  t.teardown(() => lane.close());
  const times = (lane as Partial<BootedLane>).vm?.times;
  if (times) t.comment(`boot: init mode at ${times.initMs} ms, agent announced at ${times.announceMs} ms, Health SERVING at ${times.healthMs} ms`);
  const guestText = async (argv: string[]): Promise<string> => {
    const r = await lane.guestRun(argv);
    if (r.status !== 0) throw new Error(`guest ${argv.join(' ')}: exit ${r.status}`);
    return r.stdout;
  };
  const sandboxId = `vm-hotplug-${process.pid}`;
  await lane.agent.call('CreateSandbox', { sandbox_id: sandboxId, hostname: 'vm-hotplug', sandbox_pidns: false, storages: [], dns: [] });
  t.teardown(() => lane.agent.call('DestroySandbox', {}).then(() => undefined));

  t.test('GetGuestDetails: mem_block_size_bytes is the guest sysfs value', async (t) => {
    const d = await lane.agent.call('GetGuestDetails', { mem_block_size: true, mem_hotplug_probe: true });
    const sysfs = parseInt((await guestText(['cat', '/sys/devices/system/memory/block_size_bytes'])).trim(), 16);
    t.equal(Number(d.mem_block_size_bytes), sysfs, `block size ${sysfs} bytes`);
    const probe = (await lane.guestRun(['test', '-e', '/sys/devices/system/memory/probe'])).status === 0;
    t.equal(d.support_mem_hotplug_probe, probe, 'probe support as the guest has it');
  });

  t.test('blk storage by PCI path 02/03, hot-plugged after the request: waited for and mounted', async (t) => {
    const img = makeImage(lane, 'blk-0203.img', 'ext4');
    const id = `blk-${process.pid}`;
    const mountPoint = '/run/kata-containers/sandbox/storage/vm-blk';
    t.teardown(() => unplugDisk(lane, 'vmblk0203'));
    const creating = lane.agent.call('CreateContainer', {
      container_id: id,
      exec_id: id,
      storages: [{ driver: 'blk', source: '02/03', fstype: 'ext4', mount_point: mountPoint, options: ['ro'] }],
      OCI: {
        Version: '1.1.0',
        Process: { Args: ['cat', '/disk/hello'], Env: ['PATH=/bin:/usr/bin'], Cwd: '/', User: { UID: 0, GID: 0 } },
        Root: { Path: lane.guestRootfs, Readonly: false },
        Mounts: [
          { destination: '/proc', type: 'proc', source: 'proc', options: [] },
          { destination: '/disk', type: 'bind', source: mountPoint, options: ['rbind', 'ro'] },
        ],
        Linux: { Namespaces: [{ Type: 'mount' }, { Type: 'uts' }, { Type: 'ipc' }] },
      },
    });
    await sleep(PLUG_DELAY_MS);
    t.notMatch(await guestText(['cat', '/proc/mounts']), mountPoint, 'not mounted before the disk exists');
    await plugDisk(lane, img, 'vmblk0203', '03');
    await creating;
    t.match(await guestText(['cat', '/proc/mounts']), new RegExp(`^/dev/vd[a-z]+ ${mountPoint} ext4 ro`, 'm'), 'the disk at 02/03 is mounted');
    await lane.agent.call('StartContainer', { container_id: id });
    const { data } = await lane.agent.call('ReadStdout', { container_id: id, exec_id: id, len: 32 * 1024 });
    t.equal(Buffer.from(data).toString(), 'from-the-disk\n', 'the container read the disk');
    await lane.agent.call('WaitProcess', { container_id: id, exec_id: id });
    await lane.agent.call('RemoveContainer', { container_id: id, timeout: 0 });
    t.notMatch(await guestText(['cat', '/proc/mounts']), mountPoint, 'unmounted after RemoveContainer');
  });

  t.test('AddSwap by PCI path [2, 4], hot-plugged after the request: swapped on', async (t) => {
    const img = makeImage(lane, 'swap-0204.img', 'swap');
    t.teardown(async () => {
      await lane.guestRun(['sh', '-c', 'for d in $(awk \'NR>1{print $1}\' /proc/swaps); do swapoff $d; done']);
      await unplugDisk(lane, 'vmswap0204');
    });
    const before = await guestText(['cat', '/proc/swaps']);
    const adding = lane.agent.call('AddSwap', { PCIPath: [2, 4] });
    await sleep(PLUG_DELAY_MS);
    await plugDisk(lane, img, 'vmswap0204', '04');
    await adding;
    const after = await guestText(['cat', '/proc/swaps']);
    const swaps = (text: string): string[] => text.split('\n').filter((l) => l.startsWith('/dev/')).map((l) => l.split(/\s+/)[0]);
    const added = swaps(after).filter((d) => !swaps(before).includes(d));
    t.equal(added.length, 1, `one more swap device: ${added.join(' ')}`);
    t.match(added[0] ?? '', /^\/dev\/vd[a-z]+$/, 'a virtio disk');
  });

  t.test('hot-plugged NICs: UpdateInterface by MAC waits for the NIC, UpdateRoutes, listed back', async (t) => {
    const macA = '02:00:ca:fe:00:05';
    const macB = '02:00:ca:fe:00:06';
    // As the runtime sends it: the host-side name, MAC in upper case, the PCI path of the hot-plug.
    const ifA = {
      device: 'eth0', name: 'pod0', mtu: 1400, hwAddr: macA.toUpperCase(), pciPath: '02/05', raw_flags: 0,
      IPAddresses: [{ family: 0, address: '10.88.0.2', mask: '24' }, { family: 1, address: 'fd00:88::2', mask: '64' }],
    };
    const ifB = { device: 'eth1', name: 'pod1', mtu: 1450, hwAddr: macB.toUpperCase(), pciPath: '02/06', raw_flags: 0, IPAddresses: [{ family: 0, address: '10.89.0.2', mask: '24' }] };
    // A: the request first, the NIC half a second later.
    const updatingA = lane.agent.call('UpdateInterface', { interface: ifA });
    let settled = false;
    void updatingA.then(() => (settled = true), () => (settled = true));
    await sleep(PLUG_DELAY_MS);
    t.notOk(settled, 'UpdateInterface waits while no NIC is behind 02/05');
    await plugNic(lane, 'vmnic5', macA, '05');
    const a = await updatingA;
    // B: the request right after device_add (the guest has not seen the NIC yet).
    await plugNic(lane, 'vmnic6', macB, '06');
    const b = await lane.agent.call('UpdateInterface', { interface: ifB });
    for (const [got, want, mac] of [[a, ifA, macA], [b, ifB, macB]] as const) {
      t.equal(got.name, want.name, `${want.name}: renamed`);
      t.equal(got.hwAddr, mac, `${want.name}: matched by MAC`);
      t.equal(Number(got.mtu), want.mtu, `${want.name}: MTU`);
      t.equal(got.pciPath, want.pciPath, `${want.name}: pciPath echoed`);
      t.ok((got.raw_flags ?? 0) & 1, `${want.name}: up`);
    }
    const routes = await lane.agent.call('UpdateRoutes', {
      routes: {
        Routes: [
          { dest: '', gateway: '10.88.0.1', device: 'pod0', source: '', scope: 0, family: 0 },
          { dest: '192.168.50.0/24', gateway: '10.89.0.1', device: 'pod1', source: '', scope: 0, family: 0 },
          { dest: '10.89.0.0/24', gateway: '', device: 'pod1', source: '10.89.0.2', scope: 253, family: 0 },
        ],
      },
    });
    t.ok(routes.Routes.length >= 3, 'UpdateRoutes answered the table');

    const list = await lane.agent.call('ListInterfaces', {});
    const byName = new Map(list.Interfaces.map((i) => [i.name, i]));
    const podA = byName.get('pod0');
    const podB = byName.get('pod1');
    t.equal(podA?.hwAddr, macA, 'ListInterfaces: pod0 with its MAC');
    t.equal(Number(podA?.mtu), 1400, 'pod0 MTU listed');
    t.same(podA?.IPAddresses?.filter((x) => !(x.address ?? '').startsWith('fe80')).map((x) => `${x.family}|${x.address}/${x.mask}`).sort(), ['0|10.88.0.2/24', '1|fd00:88::2/64'], 'pod0 addresses (IPv6 link-local aside)');
    t.equal(podB?.hwAddr, macB, 'ListInterfaces: pod1 with its MAC');
    t.equal(Number(podB?.mtu), 1450, 'pod1 MTU listed');
    t.same(podB?.IPAddresses?.filter((x) => !(x.address ?? '').startsWith('fe80')).map((x) => `${x.family}|${x.address}/${x.mask}`), ['0|10.89.0.2/24'], 'pod1 address');
    const listed = (await lane.agent.call('ListRoutes', {})).Routes.map((r) => `${r.dest}|${r.gateway}|${r.device}|${r.source}`);
    for (const want of ['|10.88.0.1|pod0|', '192.168.50.0/24|10.89.0.1|pod1|', '10.89.0.0/24||pod1|10.89.0.2']) {
      t.ok(listed.includes(want), `ListRoutes has ${want} (${listed.join(', ')})`);
    }
    // The guest kernel agrees (sysfs, outside the agent).
    t.equal((await guestText(['cat', '/sys/class/net/pod0/mtu'])).trim(), '1400', 'guest: pod0 MTU');
    t.equal((await guestText(['cat', '/sys/class/net/pod1/address'])).trim(), macB, 'guest: pod1 MAC');
    t.match(await guestText(['readlink', '/sys/class/net/pod0']), /\/0000:00:02\.0\/0000:01:05\.0\//, 'guest: pod0 is the NIC at 02/05');
    // No NIC ever comes at 02/09: DEADLINE_EXCEEDED after the kernel command line's
    // agent.hotplug_timeout (the lane's HOTPLUG_TIMEOUT_S), so the setting reaches the helper.
    const lost = await lane.agent.call('UpdateInterface', { interface: { ...ifB, hwAddr: '02:00:CA:FE:00:09', name: 'pod9', pciPath: '02/09' } }).then(
      () => undefined,
      (err: Error & { code?: number }) => err,
    );
    t.equal(lost?.code, 4, `DEADLINE_EXCEEDED for a NIC that never comes (${lost?.message})`);
    t.match(lost?.message ?? '', new RegExp(`Timeout after ${HOTPLUG_TIMEOUT_S * 1000}ms waiting for uevent net interface at PCI path 02/09`), 'after agent.hotplug_timeout');
  });

  t.test('OnlineCPUMem after a vCPU hot-add and a pc-dimm hot-add', async (t) => {
    const onlineCpus = async (): Promise<number> => {
      const text = (await guestText(['cat', '/sys/devices/system/cpu/online'])).trim();
      return text.split(',').reduce((n, r) => {
        const [a, b] = r.split('-').map(Number);
        return n + (b === undefined ? 1 : b - a + 1);
      }, 0);
    };
    const cpus0 = await onlineCpus();
    const slots = (await lane.qmp.execute('query-hotpluggable-cpus')) as { type: string; props: Record<string, number>; 'qom-path'?: string }[];
    const free = slots.find((s) => s['qom-path'] === undefined);
    if (!free) return t.plan(0, 'the lane VM has no free vCPU slot (-smp maxcpus)');
    await lane.qmp.execute('device_add', { driver: free.type, id: 'vmcpu-hot', ...free.props });
    // sandbox.go updateResources: ResizeVCPUs → onlineCPUMem(newCPUs, true), newCPUs being the
    // new total of vCPUs (upstream online_cpus compares the online count with it).
    await lane.agent.call('OnlineCPUMem', { wait: true, nb_cpus: cpus0 + 1, cpu_only: true });
    t.equal(await onlineCpus(), cpus0 + 1, 'the hot-added vCPU is online');

    await lane.qmp.execute('object-add', { 'qom-type': 'memory-backend-ram', id: 'vmmem-hot', size: 256 << 20 });
    const blocks = async (): Promise<number> => Number((await guestText(['sh', '-c', 'ls -d /sys/devices/system/memory/memory* | wc -l'])).trim());
    const blocks0 = await blocks();
    await lane.qmp.execute('device_add', { driver: 'pc-dimm', id: 'vmdimm-hot', memdev: 'vmmem-hot' });
    // The agent (as upstream online_memory) onlines the blocks present when it is called, in one
    // pass; under TCG the guest takes ~1 s to add them after device_add, so wait for them first.
    for (let i = 0; i < 60 && (await blocks()) <= blocks0; i++) await sleep(500);
    t.ok((await blocks()) > blocks0, 'the guest added the DIMM\'s memory blocks');
    await lane.agent.call('OnlineCPUMem', { wait: true, nb_cpus: 0, cpu_only: false });
    const offline = await guestText(['sh', '-c', 'grep -l 0 /sys/devices/system/memory/memory*/online || true']);
    t.equal(offline.trim(), '', 'every memory block is online after the pc-dimm hot-add');
  });
}

void main();
