/**
 * The helper's network ops (shared/protocol.ts NetworkOps): UpdateInterface, UpdateRoutes,
 * ListInterfaces, ListRoutes, AddARPNeighbors, Get/SetIPTables and per-link counters, over a
 * {@link NetlinkDriver} (the real one: helper/ops/netlink.ts, libnl in the native addon; the
 * mock twin: helper/mock/network.ts, an in-memory kernel). Behaviour follows upstream
 * src/agent/src/netlink.rs at 6e4d4c329a, with the departures listed in docs/ARCHITECTURE.md.
 *
 * Every argument is validated again here (control already did). A failed update is rolled back:
 * what was applied is undone in reverse order (best effort, failures logged) and the original
 * error is answered. Ops run one at a time.
 */
import { silentLogger, type Logger } from '../../shared/log';
import {
  IFF_ALLMULTI,
  IFF_NOARP,
  IFF_PROMISC,
  IFF_UP,
  RTN_UNICAST,
  RTPROT_BOOT,
  RTPROT_KERNEL,
  RT_TABLE_MAIN,
  ipFamily,
  isIPv6LinkLocal,
  normalizeMac,
  prefixLength,
  validateIfName,
} from '../../shared/net';
import {
  Code,
  StatusError,
  type NetAddress,
  type NetInterfaceSpec,
  type NetInterfaceState,
  type NetNeighborSpec,
  type NetRouteSpec,
  type NetRouteState,
  type NetworkOps,
  type StatusCode,
} from '../../shared/protocol';
import type { BackendReply, NetworkOpsBackend } from '../api';
import { checkPciPath } from '../../shared/paths';

