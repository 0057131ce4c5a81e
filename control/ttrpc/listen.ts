/**
 * Listening on unix sockets safely: refuse abstract addresses unless allowed, never take over a
 * socket another live server serves, replace only a stale one, create the socket file mode 0600.
 *
 * Why: containers share the guest's network namespace, hence its abstract unix socket
 * namespace: an abstract ttRPC socket is reachable from every container (a container created a
 * container bind-mounting "/" through it). A second agent started on the same path used to
 * unlink the live agent's socket and take over.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { Code, StatusError } from '../../shared/protocol';
import { formatAddress, netPath, type TtrpcAddress } from './address';

/** How long the liveness probe of an existing socket file may take, in ms. */
export const PROBE_TIMEOUT_MS = 1000;

/**
 * Probe the unix socket file at `path`: 'live' when something accepts a connection there,
 * 'stale' when nobody listens (ECONNREFUSED), 'absent' when there is no file. Throws
 * StatusError ALREADY_EXISTS when the path exists and is not a socket, FAILED_PRECONDITION
 * when the probe fails otherwise (e.g. EACCES, or no answer within {@link PROBE_TIMEOUT_MS}:
 * an unknown state is not replaced).
 */
export async function probeUnixSocket(path: string): Promise<'live' | 'stale' | 'absent'> {
  let stat: fs.Stats;
  try {
    stat = fs.lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
    throw err;
  }
  if (!stat.isSocket()) {
    throw new StatusError(Code.ALREADY_EXISTS, `cannot listen on ${path}: it exists and is not a socket`);
  }
  return new Promise((resolve, reject) => {
    const socket = net.createConnection({ path });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new StatusError(Code.FAILED_PRECONDITION, `cannot listen on ${path}: probing the existing socket timed out after ${PROBE_TIMEOUT_MS} ms; refusing to replace it`));
    }, PROBE_TIMEOUT_MS);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve('live');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      socket.destroy();
      if (err.code === 'ECONNREFUSED') resolve('stale');
      else if (err.code === 'ENOENT') resolve('absent');
      else reject(new StatusError(Code.FAILED_PRECONDITION, `cannot listen on ${path}: probing the existing socket failed (${err.message}); refusing to replace it`));
    });
  });
}

/** Options of {@link listenUnix}. */
export interface ListenUnixOptions {
  backlog: number;
  /** Accept an abstract address (`unix://@name`); default false. */
  allowAbstract: boolean;
  /** Called when a stale socket file was removed (for logging). */
  onStaleRemoved?: (path: string) => void;
}

/**
 * Listen on a unix path or abstract address with a new net.Server; resolves with the listening
 * server.
 *
 * - abstract: refused with StatusError PERMISSION_DENIED unless `allowAbstract` (it has no
 *   permissions and every container in the guest network namespace can connect).
 * - path: an existing socket file is probed ({@link probeUnixSocket}): a live server there →
 *   StatusError FAILED_PRECONDITION `another server is serving <path>; refusing to start`;
 *   a stale one is removed; anything else is not touched (errors as the probe's). The socket
 *   is bound with umask 0177 and chmod'ed 0600, so only its owner (the control uid) and root
 *   can connect.
 *
 * Otherwise rejects with the system error of bind/listen (an Error with `code`, e.g. EADDRINUSE).
 */
export async function listenUnix(address: TtrpcAddress, options: ListenUnixOptions): Promise<net.Server> {
  if (address.kind === 'vsock' || address.kind === 'serial') throw new StatusError(Code.INVALID_ARGUMENT, `${formatAddress(address)} is not a unix socket address`);
  if (address.kind === 'abstract' && !options.allowAbstract) {
    throw new StatusError(
      Code.PERMISSION_DENIED,
      `refusing to listen on the abstract socket ${formatAddress(address)}: containers share the guest network namespace and could connect to it (use a unix:///path or vsock:// address, or allow abstract sockets explicitly)`,
    );
  }
  if (address.kind === 'unix') {
    const state = await probeUnixSocket(address.path);
    if (state === 'live') {
      throw new StatusError(Code.FAILED_PRECONDITION, `another server is serving ${address.path}; refusing to start (stop it first)`);
    }
    if (state === 'stale') {
      fs.unlinkSync(address.path);
      options.onStaleRemoved?.(address.path);
    }
  }
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    // bind(2) happens synchronously inside listen(): the umask covers exactly that call.
    const previous = address.kind === 'unix' ? process.umask(0o177) : undefined;
    try {
      server.listen({ path: netPath(address), backlog: options.backlog }, () => {
        server.off('error', onError);
        resolve();
      });
    } finally {
      if (previous !== undefined) process.umask(previous);
    }
  });
  if (address.kind === 'unix') {
    try {
      fs.chmodSync(address.path, 0o600);
    } catch (err) {
      await new Promise((resolve) => server.close(resolve));
      throw err;
    }
  }
  return server;
}
