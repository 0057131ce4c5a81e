/*
 * kata-init: the program that turns a freshly spawned process into a container process.
 *
 * The contract with the helper (invocation, fds 0-5, the NUL-separated plan, the order of
 * operations and the sync lines) is helper/native/KATA-INIT.md. Read that first; this file
 * follows its "Sequence" section step by step, and the step numbers in the comments below
 * refer to it.
 *
 * Ground rules for this file:
 *   - single-threaded, straight-line C; every syscall is checked;
 *   - every failure ends in die(): exactly one `error <stage>: <detail>[: <strerror>]` line,
 *     written with a single write(2) to the sync fd, then _exit(1);
 *   - every fd we open is O_CLOEXEC and is closed when we are done with it, so the container
 *     program only ever receives fds 0, 1 and 2;
 *   - the helper has already validated the plan; we still refuse anything malformed rather
 *     than guessing.
 */
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
#include <linux/openat2.h>
#include <linux/seccomp.h>

/* The fds the helper hands us (see the table in KATA-INIT.md). */
#define FD_PLAN 3
#define FD_SYNC 4
#define FD_START 5

#define PLAN_MAX (1024 * 1024)
#define ERROR_LINE_MAX 4096
#define MAX_SYMLINKS 40
/* The kernel's limit on a classic BPF program (BPF_MAXINSNS), in instructions. */
#define SECCOMP_MAX_INSNS 4096

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define PROPAGATION_FLAGS ((unsigned long)(MS_SHARED | MS_SLAVE | MS_PRIVATE | MS_UNBINDABLE))
/* The only flags a bind mount itself looks at. */
#define BIND_FLAGS ((unsigned long)(MS_BIND | MS_REC))

/* ------------------------------------------------------------------------------------------ */
/* Reporting                                                                                  */
/* ------------------------------------------------------------------------------------------ */

/*
 * Formats `error <stage>: <detail>[: <strerror(err)>]\n`, replaces control characters (a path
 * may contain a newline) so that it stays one line, writes it with one write(2) and exits.
 * If the sync fd is unusable (someone ran us by hand) the line goes to stderr instead.
 */
static void __attribute__((noreturn)) vfail(int code, const char *stage, int err, const char *fmt,
                                            va_list ap)
{
	char line[ERROR_LINE_MAX];
	size_t len;
	int n;

	n = snprintf(line, sizeof line, "error %s: ", stage);
	len = n < 0 ? 0 : (size_t)n;
	if (len < sizeof line) {
		n = vsnprintf(line + len, sizeof line - len, fmt, ap);
		len += n < 0 ? 0 : (size_t)n;
	}
	if (err != 0 && len < sizeof line) {
		n = snprintf(line + len, sizeof line - len, ": %s", strerror(err));
		len += n < 0 ? 0 : (size_t)n;
	}
	/* Leave room for the newline; snprintf may have truncated. */
	if (len > sizeof line - 1)
		len = sizeof line - 1;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
			line[i] = '?';
	line[len++] = '\n';

	if (write(FD_SYNC, line, len) < 0 && errno == EBADF)
		(void)!write(STDERR_FILENO, line, len);
	_exit(code);
}

static void __attribute__((noreturn, format(printf, 3, 4)))
die(const char *stage, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfail(1, stage, err, fmt, ap);
}

static void __attribute__((noreturn, format(printf, 4, 5)))
die_code(int code, const char *stage, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfail(code, stage, err, fmt, ap);
}

/* Writes one progress line (`pid N`, `ready`). If the helper is gone there is nobody to
 * report to and nothing sensible to do but stop. */
static void __attribute__((format(printf, 1, 2))) sync_line(const char *fmt, ...)
{
	char line[64];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof line)
		_exit(1);
	if (write(FD_SYNC, line, (size_t)n) != n)
		_exit(1);
}

static void *xrealloc(void *p, size_t size)
{
	void *q = realloc(p, size);

	if (q == NULL)
		die("plan", ENOMEM, "allocating %zu bytes", size);
	return q;
}

/* Appends one zeroed element to a growable array `arr` of `n` elements; yields its address. */
#define PUSH(arr, n)                                                                   \
	((arr) = xrealloc((arr), ((n) + 1) * sizeof *(arr)),                           \
	 memset(&(arr)[(n)], 0, sizeof *(arr)), &(arr)[(n)++])

/* ------------------------------------------------------------------------------------------ */
/* The plan                                                                                   */
/* ------------------------------------------------------------------------------------------ */

struct ns_rec {
	const char *name; /* "pid", "net", ... */
	int type;         /* CLONE_NEW* */
	const char *path; /* "" = unshare a new one */
	int fd;
};

struct mount_rec {
	const char *source, *target, *fstype, *data;
	unsigned long flags;
};

struct prop_rec {
	const char *target;
	unsigned long flags;
};

struct sysctl_rec {
	const char *key, *value;
};

struct rlimit_rec {
	int resource;
	struct rlimit lim;
};

enum mode { MODE_CREATE, MODE_EXEC, MODE_SANDBOX };

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
	const char **ropaths;
	size_t n_ropaths;
	struct sysctl_rec *sysctls;
	size_t n_sysctls;
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
	bool nonewprivs;
	bool tty;
	char **argv; /* NULL-terminated once parsed */
	size_t n_args;
	char **envp; /* NULL-terminated once parsed */
	size_t n_env;

	struct ns_rec *nsfiles; /* sandbox mode: namespaces to create and pin */
	size_t n_nsfiles;
};

static const struct {
	const char *name;
	int type;
} ns_types[] = {
	{ "pid", CLONE_NEWPID }, { "net", CLONE_NEWNET },   { "mnt", CLONE_NEWNS },
	{ "ipc", CLONE_NEWIPC }, { "uts", CLONE_NEWUTS },   { "cgroup", CLONE_NEWCGROUP },
};

static int ns_type_of(const char *name)
{
	for (size_t i = 0; i < sizeof ns_types / sizeof ns_types[0]; i++)
		if (strcmp(name, ns_types[i].name) == 0)
			return ns_types[i].type;
	die("plan", 0, "unknown namespace type \"%s\"", name);
}

/* Adds a namespace record to `arr`, refusing a type that is already there. */
static void add_ns(struct ns_rec **arr, size_t *n, const char *name, const char *path)
{
	int type = ns_type_of(name);
	struct ns_rec *ns;

	for (size_t j = 0; j < *n; j++)
		if ((*arr)[j].type == type)
			die("plan", 0, "namespace \"%s\" given twice", name);
	ns = PUSH(*arr, *n);
	ns->name = name;
	ns->type = type;
	ns->path = path;
	ns->fd = -1;
}

/* A cursor over the NUL-terminated strings of the plan buffer. */
struct reader {
	char *pos, *end;
	const char *tag; /* the record being parsed, for messages */
};

static char *next_field(struct reader *r)
{
	char *s = r->pos;

	if (s >= r->end)
		die("plan", 0, "record \"%s\" is missing a field", r->tag);
	r->pos += strlen(s) + 1; /* the buffer is known to end in NUL */
	return s;
}

static unsigned long long parse_unsigned(const struct reader *r, const char *s,
                                         unsigned long long max)
{
	unsigned long long v;
	char *end;

	errno = 0;
	if (s[0] < '0' || s[0] > '9')
		die("plan", 0, "record \"%s\": \"%s\" is not a decimal number", r->tag, s);
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v > max)
		die("plan", errno ? errno : ERANGE, "record \"%s\": bad number \"%s\"", r->tag, s);
	return v;
}

