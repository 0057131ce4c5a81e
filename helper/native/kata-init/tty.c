/* kata-init: the container's own terminal (see kata-init.h and KATA-INIT.md step 7b). */
#include "kata-init.h"

#include <sys/socket.h>
#include <sys/uio.h>

#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif

/* Device numbers of a devpts instance: its ptmx node is 5:2, its slaves use majors 136..143. */
#define PTMX_MAJOR 5
#define PTMX_MINOR 2
#define PTS_MAJOR_FIRST 136
#define PTS_MAJOR_LAST 143

/* The fd must be a character device of a devpts instance with a major in [lo, hi] (and the
 * minor `minor`, or any when -1). Anything else is something the container put there. */
static void check_devpts_node(int fd, const char *path, unsigned lo, unsigned hi, int minor_wanted)
{
	struct statfs sfs;
	struct stat st;

	if (fstatfs(fd, &sfs) < 0 || fstat(fd, &st) < 0)
		die("tty", errno, "inspecting %s", path);
	if (sfs.f_type != DEVPTS_SUPER_MAGIC)
		die("tty", 0, "%s is not on a devpts filesystem (type 0x%lx): the container needs a devpts on /dev/pts",
		    path, (unsigned long)sfs.f_type);
	if (!S_ISCHR(st.st_mode) || major(st.st_rdev) < lo || major(st.st_rdev) > hi ||
	    (minor_wanted >= 0 && minor(st.st_rdev) != (unsigned)minor_wanted))
		die("tty", 0, "%s is not a pty device (mode 0%o, device %u:%u)", path, (unsigned)st.st_mode,
		    major(st.st_rdev), minor(st.st_rdev));
}

/* The slave of `master` from the same devpts instance: TIOCGPTPEER (Linux 4.13+) needs no path
 * lookup at all; older kernels open /dev/pts/<n> by name and check it. */
static int open_peer(int master)
{
	char path[64];
	int fd, n;

	fd = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (fd >= 0)
		return fd;
	if (errno != EINVAL && errno != ENOTTY)
		die("tty", errno, "ioctl(TIOCGPTPEER) on the container's /dev/pts/ptmx");
	if (ioctl(master, TIOCGPTN, &n) < 0)
		die("tty", errno, "ioctl(TIOCGPTN) on the container's /dev/pts/ptmx");
	snprintf(path, sizeof path, "/dev/pts/%d", n);
	fd = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		die("tty", errno, "opening %s", path);
	check_devpts_node(fd, path, PTS_MAJOR_FIRST, PTS_MAJOR_LAST, -1);
	return fd;
}

/* Sends `master` as SCM_RIGHTS in one packet ("pty") on the pty socket. */
static void send_master(int master)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} control;
	struct iovec iov = { .iov_base = "pty", .iov_len = 3 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *cmsg;
	ssize_t n;

	memset(&control, 0, sizeof control);
	msg.msg_control = control.buf;
	msg.msg_controllen = sizeof control.buf;
	cmsg = CMSG_FIRSTHDR(&msg);
	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cmsg), &master, sizeof(int));
	do
		n = sendmsg(FD_PTY, &msg, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n != 3)
		die("tty", n < 0 ? errno : EIO, "sending the pty master to the helper on fd %d", FD_PTY);
}

/*
 * Step 7b (`tty 1`), with the container's root already in place (after pivot_root in create
 * mode, after joining the mount namespace in exec mode) and before any privilege is dropped:
 * a new pty from the container's own devpts instance, as runc's console socket does, so that
 * `tty` names it (/dev/pts/N of the container) and job control works. The slave becomes fds
 * 0-2 (our controlling terminal in step 11); with a `uid` record it is handed to that user
 * (runc's fixStdioPermissions), keeping devpts' group. The master goes to the helper over the
 * pty socket (fd 6) and is closed here, as is the socket: neither reaches the container.
 */
void setup_terminal(const struct plan *p)
{
	const char *ptmx = "/dev/pts/ptmx";
	int master, slave, flags;

	if (!p->tty)
		return;
	/* O_NOFOLLOW: the instance's ptmx is never a link. O_NONBLOCK: a FIFO the container put
	 * there must not hang us (the type is checked right after). */
	master = open(ptmx, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (master < 0)
		die("tty", errno, "opening the container's %s (a terminal needs a devpts on /dev/pts)", ptmx);
	check_devpts_node(master, ptmx, PTMX_MAJOR, PTMX_MAJOR, PTMX_MINOR);
	flags = fcntl(master, F_GETFL);
	if (flags < 0 || fcntl(master, F_SETFL, flags & ~O_NONBLOCK) < 0)
		die("tty", errno, "clearing O_NONBLOCK on the pty master");
	if (unlockpt(master) < 0)
		die("tty", errno, "unlockpt on the container's %s", ptmx);
	slave = open_peer(master);
	flags = fcntl(slave, F_GETFL);
	if (flags < 0 || fcntl(slave, F_SETFL, flags & ~O_NONBLOCK) < 0)
		die("tty", errno, "clearing O_NONBLOCK on the pty slave");
	if (p->have_uid && p->uid != 0 && fchown(slave, p->uid, (gid_t)-1) < 0)
		die("tty", errno, "handing the pty slave to uid %u", (unsigned)p->uid);
	for (int fd = 0; fd <= 2; fd++)
		if (dup2(slave, fd) < 0)
			die("tty", errno, "making the pty slave fd %d", fd);
	if (slave > 2)
		close(slave);
	send_master(master);
	close(master);
	close(FD_PTY);
}
