/**
 * The mock twin of the helper's network driver (helper/ops/netlink.ts): an in-memory kernel
 * with links, addresses, main-table routes, neighbours and iptables text, so the network ops
 * (helper/ops/network.ts) and control's rpcs run without root. It keeps the kernel rules the
 * ops depend on: renaming needs the link down, a name is unique, an IPv4 address brings its
 * kernel link route, a gateway must be reachable through a link route on the device
 * (ENETUNREACH), an exact duplicate route or address is EEXIST, an unknown index ENODEV.
 * iptables "restore" stores the text (a line `BAD` fails with exit 2); "save" returns it.
 */
import { isIPv4 } from 'node:net';
import { IFF_ALLMULTI, IFF_NOARP, IFF_PROMISC, IFF_UP, RTPROT_KERNEL, RT_SCOPE_LINK, RT_TABLE_MAIN, RTN_UNICAST } from '../../shared/net';
import type { DriverAddr, DriverLink, DriverNeigh, DriverRoute, IptablesRun, LinkChange, NetlinkDriver } from '../ops/network';

function errno(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

const ZERO_STATS = { rxBytes: 0, rxPackets: 0, rxErrors: 0, rxDropped: 0, txBytes: 0, txPackets: 0, txErrors: 0, txDropped: 0 };

function ipv4Bits(a: string): number {
  return a.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
}
function inPrefix(addr: string, net: string, len: number): boolean {
  if (!isIPv4(addr) || !isIPv4(net)) return addr === net || len === 0 || addr.split(':').slice(0, 4).join(':') === net.split(':').slice(0, 4).join(':');
  if (len === 0) return true;
  const shift = 32 - len;
  return Math.floor(ipv4Bits(addr) / 2 ** shift) === Math.floor(ipv4Bits(net) / 2 ** shift);
}
function networkOf(addr: string, len: number): string {
  if (!isIPv4(addr)) return addr;
  const shift = 32 - len;
  const n = Math.floor(ipv4Bits(addr) / 2 ** shift) * 2 ** shift;
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

/** An in-memory {@link NetlinkDriver}; starts with `lo` and `eth0` (MAC 02:42:ac:11:00:02). */
export class MockNetlink implements NetlinkDriver {
  readonly linkTable: DriverLink[] = [];
  readonly addrTable: DriverAddr[] = [];
  readonly routeTable: DriverRoute[] = [];
  readonly neighTable: DriverNeigh[] = [];
  readonly iptablesText = { v4: '', v6: '' };
  /** Names of operations that fail with EIO (tests of the rollback), e.g. "route add". */
  readonly failOn = new Set<string>();
  private nextIndex = 1;

  constructor() {
    this.addLink('lo', '00:00:00:00:00:00', '', IFF_UP, 65536);
    this.addLink('eth0', '02:42:ac:11:00:02', 'veth', 0, 1500);
  }

  /** Add a link (tests). Returns its index. */
  addLink(name: string, hwAddr: string, type = 'veth', flags = 0, mtu = 1500): number {
    const index = this.nextIndex++;
    this.linkTable.push({ index, name, mtu, flags, hwAddr, type, stats: { ...ZERO_STATS } });
    return index;
  }

  private link(index: number): DriverLink {
    const l = this.linkTable.find((x) => x.index === index);
    if (!l) throw errno('ENODEV', `netlink: No such device (index ${index})`);
    return l;
  }

  private fail(op: string): void {
    if (this.failOn.has(op)) throw errno('EIO', `netlink ${op}: injected failure`);
  }

  links(): DriverLink[] {
    return this.linkTable.map((l) => ({ ...l, stats: { ...l.stats } }));
  }
  addrs(): DriverAddr[] {
    return this.addrTable.map((a) => ({ ...a }));
  }
  routes(): DriverRoute[] {
    return this.routeTable.map((r) => ({ ...r }));
  }
  neighbors(): DriverNeigh[] {
    return this.neighTable.map((n) => ({ ...n }));
  }

  linkSet(index: number, change: LinkChange): void {
    this.fail('link set');
    const l = this.link(index);
    if (change.name !== undefined && change.name !== l.name) {
      if (l.flags & IFF_UP) throw errno('EBUSY', 'netlink set link: Device or resource busy');
      if (this.linkTable.some((x) => x.name === change.name)) throw errno('EEXIST', 'netlink set link: Object exists');
    }
    if (change.mtu !== undefined && (change.mtu < 68 || change.mtu > 65535)) throw errno('EINVAL', 'netlink set link: Invalid input data or parameter');
    if (change.name !== undefined) l.name = change.name;
    if (change.mtu !== undefined) l.mtu = change.mtu;
    const flag = (on: boolean | undefined, bit: number): void => {
      if (on === true) l.flags |= bit;
      if (on === false) l.flags &= ~bit;
    };
    flag(change.up, IFF_UP);
    flag(change.noarp, IFF_NOARP);
    flag(change.promisc, IFF_PROMISC);
    flag(change.allmulti, IFF_ALLMULTI);
  }

  addr(action: 'add' | 'del', a: { index: number; address: string; prefixLen: number }): void {
    this.fail(`addr ${action}`);
    this.link(a.index);
    const family = isIPv4(a.address) ? 4 : 6;
    const at = this.addrTable.findIndex((x) => x.index === a.index && x.address === a.address && x.prefixLen === a.prefixLen);
    const net = networkOf(a.address, a.prefixLen);
    if (action === 'add') {
      if (at >= 0) throw errno('EEXIST', 'netlink add address: Object exists');
      this.addrTable.push({ index: a.index, family, address: a.address, prefixLen: a.prefixLen });
      this.routeTable.push({
        family, table: RT_TABLE_MAIN, dst: net, dstLen: a.prefixLen, src: '', srcLen: 0, prefsrc: family === 4 ? a.address : '',
        scope: family === 4 ? RT_SCOPE_LINK : 0, protocol: RTPROT_KERNEL, type: RTN_UNICAST, priority: family === 4 ? 0 : 256, flags: 0, oif: a.index, gateway: '',
      });
    } else {
      if (at < 0) throw errno('EADDRNOTAVAIL', 'netlink delete address: Cannot assign requested address');
      this.addrTable.splice(at, 1);
      const r = this.routeTable.findIndex((x) => x.protocol === RTPROT_KERNEL && x.oif === a.index && x.dst === net && x.dstLen === a.prefixLen);
      if (r >= 0) this.routeTable.splice(r, 1);
    }
  }

  route(action: 'add' | 'del', r: Omit<DriverRoute, 'flags' | 'priority'> & { priority?: number }): void {
    this.fail(`route ${action}`);
    const dst = r.dstLen === 0 ? '' : r.dst;
    const same = (x: DriverRoute): boolean => x.table === r.table && x.family === r.family && (x.dstLen === 0 ? '' : x.dst) === dst && x.dstLen === r.dstLen && x.oif === r.oif && x.gateway === r.gateway;
    const at = this.routeTable.findIndex(same);
    if (action === 'del') {
      if (at < 0) throw errno('ESRCH', 'netlink delete route: Object not found');
      this.routeTable.splice(at, 1);
      return;
    }
    if (r.oif !== 0) this.link(r.oif);
    if (this.routeTable.some((x) => x.table === r.table && x.family === r.family && (x.dstLen === 0 ? '' : x.dst) === dst && x.dstLen === r.dstLen)) {
      throw errno('EEXIST', 'netlink add route: Object exists');
    }
    if (r.gateway !== '') {
      const reach = this.routeTable.some((x) => x.gateway === '' && (r.oif === 0 || x.oif === r.oif) && x.family === r.family && inPrefix(r.gateway, x.dst, x.dstLen));
      if (!reach) throw errno('ENETUNREACH', 'netlink add route: Network is unreachable');
    }
    this.routeTable.push({ ...r, dst, priority: r.priority ?? 0, flags: 0 });
  }

  neigh(action: 'add' | 'del', n: DriverNeigh): void {
    this.fail(`neigh ${action}`);
    this.link(n.index);
    const at = this.neighTable.findIndex((x) => x.index === n.index && x.address === n.address);
    if (action === 'del') {
      if (at < 0) throw errno('ENOENT', 'netlink delete neighbour: Object not found');
      this.neighTable.splice(at, 1);
      return;
    }
    if (at >= 0) this.neighTable.splice(at, 1);
    this.neighTable.push({ ...n });
  }

  async iptables(ipv6: boolean, mode: 'save' | 'restore', stdin: Buffer): Promise<IptablesRun> {
    const key = ipv6 ? 'v6' : 'v4';
    if (mode === 'save') return { code: 0, stdout: Buffer.from(this.iptablesText[key]), stderr: '' };
    const text = stdin.toString('utf8');
    if (/^BAD$/m.test(text)) return { code: 2, stdout: Buffer.alloc(0), stderr: 'iptables-restore: line 1 failed' };
    this.iptablesText[key] = text;
    return { code: 0, stdout: Buffer.alloc(0), stderr: '' };
  }
}