/** A link as the driver dumps it (native netLinks). */
export interface DriverLink {
  index: number;
  name: string;
  mtu: number;
  flags: number;
  hwAddr: string;
  type: string;
  stats: { rxBytes: number; rxPackets: number; rxErrors: number; rxDropped: number; txBytes: number; txPackets: number; txErrors: number; txDropped: number };
}
/** An address as the driver dumps it. */
export interface DriverAddr {
  index: number;
  family: number;
  address: string;
  prefixLen: number;
}
/** A route as the driver dumps it and takes it. */
export interface DriverRoute {
  family: number;
  table: number;
  dst: string;
  dstLen: number;
  src: string;
  srcLen: number;
  prefsrc: string;
  scope: number;
  protocol: number;
  type: number;
  priority: number;
  flags: number;
  oif: number;
  gateway: string;
}
/** A neighbour as the driver dumps it and takes it. */
export interface DriverNeigh {
  index: number;
  address: string;
  lladdr: string;
  state: number;
  flags: number;
}
/** Changes of a link; absent fields are left alone. */
export interface LinkChange {
  name?: string;
  mtu?: number;
  up?: boolean;
  noarp?: boolean;
  promisc?: boolean;
  allmulti?: boolean;
}
/** What a run of iptables-save/-restore gave. */
export interface IptablesRun {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/**
 * The kernel side, synchronous except iptables. Failures are Errors with `code` (errno name);
 * the backend maps them to status codes.
 */
export interface NetlinkDriver {
  links(): DriverLink[];
  addrs(): DriverAddr[];
  routes(): DriverRoute[];
  neighbors(): DriverNeigh[];
  linkSet(index: number, change: LinkChange): void;
  addr(action: 'add' | 'del', addr: { index: number; address: string; prefixLen: number }): void;
  route(action: 'add' | 'del', route: Omit<DriverRoute, 'flags' | 'priority'> & { priority?: number }): void;
  neigh(action: 'add' | 'del', neigh: DriverNeigh): void;
  /** Run `iptables-save` / `iptables-restore` (ip6tables-* with ipv6) in the namespace; FAILED_PRECONDITION when absent. */
  iptables(ipv6: boolean, mode: 'save' | 'restore', stdin: Buffer): Promise<IptablesRun>;
}

/** Largest number of addresses, routes or neighbours one request may carry. */
export const MAX_NET_ITEMS = 1024;

const ERRNO_CODES: Record<string, StatusCode> = {
  EINVAL: Code.INVALID_ARGUMENT,
  ERANGE: Code.INVALID_ARGUMENT,
  EAFNOSUPPORT: Code.INVALID_ARGUMENT,
  ENETUNREACH: Code.INVALID_ARGUMENT,
  EADDRNOTAVAIL: Code.INVALID_ARGUMENT,
  ENODEV: Code.NOT_FOUND,
  ENOENT: Code.NOT_FOUND,
  ESRCH: Code.NOT_FOUND,
  EEXIST: Code.ALREADY_EXISTS,
  EBUSY: Code.FAILED_PRECONDITION,
  EPERM: Code.PERMISSION_DENIED,
  EACCES: Code.PERMISSION_DENIED,
};

/** A driver failure as a StatusError (`what` says which step, e.g. `add address 10.0.0.2/24`). */
export function netError(err: unknown, what: string): StatusError {
  if (err instanceof StatusError) return err;
  const e = err as { code?: string; message?: string; name?: string };
  const code = e?.name === 'TypeError' ? Code.INVALID_ARGUMENT : ERRNO_CODES[e?.code ?? ''] ?? Code.INTERNAL;
  return new StatusError(code, `${what}: ${e?.message ?? String(err)}`);
}

function isCode(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}

function obj(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new StatusError(Code.INVALID_ARGUMENT, `${what} must be a map`);
  return v as Record<string, unknown>;
}
function list(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v)) throw new StatusError(Code.INVALID_ARGUMENT, `${what} must be a list`);
  if (v.length > MAX_NET_ITEMS) throw new StatusError(Code.INVALID_ARGUMENT, `${what}: ${v.length} entries, at most ${MAX_NET_ITEMS}`);
  return v;
}
function int(v: unknown, min: number, max: number, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new StatusError(Code.INVALID_ARGUMENT, `${what} ${JSON.stringify(v)}: not an integer in ${min}..${max}`);
  }
  return v;
}
function str(v: unknown, what: string): string {
  if (typeof v !== 'string') throw new StatusError(Code.INVALID_ARGUMENT, `${what} must be a string`);
  return v;
}
function bool(v: unknown, what: string): boolean {
  if (typeof v !== 'boolean') throw new StatusError(Code.INVALID_ARGUMENT, `${what} must be a boolean`);
  return v;
}

function checkAddress(v: unknown, what: string): NetAddress {
  const o = obj(v, what);
  const address = str(o.address, `${what}.address`);
  const family = ipFamily(address, `${what}.address`);
  if (o.family !== family) throw new StatusError(Code.INVALID_ARGUMENT, `${what}.family ${JSON.stringify(o.family)} does not match ${address}`);
  return { family, address, prefixLen: prefixLength(o.prefixLen, family, `${what}.prefixLen`) };
}

/** Re-validate an interface spec (INVALID_ARGUMENT naming the field). */
export function checkInterfaceSpec(v: unknown): NetInterfaceSpec {
  const o = obj(v, 'iface');
  const hw = str(o.hwAddr, 'iface.hwAddr');
  return {
    hwAddr: hw === '' ? '' : normalizeMac(hw, 'iface.hwAddr'),
    name: validateIfName(o.name, 'iface.name'),
    mtu: int(o.mtu, 0, 0x7fffffff, 'iface.mtu'),
    addresses: list(o.addresses, 'iface.addresses').map((a, i) => checkAddress(a, `iface.addresses[${i}]`)),
    noarp: bool(o.noarp, 'iface.noarp'),
    promisc: bool(o.promisc, 'iface.promisc'),
    allmulti: bool(o.allmulti, 'iface.allmulti'),
    ...(o.pciPath === undefined || o.pciPath === '' ? {} : { pciPath: checkPciPath(o.pciPath, 'iface.pciPath') }),
  };
}

