/* kata-init: paths resolved inside the rootfs, never escaping it (see kata-init.h and KATA-INIT.md). */
#include "kata-init.h"

/* ------------------------------------------------------------------------------------------ */
/* Paths inside the rootfs                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* Opens `rel` (a path below the rootfs that is known to contain no symlink and no "..")
 * as an O_PATH fd, with the kernel enforcing both facts. "" is the rootfs itself. */
int open_in_root(int rootfd, const char *rel, int extra_flags)
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
int resolve_in_rootfs(int rootfd, const char *rootfs, const char *target,
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
const char *fd_path(int fd, char buf[32])
{
	snprintf(buf, 32, "/proc/self/fd/%d", fd);
	return buf;
}
