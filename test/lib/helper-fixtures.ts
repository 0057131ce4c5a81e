// Shared by the helper-protocol tests (test/unit/mock-helper, test/unit/helper-server,
// test/integration/helper): plans, reading received stdio fds, exit events, status checks.
import type { Test } from 'tap';
import type { HelperClient } from '../../shared/helper-client';
import { loadNative } from '../../shared/native';
import { StatusError, type ContainerPlan, type ExitEvent, type HelperEvent, type ProcessPlan } from '../../shared/protocol';

/** A ProcessPlan running `args` as root in "/" with a PATH and HOME; `over` replaces fields. */
export function processPlan(args: string[], over: Partial<ProcessPlan> = {}): ProcessPlan {
  return {
    args,
    env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/root'],
    cwd: '/',
    uid: 0,
    gid: 0,
    additionalGids: [],
    terminal: false,
    noNewPrivileges: true,
    rlimits: [],
    ...over,
  };
}

/** Read a pipe/pty fd to EOF (EIO counts as EOF for a pty) without blocking the event loop; closes it. */
export function readToEnd(fd: number): Promise<string> {
  const n = loadNative();
  return new Promise((resolve, reject) => {
    n.setNonBlocking(fd, true);
    const buf = Buffer.alloc(65536);
    let out = '';
    const poller = new n.Poller(fd, () => {
      for (;;) {
        let got: number;
        try {
          got = n.read(fd, buf, 0, buf.length);
        } catch (err) {
          if ((err as { code?: string }).code !== 'EIO') {
            poller.close();
            reject(err);
            return;
          }
          got = 0;
        }
        if (got < 0) return;
        if (got === 0) {
          poller.close();
          n.close(fd);
          resolve(out);
          return;
        }
        out += buf.toString('utf8', 0, got);
      }
    });
    poller.start(true, false);
  });
}

/** Close every fd of a helper response (already-closed ones are ignored). */
export function closeAll(fds: Record<string, number>): void {
  const n = loadNative();
  for (const fd of Object.values(fds)) {
    try {
      n.close(fd);
    } catch {
      // already closed
    }
  }
}

/** The next exit event of (containerId, execId) on `client`. */
export function exitOf(client: HelperClient, containerId: string, execId = ''): Promise<ExitEvent> {
  return new Promise((resolve) => {
    const on = (e: HelperEvent): void => {
      if (e.event === 'exit' && e.containerId === containerId && e.execId === execId) {
        client.removeListener('event', on);
        resolve(e);
      }
    };
    client.on('event', on);
  });
}

/** Assert that `p` rejects with a StatusError of `code` (and a message matching `re`). */
export async function rejectsStatus(t: Test, p: Promise<unknown>, code: number, re?: RegExp): Promise<void> {
  try {
    await p;
  } catch (err) {
    t.ok(err instanceof StatusError, 'rejects with a StatusError');
    t.equal((err as StatusError).code, code, `code ${code}: ${(err as Error).message}`);
    if (re) t.match((err as Error).message, re);
    return;
  }
  t.fail(`expected a rejection with code ${code}`);
}

/** A container plan for the mock helper (its rootfs need not exist): /proc and /dev mounts, `args` with `over`. */
export function mockContainerPlan(args: string[], over: Partial<ProcessPlan> = {}): ContainerPlan {
  return {
    rootfs: '/run/kata-containers/c/rootfs',
    readonly: false,
    hostname: 'mock',
    namespaces: [
      { type: 'mount', path: '' },
      { type: 'pid', path: '' },
      { type: 'uts', path: '' },
      { type: 'ipc', path: '' },
    ],
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    ],
    process: processPlan(args, over),
    maskedPaths: ['/proc/kcore'],
    readonlyPaths: ['/proc/sys'],
    sysctl: {},
    rootfsPropagation: '',
  };
}

/**
 * The smallest container plan the helper accepts: new mount and pid namespaces, no mounts,
 * `args` as the process, everything else empty; `over` replaces top-level fields (rootfs, cgroup).
 */
export function minimalContainerPlan(args: string[], over: Partial<ContainerPlan> = {}): ContainerPlan {
  return {
    rootfs: '/run/kata-containers/c/rootfs',
    readonly: false,
    hostname: '',
    namespaces: [
      { type: 'mount', path: '' },
      { type: 'pid', path: '' },
    ],
    mounts: [],
    process: processPlan(args),
    maskedPaths: [],
    readonlyPaths: [],
    sysctl: {},
    rootfsPropagation: '',
    ...over,
  };
}
