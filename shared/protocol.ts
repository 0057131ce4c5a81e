/**
 * The helper protocol: what the unprivileged control plane asks of the privileged helper.
 *
 * Transport: one msgpack value per SOCK_SEQPACKET packet (see shared/channel.ts); fds travel as
 * SCM_RIGHTS of that packet, and a message's `fds` field names them in order.
 *
 *   request   {id, op, args}
 *   response  {id, ok: true, result, fds?: string[]}   or   {id, ok: false, error: {code, message}}
 *   event     {event, ...}
 *
 * Error codes are gRPC status codes (@grpc/grpc-js `status`), so control passes them through to
 * the ttRPC caller unchanged. The helper re-validates every argument itself.
 */

/**
 * Bumped on any incompatible change; `hello` refuses a mismatch. 2: ContainerPlan.seccomp (a
 * helper of version 1 would ignore the field and run the container without its filter).
 * 3: storage, device, DNS and kernel-module ops (see "Storages and devices" below).
 */
export const HELPER_PROTOCOL_VERSION = 3;

/**
 * Largest packet either side sends or accepts, in bytes (requests carry OCI plans). A
 * SOCK_SEQPACKET packet cannot exceed the sender's socket send buffer, and the unprivileged
 * control plane cannot raise SO_SNDBUF past net.core.wmem_max (208 KiB by default), so the
 * limit sits just below that. A plan this large would be an OCI spec with thousands of env
 * entries or mounts; it is refused with RESOURCE_EXHAUSTED, never truncated.
 */
export const HELPER_MAX_PACKET = 192 * 1024;

/** Default path of the helper's listening socket. */
export const DEFAULT_HELPER_SOCKET = '/run/kata-agent/helper.sock';

/** gRPC status codes used on the helper protocol (numbers identical to google.rpc.Code). */
export const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
} as const;
export type StatusCode = (typeof Code)[keyof typeof Code];

/** An error carrying a gRPC status code; thrown by both processes, mapped to ttRPC statuses. */
export class StatusError extends Error {
  constructor(
    public readonly code: StatusCode,
    message: string,
  ) {
    super(message);
    this.name = 'StatusError';
  }
}

/** StatusError INVALID_ARGUMENT with `message` (which names the bad field and value). */
export function invalidArgument(message: string): StatusError {
  return new StatusError(Code.INVALID_ARGUMENT, message);
}

// ---------------------------------------------------------------------------------------------
// Plans: the validated, OCI-derived description of a process or container, built by control
// from the OCI spec and re-validated by the helper.

/** Linux namespace types we handle (OCI runtime-spec config-linux.md#namespaces). */
export type NamespaceType = 'pid' | 'network' | 'mount' | 'ipc' | 'uts' | 'cgroup' | 'user';

/** One namespace: `path` empty = create a new one; non-empty = join that /proc/.../ns/* or bind file. */
export interface NamespacePlan {
  type: NamespaceType;
  path: string;
}

/** One user-namespace id mapping (OCI linux.uidMappings/gidMappings entry; user_namespaces(7)). */
export interface IdMappingPlan {
  /** First id inside the container. */
  containerId: number;
  /** First id in the guest (the helper's user namespace). */
  hostId: number;
  /** Number of ids, ≥ 1. */
  size: number;
}

/** The id mappings of a container with a new user namespace (ContainerPlan.idMappings). */
export interface IdMappingsPlan {
  uid: IdMappingPlan[];
  gid: IdMappingPlan[];
}

/** One OCI mount (config.md#mounts), unchanged from the spec. */
export interface MountPlan {
  destination: string;
  type: string;
  source: string;
  options: string[];
}

/** Resource limits (config.md#posix-process rlimits). */
export interface RlimitPlan {
  type: string;
  hard: number;
  soft: number;
}

/**
 * Capability sets of a process (OCI `process.capabilities`, config.md#linux-process), as Linux
 * capability numbers (capability.h: CAP_CHOWN 0 ... CAP_CHECKPOINT_RESTORE 40), sorted, no
 * duplicates. Control maps the OCI names; the helper checks each number is 0..63.
 */
export interface CapabilitiesPlan {
  bounding: number[];
  effective: number[];
  inheritable: number[];
  permitted: number[];
  ambient: number[];
}

/** A process to run (OCI `process`, config.md#process). */
export interface ProcessPlan {
  args: string[];
  /** "KEY=VALUE" entries, already sanitised by control (kata valid_env). */
  env: string[];
  cwd: string;
  uid: number;
  gid: number;
  additionalGids: number[];
  terminal: boolean;
  noNewPrivileges: boolean;
  rlimits: RlimitPlan[];
  /**
   * The process's capability sets. Control always sets it (for a container's init: the OCI
   * process.capabilities, or every set empty when the spec has none, as runc; for an exec
   * without capabilities: the container init's sets). Absent here means every set empty: the
   * helper never lets a process keep its own full set by omission.
   */
  capabilities?: CapabilitiesPlan;
  /**
   * OCI process.selinuxLabel: the SELinux context the program is exec'd with (kata-init writes
   * /proc/thread-self/attr/exec). The helper applies it when the guest has SELinux, else drops
   * it with a warning.
   */
  selinuxLabel?: string;
  /**
   * OCI process.oomScoreAdj, -1000..1000, written to /proc/self/oom_score_adj before anything
   * else (Kata rustjail do_init_child). Control always sets it (0 when the spec has none, as
   * upstream). Absent: the helper's own value is inherited.
   */
  oomScoreAdj?: number;
}

/**
 * Seccomp action names (OCI config-linux.md#seccomp, libseccomp's SCMP_ACT_*). SCMP_ACT_KILL is
 * SCMP_ACT_KILL_THREAD. SCMP_ACT_NOTIFY is a valid OCI value that plans never carry: it needs a
 * user-space listener, which this agent does not have (control refuses it as UNIMPLEMENTED).
 */
export const SECCOMP_ACTIONS = [
  'SCMP_ACT_KILL',
  'SCMP_ACT_KILL_PROCESS',
  'SCMP_ACT_KILL_THREAD',
  'SCMP_ACT_TRAP',
  'SCMP_ACT_ERRNO',
  'SCMP_ACT_TRACE',
  'SCMP_ACT_ALLOW',
  'SCMP_ACT_LOG',
] as const;
export type SeccompAction = (typeof SECCOMP_ACTIONS)[number];

