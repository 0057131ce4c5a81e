/**
 * Connection-accept hooks ("handshakers") of the ttRPC server: run once per accepted
 * connection, before any frame is read, and decide whether the connection is served.
 *
 * The one we ship checks the peer of a unix socket with SO_PEERCRED: only uid 0 and the
 * configured uids may talk to the agent. Containers share the guest's network namespace, so a
 * unix socket they can reach (an abstract one) must not serve them; a vsock connection comes
 * from the host and is not checked.
 *
 * Model: containerd/ttrpc handshake.go (Handshaker) and unixcreds_linux.go
 * (UnixSocketRequireUidGid: SO_PEERCRED, deny others).
 */
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import { loadNative, type NativeAddon, type PeerCred } from '../../shared/native';
import { foreignPidNamespace } from '../../shared/peer-pidns';

/** What kind of listener accepted a connection. */
export type TransportKind = 'unix' | 'abstract' | 'vsock' | 'serial' | 'stream';

/** What a {@link Handshaker} learns about an accepted connection. */
export interface AcceptInfo {
  /** unix path, abstract unix, vsock, or a stream handed over with handleConnection(). */
  readonly kind: TransportKind;
  /** The listener's address, e.g. "unix:///run/kata-agent.sock" (undefined for handed-over streams). */
  readonly address?: string;
  /** The connection's socket fd, when known (-1 otherwise). Owned by the stream: never close it. */
  readonly fd: number;
}

/** A handshaker's verdict: serve (with the peer's credentials when read) or refuse, saying why. */
export type HandshakeResult = { ok: true; peer?: PeerCred } | { ok: false; reason: string; peer?: PeerCred };

/**
 * Decides, synchronously, whether an accepted connection is served. A refused connection is
 * destroyed by the server before any byte of it is read, and the reason is logged (warn).
 * A handshaker that throws refuses the connection.
 */
export type Handshaker = (stream: Duplex, info: AcceptInfo) => HandshakeResult;

/**
 * The fd under a net.Socket (a libuv pipe or tcp handle exposes it as `_handle.fd` on Linux),
 * or -1 when there is none (not yet connected, destroyed, or another platform).
 */
export function socketFd(stream: Duplex): number {
  if (!(stream instanceof net.Socket)) {
    const fd = (stream as unknown as { fd?: unknown }).fd; // FdStream
    return typeof fd === 'number' ? fd : -1;
  }
  const handle = (stream as unknown as { _handle?: { fd?: unknown } | null })._handle;
  const fd = handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : -1;
}

/** Options of {@link requireUnixPeerUid}. */
export interface UnixPeerOptions {
  /** Uids allowed besides 0 (root is always allowed). */
  uids: readonly number[];
  /** Native addon (default: loaded on first use). */
  native?: NativeAddon;
  /** Serve peers of another pid namespace (a container's root). Default false. */
  allowForeignPidNamespace?: boolean;
}

/**
 * A handshaker for unix sockets (path and abstract): reads SO_PEERCRED and serves only peers
 * whose uid is 0 or in `uids`; others are refused with "peer uid U (pid P) is not allowed
 * (allowed: ...)". When the credentials cannot be read (no fd) the connection is refused
 * (fail closed). A peer in another pid namespace is refused as well, whatever its uid: a
 * container's root is uid 0 (shared/peer-pidns.ts). vsock connections and handed-over streams pass unchecked (the host is the
 * peer of a vsock connection; a handed-over stream was vetted by its owner).
 *
 * Source: containerd/ttrpc unixcreds_linux.go (UnixSocketRequireUidGid, UnixSocketRequireSameUser).
 */
export function requireUnixPeerUid(options: UnixPeerOptions): Handshaker {
  const allowed = new Set<number>([0, ...options.uids]);
  const allowedText = [...allowed].sort((a, b) => a - b).join(', ');
  let native = options.native;
  return (_stream, info) => {
    if (info.kind !== 'unix' && info.kind !== 'abstract') return { ok: true };
    if (info.fd < 0) return { ok: false, reason: 'cannot read the peer credentials: no socket fd' };
    let peer: PeerCred;
    try {
      peer = (native ??= loadNative()).peerCred(info.fd);
    } catch (err) {
      return { ok: false, reason: `cannot read the peer credentials: ${(err as Error).message}` };
    }
    if (!allowed.has(peer.uid)) {
      return { ok: false, peer, reason: `peer uid ${peer.uid} (pid ${peer.pid}) is not allowed (allowed uids: ${allowedText})` };
    }
    const foreign = options.allowForeignPidNamespace ? undefined : foreignPidNamespace(peer.pid);
    if (foreign) return { ok: false, peer, reason: foreign };
    return { ok: true, peer };
  };
}
