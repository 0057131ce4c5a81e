/**
 * The debug HTTP endpoint (fastify), bound to the configured debugAddr (loopback by default):
 *
 *   GET /healthz            {status: "ok"}
 *   GET /v1/sandbox         sandbox id, hostname, state, containers (id, status, pid, processes count)
 *   GET /v1/containers/:id  container status, init pid, processes {execId, pid, exited, exitStatus, terminal}
 *                           (404 {error} for an unknown id)
 *
 * Read-only; it exposes no container data (no env, no stdio). Metrics are a later issue.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import type { Container } from '../sandbox/container';
import type { Sandbox } from '../sandbox/sandbox';

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
export function buildDebugServer(sandbox: Sandbox): FastifyInstance {
  const app = Fastify({ logger: false });

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

/**
 * Build the debug endpoint and listen on `host`:`port`. Resolves with the instance once
 * listening; rejects with the listen error (e.g. EADDRINUSE).
 */
export async function startDebugServer(sandbox: Sandbox, host: string, port: number): Promise<FastifyInstance> {
  const app = buildDebugServer(sandbox);
  await app.listen({ host, port });
  return app;
}