static bool parse_bool(const struct reader *r, const char *s)
{
	if (strcmp(s, "0") == 0)
		return false;
	if (strcmp(s, "1") == 0)
		return true;
	die("plan", 0, "record \"%s\": expected 0 or 1, got \"%s\"", r->tag, s);
}

/* A decimal integer in [min, max], with an optional leading '-'. */
static long long parse_signed(const struct reader *r, const char *s, long long min, long long max)
{
	unsigned long long mag = parse_unsigned(r, s[0] == '-' ? s + 1 : s, (unsigned long long)LLONG_MAX);
	long long v = s[0] == '-' ? -(long long)mag : (long long)mag;

	if (v < min || v > max)
		die("plan", ERANGE, "record \"%s\": %s is outside %lld..%lld", r->tag, s, min, max);
	return v;
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* `seccomp <hex>`: a struct sock_filter array, 8 bytes (16 hex digits) per instruction. */
static void parse_seccomp(struct plan *p, const struct reader *r, const char *hex)
{
	size_t len = strlen(hex), n = len / 16;
	unsigned char *bytes;

	if (p->seccomp != NULL)
		die("plan", 0, "record \"%s\" given twice", r->tag);
	if (len == 0 || len % 16 != 0)
		die("plan", 0, "record \"%s\": %zu hex digits is not a whole number of BPF "
		    "instructions (16 digits each)", r->tag, len);
	if (n > SECCOMP_MAX_INSNS)
		die("plan", E2BIG, "record \"%s\": %zu BPF instructions, more than %d", r->tag, n,
		    SECCOMP_MAX_INSNS);
	p->seccomp = xrealloc(NULL, n * sizeof(struct sock_filter));
	bytes = (unsigned char *)p->seccomp;
	for (size_t i = 0; i < len / 2; i++) {
		int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			die("plan", 0, "record \"%s\": not a hex digit at offset %zu", r->tag, 2 * i);
		bytes[i] = (unsigned char)(hi << 4 | lo);
	}
	p->seccomp_len = n;
}

static rlim_t parse_rlim(const struct reader *r, const char *s)
{
	if (strcmp(s, "-1") == 0)
		return RLIM_INFINITY;
	return (rlim_t)parse_unsigned(r, s, RLIM_INFINITY - 1);
}

/* Step 1: reads fd 3 to EOF (at most PLAN_MAX bytes). The buffer is never freed: argv, envp
 * and every other string of the plan point into it. */
static char *read_plan(size_t *len_out)
{
	char *buf = xrealloc(NULL, PLAN_MAX + 1);
	size_t len = 0;

	for (;;) {
		ssize_t n = read(FD_PLAN, buf + len, PLAN_MAX + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("plan", errno, "reading the plan from fd %d", FD_PLAN);
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > PLAN_MAX)
			die("plan", EFBIG, "the plan is larger than %d bytes", PLAN_MAX);
	}
	close(FD_PLAN);
	if (len > 0 && buf[len - 1] != '\0')
		die("plan", 0, "the plan does not end with NUL (truncated record?)");
	*len_out = len;
	return buf;
}

static void parse_plan(struct plan *p, char *buf, size_t len)
{
	struct reader r = { .pos = buf, .end = buf + len, .tag = "" };

	while (r.pos < r.end) {
		const char *tag = r.tag = next_field(&r);

		if (p->mode == MODE_SANDBOX && strcmp(tag, "hostname") != 0 &&
		    strcmp(tag, "nsfile") != 0)
			die("plan", 0, "record \"%s\" is not valid in sandbox mode", tag);
		if (strcmp(tag, "rootfs") == 0) {
			p->rootfs = next_field(&r);
		} else if (strcmp(tag, "readonly") == 0) {
			p->readonly = parse_bool(&r, next_field(&r));
		} else if (strcmp(tag, "nodev") == 0) {
			p->nodev = parse_bool(&r, next_field(&r));
		} else if (strcmp(tag, "propagation") == 0) {
			p->have_propagation = true;
			p->propagation = parse_unsigned(&r, next_field(&r), ULONG_MAX);
		} else if (strcmp(tag, "hostname") == 0) {
			p->hostname = next_field(&r);
		} else if (strcmp(tag, "ns") == 0) {
			const char *name = next_field(&r);

			add_ns(&p->ns, &p->n_ns, name, next_field(&r));
		} else if (strcmp(tag, "nsfile") == 0) {
			const char *name = next_field(&r);
			const char *path = next_field(&r);
			int type = ns_type_of(name);

			/* /proc/self/ns/pid would be our own pid namespace, not the new one, and a
			 * mount namespace cannot be pinned from inside itself. */
			if (type == CLONE_NEWPID || type == CLONE_NEWNS)
				die("plan", 0, "nsfile cannot pin a %s namespace", name);
			if (path[0] != '/')
				die("plan", 0, "nsfile path \"%s\" is not absolute", path);
			add_ns(&p->nsfiles, &p->n_nsfiles, name, path);
		} else if (strcmp(tag, "mount") == 0) {
			struct mount_rec *m = PUSH(p->mounts, p->n_mounts);

			m->source = next_field(&r);
			m->target = next_field(&r);
			m->fstype = next_field(&r);
			m->flags = parse_unsigned(&r, next_field(&r), ULONG_MAX);
			m->data = next_field(&r);
			if (m->target[0] != '/')
				die("plan", 0, "mount target \"%s\" is not absolute", m->target);
		} else if (strcmp(tag, "mountprop") == 0) {
			struct prop_rec *mp = PUSH(p->props, p->n_props);

			mp->target = next_field(&r);
			mp->flags = parse_unsigned(&r, next_field(&r), ULONG_MAX);
		} else if (strcmp(tag, "masked") == 0) {
			*PUSH(p->masked, p->n_masked) = next_field(&r);
		} else if (strcmp(tag, "readonlypath") == 0) {
			*PUSH(p->ropaths, p->n_ropaths) = next_field(&r);
		} else if (strcmp(tag, "sysctl") == 0) {
			struct sysctl_rec *s = PUSH(p->sysctls, p->n_sysctls);

			s->key = next_field(&r);
			s->value = next_field(&r);
		} else if (strcmp(tag, "rlimit") == 0) {
			struct rlimit_rec *rl = PUSH(p->rlimits, p->n_rlimits);

			rl->resource = (int)parse_unsigned(&r, next_field(&r), RLIM_NLIMITS - 1);
			rl->lim.rlim_cur = parse_rlim(&r, next_field(&r));
			rl->lim.rlim_max = parse_rlim(&r, next_field(&r));
		} else if (strcmp(tag, "uid") == 0) {
			p->have_uid = true;
			p->uid = (uid_t)parse_unsigned(&r, next_field(&r), UINT32_MAX - 1);
		} else if (strcmp(tag, "gid") == 0) {
			p->have_gid = true;
			p->gid = (gid_t)parse_unsigned(&r, next_field(&r), UINT32_MAX - 1);
		} else if (strcmp(tag, "group") == 0) {
			*PUSH(p->groups, p->n_groups) =
				(gid_t)parse_unsigned(&r, next_field(&r), UINT32_MAX - 1);
		} else if (strcmp(tag, "caps") == 0) {
			p->have_caps = true;
			p->cap_bounding = parse_unsigned(&r, next_field(&r), UINT64_MAX);
			p->cap_effective = parse_unsigned(&r, next_field(&r), UINT64_MAX);
			p->cap_permitted = parse_unsigned(&r, next_field(&r), UINT64_MAX);
			p->cap_inheritable = parse_unsigned(&r, next_field(&r), UINT64_MAX);
			p->cap_ambient = parse_unsigned(&r, next_field(&r), UINT64_MAX);
		} else if (strcmp(tag, "oomscoreadj") == 0) {
			p->have_oom = true;
			p->oom_score_adj = (int)parse_signed(&r, next_field(&r), -1000, 1000);
		} else if (strcmp(tag, "cwd") == 0) {
			p->cwd = next_field(&r);
		} else if (strcmp(tag, "nonewprivs") == 0) {
			p->nonewprivs = parse_bool(&r, next_field(&r));
		} else if (strcmp(tag, "arg") == 0) {
			*PUSH(p->argv, p->n_args) = next_field(&r);
		} else if (strcmp(tag, "env") == 0) {
			char *e = next_field(&r);

			if (strchr(e, '=') == NULL)
				die("plan", 0, "env entry \"%s\" has no '='", e);
			*PUSH(p->envp, p->n_env) = e;
		} else if (strcmp(tag, "tty") == 0) {
			p->tty = parse_bool(&r, next_field(&r));
		} else if (strcmp(tag, "seccomp") == 0) {
			parse_seccomp(p, &r, next_field(&r));
		} else if (strcmp(tag, "seccompflags") == 0) {
			p->have_seccomp_flags = true;
			p->seccomp_flags = (unsigned int)parse_unsigned(&r, next_field(&r), UINT32_MAX);
		} else {
			die("plan", 0, "unknown record \"%s\"", tag);
		}
	}

	/* Both arrays end with NULL for execve; the terminator is not counted. */
	PUSH(p->argv, p->n_args);
	p->n_args--;
	PUSH(p->envp, p->n_env);
	p->n_env--;

	if (p->mode == MODE_SANDBOX) {
		bool new_uts = false;

		for (size_t i = 0; i < p->n_nsfiles; i++)
			if (p->nsfiles[i].type == CLONE_NEWUTS)
				new_uts = true;
		if (p->hostname != NULL && !new_uts)
			die("plan", 0, "\"hostname\" needs an \"nsfile uts\" (it would rename the host)");
		return;
	}
	if (p->n_nsfiles)
		die("plan", 0, "\"nsfile\" records are for sandbox mode only");
	if (p->have_seccomp_flags && p->seccomp == NULL)
		die("plan", 0, "\"seccompflags\" without a \"seccomp\" record");
	if (p->n_args == 0 || p->argv[0][0] == '\0')
		die("plan", 0, "no \"arg\" record (the program to run)");
	if (p->mode == MODE_CREATE) {
		bool new_mnt = false;

		for (size_t i = 0; i < p->n_ns; i++)
			if (p->ns[i].type == CLONE_NEWNS && p->ns[i].path[0] == '\0')
				new_mnt = true;
		if (p->rootfs == NULL || p->rootfs[0] != '/')
			die("plan", 0, "create needs an absolute \"rootfs\"");
		if (!new_mnt)
			die("plan", 0, "create needs a new mount namespace (ns mnt with an empty path)");
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Fds, namespaces and the pid-namespace fork                                                 */
/* ------------------------------------------------------------------------------------------ */

/* Step 1, before anything else: nothing of ours may reach the container program. fds 3-5
 * become close-on-exec (fd 4 must stay open until the final execve: its EOF is the helper's
 * success signal), and whatever else the helper's process happened to pass down is closed. */
static void secure_fds(enum mode mode)
{
	for (int fd = FD_PLAN; fd <= FD_START; fd++) {
		int flags = fcntl(fd, F_GETFD);

		if (flags < 0) {
			/* fd 5 only exists in create mode. */
			if (fd == FD_START && mode != MODE_CREATE)
				continue;
			die("fd", errno, "fd %d is not open", fd);
		}
		if (fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0)
			die("fd", errno, "setting FD_CLOEXEC on fd %d", fd);
	}
	if (close_range(FD_START + 1, ~0U, 0) < 0) {
		/* Kernels before 5.9: close one by one up to the fd limit. */
		struct rlimit rl;
		int max = 65536;

		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
		    rl.rlim_cur < (rlim_t)INT_MAX)
			max = (int)rl.rlim_cur;
		for (int fd = FD_START + 1; fd < max; fd++)
			close(fd);
	}
}

/* Steps 2 and 3: opens every namespace file first (their paths may live in namespaces we
 * are about to leave), joins them with the mount namespace last, then unshares the rest in
 * one call. Returns true if the pid namespace for our children changed. */
static bool enter_namespaces(struct plan *p, bool *new_uts)
{
	bool pid_changed = false;
	int unshare_flags = 0;

	*new_uts = false;
	for (size_t i = 0; i < p->n_ns; i++) {
		struct ns_rec *ns = &p->ns[i];

		if (ns->path[0] == '\0')
			continue;
		ns->fd = open(ns->path, O_RDONLY | O_CLOEXEC);
		if (ns->fd < 0)
			die("ns", errno, "opening %s namespace %s", ns->name, ns->path);
	}
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < p->n_ns; i++) {
			struct ns_rec *ns = &p->ns[i];

			if (ns->fd < 0 || (ns->type == CLONE_NEWNS) != (pass == 1))
				continue;
			if (setns(ns->fd, ns->type) < 0)
				die("ns", errno, "joining %s namespace %s", ns->name, ns->path);
			close(ns->fd);
			ns->fd = -1;
			if (ns->type == CLONE_NEWPID)
				pid_changed = true;
		}
	}
	for (size_t i = 0; i < p->n_ns; i++) {
		if (p->ns[i].path[0] != '\0')
			continue;
		unshare_flags |= p->ns[i].type;
		if (p->ns[i].type == CLONE_NEWPID)
			pid_changed = true;
		if (p->ns[i].type == CLONE_NEWUTS)
			*new_uts = true;
	}
	if (unshare_flags != 0 && unshare(unshare_flags) < 0) {
		char names[64] = "";

		for (size_t i = 0; i < p->n_ns; i++) {
			if (p->ns[i].path[0] != '\0')
				continue;
			if (names[0] != '\0')
				strcat(names, ",");
			strcat(names, p->ns[i].name);
		}
		die("ns", errno, "unsharing namespaces %s", names);
	}
	return pid_changed;
}

