/**
 * Network rpcs: UpdateInterface, UpdateRoutes, ListInterfaces, ListRoutes, AddARPNeighbors,
 * GetIPTables, SetIPTables (Kata agent rpc.rs and netlink.rs at 6e4d4c329a), and the
 * per-interface counters StatsContainer's NetworkStats needs ({@link interfaceStats}).
 *
 * Control validates every field (INVALID_ARGUMENT naming the field and value) and turns the
 * grpc types.* messages into the helper's plain specs (shared/protocol.ts NetworkOps); the
 * helper validates again, carries them out in the guest's network namespace and rolls a
 * failed update back. Unknown MAC, device or name: NOT_FOUND from the helper.
 *
 * Wire facts (types.proto): IPAddress.mask is the prefix length as decimal text, IPFamily v4 = 0
 * and v6 = 1, Route.dest is "ip/len" ("" = default route), Route.source a plain address
 * (the preferred source, as the Go runtime sends `route.Src.String()`) or "ip/len" (an IPv6
 * source prefix), ARPNeighbor.state 0 means NUD_PERMANENT.
 */
import type { google as gpb, grpc as pb, types } from '../../shared/generated/protos';
import { IFF_ALLMULTI, IFF_NOARP, IFF_PROMISC, NUD_PERMANENT, ipFamily, normalizeMac, parseCidr, prefixLength, validateIfName } from '../../shared/net';
import {
  Code,
  HELPER_MAX_PACKET,
  StatusError,
  type NetAddress,
  type NetInterfaceSpec,
  type NetInterfaceState,
  type NetInterfaceStats,
  type NetNeighborSpec,
  type NetRouteSpec,
  type NetRouteState,
} from '../../shared/protocol';
import { invalidArgument as invalid } from '../../shared/protocol';
import { checkPciPath } from '../../shared/paths';
import type { AgentCore } from './core';

type Empty = gpb.protobuf.Empty.$Properties;

/** IPFamily enum (types.proto). */
const V4 = 0;
const V6 = 1;
/** Room kept for the msgpack envelope of SetIPTables' helper request, in bytes. */
const ENVELOPE = 1024;
/** Most addresses, routes or neighbours in one request (the helper's bound too). */
export const MAX_NET_ITEMS = 1024;

function familyOf(f: 4 | 6): types.IPFamily {
  return (f === 6 ? V6 : V4) as types.IPFamily;
}

function bounded<T>(items: T[] | null | undefined, what: string): T[] {
  const list = items ?? [];
  if (list.length > MAX_NET_ITEMS) throw invalid(`${what}: ${list.length} entries, at most ${MAX_NET_ITEMS}`);
  return list;
}

/** types.IPAddress → helper address (family checked against the address, mask = prefix length). */
function addressFromProto(a: types.IPAddress.$Properties, what: string): NetAddress {
  const family = ipFamily(a.address ?? '', `${what}.address`);
  const declared = Number(a.family ?? V4);
  if (declared !== (family === 6 ? V6 : V4)) {
    throw invalid(`${what}.family ${declared === V6 ? 'v6' : declared === V4 ? 'v4' : declared} does not match address ${JSON.stringify(a.address)}`);
  }
  if ((a.mask ?? '') === '') throw invalid(`${what}.mask is empty (the prefix length of ${a.address})`);
  return { family, address: a.address ?? '', prefixLen: prefixLength(a.mask, family, `${what}.mask`) };
}

function addressToProto(a: NetAddress): types.IPAddress.$Properties {
  return { family: familyOf(a.family), address: a.address, mask: String(a.prefixLen) };
}

/** Validate a types.Interface into the helper's spec. Throws INVALID_ARGUMENT naming the field. */
export function interfaceSpecFromProto(i: types.Interface.$Properties): NetInterfaceSpec {
  const hw = i.hwAddr ?? '';
  const flags = Number(i.raw_flags ?? 0);
  const mtu = Number(i.mtu ?? 0);
  if (!Number.isSafeInteger(mtu) || mtu < 0 || mtu > 0x7fffffff) throw invalid(`Interface.mtu ${String(i.mtu)}: out of range`);
  return {
    hwAddr: hw === '' ? '' : normalizeMac(hw, 'Interface.hwAddr'),
    name: validateIfName(i.name ?? '', 'Interface.name'),
    mtu,
    addresses: bounded(i.IPAddresses, 'Interface.IPAddresses').map((a, n) => addressFromProto(a, `Interface.IPAddresses[${n}]`)),
    noarp: (flags & IFF_NOARP) !== 0,
    promisc: (flags & IFF_PROMISC) !== 0,
    allmulti: (flags & IFF_ALLMULTI) !== 0,
    ...((i.pciPath ?? '') === '' ? {} : { pciPath: checkPciPath(i.pciPath, 'Interface.pciPath') }),
  };
}