/** Argument comparison operators (OCI config-linux.md#seccomp, libseccomp's SCMP_CMP_*). */
export const SECCOMP_OPS = [
  'SCMP_CMP_NE',
  'SCMP_CMP_LT',
  'SCMP_CMP_LE',
  'SCMP_CMP_EQ',
  'SCMP_CMP_GE',
  'SCMP_CMP_GT',
  'SCMP_CMP_MASKED_EQ',
] as const;
export type SeccompOp = (typeof SECCOMP_OPS)[number];

/**
 * Architecture names of OCI config-linux.md#seccomp (libseccomp's SCMP_ARCH_*). The helper's
 * libseccomp may not know the newest ones (LOONGARCH64, M68K, SH, SHEB need libseccomp 2.5.5 or
 * 2.6): such a profile fails to compile with INVALID_ARGUMENT.
 */
export const SECCOMP_ARCHES = [
  'SCMP_ARCH_X86',
  'SCMP_ARCH_X86_64',
  'SCMP_ARCH_X32',
  'SCMP_ARCH_ARM',
  'SCMP_ARCH_AARCH64',
  'SCMP_ARCH_MIPS',
  'SCMP_ARCH_MIPS64',
  'SCMP_ARCH_MIPS64N32',
  'SCMP_ARCH_MIPSEL',
  'SCMP_ARCH_MIPSEL64',
  'SCMP_ARCH_MIPSEL64N32',
  'SCMP_ARCH_PPC',
  'SCMP_ARCH_PPC64',
  'SCMP_ARCH_PPC64LE',
  'SCMP_ARCH_S390',
  'SCMP_ARCH_S390X',
  'SCMP_ARCH_PARISC',
  'SCMP_ARCH_PARISC64',
  'SCMP_ARCH_RISCV64',
  'SCMP_ARCH_LOONGARCH64',
  'SCMP_ARCH_M68K',
  'SCMP_ARCH_SH',
  'SCMP_ARCH_SHEB',
] as const;

/**
 * Seccomp filter flags accepted (upstream rustjail seccomp.rs: exactly these three; any other
 * flag of OCI config-linux.md#seccomp, e.g. SECCOMP_FILTER_FLAG_NEW_LISTENER, is refused).
 */
export const SECCOMP_FLAGS = ['SECCOMP_FILTER_FLAG_TSYNC', 'SECCOMP_FILTER_FLAG_LOG', 'SECCOMP_FILTER_FLAG_SPEC_ALLOW'] as const;

/**
 * Size bounds of a seccomp profile, checked by control and again by the helper: rules, names
 * per rule, names in all, bytes per name, arguments per rule (libseccomp and the kernel compare
 * at most 6), architectures. Errno values are 0..65535 (SECCOMP_RET_DATA is 16 bits; the
 * kernel caps an errno at 4095).
 */
export const SECCOMP_LIMITS = {
  syscalls: 4096,
  namesPerRule: 4096,
  names: 16384,
  nameBytes: 256,
  args: 6,
  architectures: 32,
  errno: 65535,
} as const;

/** One argument comparison of a seccomp rule (OCI linux.seccomp.syscalls[].args[]). */
export interface SeccompArgPlan {
  /** Syscall argument index, 0..5. */
  index: number;
  /**
   * The value compared with; for SCMP_CMP_MASKED_EQ the mask (as OCI and upstream: `value` is
   * the mask, `valueTwo` the datum the masked argument must equal). Unsigned 64-bit: a number
   * (a safe integer) or, from the helper protocol, a bigint.
   */
  value: number | bigint;
  /** The datum of SCMP_CMP_MASKED_EQ; ignored by the other operators. */
  valueTwo: number | bigint;
  op: SeccompOp;
}

/** One seccomp rule (OCI linux.seccomp.syscalls[]). */
export interface SeccompSyscallPlan {
  /** Syscall names; names this guest's libseccomp does not know are skipped (field case B23). */
  names: string[];
  action: SeccompAction;
  /**
   * The errno of SCMP_ACT_ERRNO (the message of SCMP_ACT_TRACE), 0..65535; absent = EPERM (1),
   * as upstream. Ignored by the other actions.
   */
  errnoRet?: number;
  /** All must match for the rule to apply (at most 6). */
  args: SeccompArgPlan[];
}

/**
 * The container's seccomp profile (OCI linux.seccomp, config-linux.md#seccomp), validated by
 * control and again by the helper, which compiles it to BPF with libseccomp
 * (helper/ops/seccomp.ts) and has kata-init load it for the container's init and for every exec
 * process (KATA-INIT.md `seccomp`). Upstream: rustjail seccomp.rs.
 */
export interface SeccompPlan {
  defaultAction: SeccompAction;
  /** errno of a SCMP_ACT_ERRNO default action (absent = EPERM: the agent protocol has no field for it). */
  defaultErrnoRet?: number;
  /** Extra architectures (the native one is always in the filter); names from {@link SECCOMP_ARCHES}. */
  architectures: string[];
  /** Names from {@link SECCOMP_FLAGS}. */
  flags: string[];
  syscalls: SeccompSyscallPlan[];
}

/** A container: its rootfs, namespaces, mounts and init process. */
export interface ContainerPlan {
  /** Absolute path of the rootfs directory in the guest (OCI root.path, resolved by control). */
  rootfs: string;
  readonly: boolean;
  hostname: string;
  namespaces: NamespacePlan[];
  mounts: MountPlan[];
  process: ProcessPlan;
  /** OCI linux.maskedPaths / readonlyPaths. */
  maskedPaths: string[];
  readonlyPaths: string[];
  /** OCI linux.sysctl. */
  sysctl: Record<string, string>;
  /** OCI linux.rootfsPropagation ("" = rslave). */
  rootfsPropagation: string;
  /**
   * OCI linux.seccomp: applied to the init and to every exec process of the container (as runc
   * and Kata do: an OCI process has no profile of its own). Absent: no filter.
   */
  seccomp?: SeccompPlan;
  /**
   * Control-side facts kept with the plan for later execs and for reporting; the helper ignores
   * both. `devicesAllowAll`: the spec's linux.resources.devices rules allow every device (an
   * allow-all rule not followed by a deny rule). Without a device cgroup, CAP_MKNOD is removed
   * from every capability set of the container and of its execs unless this is true.
   */
  devicesAllowAll?: boolean;
  /**
   * Control-side fact: the spec's device rules go to the device cgroup
   * (cgroup.resources.devices), so CAP_MKNOD is not withheld from the container and its execs.
   * The helper does not read it: it derives its own `nodev` decision from the presence of
   * cgroup.resources.devices, which it enforces or refuses (FAILED_PRECONDITION).
   */
  devicesEnforced?: boolean;
  /**
   * OCI fields the spec sets that are accepted but not enforced (e.g.
   * "OCI.Linux.Resources.Memory.Limit", "OCI.Linux.CgroupsPath", "OCI.Process.ApparmorProfile"),
   * see control/oci.ts unenforcedFields.
   */
  unenforced?: string[];
  /**
   * With a new user namespace (a `user` entry in `namespaces`, path ""): its uid and gid
   * mappings, which the helper writes to kata-init's /proc/<pid>/uid_map and gid_map. Required
   * then, refused otherwise (INVALID_ARGUMENT).
   */
  idMappings?: IdMappingsPlan;
  /**
   * OCI linux.mountLabel: the SELinux context of the container's tmpfs/devpts/mqueue mounts
   * (mount option context="..."), applied when the guest has SELinux, else dropped with a warning.
   */
  mountLabel?: string;
  /** The container's cgroup (shared/protocol.ts CgroupPlan); absent: the helper's own cgroups. */
  cgroup?: CgroupPlan;
  /** OCI linux.devices: nodes kata-init creates in the container (after the mounts). */
  devices?: DeviceNodePlan[];
  /** OCI hooks the helper runs (guest hooks are added by the helper itself). */
  hooks?: HooksPlan;
}

