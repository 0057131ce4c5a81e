/* kata-init: the /dev tmpfs and the spec's device nodes (see kata-init.h and KATA-INIT.md). */
#include "kata-init.h"

/* ------------------------------------------------------------------------------------------ */
/* /dev (create mode)                                                                         */
/* ------------------------------------------------------------------------------------------ */

/*
 * Fills a /dev tmpfs (step 5): the default device nodes, and the symlinks every program
 * expects. mknod can be refused (no CAP_MKNOD, a user namespace); then the host's node is
 * bind-mounted onto an empty file instead.
 */
void populate_dev(int rootfd, const char *rootfs)
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

/*
 * OCI linux.devices (step 5, after the mounts and before the default /dev nodes, so an entry
 * for /dev/null wins over the default one): parent directories are created inside the rootfs
 * (symlinks resolved within it), then mknod with the spec's mode, uid and gid; a node already
 * there is replaced. When mknod is refused (EPERM), the guest's node at the same path is
 * bind-mounted onto an empty file instead, as runc does, keeping the guest node's owner/mode.
 */
void create_devices(const struct plan *p, int rootfd)
{
	for (size_t i = 0; i < p->n_devices; i++) {
		const struct device_rec *d = &p->devices[i];
		char parent[PATH_MAX], resolved[PATH_MAX], fdbuf[32];
		const char *name = strrchr(d->path, '/') + 1;
		mode_t type = d->type == 'b' ? S_IFBLK : d->type == 'p' ? S_IFIFO : S_IFCHR;
		int dirfd, fd;

		if (*name == '\0' || (size_t)(name - d->path) >= sizeof parent)
			die("device", EINVAL, "device path %s", d->path);
		memcpy(parent, d->path, (size_t)(name - d->path));
		parent[name - d->path] = '\0';
		fd = resolve_in_rootfs(rootfd, p->rootfs, parent, TARGET_DIR, resolved, "device");
		dirfd = open_in_root(rootfd, resolved, O_DIRECTORY);
		close(fd);
		if (dirfd < 0)
			die("device", errno, "opening the directory of %s", d->path);
		if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
			die("device", errno, "replacing %s", d->path);
		if (mknodat(dirfd, name, type | d->mode, makedev(d->major, d->minor)) == 0) {
			if (fchownat(dirfd, name, d->uid, d->gid, AT_SYMLINK_NOFOLLOW) < 0)
				die("device", errno, "chown %s to %u:%u", d->path, d->uid, d->gid);
			/* mknod honours the umask; the spec's mode is exact. */
			if (fchmodat(dirfd, name, d->mode, 0) < 0)
				die("device", errno, "chmod %s to %o", d->path, d->mode);
		} else if (errno == EPERM) {
			fd = openat(dirfd, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600);
			if (fd < 0)
				die("device", errno, "creating %s (mknod was refused)", d->path);
			close(fd);
			fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
			if (fd < 0 || mount(d->path, fd_path(fd, fdbuf), NULL, MS_BIND, NULL) < 0)
				die("device", errno, "bind-mounting the guest's %s (mknod was refused)", d->path);
			close(fd);
		} else {
			die("device", errno, "mknod %s (%c %u:%u)", d->path, d->type, d->major, d->minor);
		}
		close(dirfd);
	}
}
