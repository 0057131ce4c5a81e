/**
 * A raw stream listener on `vsock://CID:PORT` or `unix:///path` driven by the native addon
 * (Node's net cannot listen on AF_VSOCK): listen, watch the fd with a libuv poller, accept every
 * pending connection when it is readable. Used by the passfd listener (control/passfd.ts) and the
 * debug console (control/debug-console.ts); the ttRPC server has its own (control/ttrpc/server.ts).
 */
import type { Logger } from '../../shared/log';
import type { NativeAddon, Poller } from '../../shared/native';
import { Code, StatusError } from '../../shared/protocol';
import { parseAddress } from './address';

/** A listening fd and its poller. */
export interface StreamListener {
  readonly fd: number;
  /** The unix socket path, when the address is one. */
  readonly unixPath?: string;
  /** Stop polling and close the fd (the socket file is left to the caller). Idempotent. */
  close(): void;
}

/**
 * Listen on `address` with `backlog` and call `onConnection(fd)` for each accepted connection
 * (the callee owns the fd); a unix socket is created mode 0600 (owner: this process's uid).
 * `what` names the listener in errors and logs. Throws StatusError
 * INVALID_ARGUMENT for another kind of address (message names it and `what`), the system error
 * (EADDRINUSE, ...) when listening fails.
 */
export function listenStream(
  native: NativeAddon,
  address: string,
  backlog: number,
  what: string,
  log: Logger,
  onConnection: (fd: number) => void,
): StreamListener {
  const addr = parseAddress(address);
  let fd: number;
  if (addr.kind === 'vsock') fd = native.vsockListen(addr.cid === 0xffffffff ? -1 : addr.cid, addr.port, backlog);
  else if (addr.kind === 'unix') {
    // bind(2) under umask 0177: the socket is 0600 from its creation (a caller's chmod afterwards
    // left a window in which, with a permissive umask, anyone could connect: the debug console
    // is a root shell). Synchronous: the umask covers exactly that call.
    const previous = process.umask(0o177);
    try {
      fd = native.unixStreamListen(addr.path, backlog);
    } finally {
      process.umask(previous);
    }
  }
  else throw new StatusError(Code.INVALID_ARGUMENT, `${what} address ${JSON.stringify(address)}: want vsock://CID:PORT or unix:///path`);
  const acceptAll = (): void => {
    for (;;) {
      let conn: number;
      try {
        conn = native.accept(fd);
      } catch (err) {
        log.error({ err }, `${what} accept failed`);
        return;
      }
      if (conn < 0) return;
      onConnection(conn);
    }
  };
  const poller: Poller = new native.Poller(fd, (status) => {
    if (status < 0) log.error({ status }, `poll on the ${what} listener failed`);
    else acceptAll();
  });
  poller.start(true, false);
  let open = true;
  return {
    fd,
    unixPath: addr.kind === 'unix' ? addr.path : undefined,
    close: () => {
      if (!open) return;
      open = false;
      poller.close();
      try {
        native.close(fd);
      } catch {
        // already closed
      }
    },
  };
}
