/**
 * The mock twin of the helper's storage ops: the same validation, reference counting,
 * directories, `local` storages and watchable-bind copies (real files under the Kata directory,
 * which tests point at a temp dir), but mount(2) is only recorded ({@link MockMounter}), uevents
 * come from a hub tests publish to, and modprobe is recorded, not run.
 */
import * as path from 'node:path';
import { Code, StatusError } from '../../shared/protocol';
import type { Logger } from '../../shared/log';
import { DeviceWaiter } from '../ops/device';
import type { Mounter } from '../ops/mount';
import { JournalingMounter, type LeftoverJournal } from '../ops/leftovers';
import { StorageBackend, type ModprobeRunner } from '../ops/storage';
import { UeventHub } from '../ops/uevent';

/** One recorded mount. */
export interface MockMount {
  source: string;
  target: string;
  fstype: string;
  flags: number;
  data: string;
}

/** Records mounts in a table instead of calling mount(2). */
export class MockMounter implements Mounter {
  readonly mounts = new Map<string, MockMount>();

  mount(source: string, target: string, fstype: string, flags: number, data: string): void {
    const t = path.posix.normalize(target).replace(/\/+$/, '');
    const REMOUNT = 32;
    if (flags & REMOUNT) {
      const cur = this.mounts.get(t);
      if (!cur) throw Object.assign(new Error(`mount: Invalid argument (${t})`), { code: 'EINVAL' });
      this.mounts.set(t, { ...cur, flags, data });
      return;
    }
    this.mounts.set(t, { source, target: t, fstype, flags, data });
  }

  umount(target: string): void {
    if (!this.mounts.delete(target)) throw Object.assign(new Error(`umount2: Invalid argument (${target})`), { code: 'EINVAL' });
  }

  isMounted(target: string): boolean {
    return this.mounts.has(target);
  }

  mountsUnder(dir: string): string[] {
    return [...this.mounts.keys()].filter((m) => m === dir || m.startsWith(dir + '/'));
  }
}

/** The mock storage backend and its doubles (for tests that inspect them). */
export interface MockStorage {
  storage: StorageBackend;
  mounter: MockMounter;
  uevents: UeventHub;
  modprobeCalls: string[][];
}

/**
 * Build the mock storage backend over `kataDir`. modprobe "succeeds" unless the module is named
 * "missing-module". With `journal`, the mock mounts are journaled as the real helper's are
 * (helper/ops/leftovers.ts JournalingMounter); without, nothing is recorded.
 */
export function createMockStorage(opts: { kataDir: string; resolvConf?: string; logger?: Logger; hotplugTimeoutMs?: number; journal?: LeftoverJournal }): MockStorage {
  const mounter = new MockMounter();
  const uevents = new UeventHub();
  const modprobeCalls: string[][] = [];
  const modprobe: ModprobeRunner = async (argv) => {
    modprobeCalls.push(argv);
    if (argv.includes('missing-module')) return { code: 1, stderr: 'modprobe: FATAL: Module missing-module not found' };
    return { code: 0, stderr: '' };
  };
  const storage = new StorageBackend({
    mounter: opts.journal ? new JournalingMounter(mounter, opts.journal) : mounter,
    devices: new DeviceWaiter({ uevents, timeoutMs: opts.hotplugTimeoutMs ?? 500 }),
    kataDir: opts.kataDir,
    resolvConf: opts.resolvConf ?? path.join(opts.kataDir, 'etc-resolv.conf'),
    modprobe,
    logger: opts.logger,
  });
  if (!path.isAbsolute(opts.kataDir)) throw new StatusError(Code.INVALID_ARGUMENT, `kata dir ${opts.kataDir} is not absolute`);
  return { storage, mounter, uevents, modprobeCalls };
}
