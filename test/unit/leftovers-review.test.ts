// Adversarial review 6: helper/ops/leftovers.ts, the next helper's clean-up after a helper died.
// A recorded pid that now belongs to another process (pid reuse: the start time differs) must
// not be killed; the recorded one is. Unreadable or foreign records are dropped, never acted on.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { LeftoverJournal, mountsBelow, processStartTime } from '../../helper/ops/leftovers';
import { silentLogger } from '../../shared/log';
import { CgroupManager, type ContainerCgroup } from '../../helper/ops/cgroup';
import type { DeviceProgramDriver } from '../../helper/ops/bpf-devices';

function sleeper(): ChildProcess {
  return spawn('sleep', ['100'], { stdio: 'ignore' });
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const exited = (c: ChildProcess): Promise<NodeJS.Signals | null> =>
  c.exitCode !== null || c.signalCode !== null ? Promise.resolve(c.signalCode) : new Promise((resolve) => c.once('exit', (_code, sig) => resolve(sig)));

t.test('clean-up kills a recorded init only when its start time still matches (no pid reuse)', async (t) => {
  const state = fs.mkdtempSync(path.join(os.tmpdir(), 'leftovers-'));
  t.teardown(() => fs.rmSync(state, { recursive: true, force: true }));
  const reused = sleeper();
  const ours = sleeper();
  t.teardown(() => {
    reused.kill('SIGKILL');
    ours.kill('SIGKILL');
  });
  const start = processStartTime(ours.pid!);
  t.type(start, 'string', 'start time readable');
  const journal = new LeftoverJournal(state, silentLogger());
  journal.record({ containerId: 'ours', pid: ours.pid!, startTime: start });
  // the same pid number, recorded for a process that started at another time
  journal.record({ containerId: 'reused', pid: reused.pid!, startTime: String(Number(processStartTime(reused.pid!)) - 1) });
  journal.record({ containerId: 'unknown-start', pid: reused.pid!, startTime: null });
  fs.writeFileSync(path.join(state, 'containers', 'garbage.json'), '{not json');
  fs.writeFileSync(path.join(state, 'containers', 'neg.json'), JSON.stringify({ containerId: 'neg', pid: -1, startTime: '1' }));
  const summary = await journal.cleanUp(undefined);
  t.equal(await exited(ours), 'SIGKILL', 'the recorded init is killed');
  t.ok(alive(reused.pid!), 'a process whose start time differs is left alone');
  t.equal(summary.containers, 4, 'the four well-formed records counted, the unreadable one dropped');
  t.same(fs.readdirSync(path.join(state, 'containers')), [], 'every record is gone after the clean-up');
  t.same(summary.unmounted, [], 'nothing mounted below a fresh state dir');
});

t.test('mountsBelow: strictly below the state dir, never a sibling sharing its prefix', async (t) => {
  const sys = mountsBelow('/sys');
  t.ok(sys.length > 0 && sys.every((m) => m.startsWith('/sys/')), `mounts below /sys: ${sys.join(' ')}`);
  t.notOk(sys.includes('/sys'), '/sys itself is not below /sys');
  t.same(mountsBelow('/sy'), [], 'a prefix of /sys selects nothing of /sys');
  t.same(mountsBelow('/'), [], 'a state dir of / selects nothing (never every mount of the guest)');
});

// A record carried the device program's handle — an fd number of the dead helper. The next
// helper's clean-up passed it to the driver, which closed (release) or detached-and-closed that
// number in its own fd table: whatever the new helper had there (an event-loop fd, a socket).
t.test('clean-up never uses the dead helper\'s device-program fd numbers', async (t) => {
  const state = fs.mkdtempSync(path.join(os.tmpdir(), 'leftovers-bpf-'));
  t.teardown(() => fs.rmSync(state, { recursive: true, force: true }));
  const v2 = path.join(state, 'cg2');
  fs.mkdirSync(path.join(v2, 'ctr'), { recursive: true });
  const used: string[] = [];
  const driver: DeviceProgramDriver = {
    available: () => true,
    attach: () => 3,
    detach: (_dir, handle) => void used.push(`detach ${handle}`),
    release: (handle) => void used.push(`release ${handle}`),
  };
  const cgroups = new CgroupManager({ layout: { mode: 'v2', v1: {}, v2, v2Controllers: [] }, simulate: true, devicePrograms: driver });
  const journal = new LeftoverJournal(state, silentLogger());
  // what a helper journaled for a container whose cgroup it created (fd 17) and for one in a
  // cgroup dir that existed before (fd 18)
  const created: ContainerCgroup = { path: '/ctr/a', dirs: [path.join(v2, 'ctr', 'a')], v1: {}, v2: path.join(v2, 'ctr', 'a'), created: [path.join(v2, 'ctr', 'a')], deviceProgram: 17 };
  const existing: ContainerCgroup = { path: '/ctr', dirs: [path.join(v2, 'ctr')], v1: {}, v2: path.join(v2, 'ctr'), created: [], deviceProgram: 18 };
  fs.mkdirSync(created.v2!);
  journal.record({ containerId: 'a', pid: 0, startTime: null, cgroup: created });
  journal.record({ containerId: 'b', pid: 0, startTime: null, cgroup: existing });
  const summary = await journal.cleanUp(cgroups);
  t.equal(summary.containers, 2);
  t.same(used, [], 'no fd number of the dead helper reached the driver');
  t.notOk(fs.existsSync(created.v2!), 'the created cgroup dir is removed (which detaches its program)');
  t.ok(fs.existsSync(existing.v2!), 'a dir the helper did not create stays');
});
