/* kata-init: the filesystem view in full (step 5), pivot_root/chroot (see kata-init.h and KATA-INIT.md). */
#include "kata-init.h"

/* ------------------------------------------------------------------------------------------ */
/* The rootfs (create mode)                                                                   */
/* ------------------------------------------------------------------------------------------ */

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

/* No mount namespace of our own (runc without a mount namespace does the same): chroot into the
 * rootfs. The mounts stay where they are, in the shared namespace. */
void chroot_into(int rootfd, const char *rootfs)
{
	if (fchdir(rootfd) < 0)
		die("chroot", errno, "chdir to rootfs %s", rootfs);
	if (chroot(".") < 0)
		die("chroot", errno, "chroot into %s", rootfs);
	if (chdir("/") < 0)
		die("chroot", errno, "chdir to the new root");
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
	/* A key this kernel lacks is skipped (the helper checked and warned; upstream skips too). */
	if (fd < 0 && errno == ENOENT)
		return;
	if (fd < 0)
		die("sysctl", errno, "opening %s for %s", path, s->key);
	n = write(fd, s->value, len);
	if (n < 0 || (size_t)n != len)
		die("sysctl", n < 0 ? errno : EIO, "writing \"%s\" to %s", s->value, path);
	close(fd);
}

/* Step 5 in full: everything done to the filesystem view of a new container. */
static void apply_nodev(const struct plan *p, bool dev_tmpfs);

void setup_rootfs(const struct plan *p)
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
	/* Sharing the helper's mount namespace (`hostns`, no `ns mnt`): "/" is the helper's own,
	 * left alone; no self-bind of the rootfs (chroot needs none); the plan's mounts land below
	 * the rootfs in the shared namespace, as with runc (the helper detaches them at removal). */
	if (p->shared_mnt) {
		before = 0;
		after = 0;
	}
	if (before != 0 && mount(NULL, "/", NULL, before, NULL) < 0)
		die("mount", errno, "setting propagation %#lx on /", before);

	if (!p->shared_mnt && mount(p->rootfs, p->rootfs, NULL, MS_BIND | MS_REC, NULL) < 0)
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
	create_devices(p, rootfd);
	if (dev_tmpfs)
		populate_dev(rootfd, p->rootfs);
	/* The helper's prestart and createRuntime hooks, then the OCI createContainer hooks: the
	 * container's mount namespace is set up, the root is still the guest's (a createContainer
	 * hook's path resolves there), pivot_root has not happened (runtime-spec order, as runc). */
	wait_runtime_hooks(p);
	run_hooks(p, HOOK_CREATE_CONTAINER);

	if (p->shared_mnt)
		chroot_into(rootfd, p->rootfs);
	else
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
