/**
 * Is the peer of a unix socket a container process? Containers run as uid 0 of the init user
 * namespace (no user namespaces), so SO_PEERCRED's uid cannot tell a container's root from the
 * guest's: its pid namespace can. Every container has a pid namespace of its own (the helper
 * refuses a plan without one), so a peer whose pid namespace is nested below ours is a
 * container, and a peer we cannot see at all (SO_PEERCRED pid 0: an ancestor or sibling pid
 * namespace) is refused too.
 *
 * The depth comes from the NSpid line of /proc/<pid>/status (one pid per nesting level), which
 * is world-readable, so the unprivileged control plane can check it as well as the helper.
 * Limit: the pid is the one recorded at connect(2); a connecting process that exits and whose
 * pid is reused by a guest process before this check would be mistaken for it (SO_PEERPIDFD,
 * Linux 6.5, would close that).
 */
import * as fs from 'node:fs';

/** Pid-namespace depth of `pid` as seen from here (1 = our own namespace's level), or undefined when unknown. */
export function pidNamespaceDepth(pid: number | 'self', procRoot = '/proc'): number | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`${procRoot}/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const line = text.split('\n').find((l) => l.startsWith('NSpid:'));
  if (!line) return undefined;
  return line.slice('NSpid:'.length).trim().split(/\s+/).length;
}

/**
 * undefined when the peer `pid` (from SO_PEERCRED) shares our pid namespace; otherwise the
 * reason to refuse it ("peer pid P runs in a nested pid namespace (a container)", "... is not
 * visible from this pid namespace", "... is gone").
 */
export function foreignPidNamespace(pid: number, procRoot = '/proc'): string | undefined {
  if (!Number.isInteger(pid) || pid <= 0) return `peer pid ${pid} is not visible from this pid namespace`;
  const own = pidNamespaceDepth('self', procRoot);
  const peer = pidNamespaceDepth(pid, procRoot);
  if (peer === undefined) return `peer pid ${pid} is gone or its /proc entry cannot be read`;
  if (own === undefined) return `cannot read this process's own pid namespace depth`;
  if (peer !== own) return `peer pid ${pid} runs in a nested pid namespace (a container)`;
  return undefined;
}
