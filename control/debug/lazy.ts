/**
 * The debug endpoint bound at start-up but built on first use: the address (unix socket or
 * loopback TCP, control/debug/listen.ts) is listened on by a plain net.Server, and fastify with
 * the routes (control/debug/server.ts buildDebugServer) is loaded when the first connection
 * arrives; that connection and every later one are handed to fastify's HTTP server. Until
 * someone queries it the endpoint costs no start-up time and no memory: fastify was ~130 ms of
 * the control plane's CPU before SERVING and ~17 MiB of its idle memory (docs/ARCHITECTURE.md
 * "Start-up to SERVING").
 */
import * as net from 'node:net';
import type { Server as HttpServer } from 'node:http';
import type { DebugAddress } from '../config';
import { listenDebugAddress } from './listen';

/** What the lazy endpoint needs of the app it builds: fastify's instance satisfies it. */
export interface DebugApp {
  server: HttpServer;
  ready(): PromiseLike<unknown>;
  close(): PromiseLike<unknown>;
}

/** A listening debug endpoint. */
export interface DebugEndpoint {
  /** Whether the app was built (someone connected). */
  readonly built: boolean;
  /** Stop listening (a unix socket file is removed), close the app, then any connection still open. */
  close(): Promise<void>;
}

/**
 * Listen on `address` (errors as {@link listenDebugAddress}) and call `build` on the first
 * connection; a `build` or `ready()` that throws closes that connection and is retried on the
 * next one.
 */
export async function startLazyDebugServer(address: DebugAddress, build: () => DebugApp): Promise<DebugEndpoint> {
  let app: Promise<DebugApp> | undefined;
  let built: DebugApp | undefined;
  const sockets = new Set<net.Socket>();
  // pauseOnConnect: nothing is read before the HTTP server takes the socket over.
  const server = net.createServer({ pauseOnConnect: true }, (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    app ??= (async () => {
      const a = build();
      await a.ready();
      built = a;
      return a;
    })();
    app.then(
      (a) => {
        a.server.emit('connection', socket);
        socket.resume();
      },
      () => {
        app = undefined;
        socket.destroy();
      },
    );
  });
  await listenDebugAddress(server, address);
  return {
    get built() {
      return built !== undefined;
    },
    async close() {
      // The listener's close waits for every connection it accepted, also those handed to the
      // app: close the app first (it ends its requests), then drop what is still open.
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      if (app) await (await app.catch(() => undefined))?.close();
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}
