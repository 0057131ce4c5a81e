/* kata-init: fds, namespaces, the pid-namespace fork and sandbox mode (see kata-init.h and KATA-INIT.md). */
#include "kata-init.h"

/* ------------------------------------------------------------------------------------------ */
/* Fds, namespaces and the pid-namespace fork                                                 */
/* ------------------------------------------------------------------------------------------ */

/* Step 1, before anything else: nothing of ours may reach the container program. fds 3-6
 * become close-on-exec (fd 4 must stay open until the final execve: its EOF is the helper's
 * success signal), and whatever else the helper's process happened to pass down is closed. */
void secure_fds(enum mode mode)
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
	/* fd 6, the pty socket, only comes with `tty 1` (checked once the plan is read). */
	{
		int flags = fcntl(FD_PTY, F_GETFD);

		if (flags >= 0 && fcntl(FD_PTY, F_SETFD, flags | FD_CLOEXEC) < 0)
			die("fd", errno, "setting FD_CLOEXEC on fd %d", FD_PTY);
	}
	if (close_range(FD_PTY + 1, ~0U, 0) < 0) {
		/* Kernels before 5.9: close one by one up to the fd limit. */
		struct rlimit rl;
		int max = 65536;

		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
		    rl.rlim_cur < (rlim_t)INT_MAX)
			max = (int)rl.rlim_cur;
		for (int fd = FD_PTY + 1; fd < max; fd++)
			close(fd);
	}
}

/* Step 3a: a new user namespace first, alone, so that every namespace unshared after it is
 * owned by it (mounting proc needs the pid namespace's owner; runc orders them the same way).
 * The helper writes our uid_map and gid_map (it is privileged in the parent namespace; we are
 * not any more) after the `userns` line and sends one byte on the start fd; then we become the
 * container's root (when 0 is mapped; we keep the full capability set of the new namespace
 * either way). EOF instead of the byte: the helper gave up. */
static void enter_new_userns(void)
{
	ssize_t n;
	char c;

	if (unshare(CLONE_NEWUSER) < 0)
		die("ns", errno, "unsharing the user namespace");
	sync_line("userns\n");
	do
		n = read(FD_START, &c, 1);
	while (n < 0 && errno == EINTR);
	if (n == 0)
		_exit(1);
	if (n < 0)
		die("ns", errno, "waiting for the id maps on fd %d", FD_START);
	if (setresgid(0, 0, 0) < 0 && errno != EINVAL)
		die("ns", errno, "setresgid 0 in the new user namespace");
	if (setresuid(0, 0, 0) < 0 && errno != EINVAL)
		die("ns", errno, "setresuid 0 in the new user namespace");
}

/* Step 2: the file opened for a namespace must be a namespace file (nsfs) of the plan's type.
 * Checked on the fd that setns then uses, so nothing can be swapped in between; the kernel's
 * setns(fd, type) would refuse a wrong type too, this says which path was wrong and why. */
static void check_ns_fd(const struct ns_rec *ns)
{
	struct statfs sfs;
	int type;

	if (fstatfs(ns->fd, &sfs) < 0)
		die("ns", errno, "inspecting %s namespace %s", ns->name, ns->path);
	if (sfs.f_type != NSFS_MAGIC)
		die("ns", 0, "%s is not a namespace file (filesystem magic %#lx, not nsfs)", ns->path,
		    (unsigned long)sfs.f_type);
	type = ioctl(ns->fd, NS_GET_NSTYPE);
	if (type < 0)
		die("ns", errno, "NS_GET_NSTYPE on %s", ns->path);
	if (type != ns->type)
		die("ns", 0, "%s is not a %s namespace (type %#x)", ns->path, ns->name, type);
	/* Adversarial review 8: a joined mount namespace gets a new container's rootfs set-up:
	 * "/" made a recursive slave, pivot_root and the old root detached. Done in our own mount
	 * namespace (the helper's: /proc/self/ns/mnt, or /proc/1/ns/mnt in a guest) that pivoted
	 * the helper, control and every guest process into the rootfs. Sharing the helper's
	 * mount namespace is the plan without a mount entry (chroot, KATA-INIT.md `hostns`). */
	if (type == CLONE_NEWNS) {
		struct stat theirs, ours;

		if (fstat(ns->fd, &theirs) < 0 || stat("/proc/self/ns/mnt", &ours) < 0)
			die("ns", errno, "inspecting mount namespace %s", ns->path);
		if (theirs.st_dev == ours.st_dev && theirs.st_ino == ours.st_ino)
			die("ns", 0, "%s is the agent's own mount namespace: a container joins another one "
			    "or shares the agent's by leaving the mount entry out", ns->path);
	}
}

