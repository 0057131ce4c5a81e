/**
 * Container rpcs: CreateContainer, StartContainer, RemoveContainer (Kata agent rpc.rs
 * do_create_container / do_start_container / do_remove_container at 6e4d4c329a). Each goes to
 * one helper op of helper/ops/container.ts.
 */
import type { google as gpb, grpc as pb } from '../../shared/generated/protos';
import { Code, StatusError, validateContainerId } from '../../shared/protocol';
import { containerPlanFromSpec } from '../oci';
import { Container } from '../sandbox/container';
import { Process } from '../sandbox/process';
import { ProcessStdio } from '../sandbox/stdio';
import { attachPassfd, type PassfdStreams } from '../passfd';
import { applyConsoleSize, closeStdin } from './stdio';
import { unimplementedField, type AgentCore } from './core';
import { devicePlansFrom, rewriteSpecDevices, storagePlansFrom } from './storage';

type Empty = gpb.protobuf.Empty.$Properties;

/**
 * RemoveContainer bound when the request's timeout is 0, in ms. Upstream waits forever then;
 * we bound it (30 s) so a stuck removal surfaces as an error instead of a hung rpc.
 */
export const DEFAULT_REMOVE_TIMEOUT_MS = 30_000;

/** Longest RemoveContainer wait passed to the helper, in ms (its upper bound: one hour). */
export const MAX_REMOVE_TIMEOUT_MS = 3_600_000;

/**
 * CreateContainer: validates the id and the OCI spec, plans the container (control/oci.ts,
 * with Kata's namespace rewrite), has the helper set it up (init blocked until Start), and
 * keeps the init's stdio. INVALID_ARGUMENT for a bad id or spec, ALREADY_EXISTS for a used id,
 * waits for its devices (the helper, agent.hotplug_timeout) and rewrites their numbers into the
 * spec, sets up its storages (released again on failure and at RemoveContainer),
 * stdin/stdout/stderr_port: the passfd connections become the init's stdio (control/passfd.ts),
 * UNIMPLEMENTED for shared_mounts or VFIO devices, FAILED_PRECONDITION after
 * DestroySandbox or for sandbox_pidns without a (live) sandbox pid namespace,
 * RESOURCE_EXHAUSTED "OCI spec too large" when the plan does not fit the helper's packet
 * limit; helper errors pass through.
 */
export async function createContainer(core: AgentCore, req: pb.CreateContainerRequest): Promise<Empty> {
  core.checkNotDestroyed();
  return core.track(() => doCreateContainer(core, req));
}

async function doCreateContainer(core: AgentCore, req: pb.CreateContainerRequest): Promise<Empty> {
  const sandbox = core.sandbox;
  const id = validateContainerId(req.container_id);
  if (sandbox.containers.has(id) || sandbox.pendingContainerIds.has(id)) {
    throw new StatusError(Code.ALREADY_EXISTS, `container ${JSON.stringify(id)} already exists`);
  }
  if (!req.OCI) throw new StatusError(Code.INVALID_ARGUMENT, 'CreateContainerRequest.OCI is required');
  const devices = devicePlansFrom(req.devices);
  const storages = storagePlansFrom(req.storages, 'CreateContainerRequest.storages');
  if (req.shared_mounts.length > 0) throw unimplementedField('CreateContainerRequest.shared_mounts', `${req.shared_mounts.length} entries`);
  if (req.sandbox_pidns) sandbox.checkPidnsAlive();

  sandbox.pendingContainerIds.add(id);
  let storagesAdded = false;
  let created = false;
  let passfd: PassfdStreams = {};
  try {
    passfd = await core.takePassfd(req, `CreateContainer ${id}`);
    // Upstream order (rpc.rs do_create_container): devices, then storages, then the container.
    if (devices.length > 0) {
      const { devices: found } = await core.callNoFds('waitDevices', { devices, timeoutMs: 0 });
      rewriteSpecDevices(req.OCI, found);
    }
    if (storages.length > 0) {
      storagesAdded = true;
      await core.callNoFds('addStorages', { owner: id, storages });
    }
    const plan = containerPlanFromSpec(req.OCI, {
      sandboxPidns: req.sandbox_pidns,
      sandbox: sandbox.namespaceInfo(),
      warn: (f, m) => core.log.warn({ container: id, ...f }, m),
      containerId: id,
      deviceCgroup: sandbox.deviceCgroup,
      allowHostNamespaces: core.allowHostNamespaces,
    });
    // For the OCI state that hooks read (helper/ops/hooks.ts).
    const oci = { version: req.OCI.Version ?? '', annotations: { ...(req.OCI.Annotations ?? {}) } };
    const args = { containerId: id, plan, oci };
    const { result, fds } = await core.call('createContainer', args).catch((err: unknown) => {
      throw core.tooLargeError(err, 'createContainer', args);
    });
    let stdio: ProcessStdio;
    try {
      stdio = ProcessStdio.fromFds(fds, plan.process.terminal);
    } catch (err) {
      await core.callNoFds('removeContainer', { containerId: id, timeoutMs: core.defaultRemoveTimeoutMs }).catch((e: unknown) =>
        core.log.error({ err: e, container: id }, 'cleanup after a failed create failed'),
      );
      throw err;
    }
    const init = new Process(id, id, true, result.pid, stdio);
    applyConsoleSize(init, req.OCI.Process?.ConsoleSize, core.log);
    attachPassfd(init, passfd, () => closeStdin(core, { container_id: id, exec_id: id } as pb.CloseStdinRequest).then(() => undefined), core.log);
    const container = new Container(id, plan, init);
    container.storages = storages;
    sandbox.addContainer(container);
    core.applyEarlyExit(container, init);
    core.log.info({ container: id, pid: result.pid }, 'container created');
    created = true;
    return {};
  } finally {
    sandbox.pendingContainerIds.delete(id);
    if (!created) for (const s of Object.values(passfd)) s?.destroy();
    if (storagesAdded && !created) {
      await core.callNoFds('releaseStorages', { owner: id }).catch((e: unknown) => core.log.error({ err: e, container: id }, 'releasing storages after a failed create failed'));
    }
  }
}

