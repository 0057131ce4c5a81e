/**
 * Where the debug endpoint listens, without fastify (control/debug/lazy.ts binds the address at
 * start-up and loads fastify on the first connection; server.ts's startDebugServer binds it
 * itself): the loopback rule for TCP and the unix socket's preparation and mode.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { Code, StatusError } from '../../shared/protocol';
import type { DebugAddress } from '../config';

/**
 * Throw StatusError PERMISSION_DENIED unless `host` is a loopback address (127.0.0.0/8, ::1,
 * ::ffff:127.x.y.z) or "localhost": the endpoint is for someone inside the guest, never for the
 * network (containers sharing the guest's network namespace could still reach loopback, which
 * is why the default is a unix socket).
 */
export function assertLoopback(host: string): void {
  const h = host.toLowerCase();
  const v4 = h.startsWith('::ffff:') ? h.slice(7) : h;
  if (h === 'localhost' || h === '::1' || h === '0:0:0:0:0:0:0:1' || (net.isIPv4(v4) && v4.startsWith('127.'))) return;
  throw new StatusError(Code.PERMISSION_DENIED, `refusing to serve the debug endpoint on ${JSON.stringify(host)}: only loopback (127.0.0.1, ::1) or a unix socket`);
}

/** Resolves true when something accepts a stream connection on the unix socket `file`. */
function socketIsLive(file: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ path: file });
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', (err: NodeJS.ErrnoException) => {
      sock.destroy();
      if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT') resolve(false);
      else reject(new StatusError(Code.FAILED_PRECONDITION, `cannot probe the socket ${file} (${err.code ?? err.message}); refusing to replace it`));
    });
  });
}

/**
 * Make way for a unix socket at `file`: create its directory (0755) when missing and remove a
 * stale socket file. Throws StatusError ALREADY_EXISTS when a non-socket file is there or a
 * live server accepts connections on it (it is left alone).
 */
export async function prepareSocketPath(file: string): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
  let stat: fs.Stats;
  try {
    stat = fs.lstatSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!stat.isSocket()) throw new StatusError(Code.ALREADY_EXISTS, `cannot listen on ${file}: it exists and is not a socket`);
  if (await socketIsLive(file)) {
    throw new StatusError(Code.ALREADY_EXISTS, `cannot listen on ${file}: another process is serving it`);
  }
  fs.rmSync(file, { force: true });
}

/**
 * Listen with `server` on `address` as the debug endpoint does: TCP only on loopback
 * (StatusError PERMISSION_DENIED otherwise); a unix socket created mode 0600 (the umask is
 * narrowed while it is bound, no window for another uid), its directory made when missing, a
 * stale socket file replaced (StatusError ALREADY_EXISTS for a non-socket or a live server).
 * Rejects with the listen error (EADDRINUSE, EACCES) otherwise.
 */
export async function listenDebugAddress(server: net.Server, address: DebugAddress): Promise<void> {
  const listen = (opts: net.ListenOptions): Promise<void> =>
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts, () => {
        server.off('error', reject);
        resolve();
      });
    });
  if (address.kind === 'tcp') {
    assertLoopback(address.host);
    await listen({ host: address.host, port: address.port });
    return;
  }
  await prepareSocketPath(address.path);
  const oldMask = process.umask(0o177);
  try {
    await listen({ path: address.path });
  } finally {
    process.umask(oldMask);
  }
  try {
    fs.chmodSync(address.path, 0o600);
  } catch (err) {
    await new Promise((resolve) => server.close(resolve));
    throw err;
  }
}