/** Re-validate a route spec. */
export function checkRouteSpec(v: unknown, what: string): NetRouteSpec {
  const o = obj(v, what);
  const family = int(o.family, 4, 6, `${what}.family`);
  if (family !== 4 && family !== 6) throw new StatusError(Code.INVALID_ARGUMENT, `${what}.family ${family}: 4 or 6`);
  const dst = str(o.dst, `${what}.dst`);
  const dstLen = dst === '' ? int(o.dstLen, 0, 0, `${what}.dstLen`) : prefixLength(o.dstLen, family, `${what}.dstLen`);
  const same = (addr: string, field: string): void => {
    if (addr !== '' && ipFamily(addr, `${what}.${field}`) !== family) {
      throw new StatusError(Code.INVALID_ARGUMENT, `${what}.${field} ${JSON.stringify(addr)} is not an IPv${family} address`);
    }
  };
  same(dst, 'dst');
  const gateway = str(o.gateway, `${what}.gateway`);
  same(gateway, 'gateway');
  const src = str(o.src, `${what}.src`);
  same(src, 'src');
  const prefsrc = str(o.prefsrc, `${what}.prefsrc`);
  same(prefsrc, 'prefsrc');
  const device = str(o.device, `${what}.device`);
  if (device !== '') validateIfName(device, `${what}.device`);
  else if (gateway === '') throw new StatusError(Code.INVALID_ARGUMENT, `${what}: a route needs a device or a gateway`);
  return {
    family,
    dst,
    dstLen,
    gateway,
    device,
    src,
    srcLen: src === '' ? 0 : prefixLength(o.srcLen, family, `${what}.srcLen`),
    prefsrc,
    scope: int(o.scope, 0, 255, `${what}.scope`),
  };
}

/** Re-validate a neighbour spec. */
export function checkNeighborSpec(v: unknown, what: string): NetNeighborSpec {
  const o = obj(v, what);
  const address = str(o.address, `${what}.address`);
  ipFamily(address, `${what}.address`);
  const lladdr = str(o.lladdr, `${what}.lladdr`);
  return {
    device: validateIfName(o.device, `${what}.device`),
    address,
    lladdr: lladdr === '' ? '' : normalizeMac(lladdr, `${what}.lladdr`),
    state: int(o.state, 0, 0xffff, `${what}.state`),
    flags: int(o.flags, 0, 0xff, `${what}.flags`),
  };
}

/** Undo steps, run in reverse on failure. */
class Rollback {
  private readonly steps: { what: string; undo: () => void }[] = [];
  constructor(private readonly log: Logger) {}
  push(what: string, undo: () => void): void {
    this.steps.push({ what, undo });
  }
  run(): void {
    for (const step of this.steps.reverse()) {
      try {
        step.undo();
      } catch (err) {
        this.log.warn({ err, step: step.what }, 'network rollback step failed');
      }
    }
  }
}

/** The network half of a helper backend over a {@link NetlinkDriver}. */
export class NetworkBackend implements NetworkOpsBackend {
  private readonly log: Logger;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly waitNic: ((pciPath: string) => Promise<string>) | undefined;

  /**
   * `opts.waitNic`: wait for the network interface behind a PCI path and resolve with its name
   * (DeviceWaiter.netPci: uevents, the hotplug timeout); without it an UpdateInterface pciPath
   * is not waited for.
   */
  constructor(
    private readonly driver: NetlinkDriver,
    opts: { logger?: Logger; waitNic?: (pciPath: string) => Promise<string> } = {},
  ) {
    this.log = (opts.logger ?? silentLogger()).child({ component: 'network' });
    this.waitNic = opts.waitNic;
  }

  /** Run `fn` after every op queued before it. */
  private serial<T>(fn: () => Promise<T> | T): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private dump<T>(fn: () => T, what: string): T {
    try {
      return fn();
    } catch (err) {
      throw netError(err, what);
    }
  }