/** StartContainer: releases the init process. FAILED_PRECONDITION unless the container is created. */
export async function startContainer(core: AgentCore, req: pb.StartContainerRequest): Promise<Empty> {
  const container = core.sandbox.getContainer(req.container_id);
  if (container.status !== 'created' || container.starting || container.removing) {
    const state = container.removing ? 'being removed' : container.starting ? 'already starting' : container.status;
    throw new StatusError(Code.FAILED_PRECONDITION, `container ${container.id} is ${state}, not created`);
  }
  container.starting = true;
  try {
    await core.callNoFds('startContainer', { containerId: container.id });
    if (container.status === 'created') container.status = 'running';
  } finally {
    container.starting = false;
  }
  core.log.info({ container: container.id }, 'container started');
  return {};
}

/**
 * Remove container `id` (RemoveContainer, DestroySandbox): the helper kills and reaps its
 * processes within `timeoutMs`, then the record is dropped. Concurrent calls share one removal.
 */
export function removeContainerById(core: AgentCore, id: string, timeoutMs: number): Promise<void> {
  const container = core.sandbox.getContainer(id);
  if (container.removing) return container.removing;
  const run = (async () => {
    // The container's storages are released by the same helper call once it is gone
    // (reference-counted shares stay while others hold them).
    let storagesReleased = false;
    try {
      // The helper bounds the wait itself; our own deadline only guards against a lost answer.
      await core.callNoFds('removeContainer', { containerId: id, timeoutMs, releaseStorages: true }, timeoutMs + 10_000);
      storagesReleased = true;
    } catch (err) {
      if (!(err instanceof StatusError && err.code === Code.NOT_FOUND)) throw err;
      core.log.warn({ container: id }, 'helper did not know the container; dropping our record');
    }
    const gone = new StatusError(Code.NOT_FOUND, `container ${id} was removed before the process's exit status was known`);
    const closed = new StatusError(Code.FAILED_PRECONDITION, `container ${id} was removed: its stdin is closed`);
    for (const p of container.processes()) {
      p.abandon(gone);
      p.stdio.destroy(closed);
      core.outputBudget.remove(p);
    }
    if (!storagesReleased) await core.callNoFds('releaseStorages', { owner: id });
    container.status = 'stopped';
    core.sandbox.removeContainer(id);
    core.dropEarlyExits(id);
    core.log.info({ container: id }, 'container removed');
  })();
  container.removing = run;
  run.catch(() => {
    container.removing = null;
  });
  return run;
}

/**
 * RemoveContainer: the helper kills the container's processes, waits for them (at most
 * `timeout` seconds; 0 = {@link DEFAULT_REMOVE_TIMEOUT_MS} instead of upstream's forever) and
 * tears the container down; then the record and its stdio are dropped and the id can be
 * reused. NOT_FOUND for an unknown id; the helper's error (e.g. DEADLINE_EXCEEDED when
 * processes survive the bound) otherwise, and the container stays.
 */
export async function removeContainer(core: AgentCore, req: pb.RemoveContainerRequest): Promise<Empty> {
  const timeoutMs = req.timeout > 0 ? Math.min(req.timeout * 1000, MAX_REMOVE_TIMEOUT_MS) : core.defaultRemoveTimeoutMs;
  await removeContainerById(core, req.container_id, timeoutMs);
  return {};
}
