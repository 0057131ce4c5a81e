/* kata-init: the container's filesystem view (create mode) (see kata-init.h and KATA-INIT.md). */
#include "kata-init.h"

/* ------------------------------------------------------------------------------------------ */
/* Paths inside the rootfs                                                                    */
/* ------------------------------------------------------------------------------------------ */

enum target_kind { TARGET_DIR, TARGET_FILE };

/* Opens `rel` (a path below the rootfs that is known to contain no symlink and no "..")
 * as an O_PATH fd, with the kernel enforcing both facts. "" is the rootfs itself. */
static int open_in_root(int rootfd, const char *rel, int extra_flags)
{
	struct open_how how = {
		.flags = (uint64_t)(O_PATH | O_CLOEXEC | extra_flags),
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};

	return (int)syscall(SYS_openat2, rootfd, rel[0] != '\0' ? rel : ".", &how, sizeof how);
}

/*
 * Resolves the container path `target` under the rootfs as if the rootfs were "/": walks it
 * one component at a time, following symlinks by hand (an absolute link restarts at the
 * rootfs, ".." never climbs above it) and creating what is missing (directories, and for the
 * last component an empty file when `kind` is TARGET_FILE). `resolved` receives the
 * symlink-free path relative to the rootfs ("" for the rootfs itself). Returns an O_PATH fd
 * of the target, opened with openat2(RESOLVE_IN_ROOT|RESOLVE_NO_SYMLINKS) so the kernel
 * vouches that it is where `resolved` says. `stage` prefixes error messages.
 */
static int resolve_in_rootfs(int rootfd, const char *rootfs, const char *target,
                             enum target_kind kind, char resolved[PATH_MAX], const char *stage)
{
	char rest[2 * PATH_MAX], spliced[2 * PATH_MAX], link[PATH_MAX], name[NAME_MAX + 1];
	size_t rlen = 0;
	int links = 0, cur, fd;
	char *p;

	if (strlen(target) >= sizeof rest)
		die(stage, ENAMETOOLONG, "target %s", target);
	strcpy(rest, target);
	resolved[0] = '\0';
	cur = open_in_root(rootfd, "", O_DIRECTORY);
	if (cur < 0)
		die(stage, errno, "opening rootfs %s", rootfs);

