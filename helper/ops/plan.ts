/**
 * Re-validation of the plans control sends (the helper trusts nothing that crosses the socket)
 * and their serialisation into kata-init's plan format (helper/native/KATA-INIT.md).
 *
 * Rules follow upstream Kata where it has them: rootfs (rustjail validator.rs `rootfs`: absolute,
 * existing directory, lexically clean path equal to its canonical path), mount destinations and
 * masked/readonly paths (rustjail mount.rs `check_paths`: absolute, no ".."), /proc protection
 * (mount.rs `check_proc_mount`), sysctl allow-list (validator.rs `sysctl`), env entries
 * (kata-sys-util validate.rs `valid_env`, but refused instead of skipped: control has already
 * sanitised them), hostname needs a uts namespace (validator.rs); capabilities are numbers 0..63
 * turned into masks (absent = every set empty), oomScoreAdj -1000..1000, a seccomp profile
 * ({@link validateSeccomp}; rustjail seccomp.rs: known actions, operators, architectures and the
 * three flags upstream accepts). kata-init applies the
 * /proc rule again to the symlink-resolved target (KATA-INIT.md `mount`). Every failure is a StatusError
 * INVALID_ARGUMENT naming the field and value, except a user namespace (UNIMPLEMENTED) and an
 * oversized plan (RESOURCE_EXHAUSTED).
 *
 * Facade: the code lives in helper/ops/plan/ (one module per plan area; writer.ts serialises).
 */
export { ALLOWED_MOUNT_TYPES, DEFAULT_PATH, FLAG_OPTIONS, HOST_NAME_MAX, MAX_ARGS, MAX_CAPABILITY, MAX_ENV, MAX_GROUPS, MAX_ID, MAX_MOUNTS, MAX_MOUNT_OPTIONS, MAX_PATH, MAX_PATH_LIST, MAX_PLAN_BYTES, MAX_STRING, MAX_SYSCTL, MS, OOM_SCORE_ADJ_MAX, OOM_SCORE_ADJ_MIN, PROPAGATION, RLIMITS } from './plan/limits';
export type { KernelNamespace } from './plan/limits';
export { HOST_NAMESPACES_OPTION } from './plan/types';
export type { HostCgroups, PlanCheckOptions, ValidCapabilities, ValidContainerPlan, ValidMount, ValidNamespace, ValidProcessPlan, ValidRlimit, ValidSeccomp } from './plan/types';
export { planPath, validateCapabilities, validateProcessPlan } from './plan/process';
export { kernelNamespaceName, validateNamespaces } from './plan/namespaces';
export { expandCgroupMount, parseMountOptions, readHostCgroups } from './plan/mounts';
export { validateSeccomp } from './plan/seccomp';
export { validateContainerPlan } from './plan/container';
export { PlanWriter, serializeCreatePlan, serializeExecPlan, serializeSandboxPlan } from './plan/writer';
export type { SeccompFilter } from './plan/writer';