/** A link as the runtime reads it (ListInterfaces; UpdateInterface keeps the request's device and pciPath). */
export function interfaceToProto(s: NetInterfaceState, req?: types.Interface.$Properties): types.Interface.$Properties {
  return {
    device: req?.device ?? '',
    name: s.name,
    IPAddresses: s.addresses.map(addressToProto),
    mtu: s.mtu,
    hwAddr: s.hwAddr,
    pciPath: req?.pciPath ?? '',
    type: s.type,
    raw_flags: s.flags,
  };
}

/** Validate a types.Route into the helper's spec. Throws INVALID_ARGUMENT naming the field. */
export function routeSpecFromProto(r: types.Route.$Properties, what: string): NetRouteSpec {
  const dest = r.dest ?? '';
  const gateway = r.gateway ?? '';
  const source = r.source ?? '';
  const d = dest === '' ? undefined : parseCidr(dest, `${what}.dest`);
  const s = source === '' ? undefined : parseCidr(source, `${what}.source`);
  const gwFamily = gateway === '' ? undefined : ipFamily(gateway, `${what}.gateway`);
  const family = d?.family ?? gwFamily ?? s?.family ?? (Number(r.family ?? V4) === V6 ? 6 : 4);
  for (const [field, f] of [['dest', d?.family], ['gateway', gwFamily], ['source', s?.family]] as const) {
    if (f !== undefined && f !== family) throw invalid(`${what}.${field} ${JSON.stringify(r[field])} is not an IPv${family} address like the route's others`);
  }
  const scope = Number(r.scope ?? 0);
  if (!Number.isInteger(scope) || scope < 0 || scope > 255) throw invalid(`${what}.scope ${scope}: not 0..255`);
  const device = r.device ?? '';
  if (device !== '') validateIfName(device, `${what}.device`);
  else if (gateway === '') throw invalid(`${what}: a route needs a device or a gateway (dest ${JSON.stringify(dest)})`);
  // A plain address, a full-length prefix or /0 is the preferred source; a shorter prefix is
  // an IPv6 source prefix (IPv4 has no source routing in the main table).
  const max = family === 4 ? 32 : 128;
  const preferred = s !== undefined && (!s.hadPrefix || s.prefixLen === max || s.prefixLen === 0);
  if (s && !preferred && family === 4) throw invalid(`${what}.source ${JSON.stringify(source)}: an IPv4 route takes a source address, not a prefix`);
  return {
    family,
    dst: d ? d.address : '',
    dstLen: d ? d.prefixLen : 0,
    gateway,
    device,
    src: s && !preferred ? s.address : '',
    srcLen: s && !preferred ? s.prefixLen : 0,
    prefsrc: s && preferred ? s.address : '',
    scope,
  };
}

/** A main-table route as the runtime reads it (dest "" = default route; family set, unlike upstream). */
export function routeToProto(r: NetRouteState): types.Route.$Properties {
  return {
    dest: r.dstLen === 0 ? '' : `${r.dst}/${r.dstLen}`,
    gateway: r.gateway,
    device: r.device,
    source: r.prefsrc !== '' ? r.prefsrc : r.src !== '' ? `${r.src}/${r.srcLen}` : '',
    scope: r.scope,
    family: familyOf(r.family),
  };
}

