/**
 * OCI spec (the agent protocol's `grpc.Spec`, protos/oci.proto) → the helper's plans
 * ({@link ContainerPlan}, {@link ProcessPlan} in shared/protocol.ts), with validation.
 *
 * Everything here is pure: no I/O, no state. Every rejection is a StatusError INVALID_ARGUMENT
 * whose message names the field (in proto spelling, e.g. `OCI.Linux.Sysctl["vm.swappiness"]`)
 * and the offending value; a feature we cannot honour yet is UNIMPLEMENTED rather than
 * silently dropped.
 *
 * Sources: OCI runtime-spec config.md / config-linux.md; Kata rustjail validator.rs (sysctl
 * allow-list, hostname/masked-path namespace rules, id mappings), kata-sys-util validate.rs
 * valid_env, rustjail mount.rs (mount destination and masked/readonly path rules), Kata agent
 * rpc.rs update_container_namespaces (namespace rewrite).
 *
 * What happens to each OCI field that restricts the container (docs/ARCHITECTURE.md "What the
 * OCI spec gets"):
 *  - enforced: namespaces, mounts, masked/readonly paths, sysctl, rlimits, user/groups,
 *    noNewPrivileges, Process.Capabilities (mapped to numbers here, applied by kata-init),
 *    Process.OOMScoreAdj, Linux.Seccomp ({@link seccompFromOci}; compiled by the helper with
 *    libseccomp, loaded by kata-init for the init and every exec);
 *  - Hooks → ContainerPlan.hooks ({@link hooksFromOci}; run by the helper);
 *  - refused (UNIMPLEMENTED naming the field): the seccomp action
 *    SCMP_ACT_NOTIFY, joining an existing user namespace (unless host-namespace mode);
 *  - Process.SelinuxLabel and Linux.MountLabel are carried; the helper applies them when the
 *    guest has SELinux and drops them with a warning otherwise;
 *  - a new user namespace with Linux.UIDMappings/GIDMappings → ContainerPlan.idMappings
 *    ({@link idMappingsFromOci}; the helper writes the maps);
 *  - cgroups: Linux.CgroupsPath and Linux.Resources become ContainerPlan.cgroup
 *    (control/oci/cgroups.ts; enforced by helper/ops/cgroup.ts); Resources.Devices only when
 *    `options.deviceCgroup` (the helper has a v1 devices hierarchy or cgroup v2 device programs);
 *  - Linux.Devices → ContainerPlan.devices ({@link devicesFromOci}; kata-init creates them);
 *  - accepted, not enforced, logged through `warn` and listed in `ContainerPlan.unenforced`
 *    ({@link unenforcedFields}): Linux.Resources.Devices without a device cgroup (see the
 *    interim below), Linux.IntelRdt, Process.ApparmorProfile
 *    (upstream ignores it too: the guest has no AppArmor);
 *  - device cgroup interim: with no device cgroup, linux.resources.devices cannot be enforced,
 *    so unless its rules allow every device ({@link devicesAllowAll}) CAP_MKNOD is removed
 *    from every capability set of the container and of its execs (container root cannot mknod
 *    a guest block device). The Kata runtime strips resources.devices before sending the spec
 *    (kata_agent.go constrainGRPCSpec), so under Kata containers never have CAP_MKNOD here.
 *
 * Host-namespace mode (ContainerPlanOptions.allowHostNamespaces: agent --allow-host-namespaces /
 * KATA_AGENT_ALLOW_HOST_NAMESPACES=1, off by default; runc semantics for stand-alone OCI use,
 * threat model in docs/ARCHITECTURE.md "Host namespaces"): a spec may omit any namespace, the
 * container then shares the agent's (the helper's), a mount namespace included (kata-init
 * chroots instead of pivot_root; masked/read-only paths, a read-only root and a rootfs
 * propagation are then refused, as runc refuses the first two); a namespace entry with a path is
 * joined as given, a user namespace too (without UIDMappings/GIDMappings). The Kata rewrite
 * (ipc/uts → the sandbox's, {@link rewriteNamespaces}) applies only to entries without a path: the
 * Kata runtime empties every path (kata_agent.go constrainGRPCSpec), so a path comes only from a
 * non-Kata client, which means that namespace. Off: a path other than the sandbox's is refused by
 * the helper, a missing mount namespace here, a missing pid namespace means a new one.
 * Annotations are not read. HOME is not derived here (control must not read the container's
 * /etc/passwd): kata-init sets it from the container's own /etc/passwd when the env has none
 * (helper/native/KATA-INIT.md step 8a).
 *
 * This file is the facade: the code lives in control/oci/, one module per spec area
 * (container.ts the entry point; process, capabilities, namespaces, id-mappings, mounts,
 * sysctl, devices, cgroups, seccomp, hooks, unenforced; options.ts the caller's options,
 * common.ts the shared checks).
 */
export { CAP_MKNOD, CAPABILITIES, capabilitiesFromOci, emptyCapabilities } from './oci/capabilities';
export type { OciWarn } from './oci/common';
export { containerPlanFromSpec, HOST_NAME_MAX } from './oci/container';
export { devicesAllowAll, devicesFromOci, MAX_DEVICES } from './oci/devices';
export { HOOK_FIELDS, hooksFromOci, MAX_HOOK_TIMEOUT_SEC, MAX_HOOKS } from './oci/hooks';
export { idMappingsFromOci } from './oci/id-mappings';
export { ROOTFS_PROPAGATIONS } from './oci/mounts';
export { HOST_NAMESPACES_OPTION, NAMESPACE_TYPES, rewriteNamespaces } from './oci/namespaces';
export type { ContainerPlanOptions, SandboxNamespaceInfo } from './oci/options';
export { OOM_SCORE_ADJ_MAX, OOM_SCORE_ADJ_MIN, processPlanFromOci, RLIMIT_TYPES, sanitizeEnv, type ExecContext } from './oci/process';
export { seccompFromOci } from './oci/seccomp';
export { IPC_SYSCTLS, validateSysctl } from './oci/sysctl';
export { unenforcedFields } from './oci/unenforced';