/** One OCI hook (config.md#posix-platform-hooks). */
export interface HookPlan {
  /** Absolute path of the executable, in the guest (the helper's namespaces). */
  path: string;
  /** argv, argv[0] included; empty = [path]. */
  args: string[];
  /** The whole environment, "KEY=VALUE". */
  env: string[];
  /** Seconds, 1..3600; absent = 10 (kata-sys-util DEFAULT_HOOK_TIMEOUT_SEC). */
  timeoutSec?: number;
}

/**
 * The OCI hooks of a container. The helper runs prestart, createRuntime, poststart and poststop
 * in its own (the runtime's) namespaces: prestart and createRuntime while kata-init waits after the container's mounts, before pivot_root
 * (fail: the container is removed), poststart after StartContainer, poststop after removal
 * (failures logged). kata-init runs createContainer (in the container's mount namespace after
 * its mounts, before pivot_root; fail: CreateContainer fails) and startContainer (in the
 * container's namespaces after StartContainer's go, before the program's execve; fail:
 * StartContainer fails); KATA-INIT.md `hook`.
 */
export interface HooksPlan {
  prestart?: HookPlan[];
  createRuntime?: HookPlan[];
  createContainer?: HookPlan[];
  startContainer?: HookPlan[];
  poststart?: HookPlan[];
  poststop?: HookPlan[];
}

/**
 * A device node to create in the container (OCI config-linux.md#devices). kata-init mknods it
 * (then chown/chmod); when mknod is refused it bind-mounts the guest's node at the same path.
 */
export interface DeviceNodePlan {
  /** Container path below /dev, absolute, no "..". */
  path: string;
  /** "c" (or "u"), "b" or "p" (a FIFO). */
  type: 'c' | 'u' | 'b' | 'p';
  /** 0..2^32-1 (0 for "p"). */
  major: number;
  minor: number;
  /** Permission bits, 0..0o7777. */
  fileMode: number;
  uid: number;
  gid: number;
}

// ---------------------------------------------------------------------------------------------
// Operations: op name → [args, result].

export interface HelloArgs {
  version: number;
}
export interface HelloResult {
  version: number;
  /** Helper's pid (for the debug endpoint). */
  pid: number;
}

/**
 * Liveness probe: answered by the helper's protocol server itself (no backend work), so an
 * answer proves that the helper's event loop runs. Control pings when a call takes long or
 * timed out (control/helper-liveness.ts). Any answer counts as alive, even an error: a helper
 * that predates `ping` answers UNIMPLEMENTED, which proves the same, so the op needs no
 * protocol version bump.
 */
export type PingArgs = Record<string, never>;
export interface PingResult {
  /** Helper's pid. */
  pid: number;
}

export interface CreateSandboxArgs {
  sandboxId: string;
  hostname: string;
  /**
   * CreateSandboxRequest.guest_hook_path: a guest directory whose prestart/, poststart/ and
   * poststop/ subdirectories hold OCI hooks run for every container (helper/ops/hooks.ts).
   * Absent or "": none. Absolute, no NUL, no "..".
   */
  guestHookPath?: string;
}
export interface CreateSandboxResult {
  /** Paths of the sandbox's persistent namespaces that containers join (ipc, uts). */
  namespaces: NamespacePlan[];
  /**
   * The helper enforces device cgroup rules (a v1 devices hierarchy, or cgroup v2 device programs): control then
   * sends linux.resources.devices in ContainerPlan.cgroup and keeps CAP_MKNOD as the spec asks.
   * Absent (an older helper) = false.
   */
  deviceCgroup?: boolean;
}

export type DestroySandboxArgs = Record<string, never>;
export type DestroySandboxResult = Record<string, never>;

export interface CreateContainerArgs {
  containerId: string;
  plan: ContainerPlan;
  /**
   * What the OCI state given to hooks needs from the spec (runtime-spec runtime.md#state):
   * `version` (OCI.Version, at most 256 bytes) and `annotations` (at most 1024 entries). Absent:
   * version "" and no annotations. The bundle is the parent of plan.rootfs, as upstream.
   */
  oci?: { version: string; annotations: Record<string, string> };
}
/**
 * The init process is set up and blocked until startContainer. fds (in this order, named by
 * the response's `fds`): "stdin" (write end), "stdout" (read end), "stderr" (read end) without a
 * terminal; "pty" (the master) with one.
 */
export interface CreateContainerResult {
  pid: number;
}

export interface StartContainerArgs {
  containerId: string;
}
export type StartContainerResult = Record<string, never>;

export interface ExecProcessArgs {
  containerId: string;
  execId: string;
  process: ProcessPlan;
}
/** fds as for createContainer. */
export interface ExecProcessResult {
  pid: number;
}

export interface SignalProcessArgs {
  containerId: string;
  /** "" = the init process. */
  execId: string;
  signal: number;
  /** Also signal every other process of the container. */
  all: boolean;
}
export type SignalProcessResult = Record<string, never>;

