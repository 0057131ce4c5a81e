// Listing the fds a container process holds, from inside the container (review6.test.ts,
// restart-attacks.test.ts).

/**
 * Shell text that lists the calling shell's own fds: its pid as the mounted /proc names it (a
 * createContainer hook sees the guest's /proc from the container's pid namespace, so $$ would be
 * another process there), then `ls -l /proc/<pid>/fd`.
 */
export const LIST_FDS = 'read pid rest < /proc/self/stat; ls -l /proc/$pid/fd';

/** {fd: target} from `ls -l /proc/PID/fd` output. */
export function fdsOf(listing: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of listing.split('\n')) {
    const m = /\s(\d+) -> (.*)$/.exec(line);
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}