  /** Every link with its addresses. */
  private interfaces(): NetInterfaceState[] {
    const links = this.dump(() => this.driver.links(), 'dump links');
    const addrs = this.dump(() => this.driver.addrs(), 'dump addresses');
    return links.map((l) => ({
      index: l.index,
      name: l.name,
      hwAddr: l.hwAddr,
      mtu: l.mtu,
      type: l.type,
      flags: l.flags,
      addresses: addrs
        .filter((a) => a.index === l.index && (a.family === 4 || a.family === 6))
        .map((a) => ({ family: a.family as 4 | 6, address: a.address, prefixLen: a.prefixLen })),
    }));
  }

  /** Main-table IPv4/IPv6 routes, device names resolved. */
  private mainRoutes(): NetRouteState[] {
    const names = new Map(this.dump(() => this.driver.links(), 'dump links').map((l) => [l.index, l.name]));
    return this.dump(() => this.driver.routes(), 'dump routes')
      .filter((r) => r.table === RT_TABLE_MAIN && (r.family === 4 || r.family === 6))
      .map((r) => ({
        family: r.family as 4 | 6,
        dst: r.dstLen === 0 ? '' : r.dst,
        dstLen: r.dstLen,
        gateway: r.gateway,
        device: names.get(r.oif) ?? '',
        src: r.src,
        srcLen: r.srcLen,
        prefsrc: r.prefsrc,
        scope: r.scope,
        protocol: r.protocol,
        type: r.type,
        priority: r.priority,
        flags: r.flags,
      }));
  }

  async listInterfaces(): Promise<BackendReply<NetworkOps['listInterfaces'][1]>> {
    return this.serial(() => ({ result: { interfaces: this.interfaces() } }));
  }

  async listRoutes(): Promise<BackendReply<NetworkOps['listRoutes'][1]>> {
    return this.serial(() => ({ result: { routes: this.mainRoutes() } }));
  }

  async interfaceStats(): Promise<BackendReply<NetworkOps['interfaceStats'][1]>> {
    return this.serial(() => ({
      result: { interfaces: this.dump(() => this.driver.links(), 'dump links').map((l) => ({ name: l.name, ...l.stats })) },
    }));
  }

  /**
   * UpdateInterface (upstream netlink.rs update_interface): find the link by MAC (by name when
   * `hwAddr` is ""), take it down, make its addresses exactly the requested ones (IPv6
   * link-local ones stay), rename it (a link already holding the name gets the old name, as
   * upstream swaps them), set MTU and flags, bring it up. NOT_FOUND for an unknown MAC or name.
   * With `pciPath`, first wait for a NIC behind it (`waitNic`: DEADLINE_EXCEEDED after the
   * hotplug timeout, INVALID_ARGUMENT / NOT_FOUND for a bad path or missing bridge).
   */
  async updateInterface(args: NetworkOps['updateInterface'][0]): Promise<BackendReply<NetworkOps['updateInterface'][1]>> {
    const spec = checkInterfaceSpec(obj(args, 'args').iface);
    // A hot-plugged NIC may come after the request (upstream HEAD wait_for_pci_net_interface):
    // wait for it outside the queue, so other network ops are not held up meanwhile.
    if (spec.pciPath !== undefined && this.waitNic) {
      const name = await this.waitNic(spec.pciPath);
      this.log.debug({ pciPath: spec.pciPath, name }, 'network interface present');
    }
    return this.serial(() => {
      const before = this.interfaces();
      const link = spec.hwAddr !== '' ? before.find((l) => l.hwAddr === spec.hwAddr) : before.find((l) => l.name === spec.name);
      if (!link) {
        throw new StatusError(
          Code.NOT_FOUND,
          spec.hwAddr !== '' ? `no interface with MAC address ${spec.hwAddr}` : `no interface named ${JSON.stringify(spec.name)}`,
        );
      }
      const rb = new Rollback(this.log);
      try {
        this.applyInterface(spec, link, before, rb);
      } catch (err) {
        rb.run();
        throw err;
      }
      const now = this.interfaces().find((l) => l.index === link.index);
      if (!now) throw new StatusError(Code.INTERNAL, `interface ${spec.name} vanished during the update`);
      return { result: { iface: now } };
    });
  }

