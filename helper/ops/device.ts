/**
 * Waiting for hot-plugged devices (Kata agent device.rs, uevent.rs, linux_abi.rs, pci.rs at
 * 6e4d4c329a): a virtio-blk disk by PCI path, a virtio-mmio disk or an nvdimm by node name, a
 * SCSI disk by "id:lun". Each wait subscribes to uevents first, then scans sysfs (a device
 * that appeared before the request is found at once), then waits for a matching "add" (or
 * "change") uevent for at most the hotplug timeout (default 3 s, as upstream
 * agent.hotplug_timeout). A block device counts as present once its size is non-zero (a loop
 * device is announced before its backing file is attached; virtio disks have their size at
 * "add", so for them this is upstream's behaviour).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Code, StatusError, type DevicePlan, type GuestDevice } from '../../shared/protocol';
import type { Uevent, UeventSource } from './uevent';
import { PCI_PATH_RE } from '../../shared/paths';

/** Default hotplug timeout in ms (upstream agent.hotplug_timeout). */
export const DEFAULT_HOTPLUG_TIMEOUT_MS = 3000;

/** The PCI root on x86_64, ppc64le and s390x (upstream create_pci_root_bus_path). */
const PCI_ROOT = '/devices/pci0000:00';

export interface DeviceWaiterOptions {
  uevents: UeventSource;
  /** sysfs mount point (default /sys; tests may use a fake tree). */
  sysfs?: string;
  /** devtmpfs mount point (default /dev). */
  dev?: string;
  /** Default wait per device in ms. */
  timeoutMs?: number;
}

/** A device found: its node name under /dev ("vdb", "loop5") and its sysfs devpath. */
export interface FoundBlock {
  name: string;
  devpath: string;
}

/** Waits for block devices; see the module comment. */
export class DeviceWaiter {
  readonly sysfs: string;
  readonly dev: string;
  readonly timeoutMs: number;
  private readonly uevents: UeventSource;

  constructor(opts: DeviceWaiterOptions) {
    this.uevents = opts.uevents;
    this.sysfs = opts.sysfs ?? '/sys';
    this.dev = opts.dev ?? '/dev';
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_HOTPLUG_TIMEOUT_MS;
  }

  /**
   * Resolve a PCI path ("02/03": slot 02 on the root bus, then slot 03 behind that bridge) to
   * its sysfs devpath ("/devices/pci0000:00/0000:00:02.0/0000:01:03.0"), reading each bridge's
   * pci_bus directory for the bus number behind it (upstream pcipath_to_sysfs).
   * INVALID_ARGUMENT for a malformed path; NOT_FOUND when a bridge is missing.
   */
  pciPathToDevpath(pciPath: string): string {
    if (!PCI_PATH_RE.test(pciPath)) throw new StatusError(Code.INVALID_ARGUMENT, `invalid PCI path ${JSON.stringify(pciPath)}`);
    let bus = '0000:00';
    let rel = PCI_ROOT;
    const elems = pciPath.split('/');
    elems.forEach((e, i) => {
      const [slot, fn = '0'] = e.split('.');
      if (parseInt(slot, 16) > 0x1f) throw new StatusError(Code.INVALID_ARGUMENT, `invalid PCI path ${JSON.stringify(pciPath)}: slot ${slot} > 1f`);
      rel = `${rel}/${bus}:${slot.toLowerCase()}.${fn}`;
      if (i < elems.length - 1) {
        const busDir = path.join(this.sysfs, rel, 'pci_bus');
        let entries: string[];
        try {
          entries = fs.readdirSync(busDir);
        } catch {
          throw new StatusError(Code.NOT_FOUND, `PCI path ${pciPath}: no bridge at ${rel}`);
        }
        if (entries.length !== 1) throw new StatusError(Code.NOT_FOUND, `PCI path ${pciPath}: ${busDir} has ${entries.length} buses`);
        bus = entries[0];
      }
    });
    return rel;
  }

  /** Whether block device `name` exists in sysfs with a non-zero size. */
  private blockReady(name: string): boolean {
    try {
      return Number(fs.readFileSync(path.join(this.sysfs, 'class', 'block', name, 'size'), 'utf8').trim()) > 0;
    } catch {
      return false;
    }
  }