/*
 * Step 4: a pid namespace only applies to children, so fork. The parent (the intermediate)
 * reports the child's pid and leaves; the child continues as the container process.
 *
 * The child waits on a gate pipe until the intermediate has exited, so that the helper always
 * reads `pid N` before anything the child may write (an `error` line in particular).
 */
static void fork_for_pid_ns(bool pid_changed)
{
	int gate[2];
	pid_t pid;
	char c;

	if (!pid_changed) {
		sync_line("pid %d\n", (int)getpid());
		return;
	}
	if (pipe2(gate, O_CLOEXEC) < 0)
		die("fork", errno, "creating the gate pipe");
	pid = fork();
	if (pid < 0)
		die("fork", errno, "forking into the pid namespace");
	if (pid > 0) {
		close(gate[0]);
		sync_line("pid %d\n", (int)pid);
		_exit(0); /* closes gate[1]: the child goes on */
	}
	close(gate[1]);
	while (read(gate[0], &c, 1) < 0 && errno == EINTR)
		;
	close(gate[0]);
}

/* ------------------------------------------------------------------------------------------ */
/* Paths inside the rootfs                                                                    */
/* ------------------------------------------------------------------------------------------ */

enum target_kind { TARGET_DIR, TARGET_FILE };

/* Opens `rel` (a path below the rootfs that is known to contain no symlink and no "..")
 * as an O_PATH fd, with the kernel enforcing both facts. "" is the rootfs itself. */
