/*
 * kata-init: the program that turns a freshly spawned process into a container process.
 *
 * The contract with the helper (invocation, fds 0-6, the NUL-separated plan, the order of
 * operations and the sync lines) is helper/native/KATA-INIT.md. Read that first; the sources
 * follow its "Sequence" section step by step, and the step numbers in the comments refer to it.
 * This header is internal to kata-init: the plan's shape and each stage's entry points.
 *
 *   self.c           protecting kata-init itself: sealed memfd copy, not dumpable
 *   report.c         error lines and progress lines on the sync fd, allocation
 *   plan.c           reading and parsing the plan (fd 3)
 *   ns.c             fds, namespaces, the pid-namespace fork, sandbox mode
 *   rootfs-path.c    paths resolved inside the rootfs (create mode)
 *   mounts.c         the spec's mount records
 *   userns-mounts.c  mqueue/sysfs premade with fsmount for a new user namespace
 *   dev.c            the /dev tmpfs and device nodes
 *   masks.c          masked and read-only paths
 *   rootfs.c         the filesystem view in full (step 5): pivot_root/chroot, sysctls, nodev
 *   ids.c            HOME, OOM score, rlimits, capabilities, ids, seccomp
 *   tty.c            the terminal, from the container's own devpts instance
 *   hooks.c          OCI createContainer and startContainer hooks, run inside the container
 *   exec.c           executable lookup, the start wait, signals, main()
 *
 * Ground rules for every file:
 *   - single-threaded, straight-line C; every syscall is checked;
 *   - every failure ends in die(): exactly one `error <stage>: <detail>[: <strerror>]` line,
 *     written with a single write(2) to the sync fd, then _exit(1);
 *   - every fd we open is O_CLOEXEC and is closed when we are done with it, so the container
 *     program only ever receives fds 0, 1 and 2;
 *   - the helper has already validated the plan; we still refuse anything malformed rather
 *     than guessing.
 */
#ifndef KATA_INIT_H
#define KATA_INIT_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <termios.h>
#include <unistd.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>

/* The fds the helper hands us (see the table in KATA-INIT.md). */
#define FD_PLAN 3
#define FD_SYNC 4
#define FD_START 5
/* tty only: a unix socket on which kata-init sends the pty master it opened in the container. */
#define FD_PTY 6

#define PLAN_MAX (1024 * 1024)
#define ERROR_LINE_MAX 4096
#define MAX_SYMLINKS 40
/* The kernel's limit on a classic BPF program (BPF_MAXINSNS), in instructions. */
#define SECCOMP_MAX_INSNS 4096

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define PROPAGATION_FLAGS ((unsigned long)(MS_SHARED | MS_SLAVE | MS_PRIVATE | MS_UNBINDABLE))
/* The only flags a bind mount itself looks at. */
#define BIND_FLAGS ((unsigned long)(MS_BIND | MS_REC))
/* Flags a `mount` record may carry (besides PROPAGATION_FLAGS): what applies to a new mount. */
#define NEW_MOUNT_ALLOWED                                                                  \
	((unsigned long)(MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_SYNCHRONOUS |         \
	                 MS_MANDLOCK | MS_DIRSYNC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME |   \
	                 MS_STRICTATIME | MS_REC))
/* A bind may also say MS_REMOUNT: applied as MS_BIND|MS_REMOUNT to the new mount only. */
#define BIND_MOUNT_ALLOWED (NEW_MOUNT_ALLOWED | BIND_FLAGS | (unsigned long)MS_REMOUNT)

/* self.c */
void ensure_sealed_exe(char **argv);
void make_undumpable(void);

/* report.c */
void __attribute__((noreturn, format(printf, 3, 4))) die(const char *stage, int err, const char *fmt, ...);
void __attribute__((noreturn, format(printf, 4, 5)))
die_code(int code, const char *stage, int err, const char *fmt, ...);
void __attribute__((format(printf, 1, 2))) sync_line(const char *fmt, ...);
void *xrealloc(void *p, size_t size);

/* Appends one zeroed element to a growable array `arr` of `n` elements; yields its address. */
#define PUSH(arr, n)                                                                   \
	((arr) = xrealloc((arr), ((n) + 1) * sizeof *(arr)),                           \
	 memset(&(arr)[(n)], 0, sizeof *(arr)), &(arr)[(n)++])

struct ns_rec {
	const char *name; /* "pid", "net", ... */
	int type;         /* CLONE_NEW* */
	const char *path; /* "" = unshare a new one */
	int fd;
};

struct mount_rec {
	const char *source, *target, *fstype, *data;
	unsigned long flags;
	/* A detached mount (fsmount) made before a new user namespace, to be attached in place of
	 * mounting (premount_unowned_filesystems), or -1. */
	int detached;
};

struct prop_rec {
	const char *target;
	unsigned long flags;
};

struct sysctl_rec {
	const char *key, *value;
};

/* OCI linux.devices entry (`device` record). */
struct device_rec {
	const char *path; /* absolute, below /dev */
	char type;        /* 'c', 'b' or 'p' */
	unsigned int major, minor;
	mode_t mode; /* permission bits */
	uid_t uid;
	gid_t gid;
};

struct rlimit_rec {
	int resource;
	struct rlimit lim;
};

enum mode { MODE_CREATE, MODE_EXEC, MODE_SANDBOX };

/* OCI hooks kata-init runs itself (the other kinds are the helper's). */
enum hook_kind { HOOK_CREATE_CONTAINER, HOOK_START_CONTAINER, HOOK_KINDS };