/* Steps 2 and 3: opens every namespace file first (their paths may live in namespaces we
 * are about to leave), joins them with the mount namespace next to last and a user namespace
 * last (joining it gives up our privileges over the others' owners), then unshares the rest
 * (a new user namespace first, see enter_new_userns). Returns true if the pid namespace for
 * our children changed. */
bool enter_namespaces(struct plan *p, bool *new_uts)
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
		check_ns_fd(ns);
	}
	for (int pass = 0; pass < 3; pass++) {
		for (size_t i = 0; i < p->n_ns; i++) {
			struct ns_rec *ns = &p->ns[i];
			int want = ns->type == CLONE_NEWNS ? 1 : ns->type == CLONE_NEWUSER ? 2 : 0;

			if (ns->fd < 0 || want != pass)
				continue;
			if (setns(ns->fd, ns->type) < 0)
				die("ns", errno, "joining %s namespace %s", ns->name, ns->path);
			close(ns->fd);
			ns->fd = -1;
			/* runc CVE-2024-21626: no cwd (or fd) may point outside the container. setns
			 * of a mount namespace moves root and cwd to its root already; say so
			 * explicitly, before anything else runs in it. */
			if (ns->type == CLONE_NEWNS && chdir("/") < 0)
				die("ns", errno, "chdir to the root of mount namespace %s", ns->path);
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
	if (unshare_flags & CLONE_NEWUSER) {
		premount_unowned_filesystems(p, unshare_flags); /* mounts.c: while still privileged */
		enter_new_userns();
		unshare_flags &= ~CLONE_NEWUSER;
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
void fork_for_pid_ns(bool pid_changed)
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
	/* CLONE_PARENT: the container process is the helper's child from the start, not the
	 * intermediate's, so the intermediate's exit neither reparents it nor fires the parent-death
	 * signal it sets before execve (die_with_helper, exec.c). A raw clone with no new stack is a
	 * fork (this program is single-threaded). */
	pid = (pid_t)syscall(SYS_clone, (unsigned long)(CLONE_PARENT | SIGCHLD), 0UL, 0UL, 0UL, 0UL);
	if (pid < 0)
		die("fork", errno, "forking into the pid namespace");
	if (pid > 0) {
		close(gate[0]);
		sync_line("pid %d\n", (int)pid);
		/* The `pid` line is out: the child may go on now, not only once our exit has torn
		 * down our memory (a process's fds are closed late in its exit). */
		close(gate[1]);
		_exit(0);
	}
	close(gate[1]);
	while (read(gate[0], &c, 1) < 0 && errno == EINTR)
		;
	close(gate[0]);
}

/*
 * Step 4a: the container process leads a session (and process group) of its own, as with runc,
 * so that `kill(0, sig)` or a job-control stop in the container never reaches the helper, the
 * intermediate or another container. The helper spawns kata-init as a session leader already
 * (so the intermediate is never in the helper's group either); the pid-namespace child is not
 * one yet. Being one already is fine.
 */
void become_session_leader(void)
{
	if (setsid() < 0 && getsid(0) != getpid())
		die("setsid", errno, "making the container process a session leader");
}


/*
 * Sandbox mode: create the namespaces every container of the sandbox will join, and keep them
 * alive after we exit by bind-mounting their /proc/self/ns files onto the helper's paths (in
 * the helper's mount namespace: we never leave it here).
 */
void __attribute__((noreturn)) run_sandbox(const struct plan *p)
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