/** Validate a types.ARPNeighbor into the helper's spec (state 0 → NUD_PERMANENT, as upstream). */
export function neighborSpecFromProto(n: types.ARPNeighbor.$Properties, what: string): NetNeighborSpec {
  const address = n.toIPAddress?.address ?? '';
  if (address === '') throw invalid(`${what}.toIPAddress is empty: unable to determine the neighbour's IP address`);
  ipFamily(address, `${what}.toIPAddress.address`);
  const state = Number(n.state ?? 0);
  const flags = Number(n.flags ?? 0);
  if (!Number.isInteger(state) || state < 0 || state > 0xffff) throw invalid(`${what}.state ${state}: not a NUD_* state`);
  if (!Number.isInteger(flags) || flags < 0 || flags > 0xff) throw invalid(`${what}.flags ${flags}: not 0..255`);
  const lladdr = n.lladdr ?? '';
  return {
    device: validateIfName(n.device ?? '', `${what}.device`),
    address,
    lladdr: lladdr === '' ? '' : normalizeMac(lladdr, `${what}.lladdr`),
    state: state === 0 ? NUD_PERMANENT : state,
    flags,
  };
}

/** UpdateInterface: apply the interface, answer it as the kernel now has it. */
export async function updateInterface(core: AgentCore, req: pb.UpdateInterfaceRequest): Promise<types.Interface.$Properties> {
  if (!req.interface) throw invalid('empty update interface request');
  const spec = interfaceSpecFromProto(req.interface);
  const { iface } = await core.callNoFds('updateInterface', { iface: spec });
  return interfaceToProto(iface, req.interface);
}

/** UpdateRoutes: replace the main table's routes, answer the table (as ListRoutes). */
export async function updateRoutes(core: AgentCore, req: pb.UpdateRoutesRequest): Promise<pb.Routes.$Properties> {
  if (!req.routes) throw invalid('empty update routes request');
  const routes = bounded(req.routes.Routes, 'Routes').map((r, i) => routeSpecFromProto(r, `Routes[${i}]`));
  const result = await core.callNoFds('updateRoutes', { routes });
  return { Routes: result.routes.map(routeToProto) };
}

/** ListInterfaces: every link with its addresses. */
export async function listInterfaces(core: AgentCore, _req: pb.ListInterfacesRequest): Promise<pb.Interfaces.$Properties> {
  const { interfaces } = await core.callNoFds('listInterfaces', {});
  return { Interfaces: interfaces.map((i) => interfaceToProto(i)) };
}

/** ListRoutes: the main table, IPv4 and IPv6. */
export async function listRoutes(core: AgentCore, _req: pb.ListRoutesRequest): Promise<pb.Routes.$Properties> {
  const { routes } = await core.callNoFds('listRoutes', {});
  return { Routes: routes.map(routeToProto) };
}

/** AddARPNeighbors: permanent (or the given state) neighbour entries, flags as sent. */
export async function addArpNeighbors(core: AgentCore, req: pb.AddARPNeighborsRequest): Promise<Empty> {
  if (!req.neighbors) throw invalid('empty add arp neighbours request');
  const neighbors = bounded(req.neighbors.ARPNeighbors, 'ARPNeighbors').map((n, i) => neighborSpecFromProto(n, `ARPNeighbors[${i}]`));
  await core.callNoFds('addArpNeighbors', { neighbors });
  return {};
}

/** GetIPTables: iptables-save (ip6tables-save) output of the guest. */
export async function getIpTables(core: AgentCore, req: pb.GetIPTablesRequest): Promise<pb.GetIPTablesResponse.$Properties> {
  const { data } = await core.callNoFds('getIpTables', { ipv6: req.is_ipv6 === true });
  return { data };
}

/** SetIPTables: iptables-restore (ip6tables-restore) of `data`; answers its output. */
export async function setIpTables(core: AgentCore, req: pb.SetIPTablesRequest): Promise<pb.SetIPTablesResponse.$Properties> {
  const data = req.data ?? new Uint8Array(0);
  if (data.length > HELPER_MAX_PACKET - ENVELOPE) {
    throw new StatusError(Code.RESOURCE_EXHAUSTED, `SetIPTables data of ${data.length} bytes is larger than ${HELPER_MAX_PACKET - ENVELOPE}`);
  }
  const result = await core.callNoFds('setIpTables', { ipv6: req.is_ipv6 === true, data });
  return { data: result.data };
}

/** Per-link counters of the guest (for StatsContainer's NetworkStats). */
export async function interfaceStats(core: AgentCore): Promise<NetInterfaceStats[]> {
  const { interfaces } = await core.callNoFds('interfaceStats', {});
  return interfaces;
}
