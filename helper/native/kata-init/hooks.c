/*
 * OCI createContainer and startContainer hooks (runtime-spec config.md#posix-platform-hooks),
 * the two kinds that run inside the container: createContainer in the container's mount
 * namespace after the mounts and before pivot_root (step 5), startContainer after the start
 * byte, just before the program's execve (step 10b), with the container's ids, capabilities and seccomp filter
 * (as runc and upstream rustjail container.rs do). Each hook is forked and exec'd with its args
 * and environment, the OCI state JSON on stdin (the helper's `hookstate` text around our own
 * getpid(), as runc and rustjail report it), stdout and stderr collected (the first bytes go
 * into the error line), and a timeout after which it is SIGKILLed. A hook that fails, times out
 * or cannot be run ends kata-init with `error hook: ...`.
 */
#include "kata-init.h"

#include <poll.h>
#include <sys/wait.h>
#include <time.h>

#define HOOK_OUTPUT_MAX 512

static const char *const kind_names[HOOK_KINDS] = { "createContainer", "startContainer" };

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The forked hook: stdin, stdout and stderr are the pipes, then execve. Never returns. */
static void __attribute__((noreturn)) exec_hook(const struct hook_rec *h, int in, int out)
{
	struct sigaction sa = { .sa_handler = SIG_DFL };
	sigset_t none;

	if (dup2(in, STDIN_FILENO) < 0 || dup2(out, STDOUT_FILENO) < 0 || dup2(out, STDERR_FILENO) < 0)
		_exit(126);
	(void)setpgid(0, 0); /* a group of its own: what it leaves behind can be killed (end_leftovers) */
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	sigemptyset(&sa.sa_mask);
	for (int sig = 1; sig < NSIG; sig++)
		(void)sigaction(sig, &sa, NULL);
	execve(h->path, h->argv, h->envp);
	dprintf(STDERR_FILENO, "execve %s: %s", h->path, strerror(errno));
	_exit(127);
}

/* Run one hook to its end. Dies (stage `hook`) unless it exits 0 within its timeout. */
static void run_hook(const struct plan *p, const struct hook_rec *h, size_t index)
{
	const struct hook_state *st = &p->hook_states[h->kind];
	const char *kind = kind_names[h->kind];
	char *state = NULL, output[HOOK_OUTPUT_MAX + 1];
	size_t state_len = 0, state_off = 0, out_len = 0;
	long long deadline = now_ms() + (long long)h->timeout * 1000;
	int in[2], out[2], status = 0;
	bool exited = false;
	pid_t pid;

	if (st->before != NULL) {
		int n = asprintf(&state, "%s%d%s", st->before, (int)getpid(), st->after);

		if (n < 0)
			die("hook", ENOMEM, "building the state of %s hook %s", kind, h->path);
		state_len = (size_t)n;
	}
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0)
		die("hook", errno, "pipes for %s hook %s", kind, h->path);
	pid = fork();
	if (pid < 0)
		die("hook", errno, "forking %s hook %s", kind, h->path);
	if (pid == 0)
		exec_hook(h, in[0], out[1]);
	(void)setpgid(pid, pid); /* as the child does: no window before either ran */
	close(in[0]);
	close(out[1]);
	/* a hook that does not read its stdin must not block us: write as it drains */
	fcntl(in[1], F_SETFL, O_NONBLOCK);
	if (state_len == 0) {
		close(in[1]);
		in[1] = -1;
	}

	while (!exited) {
		struct pollfd fds[2];
		nfds_t n = 0;
		long long left = deadline - now_ms();
		pid_t w;

		do
			w = waitpid(pid, &status, WNOHANG);
		while (w < 0 && errno == EINTR);
		if (w == pid) {
			exited = true;
			break;
		}
		if (left <= 0) {
			kill(pid, SIGKILL);
			while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
				;
			die("hook", 0, "%s hook [%zu] %s did not finish within its timeout of %u s",
			    kind, index, h->path, h->timeout);
		}
		if (out[0] >= 0)
			fds[n++] = (struct pollfd){ .fd = out[0], .events = POLLIN };
		if (in[1] >= 0)
			fds[n++] = (struct pollfd){ .fd = in[1], .events = POLLOUT };
		/* no pidfd: a short tick notices the exit of a hook that closed its output early */
		if (poll(fds, n, (int)(left < 20 ? left : 20)) < 0 && errno != EINTR)
			die("hook", errno, "waiting for %s hook %s", kind, h->path);
		for (nfds_t i = 0; i < n; i++) {
			if (fds[i].fd == out[0] && fds[i].revents) {
				char buf[4096];
				ssize_t r = read(out[0], buf, sizeof buf);

				if (r > 0 && out_len < HOOK_OUTPUT_MAX) {
					size_t take = (size_t)r < HOOK_OUTPUT_MAX - out_len ? (size_t)r : HOOK_OUTPUT_MAX - out_len;

					memcpy(output + out_len, buf, take);
					out_len += take;
				}
				if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) {
					close(out[0]);
					out[0] = -1;
				}
			} else if (fds[i].fd == in[1] && fds[i].revents) {
				ssize_t wr = write(in[1], state + state_off, state_len - state_off);

				if (wr > 0)
					state_off += (size_t)wr;
				if (state_off == state_len || (wr < 0 && errno != EAGAIN && errno != EINTR)) {
					close(in[1]); /* EPIPE: the hook does not read its state; fine */
					in[1] = -1;
				}
			}
		}
	}
	if (in[1] >= 0)
		close(in[1]);
	/* a createContainer hook's background children hold the helper's capabilities (review 6) */
	if (h->kind == HOOK_CREATE_CONTAINER)
		(void)kill(-pid, SIGKILL);
	if (out[0] >= 0) {
		/* whatever the hook wrote before exiting */
		ssize_t r;

		fcntl(out[0], F_SETFL, O_NONBLOCK);
		while (out_len < HOOK_OUTPUT_MAX &&
		       (r = read(out[0], output + out_len, HOOK_OUTPUT_MAX - out_len)) > 0)
			out_len += (size_t)r;
		close(out[0]);
	}
	free(state);
	output[out_len] = '\0';
	while (out_len > 0 && (output[out_len - 1] == '\n' || output[out_len - 1] == ' '))
		output[--out_len] = '\0';
	if (WIFSIGNALED(status))
		die("hook", 0, "%s hook [%zu] %s was killed by signal %d%s%s", kind, index, h->path,
		    WTERMSIG(status), out_len ? ": " : "", output);
	if (WEXITSTATUS(status) != 0)
		die("hook", 0, "%s hook [%zu] %s exited with status %d%s%s", kind, index, h->path,
		    WEXITSTATUS(status), out_len ? ": " : "", output);
}