export interface RemoveContainerArgs {
  containerId: string;
  /** How long to wait for the container's processes to die after SIGKILL, in ms. */
  timeoutMs: number;
  /**
   * Once the container is removed, also release the storages it owns, as `releaseStorages
   * {owner: containerId}` would (one round trip instead of two on every RemoveContainer).
   * Default false.
   */
  releaseStorages?: boolean;
}
export type RemoveContainerResult = Record<string, never>;

/**
 * Close the stdin of a process. The helper keeps its own copy of every parent stdio end (so a
 * restarted control plane can get them back), so closing control's copy alone would never give
 * the process EOF: CloseStdin must reach the helper too.
 */
export interface CloseStdinArgs {
  containerId: string;
  execId: string;
}
export type CloseStdinResult = Record<string, never>;

/**
 * Forget an exited exec process whose status control has delivered (after WaitProcess): the
 * helper closes its copies of the process's stdio fds and drops it from its state.
 * FAILED_PRECONDITION if the process has not exited.
 */
export interface ReleaseProcessArgs {
  containerId: string;
  execId: string;
}
export type ReleaseProcessResult = Record<string, never>;

/**
 * Snapshot of the helper's containers and processes, for a restarted control plane, one page at
 * a time (docs/ARCHITECTURE.md "Restart and adoption"): a page holds at most one container
 * record (with its plan) and at most {@link STATE_PAGE_PROCESSES} processes whose fds fit one
 * packet; the processes of a container follow its record, on the same page or the next ones.
 * Ask again with `cursor` = the page's `next` until a page comes without `next`.
 */
export interface StateArgs {
  /** Ask for the parent stdio fds of live processes too. */
  withFds: boolean;
  /** Where the page starts (the previous page's `next`; default 0, the first page). */
  cursor?: number;
}
/** Most processes in one `state` page. */
export const STATE_PAGE_PROCESSES = 256;
export interface ProcessState {
  containerId: string;
  execId: string;
  pid: number;
  exited: boolean;
  exitStatus: number | null;
  /** Names of the fds sent for this process, in packet order (e.g. "stdin"). */
  fds: string[];
  /** Whether the process has a terminal (its stdio is one pty master). */
  terminal?: boolean;
}
export interface ContainerState {
  containerId: string;
  status: 'created' | 'running' | 'stopped';
  pid: number;
  /** The plan as control sent it in createContainer (a restarted control plane needs it for execs). */
  plan?: unknown;
}
/** The sandbox as the helper knows it (absent: no sandbox created). */
export interface SandboxState {
  sandboxId: string;
  hostname: string;
  namespaces: NamespacePlan[];
  /** What createSandbox answered (CreateSandboxResult.deviceCgroup): device rules are enforced. */
  deviceCgroup?: boolean;
}
export interface StateResult {
  containers: ContainerState[];
  processes: ProcessState[];
  /** Cursor of the next page; absent on the last page. */
  next?: number;
  /** On the first page (cursor 0) when a sandbox exists. */
  sandbox?: SandboxState;
  /** On the first page: the OOM events not acked yet (ackOomEvents), oldest first. */
  oomEvents?: { containerId: string; seq: number }[];
}

/**
 * The policy control enforces (SetPolicy), kept by the helper so that a restarted control plane
 * enforces it again (docs/ARCHITECTURE.md "Restart and adoption"). The helper keeps the bytes,
 * control parses them. A document larger than one packet travels in chunks of at most
 * {@link KEPT_POLICY_CHUNK_BYTES}: offset 0 starts a new upload, each chunk continues at the
 * bytes received so far, `last` replaces the kept document with the upload.
 */
export const KEPT_POLICY_MAX_BYTES = 1024 * 1024;
/** Most bytes of a kept policy per keepPolicy / keptPolicy message. */
export const KEPT_POLICY_CHUNK_BYTES = 128 * 1024;
export interface KeepPolicyArgs {
  /** Where `data` starts in the document, in bytes (0 starts a new upload). */
  offset: number;
  data: Uint8Array;
  /** The document ends with this chunk: the helper keeps it from now on. */
  last: boolean;
}
export interface KeepPolicyResult {
  /** Whether the document is now kept (true on the last chunk). */
  kept: boolean;
}
export interface KeptPolicyArgs {
  /** Where to read, in bytes. */
  offset: number;
}
export interface KeptPolicyResult {
  /** The kept document's size in bytes; null when no policy was ever kept. */
  total: number | null;
  /** At most KEPT_POLICY_CHUNK_BYTES from `offset`. */
  data: Uint8Array;
}

// ---------------------------------------------------------------------------------------------
// Storages and devices (Kata agent storage/*, device.rs, network.rs setup_guest_dns).

/** Storage drivers (upstream device.rs DRIVER_*_TYPE names). */
export const STORAGE_DRIVERS = [
  '9p',
  'virtio-fs',
  'blk',
  'mmioblk',
  'scsi',
  'nvdimm',
  'blk-ccw',
  'ephemeral',
  'local',
  'overlayfs',
  'watchable-bind',
] as const;
export type StorageDriver = (typeof STORAGE_DRIVERS)[number];

/** One storage (agent.proto Storage), as control validated it; the helper re-validates. */
export interface StoragePlan {
  driver: StorageDriver;
  driverOptions: string[];
  /** A tag (9p, virtio-fs), a device reference (blk: PCI path or /dev name), a path (watchable-bind), or a word ("tmpfs"). */
  source: string;
  fstype: string;
  options: string[];
  /** Absolute path below the helper's Kata directory (default /run/kata-containers); a trailing "/" is allowed. */
  mountPoint: string;
  /** Recursive group ownership after mounting (agent.proto FSGroup); absent = none. */
  fsGroup?: { gid: number; onRootMismatch: boolean };
}

/**
 * Add storages for `owner` ("" = the sandbox, else a container id). Storages are shared by
 * mount point with a reference count (the first user sets it up). Result: the mount points this
 * owner now holds (as upstream's mount list).
 */
export interface AddStoragesArgs {
  owner: string;
  storages: StoragePlan[];
}
export interface AddStoragesResult {
  mountPoints: string[];
}

/** Drop every storage reference of `owner` (and its watchable binds); unmount what reaches 0. */
export interface ReleaseStoragesArgs {
  owner: string;
}
export type ReleaseStoragesResult = Record<string, never>;

/** UpdateEphemeralMounts: remount ephemeral (tmpfs) storages with new options. */
export interface UpdateEphemeralMountsArgs {
  storages: StoragePlan[];
}
export type UpdateEphemeralMountsResult = Record<string, never>;

