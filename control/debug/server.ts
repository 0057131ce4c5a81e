/**
 * The debug HTTP endpoint (fastify), bound to the configured debugAddr: by default the unix
 * socket /run/kata-agent/debug.sock, mode 0600, owned by the control plane's uid (a TCP port
 * would be reachable from containers, which share the guest's network namespace); `host:port`
 * TCP only when configured so (control/config.ts). Query it with
 *
 *   curl --unix-socket /run/kata-agent/debug.sock http://localhost/v1/sandbox
 *
 *   GET /healthz            {status: "ok"}
 *   GET /v1/sandbox         sandbox id, hostname, state, containers (id, status, pid, processes count)
 *   GET /v1/containers/:id  container status, init pid, processes {execId, pid, exited, exitStatus, terminal}
 *                           (404 {error} for an unknown id)
 *   GET /metrics            GetMetrics' Prometheus text (control/metrics.ts), when given a registry
 *
 * Read-only; it exposes no container data (no env, no stdio).
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { Code, StatusError } from '../../shared/protocol';
import type { DebugAddress } from '../config';
import type { Container } from '../sandbox/container';
import type { Sandbox } from '../sandbox/sandbox';

/** What /metrics serves (control/metrics.ts AgentMetrics). */
export interface MetricsRenderer {
  render(): Promise<string>;
  readonly contentType: string;
}

const processSchema = {
  type: 'object',
  required: ['execId', 'pid', 'init', 'exited', 'exitStatus', 'terminal'],
  properties: {
    execId: { type: 'string' },
    pid: { type: 'integer' },
    init: { type: 'boolean' },
    exited: { type: 'boolean' },
    exitStatus: { type: ['integer', 'null'] },
    terminal: { type: 'boolean' },
  },
} as const;

const containerSummarySchema = {
  type: 'object',
  required: ['id', 'status', 'pid', 'processes'],
  properties: {
    id: { type: 'string' },
    status: { type: 'string' },
    pid: { type: 'integer' },
    processes: { type: 'integer' },
  },
} as const;

const sandboxSchema = {
  type: 'object',
  required: ['id', 'hostname', 'created', 'destroyed', 'containers'],
  properties: {
    id: { type: 'string' },
    hostname: { type: 'string' },
    created: { type: 'boolean' },
    destroyed: { type: 'boolean' },
    pidns: { type: ['string', 'null'] },
    containers: { type: 'array', items: containerSummarySchema },
  },
} as const;

const containerSchema = {
  type: 'object',
  required: ['id', 'status', 'pid', 'createdAt', 'processes'],
  properties: {
    id: { type: 'string' },
    status: { type: 'string' },
    pid: { type: 'integer' },
    createdAt: { type: 'string' },
    processes: { type: 'array', items: processSchema },
  },
} as const;

const errorSchema = {
  type: 'object',
  required: ['error'],
  properties: { error: { type: 'string' } },
} as const;

function containerView(c: Container) {
  return {
    id: c.id,
    status: c.status,
    pid: c.init.pid,
    createdAt: c.createdAt.toISOString(),
    processes: c.processes().map((p) => ({
      execId: p.execId,
      pid: p.pid,
      init: p.init,
      exited: p.exited,
      exitStatus: p.exitStatus,
      terminal: p.terminal,
    })),
  };
}

/**
 * Build the debug endpoint over `sandbox` (not listening; call `listen` or use `inject`).
 * `logger` false keeps fastify quiet (request logs would be noise).
 */
export function buildDebugServer(sandbox: Sandbox, metrics?: MetricsRenderer): FastifyInstance {
  const app = Fastify({ logger: false });

  // GetMetrics' text (control/metrics.ts), for a Prometheus scraper on the debug socket.
  if (metrics) {
    app.get('/metrics', async (_req, reply) => {
      const text = await metrics.render();
      return reply.type(metrics.contentType).send(text);
    });
  }

  app.get('/healthz', {
    schema: { response: { 200: { type: 'object', required: ['status'], properties: { status: { type: 'string' } } } } },
    handler: async () => ({ status: 'ok' }),
  });

  app.get('/v1/sandbox', {
    schema: { response: { 200: sandboxSchema } },
    handler: async () => ({
      id: sandbox.id,
      hostname: sandbox.hostname,
      created: sandbox.created,
      destroyed: sandbox.destroyed,
      pidns: sandbox.pidns,
      containers: [...sandbox.containers.values()].map((c) => ({
        id: c.id,
        status: c.status,
        pid: c.init.pid,
        processes: c.execs.size + 1,
      })),
    }),
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

  return app;
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
async function prepareSocketPath(file: string): Promise<void> {
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
 * Build the debug endpoint and listen on `address`. A unix socket is created mode 0600 (owned
 * by this process's uid: only it and root can connect), its directory created when missing, a
 * stale socket file removed (fastify removes the file again on close). Resolves with the
 * instance once listening; rejects with StatusError ALREADY_EXISTS when the socket path holds
 * something else or a live server, else with the listen error (e.g. EADDRINUSE, EACCES).
 */
export async function startDebugServer(sandbox: Sandbox, address: DebugAddress, metrics?: MetricsRenderer): Promise<FastifyInstance> {
  const app = buildDebugServer(sandbox, metrics);
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
