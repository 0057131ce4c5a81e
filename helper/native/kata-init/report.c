/* kata-init: error and progress lines on the sync fd (see kata-init.h and KATA-INIT.md). */
#include "kata-init.h"

/* ------------------------------------------------------------------------------------------ */
/* Reporting                                                                                  */
/* ------------------------------------------------------------------------------------------ */

/*
 * Formats `error <stage>: <detail>[: <strerror(err)>]\n`, replaces control characters (a path
 * may contain a newline) so that it stays one line, writes it with one write(2) and exits.
 * If the sync fd is unusable (someone ran us by hand) the line goes to stderr instead.
 */
static void __attribute__((noreturn)) vfail(int code, const char *stage, int err, const char *fmt,
                                            va_list ap)
{
	char line[ERROR_LINE_MAX];
	size_t len;
	int n;

	n = snprintf(line, sizeof line, "error %s: ", stage);
	len = n < 0 ? 0 : (size_t)n;
	if (len < sizeof line) {
		n = vsnprintf(line + len, sizeof line - len, fmt, ap);
		len += n < 0 ? 0 : (size_t)n;
	}
	if (err != 0 && len < sizeof line) {
		n = snprintf(line + len, sizeof line - len, ": %s", strerror(err));
		len += n < 0 ? 0 : (size_t)n;
	}
	/* Leave room for the newline; snprintf may have truncated. */
	if (len > sizeof line - 1)
		len = sizeof line - 1;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
			line[i] = '?';
	line[len++] = '\n';

	if (write(FD_SYNC, line, len) < 0 && errno == EBADF)
		(void)!write(STDERR_FILENO, line, len);
	_exit(code);
}

void __attribute__((noreturn, format(printf, 3, 4)))
die(const char *stage, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfail(1, stage, err, fmt, ap);
}

void __attribute__((noreturn, format(printf, 4, 5)))
die_code(int code, const char *stage, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfail(code, stage, err, fmt, ap);
}

/* Writes one progress line (`pid N`, `ready`). If the helper is gone there is nobody to
 * report to and nothing sensible to do but stop. */
void __attribute__((format(printf, 1, 2))) sync_line(const char *fmt, ...)
{
	char line[64];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof line)
		_exit(1);
	if (write(FD_SYNC, line, (size_t)n) != n)
		_exit(1);
}

void *xrealloc(void *p, size_t size)
{
	void *q = realloc(p, size);

	if (q == NULL)
		die("plan", ENOMEM, "allocating %zu bytes", size);
	return q;
}