/** RemoveStaleVirtiofsShareMounts: stat every mount under the shared directory. */
export type StatShareMountsArgs = Record<string, never>;
export interface StatShareMountsResult {
  /** Mount points stat'ed. */
  mountPoints: string[];
}

/** Write <kata dir>/sandbox/resolv.conf from resolv.conf lines and bind it over /etc/resolv.conf. */
export interface SetupDnsArgs {
  lines: string[];
}
export interface SetupDnsResult {
  /** Whether /etc/resolv.conf existed and got the bind mount. */
  bound: boolean;
}

/** CreateSandbox kernel_modules: `/sbin/modprobe -v <name> <params...>` for each, in order. */
export interface LoadKernelModulesArgs {
  modules: { name: string; parameters: string[] }[];
}
export type LoadKernelModulesResult = Record<string, never>;

/** Device types of CreateContainerRequest.devices (upstream device.rs). */
export const DEVICE_TYPES = ['blk', 'mmioblk', 'scsi', 'nvdimm', 'blk-ccw', 'vfio-pci', 'vfio-pci-gk', 'vfio-ap'] as const;
export type DeviceType = (typeof DEVICE_TYPES)[number];

/** One device to wait for (agent.proto Device). */
export interface DevicePlan {
  type: DeviceType;
  id: string;
  vmPath: string;
  containerPath: string;
  options: string[];
}
/** A device the guest has: its node and numbers. */
export interface GuestDevice {
  containerPath: string;
  /** The guest node, e.g. /dev/vdb. */
  vmPath: string;
  /** "b" or "c". */
  kind: 'b' | 'c';
  major: number;
  minor: number;
}
/** Wait (at most `timeoutMs` each, 0 = the helper's hotplug timeout) for devices; answer their numbers. */
export interface WaitDevicesArgs {
  devices: DevicePlan[];
  timeoutMs: number;
}
export interface WaitDevicesResult {
  devices: GuestDevice[];
}

/** The storage/device ops, appended to {@link Ops}. */
export interface StorageOps {
  addStorages: [AddStoragesArgs, AddStoragesResult];
  releaseStorages: [ReleaseStoragesArgs, ReleaseStoragesResult];
  updateEphemeralMounts: [UpdateEphemeralMountsArgs, UpdateEphemeralMountsResult];
  statShareMounts: [StatShareMountsArgs, StatShareMountsResult];
  setupDns: [SetupDnsArgs, SetupDnsResult];
  loadKernelModules: [LoadKernelModulesArgs, LoadKernelModulesResult];
  waitDevices: [WaitDevicesArgs, WaitDevicesResult];
}

/** Every request op with its argument and result types. */
// Network ops (helper/ops/network.ts; upstream src/agent/src/netlink.rs, rpc.rs). Addresses are
// text (IPv4 dotted quad, IPv6 as inet_ntop writes it), MACs lower-case "aa:bb:cc:dd:ee:ff",
// families 4 or 6. The helper works on one network namespace (its `--netns`, default its own).

/** An interface address: `address`/`prefixLen`. */
export interface NetAddress {
  family: 4 | 6;
  address: string;
  /** 0..32 (IPv4) or 0..128 (IPv6). */
  prefixLen: number;
}

/** What UpdateInterface asks for (grpc types.Interface, validated by control). */
export interface NetInterfaceSpec {
  /** The lookup key: the link with this MAC; "" = look the link up by `name`. */
  hwAddr: string;
  /** New name (1..15 bytes, IFNAMSIZ). */
  name: string;
  /** New MTU; 0 = leave it. */
  mtu: number;
  /** The link's addresses afterwards (others are removed, except IPv6 link-local ones). */
  addresses: NetAddress[];
  /** IFF_NOARP set (true) or cleared (false), as upstream reads raw_flags. */
  noarp: boolean;
  /** IFF_PROMISC / IFF_ALLMULTI: set when true, left alone otherwise. */
  promisc: boolean;
  allmulti: boolean;
  /**
   * PCI path of the NIC ("02/05", types.Interface.pciPath; upstream HEAD devicePath), absent or
   * "" = none: the helper first waits (hotplug timeout, DEADLINE_EXCEEDED) for a network
   * interface behind it, so an UpdateInterface that overtakes a NIC hot-plug is not NOT_FOUND.
   */
  pciPath?: string;
}

/** A link as the kernel has it. */
export interface NetInterfaceState {
  index: number;
  name: string;
  hwAddr: string;
  mtu: number;
  /** Link kind ("veth", "bridge", ...; "" for plain devices such as lo). */
  type: string;
  /** ifi_flags (IFF_UP 0x1, IFF_NOARP 0x80, ...). */
  flags: number;
  addresses: NetAddress[];
}

/** A route of the main table (grpc types.Route, validated by control). */
export interface NetRouteSpec {
  family: 4 | 6;
  /** Destination network; "" with dstLen 0 = the default route. */
  dst: string;
  dstLen: number;
  /** "" = a link route. */
  gateway: string;
  /** Output link by name ("" only with a gateway: the kernel picks the link). */
  device: string;
  /** Source prefix (RTA_SRC, IPv6 only) and preferred source (RTA_PREFSRC); "" = none. */
  src: string;
  srcLen: number;
  prefsrc: string;
  /** rtm_scope (0 universe, 200 site, 253 link, 254 host). */
  scope: number;
}

/** A main-table route as the kernel has it. */
export interface NetRouteState extends NetRouteSpec {
  /** rtm_protocol (2 kernel, 3 boot, 4 static). */
  protocol: number;
  /** rtm_type (1 unicast). */
  type: number;
  /** RTA_PRIORITY (the metric). */
  priority: number;
  /** rtm_flags. */
  flags: number;
}

/** A static neighbour entry (grpc types.ARPNeighbor, validated by control). */
export interface NetNeighborSpec {
  device: string;
  address: string;
  /** "" = none. */
  lladdr: string;
  /** NUD_* state (control turns 0 into NUD_PERMANENT 0x80, as upstream). */
  state: number;
  /** NTF_* flags, 0..255, as sent. */
  flags: number;
}

/** Counters of one link (IFLA_STATS64), for StatsContainer's NetworkStats. */
export interface NetInterfaceStats {
  name: string;
  rxBytes: number;
  rxPackets: number;
  rxErrors: number;
  rxDropped: number;
  txBytes: number;
  txPackets: number;
  txErrors: number;
  txDropped: number;
}