static int open_in_root(int rootfd, const char *rel, int extra_flags)
{
	struct open_how how = {
		.flags = (uint64_t)(O_PATH | O_CLOEXEC | extra_flags),
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};

	return (int)syscall(SYS_openat2, rootfd, rel[0] != '\0' ? rel : ".", &how, sizeof how);
}

/*
 * Resolves the container path `target` under the rootfs as if the rootfs were "/": walks it
 * one component at a time, following symlinks by hand (an absolute link restarts at the
 * rootfs, ".." never climbs above it) and creating what is missing (directories, and for the
 * last component an empty file when `kind` is TARGET_FILE). `resolved` receives the
 * symlink-free path relative to the rootfs ("" for the rootfs itself). Returns an O_PATH fd
 * of the target, opened with openat2(RESOLVE_IN_ROOT|RESOLVE_NO_SYMLINKS) so the kernel
 * vouches that it is where `resolved` says. `stage` prefixes error messages.
 */
static int resolve_in_rootfs(int rootfd, const char *rootfs, const char *target,
                             enum target_kind kind, char resolved[PATH_MAX], const char *stage)
{
	char rest[2 * PATH_MAX], spliced[2 * PATH_MAX], link[PATH_MAX], name[NAME_MAX + 1];
	size_t rlen = 0;
	int links = 0, cur, fd;
	char *p;

	if (strlen(target) >= sizeof rest)
		die(stage, ENAMETOOLONG, "target %s", target);
	strcpy(rest, target);
	resolved[0] = '\0';
	cur = open_in_root(rootfd, "", O_DIRECTORY);
	if (cur < 0)
		die(stage, errno, "opening rootfs %s", rootfs);

