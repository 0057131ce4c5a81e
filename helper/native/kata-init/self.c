/* kata-init: protecting kata-init itself from the container (see kata-init.h and KATA-INIT.md). */
#include "kata-init.h"

#include <sys/mman.h>
#include <sys/sendfile.h>

#define SEALS_WANTED (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)

/*
 * Step 0 (runc CVE-2019-5736): the container must never reach the kata-init binary of the guest
 * through /proc/<pid>/exe (a container root holding that open could overwrite it once we exit,
 * and the next container would run its code as the helper). So kata-init only ever runs from a
 * sealed memfd copy of itself: if /proc/self/exe is not one (the normal case: the helper spawned
 * the file), copy it into a memfd, seal it against every change (write, grow, shrink, and further
 * seal changes) and execveat() it with the same argv and an empty environment. The fds 0-6 are
 * not close-on-exec yet, so they pass through. On the second run /proc/self/exe is the sealed
 * memfd ("/memfd:kata-init (deleted)") and this returns at once.
 */
void ensure_sealed_exe(char **argv)
{
	static char *const empty_env[] = { NULL };
	int self, mfd, seals;
	struct stat st;
	off_t off = 0;

	self = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	if (self < 0)
		die("self", errno, "opening /proc/self/exe");
	seals = fcntl(self, F_GET_SEALS);
	if (seals >= 0 && (seals & SEALS_WANTED) == SEALS_WANTED) {
		close(self);
		return;
	}
	if (fstat(self, &st) < 0)
		die("self", errno, "fstat /proc/self/exe");
	mfd = memfd_create("kata-init", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mfd < 0)
		die("self", errno, "memfd_create for a sealed copy of kata-init");
	while (off < st.st_size) {
		ssize_t n = sendfile(mfd, self, NULL, (size_t)(st.st_size - off));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("self", n < 0 ? errno : EIO, "copying kata-init into a memfd (%lld of %lld bytes)",
			    (long long)off, (long long)st.st_size);
		off += n;
	}
	close(self);
	if (fcntl(mfd, F_ADD_SEALS, SEALS_WANTED) < 0)
		die("self", errno, "sealing the memfd copy of kata-init");
	/* MFD_CLOEXEC is fine for an ELF binary: the kernel has it mapped before closing fds. */
	syscall(SYS_execveat, mfd, "", argv, empty_env, AT_EMPTY_PATH);
	die("self", errno, "executing the sealed copy of kata-init");
}

/*
 * Step 0 (runc CVE-2016-9962): not dumpable from now until the final execve, so a process of the
 * container cannot read our memory or fds through /proc/<pid>/ or ptrace without CAP_SYS_PTRACE
 * (the kernel resets it at the container program's execve, as with runc). It does not stop a
 * container that has CAP_SYS_PTRACE: against that, exec mode drops every privilege before it
 * forks into the container's pid namespace (see main).
 */
void make_undumpable(void)
{
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		die("self", errno, "prctl(PR_SET_DUMPABLE, 0)");
	/* After execveat(AT_EMPTY_PATH) the kernel names us after the fd number: name us again. */
	(void)prctl(PR_SET_NAME, "kata-init", 0, 0, 0);
}