/** Apply an interface spec; answers the link as it is afterwards. Rolled back on failure. */
export interface UpdateInterfaceArgs {
  iface: NetInterfaceSpec;
}
export interface UpdateInterfaceResult {
  iface: NetInterfaceState;
}
/** Replace the main table's routes (kernel and lo routes stay); answers the table afterwards. */
export interface UpdateRoutesArgs {
  routes: NetRouteSpec[];
}
export interface UpdateRoutesResult {
  routes: NetRouteState[];
}
export type ListInterfacesArgs = Record<string, never>;
export interface ListInterfacesResult {
  interfaces: NetInterfaceState[];
}
export type ListRoutesArgs = Record<string, never>;
export interface ListRoutesResult {
  routes: NetRouteState[];
}
export interface AddArpNeighborsArgs {
  neighbors: NetNeighborSpec[];
}
export type AddArpNeighborsResult = Record<string, never>;
/** iptables-save (ip6tables-save with ipv6) in the helper's network namespace. */
export interface GetIpTablesArgs {
  ipv6: boolean;
}
export interface GetIpTablesResult {
  data: Uint8Array;
}
/** iptables-restore (ip6tables-restore) with `data` on stdin; answers its stdout. */
export interface SetIpTablesArgs {
  ipv6: boolean;
  data: Uint8Array;
}
export interface SetIpTablesResult {
  data: Uint8Array;
}
export type InterfaceStatsArgs = Record<string, never>;
export interface InterfaceStatsResult {
  interfaces: NetInterfaceStats[];
}

/** The network ops, merged into {@link Ops}. */
export interface NetworkOps {
  updateInterface: [UpdateInterfaceArgs, UpdateInterfaceResult];
  updateRoutes: [UpdateRoutesArgs, UpdateRoutesResult];
  listInterfaces: [ListInterfacesArgs, ListInterfacesResult];
  listRoutes: [ListRoutesArgs, ListRoutesResult];
  addArpNeighbors: [AddArpNeighborsArgs, AddArpNeighborsResult];
  getIpTables: [GetIpTablesArgs, GetIpTablesResult];
  setIpTables: [SetIpTablesArgs, SetIpTablesResult];
  interfaceStats: [InterfaceStatsArgs, InterfaceStatsResult];
}

/** Every request op with its argument and result types. */
export interface Ops extends StorageOps, NetworkOps {
  hello: [HelloArgs, HelloResult];
  ping: [PingArgs, PingResult];
  createSandbox: [CreateSandboxArgs, CreateSandboxResult];
  destroySandbox: [DestroySandboxArgs, DestroySandboxResult];
  createContainer: [CreateContainerArgs, CreateContainerResult];
  startContainer: [StartContainerArgs, StartContainerResult];
  execProcess: [ExecProcessArgs, ExecProcessResult];
  signalProcess: [SignalProcessArgs, SignalProcessResult];
  removeContainer: [RemoveContainerArgs, RemoveContainerResult];
  closeStdin: [CloseStdinArgs, CloseStdinResult];
  releaseProcess: [ReleaseProcessArgs, ReleaseProcessResult];
  state: [StateArgs, StateResult];
  ackOomEvents: [AckOomEventsArgs, AckOomEventsResult];
  keepPolicy: [KeepPolicyArgs, KeepPolicyResult];
  keptPolicy: [KeptPolicyArgs, KeptPolicyResult];
}
export type OpName = keyof Ops;

// ---------------------------------------------------------------------------------------------
// Events (helper → control, unsolicited).

/** A tracked process exited and was reaped by the helper. */
export interface ExitEvent {
  event: 'exit';
  containerId: string;
  execId: string;
  pid: number;
  /** waitpid status as Kata reports it: the exit code, or 128 + signal for a signal death. */
  exitStatus: number;
}

/** A container's cgroup had an OOM kill (the kernel's oom_kill counter grew; helper/ops/container.ts OOM watch). */
export interface OomEvent {
  event: 'oom';
  containerId: string;
  /**
   * The helper's number of this event (1, 2, ...). The helper keeps an event until control acks
   * it (ackOomEvents, once GetOOMEvent delivered it); a restarted control plane gets the kept
   * ones in the first `state` page.
   */
  seq?: number;
}

/** ackOomEvents: control delivered every OOM event up to `upTo` (its seq): the helper forgets them. */
export interface AckOomEventsArgs {
  upTo: number;
}
export type AckOomEventsResult = Record<string, never>;

export type HelperEvent = ExitEvent | OomEvent;

// ---------------------------------------------------------------------------------------------
// Wire shapes.

export interface RequestMessage<K extends OpName = OpName> {
  id: number;
  op: K;
  args: Ops[K][0];
}
export interface OkResponse<K extends OpName = OpName> {
  id: number;
  ok: true;
  result: Ops[K][1];
  /** Names of the fds attached to this packet, in order. */
  fds?: string[];
}
export interface ErrorResponse {
  id: number;
  ok: false;
  error: { code: StatusCode; message: string };
}
export type ResponseMessage = OkResponse | ErrorResponse;

/** Exit status as Kata reports it (upstream since 2026): code, or 128 + signal. */
export function exitStatusOf(exitCode: number | null, signal: number | null): number {
  if (signal !== null) return 128 + signal;
  return exitCode ?? 255;
}

/**
 * Container id rule (Kata kata-sys-util validate.rs verify_id): first char alphanumeric,
 * length ≥ 2, the rest alphanumeric or "." "-" "_". We accept ASCII alphanumerics only (upstream
 * also lets non-ASCII Unicode letters through, which then reach paths; we refuse them) and cap
 * the length at 256 bytes so ids stay valid path components.
 */
export const CONTAINER_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{1,255}$/;

/**
 * Exec ids are map keys and log fields only (upstream never validates them; runtimes send UUIDs
 * or arbitrary names), so we accept any 1–256 characters without control characters or "/".
 */
export const EXEC_ID_RE = /^[^\x00-\x1f\x7f/]{1,256}$/;

/** Throws INVALID_ARGUMENT unless `id` is a valid container id. */
export function validateContainerId(id: unknown): string {
  if (typeof id !== 'string' || !CONTAINER_ID_RE.test(id)) {
    throw new StatusError(Code.INVALID_ARGUMENT, `invalid container id ${JSON.stringify(id)}`);
  }
  return id;
}

/** Throws INVALID_ARGUMENT unless `id` is a valid exec id ("" allowed when `allowEmpty`). */
export function validateExecId(id: unknown, allowEmpty: boolean): string {
  if (typeof id === 'string' && id === '' && allowEmpty) return id;
  if (typeof id !== 'string' || !EXEC_ID_RE.test(id)) {
    throw new StatusError(Code.INVALID_ARGUMENT, `invalid exec id ${JSON.stringify(id)}`);
  }
  return id;
}