  private step(fn: () => void, what: string): void {
    try {
      fn();
    } catch (err) {
      throw netError(err, what);
    }
  }

  private applyInterface(spec: NetInterfaceSpec, link: NetInterfaceState, all: NetInterfaceState[], rb: Rollback): void {
    const d = this.driver;
    const i = link.index;
    const wasUp = (link.flags & IFF_UP) !== 0;
    if (wasUp) {
      this.step(() => d.linkSet(i, { up: false }), `set ${link.name} down`);
      rb.push(`set ${link.name} up`, () => d.linkSet(i, { up: true }));
    }
    const key = (a: NetAddress): string => `${a.address}/${a.prefixLen}`;
    // Taking a link down flushes its IPv6 addresses (keep_addr_on_down=0), so what to delete is
    // read after that; a rollback restores the address set from before the update.
    const current = (): NetAddress[] =>
      this.dump(() => d.addrs(), 'dump addresses')
        .filter((a) => a.index === i && (a.family === 4 || a.family === 6))
        .map((a) => ({ family: a.family as 4 | 6, address: a.address, prefixLen: a.prefixLen }));
    rb.push(`restore the addresses of ${link.name}`, () => {
      const original = new Set(link.addresses.map(key));
      const now = current();
      for (const a of now) if (!original.has(key(a))) d.addr('del', { index: i, address: a.address, prefixLen: a.prefixLen });
      const present = new Set(now.map(key));
      for (const a of link.addresses) if (!present.has(key(a))) d.addr('add', { index: i, address: a.address, prefixLen: a.prefixLen });
    });
    const wanted = new Set(spec.addresses.map(key));
    const have = current();
    const haveKeys = new Set(have.map(key));
    for (const a of have) {
      if (wanted.has(key(a)) || (a.family === 6 && isIPv6LinkLocal(a.address))) continue;
      this.step(() => d.addr('del', { index: i, address: a.address, prefixLen: a.prefixLen }), `delete address ${key(a)}`);
    }
    for (const a of spec.addresses) {
      if (haveKeys.has(key(a))) continue;
      this.step(() => d.addr('add', { index: i, address: a.address, prefixLen: a.prefixLen }), `add address ${key(a)} to ${link.name}`);
      haveKeys.add(key(a));
    }
    if (spec.name !== link.name) {
      const holder = all.find((l) => l.name === spec.name && l.index !== i);
      if (holder) {
        // The kernel renames only links that are down; the holder gets our old name.
        const temp = `kt${holder.index}tmp`.slice(0, 15);
        const holderUp = (holder.flags & IFF_UP) !== 0;
        if (holderUp) {
          this.step(() => d.linkSet(holder.index, { up: false }), `set ${holder.name} down`);
          rb.push(`set ${holder.name} up`, () => d.linkSet(holder.index, { up: true }));
        }
        this.step(() => d.linkSet(holder.index, { name: temp }), `rename ${holder.name} to ${temp}`);
        rb.push(`rename ${temp} back`, () => d.linkSet(holder.index, { name: holder.name }));
        this.renameAndSet(spec, link, rb);
        this.step(() => d.linkSet(holder.index, { name: link.name }), `rename ${holder.name} to ${link.name}`);
        if (holderUp) this.step(() => d.linkSet(holder.index, { up: true }), `set ${link.name} up`);
        return;
      }
    }
    this.renameAndSet(spec, link, rb);
  }

