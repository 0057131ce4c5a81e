/**
 * The debug HTTP endpoint (fastify), bound to the configured debugAddr: by default the unix
 * socket /run/kata-agent/control/debug.sock, mode 0600, owned by the control plane's uid (a TCP
 * port would be reachable from containers, which share the guest's network namespace);
 * `host:port` TCP only when configured so and only on loopback (anything else is refused,
 * PERMISSION_DENIED). Query it with
 *
 *   curl --unix-socket /run/kata-agent/control/debug.sock http://localhost/v1/sandbox
 *
 *   GET /healthz             {status: "ok"} while the process serves
 *   GET /readyz              {status: "ready"}, or 503 {status: "not ready", reason}
 *   GET /metrics             GetMetrics' Prometheus text (control/metrics.ts)
 *   GET /v1/sandbox          id, hostname, state, pidns, containers (summary), storages
 *   GET /v1/containers       [{id, status, pid, processes}]
 *   GET /v1/containers/:id   spec summary, state, processes, cgroup, mounts, storages (404 {error})
 *   GET /v1/processes        every init and exec process of every container
 *   GET /v1/config           the configuration in effect
 *   GET /v1/logs?lines=N&follow=true   the last N log lines (NDJSON), then, with follow, live
 *
 * Read-only (GET only); responses are serialised through JSON schemas (control/debug/views.ts).
 * It exposes no container data (no env, no stdio).
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import type { LogRing } from '../../shared/log-ring';
import { Code, StatusError } from '../../shared/protocol';
import type { DebugAddress } from '../config';
import { assertLoopback, prepareSocketPath } from './listen';

export { assertLoopback };
import type { Sandbox } from '../sandbox/sandbox';
import { containerSchema, containerSummary, containerSummarySchema, containerView, errorSchema, processSchema, processView, sandboxSchema, sandboxView, sharedSchemas } from './views';

/** What /metrics serves (control/metrics.ts AgentMetrics). */
export interface MetricsRenderer {
  render(): Promise<string>;
  readonly contentType: string;
}

/** What the endpoint serves besides the sandbox; each part is optional. */
export interface DebugServerOptions {
  /** /metrics: GetMetrics' Prometheus text (control/metrics.ts AgentMetrics). */
  metrics?: MetricsRenderer;
  /** /v1/logs: the control plane's last log lines (shared/log-ring.ts). */
  logs?: LogRing;
  /** /v1/config: the configuration in effect (control/config.ts AgentConfig). */
  config?: object;
  /** /readyz: null when ready, else why not (e.g. "helper connection lost"); default always ready. */
  notReady?: () => string | null;
}

const statusSchema = { type: 'object', required: ['status'], properties: { status: { type: 'string' }, reason: { type: 'string' } } } as const;

/**
 * Build the debug endpoint over `sandbox` (not listening; call `listen` or use `inject`).
 * Read-only: every route is a GET. `logger` false keeps fastify quiet (request logs would be
 * noise, and would feed /v1/logs with itself).
 */
