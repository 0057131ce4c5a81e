/**
 * Network value rules shared by control (control/rpc/network.ts) and the helper
 * (helper/ops/network.ts), which each apply them on their own side: IP addresses, prefixes,
 * MACs, interface names, and the rtnetlink constants both use (linux/rtnetlink.h, linux/if.h).
 */
import { isIPv4, isIPv6 } from 'node:net';
import { Code, StatusError } from './protocol';

/** IFNAMSIZ (linux/if.h): a name has at most 15 bytes. */
export const IFNAMSIZ = 16;
export const RT_TABLE_MAIN = 254;
export const RTPROT_KERNEL = 2;
export const RTPROT_BOOT = 3;
export const RTN_UNICAST = 1;
export const RT_SCOPE_UNIVERSE = 0;
export const RT_SCOPE_LINK = 253;
export const IFF_UP = 0x1;
export const IFF_NOARP = 0x80;
export const IFF_PROMISC = 0x100;
export const IFF_ALLMULTI = 0x200;
/** NUD_PERMANENT (linux/neighbour.h): what a neighbour with state 0 gets, as upstream. */
export const NUD_PERMANENT = 0x80;

const MAC_RE = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;

function bad(what: string, value: unknown, why: string): StatusError {
  return new StatusError(Code.INVALID_ARGUMENT, `${what} ${JSON.stringify(value)}: ${why}`);
}

/** 4 or 6 for a textual IP address; throws INVALID_ARGUMENT naming `what` otherwise. */
export function ipFamily(address: unknown, what: string): 4 | 6 {
  if (typeof address === 'string' && isIPv4(address)) return 4;
  if (typeof address === 'string' && isIPv6(address) && !address.includes('%')) return 6;
  throw bad(what, address, 'not an IP address');
}

/** A prefix length as text or number, checked against the family; INVALID_ARGUMENT otherwise. */
export function prefixLength(value: unknown, family: 4 | 6, what: string): number {
  const max = family === 4 ? 32 : 128;
  const n = typeof value === 'number' ? value : typeof value === 'string' && /^[0-9]{1,3}$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > max) throw bad(what, value, `not a prefix length 0..${max}`);
  return n;
}

/** "ip/len" (or "ip", = full length) → its parts; INVALID_ARGUMENT naming `what` otherwise. */
export function parseCidr(text: unknown, what: string): { family: 4 | 6; address: string; prefixLen: number; hadPrefix: boolean } {
  if (typeof text !== 'string') throw bad(what, text, 'not a CIDR');
  const slash = text.indexOf('/');
  const address = slash < 0 ? text : text.slice(0, slash);
  let family: 4 | 6;
  try {
    family = ipFamily(address, what);
  } catch {
    throw bad(what, text, 'not an IP address or CIDR');
  }
  let prefixLen = family === 4 ? 32 : 128;
  if (slash >= 0) {
    try {
      prefixLen = prefixLength(text.slice(slash + 1), family, what);
    } catch {
      throw bad(what, text, `prefix length not in 0..${family === 4 ? 32 : 128}`);
    }
  }
  return { family, address, prefixLen, hadPrefix: slash >= 0 };
}

/** A MAC as "aa:bb:cc:dd:ee:ff" (lower case); INVALID_ARGUMENT naming `what` otherwise. */
export function normalizeMac(mac: unknown, what: string): string {
  if (typeof mac !== 'string' || !MAC_RE.test(mac)) throw bad(what, mac, 'not a MAC address (aa:bb:cc:dd:ee:ff)');
  return mac.toLowerCase();
}

/** An interface name the kernel accepts (1..15 bytes, no "/", ":" or white space, not "." or ".."). */
export function validateIfName(name: unknown, what: string): string {
  if (typeof name !== 'string' || name.length === 0) throw bad(what, name, 'empty interface name');
  if (Buffer.byteLength(name) >= IFNAMSIZ) throw bad(what, name, `longer than ${IFNAMSIZ - 1} bytes (IFNAMSIZ)`);
  if (/[/:\s\x00-\x1f\x7f]/.test(name) || name === '.' || name === '..') throw bad(what, name, 'not a valid interface name');
  return name;
}

/** True for an IPv6 link-local (fe80::/10) address. */
export function isIPv6LinkLocal(address: string): boolean {
  return /^fe[89ab][0-9a-f]?:/i.test(address);
}
