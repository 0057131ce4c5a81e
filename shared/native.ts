/**
 * Typed loader of the native addon (`build/Release/kata_native.node`, built by node-gyp from
 * helper/native/addon.cc at `npm install`).
 *
 * The addon does what Node cannot: SOCK_SEQPACKET sockets with SCM_RIGHTS fd passing,
 * AF_VSOCK listen/accept/connect, raw pipes and ptys, fork+exec without JavaScript in the
 * child, pidfds, reaping, and compiling seccomp profiles to BPF with libseccomp
 * ({@link NativeAddon.seccompCompile}). Every fd it returns has O_CLOEXEC set; sockets and fds meant for the
 * event loop are non-blocking. Nothing here blocks the event loop: readiness is delivered by
 * {@link Poller} (a libuv uv_poll_t).
 *
 * Errors: every function throws a {@link NativeError} (an Error with `code` = errno name such as
 * "ENOENT", `errno` = the positive errno number, `syscall` = the failing call, message
 * "<syscall>: <strerror>" optionally followed by " (<detail>)") unless the docstring says it
 * returns a sentinel for EAGAIN. Bad argument types or ranges throw a TypeError.
 */
import * as path from 'node:path';

/** An Error thrown by the addon: `code` is the errno name, `errno` the positive number. */
export interface NativeError extends Error {
  code: string;
  errno: number;
  syscall: string;
}

/** Credentials of the peer of a unix socket (SO_PEERCRED). */
export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

/** One received SOCK_SEQPACKET message: its bytes and the fds that travelled with it. */
export interface SeqpacketMessage {
  /** The packet's payload (0 bytes with `eof` true means the peer closed). */
  data: Buffer;
  /** Fds received by SCM_RIGHTS, already O_CLOEXEC; the caller owns (must close) them. */
  fds: number[];
  /** True when the peer has closed the connection (recvmsg returned 0 bytes, no fds). */
  eof: boolean;
  /** True when MSG_TRUNC or MSG_CTRUNC was set: the packet or its fds did not fit. */
  truncated: boolean;
}

/** Options of {@link NativeAddon.spawn}. */
export interface SpawnOptions {
  /** Absolute path of the program to execve. */
  file: string;
  /** argv, argv[0] included. */
  argv: string[];
  /** The whole environment as "KEY=VALUE" strings (nothing is inherited). */
  envp: string[];
  /**
   * Child fd table: child fd i becomes a dup of `fds[i]` (-1 leaves child fd i closed).
   * Every other fd is closed in the child (close_range) before execve; the dups have
   * O_CLOEXEC cleared. Overlapping source/target numbers are handled.
   */
  fds: number[];
  /** Call setsid() in the child before execve. */
  setsid?: boolean;
  /** After setsid, make child fd 0 (a tty, e.g. a pty slave) the controlling terminal (TIOCSCTTY); needs `setsid`. */
  controllingTty?: boolean;
  /**
   * A directory fd of a cgroup2 cgroup: the child is born in it (clone3 CLONE_INTO_CGROUP,
   * Linux 5.7), so it need not be moved there through cgroup.procs. A kernel without it gets a
   * plain clone: see {@link SpawnResult.intoCgroup}. Other clone3 errors are thrown (syscall
   * "clone3", e.g. EBUSY, EACCES).
   */
  cgroupFd?: number;
  /**
   * Run the program in this fd (execveat AT_EMPTY_PATH, e.g. a {@link NativeAddon.sealedCopy})
   * instead of `file`, which then only names it in errors. The child's copy of the fd is
   * O_CLOEXEC: the program does not keep it.
   */
  execFd?: number;
}

/** Result of {@link NativeAddon.spawn}. */
export interface SpawnResult {
  pid: number;
  /** pidfd of the child (pidfd_open), O_CLOEXEC; the caller owns it. */
  pidfd: number;
  /** True when `cgroupFd` was given and the child was born in that cgroup. */
  intoCgroup?: boolean;
}

/** One reaped child: the exit code or the terminating signal (exactly one is non-null). */
export interface ReapedChild {
  pid: number;
  /** WEXITSTATUS when the child exited normally, else null. */
  exitCode: number | null;
  /** WTERMSIG when the child was killed by a signal, else null. */
  signal: number | null;
}