/* `runtimehooks`: report `hooks` and wait for one byte on the start fd while the helper runs
 * the prestart and createRuntime hooks in its own namespaces. EOF: the helper gave up. */
void wait_runtime_hooks(const struct plan *p)
{
	ssize_t n;
	char c;

	if (!p->runtime_hooks)
		return;
	sync_line("hooks\n");
	do
		n = read(FD_START, &c, 1);
	while (n < 0 && errno == EINTR);
	if (n == 0)
		_exit(1);
	if (n < 0)
		die("hook", errno, "waiting for the runtime hooks on fd %d", FD_START);
}

/*
 * createContainer hooks run as root with the helper's capabilities, in the container's new pid
 * namespace. Whatever they leave running (a daemon, `cmd &`) must not stay there: the container
 * could ptrace it (CAP_SYS_PTRACE) and use its capabilities. Each hook's own process group is
 * killed when it exits (run_hook); here, as pid 1 of a new pid namespace, everything else in it
 * is the hooks' (a setsid'ed daemon too): kill(-1) reaches all of it, then reap. In a pid
 * namespace we joined (getpid() != 1) other containers live there too: only the groups are
 * killed (a hook that calls setsid there is not caught; docs/ARCHITECTURE.md adversarial review).
 */
static void end_leftovers(void)
{
	if (getpid() != 1)
		return;
	if (kill(-1, SIGKILL) < 0 && errno != ESRCH)
		die("hook", errno, "killing what the createContainer hooks left in the pid namespace");
	while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
		;
}

/* Run every hook of `kind`, in plan order; the first failure ends kata-init. */
void run_hooks(const struct plan *p, enum hook_kind kind)
{
	struct sigaction ign = { .sa_handler = SIG_IGN }, old;
	size_t index = 0;

	/* a hook that exits without reading its state must not kill us with SIGPIPE (EPIPE is fine) */
	sigemptyset(&ign.sa_mask);
	if (sigaction(SIGPIPE, &ign, &old) < 0)
		die("hook", errno, "ignoring SIGPIPE");
	for (size_t i = 0; i < p->n_hooks; i++) {
		if (p->hooks[i].kind != kind)
			continue;
		run_hook(p, &p->hooks[i], index++);
	}
	sigaction(SIGPIPE, &old, NULL);
	if (kind == HOOK_CREATE_CONTAINER && index > 0)
		end_leftovers();
}
