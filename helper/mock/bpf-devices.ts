/**
 * Mock twin of helper/ops/bpf-devices.ts: "attaching" writes the rules, one per line in
 * devices.allow syntax prefixed by allow/deny ("allow c 1:3 rwm", -1 as "*"), to the pseudo file
 * `devices.bpf` of the (simulated) cgroup2 directory; detaching removes it
 * unless a newer program was attached since. Nothing is enforced.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { CgroupDeviceRule } from '../../shared/protocol';
import type { DeviceProgramDriver } from '../ops/bpf-devices';

/** The pseudo file the mock writes in the cgroup2 directory. */
export const MOCK_DEVICE_PROGRAM_FILE = 'devices.bpf';

/** A driver that records programs as text files; `available` as given (default true). */
export function mockDevicePrograms(available = true): DeviceProgramDriver {
  let next = 1;
  const current = new Map<string, number>();
  return {
    available: () => available,
    attach(dir: string, rules: readonly CgroupDeviceRule[]): number {
      const id = (v: number): string => (v < 0 ? '*' : String(v));
      const text = rules.map((r) => `${r.allow ? 'allow' : 'deny'} ${r.type} ${id(r.major)}:${id(r.minor)} ${r.access}\n`).join('');
      fs.writeFileSync(path.join(dir, MOCK_DEVICE_PROGRAM_FILE), text);
      current.set(dir, next);
      return next++;
    },
    detach(dir: string, handle: number): void {
      // a newer program of the same cgroup (UpdateContainer attaches before detaching) stays
      if (current.get(dir) !== handle) return;
      current.delete(dir);
      fs.rmSync(path.join(dir, MOCK_DEVICE_PROGRAM_FILE), { force: true });
    },
    release(): void {
      // nothing held
    },
  };
}