export function buildDebugServer(sandbox: Sandbox, options: DebugServerOptions = {}): FastifyInstance {
  // forceCloseConnections: close() ends live tails' and keep-alive connections at once.
  const app = Fastify({ logger: false, forceCloseConnections: true });
  for (const schema of sharedSchemas) app.addSchema(schema);
  const { metrics, logs, config, notReady } = options;
  // Live tails end when the server closes (else close would wait for their clients).
  const tails = new Set<() => void>();
  app.addHook('preClose', async () => {
    for (const stop of [...tails]) stop();
  });

  app.get('/healthz', { schema: { response: { 200: statusSchema } }, handler: async () => ({ status: 'ok' }) });

  app.get('/readyz', {
    schema: { response: { 200: statusSchema, 503: statusSchema } },
    handler: async (_req, reply) => {
      const reason = notReady ? notReady() : null;
      if (reason !== null) return reply.code(503).send({ status: 'not ready', reason });
      return { status: 'ready' };
    },
  });

  // GetMetrics' text (control/metrics.ts), for a Prometheus scraper on the debug socket.
  if (metrics) {
    app.get('/metrics', async (_req, reply) => {
      const text = await metrics.render();
      return reply.type(metrics.contentType).send(text);
    });
  }

  app.get('/v1/sandbox', { schema: { response: { 200: sandboxSchema } }, handler: async () => sandboxView(sandbox) });

  app.get('/v1/containers', {
    schema: { response: { 200: { type: 'array', items: containerSummarySchema } } },
    handler: async () => [...sandbox.containers.values()].map(containerSummary),
  });

  app.get<{ Params: { id: string } }>('/v1/containers/:id', {
    schema: {
      params: { type: 'object', required: ['id'], properties: { id: { type: 'string', maxLength: 256 } } },
      response: { 200: containerSchema, 404: errorSchema },
    },
    handler: async (request, reply) => {
      const c = sandbox.containers.get(request.params.id);
      if (!c) return reply.code(404).send({ error: `container ${JSON.stringify(request.params.id)} not found` });
      return containerView(c);
    },
  });

  app.get('/v1/processes', {
    schema: { response: { 200: { type: 'array', items: processSchema } } },
    handler: async () => [...sandbox.containers.values()].flatMap((c) => c.processes().map(processView)),
  });

  if (config) {
    app.get('/v1/config', { schema: { response: { 200: { type: 'object', additionalProperties: true } } }, handler: async () => config });
  }

  if (logs) {
    app.get<{ Querystring: { lines: number; follow: boolean } }>('/v1/logs', {
      schema: {
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { lines: { type: 'integer', minimum: 0, maximum: logs.capacity, default: Math.min(100, logs.capacity) }, follow: { type: 'boolean', default: false } },
        },
        response: { 400: errorSchema },
      },
      handler: async (request, reply) => {
        const { lines, follow } = request.query;
        const past = logs.tail(lines);
        reply.type('application/x-ndjson');
        if (!follow) return reply.send(past.map((l) => `${l}\n`).join(''));
        // Live tail: the past lines, then every new one until the client goes away.
        const out = new PassThrough();
        for (const l of past) out.write(`${l}\n`);
        const unsubscribe = logs.subscribe((l) => {
          // A reader that does not keep up is cut off rather than buffered without bound.
          if (out.writableLength > 1 << 20) {
            unsubscribe();
            out.end('{"msg":"debug endpoint: live tail cut, the reader was too slow"}\n');
            return;
          }
          out.write(`${l}\n`);
        });
        const stop = (): void => {
          unsubscribe();
          out.end();
        };
        request.raw.once('close', stop);
        tails.add(stop);
        out.once('close', () => tails.delete(stop));
        return reply.send(out);
      },
    });
  }

  app.setErrorHandler((err: FastifyError, _req, reply) => {
    const code = err.statusCode ?? 500;
    return reply.code(code).send({ error: err.message });
  });

  return app;
}

/**
 * Build the debug endpoint and listen on `address`. A unix socket is created mode 0600 (owned
 * by this process's uid: only it and root can connect), its directory created when missing, a
 * stale socket file removed (fastify removes the file again on close). Resolves with the
 * instance once listening; rejects with StatusError ALREADY_EXISTS when the socket path holds
 * something else or a live server, StatusError PERMISSION_DENIED for a TCP host that is not
 * loopback, else with the listen error (e.g. EADDRINUSE, EACCES).
 */
export async function startDebugServer(sandbox: Sandbox, address: DebugAddress, options: DebugServerOptions = {}): Promise<FastifyInstance> {
  if (address.kind === 'tcp') assertLoopback(address.host);
  const app = buildDebugServer(sandbox, options);
  if (address.kind === 'tcp') {
    await app.listen({ host: address.host, port: address.port });
    return app;
  }
  await prepareSocketPath(address.path);
  // The socket is created with mode 0777 & ~umask: restrict the umask while it is bound (no
  // window in which another uid could connect), then make sure of the mode.
  const oldMask = process.umask(0o177);
  try {
    await app.listen({ path: address.path });
  } finally {
    process.umask(oldMask);
  }
  try {
    fs.chmodSync(address.path, 0o600);
  } catch (err) {
    await app.close();
    throw err;
  }
  return app;
}
