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
//   4. GetGuestDetails: mem_block_size_bytes equals the guest's block_size_bytes.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BRIDGE_ID, connectVmLane, VM_LANE_SKIP, type VmLane } from './lib/lane';

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

async function main(): Promise<void> {
  const lane = await connectVmLane();
  if (!lane) {
    t.plan(0, VM_LANE_SKIP);
    return;
  }
  t.teardown(() => lane.close());
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