/* `hook` record with its `hookarg` / `hookenv` records. */
struct hook_rec {
	enum hook_kind kind;
	const char *path;      /* absolute; resolved in the mount namespace as it is then */
	unsigned int timeout;  /* seconds, 1..3600 */
	char **argv;           /* NULL-terminated once parsed; none = { path } */
	size_t n_args;
	char **envp;           /* NULL-terminated once parsed */
	size_t n_env;
};

/* `hookstate`: the OCI state JSON of a hook kind, split around the pid (kata-init's getpid()). */
struct hook_state {
	const char *before, *after;
};

struct plan {
	enum mode mode;

	const char *rootfs;
	bool readonly;
	bool nodev; /* every mount nodev except the /dev tmpfs and devpts the plan mounts */
	bool have_propagation;
	unsigned long propagation;
	const char *hostname;

	struct ns_rec *ns;
	size_t n_ns;
	struct mount_rec *mounts;
	size_t n_mounts;
	struct prop_rec *props;
	size_t n_props;
	const char **masked;
	size_t n_masked;
	const char **cgroup_dirs; /* `cgroupjoin`: cgroup v1 directories to move ourselves into */
	size_t n_cgroup_dirs;
	const char **ropaths;
	size_t n_ropaths;
	struct sysctl_rec *sysctls;
	size_t n_sysctls;
	struct device_rec *devices;
	size_t n_devices;
	struct rlimit_rec *rlimits;
	size_t n_rlimits;

	bool have_uid, have_gid;
	uid_t uid;
	gid_t gid;
	gid_t *groups;
	size_t n_groups;

	/* `caps`: bit n = capability n. No record: capabilities are left as they are. */
	bool have_caps;
	uint64_t cap_bounding, cap_effective, cap_permitted, cap_inheritable, cap_ambient;
	bool have_oom;
	int oom_score_adj;

	/* `seccomp`: the compiled filter (the helper compiled it with libseccomp) and the
	 * SECCOMP_FILTER_FLAG_* bits for seccomp(2). No record: no filter. */
	struct sock_filter *seccomp;
	size_t seccomp_len; /* instructions */
	unsigned int seccomp_flags;
	bool have_seccomp_flags;

	const char *cwd;
	const char *selinux_label; /* `selinux`: the exec context, or NULL */
	bool nonewprivs;
	bool tty;
	char **argv; /* NULL-terminated once parsed */
	size_t n_args;
	char **envp; /* NULL-terminated once parsed */
	size_t n_env;

	struct hook_rec *hooks;
	size_t n_hooks;
	bool runtime_hooks; /* `runtimehooks`: stop before pivot_root for the helper's hooks */
	struct hook_state hook_states[HOOK_KINDS];

	struct ns_rec *nsfiles; /* sandbox mode: namespaces to create and pin */
	size_t n_nsfiles;

	/* `hostns 1` (create only; the helper sends it only when started with
	 * --allow-host-namespaces): the plan may omit the mount namespace (the container shares
	 * ours: chroot instead of pivot_root) and may join a mount or user namespace by path. */
	bool hostns;
	/* Create mode: the plan has no `ns mnt` (derived from hostns and the ns records). */
	bool shared_mnt;
	/* `root` (exec only): the container's root directory, /proc/<init>/root, to chroot into
	 * when the container shares the helper's mount namespace. NULL: none. */
	const char *root;
};

/* plan.c */
char *read_plan(size_t *len_out);
void parse_plan(struct plan *p, char *buf, size_t len);

/* ns.c */
void secure_fds(enum mode mode);
bool enter_namespaces(struct plan *p, bool *new_uts);
void fork_for_pid_ns(bool pid_changed);
void become_session_leader(void);
void __attribute__((noreturn)) run_sandbox(const struct plan *p);

/* rootfs-path.c */
enum target_kind { TARGET_DIR, TARGET_FILE };
int open_in_root(int rootfd, const char *rel, int extra_flags);
int resolve_in_rootfs(int rootfd, const char *rootfs, const char *target,
                      enum target_kind kind, char resolved[PATH_MAX], const char *stage);
const char *fd_path(int fd, char buf[32]);

/* mounts.c */
void remount_readonly(const char *stage, const char *path, const char *shown);
bool mount_one(int rootfd, const char *rootfs, const struct mount_rec *m, char **prop_target);

/* userns-mounts.c */
void premount_unowned_filesystems(struct plan *p, int unshare_flags);

/* dev.c */
void populate_dev(int rootfd, const char *rootfs);
void create_devices(const struct plan *p, int rootfd);

/* masks.c */
void readonly_path(const char *path);
void mask_path(const char *path);

/* rootfs.c */
void setup_rootfs(const struct plan *p);
void chroot_into(int rootfd, const char *rootfs);

/* ids.c */
void ensure_home(struct plan *p);
void write_oom_score_adj(const struct plan *p);
void join_cgroups(const struct plan *p);
void load_seccomp(const struct plan *p);
void die_with_helper(const struct plan *p);
void set_identity(const struct plan *p);

/* hooks.c */
void run_hooks(const struct plan *p, enum hook_kind kind);
void wait_runtime_hooks(const struct plan *p);

/* tty.c */
void setup_terminal(const struct plan *p);

/* exec.c */
const char *resolve_executable(const struct plan *p, char buf[PATH_MAX]);
void wait_for_start(void);
void reset_signals(void);
void set_exec_label(const struct plan *p);

#endif