  private renameAndSet(spec: NetInterfaceSpec, link: NetInterfaceState, rb: Rollback): void {
    const d = this.driver;
    const i = link.index;
    const change: Record<string, unknown> = {};
    const undo: Record<string, unknown> = {};
    if (spec.name !== link.name) {
      change.name = spec.name;
      undo.name = link.name;
    }
    if (spec.mtu !== 0 && spec.mtu !== link.mtu) {
      change.mtu = spec.mtu;
      undo.mtu = link.mtu;
    }
    const noarp = (link.flags & IFF_NOARP) !== 0;
    if (spec.noarp !== noarp) {
      change.noarp = spec.noarp;
      undo.noarp = noarp;
    }
    if (spec.promisc && (link.flags & IFF_PROMISC) === 0) {
      change.promisc = true;
      undo.promisc = false;
    }
    if (spec.allmulti && (link.flags & IFF_ALLMULTI) === 0) {
      change.allmulti = true;
      undo.allmulti = false;
    }
    if (Object.keys(change).length > 0) {
      this.step(() => d.linkSet(i, change as LinkChange), `set ${link.name} ${JSON.stringify(change)}`);
      rb.push(`restore ${link.name}`, () => d.linkSet(i, undo as LinkChange));
    }
    this.step(() => d.linkSet(i, { up: true }), `set ${spec.name} up`);
    rb.push(`set ${spec.name} down`, () => d.linkSet(i, { up: false }));
  }

  /**
   * UpdateRoutes (upstream update_routes): delete the main table's routes except kernel ones,
   * those without a device and those on `lo`; add the requested ones, link routes before
   * gateway routes (table main, protocol boot, unicast, the requested scope; EEXIST ignored as
   * upstream); answer the table. A device that does not exist is NOT_FOUND before anything
   * changes; a failure restores the previous table.
   */
  async updateRoutes(args: NetworkOps['updateRoutes'][0]): Promise<BackendReply<NetworkOps['updateRoutes'][1]>> {
    const specs = list(obj(args, 'args').routes, 'routes').map((r, i) => checkRouteSpec(r, `routes[${i}]`));
    return this.serial(() => {
      const links = this.dump(() => this.driver.links(), 'dump links');
      const index = new Map(links.map((l) => [l.name, l.index]));
      const names = new Map(links.map((l) => [l.index, l.name]));
      specs.forEach((r, i) => {
        if (r.device !== '' && !index.has(r.device)) {
          throw new StatusError(Code.NOT_FOUND, `routes[${i}].device: no interface named ${JSON.stringify(r.device)}`);
        }
      });
      const old = this.dump(() => this.driver.routes(), 'dump routes').filter(
        (r) =>
          r.table === RT_TABLE_MAIN &&
          (r.family === 4 || r.family === 6) &&
          r.protocol !== RTPROT_KERNEL &&
          r.oif !== 0 &&
          names.get(r.oif) !== 'lo',
      );
      const rb = new Rollback(this.log);
      try {
        for (const r of old) {
          this.step(() => this.driver.route('del', r), `delete route ${describe(r.dst, r.dstLen, r.gateway)}`);
          rb.push('re-add a deleted route', () => this.driver.route('add', r));
        }
        const ordered = [...specs.filter((r) => r.gateway === ''), ...specs.filter((r) => r.gateway !== '')];
        for (const r of ordered) {
          const route = {
            family: r.family,
            table: RT_TABLE_MAIN,
            dst: r.dst,
            dstLen: r.dstLen,
            src: r.src,
            srcLen: r.srcLen,
            prefsrc: r.prefsrc,
            scope: r.scope,
            protocol: RTPROT_BOOT,
            type: RTN_UNICAST,
            oif: r.device === '' ? 0 : (index.get(r.device) ?? 0),
            gateway: r.gateway,
          };
          try {
            this.driver.route('add', route);
          } catch (err) {
            if (isCode(err, 'EEXIST')) continue;
            const e = netError(err, `add route ${describe(r.dst, r.dstLen, r.gateway)} dev ${r.device || '-'}`);
            // The devices exist (checked above), so a route the kernel refuses is the request's
            // fault (libnl reports e.g. ENETUNREACH, an unreachable gateway, as "Unspecific failure").
            throw e.code === Code.INTERNAL ? new StatusError(Code.INVALID_ARGUMENT, `${e.message}: the kernel refused the route`) : e;
          }
          rb.push('delete an added route', () => this.driver.route('del', route));
        }
      } catch (err) {
        rb.run();
        throw err;
      }
      return { result: { routes: this.mainRoutes() } };
    });
  }