	for (p = rest;;) {
		struct stat st;
		size_t len;
		bool last;
		char *end;

		while (*p == '/')
			p++;
		if (*p == '\0')
			break;
		end = strchrnul(p, '/');
		len = (size_t)(end - p);
		if (len > NAME_MAX)
			die(stage, ENAMETOOLONG, "component of %s", target);
		memcpy(name, p, len);
		name[len] = '\0';
		p = end;
		last = p[strspn(p, "/")] == '\0';

		if (strcmp(name, ".") == 0)
			continue;
		if (strcmp(name, "..") == 0) {
			/* Lexical: `resolved` has no symlinks, so dropping its last component is
			 * exactly the parent; at the rootfs, ".." stays put. */
			char *slash = strrchr(resolved, '/');

			rlen = slash ? (size_t)(slash - resolved) : 0;
			resolved[rlen] = '\0';
			close(cur);
			cur = open_in_root(rootfd, resolved, O_DIRECTORY);
			if (cur < 0)
				die(stage, errno, "opening %s/%s (resolving %s)", rootfs, resolved,
				    target);
			continue;
		}

		if (fstatat(cur, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT)
				die(stage, errno, "inspecting %s/%s%s%s (resolving %s)", rootfs,
				    resolved, rlen ? "/" : "", name, target);
			if (last && kind == TARGET_FILE) {
				fd = openat(cur, name,
				            O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
				if (fd < 0 && errno != EEXIST)
					die(stage, errno, "creating file %s/%s%s%s (for %s)", rootfs,
					    resolved, rlen ? "/" : "", name, target);
				if (fd >= 0)
					close(fd);
			} else if (mkdirat(cur, name, 0755) < 0 && errno != EEXIST) {
				die(stage, errno, "creating directory %s/%s%s%s (for %s)", rootfs,
				    resolved, rlen ? "/" : "", name, target);
			}
			if (fstatat(cur, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
				die(stage, errno, "inspecting %s/%s%s%s (resolving %s)", rootfs,
				    resolved, rlen ? "/" : "", name, target);
		}

		if (S_ISLNK(st.st_mode)) {
			ssize_t n;

			if (++links > MAX_SYMLINKS)
				die(stage, ELOOP, "resolving %s", target);
			n = readlinkat(cur, name, link, sizeof link - 1);
			if (n < 0)
				die(stage, errno, "reading symlink %s/%s%s%s (resolving %s)", rootfs,
				    resolved, rlen ? "/" : "", name, target);
			link[n] = '\0';
			/* The rest of the walk is now the link's text followed by what was left. */
			if ((size_t)snprintf(spliced, sizeof spliced, "%s%s", link, p) >= sizeof spliced)
				die(stage, ENAMETOOLONG, "resolving %s", target);
			strcpy(rest, spliced);
			p = rest;
			if (link[0] == '/') {
				/* Absolute: from the rootfs, never from the host's "/". */
				rlen = 0;
				resolved[0] = '\0';
				close(cur);
				cur = open_in_root(rootfd, "", O_DIRECTORY);
				if (cur < 0)
					die(stage, errno, "opening rootfs %s", rootfs);
			}
			continue;
		}

		if (rlen + (rlen ? 1 : 0) + len >= PATH_MAX)
			die(stage, ENAMETOOLONG, "resolving %s", target);
		if (rlen)
			resolved[rlen++] = '/';
		memcpy(resolved + rlen, name, len + 1);
		rlen += len;

		if (!last) {
			if (!S_ISDIR(st.st_mode))
				die(stage, ENOTDIR, "%s/%s (resolving %s)", rootfs, resolved, target);
			fd = openat(cur, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (fd < 0)
				die(stage, errno, "opening %s/%s (resolving %s)", rootfs, resolved,
				    target);
			close(cur);
			cur = fd;
		}
	}
	close(cur);

	fd = open_in_root(rootfd, resolved, 0);
	if (fd < 0)
		die(stage, errno, "opening %s/%s (resolved from %s)", rootfs, resolved, target);
	return fd;
}

/* The name under which mount(2) reaches an O_PATH fd: the magic link resolves to exactly the
 * object we opened, so no path is looked up again. */
static const char *fd_path(int fd, char buf[32])
{
	snprintf(buf, 32, "/proc/self/fd/%d", fd);
	return buf;
}

/* ------------------------------------------------------------------------------------------ */
/* Mounts (create mode)                                                                       */
/* ------------------------------------------------------------------------------------------ */

/* The flags of the mount at `path` that a bind remount would otherwise reset. */
static unsigned long mount_flags_of(const char *stage, const char *path)
{
	static const struct {
		unsigned long st, ms;
	} map[] = {
		{ ST_NOSUID, MS_NOSUID },     { ST_NODEV, MS_NODEV },
		{ ST_NOEXEC, MS_NOEXEC },     { ST_NOATIME, MS_NOATIME },
		{ ST_NODIRATIME, MS_NODIRATIME }, { ST_RELATIME, MS_RELATIME },
	};
	unsigned long flags = 0;
	struct statvfs sv;

	if (statvfs(path, &sv) < 0)
		die(stage, errno, "statvfs %s", path);
	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		if (sv.f_flag & map[i].st)
			flags |= map[i].ms;
	return flags;
}

/* Makes the mount at `path` read-only, keeping its other flags. `shown` names it in errors. */
static void remount_readonly(const char *stage, const char *path, const char *shown)
{
	unsigned long flags = mount_flags_of(stage, path);

	if (mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | flags, NULL) < 0)
		die(stage, errno, "remounting %s read-only", shown);
}

/* The /proc entries a bind mount may cover, as rootfs-relative resolved paths (Kata rustjail
 * mount.rs check_proc_mount; the helper applies the same list to the requested text). */
static const char *const proc_bind_allowed[] = {
	"proc/cpuinfo", "proc/diskstats", "proc/meminfo", "proc/stat",
	"proc/swaps",   "proc/uptime",    "proc/loadavg", "proc/net/dev",
};

/*
 * The helper checks the /proc rule on the requested destination text; a symlink in the rootfs
 * (`myproc -> /proc`) would get around that, so it is applied again here to the resolved,
 * symlink-free path: on /proc itself only a proc filesystem (or a bind of one, as upstream);
 * below /proc only binds onto the allow-listed files. /proc/net is procfs's own link to
 * self/net, so once a proc is mounted /proc/net/dev resolves to proc/<pid>/net/dev: that form
 * counts as proc/net/dev.
 */
static void check_proc_target(const struct mount_rec *m, const char *resolved, bool bind)
{
	const char *rest;

	if (strcmp(resolved, "proc") == 0) {
		struct statfs sf;

		if (!bind && strcmp(m->fstype, "proc") == 0)
			return;
		if (bind && statfs(m->source, &sf) == 0 && sf.f_type == PROC_SUPER_MAGIC)
			return;
		die("mount", 0,
		    "target %s resolves to /proc inside the rootfs: only a proc filesystem may be "
		    "mounted on /proc, got %s %s",
		    m->target, bind ? "a bind of" : "type", bind ? m->source : m->fstype);
	}
	if (strncmp(resolved, "proc/", 5) != 0)
		return;
	if (bind) {
		for (size_t i = 0; i < sizeof proc_bind_allowed / sizeof proc_bind_allowed[0]; i++)
			if (strcmp(resolved, proc_bind_allowed[i]) == 0)
				return;
		rest = resolved + 5 + strspn(resolved + 5, "0123456789");
		if (rest != resolved + 5 && strcmp(rest, "/net/dev") == 0)
			return;
	}
	die("mount", 0,
	    "target %s resolves to /%s inside the rootfs: mounting over anything below /proc is "
	    "not allowed (only binds onto /proc/cpuinfo, diskstats, meminfo, stat, swaps, uptime, "
	    "loadavg and /proc/net/dev)",
	    m->target, resolved);
}

/*
 * One `mount` record. The target is created and resolved inside the rootfs, and the mount is
 * made on the resulting fd. A bind mount ignores every flag but MS_BIND|MS_REC, so the others
 * (ro, nosuid, ...) are applied by a remount of the new mount. Propagation bits in the flags
 * would turn mount(2) into a pure propagation change, so they are split off: when there are
 * any, *prop_target receives the symlink-free container path of the new mount, for
 * setup_rootfs to apply them after pivot_root (after a deferred "/" propagation, which would
 * otherwise override them). Returns true if this record mounted a tmpfs on /dev.
 */
static bool mount_one(int rootfd, const char *rootfs, const struct mount_rec *m,
                      char **prop_target)
{
	unsigned long prop = m->flags & PROPAGATION_FLAGS;
	unsigned long flags = m->flags & ~PROPAGATION_FLAGS;
	bool bind = (flags & MS_BIND) != 0;
	/* What a bind needs applied by remount: everything but bind/rec (and remount itself). */
	unsigned long remount = bind ? flags & ~(BIND_FLAGS | (unsigned long)MS_REMOUNT) : 0;
	enum target_kind kind = TARGET_DIR;
	char resolved[PATH_MAX], fdbuf[32];
	int fd;

	if (bind) {
		struct stat st;

		if (stat(m->source, &st) < 0)
			die("mount", errno, "bind source %s (for %s)", m->source, m->target);
		if (!S_ISDIR(st.st_mode))
			kind = TARGET_FILE;
	}
	fd = resolve_in_rootfs(rootfd, rootfs, m->target, kind, resolved, "mount");
	if (resolved[0] == '\0')
		die("mount", EINVAL, "target %s is the rootfs itself", m->target);
	check_proc_target(m, resolved, bind);

	if (mount(m->source, fd_path(fd, fdbuf), m->fstype[0] ? m->fstype : NULL,
	          bind ? flags & BIND_FLAGS : flags, m->data[0] ? m->data : NULL) < 0)
		die("mount", errno, "mounting %s (%s) on %s (%s/%s) with flags %#lx data \"%s\"",
		    m->source, m->fstype[0] ? m->fstype : "no type", m->target, rootfs, resolved,
		    m->flags, m->data);
	close(fd);

	if (remount != 0) {
		/* The fd we had names the directory underneath; reopen to get the new mount. */
		fd = open_in_root(rootfd, resolved, 0);
		if (fd < 0)
			die("mount", errno, "reopening %s/%s after mounting", rootfs, resolved);
		if (mount(NULL, fd_path(fd, fdbuf), NULL, MS_BIND | MS_REMOUNT | remount, NULL) < 0)
			die("mount", errno, "remounting bind %s on %s with flags %#lx", m->source,
			    m->target, remount);
		close(fd);
	}
	if (prop != 0) {
		*prop_target = xrealloc(NULL, strlen(resolved) + 2);
		(*prop_target)[0] = '/';
		strcpy(*prop_target + 1, resolved);
	}
	return !bind && strcmp(resolved, "dev") == 0 && strcmp(m->fstype, "tmpfs") == 0;
}

/*
 * Fills a /dev tmpfs (step 5): the default device nodes, and the symlinks every program
 * expects. mknod can be refused (no CAP_MKNOD, a user namespace); then the host's node is
 * bind-mounted onto an empty file instead.
 */
static void populate_dev(int rootfd, const char *rootfs)
{
	static const struct {
		const char *name;
		unsigned int major, minor;
	} nodes[] = {
		{ "null", 1, 3 }, { "zero", 1, 5 },   { "full", 1, 7 },
		{ "tty", 5, 0 },  { "random", 1, 8 }, { "urandom", 1, 9 },
	};
	static const struct {
		const char *name, *target;
	} links[] = {
		{ "fd", "/proc/self/fd" },         { "stdin", "/proc/self/fd/0" },
		{ "stdout", "/proc/self/fd/1" },   { "stderr", "/proc/self/fd/2" },
		{ "ptmx", "pts/ptmx" },
	};
	char fdbuf[32], host[32];
	int devfd = open_in_root(rootfd, "dev", O_DIRECTORY);

	if (devfd < 0)
		die("dev", errno, "opening %s/dev", rootfs);
	for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
		const char *name = nodes[i].name;
		int fd;

		if (mknodat(devfd, name, S_IFCHR | 0666, makedev(nodes[i].major, nodes[i].minor)) == 0) {
			/* mknod honours the umask; the nodes must be 0666 regardless. */
			if (fchmodat(devfd, name, 0666, 0) < 0)
				die("dev", errno, "chmod /dev/%s", name);
			continue;
		}
		if (errno == EEXIST) /* the plan put something there already */
			continue;
		fd = openat(devfd, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0666);
		if (fd < 0)
			die("dev", errno, "creating /dev/%s (mknod was refused)", name);
		close(fd);
		fd = openat(devfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			die("dev", errno, "opening /dev/%s", name);
		snprintf(host, sizeof host, "/dev/%s", name);
		if (mount(host, fd_path(fd, fdbuf), NULL, MS_BIND, NULL) < 0)
			die("dev", errno, "bind-mounting host %s (mknod was refused)", host);
		close(fd);
	}
	for (size_t i = 0; i < sizeof links / sizeof links[0]; i++)
		if (symlinkat(links[i].target, devfd, links[i].name) < 0 && errno != EEXIST)
			die("dev", errno, "symlink /dev/%s -> %s", links[i].name, links[i].target);
	close(devfd);
}

/* pivot_root with both arguments ".": the old root ends up stacked on top of the new one,
 * where it can be detached without needing a directory for it inside the rootfs. */
static void pivot_into(int rootfd, const char *rootfs)
{
	if (fchdir(rootfd) < 0)
		die("pivot", errno, "chdir to rootfs %s", rootfs);
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		die("pivot", errno, "pivot_root into %s", rootfs);
	/* Keep the detach below from propagating to the host's mounts. */
	if (mount(NULL, ".", NULL, MS_SLAVE | MS_REC, NULL) < 0)
		die("pivot", errno, "making the old root a slave");
	if (umount2(".", MNT_DETACH) < 0)
		die("pivot", errno, "detaching the old root");
	if (chdir("/") < 0)
		die("pivot", errno, "chdir to the new root");
}

static void write_sysctl(const struct sysctl_rec *s)
{
	char path[PATH_MAX];
	size_t len = strlen(s->value);
	ssize_t n;
	int fd;

	if ((size_t)snprintf(path, sizeof path, "/proc/sys/%s", s->key) >= sizeof path)
		die("sysctl", ENAMETOOLONG, "key %s", s->key);
	for (char *c = path + strlen("/proc/sys/"); *c; c++)
		if (*c == '.')
			*c = '/';
	fd = open(path, O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		die("sysctl", errno, "opening %s for %s", path, s->key);
	n = write(fd, s->value, len);
	if (n < 0 || (size_t)n != len)
		die("sysctl", n < 0 ? errno : EIO, "writing \"%s\" to %s", s->value, path);
	close(fd);
}

/* bind the path onto itself and make that read-only; a missing path is not an error. */
static void readonly_path(const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0) {
		if (errno == ENOENT)
			return;
		die("readonlypath", errno, "inspecting %s", path);
	}
	if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0)
		die("readonlypath", errno, "binding %s onto itself", path);
	remount_readonly("readonlypath", path, path);
}

/* Hide a path: /dev/null over a file, an empty read-only tmpfs over a directory. */
static void mask_path(const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0) {
		if (errno == ENOENT)
			return;
		die("masked", errno, "inspecting %s", path);
	}
	if (S_ISDIR(st.st_mode)) {
		if (mount("tmpfs", path, "tmpfs", MS_RDONLY, NULL) < 0)
			die("masked", errno, "mounting an empty tmpfs over %s", path);
	} else if (mount("/dev/null", path, NULL, MS_BIND, NULL) < 0) {
		die("masked", errno, "binding /dev/null over %s", path);
	}
}

/* Step 5 in full: everything done to the filesystem view of a new container. */
static void apply_nodev(const struct plan *p, bool dev_tmpfs);

static void setup_rootfs(const struct plan *p)
{
	unsigned long before = MS_SLAVE | MS_REC, after = 0;
	/* Per mount record: the container path to apply its propagation bits to, or NULL. */
	char **prop_targets = xrealloc(NULL, (p->n_mounts + 1) * sizeof *prop_targets);
	bool dev_tmpfs = false;
	int rootfd;

	/* Without a `propagation` record we still make "/" a recursive slave: otherwise the
	 * mounts below could propagate back into the helper's namespace. pivot_root refuses a
	 * shared root and an unbindable one cannot be bound, so those are applied afterwards. */
	if (p->have_propagation) {
		before = p->propagation;
		if (before & (MS_SHARED | MS_UNBINDABLE)) {
			after = before;
			before = MS_SLAVE | MS_REC;
		}
	}
	if (before != 0 && mount(NULL, "/", NULL, before, NULL) < 0)
		die("mount", errno, "setting propagation %#lx on /", before);

	if (mount(p->rootfs, p->rootfs, NULL, MS_BIND | MS_REC, NULL) < 0)
		die("mount", errno, "binding rootfs %s onto itself", p->rootfs);
	/* Opened after the bind, so this fd is the new mount and all that follows goes in it. */
	rootfd = open(p->rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		die("mount", errno, "opening rootfs %s", p->rootfs);

	for (size_t i = 0; i < p->n_mounts; i++) {
		prop_targets[i] = NULL;
		if (mount_one(rootfd, p->rootfs, &p->mounts[i], &prop_targets[i]))
			dev_tmpfs = true;
	}
	if (dev_tmpfs)
		populate_dev(rootfd, p->rootfs);

	pivot_into(rootfd, p->rootfs);
	close(rootfd);

	/* From here on paths are container paths and "/" is the rootfs: symlinks cannot leave. */
	if (p->nodev)
		apply_nodev(p, dev_tmpfs);
	if (after != 0 && mount(NULL, "/", NULL, after, NULL) < 0)
		die("mount", errno, "setting propagation %#lx on the new /", after);
	for (size_t i = 0; i < p->n_mounts; i++) {
		unsigned long flags = p->mounts[i].flags;

		if (prop_targets[i] == NULL)
			continue;
		if (mount(NULL, prop_targets[i], NULL,
		          (flags & PROPAGATION_FLAGS) | (flags & MS_REC), NULL) < 0)
			die("mount", errno, "setting propagation %#lx on %s", flags & PROPAGATION_FLAGS,
			    p->mounts[i].target);
		free(prop_targets[i]);
	}
	free(prop_targets);
	for (size_t i = 0; i < p->n_props; i++)
		if (mount(NULL, p->props[i].target, NULL, p->props[i].flags, NULL) < 0)
			die("mountprop", errno, "setting propagation %#lx on %s", p->props[i].flags,
			    p->props[i].target);
	/* sysctls first: readonly paths usually include /proc/sys. */
	for (size_t i = 0; i < p->n_sysctls; i++)
		write_sysctl(&p->sysctls[i]);
	for (size_t i = 0; i < p->n_ropaths; i++)
		readonly_path(p->ropaths[i]);
	for (size_t i = 0; i < p->n_masked; i++)
		mask_path(p->masked[i]);
	if (p->readonly)
		remount_readonly("readonly", "/", "the root filesystem");
}

/* `nodev` (after pivot_root): MOUNT_ATTR_NODEV on the whole tree below "/" (mount_setattr with
 * AT_RECURSIVE, Linux 5.12+, keeps every other flag), then cleared again on the /dev tmpfs and
 * the devpts instances the plan mounted, which hold only the nodes kata-init made and ptys.
 * Without a device cgroup this is what keeps a device node shipped in the image (say a block
 * device of the guest disk) from being opened by the container's root. */
static void apply_nodev(const struct plan *p, bool dev_tmpfs)
{
	struct mount_attr set = { .attr_set = MOUNT_ATTR_NODEV };
	struct mount_attr clr = { .attr_clr = MOUNT_ATTR_NODEV };

	if (syscall(SYS_mount_setattr, AT_FDCWD, "/", AT_RECURSIVE, &set, sizeof set) < 0)
		die("nodev", errno, "mount_setattr nodev on the container's mounts");
	if (dev_tmpfs && syscall(SYS_mount_setattr, AT_FDCWD, "/dev", 0, &clr, sizeof clr) < 0)
		die("nodev", errno, "clearing nodev on the /dev tmpfs");
	for (size_t i = 0; i < p->n_mounts; i++) {
		if (strcmp(p->mounts[i].fstype, "devpts") != 0)
			continue;
		if (syscall(SYS_mount_setattr, AT_FDCWD, p->mounts[i].target, 0, &clr, sizeof clr) < 0)
			die("nodev", errno, "clearing nodev on the devpts at %s", p->mounts[i].target);
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Process attributes and exec                                                                */
/* ------------------------------------------------------------------------------------------ */

/* Step 8. rlimits go first: raising a hard limit needs privileges we are about to drop. */
/* Step 8a: HOME when the spec's env has none, as Kata and runc do: the home directory of the
 * process's uid in the container's own /etc/passwd (read after pivot_root or after joining the
 * container's mount namespace, never the guest's), else "/". A missing or unreadable passwd
 * file, or a uid without an entry, gives "/". The passwd text is parsed here by hand: libc's
 * getpwuid would consult NSS modules of the guest, not the container's file. */
static void ensure_home(struct plan *p)
{
	static char home_env[PATH_MAX + 6];
	const char *home = "/";
	char line[4096];
	uid_t uid = p->have_uid ? p->uid : getuid();
	FILE *f;

	for (size_t i = 0; i < p->n_env; i++)
		if (strncmp(p->envp[i], "HOME=", 5) == 0)
			return;
	f = fopen("/etc/passwd", "re");
	if (f != NULL) {
		while (fgets(line, sizeof line, f) != NULL) {
			/* name:password:uid:gid:gecos:home:shell */
			char *field[7] = { 0 }, *cur = line, *end;
			size_t n = 0;
			unsigned long long id;

			line[strcspn(line, "\n")] = '\0';
			while (n < 7) {
				field[n++] = cur;
				cur = strchr(cur, ':');
				if (cur == NULL)
					break;
				*cur++ = '\0';
			}
			if (n < 6 || field[2][0] == '\0')
				continue;
			errno = 0;
			id = strtoull(field[2], &end, 10);
			if (errno != 0 || *end != '\0' || id != (unsigned long long)uid)
				continue;
			if (field[5][0] != '\0' && strlen(field[5]) < PATH_MAX) {
				snprintf(home_env, sizeof home_env, "HOME=%s", field[5]);
				home = NULL;
			}
			break;
		}
		fclose(f);
	}
	if (home != NULL)
		snprintf(home_env, sizeof home_env, "HOME=%s", home);
	/* HOME takes the terminator's slot; a new NULL terminator follows (not counted). */
	p->envp[p->n_env++] = home_env;
	PUSH(p->envp, p->n_env);
	p->n_env--;
}

/* Step 1b: the OOM score adjustment, while /proc is still the helper's (upstream writes it
 * before pivoting too); the pid-namespace child inherits it. */
static void write_oom_score_adj(const struct plan *p)
{
	char text[16];
	int fd, len;

	if (!p->have_oom)
		return;
	len = snprintf(text, sizeof text, "%d", p->oom_score_adj);
	fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		die("oom", errno, "opening /proc/self/oom_score_adj");
	if (write(fd, text, (size_t)len) != len)
		die("oom", errno, "writing %s to /proc/self/oom_score_adj", text);
	close(fd);
}

/* The highest capability number this kernel knows (what /proc/sys/kernel/cap_last_cap says,
 * found without /proc: PR_CAPBSET_READ fails with EINVAL beyond it). */
static int last_cap(void)
{
	int cap = 0;

	while (cap < 63 && prctl(PR_CAPBSET_READ, (unsigned long)(cap + 1), 0, 0, 0) >= 0)
		cap++;
	return cap;
}

static uint64_t known_caps_mask(int last)
{
	return last >= 63 ? UINT64_MAX : (UINT64_C(1) << (last + 1)) - 1;
}

/* Step 8, before the uid change: every capability outside the plan's bounding set leaves the
 * bounding set (needs CAP_SETPCAP, still ours), and keepcaps keeps the permitted set across
 * setresuid to a non-zero uid. */
static void drop_bounding(const struct plan *p, int last)
{
	for (int cap = 0; cap <= last; cap++) {
		if (p->cap_bounding & (UINT64_C(1) << cap))
			continue;
		if (prctl(PR_CAPBSET_DROP, (unsigned long)cap, 0, 0, 0) < 0)
			die("caps", errno, "dropping capability %d from the bounding set", cap);
	}
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
		die("caps", errno, "prctl(PR_SET_KEEPCAPS, 1)");
}

/* Step 8, after the uid change: effective, permitted and inheritable with one capset(2), then
 * the ambient set (a non-root process keeps capabilities across execve only through it). */
static void apply_caps(const struct plan *p, int last)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct data[2];
	uint64_t known = known_caps_mask(last);
	uint64_t eff = p->cap_effective & known, prm = p->cap_permitted & known;
	uint64_t inh = p->cap_inheritable & known, amb = p->cap_ambient & known;

	data[0].effective = (uint32_t)eff;
	data[1].effective = (uint32_t)(eff >> 32);
	data[0].permitted = (uint32_t)prm;
	data[1].permitted = (uint32_t)(prm >> 32);
	data[0].inheritable = (uint32_t)inh;
	data[1].inheritable = (uint32_t)(inh >> 32);
	if (syscall(SYS_capset, &hdr, data) < 0)
		die("caps", errno,
		    "capset effective %#llx permitted %#llx inheritable %#llx (effective must be "
		    "within permitted, inheritable within bounding %#llx)",
		    (unsigned long long)eff, (unsigned long long)prm, (unsigned long long)inh,
		    (unsigned long long)(p->cap_bounding & known));
	/* Kernels before 4.3 have no ambient set (EINVAL): nothing to clear, nothing to raise. */
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0) {
		if (errno != EINVAL)
			die("caps", errno, "clearing the ambient set");
	} else {
		for (int cap = 0; cap <= last; cap++) {
			if (!(amb & (UINT64_C(1) << cap)))
				continue;
			if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, (unsigned long)cap, 0, 0) < 0)
				die("caps", errno,
				    "raising ambient capability %d (it must be in the permitted and "
				    "inheritable sets)",
				    cap);
		}
	}
	if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0)
		die("caps", errno, "prctl(PR_SET_KEEPCAPS, 0)");
}