/** Readiness flags delivered to a {@link Poller} callback. */
export interface PollEvents {
  readable: boolean;
  writable: boolean;
  /** UV_DISCONNECT: the peer hung up (EPOLLRDHUP/EPOLLHUP). */
  disconnect: boolean;
}

/**
 * libuv poll watcher over one fd (uv_poll_t). The callback runs on the event loop with
 * `status` 0 or a negative libuv error (after which the watcher is stopped). libuv switches
 * the fd to O_NONBLOCK. At most one started Poller per fd: constructing or starting a second
 * one throws EBUSY. A started Poller is kept alive (not garbage-collected) until stop()/close().
 */
export interface Poller {
  /** Start (or change) watching; at least one of readable/writable should be true. */
  start(readable: boolean, writable: boolean): void;
  /** Stop watching; may be started again. */
  stop(): void;
  /** Stop and release the watcher (does not close the fd). Idempotent. */
  close(): void;
}

export interface PollerConstructor {
  new (fd: number, callback: (status: number, events: PollEvents) => void): Poller;
}

/** One argument comparison of {@link SeccompProfile} (OCI linux.seccomp.syscalls[].args[]). */
export interface SeccompArg {
  /** Syscall argument index, 0..5. */
  index: number;
  /** SCMP_CMP_NE, _LT, _LE, _EQ, _GE, _GT or _MASKED_EQ. */
  op: string;
  /** Unsigned 64-bit: a safe integer or a bigint. For SCMP_CMP_MASKED_EQ: the mask. */
  value: number | bigint;
  /** For SCMP_CMP_MASKED_EQ: the datum the masked argument must equal; else ignored (absent = 0). */
  valueTwo?: number | bigint;
}

/** One rule of {@link SeccompProfile}. */
export interface SeccompRule {
  /** 1..16384 syscall names of 1..256 bytes; names libseccomp does not know are skipped. */
  names: string[];
  /** SCMP_ACT_KILL (= _KILL_THREAD), _KILL_PROCESS, _KILL_THREAD, _TRAP, _ERRNO, _TRACE, _ALLOW, _LOG. */
  action: string;
  /** errno of SCMP_ACT_ERRNO / message of SCMP_ACT_TRACE, 0..65535; absent or null = EPERM (1). */
  errnoRet?: number | null;
  /** At most 6 comparisons, all of which must match. */
  args?: SeccompArg[];
}

/** Input of {@link NativeAddon.seccompCompile}: an OCI linux.seccomp profile (config-linux.md#seccomp). */
export interface SeccompProfile {
  /** An action name as in {@link SeccompRule.action}. */
  defaultAction: string;
  /** errno of a SCMP_ACT_ERRNO (message of SCMP_ACT_TRACE) default action; absent = EPERM. */
  defaultErrnoRet?: number | null;
  /** At most 32 SCMP_ARCH_* names added to the native architecture (which is always in). */
  architectures?: string[];
  /** SECCOMP_FILTER_FLAG_TSYNC, _LOG, _SPEC_ALLOW (libseccomp attributes CTL_TSYNC, CTL_LOG, CTL_SSB). */
  flags?: string[];
  /** At most 4096 rules. */
  syscalls?: SeccompRule[];
}

/** A device rule of {@link NativeAddon.bpfDeviceProgram} (shared/protocol.ts CgroupDeviceRule). */
export interface BpfDeviceRule {
  allow: boolean;
  /** "a" (block and char), "b" or "c". */
  type: string;
  /** -1 = any. */
  major: number;
  minor: number;
  /** Letters of "rwm". */
  access: string;
}

/** Result of {@link NativeAddon.seccompCompile}. */
export interface CompiledSeccompFilter {
  /** The BPF program: a struct sock_filter array (8 bytes per instruction, host byte order). */
  bpf: Buffer;
  /** SECCOMP_FILTER_FLAG_* bits of the profile's flags (TSYNC 1, LOG 2, SPEC_ALLOW 4) for seccomp(2). */
  flags: number;
  /** Syscall names libseccomp does not know, skipped (each once, in profile order; field case B23). */
  skipped: string[];
}