  /**
   * AddARPNeighbors (upstream add_arp_neighbor): RTM_NEWNEIGH with NLM_F_CREATE|NLM_F_REPLACE,
   * state and flags as given (control maps state 0 to NUD_PERMANENT). Devices are checked
   * before anything is added (NOT_FOUND); on a failure the entries added so far are removed
   * and replaced ones restored.
   */
  async addArpNeighbors(args: NetworkOps['addArpNeighbors'][0]): Promise<BackendReply<NetworkOps['addArpNeighbors'][1]>> {
    const specs = list(obj(args, 'args').neighbors, 'neighbors').map((n, i) => checkNeighborSpec(n, `neighbors[${i}]`));
    return this.serial(() => {
      const index = new Map(this.dump(() => this.driver.links(), 'dump links').map((l) => [l.name, l.index]));
      specs.forEach((n, i) => {
        if (!index.has(n.device)) throw new StatusError(Code.NOT_FOUND, `neighbors[${i}].device: no interface named ${JSON.stringify(n.device)}`);
      });
      const existing = this.dump(() => this.driver.neighbors(), 'dump neighbours');
      const rb = new Rollback(this.log);
      try {
        for (const n of specs) {
          const entry: DriverNeigh = { index: index.get(n.device) ?? 0, address: n.address, lladdr: n.lladdr, state: n.state, flags: n.flags };
          const prev = existing.find((e) => e.index === entry.index && e.address === entry.address);
          this.step(() => this.driver.neigh('add', entry), `add neighbour ${n.address} dev ${n.device}`);
          rb.push(`undo neighbour ${n.address}`, () => (prev ? this.driver.neigh('add', prev) : this.driver.neigh('del', entry)));
        }
      } catch (err) {
        rb.run();
        throw err;
      }
      return { result: {} };
    });
  }

  /** GetIPTables: iptables-save's output; its failure is INTERNAL with its stderr. */
  async getIpTables(args: NetworkOps['getIpTables'][0]): Promise<BackendReply<NetworkOps['getIpTables'][1]>> {
    const ipv6 = bool(obj(args, 'args').ipv6, 'ipv6');
    return this.serial(async () => {
      const run = await this.driver.iptables(ipv6, 'save', Buffer.alloc(0));
      const cmd = ipv6 ? 'ip6tables-save' : 'iptables-save';
      if (run.code !== 0) throw new StatusError(Code.INTERNAL, `${cmd} failed (exit ${run.code}): ${run.stderr.trim()}`);
      return { result: { data: run.stdout } };
    });
  }

  /** SetIPTables: iptables-restore with `data` on stdin; refused rules are INVALID_ARGUMENT with its stderr. */
  async setIpTables(args: NetworkOps['setIpTables'][0]): Promise<BackendReply<NetworkOps['setIpTables'][1]>> {
    const o = obj(args, 'args');
    const ipv6 = bool(o.ipv6, 'ipv6');
    if (!(o.data instanceof Uint8Array)) throw new StatusError(Code.INVALID_ARGUMENT, 'data must be bytes');
    const data = Buffer.from(o.data.buffer, o.data.byteOffset, o.data.byteLength);
    return this.serial(async () => {
      const run = await this.driver.iptables(ipv6, 'restore', data);
      const cmd = ipv6 ? 'ip6tables-restore' : 'iptables-restore';
      if (run.code !== 0) throw new StatusError(Code.INVALID_ARGUMENT, `${cmd} failed (exit ${run.code}): ${run.stderr.trim()}`);
      return { result: { data: run.stdout } };
    });
  }
}

function describe(dst: string, dstLen: number, gateway: string): string {
  const d = dst === '' || dstLen === 0 ? 'default' : `${dst}/${dstLen}`;
  return gateway === '' ? d : `${d} via ${gateway}`;
}