// ---------------------------------------------------------------------------------------------
// Guest operations (GetGuestDetails, OnlineCPUMem, MemHotplugByProbe, ReseedRandomDev,
// SetGuestDateTime, AddSwap, GetVolumeStats, ResizeVolume, CopyFile): carried out by
// helper/ops/sysfs.ts and helper/ops/guest.ts (mock twins in helper/mock/guest.ts). These ops
// are additive: a helper that lacks them answers UNIMPLEMENTED "unknown helper op", so the
// protocol version is unchanged. Ops is extended by declaration merging so that this block
// stays one appended piece.

/** Memory facts of GetGuestDetails (Kata rpc.rs get_memory_info). */
export interface MemoryInfoArgs {
  /** Read <sysfs>/devices/system/memory/block_size_bytes. */
  blockSize: boolean;
  /** Check whether <sysfs>/devices/system/memory/probe exists. */
  hotplugProbe: boolean;
}
export interface MemoryInfoResult {
  /** Memory block size in bytes (0 when not asked or the file does not exist). */
  blockSizeBytes: number;
  hotplugProbe: boolean;
}

/** Online hot-added CPUs and memory blocks (Kata sandbox.rs online_cpu_memory). */
export interface OnlineCpuMemArgs {
  /** Wanted number of online CPUs (0 = leave CPUs alone), 0..4096. */
  nbCpus: number;
  /** Do not online memory blocks. */
  cpuOnly: boolean;
}
export interface OnlineCpuMemResult {
  /** CPUs this call switched online. */
  cpusOnlined: number;
  /** Memory blocks this call switched online. */
  memoryOnlined: number;
  /** Online CPUs afterwards (from <sysfs>/devices/system/cpu/online). */
  onlineCpus: number;
}

/** Write each address to <sysfs>/devices/system/memory/probe (Kata rpc.rs do_mem_hotplug_by_probe). */
export interface MemHotplugProbeArgs {
  /** Physical addresses as "0x..." hex strings (u64 does not fit a msgpack-safe number), at most 4096. */
  addresses: string[];
}

/** Mix `data` into the kernel's entropy pool and reseed the CRNG (Kata random.rs reseed_rng). */
export interface AddEntropyArgs {
  /** 1..4096 bytes. */
  data: Uint8Array;
}

/** Set CLOCK_REALTIME (Kata rpc.rs do_set_guest_date_time). */
export interface SetTimeArgs {
  /** Seconds since the epoch, 0..2^53-1. */
  sec: number;
  /** Microseconds, 0..999999. */
  usec: number;
}

/** swapon(2) a block device (Kata rpc.rs do_add_swap; the device is already resolved to /dev/...). */
export interface AddSwapArgs {
  /**
   * The swap disk's PCI path ("02/03": slot 02 on the root bus, slot 03 behind that bridge), as
   * control builds it from AddSwapRequest.PCIPath; the helper waits for it (uevents, the hotplug
   * timeout). Exactly one of pciPath and device.
   */
  pciPath?: string;
  /** A /dev node name of a block device, waited for by name like an mmio disk (tests: a loop device). */
  device?: string;
}

/** statfs of a volume (Kata rpc.rs get_volume_capacity_stats / get_volume_inode_stats). */
export interface VolumeStatsArgs {
  /** Absolute, normalised path under one of the helper's volume roots. */
  path: string;
}
export interface VolumeStatsResult {
  /** Fragment size in bytes (statfs f_bsize as Node reports it). */
  bsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
}

/** Grow the filesystem mounted at a volume path to its device's size. */
export interface ResizeVolumeArgs {
  path: string;
  /** Requested size in bytes (0 = the whole device). */
  size: number;
}
export interface ResizeVolumeResult {
  fstype: string;
  /** The tool that ran (resize2fs or xfs_growfs). */
  tool: string;
}

/** One CopyFile chunk (Kata rpc.rs do_copy_file; agent.proto CopyFileRequest). */
export interface CopyFileArgs {
  /** Absolute, normalised path under one of the helper's copy roots. */
  path: string;
  fileSize: number;
  /** st_mode bits: S_IFDIR → a directory, S_IFLNK → a symlink whose target is `data`, else a regular file. */
  fileMode: number;
  dirMode: number;
  uid: number;
  gid: number;
  offset: number;
  data: Uint8Array;
}
export interface CopyFileResult {
  /** "dir", "symlink", "partial" (chunk written, file not complete yet) or "file" (complete, renamed into place). */
  written: 'dir' | 'symlink' | 'partial' | 'file';
}

export type EmptyResult = Record<string, never>;

// eslint-disable-next-line @typescript-eslint/no-empty-interface
export interface Ops {
  memoryInfo: [MemoryInfoArgs, MemoryInfoResult];
  onlineCpuMem: [OnlineCpuMemArgs, OnlineCpuMemResult];
  memHotplugProbe: [MemHotplugProbeArgs, EmptyResult];
  addEntropy: [AddEntropyArgs, EmptyResult];
  setTime: [SetTimeArgs, EmptyResult];
  addSwap: [AddSwapArgs, EmptyResult];
  volumeStats: [VolumeStatsArgs, VolumeStatsResult];
  resizeVolume: [ResizeVolumeArgs, ResizeVolumeResult];
  copyFile: [CopyFileArgs, CopyFileResult];
}

/**
 * Start a root shell for the debug console (Kata agent console.rs debug_console_handler; control
 * relays it, control/debug-console.ts). The helper picks the first of /bin/bash, /bin/sh that
 * exists (upstream's SHELLS), in its own session with the tty as controlling terminal.
 */
export interface DebugConsoleArgs {
  /**
   * A tty under /dev/ to run the shell on (upstream's serial case: /dev/console). Absent: a new
   * pty, whose master comes back as the response fd `master` (upstream's vsock case).
   */
  tty?: string;
}
export interface DebugConsoleResult {
  /** The shell's pid (the helper reaps it). */
  pid: number;
  /** The shell that runs, e.g. "/bin/sh". */
  shell: string;
}

export interface Ops {
  debugConsole: [DebugConsoleArgs, DebugConsoleResult];
}

