/* kata-init: reading and parsing the plan (see kata-init.h and KATA-INIT.md). */
#include "kata-init.h"

/* ------------------------------------------------------------------------------------------ */
/* The plan                                                                                   */
/* ------------------------------------------------------------------------------------------ */


static const struct {
	const char *name;
	int type;
} ns_types[] = {
	{ "pid", CLONE_NEWPID }, { "net", CLONE_NEWNET },   { "mnt", CLONE_NEWNS },
	{ "ipc", CLONE_NEWIPC }, { "uts", CLONE_NEWUTS },   { "cgroup", CLONE_NEWCGROUP },
	{ "user", CLONE_NEWUSER },
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

/* `createContainer` or `startContainer`. */
static enum hook_kind parse_hook_kind(const struct reader *r, const char *s)
{
	if (strcmp(s, "createContainer") == 0)
		return HOOK_CREATE_CONTAINER;
	if (strcmp(s, "startContainer") == 0)
		return HOOK_START_CONTAINER;
	die("plan", 0, "record \"%s\": unknown hook kind \"%s\"", r->tag, s);
}

static rlim_t parse_rlim(const struct reader *r, const char *s)
{
	if (strcmp(s, "-1") == 0)
		return RLIM_INFINITY;
	return (rlim_t)parse_unsigned(r, s, RLIM_INFINITY - 1);
}

/* Step 1: reads fd 3 to EOF (at most PLAN_MAX bytes). The buffer is never freed: argv, envp
 * and every other string of the plan point into it. */
char *read_plan(size_t *len_out)
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

void parse_plan(struct plan *p, char *buf, size_t len)
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
		} else if (strcmp(tag, "hostns") == 0) {
			p->hostns = parse_bool(&r, next_field(&r));
		} else if (strcmp(tag, "root") == 0) {
			p->root = next_field(&r);
			if (p->root[0] != '/')
				die("plan", 0, "root path \"%s\" is not absolute", p->root);
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
			m->detached = -1;
			if (m->target[0] != '/')
				die("plan", 0, "mount target \"%s\" is not absolute", m->target);
		} else if (strcmp(tag, "device") == 0) {
			struct device_rec *d = PUSH(p->devices, p->n_devices);
			const char *type;

			d->path = next_field(&r);
			type = next_field(&r);
			d->major = (unsigned int)parse_unsigned(&r, next_field(&r), UINT_MAX);
			d->minor = (unsigned int)parse_unsigned(&r, next_field(&r), UINT_MAX);
			d->mode = (mode_t)parse_unsigned(&r, next_field(&r), 07777);
			d->uid = (uid_t)parse_unsigned(&r, next_field(&r), UINT_MAX - 1);
			d->gid = (gid_t)parse_unsigned(&r, next_field(&r), UINT_MAX - 1);
			if (strncmp(d->path, "/dev/", 5) != 0 || strstr(d->path, "/..") != NULL)
				die("plan", 0, "device path \"%s\" is not below /dev", d->path);
			if (strlen(type) != 1 || strchr("cbp", type[0]) == NULL)
				die("plan", 0, "device type \"%s\" is not c, b or p", type);
			d->type = type[0];
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
		} else if (strcmp(tag, "cgroupjoin") == 0) {
			char *dir = next_field(&r);

			if (dir[0] != '/')
				die("plan", 0, "record \"%s\": \"%s\" is not an absolute path", r.tag, dir);
			*PUSH(p->cgroup_dirs, p->n_cgroup_dirs) = dir;
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
		} else if (strcmp(tag, "runtimehooks") == 0) {
			p->runtime_hooks = parse_bool(&r, next_field(&r));
		} else if (strcmp(tag, "selinux") == 0) {
			p->selinux_label = next_field(&r);
		} else if (strcmp(tag, "tty") == 0) {
			p->tty = parse_bool(&r, next_field(&r));
		} else if (strcmp(tag, "seccomp") == 0) {
			parse_seccomp(p, &r, next_field(&r));
		} else if (strcmp(tag, "hook") == 0) {
			struct hook_rec *h = PUSH(p->hooks, p->n_hooks);

			h->kind = parse_hook_kind(&r, next_field(&r));
			h->path = next_field(&r);
			if (h->path[0] != '/')
				die("plan", 0, "hook path \"%s\" is not absolute", h->path);
			h->timeout = (unsigned int)parse_unsigned(&r, next_field(&r), 3600);
			if (h->timeout == 0)
				die("plan", 0, "hook %s: timeout 0", h->path);
		} else if (strcmp(tag, "hookarg") == 0 || strcmp(tag, "hookenv") == 0) {
			char *v = next_field(&r);
			struct hook_rec *h = p->n_hooks ? &p->hooks[p->n_hooks - 1] : NULL;

			if (h == NULL)
				die("plan", 0, "record \"%s\" before any \"hook\" record", tag);
			if (tag[4] == 'a')
				*PUSH(h->argv, h->n_args) = v;
			else if (strchr(v, '=') == NULL)
				die("plan", 0, "hook env entry \"%s\" has no '='", v);
			else
				*PUSH(h->envp, h->n_env) = v;
		} else if (strcmp(tag, "hookstate") == 0) {
			struct hook_state *st = &p->hook_states[parse_hook_kind(&r, next_field(&r))];

			st->before = next_field(&r);
			st->after = next_field(&r);
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
	for (size_t i = 0; i < p->n_hooks; i++) {
		struct hook_rec *h = &p->hooks[i];

		if (h->n_args == 0)
			*PUSH(h->argv, h->n_args) = (char *)h->path;
		PUSH(h->argv, h->n_args);
		h->n_args--;
		PUSH(h->envp, h->n_env);
		h->n_env--;
		if (p->mode != MODE_CREATE)
			die("plan", 0, "\"hook\" records are for create mode only");
	}

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
	if (p->tty && fcntl(FD_PTY, F_GETFD) < 0)
		die("fd", errno, "\"tty 1\" needs the pty socket on fd %d", FD_PTY);
	if (p->root != NULL && p->mode != MODE_EXEC)
		die("plan", 0, "\"root\" is for exec mode only");
	if (p->hostns && p->mode != MODE_CREATE)
		die("plan", 0, "\"hostns\" is for create mode only");
	if (p->mode == MODE_CREATE) {
		bool new_mnt = false, any_mnt = false;

		for (size_t i = 0; i < p->n_ns; i++) {
			if (p->ns[i].type != CLONE_NEWNS)
				continue;
			any_mnt = true;
			if (p->ns[i].path[0] == '\0')
				new_mnt = true;
		}
		if (p->rootfs == NULL || p->rootfs[0] != '/')
			die("plan", 0, "create needs an absolute \"rootfs\"");
		/* Without `hostns 1`: a new mount namespace and no joined user namespace, always. */
		if (!new_mnt && !p->hostns)
			die("plan", 0, "create needs a new mount namespace (ns mnt with an empty path)");
		for (size_t i = 0; i < p->n_ns; i++)
			if (p->ns[i].type == CLONE_NEWUSER && p->ns[i].path[0] != '\0' && !p->hostns)
				die("plan", 0, "create cannot join a user namespace (only a new one)");
		p->shared_mnt = !any_mnt;
		/* Sharing our mount namespace, nothing may change mounts outside the rootfs. */
		if (p->shared_mnt && (p->nodev || p->readonly || p->n_masked || p->n_ropaths))
			die("plan", 0, "nodev, readonly, masked and readonlypath need a mount namespace of the container");
	}
}
