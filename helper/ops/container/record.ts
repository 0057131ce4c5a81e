/** Finding a container record or one of its processes by id, and its OCI state. */
import { validateContainerId } from '../../../shared/protocol';
import type { OciState } from '../hooks';
import type { TrackedProcess } from '../registry';
import { notFound, precondition } from './checks';
import type { ContainerContext, ContainerRecord } from './context';
import { ociStateOf } from './oci-state';


export function getContainer(ctx: ContainerContext, id: unknown): ContainerRecord {
  const containerId = validateContainerId(id);
  const record = ctx.containers.get(containerId);
  if (!record) {
    if (ctx.creating.has(containerId)) throw precondition(`container ${containerId} is being created`);
    throw notFound(`container ${containerId} not found`);
  }
  return record;
}

export function getProcess(record: ContainerRecord, execId: string): TrackedProcess {
  if (execId === '') return record.init;
  const proc = record.execs.get(execId);
  if (!proc) {
    if (record.pendingExecs.has(execId)) throw precondition(`exec process ${execId} of container ${record.id} is being started`);
    throw notFound(`exec process ${execId} not found in container ${record.id}`);
  }
  return proc;
}

/**
 * The OCI state of `record` for its hooks: bundle = parent of the rootfs (upstream oci_state),
 * pid = the init's pid (also for "stopped": the pid it had).
 */
export function ociState(record: ContainerRecord, status: OciState['status']): OciState {
  return ociStateOf(record.id, record.oci, record.plan.rootfs, record.init.pid, status);
}