/** The guest ops, in protocol order (helper/api.ts dispatches them to the guest family). */
export const GUEST_OPS = [
  'memoryInfo',
  'onlineCpuMem',
  'memHotplugProbe',
  'addEntropy',
  'setTime',
  'addSwap',
  'volumeStats',
  'resizeVolume',
  'copyFile',
  'debugConsole',
] as const;
export type GuestOpName = (typeof GUEST_OPS)[number];

/** Default roots the guest ops act in (overridable for tests: helper options, control options). */
export const GUEST_PATHS = {
  /** sysfs mount point (Kata linux_abi.rs SYSFS_DIR). */
  sysfs: '/sys',
  /** CopyFile destination root (Kata HEAD: writes confined to this directory, GHSA-q49m-57vm-c8cc). */
  copyRoot: '/run/kata-containers/shared/containers',
  /** GetVolumeStats / ResizeVolume: volumes live under the agent's own tree (storages, shared dir, bundles). */
  volumeRoot: '/run/kata-containers',
} as const;

/**
 * Largest CopyFile chunk one helper request carries, in bytes (helper packets are at most
 * HELPER_MAX_PACKET; control splits the runtime's 1 MiB chunks into pieces this size).
 */
export const COPY_FILE_HELPER_CHUNK = 128 * 1024;
/** Largest file CopyFile builds, in bytes (1 GiB; a bound so a confused caller cannot fill the guest with one request). */
export const COPY_FILE_MAX_SIZE = 1024 * 1024 * 1024;
/** Largest entropy buffer ReseedRandomDev accepts, in bytes (the kernel mixes at most this per call anyway). */
export const MAX_ENTROPY_BYTES = 4096;
/** Most addresses one MemHotplugByProbe call carries. */
export const MAX_PROBE_ADDRESSES = 4096;
/** Largest nb_cpus accepted (Linux NR_CPUS is at most 8192 on x86_64; 4096 in Kata's guest kernels). */
export const MAX_NB_CPUS = 8192;

// ---------------------------------------------------------------------------------------------
// cgroups (helper/ops/cgroup.ts; validation in shared/cgroup.ts; control/oci/cgroups.ts builds them)

/** A block device a blkio/io rule applies to, and its value (weight, bytes/s or ops/s). */
export interface CgroupDeviceValue {
  major: number;
  minor: number;
  value: number;
}

/** OCI linux.resources device rule (config-linux.md#allowed-device-list). */
export interface CgroupDeviceRule {
  allow: boolean;
  /** "a", "b" or "c". */
  type: string;
  /** -1 = any. */
  major: number;
  minor: number;
  /** Letters of "rwm". */
  access: string;
}

/**
 * The cgroup resources of a container, OCI config-linux.md#control-groups with units as OCI's
 * (bytes, microseconds, shares). Absent fields are left as the kernel made them. Memory limits
 * accept -1 (unlimited); pids.limit -1 = "max".
 */
export interface CgroupResourcesPlan {
  memory?: {
    limit?: number;
    reservation?: number;
    /** Memory + swap, as OCI (v2: memory.swap.max = swap - limit). */
    swap?: number;
    kernel?: number;
    kernelTcp?: number;
    swappiness?: number;
    disableOomKiller?: boolean;
  };
  cpu?: {
    shares?: number;
    quota?: number;
    period?: number;
    realtimeRuntime?: number;
    realtimePeriod?: number;
    /** cpuset list, e.g. "0-1,3". */
    cpus?: string;
    mems?: string;
  };
  pids?: { limit: number };
  blockIo?: {
    weight?: number;
    leafWeight?: number;
    weightDevice?: CgroupDeviceValue[];
    throttleReadBps?: CgroupDeviceValue[];
    throttleWriteBps?: CgroupDeviceValue[];
    throttleReadIops?: CgroupDeviceValue[];
    throttleWriteIops?: CgroupDeviceValue[];
  };
  /** pageSize as OCI ("2MB", "1GB"), limit in bytes. */
  hugepageLimits?: { pageSize: string; limit: number }[];
  network?: { classId?: number; priorities?: { name: string; priority: number }[] };
  /** cgroup v2 files to write (key = file name in the container's cgroup dir, no "/"). */
  unified?: Record<string, string>;
  /**
   * Device rules (v1 devices controller), in order; later rules win. Present: the helper first
   * denies every device, then writes each rule (devices.allow / devices.deny); control puts
   * runc's and rustjail's default rules after the spec's, as runc (control/oci/cgroups.ts
   * DEFAULT_DEVICE_RULES).
   */
  devices?: CgroupDeviceRule[];
}

/** The cgroup of a container (ContainerPlan.cgroup). */
export interface CgroupPlan {
  /**
   * Path of the container's cgroup below each hierarchy's root, "/a/b" form (control maps the
   * OCI cgroupsPath and the configured parent to it). No "..", not the root.
   */
  path: string;
  resources: CgroupResourcesPlan;
}

export interface CgroupStatsArgs {
  containerId: string;
}

/** Raw values of a container's cgroup files (file name → trimmed content); files missing are absent. */
export interface CgroupStatsResult {
  /** "v1", "v2" or "hybrid". */
  mode: string;
  files: Record<string, string>;
}

export interface Ops {
  cgroupStats: [CgroupStatsArgs, CgroupStatsResult];
}

/** Freeze (PauseContainer) or thaw (ResumeContainer) a container's cgroup, waiting until reached. */
export interface CgroupFreezeArgs {
  containerId: string;
  frozen: boolean;
  /** Bound of the wait in ms (1..60000, default 5000). */
  timeoutMs?: number;
}
export type CgroupFreezeResult = Record<string, never>;

/** Apply new resources to a container's cgroup (UpdateContainer); validated as at create. */
export interface CgroupUpdateArgs {
  containerId: string;
  resources: CgroupResourcesPlan;
}
export type CgroupUpdateResult = Record<string, never>;

export type HelperStatsArgs = Record<string, never>;
/** The helper process's own figures (from /proc/self), for GetMetrics. */
export interface HelperStatsResult {
  pid: number;
  /** CPU time in user and kernel mode, seconds. */
  cpuUserSeconds: number;
  cpuSystemSeconds: number;
  rssBytes: number;
  vsizeBytes: number;
  /** Open file descriptors. */
  fds: number;
  threads: number;
  /** Process start time, seconds since the Unix epoch. */
  startTimeSeconds: number;
}

export interface Ops {
  cgroupFreeze: [CgroupFreezeArgs, CgroupFreezeResult];
  cgroupUpdate: [CgroupUpdateArgs, CgroupUpdateResult];
  helperStats: [HelperStatsArgs, HelperStatsResult];
}
