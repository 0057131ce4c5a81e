/** The shapes of re-validated plans (what helper/ops/plan/*.ts validators return and writer.ts serialises). */
import type { CgroupPlan, DeviceNodePlan, HooksPlan, IdMappingsPlan, ProcessPlan, SeccompAction, SeccompArgPlan, SeccompSyscallPlan } from '../../../shared/protocol';
import type { KernelNamespace } from './limits';

// ---------------------------------------------------------------------------------------------
// Validated shapes

export interface ValidRlimit {
  name: string;
  resource: number;
  /** Decimal text; "-1" = RLIM_INFINITY. */
  soft: string;
  hard: string;
}

/**
 * Capability sets as 64-bit masks (bit n = capability n), in kata-init's `caps` record order.
 * Decimal text would be the same numbers; bigint keeps bits 53..63 exact.
 */
export interface ValidCapabilities {
  bounding: bigint;
  effective: bigint;
  permitted: bigint;
  inheritable: bigint;
  ambient: bigint;
}

/**
 * A re-validated ProcessPlan whose rlimits are resolved to kernel resource numbers and whose
 * capability sets are masks (absent capabilities = every set empty).
 */
export type ValidProcessPlan = Omit<ProcessPlan, 'rlimits' | 'capabilities'> & {
  rlimits: ValidRlimit[];
  capabilities: ValidCapabilities;
};

export interface ValidNamespace {
  type: KernelNamespace;
  /** "" = a new namespace; else the file to setns to. */
  path: string;
}

export interface ValidMount {
  source: string;
  /** Absolute, normalised path inside the container. */
  destination: string;
  fstype: string;
  flags: number;
  data: string;
  bind: boolean;
  /** Propagation changes to apply after all mounts (MS_* with MS_REC where asked). */
  propagation: number[];
}

export interface ValidContainerPlan {
  rootfs: string;
  readonly: boolean;
  hostname: string;
  namespaces: ValidNamespace[];
  /** The id mappings of the container's new user namespace (written by the launcher). */
  idMappings?: IdMappingsPlan;
  /** SELinux context of the container's mounts (helper/ops/selinux.ts applies or drops it). */
  mountLabel?: string;
  mounts: ValidMount[];
  maskedPaths: string[];
  readonlyPaths: string[];
  sysctl: [string, string][];
  /** MS_* flags for "/" before anything else. */
  rootfsPropagation: number;
  /**
   * Validated with the helper's host-namespace switch on (kata-init `hostns 1`): the plan may
   * lack a mount namespace (kata-init chroots) or join a mount or user namespace by path.
   */
  hostns?: boolean;
  process: ValidProcessPlan;
  /** The container's seccomp profile (compiled by the launcher, helper/ops/seccomp.ts); absent = none. */
  seccomp?: ValidSeccomp;
  /**
   * Mount everything but the /dev tmpfs and devpts `nodev` (kata-init `nodev` record): without a
   * device cgroup, unless the spec's device rules allow every device, device nodes that the
   * image ships (or a bind brings) must not be openable. True unless plan.devicesAllowAll or the
   * cgroup plan carries device rules (cgroup.resources.devices, enforced by the device cgroup).
   */
  nodev: boolean;
  /** The container's cgroup (re-validated, shared/cgroup.ts); absent: none of its own. */
  cgroup?: CgroupPlan;
  /** OCI linux.devices to create (kata-init `device` records, after the mounts). */
  devices: DeviceNodePlan[];
  /** The spec's OCI hooks (re-validated; every kind present, possibly empty). */
  hooks: Required<HooksPlan>;
  /**
   * The OCI state JSON of the createContainer and startContainer hooks, split around the pid
   * (kata-init's `hookstate`). Not from the wire: set by ContainerBackend from the container's
   * id, OCI version, annotations and bundle.
   */
  hookStates?: Partial<Record<'createContainer' | 'startContainer', [string, string]>>;
  /**
   * kata-init stops before pivot_root (`runtimehooks`) for the helper to run the prestart and
   * createRuntime hooks. Not from the wire: set by ContainerBackend.
   */
  runtimeHooksBeforePivot?: boolean;
}

export interface PlanCheckOptions {
  /**
   * Check the host side of paths: rootfs exists, is a directory and has no symlink; bind
   * sources exist (and are canonicalised); namespace files exist and are allowed. The mock
   * helper turns this off (only the shape of paths is checked).
   */
  hostChecks: boolean;
  /** With hostChecks: may a container join namespace `type` at `path`? Default: any existing file. */
  namespacePathAllowed?: (type: KernelNamespace, nsPath: string) => boolean;
  /** With hostChecks: the host's cgroup layout (default: read from the host). */
  hostCgroups?: HostCgroups;
  /**
   * The helper's own host-namespace switch (helper --allow-host-namespaces,
   * KATA_AGENT_ALLOW_HOST_NAMESPACES=1; docs/ARCHITECTURE.md "Host namespaces"): a plan may omit
   * the mount and pid namespaces (the container shares the helper's) and may join any namespace
   * file by path, a user namespace included. Off (default): what control asks makes no difference.
   */
  allowHostNamespaces?: boolean;
}

/** How a refusal names the helper's switch for host namespaces. */
export const HOST_NAMESPACES_OPTION = 'the helper\'s --allow-host-namespaces (KATA_AGENT_ALLOW_HOST_NAMESPACES=1) is off';

/** The host's cgroup layout, as far as container `cgroup` mounts need it. */
export interface HostCgroups {
  /** cgroup v2 only (/sys/fs/cgroup/cgroup.controllers exists). */
  unified: boolean;
  /** Mount points of the v1 hierarchies (fstype cgroup), e.g. /sys/fs/cgroup/memory. */
  v1: string[];
}

/** A re-validated {@link SeccompPlan}: arguments as bigints (unsigned 64-bit), duplicates merged. */
export interface ValidSeccomp {
  defaultAction: SeccompAction;
  defaultErrnoRet?: number;
  architectures: string[];
  flags: string[];
  syscalls: (Omit<SeccompSyscallPlan, 'args'> & { args: (Omit<SeccompArgPlan, 'value' | 'valueTwo'> & { value: bigint; valueTwo: bigint })[] })[];
}
