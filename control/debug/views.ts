/**
 * What the debug endpoint shows (control/debug/server.ts): JSON views of the sandbox, its
 * containers and processes, and their JSON schemas (fastify serialises responses with them, so
 * a field not in a schema never leaves the agent). No container data: no environment, no
 * stdio, no file contents; process arguments and mount sources are shown.
 */
import type { Container } from '../sandbox/container';
import type { Process } from '../sandbox/process';
import type { Sandbox } from '../sandbox/sandbox';

export const processSchema = {
  type: 'object',
  required: ['containerId', 'execId', 'pid', 'init', 'exited', 'exitStatus', 'terminal'],
  properties: {
    containerId: { type: 'string' },
    execId: { type: 'string' },
    pid: { type: 'integer' },
    init: { type: 'boolean' },
    exited: { type: 'boolean' },
    exitStatus: { type: ['integer', 'null'] },
    terminal: { type: 'boolean' },
  },
} as const;

export const containerSummarySchema = {
  type: 'object',
  required: ['id', 'status', 'pid', 'processes'],
  properties: {
    id: { type: 'string' },
    status: { type: 'string' },
    pid: { type: 'integer' },
    processes: { type: 'integer' },
  },
} as const;

export const sandboxSchema = {
  type: 'object',
  required: ['id', 'hostname', 'created', 'destroyed', 'containers', 'storages'],
  properties: {
    id: { type: 'string' },
    hostname: { type: 'string' },
    created: { type: 'boolean' },
    destroyed: { type: 'boolean' },
    pidns: { type: ['string', 'null'] },
    containers: { type: 'array', items: containerSummarySchema },
    storages: { type: 'array', items: { $ref: 'storage#' } },
  },
} as const;

/** Shared schemas registered with app.addSchema (referenced as `storage#`, `mount#`). */
export const sharedSchemas = [
  {
    $id: 'storage',
    type: 'object',
    required: ['driver', 'source', 'fstype', 'options', 'mountPoint'],
    properties: {
      driver: { type: 'string' },
      source: { type: 'string' },
      fstype: { type: 'string' },
      options: { type: 'array', items: { type: 'string' } },
      mountPoint: { type: 'string' },
    },
  },
  {
    $id: 'mount',
    type: 'object',
    required: ['destination', 'type', 'source', 'options'],
    properties: {
      destination: { type: 'string' },
      type: { type: 'string' },
      source: { type: 'string' },
      options: { type: 'array', items: { type: 'string' } },
    },
  },
] as const;

export const containerSchema = {
  type: 'object',
  required: ['id', 'status', 'pid', 'createdAt', 'spec', 'processes', 'cgroup', 'mounts', 'storages'],
  properties: {
    id: { type: 'string' },
    status: { type: 'string' },
    pid: { type: 'integer' },
    createdAt: { type: 'string' },
    spec: {
      type: 'object',
      required: ['args', 'cwd', 'uid', 'gid', 'terminal', 'rootfs', 'readonly', 'hostname', 'namespaces', 'seccomp', 'unenforced'],
      properties: {
        args: { type: 'array', items: { type: 'string' } },
        cwd: { type: 'string' },
        uid: { type: 'integer' },
        gid: { type: 'integer' },
        terminal: { type: 'boolean' },
        rootfs: { type: 'string' },
        readonly: { type: 'boolean' },
        hostname: { type: 'string' },
        namespaces: { type: 'array', items: { type: 'object', required: ['type'], properties: { type: { type: 'string' }, path: { type: 'string' } } } },
        seccomp: { type: 'boolean' },
        unenforced: { type: 'array', items: { type: 'string' } },
      },
    },
    processes: { type: 'array', items: processSchema },
    cgroup: {
      type: ['object', 'null'],
      required: ['path', 'resources'],
      properties: { path: { type: 'string' }, resources: { type: 'object', additionalProperties: true } },
    },
    mounts: { type: 'array', items: { $ref: 'mount#' } },
    storages: { type: 'array', items: { $ref: 'storage#' } },
  },
} as const;

export const errorSchema = {
  type: 'object',
  required: ['error'],
  properties: { error: { type: 'string' } },
} as const;

/** One process (init or exec) as shown by /v1/processes and /v1/containers/:id. */
export function processView(p: Process) {
  return { containerId: p.containerId, execId: p.execId, pid: p.pid, init: p.init, exited: p.exited, exitStatus: p.exitStatus, terminal: p.terminal };
}

/**
 * One line per container (/v1/sandbox, /v1/containers). `processes`: those still running (an
 * exited exec stays listed by /v1/processes until its container is removed, but is not counted).
 */
export function containerSummary(c: Container) {
  return { id: c.id, status: c.status, pid: c.init.pid, processes: c.processes().filter((p) => !p.exited).length };
}

/** The whole view of one container (/v1/containers/:id); see {@link containerSchema}. */
export function containerView(c: Container) {
  const plan = c.plan;
  return {
    id: c.id,
    status: c.status,
    pid: c.init.pid,
    createdAt: c.createdAt.toISOString(),
    spec: {
      args: plan.process.args,
      cwd: plan.process.cwd,
      uid: plan.process.uid,
      gid: plan.process.gid,
      terminal: plan.process.terminal,
      rootfs: plan.rootfs,
      readonly: plan.readonly,
      hostname: plan.hostname,
      namespaces: plan.namespaces.map((n) => ({ type: n.type, ...(n.path ? { path: n.path } : {}) })),
      seccomp: plan.seccomp !== undefined,
      unenforced: plan.unenforced ?? [],
    },
    processes: c.processes().map(processView),
    cgroup: plan.cgroup ? { path: plan.cgroup.path, resources: plan.cgroup.resources } : null,
    mounts: plan.mounts,
    storages: c.storages,
  };
}

/** The sandbox (/v1/sandbox); see {@link sandboxSchema}. */
export function sandboxView(sandbox: Sandbox) {
  return {
    id: sandbox.id,
    hostname: sandbox.hostname,
    created: sandbox.created,
    destroyed: sandbox.destroyed,
    pidns: sandbox.pidns,
    containers: [...sandbox.containers.values()].map(containerSummary),
    storages: sandbox.storages,
  };
}
