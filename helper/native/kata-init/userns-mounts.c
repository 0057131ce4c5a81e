/* kata-init: mqueue/sysfs premade with fsmount for a new user namespace (see kata-init.h, KATA-INIT.md). */
#include "kata-init.h"

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
