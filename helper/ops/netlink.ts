/**
 * The real {@link NetlinkDriver}: rtnetlink through libnl-route-3 in the native addon
 * (helper/native/netlink.cc), and iptables-save / iptables-restore run as child processes, all
 * in the network namespace at `netns` ("" = the helper's own).
 *
 * iptables: the binary is looked up in /usr/sbin, /sbin, /usr/bin, /bin (upstream hard-codes
 * two paths, one of them misspelt); absent → FAILED_PRECONDITION naming it. The child is started
 * while the event loop's thread is switched into `netns` (netnsEnter / spawn / netnsLeave, all
 * synchronous, so no other JavaScript runs in between); it inherits the namespace.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadNative } from '../../shared/native';
import { Code, StatusError } from '../../shared/protocol';
import type { ChildReaper } from './reaper';
import { runProgram } from './run';
import type { DriverAddr, DriverLink, DriverNeigh, DriverRoute, IptablesRun, LinkChange, NetlinkDriver } from './network';

/** The addon's netlink functions (helper/native/netlink.cc). */
interface NetlinkNative {
  netLinks(netns: string): DriverLink[];
  netAddrs(netns: string): DriverAddr[];
  netRoutes(netns: string): DriverRoute[];
  netNeighbors(netns: string): DriverNeigh[];
  netLinkSet(netns: string, index: number, change: LinkChange): void;
  netAddr(netns: string, action: 'add' | 'del', addr: { index: number; address: string; prefixLen: number }): void;
  netRoute(netns: string, action: 'add' | 'del', route: object): void;
  netNeigh(netns: string, action: 'add' | 'del', neigh: DriverNeigh): void;
  /** setns(CLONE_NEWNET) of the calling thread; returns an fd of its previous namespace. */
  netnsEnter(path: string): number;
  /** Back to the namespace of `fd` (closed); aborts the process if that fails. */
  netnsLeave(fd: number): void;
}

/** Directories searched for the iptables binaries. */
export const IPTABLES_DIRS = ['/usr/sbin', '/sbin', '/usr/bin', '/bin'];
/** iptables-restore's wait for the xtables lock, in seconds (as upstream). */
const RESTORE_WAIT_S = 5;
/** A run of iptables is killed after this long, in ms. */
const IPTABLES_TIMEOUT_MS = 30_000;
/** Output kept from one run, in bytes. */
const MAX_OUTPUT = 16 * 1024 * 1024;

/** The first executable `name` in {@link IPTABLES_DIRS}, or undefined. */
export function findIptables(name: string, dirs: readonly string[] = IPTABLES_DIRS): string | undefined {
  for (const dir of dirs) {
    const p = path.join(dir, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch {
      // next
    }
  }
  return undefined;
}

/**
 * The libnl-backed driver for the namespace at `netns` ("" = the helper's own); iptables runs
 * are reaped by `reaper` (the helper's).
 */
export function createNetlinkDriver(netns: string, reaper: ChildReaper): NetlinkDriver {
  const n = loadNative() as unknown as NetlinkNative;
  return {
    links: () => n.netLinks(netns),
    addrs: () => n.netAddrs(netns),
    routes: () => n.netRoutes(netns),
    neighbors: () => n.netNeighbors(netns),
    linkSet: (index, change) => n.netLinkSet(netns, index, change),
    addr: (action, addr) => n.netAddr(netns, action, addr),
    route: (action, route) => n.netRoute(netns, action, route),
    neigh: (action, neigh) => n.netNeigh(netns, action, neigh),
    iptables: (ipv6, mode, stdin) => runIptables(n, reaper, netns, ipv6, mode, stdin),
  };
}

async function runIptables(
  n: NetlinkNative,
  reaper: ChildReaper,
  netns: string,
  ipv6: boolean,
  mode: 'save' | 'restore',
  stdin: Buffer,
): Promise<IptablesRun> {
  const name = `${ipv6 ? 'ip6tables' : 'iptables'}-${mode}`;
  const file = findIptables(name);
  if (!file) {
    throw new StatusError(Code.FAILED_PRECONDITION, `${name} not found in ${IPTABLES_DIRS.join(':')} (the guest image needs the iptables package)`);
  }
  const args = mode === 'restore' ? ['--wait', String(RESTORE_WAIT_S)] : [];
  // The child is forked while this thread is in `netns`, so it runs there.
  const saved = netns === '' ? -1 : n.netnsEnter(netns);
  let run;
  try {
    run = runProgram(
      { native: loadNative(), reaper },
      { file, argv: [name, ...args], envp: [`PATH=${IPTABLES_DIRS.join(':')}`], stdin, timeoutMs: IPTABLES_TIMEOUT_MS, maxOutput: MAX_OUTPUT },
    );
  } finally {
    if (saved >= 0) n.netnsLeave(saved);
  }
  let r;
  try {
    r = await run;
  } catch (e) {
    throw new StatusError(Code.INTERNAL, `${name}: ${(e as Error).message}`);
  }
  if (r.stdoutSize > MAX_OUTPUT) throw new StatusError(Code.RESOURCE_EXHAUSTED, `${name} wrote ${r.stdoutSize} bytes, more than ${MAX_OUTPUT}`);
  const killed = r.timedOut ? ` (killed after ${IPTABLES_TIMEOUT_MS} ms)` : r.signal !== null ? ` (killed by signal ${r.signal})` : '';
  return { code: r.exitCode ?? 128 + (r.signal ?? 0), stdout: r.stdout, stderr: r.stderr + killed };
}