/** The functions exported by the addon. */
export interface NativeAddon {
  /** close(2). Throws on EBADF. */
  close(fd: number): void;
  /** pipe2(O_CLOEXEC) → [readEnd, writeEnd]; both blocking. */
  pipe(): [number, number];
  /** Set or clear O_NONBLOCK. */
  setNonBlocking(fd: number, on: boolean): void;
  /** Set or clear FD_CLOEXEC. */
  setCloexec(fd: number, on: boolean): void;
  /** read(2) into buf[offset, offset+length); returns bytes read (0 = EOF) or -1 on EAGAIN. */
  read(fd: number, buf: Buffer, offset: number, length: number): number;
  /** write(2) of buf[offset, offset+length); returns bytes written or -1 on EAGAIN. */
  write(fd: number, buf: Buffer, offset: number, length: number): number;
  /** openpty with O_CLOEXEC on both ends. */
  openpty(): { master: number; slave: number };
  /** TIOCSWINSZ on a pty master. */
  setWinsize(fd: number, rows: number, columns: number): void;

  /** socket(AF_UNIX, SOCK_SEQPACKET) bound to `path` (a leading "@" = abstract) and listening; non-blocking. */
  seqpacketListen(path: string, backlog: number): number;
  /** A connected SOCK_SEQPACKET socket to `path` ("@" = abstract); non-blocking after connect. */
  seqpacketConnect(path: string): number;
  /** socketpair(AF_UNIX, SOCK_SEQPACKET) → two connected non-blocking ends (tests, in-process mock helper). */
  seqpacketPair(): [number, number];
  /** accept4(SOCK_CLOEXEC|SOCK_NONBLOCK) on any listening socket; -1 on EAGAIN. */
  accept(fd: number): number;
  /** SO_PEERCRED of a connected unix socket. */
  peerCred(fd: number): PeerCred;
  /**
   * sendmsg one packet with `fds` as SCM_RIGHTS; returns bytes sent or -1 on EAGAIN. Max 253 fds.
   * An empty `data` without fds is a TypeError (the peer would read it as EOF).
   */
  seqpacketSend(fd: number, data: Buffer, fds: number[]): number;
  /** recvmsg one packet of at most `maxBytes` (0..64 MiB; and up to 64 fds, MSG_CMSG_CLOEXEC); null on EAGAIN. */
  seqpacketRecv(fd: number, maxBytes: number): SeqpacketMessage | null;

  /** memfd_create(name, MFD_CLOEXEC): an anonymous in-memory file (an output spool, helper/native/spool.cc). */
  memfdCreate(name: string): number;
  /**
   * splice(2) up to `len` bytes from the pipe `fdIn` into `fdOut` at byte offset `offOut`
   * (SPLICE_F_NONBLOCK): returns the bytes moved, 0 at end of file, -1 when the pipe is empty.
   */
  splice(fdIn: number, fdOut: number, offOut: number, len: number): number;
  /** fallocate(PUNCH_HOLE | KEEP_SIZE): free the bytes [offset, offset+len) of a memfd (they read as 0). */
  punchHole(fd: number, offset: number, len: number): void;
  /**
   * fcntl(F_SETPIPE_SZ): make the pipe `fd` hold at least `bytes` (rounded up by the kernel to
   * a power of two of pages); returns the new capacity in bytes. Throws the errno error (EPERM
   * above /proc/sys/fs/pipe-max-size without CAP_SYS_RESOURCE, EBUSY below what it holds).
   */
  setPipeSize(fd: number, bytes: number): number;
  /**
   * setsockopt(SO_SNDBUF) on the socket `fd`: the kernel caps `bytes` at net.core.wmem_max and
   * doubles it; returns the resulting SO_SNDBUF in bytes. Throws the errno error (ENOTSOCK...).
   */
  setSendBuffer(fd: number, bytes: number): number;

  /** socket(AF_VSOCK, SOCK_STREAM) with SO_REUSEADDR bound to (cid, port), listening, non-blocking. cid -1 = VMADDR_CID_ANY, port -1 = VMADDR_PORT_ANY. */
  vsockListen(cid: number, port: number, backlog: number): number;
  /** A connected AF_VSOCK stream socket (blocking connect, then non-blocking). */
  vsockConnect(cid: number, port: number): number;
  /** socket(AF_UNIX, SOCK_STREAM) bound to `path` ("@" = abstract) and listening; non-blocking. */
  unixStreamListen(path: string, backlog: number): number;
  /**
   * getpeername(2) of a connected socket: vsock → its cid and port; unix → the peer's bound
   * name ("" when unbound, "@name" when abstract). TypeError for another family.
   */
  socketPeer(fd: number): { family: 'vsock'; cid: number; port: number } | { family: 'unix'; path: string };

