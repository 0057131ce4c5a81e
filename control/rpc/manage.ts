/**
 * Running-container rpcs: PauseContainer, ResumeContainer, UpdateContainer, StatsContainer
 * (Kata agent rpc.rs do_pause_container / do_resume_container / do_update_container /
 * do_stats_container at 6e4d4c329a). The cgroup work is the helper's (cgroupFreeze,
 * cgroupUpdate, cgroupStats ops of helper/ops/container.ts).
 */
import type { google as gpb, grpc as pb } from '../../shared/generated/protos';
import { Code, StatusError, validateContainerId } from '../../shared/protocol';
import { cgroupStatsFromFiles } from '../cgroup-stats';
import { cgroupResourcesFromSpec } from '../oci/cgroups';
import type { Container } from '../sandbox/container';
import type { AgentCore } from './core';
import { interfaceStats } from './network';

type Empty = gpb.protobuf.Empty.$Properties;

/** Bound of the wait for a freeze/thaw to be reached, in ms. */
export const FREEZE_TIMEOUT_MS = 5000;

function lookup(core: AgentCore, id: unknown): Container {
  const containerId = validateContainerId(id);
  const c = core.sandbox.containers.get(containerId);
  if (!c) throw new StatusError(Code.NOT_FOUND, `container ${JSON.stringify(containerId)} not found`);
  if (c.removing) throw new StatusError(Code.FAILED_PRECONDITION, `container ${containerId} is being removed`);
  return c;
}

/** Run cgroup operations of one container one after another. */
function serialised<T>(c: Container, fn: () => Promise<T>): Promise<T> {
  const run = c.cgroupOp.then(fn, fn);
  c.cgroupOp = run.catch(() => undefined);
  return run;
}

/**
 * PauseContainer: freeze the container's cgroup and wait until frozen (bounded,
 * {@link FREEZE_TIMEOUT_MS}). NOT_FOUND for an unknown id; FAILED_PRECONDITION when the
 * container is not running (created, stopped, already paused, being removed) or has no cgroup;
 * DEADLINE_EXCEEDED when the freeze is not reached (it is undone).
 */
export async function pauseContainer(core: AgentCore, req: pb.PauseContainerRequest): Promise<Empty> {
  core.checkNotDestroyed();
  const c = lookup(core, req.container_id);
  return serialised(c, async () => {
    if (c.status !== 'running' || c.paused) {
      throw new StatusError(Code.FAILED_PRECONDITION, `container ${c.id} is ${c.paused ? 'paused' : c.status}, not running: cannot pause it`);
    }
    await core.callNoFds('cgroupFreeze', { containerId: c.id, frozen: true, timeoutMs: FREEZE_TIMEOUT_MS });
    c.paused = true;
    return {};
  });
}

/**
 * ResumeContainer: thaw the container's cgroup and wait until thawed. FAILED_PRECONDITION when
 * it is not paused; NOT_FOUND for an unknown id.
 */
export async function resumeContainer(core: AgentCore, req: pb.ResumeContainerRequest): Promise<Empty> {
  core.checkNotDestroyed();
  const c = lookup(core, req.container_id);
  return serialised(c, async () => {
    if (!c.paused) throw new StatusError(Code.FAILED_PRECONDITION, `container ${c.id} is ${c.status}, not paused: cannot resume it`);
    await core.callNoFds('cgroupFreeze', { containerId: c.id, frozen: false, timeoutMs: FREEZE_TIMEOUT_MS });
    c.paused = false;
    return {};
  });
}

/**
 * UpdateContainer: new LinuxResources for the container's cgroup, validated as at
 * CreateContainer (control/oci/cgroups.ts; INVALID_ARGUMENT naming the field) and applied by the
 * helper (every kind its cgroup manager enforces; Devices are not: docs/ARCHITECTURE.md).
 * No resources: nothing to do (as upstream). NOT_FOUND for an unknown id; FAILED_PRECONDITION
 * for a container without a cgroup of its own.
 */
export async function updateContainer(core: AgentCore, req: pb.UpdateContainerRequest): Promise<Empty> {
  core.checkNotDestroyed();
  const c = lookup(core, req.container_id);
  if (!req.resources) return {};
  const resources = cgroupResourcesFromSpec(req.resources);
  return serialised(c, async () => {
    await core.callNoFds('cgroupUpdate', { containerId: c.id, resources });
    return {};
  });
}

/**
 * StatsContainer: CgroupStats from the container's cgroup files (control/cgroup-stats.ts) and
 * NetworkStats of the guest's interfaces (the sandbox shares one network namespace; upstream
 * leaves network_stats empty). NOT_FOUND for an unknown id; FAILED_PRECONDITION without a
 * cgroup of its own. A failure to read the interfaces leaves network_stats empty (logged).
 */
export async function statsContainer(core: AgentCore, req: pb.StatsContainerRequest): Promise<pb.StatsContainerResponse.$Properties> {
  const c = lookup(core, req.container_id);
  const { files } = await core.callNoFds('cgroupStats', { containerId: c.id });
  let network_stats: pb.NetworkStats.$Properties[] = [];
  try {
    network_stats = (await interfaceStats(core)).map((i) => ({
      name: i.name,
      rx_bytes: i.rxBytes,
      rx_packets: i.rxPackets,
      rx_errors: i.rxErrors,
      rx_dropped: i.rxDropped,
      tx_bytes: i.txBytes,
      tx_packets: i.txPackets,
      tx_errors: i.txErrors,
      tx_dropped: i.txDropped,
    }));
  } catch (err) {
    core.log.warn({ err, container: c.id }, 'StatsContainer: interface counters unavailable');
  }
  return { cgroup_stats: cgroupStatsFromFiles(files), network_stats };
}
