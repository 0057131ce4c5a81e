/* kata-init: executable lookup, the start wait, signals and main() (see kata-init.h and KATA-INIT.md). */
#include "kata-init.h"

#include <poll.h>

/* ------------------------------------------------------------------------------------------ */
/* Exec                                                                                       */
/* ------------------------------------------------------------------------------------------ */


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
	if (faccessat(AT_FDCWD, path, X_OK, AT_EACCESS) == 0)
		return true;
	/* glibc implements AT_EACCESS with faccessat2, which a seccomp profile loaded already
	 * (no no_new_privileges: the filter goes in before the uid change) may deny with EPERM
	 * (the runtime-tools default profile does; runc's lookup is a plain stat). Our real and
	 * effective ids are equal by now (setresuid), so access(2) semantics give the same answer. */
	if (errno == EPERM || errno == ENOSYS)
		return access(path, X_OK) == 0;
	return false;
}

/* Step 9: find argv[0] the way execvp would, but with the container's PATH (from the plan's
 * environment, not ours) and now, so that create fails rather than start. */
const char *resolve_executable(const struct plan *p, char buf[PATH_MAX])
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
void wait_for_start(void)
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
/*
 * Step 11b: the container process must not outlive the helper (docs/ARCHITECTURE.md "Restart and
 * adoption", helper loss): SIGKILL when the helper (our parent: CLONE_PARENT in step 4, or the
 * spawner itself without a pid-namespace fork) dies. Set after the last credential change (which
 * clears it) and after the fork (not inherited). A helper that died before the prctl has closed
 * its end of the sync pipe (fd 4): POLLERR then, and we leave. Skipped when a seccomp filter is
 * already loaded (step 8, without no_new_privs): a profile that kills on prctl would kill the
 * container; the next helper's start-up clean-up covers that case. Best effort otherwise.
 */
void die_with_helper(const struct plan *p)
{
	struct pollfd pfd = { .fd = FD_SYNC, .events = 0 };

	if (p->seccomp != NULL && !p->nonewprivs)
		return;
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		return;
	if (poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLERR | POLLHUP)))
		_exit(137);
}

void reset_signals(void)
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

/* Step 12: the SELinux context of the program (`selinux`), as upstream rustjail's
 * selinux::set_exec_label: written to /proc/thread-self/attr/exec, applied by execve. */
void set_exec_label(const struct plan *p)
{
	size_t len;
	int fd;

	if (p->selinux_label == NULL)
		return;
	len = strlen(p->selinux_label);
	fd = open("/proc/thread-self/attr/exec", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		die("selinux", errno, "opening /proc/thread-self/attr/exec for label \"%s\"", p->selinux_label);
	if (write(fd, p->selinux_label, len) != (ssize_t)len)
		die("selinux", errno, "setting the exec label \"%s\"", p->selinux_label);
	close(fd);
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

	ensure_sealed_exe(argv);                       /* 0 */
	make_undumpable();                             /* 0 */
	secure_fds(plan.mode);                         /* 1 */
	buf = read_plan(&len);                         /* 1 */
	parse_plan(&plan, buf, len);
	if (plan.mode == MODE_SANDBOX)
		run_sandbox(&plan);
	join_cgroups(&plan);                           /* 1a */
	write_oom_score_adj(&plan);                    /* 1b */
	pid_changed = enter_namespaces(&plan, &new_uts); /* 2, 3 */

	if (plan.mode == MODE_EXEC) {
		/* 7: a container sharing the helper's mount namespace (`hostns`) has no root of its
		 * own to join: chroot into its init's (/proc/<pid>/root, the `root` record). */
		if (plan.root != NULL) {
			int rootfd = open(plan.root, O_PATH | O_DIRECTORY | O_CLOEXEC);

			if (rootfd < 0)
				die("chroot", errno, "opening the container's root %s", plan.root);
			chroot_into(rootfd, plan.root);
			close(rootfd);
		}
		/* 7: joining the mount namespace already put us in the container's root. Everything
		 * privileged happens here, in the intermediate, which the container cannot see (it is
		 * not in the container's pid namespace): the fork below puts into the container's pid
		 * namespace a process that already has only the container's uid, groups,
		 * capabilities, rlimits and cwd, so a container holding CAP_SYS_PTRACE that seizes it
		 * gains nothing it does not have. */
		setup_terminal(&plan);                 /* 7b */
		ensure_home(&plan);                    /* 8a */
		set_identity(&plan);                   /* 8 */
		exe = resolve_executable(&plan, exe_buf); /* 9 */
		fork_for_pid_ns(pid_changed);          /* 4 */
		become_session_leader();               /* 4a */
	} else {
		/* Create: the pid namespace is new (nobody else in it until start) or the shared one
		 * of the sandbox (see KATA-INIT.md "Known edges"); /proc must be mounted from inside it,
		 * so the set-up runs in the child. */
		fork_for_pid_ns(pid_changed);          /* 4 */
		become_session_leader();               /* 4a */
		setup_rootfs(&plan);                   /* 5 */
		if (new_uts && plan.hostname != NULL && /* 6 */
		    sethostname(plan.hostname, strlen(plan.hostname)) < 0)
			die("hostname", errno, "sethostname \"%s\"", plan.hostname);
		setup_terminal(&plan);                 /* 7b */
		ensure_home(&plan);                    /* 8a */
		set_identity(&plan);                   /* 8 */
		exe = resolve_executable(&plan, exe_buf); /* 9 */
		wait_for_start();                      /* 10 */
	}
	/* 11: the pty (step 7b) becomes our controlling terminal (we lead a new session, step 4a). */
	if (plan.tty && ioctl(STDIN_FILENO, TIOCSCTTY, 0) < 0)
		die("tty", errno, "making fd 0 the controlling terminal");
	die_with_helper(&plan);                        /* 11b */
	reset_signals();                               /* 12 */
	umask(022); /* 12: whatever the helper had, the program starts with 0022 (runc, upstream) */
	set_exec_label(&plan);                         /* 12 */
	/* With no_new_privs the filter goes in as late as possible, so that it does not have to
	 * allow the set-up's own syscalls (runc and upstream Kata do the same). */
	if (plan.nonewprivs)
		load_seccomp(&plan);                   /* 12 */
	/* 10b: startContainer hooks run binaries of the container's rootfs, so they run under the
	 * container's seccomp filter in both cases, as runc runs them (review 6: with no_new_privs
	 * they used to run before the filter was loaded, and whatever they left ran unfiltered). */
	if (plan.mode == MODE_CREATE)
		run_hooks(&plan, HOOK_START_CONTAINER);
	execve(exe, plan.argv, plan.envp);
	die_code(127, "exec", errno, "execve \"%s\"", exe);
}