  /**
   * Wait for a block device: `scan` looks in sysfs, `match` judges a uevent's devpath. Resolves
   * with the device; DEADLINE_EXCEEDED after `timeoutMs` ("Timeout after Nms waiting for uevent
   * <what>", as upstream).
   */
  waitBlock(what: string, scan: () => FoundBlock | undefined, match: (devpath: string) => boolean, timeoutMs = this.timeoutMs): Promise<FoundBlock> {
    return this.waitFor(what, (ev) => ev.subsystem === 'block' && (ev.action === 'add' || ev.action === 'change') && match(ev.devpath),
      scan, (found) => this.blockReady(found.name), timeoutMs);
  }

  /**
   * The wait itself: subscribe to uevents, `scan` sysfs once (a device there already is found at
   * once), then take the first uevent `wanted` accepts (named by DEVNAME or the devpath's last
   * component) whose device is `ready`; a last scan at the deadline (a lost event), then
   * DEADLINE_EXCEEDED "Timeout after Nms waiting for uevent <what>". Errors of `scan` reject.
   */
  private waitFor(what: string, wanted: (ev: Uevent) => boolean, scan: () => FoundBlock | undefined, ready: (found: FoundBlock) => boolean, timeoutMs: number): Promise<FoundBlock> {
    return new Promise((resolve, reject) => {
      let done = false;
      let timer: NodeJS.Timeout | undefined;
      const finish = (err: Error | undefined, found?: FoundBlock): void => {
        if (done) return;
        done = true;
        unsubscribe();
        if (timer) clearTimeout(timer);
        if (err) reject(err);
        else resolve(found as FoundBlock);
      };
      const onEvent = (ev: Uevent): void => {
        if (!wanted(ev)) return;
        const found = { name: ev.devname || path.basename(ev.devpath), devpath: ev.devpath };
        if (ready(found)) finish(undefined, found);
      };
      const unsubscribe = this.uevents.subscribe(onEvent);
      try {
        const found = scan();
        if (found && ready(found)) {
          finish(undefined, found);
          return;
        }
      } catch (err) {
        finish(err as Error);
        return;
      }
      timer = setTimeout(() => {
        // A last look: the event may have been lost to a queue overflow.
        const found = scan();
        if (found && ready(found)) finish(undefined, found);
        else finish(new StatusError(Code.DEADLINE_EXCEEDED, `Timeout after ${timeoutMs}ms waiting for uevent ${what}`));
      }, timeoutMs);
    });
  }

  /** Scan /sys/class/<cls> (block, net) for a device whose devpath satisfies `match`. */
  private scanClass(match: (devpath: string) => boolean, cls = 'block'): FoundBlock | undefined {
    let names: string[];
    try {
      names = fs.readdirSync(path.join(this.sysfs, 'class', cls));
    } catch {
      return undefined;
    }
    for (const name of names) {
      let target: string;
      try {
        target = fs.readlinkSync(path.join(this.sysfs, 'class', cls, name));
      } catch {
        continue;
      }
      // "../../devices/pci0000:00/.../block/vdb" → "/devices/..."
      const devpath = '/' + target.split('/').filter((p) => p !== '..').join('/');
      if (match(devpath)) return { name, devpath };
    }
    return undefined;
  }

  /** virtio-blk over PCI (storage `blk`, device `blk`): the disk behind PCI path `pciPath`. Returns /dev/<name>. */
  async virtioBlkPci(pciPath: string, timeoutMs?: number): Promise<string> {
    const rel = this.pciPathToDevpath(pciPath);
    const re = new RegExp(`^${escapeRe(rel)}/virtio[0-9]+/block/[^/]+$`);
    const match = (d: string): boolean => re.test(d);
    const found = await this.waitBlock(`PCI path ${pciPath}`, () => this.scanClass(match), match, timeoutMs);
    return path.join(this.dev, found.name);
  }