  /** fork + execve per {@link SpawnOptions}; signals are reset to default and unblocked in the child. */
  spawn(options: SpawnOptions): SpawnResult;
  /**
   * A memfd (O_CLOEXEC) holding a copy of the regular file `path`, sealed against every change
   * (F_SEAL_SEAL|SHRINK|GROW|WRITE), for {@link SpawnOptions.execFd}. NativeError on failure
   * (open, memfd_create, sendfile, fcntl), EINVAL when `path` is not a regular file.
   */
  sealedCopy(path: string): number;
  /** pidfd_open(pid, 0) with O_CLOEXEC. */
  pidfdOpen(pid: number): number;
  /** pidfd_send_signal(pidfd, signal). ESRCH is thrown as a NativeError. */
  pidfdSendSignal(pidfd: number, signal: number): void;
  /**
   * kill(2) (used for signal 0 liveness checks and for pids without a pidfd). A negative pid
   * signals a process group; pid 0 and -1 (our own group, every process) are a TypeError.
   */
  kill(pid: number, signal: number): void;
  /** waitpid(-1, WNOHANG|__WALL) until nothing more is ready; every child reaped. */
  reap(): ReapedChild[];
  /** prctl(PR_SET_CHILD_SUBREAPER, 1). */
  setChildSubreaper(): void;

  /** mount(2) in the caller's mount namespace; `flags` is the MS_* bit mask. */
  mount(source: string, target: string, fstype: string, flags: number, data: string): void;
  /** umount2(2); `flags` e.g. MNT_DETACH = 2. */
  umount2(target: string, flags: number): void;

  /**
   * Guest operations (helper/ops/guest.ts). addEntropy: RNDADDENTROPY of `data` (1..4096 bytes,
   * credited 8 bits a byte) on `device`, then RNDRESEEDCRNG (Kata random.rs reseed_rng).
   * setRealtime: clock_settime(CLOCK_REALTIME, sec, nsec). swapon/swapoff: swapon(2)/swapoff(2).
   * All throw the errno error (EPERM without the capability).
   */
  addEntropy(device: string, data: Uint8Array): void;
  setRealtime(sec: number, nsec: number): void;
  swapon(path: string, flags: number): void;
  swapoff(path: string): void;
  /**
   * Init mode's power-off (control/init.ts): sync(2), then reboot(2) RB_POWER_OFF; does not
   * return when it works. Throws EPERM (message "only PID 1 may power off") unless the caller
   * is PID 1 of its PID namespace, and the errno error of reboot(2) otherwise.
   */
  powerOff(): void;

  /**
   * Compile an OCI seccomp profile to a BPF program with libseccomp, as upstream rustjail
   * seccomp.rs builds its filter, without loading it (kata-init loads it in the container
   * process): seccomp_init(default action), the NNP control bit cleared (kata-init sets
   * no_new_privs from the OCI process), seccomp_arch_add for each listed architecture (the
   * native one is always there), then per rule and name seccomp_syscall_resolve_name: a name
   * libseccomp does not know is skipped and reported in `skipped`; a rule whose action equals
   * the default action is skipped (libseccomp refuses it); else seccomp_rule_add_array with
   * the comparisons (SCMP_CMP_MASKED_EQ: `value` is the mask, `valueTwo` the datum, as OCI and
   * upstream). Each flag sets its attribute (TSYNC, LOG, SSB); then seccomp_export_bpf through a
   * memfd. A name libseccomp knows only for another architecture (e.g. getuid32 on x86_64) is
   * added and applies where it exists.
   *
   * Throws a TypeError for a malformed profile: not an object, a missing or unknown action,
   * operator, architecture or flag name, an index outside 0..5, a value that is not a safe
   * integer or a bigint in 0..2^64-1, an errno outside 0..65535, an empty names list or name,
   * sizes beyond the bounds above. Throws a NativeError when libseccomp refuses the profile:
   * `syscall` is "seccomp_init" (EINVAL: default action unsupported), "seccomp_arch_add"
   * (EOPNOTSUPP: an OCI architecture this libseccomp does not know), "seccomp_rule_add" (detail
   * "syscalls[i] <name>"), "seccomp_attr_set" (detail the attribute or flag, e.g. EOPNOTSUPP
   * when the kernel lacks SECCOMP_FILTER_FLAG_LOG), "seccomp_export_bpf", "memfd_create".
   */
  seccompCompile(profile: SeccompProfile): CompiledSeccompFilter;

