/* kata-init: masked and read-only paths (create mode) (see kata-init.h and KATA-INIT.md). */
#include "kata-init.h"

/* bind the path onto itself and make that read-only; a missing path is not an error. */
void readonly_path(const char *path)
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
void mask_path(const char *path)
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