  /**
   * A network interface behind PCI path `pciPath` (UpdateInterface with a pciPath, as upstream
   * HEAD wait_for_pci_net_interface): one already in /sys/class/net, else the first "add" uevent
   * of subsystem net below the device. Resolves with the interface name ("eth1");
   * INVALID_ARGUMENT / NOT_FOUND as {@link pciPathToDevpath}; DEADLINE_EXCEEDED after the
   * hotplug timeout.
   */
  async netPci(pciPath: string, timeoutMs = this.timeoutMs): Promise<string> {
    const rel = this.pciPathToDevpath(pciPath);
    const re = new RegExp(`^${escapeRe(rel)}/(?:[^/]+/)*net/[^/]+$`);
    const match = (d: string): boolean => re.test(d);
    const found = await this.waitFor(`net interface at PCI path ${pciPath}`,
      (ev) => ev.subsystem === 'net' && ev.action === 'add' && match(ev.devpath),
      () => this.scanClass(match, 'net'), () => true, timeoutMs);
    return found.name;
  }

  /** A disk by node name (mmioblk, nvdimm, and the test path): `/dev/<name>`, devpath ending "/block/<name>". */
  async blockByName(devPath: string, extra: (devpath: string) => boolean = () => true, timeoutMs?: number): Promise<string> {
    const name = path.basename(devPath);
    const match = (d: string): boolean => d.endsWith(`/block/${name}`) && extra(d);
    const found = await this.waitBlock(devPath, () => this.scanClass(match), match, timeoutMs);
    return path.join(this.dev, found.name);
  }

  /** A SCSI disk "id:lun": asks every SCSI host to scan for it, then waits (upstream get_scsi_device_name). */
  async scsi(addr: string, timeoutMs?: number): Promise<string> {
    const [id, lun] = addr.split(':');
    try {
      for (const host of fs.readdirSync(path.join(this.sysfs, 'class', 'scsi_host'))) {
        try {
          fs.writeFileSync(path.join(this.sysfs, 'class', 'scsi_host', host, 'scan'), `0 ${id} ${lun}`);
        } catch {
          // a host that cannot scan is skipped
        }
      }
    } catch {
      // no SCSI hosts: the wait times out
    }
    const needle = `/0:0:${id}:${lun}/block/`;
    const match = (d: string): boolean => d.includes(needle);
    const found = await this.waitBlock(`SCSI ${addr}`, () => this.scanClass(match), match, timeoutMs);
    return path.join(this.dev, found.name);
  }

  /** The node numbers of `/dev/<name>` from sysfs ("MAJ:MIN"). NOT_FOUND when absent. */
  numbers(devPath: string): { kind: 'b' | 'c'; major: number; minor: number } {
    const name = path.basename(devPath);
    try {
      const [maj, min] = fs.readFileSync(path.join(this.sysfs, 'class', 'block', name, 'dev'), 'utf8').trim().split(':');
      return { kind: 'b', major: Number(maj), minor: Number(min) };
    } catch {
      throw new StatusError(Code.NOT_FOUND, `no block device ${devPath} in ${this.sysfs}/class/block`);
    }
  }

  /**
   * Wait for one CreateContainerRequest device and answer its guest node (upstream
   * device.rs add_devices). vfio and ccw types are UNIMPLEMENTED here (ccw: s390x only).
   */
  async waitDevice(d: DevicePlan, timeoutMs?: number): Promise<GuestDevice> {
    let vmPath: string;
    switch (d.type) {
      case 'blk':
        vmPath = await this.virtioBlkPci(d.id, timeoutMs);
        break;
      case 'mmioblk':
        vmPath = await this.blockByName(d.vmPath, undefined, timeoutMs);
        break;
      case 'nvdimm':
        vmPath = await this.blockByName(d.vmPath, (p) => p.startsWith('/devices/LNXSYSTM'), timeoutMs);
        break;
      case 'scsi':
        vmPath = await this.scsi(d.id, timeoutMs);
        break;
      default:
        throw new StatusError(Code.UNIMPLEMENTED, `device type ${d.type} (${d.containerPath}) is not supported yet`);
    }
    return { containerPath: d.containerPath, vmPath, ...this.numbers(vmPath) };
  }
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