	for (p = rest;;) {
		struct stat st;
		size_t len;
		bool last;
		char *end;

		while (*p == '/')
			p++;
		if (*p == '\0')
			break;
		end = strchrnul(p, '/');
		len = (size_t)(end - p);
		if (len > NAME_MAX)
			die(stage, ENAMETOOLONG, "component of %s", target);
		memcpy(name, p, len);
		name[len] = '\0';
		p = end;
		last = p[strspn(p, "/")] == '\0';

		if (strcmp(name, ".") == 0)
			continue;
		if (strcmp(name, "..") == 0) {
			/* Lexical: `resolved` has no symlinks, so dropping its last component is
			 * exactly the parent; at the rootfs, ".." stays put. */
			char *slash = strrchr(resolved, '/');

			rlen = slash ? (size_t)(slash - resolved) : 0;
			resolved[rlen] = '\0';
			close(cur);
			cur = open_in_root(rootfd, resolved, O_DIRECTORY);
			if (cur < 0)
				die(stage, errno, "opening %s/%s (resolving %s)", rootfs, resolved,
				    target);
			continue;
		}

		if (fstatat(cur, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT)
				die(stage, errno, "inspecting %s/%s%s%s (resolving %s)", rootfs,
				    resolved, rlen ? "/" : "", name, target);
			if (last && kind == TARGET_FILE) {
				fd = openat(cur, name,
				            O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
				if (fd < 0 && errno != EEXIST)
					die(stage, errno, "creating file %s/%s%s%s (for %s)", rootfs,
					    resolved, rlen ? "/" : "", name, target);
				if (fd >= 0)
					close(fd);
			} else if (mkdirat(cur, name, 0755) < 0 && errno != EEXIST) {
				die(stage, errno, "creating directory %s/%s%s%s (for %s)", rootfs,
				    resolved, rlen ? "/" : "", name, target);
			}
			if (fstatat(cur, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
				die(stage, errno, "inspecting %s/%s%s%s (resolving %s)", rootfs,
				    resolved, rlen ? "/" : "", name, target);
		}

		if (S_ISLNK(st.st_mode)) {
			ssize_t n;

			if (++links > MAX_SYMLINKS)
				die(stage, ELOOP, "resolving %s", target);
			n = readlinkat(cur, name, link, sizeof link - 1);
			if (n < 0)
				die(stage, errno, "reading symlink %s/%s%s%s (resolving %s)", rootfs,
				    resolved, rlen ? "/" : "", name, target);
			link[n] = '\0';
			/* The rest of the walk is now the link's text followed by what was left. */
			if ((size_t)snprintf(spliced, sizeof spliced, "%s%s", link, p) >= sizeof spliced)
				die(stage, ENAMETOOLONG, "resolving %s", target);
			strcpy(rest, spliced);
			p = rest;
			if (link[0] == '/') {
				/* Absolute: from the rootfs, never from the host's "/". */
				rlen = 0;
				resolved[0] = '\0';
				close(cur);
				cur = open_in_root(rootfd, "", O_DIRECTORY);
				if (cur < 0)
					die(stage, errno, "opening rootfs %s", rootfs);
			}
			continue;
		}

		if (rlen + (rlen ? 1 : 0) + len >= PATH_MAX)
			die(stage, ENAMETOOLONG, "resolving %s", target);
		if (rlen)
			resolved[rlen++] = '/';
		memcpy(resolved + rlen, name, len + 1);
		rlen += len;

		if (!last) {
			if (!S_ISDIR(st.st_mode))
				die(stage, ENOTDIR, "%s/%s (resolving %s)", rootfs, resolved, target);
			fd = openat(cur, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (fd < 0)
				die(stage, errno, "opening %s/%s (resolving %s)", rootfs, resolved,
				    target);
			close(cur);
			cur = fd;
		}
	}
	close(cur);

	fd = open_in_root(rootfd, resolved, 0);
	if (fd < 0)
		die(stage, errno, "opening %s/%s (resolved from %s)", rootfs, resolved, target);
	return fd;
}

/* The name under which mount(2) reaches an O_PATH fd: the magic link resolves to exactly the
 * object we opened, so no path is looked up again. */
static const char *fd_path(int fd, char buf[32])
{
	snprintf(buf, 32, "/proc/self/fd/%d", fd);
	return buf;
}

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
static void remount_readonly(const char *stage, const char *path, const char *shown)
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

/* ------------------------------------------------------------------------------------------ */
/* Filesystems a new user namespace may not mount itself                                      */
/* ------------------------------------------------------------------------------------------ */

/* The per-mount MS_* flags of a new mount as fsmount's MOUNT_ATTR_* (they apply to this mount
 * only, never to the superblock, which here is shared with every mount of that namespace). */
static unsigned int mount_attrs_of(unsigned long flags)
{
	static const struct {
		unsigned long ms;
		unsigned int attr;
	} map[] = {
		{ MS_RDONLY, MOUNT_ATTR_RDONLY }, { MS_NOSUID, MOUNT_ATTR_NOSUID },
		{ MS_NODEV, MOUNT_ATTR_NODEV },   { MS_NOEXEC, MOUNT_ATTR_NOEXEC },
		{ MS_NODIRATIME, MOUNT_ATTR_NODIRATIME },
	};
	unsigned int attrs = 0;

	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		if (flags & map[i].ms)
			attrs |= map[i].attr;
	/* One atime mode (a field of the attributes, relatime = 0). */
	if (flags & MS_NOATIME)
		attrs |= MOUNT_ATTR_NOATIME;
	else if (flags & MS_STRICTATIME)
		attrs |= MOUNT_ATTR_STRICTATIME;
	return attrs;
}

/* Hands the source of `m` (shown in mountinfo, as with mount(2)) and its mount data
 * `k=v,k2,...` to fsconfig one parameter at a time (a value may be
 * double-quoted, e.g. an SELinux context with a comma in its categories; the quotes are not
 * part of the value), plus the superblock flags sync and dirsync (MS_MANDLOCK is ignored by
 * the kernel since 5.15 and has no fsconfig name any more). */
static void configure_fs(int fsfd, const struct mount_rec *m)
{
	char buf[4096];
	char *opt = buf;

	if (m->source[0] != '\0' && fsconfig(fsfd, FSCONFIG_SET_STRING, "source", m->source, 0) < 0)
		die("mount", errno, "fsconfig source=%s for %s (%s)", m->source, m->target, m->fstype);
	if ((m->flags & MS_SYNCHRONOUS) && fsconfig(fsfd, FSCONFIG_SET_FLAG, "sync", NULL, 0) < 0)
		die("mount", errno, "fsconfig sync for %s (%s)", m->target, m->fstype);
	if ((m->flags & MS_DIRSYNC) && fsconfig(fsfd, FSCONFIG_SET_FLAG, "dirsync", NULL, 0) < 0)
		die("mount", errno, "fsconfig dirsync for %s (%s)", m->target, m->fstype);
	if (strlen(m->data) >= sizeof buf)
		die("mount", E2BIG, "mount data of %s", m->target);
	strcpy(buf, m->data);
	while (*opt != '\0') {
		char *end = opt, *value;
		bool quoted = false;

		for (; *end != '\0' && (quoted || *end != ','); end++)
			if (*end == '"')
				quoted = !quoted;
		if (*end == ',')
			*end++ = '\0';
		value = strchr(opt, '=');
		if (value != NULL) {
			size_t len;

			*value++ = '\0';
			len = strlen(value);
			if (len >= 2 && value[0] == '"' && value[len - 1] == '"') {
				value[len - 1] = '\0';
				value++;
			}
		}
		if (*opt != '\0' &&
		    fsconfig(fsfd, value ? FSCONFIG_SET_STRING : FSCONFIG_SET_FLAG, opt, value, 0) < 0)
			die("mount", errno, "fsconfig %s%s%s for %s (%s)", opt, value ? "=" : "",
			    value ? value : "", m->target, m->fstype);
		opt = end;
	}
}

/*
 * Step 3a, before unshare(CLONE_NEWUSER): an mqueue belongs to an ipc namespace and a sysfs to
 * a network namespace, and only a holder of CAP_SYS_ADMIN over the user namespace that owns
 * that namespace may mount it. A container with a new user namespace that keeps the sandbox's
 * ipc namespace (Kata's rewrite) or a network namespace it did not create cannot mount them
 * from inside (EPERM). So, while kata-init is still privileged and already in the namespaces it
 * joined, each such `mount` record becomes a detached mount (fsopen + fsmount, the instance of
 * the namespace the container will use), attached in place of mount(2) by mount_one once the
 * container's mount namespace exists. `unshare_flags`: the namespaces about to be created (those
 * are owned by the new user namespace, whose own mounts work).
 */
void premount_unowned_filesystems(struct plan *p, int unshare_flags)
{
	for (size_t i = 0; i < p->n_mounts; i++) {
		struct mount_rec *m = &p->mounts[i];
		bool mqueue = strcmp(m->fstype, "mqueue") == 0 && !(unshare_flags & CLONE_NEWIPC);
		bool sysfs = strcmp(m->fstype, "sysfs") == 0 && !(unshare_flags & CLONE_NEWNET);
		int fsfd;

		if ((m->flags & MS_BIND) || !(mqueue || sysfs))
			continue;
		fsfd = fsopen(m->fstype, FSOPEN_CLOEXEC);
		if (fsfd < 0)
			die("mount", errno, "fsopen %s for %s (before the user namespace)", m->fstype,
			    m->target);
		configure_fs(fsfd, m);
		if (fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
			die("mount", errno, "creating the %s for %s", m->fstype, m->target);
		m->detached = fsmount(fsfd, FSMOUNT_CLOEXEC, mount_attrs_of(m->flags));
		if (m->detached < 0)
			die("mount", errno, "fsmount %s for %s with flags %#lx", m->fstype, m->target,
			    m->flags);
		close(fsfd);
	}
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
static bool mount_one(int rootfd, const char *rootfs, const struct mount_rec *m,
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

/*
 * Fills a /dev tmpfs (step 5): the default device nodes, and the symlinks every program
 * expects. mknod can be refused (no CAP_MKNOD, a user namespace); then the host's node is
 * bind-mounted onto an empty file instead.
 */
static void populate_dev(int rootfd, const char *rootfs)
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
static void create_devices(const struct plan *p, int rootfd)
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

/* bind the path onto itself and make that read-only; a missing path is not an error. */
static void readonly_path(const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0) {
		if (errno == ENOENT)
			return;
		die("readonlypath", errno, "inspecting %s", path);
	}
	if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0)
		die("readonlypath", errno, "binding %s onto itself", path);
	remount_readonly("readonlypath", path, path);
}

/* Hide a path: /dev/null over a file, an empty read-only tmpfs over a directory. */
static void mask_path(const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0) {
		if (errno == ENOENT)
			return;
		die("masked", errno, "inspecting %s", path);
	}
	if (S_ISDIR(st.st_mode)) {
		if (mount("tmpfs", path, "tmpfs", MS_RDONLY, NULL) < 0)
			die("masked", errno, "mounting an empty tmpfs over %s", path);
	} else if (mount("/dev/null", path, NULL, MS_BIND, NULL) < 0) {
		die("masked", errno, "binding /dev/null over %s", path);
	}
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