  /**
   * A NETLINK_KOBJECT_UEVENT socket bound to the kernel's group 1 (CLOEXEC, non-blocking;
   * SO_RCVBUF 1 MiB). Throws the errno error. Kata agent uevent.rs.
   */
  ueventOpen(): number;
  /**
   * One uevent message (the raw "ACTION@DEVPATH\0KEY=VALUE\0..." bytes), or null when none is
   * queued. `kernel` is false when the sender is not the kernel (port id ≠ 0): such messages
   * must be ignored. Throws the errno error.
   */
  ueventRecv(fd: number): { data: Buffer; kernel: boolean; truncated: boolean } | null;

  /**
   * The BPF_PROG_TYPE_CGROUP_DEVICE program for device rules (struct bpf_insn array, 8 bytes
   * per instruction, host byte order), as {@link NativeAddon.bpfDeviceLoad} loads it: per access
   * bit the last matching rule decides, bits no rule allows are denied; type "a" matches block
   * and char devices, -1 any major/minor. Throws a TypeError naming `rules[i].<field>` for a
   * malformed rule (type not a/b/c, major/minor not -1..2^20-1, access not letters of rwm;
   * more than 1024 rules). helper/native/bpf-devices.cc.
   */
  bpfDeviceProgram(rules: BpfDeviceRule[]): Buffer;
  /**
   * Load the program of {@link NativeAddon.bpfDeviceProgram} with bpf(BPF_PROG_LOAD) → its fd
   * (O_CLOEXEC; the caller closes it). Throws a NativeError, syscall "bpf(BPF_PROG_LOAD)"
   * (detail: the verifier's log on EINVAL/EACCES; ENOSYS/EPERM/EINVAL when the kernel lacks
   * CONFIG_CGROUP_BPF or bpf(2) is not allowed).
   */
  bpfDeviceLoad(rules: BpfDeviceRule[]): number;
  /** Attach a loaded device program to a cgroup2 directory (BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI). Throws a NativeError ("open", "bpf(BPF_PROG_ATTACH)"). */
  bpfDeviceAttach(cgroupDir: string, progFd: number): void;
  /** Detach that program from the cgroup2 directory (BPF_PROG_DETACH). Throws a NativeError. */
  bpfDeviceDetach(cgroupDir: string, progFd: number): void;
  /** Ids of the device programs attached to the cgroup2 directory itself (BPF_PROG_QUERY, at most 64). Throws a NativeError. */
  bpfDeviceQuery(cgroupDir: string): number[];

  Poller: PollerConstructor;
}

let cached: NativeAddon | undefined;

/**
 * Load the addon once (from `<project>/build/Release/kata_native.node`).
 * Throws an Error naming the path and how to build it when the addon is missing.
 */
export function loadNative(): NativeAddon {
  if (cached) return cached;
  // dist/shared/native.js → project root is two levels up; the source tree layout is the same.
  const candidates = [
    path.resolve(__dirname, '..', '..', 'build', 'Release', 'kata_native.node'),
    path.resolve(__dirname, '..', 'build', 'Release', 'kata_native.node'),
  ];
  let lastError: unknown;
  for (const file of candidates) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      cached = require(file) as NativeAddon;
      return cached;
    } catch (err) {
      lastError = err;
    }
  }
  throw new Error(
    `native addon kata_native.node not found (looked in ${candidates.join(', ')}); ` +
      `run "npm install" or "npm run build:native": ${String(lastError)}`,
  );
}

/** Path of the kata-init executable built next to the addon. */
export function kataInitPath(): string {
  return path.resolve(__dirname, '..', '..', 'build', 'Release', 'kata-init');
}

/** True when `err` is a NativeError with the given errno name. */
export function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}
