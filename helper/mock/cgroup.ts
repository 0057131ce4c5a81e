/**
 * The mock twin of helper/ops/cgroup.ts: the same CgroupManager in `simulate` mode over a temp
 * directory tree laid out like this project's test machine (hybrid: v1 controllers under
 * <root>/<controller>, cgroup2 at <root>/unified). Files are created as they are written;
 * cgroup.procs collects the pids joined; nothing is enforced or killed. Device programs are the
 * mock driver's (helper/mock/bpf-devices.ts: a `devices.bpf` text file in the v2 dir) unless given.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Logger } from '../../shared/log';
import { CgroupManager, type CgroupLayout } from '../ops/cgroup';
import type { DeviceProgramDriver } from '../ops/bpf-devices';
import { mockDevicePrograms } from './bpf-devices';

/** v1 controllers the mock mounts. */
const MOCK_V1 = ['cpu', 'cpuacct', 'cpuset', 'memory', 'devices', 'freezer', 'blkio', 'pids'];

/** A mock cgroup tree: its manager and its root directory (remove it with `cleanup`). */
export interface MockCgroups {
  manager: CgroupManager;
  root: string;
  cleanup(): void;
}

/** Create a mock cgroup tree under `root` (default: <tmpdir>/kata-cgroup-mock-<pid>, shared by the process's mock backends). */
export function createMockCgroups(opts: { root?: string; logger?: Logger; mode?: 'hybrid' | 'v2'; devicePrograms?: DeviceProgramDriver } = {}): MockCgroups {
  const root = opts.root ?? path.join(os.tmpdir(), `kata-cgroup-mock-${process.pid}`);
  const v1: Record<string, string> = {};
  if (opts.mode !== 'v2') {
    for (const c of MOCK_V1) {
      v1[c] = path.join(root, c);
      fs.mkdirSync(v1[c], { recursive: true });
    }
  }
  const v2 = path.join(root, 'unified');
  fs.mkdirSync(v2, { recursive: true });
  const layout: CgroupLayout = {
    mode: opts.mode === 'v2' ? 'v2' : 'hybrid',
    v1,
    v2,
    v2Controllers: opts.mode === 'v2' ? ['cpuset', 'cpu', 'io', 'memory', 'hugetlb', 'pids'] : [],
  };
  return {
    manager: new CgroupManager({ layout, logger: opts.logger, simulate: true, devicePrograms: opts.devicePrograms ?? mockDevicePrograms() }),
    root,
    cleanup: () => fs.rmSync(root, { recursive: true, force: true }),
  };
}
