/* kata-init: HOME, OOM score, rlimits, capabilities, ids and seccomp (see kata-init.h and KATA-INIT.md). */
#include "kata-init.h"

/* ------------------------------------------------------------------------------------------ */
/* Process attributes                                                                         */
/* ------------------------------------------------------------------------------------------ */

/* Step 8a: HOME when the spec's env has none, as Kata and runc do: the home directory of the
 * process's uid in the container's own /etc/passwd (read after pivot_root or after joining the
 * container's mount namespace, never the guest's), else "/". A missing or unreadable passwd
 * file, or a uid without an entry, gives "/". The passwd text is parsed here by hand: libc's
 * getpwuid would consult NSS modules of the guest, not the container's file. */
void ensure_home(struct plan *p)
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
void write_oom_score_adj(const struct plan *p)
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

/* Step 1a (`cgroupjoin`): move ourselves into each cgroup v1 directory by writing "0" to its
 * `tasks` file. We are single-threaded, so moving our one thread moves the process, and a
 * thread moving itself is the one migration the kernel does without taking its global
 * threadgroup lock for writing, which waits for an RCU grace period (6-25 ms on a small VM) when
 * the helper writes our pid to cgroup.procs instead. The cgroup2 cgroup was given at birth
 * (clone3 CLONE_INTO_CGROUP in the helper's spawn). Children inherit both. */
void join_cgroups(const struct plan *p)
{
	char file[PATH_MAX];
	size_t i;
	int fd;

	for (i = 0; i < p->n_cgroup_dirs; i++) {
		if (snprintf(file, sizeof file, "%s/tasks", p->cgroup_dirs[i]) >= (int)sizeof file)
			die("cgroup", ENAMETOOLONG, "cgroup directory \"%s\"", p->cgroup_dirs[i]);
		fd = open(file, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			die("cgroup", errno, "opening %s", file);
		if (write(fd, "0", 1) != 1)
			die("cgroup", errno, "moving kata-init into %s", file);
		close(fd);
	}
}

/* Capability names (linux/capability.h) for error messages; "?" beyond the table. */
static const char *cap_name(int cap)
{
	static const char *const names[] = {
		"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
		"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
		"CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
		"CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
		"CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
		"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
		"CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
		"CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
		"CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
	};

	return cap >= 0 && (size_t)cap < sizeof names / sizeof names[0] ? names[cap] : "?";
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
			die("caps", errno, "dropping %s (%d) from the bounding set", cap_name(cap), cap);
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
				    "raising ambient capability %s (%d) (it must be in the permitted and "
				    "inheritable sets)",
				    cap_name(cap), cap);
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
void load_seccomp(const struct plan *p)
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

/* /proc/self/setgroups says "deny" (user_namespaces(7)): setgroups(2) is refused for good in
 * this user namespace. */
static bool setgroups_denied(void)
{
	char buf[16] = "";
	int fd = open("/proc/self/setgroups", O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	return n >= 4 && strncmp(buf, "deny", 4) == 0;
}

void set_identity(const struct plan *p)
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
	/* Always: the helper's own supplementary groups must not be inherited. Except where the
	 * kernel forbids it: a joined user namespace (host-namespace mode) whose setgroups is
	 * "deny" (unshare --map-root-user); runc skips setgroups there too. */
	if (setgroups(p->n_groups, p->groups) < 0 &&
	    !(errno == EPERM && p->n_groups == 0 && setgroups_denied()))
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
