/**
 * What the caller gives containerPlanFromSpec besides the spec: the sandbox's namespaces and
 * the agent's settings ({@link ContainerPlanOptions}).
 */
import type { NamespacePlan } from '../../shared/protocol';
import type { OciWarn } from './common';

/** What the sandbox contributes to a container's namespaces. */
export interface SandboxNamespaceInfo {
  /** The sandbox's persistent namespaces (from the helper's createSandbox), e.g. ipc and uts. */
  namespaces: readonly NamespacePlan[];
  /** Path of the sandbox pid namespace (`/proc/<pid>/ns/pid` of the first container's init), or null. */
  pidns: string | null;
  /** The sandbox's hostname (CreateSandboxRequest.hostname; "" = none given). */
  hostname?: string;
}

/** Options of {@link containerPlanFromSpec}. */
export interface ContainerPlanOptions {
  /** CreateContainerRequest.sandbox_pidns: join the sandbox pid namespace instead of a new one. */
  sandboxPidns: boolean;
  sandbox: SandboxNamespaceInfo;
  /** Receives warnings: fields accepted but not enforced, unknown capability names. */
  warn?: OciWarn;
  /**
   * The container id: with it the plan gets the container's cgroup (control/oci/cgroups.ts:
   * Linux.CgroupsPath, or "/<id>" when empty, and Linux.Resources). Absent: no cgroup plan.
   */
  containerId?: string;
  /** Parent of container cgroups (agent config; "" = the path as the runtime gives it, as upstream). */
  cgroupParent?: string;
  /**
   * The helper enforces device cgroup rules (CreateSandboxResult.deviceCgroup). With it and a
   * containerId, linux.resources.devices goes into the cgroup plan after the default rules and
   * the CAP_MKNOD interim does not apply (ContainerPlan.devicesEnforced).
   */
  deviceCgroup?: boolean;
  /** Host-namespace mode (see control/oci.ts's file comment); default off. */
  allowHostNamespaces?: boolean;
}