/*
 * Loads the plan's seccomp filter into this process (seccomp(2) SECCOMP_SET_MODE_FILTER with the
 * plan's flags; prctl(PR_SET_SECCOMP) on a kernel without seccomp(2) when there are no flags).
 * Without no_new_privs the kernel wants CAP_SYS_ADMIN: see the two call sites (step 8 and 12).
 */
static void load_seccomp(const struct plan *p)
{
	struct sock_fprog prog = { .len = (unsigned short)p->seccomp_len, .filter = p->seccomp };
	long rc;

	if (p->seccomp == NULL)
		return;
	rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, p->seccomp_flags, &prog);
	if (rc < 0 && errno == ENOSYS && p->seccomp_flags == 0)
		rc = prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
	if (rc < 0)
		die("seccomp", errno, "loading the seccomp filter (%zu instructions, flags %#x)",
		    p->seccomp_len, p->seccomp_flags);
	if (rc > 0) /* SECCOMP_FILTER_FLAG_TSYNC: thread rc could not be synchronised */
		die("seccomp", 0, "loading the seccomp filter: thread %ld could not be synchronised", rc);
}

static void set_identity(const struct plan *p)
{
	const char *cwd = p->cwd ? p->cwd : "/";
	int last = p->have_caps ? last_cap() : 0;

	for (size_t i = 0; i < p->n_rlimits; i++)
		if (setrlimit((__rlimit_resource_t)p->rlimits[i].resource, &p->rlimits[i].lim) < 0)
			die("rlimit", errno, "setrlimit resource %d soft %llu hard %llu",
			    p->rlimits[i].resource, (unsigned long long)p->rlimits[i].lim.rlim_cur,
			    (unsigned long long)p->rlimits[i].lim.rlim_max);
	/* Without no_new_privs, loading a filter needs CAP_SYS_ADMIN in the effective set: load it
	 * now, as root with every capability, before the bounding set and the uid change (runc's
	 * order; upstream Kata also loads it before dropping capabilities). */
	if (!p->nonewprivs)
		load_seccomp(p);
	if (p->have_caps)
		drop_bounding(p, last);
	/* Always: the helper's own supplementary groups must not be inherited. */
	if (setgroups(p->n_groups, p->groups) < 0)
		die("user", errno, "setgroups (%zu groups)", p->n_groups);
	if (p->have_gid && setresgid(p->gid, p->gid, p->gid) < 0)
		die("user", errno, "setresgid %u", (unsigned int)p->gid);
	if (p->have_uid && setresuid(p->uid, p->uid, p->uid) < 0)
		die("user", errno, "setresuid %u", (unsigned int)p->uid);
	if (chdir(cwd) < 0)
		die("cwd", errno, "chdir to cwd \"%s\"", cwd);
	if (p->have_caps)
		apply_caps(p, last);
	if (p->nonewprivs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		die("nonewprivs", errno, "prctl(PR_SET_NO_NEW_PRIVS)");
}

/* A regular file we may execute? Sets errno when not. */
static bool is_executable(const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return false;
	if (!S_ISREG(st.st_mode)) {
		errno = S_ISDIR(st.st_mode) ? EISDIR : EACCES;
		return false;
	}
	return faccessat(AT_FDCWD, path, X_OK, AT_EACCESS) == 0;
}

/* Step 9: find argv[0] the way execvp would, but with the container's PATH (from the plan's
 * environment, not ours) and now, so that create fails rather than start. */
static const char *resolve_executable(const struct plan *p, char buf[PATH_MAX])
{
	const char *arg0 = p->argv[0], *path = DEFAULT_PATH;
	int saved = ENOENT;

	if (strchr(arg0, '/') != NULL) {
		if (!is_executable(arg0))
			die("exec", errno, "executable \"%s\" %s", arg0,
			    errno == ENOENT || errno == ENOTDIR ? "not found" : "cannot be executed");
		return arg0;
	}
	for (size_t i = 0; i < p->n_env; i++)
		if (strncmp(p->envp[i], "PATH=", 5) == 0)
			path = p->envp[i] + 5;
	for (const char *dir = path;;) {
		const char *end = strchrnul(dir, ':');
		size_t dlen = (size_t)(end - dir);

		/* An empty element means the current directory, as for execvp. */
		if (dlen == 0) {
			dir = ".";
			dlen = 1;
		}
		if (dlen + 1 + strlen(arg0) < PATH_MAX) {
			memcpy(buf, dir, dlen);
			buf[dlen] = '/';
			strcpy(buf + dlen + 1, arg0);
			if (is_executable(buf))
				return buf;
			/* Found but unusable beats not found, as the reason to report. */
			if (errno != ENOENT && errno != ENOTDIR)
				saved = errno;
		}
		if (*end == '\0')
			break;
		dir = end + 1;
	}
	die("exec", saved, "executable \"%s\" not found in $PATH", arg0);
}

/* Step 10: report `ready` and park until the helper says go (one byte) or gives up (EOF). */
static void wait_for_start(void)
{
	ssize_t n;
	char c;

	sync_line("ready\n");
	do
		n = read(FD_START, &c, 1);
	while (n < 0 && errno == EINTR);
	if (n == 0)
		_exit(0); /* the container was deleted before it was started */
	if (n < 0)
		die("start", errno, "reading the start fd");
}

/* Step 12: the program starts with a clean signal state. */
static void reset_signals(void)
{
	struct sigaction sa = { .sa_handler = SIG_DFL };
	sigset_t none;

	sigemptyset(&none);
	if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
		die("signal", errno, "sigprocmask");
	sigemptyset(&sa.sa_mask);
	for (int sig = 1; sig < NSIG; sig++)
		/* SIGKILL, SIGSTOP and glibc's internal signals refuse with EINVAL: fine. */
		(void)sigaction(sig, &sa, NULL);
}

/*
 * Sandbox mode: create the namespaces every container of the sandbox will join, and keep them
 * alive after we exit by bind-mounting their /proc/self/ns files onto the helper's paths (in
 * the helper's mount namespace: we never leave it here).
 */
static void __attribute__((noreturn)) run_sandbox(const struct plan *p)
{
	char src[64];
	int flags = 0;

	for (size_t i = 0; i < p->n_nsfiles; i++)
		flags |= p->nsfiles[i].type;
	if (flags != 0 && unshare(flags) < 0)
		die("ns", errno, "unsharing the sandbox namespaces");
	if (p->hostname != NULL && sethostname(p->hostname, strlen(p->hostname)) < 0)
		die("hostname", errno, "sethostname \"%s\"", p->hostname);
	for (size_t i = 0; i < p->n_nsfiles; i++) {
		snprintf(src, sizeof src, "/proc/self/ns/%s", p->nsfiles[i].name);
		if (mount(src, p->nsfiles[i].path, NULL, MS_BIND, NULL) < 0)
			die("nsfile", errno, "bind-mounting %s onto %s", src, p->nsfiles[i].path);
	}
	sync_line("ready\n");
	_exit(0);
}

int main(int argc, char **argv)
{
	struct plan plan = { 0 };
	char exe_buf[PATH_MAX];
	const char *exe;
	bool new_uts, pid_changed;
	size_t len;
	char *buf;

	if (argc == 2 && strcmp(argv[1], "create") == 0)
		plan.mode = MODE_CREATE;
	else if (argc == 2 && strcmp(argv[1], "exec") == 0)
		plan.mode = MODE_EXEC;
	else if (argc == 2 && strcmp(argv[1], "sandbox") == 0)
		plan.mode = MODE_SANDBOX;
	else
		die("usage", 0, "kata-init create|exec|sandbox (see helper/native/KATA-INIT.md)");

	secure_fds(plan.mode);                         /* 1 */
	buf = read_plan(&len);                         /* 1 */
	parse_plan(&plan, buf, len);
	if (plan.mode == MODE_SANDBOX)
		run_sandbox(&plan);
	write_oom_score_adj(&plan);                    /* 1b */
	pid_changed = enter_namespaces(&plan, &new_uts); /* 2, 3 */
	fork_for_pid_ns(pid_changed);                  /* 4 */

	if (plan.mode == MODE_CREATE) {
		setup_rootfs(&plan);                   /* 5 */
		if (new_uts && plan.hostname != NULL && /* 6 */
		    sethostname(plan.hostname, strlen(plan.hostname)) < 0)
			die("hostname", errno, "sethostname \"%s\"", plan.hostname);
	}
	/* 7: in exec mode, joining the mount namespace already put us in the container's root. */
	ensure_home(&plan);                            /* 8a */
	set_identity(&plan);                           /* 8 */
	exe = resolve_executable(&plan, exe_buf);      /* 9 */
	if (plan.mode == MODE_CREATE)
		wait_for_start();                      /* 10 */
	if (plan.tty) {                                /* 11 */
		/* Already a session leader is fine (no pid namespace fork, spawned detached). */
		if (setsid() < 0 && getsid(0) != getpid())
			die("tty", errno, "setsid");
		if (ioctl(STDIN_FILENO, TIOCSCTTY, 0) < 0)
			die("tty", errno, "making fd 0 the controlling terminal");
	}
	reset_signals();                               /* 12 */
	/* With no_new_privs the filter goes in as late as possible, so that it does not have to
	 * allow the set-up's own syscalls (runc and upstream Kata do the same). */
	if (plan.nonewprivs)
		load_seccomp(&plan);                   /* 12 */
	execve(exe, plan.argv, plan.envp);
	die_code(127, "exec", errno, "execve \"%s\"", exe);
}
