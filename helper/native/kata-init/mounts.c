/* kata-init: the spec's mount records (create mode) (see kata-init.h and KATA-INIT.md). */
#include "kata-init.h"

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
void remount_readonly(const char *stage, const char *path, const char *shown)
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
 * Attaches the mount made by premount_unowned_filesystems for `m` on the directory `target` (an
 * O_PATH fd). Moved there, it is cloned and the original detached again, and the clone takes its
 * place: the clone is a mount made now, so its mount id comes after those of the container's
 * earlier mounts (since 6.8 mountinfo lists a namespace's mounts by id, and the OCI suite checks
 * that they appear in the spec's order; the fsmount'ed one was made before all of them).
 */
static void attach_detached(const struct mount_rec *m, int target)
{
	const unsigned int here = MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH;
	char buf[32];
	int clone;

	if (move_mount(m->detached, "", target, "", here) < 0)
		die("mount", errno, "attaching the %s made for %s", m->fstype, m->target);
	clone = open_tree(m->detached, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
	if (clone < 0)
		die("mount", errno, "cloning the %s mount on %s", m->fstype, m->target);
	if (umount2(fd_path(m->detached, buf), MNT_DETACH) < 0)
		die("mount", errno, "detaching the first %s mount on %s", m->fstype, m->target);
	close(m->detached);
	if (move_mount(clone, "", target, "", here) < 0)
		die("mount", errno, "attaching the %s clone on %s", m->fstype, m->target);
	close(clone);
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
bool mount_one(int rootfd, const char *rootfs, const struct mount_rec *m,
                      char **prop_target)
{
	unsigned long prop = m->flags & PROPAGATION_FLAGS;
	unsigned long flags = m->flags & ~PROPAGATION_FLAGS;
	bool bind = (flags & MS_BIND) != 0;
	/* What a bind needs applied by remount: everything but bind/rec (and remount itself). */
	unsigned long remount = bind ? flags & ~(BIND_FLAGS | (unsigned long)MS_REMOUNT) : 0;
	enum target_kind kind = TARGET_DIR;
	char resolved[PATH_MAX], fdbuf[32];
	int fd, rc;

	/* Only flags that describe the container's own new mount. MS_REMOUNT without MS_BIND
	 * would reconfigure the superblock already mounted at the target (a guest filesystem
	 * bound there by an earlier record: `ro` made the guest's disk read-only, `size=8k`
	 * shrank a guest tmpfs), MS_MOVE would move a mount of the guest. For a bind, MS_REMOUNT
	 * only ever means the MS_BIND|MS_REMOUNT of the new mount below. */
	if (flags & ~(bind ? BIND_MOUNT_ALLOWED : NEW_MOUNT_ALLOWED))
		die("mount", EINVAL, "mount flags %#lx of %s (%s) are not allowed (allowed: %#lx)%s",
		    flags & ~(bind ? BIND_MOUNT_ALLOWED : NEW_MOUNT_ALLOWED), m->target,
		    m->fstype[0] ? m->fstype : "no type", bind ? BIND_MOUNT_ALLOWED : NEW_MOUNT_ALLOWED,
		    (flags & MS_REMOUNT) && !bind ? ": remount applies only to a bind mount" : "");
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

	if (m->detached >= 0) {
		attach_detached(m, fd);
		rc = 0;
	} else {
		rc = mount(m->source, fd_path(fd, fdbuf), m->fstype[0] ? m->fstype : NULL,
		           bind ? flags & BIND_FLAGS : flags, m->data[0] ? m->data : NULL);
	}
	if (rc < 0)
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
