/**
 * ttRPC server addresses, as the Kata agent and kata-agent-ctl write them:
 *
 *   unix:///abs/path        a named unix stream socket
 *   unix://@name            an abstract unix socket (Linux; no file)
 *   vsock://<cid>:<port>    an AF_VSOCK stream socket; cid "-1" or "" means VMADDR_CID_ANY
 *   serial:///abs/path      a virtio-serial port (server side only), e.g.
 *                           serial:///dev/virtio-ports/agent.channel.0, for hypervisors without
 *                           vsock: one ttRPC connection at a time over the port (ttrpc/serial.ts)
 *   serial://<name>         the same port found by its name (/sys/class/virtio-ports/<vportNpM>/name)
 *
 * The serial scheme is this project's (upstream Kata has no serial ttRPC transport; its agent
 * reads the console device for debugging only).
 *
 * Source: ttrpc-rust common.rs parse_sockaddr (server side) and Kata agent-ctl client.rs
 * (scheme split on "://", scheme compared case-insensitively, any other scheme rejected with
 * "invalid server address URI scheme").
 */
import { invalidArgument as invalid } from '../../shared/protocol';

/** VMADDR_CID_ANY: bind to (or talk to) any CID. */
export const VMADDR_CID_ANY = 0xffffffff;

/** Longest unix socket path in bytes: sizeof(sun_path) 108 minus the terminating NUL. */
export const UNIX_PATH_MAX = 107;

/** A parsed ttRPC address. */
export type TtrpcAddress =
  | { kind: 'unix'; path: string }
  | { kind: 'abstract'; name: string }
  | { kind: 'vsock'; cid: number; port: number }
  /** `path` is absolute (a device file), or a port name without "/" (looked up in sysfs). */
  | { kind: 'serial'; path: string };

/** Parse a decimal u32 (no sign, no spaces, no leading "+"); null when not one. */
function parseU32(text: string): number | null {
  if (!/^[0-9]{1,10}$/.test(text)) return null;
  const n = Number(text);
  return n <= 0xffffffff ? n : null;
}

/**
 * Parse an address string into a {@link TtrpcAddress}.
 *
 * Throws StatusError INVALID_ARGUMENT, naming the offending value, for: no "://" or a scheme
 * other than unix/vsock/serial, a serial port that is neither absolute nor a plain name (`invalid server address URI scheme ...`), an empty, relative or
 * too long (> 107 bytes) unix path, an empty or too long abstract name, a vsock address without
 * ":<port>", a cid that is not a u32 decimal, "-1" or empty, a port that is not a u32 decimal.
 */
export function parseAddress(address: string): TtrpcAddress {
  const sep = address.indexOf('://');
  if (sep < 0) {
    throw invalid(`invalid server address URI scheme: ${JSON.stringify(address)} (want unix:// or vsock://)`);
  }
  const scheme = address.slice(0, sep).toLowerCase();
  const rest = address.slice(sep + 3);
  switch (scheme) {
    case 'unix': {
      if (rest.startsWith('@')) {
        const name = rest.slice(1);
        if (name === '') throw invalid(`empty abstract socket name in ${JSON.stringify(address)}`);
        if (Buffer.byteLength(name) > UNIX_PATH_MAX - 1) {
          throw invalid(`abstract socket name too long (${Buffer.byteLength(name)} bytes, max ${UNIX_PATH_MAX - 1}) in ${JSON.stringify(address)}`);
        }
        return { kind: 'abstract', name };
      }
      if (rest === '') throw invalid(`empty unix socket path in ${JSON.stringify(address)}`);
      if (!rest.startsWith('/')) {
        throw invalid(`unix socket path must be absolute (unix:///path or unix://@name), got ${JSON.stringify(address)}`);
      }
      if (rest.includes('\0')) throw invalid(`unix socket path contains a NUL byte: ${JSON.stringify(address)}`);
      if (Buffer.byteLength(rest) > UNIX_PATH_MAX) {
        throw invalid(`unix socket path too long (${Buffer.byteLength(rest)} bytes, max ${UNIX_PATH_MAX}): ${JSON.stringify(rest)}`);
      }
      return { kind: 'unix', path: rest };
    }
    case 'vsock': {
      const colon = rest.lastIndexOf(':');
      if (colon < 0) throw invalid(`vsock address needs <cid>:<port>, got ${JSON.stringify(address)}`);
      const cidText = rest.slice(0, colon);
      const portText = rest.slice(colon + 1);
      let cid: number;
      if (cidText === '' || cidText === '-1') {
        cid = VMADDR_CID_ANY;
      } else {
        const n = parseU32(cidText);
        if (n === null) throw invalid(`invalid vsock cid ${JSON.stringify(cidText)} in ${JSON.stringify(address)} (want a u32, -1 or empty)`);
        cid = n;
      }
      const port = parseU32(portText);
      if (port === null) throw invalid(`invalid vsock port ${JSON.stringify(portText)} in ${JSON.stringify(address)} (want a u32)`);
      return { kind: 'vsock', cid, port };
    }
    case 'serial': {
      if (rest === '') throw invalid(`empty serial port in ${JSON.stringify(address)}`);
      if (rest.includes('\0')) throw invalid(`serial port path contains a NUL byte: ${JSON.stringify(address)}`);
      if (!rest.startsWith('/') && !/^[A-Za-z0-9._-]{1,255}$/.test(rest)) {
        throw invalid(`serial port must be an absolute path or a port name ([A-Za-z0-9._-]), got ${JSON.stringify(address)}`);
      }
      if (Buffer.byteLength(rest) > 4095) throw invalid(`serial port path too long in ${JSON.stringify(address)}`);
      return { kind: 'serial', path: rest };
    }
    default:
      throw invalid(`invalid server address URI scheme ${JSON.stringify(scheme)} in ${JSON.stringify(address)} (want unix://, vsock:// or serial://)`);
  }
}

/** The canonical string of an address (`vsock://-1:<port>` for VMADDR_CID_ANY). */
export function formatAddress(address: TtrpcAddress): string {
  switch (address.kind) {
    case 'unix':
      return `unix://${address.path}`;
    case 'abstract':
      return `unix://@${address.name}`;
    case 'vsock':
      return `vsock://${address.cid === VMADDR_CID_ANY ? '-1' : address.cid}:${address.port}`;
    case 'serial':
      return `serial://${address.path}`;
  }
}

/**
 * The path Node's net module takes for a unix or abstract address: the file path, or
 * "\0name" for an abstract socket. Throws StatusError INVALID_ARGUMENT for a vsock address.
 */
export function netPath(address: TtrpcAddress): string {
  switch (address.kind) {
    case 'unix':
      return address.path;
    case 'abstract':
      return `\0${address.name}`;
    case 'vsock':
    case 'serial':
      throw invalid(`${formatAddress(address)} is not a unix socket address`);
  }
}

/** Accept either form: a string is parsed with {@link parseAddress}. */
export function toAddress(address: string | TtrpcAddress): TtrpcAddress {
  return typeof address === 'string' ? parseAddress(address) : address;
}
