// The leftover journal of the helper (helper/ops/leftovers.ts) without privileges: container and
// mount records written atomically and forgotten, the journaling mounter over the mock mounter
// (storages record their mount point and the directory they created), and the clean-up of a
// dead helper's mounts against a fake mountinfo: only recorded points still mounted, deepest
// first, MNT_DETACH|UMOUNT_NOFOLLOW, never through a symlink, created directories removed when
// empty.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { detachRecordedMounts, detachWithoutFollowing, JournalingMounter, LeftoverJournal, mountNamespace, mountsBelow, processStartTime, type MountCleanupSystem, type MountRecord } from '../../helper/ops/leftovers';
import { MockMounter, createMockStorage } from '../../helper/mock/storage';
import { silentLogger } from '../../shared/log';

function tmpDir(): string {
  return fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'leftovers-')));
}

/** A mountinfo line for `mp` (spaces escaped as the kernel does). */
function line(mp: string, id: number): string {
  return `${id} 1 0:${id} / ${mp.replace(/ /g, '\\040')} rw,relatime shared:1 - tmpfs tmpfs rw`;
}

/** A fake system: `mounted` is the mount table; umount2 calls are logged. */
function fakeSystem(mounted: string[], mntns = 7): MountCleanupSystem & { calls: Array<[string, number]>; mounted: string[] } {
  const sys = {
    mounted: [...mounted],
    calls: [] as Array<[string, number]>,
    mountinfo: () => sys.mounted.map((m, i) => line(m, i + 20)).join('\n') + '\n',
    umount2: (target: string, flags: number) => {
      sys.calls.push([target, flags]);
      const i = sys.mounted.lastIndexOf(target);
      if (i < 0) throw Object.assign(new Error(`umount2: EINVAL (${target})`), { code: 'EINVAL' });
      sys.mounted.splice(i, 1);
    },
    mntns: () => mntns,
  };
  return sys;
}

function records(dir: string): string[] {
  try {
    return fs.readdirSync(dir).sort();
  } catch {
    return [];
  }
}

t.test('container and mount records: written whole (no temporary left), replaced, forgotten', async (t) => {
  const state = tmpDir();
  t.teardown(() => fs.rmSync(state, { recursive: true, force: true }));
  const j = new LeftoverJournal(state, silentLogger());
  j.record({ containerId: 'c1', pid: 123, startTime: '42' });
  t.same(records(j.dir), ['c1.json'], 'one container file, no .tmp');
  t.same(JSON.parse(fs.readFileSync(path.join(j.dir, 'c1.json'), 'utf8')), { containerId: 'c1', pid: 123, startTime: '42' });
  j.record({ containerId: 'c1', pid: 124, startTime: '43' });
  t.equal(JSON.parse(fs.readFileSync(path.join(j.dir, 'c1.json'), 'utf8')).pid, 124, 'a new record replaces the old one');
  j.forget('c1');
  t.same(records(j.dir), [], 'forgotten');

  j.recordMount('/run/kata-containers/sandbox/shm', '/run/kata-containers/sandbox');
  j.recordMount('/run/kata containers/a b');
  const files = records(j.mountsDir);
  t.equal(files.length, 2, 'one file per mount point');
  t.ok(files.every((f) => /^[0-9a-f]{32}\.json$/.test(f)), `hashed names, no .tmp: ${files.join(', ')}`);
  const recs = files.map((f) => JSON.parse(fs.readFileSync(path.join(j.mountsDir, f), 'utf8')) as MountRecord);
  t.same(recs.map((r) => r.mountPoint).sort(), ['/run/kata containers/a b', '/run/kata-containers/sandbox/shm']);
  t.equal(recs.find((r) => r.mountPoint.endsWith('shm'))?.created, '/run/kata-containers/sandbox', 'the created directory');
  t.notOk('created' in (recs.find((r) => r.mountPoint.endsWith('a b')) ?? {}), 'no created directory when none was made');
  j.forgetMount('/run/kata containers/a b');
  j.forgetMount('/never/recorded');
  t.equal(records(j.mountsDir).length, 1, 'forgetMount drops exactly that record');
  t.equal((fs.statSync(j.mountsDir).mode & 0o777).toString(8), '700', 'the journal dir is root-only');
});

t.test('the journaling mounter records mounts, forgets unmounts, skips remounts and failed mounts', async (t) => {
  const state = tmpDir();
  t.teardown(() => fs.rmSync(state, { recursive: true, force: true }));
  const j = new LeftoverJournal(state, silentLogger());
  const inner = new MockMounter();
  const m = new JournalingMounter(inner, j);
  m.mount('tmpfs', '/k/a', 'tmpfs', 0, '', '/k');
  t.equal(records(j.mountsDir).length, 1, 'mount recorded');
  m.mount('', '/k/a', '', 32 /* MS_REMOUNT */, 'size=1m');
  t.equal(records(j.mountsDir).length, 1, 'a remount is not a new record');
  const failing = new MockMounter();
  failing.mount = () => {
    throw Object.assign(new Error('mount: ENODEV'), { code: 'ENODEV' });
  };
  const mf = new JournalingMounter(failing, j);
  t.throws(() => mf.mount('x', '/k/b', 'nofs', 0, ''), /ENODEV/, 'the mount error goes through');
  t.equal(records(j.mountsDir).length, 1, 'a failed mount leaves no record');
  m.umount('/k/a');
  t.same(records(j.mountsDir), [], 'unmount forgets');
  m.mount('tmpfs', '/k/c', 'tmpfs', 0, '');
  inner.mounts.delete('/k/c'); // gone behind our back
  t.throws(() => m.umount('/k/c'), { code: 'EINVAL' });
  t.same(records(j.mountsDir), [], 'a mount point that is no longer one is forgotten too');

  // an /etc/resolv.conf that is a symlink: mount(2) mounts on (and mountinfo lists) its target
  fs.writeFileSync(path.join(state, 'stub-resolv.conf'), '');
  fs.symlinkSync(path.join(state, 'stub-resolv.conf'), path.join(state, 'resolv.conf'));
  m.mount('/k/sandbox/resolv.conf', path.join(state, 'resolv.conf'), '', 4096 /* MS_BIND */, '');
  const [file] = records(j.mountsDir);
  t.equal((JSON.parse(fs.readFileSync(path.join(j.mountsDir, file), 'utf8')) as MountRecord).mountPoint, path.join(state, 'stub-resolv.conf'), 'a symlinked target is recorded as what it resolves to');
  m.umount(path.join(state, 'resolv.conf'));
  t.same(records(j.mountsDir), [], 'and forgotten by the same name');
});

t.test('storages through the journaling mounter: the next helper sees what is mounted and what was created', async (t) => {
  const state = tmpDir();
  const kata = tmpDir();
  t.teardown(() => {
    fs.rmSync(state, { recursive: true, force: true });
    fs.rmSync(kata, { recursive: true, force: true });
  });
  const j = new LeftoverJournal(state, silentLogger());
  const { storage, mounter } = createMockStorage({ kataDir: kata, journal: j });
  const eph = path.join(kata, 'sandbox', 'ephemeral', 'mem');
  await storage.addStorages({ owner: 'c1', storages: [{ driver: 'ephemeral', source: 'tmpfs', fstype: 'tmpfs', mountPoint: eph, options: [], driverOptions: [] }] });
  t.ok(mounter.isMounted(eph), 'mounted');
  const recs = records(j.mountsDir).map((f) => JSON.parse(fs.readFileSync(path.join(j.mountsDir, f), 'utf8')) as MountRecord);
  t.same(recs.map((r) => [r.mountPoint, r.created]), [[eph, path.join(kata, 'sandbox')]], 'the mount point and the topmost directory made for it');
  await storage.releaseStorages({ owner: 'c1' });
  t.same(records(j.mountsDir), [], 'released: forgotten');
});

t.test('clean-up of recorded mounts: still mounted ones only, deepest first, created dirs removed when empty', async (t) => {
  const root = tmpDir();
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const k = path.join(root, 'kata');
  const a = path.join(k, 'sandbox', 'storage', 'a');
  const b = path.join(k, 'sandbox', 'storage', 'b');
  const nested = path.join(a, 'inner');
  const kept = path.join(k, 'keep', 'full');
  const notOurs = path.join(k, 'shared');
  for (const d of [a, b, nested, kept, notOurs]) fs.mkdirSync(d, { recursive: true });
  fs.writeFileSync(path.join(kept, 'file'), 'x');
  // a symlink planted where a recorded mount point's parent was
  const elsewhere = path.join(root, 'elsewhere', 'm');
  fs.mkdirSync(elsewhere, { recursive: true });
  fs.symlinkSync(path.join(root, 'elsewhere'), path.join(k, 'link'));
  const viaLink = path.join(k, 'link', 'm');
  const otherNs = path.join(k, 'otherns');
  fs.mkdirSync(otherNs);

  const sys = fakeSystem([k, notOurs, a, nested, b, kept, viaLink, otherNs]);
  const recs: MountRecord[] = [
    { mountPoint: a, created: path.join(k, 'sandbox'), mntns: 7 },
    { mountPoint: b, created: path.join(k, 'sandbox'), mntns: 7 },
    { mountPoint: nested, created: nested, mntns: 7 },
    { mountPoint: kept, created: path.join(k, 'keep'), mntns: 7 },
    { mountPoint: viaLink, created: viaLink, mntns: 7 },
    { mountPoint: path.join(k, 'gone'), created: path.join(k, 'gone'), mntns: 7 },
    { mountPoint: otherNs, created: otherNs, mntns: 8 },
  ];
  const out = detachRecordedMounts(recs, sys, silentLogger());
  t.same(sys.calls.map(([p]) => p), [nested, a, b, kept], 'recorded points still mounted, deepest first; not the unrecorded ones, not one behind a symlink, not another namespace\'s');
  t.ok(sys.calls.every(([, f]) => f === (2 | 8)), 'MNT_DETACH|UMOUNT_NOFOLLOW');
  t.same(out.unmounted, [nested, a, b, kept]);
  t.same(sys.mounted, [k, notOurs, viaLink, otherNs], 'the kata dir, the share (not ours) and the skipped ones stay mounted');
  t.notOk(fs.existsSync(path.join(k, 'sandbox')), 'the directories made for a and b are removed, up to the topmost created one');
  t.ok(fs.existsSync(path.join(kept, 'file')), 'a non-empty directory is kept');
  t.ok(fs.existsSync(path.join(k, 'keep')), 'and so is its parent');
  t.ok(fs.existsSync(elsewhere), 'nothing removed through the symlink');
  t.ok(fs.existsSync(otherNs), 'nothing of another mount namespace removed');
  t.ok(out.removedDirs.includes(path.join(k, 'sandbox', 'storage')) && out.removedDirs.includes(a), `removed: ${out.removedDirs.join(', ')}`);
  t.ok(out.removedDirs.indexOf(a) < out.removedDirs.indexOf(path.join(k, 'sandbox')), 'deepest first');
});

t.test('the next helper\'s cleanUp takes the records, undoes them and detaches everything below the state dir', async (t) => {
  const root = tmpDir();
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const state = path.join(root, 'state');
  const shm = path.join(root, 'kata', 'sandbox', 'shm');
  const nsFile = path.join(state, 'sandbox-ns', 'uts');
  fs.mkdirSync(shm, { recursive: true });
  fs.mkdirSync(path.dirname(nsFile), { recursive: true });
  fs.writeFileSync(nsFile, '');
  const sys = fakeSystem([shm, nsFile], mountNamespace());
  const dead = new LeftoverJournal(state, silentLogger(), () => sys);
  dead.recordMount(shm, path.join(root, 'kata', 'sandbox'));
  fs.writeFileSync(path.join(dead.mountsDir, 'deadbeef.json.tmp'), '{"mountPoint":"/'); // a write cut by the crash
  fs.writeFileSync(path.join(dead.mountsDir, 'bad.json'), JSON.stringify({ mountPoint: '/x/../etc', mntns: 0 }));
  const next = new LeftoverJournal(state, silentLogger(), () => sys);
  const summary = await next.cleanUp(undefined);
  t.same(summary.unmounted, [shm, nsFile], 'the recorded storage mount, then the namespace bind below the state dir');
  t.same(summary.removedDirs, [shm, path.join(root, 'kata', 'sandbox')], 'its directories');
  t.ok(fs.existsSync(path.join(root, 'kata')), 'the kata dir itself stays');
  t.same(records(next.mountsDir), [], 'every record (and the cut temporary, the invalid one) dropped');
  t.same(await next.cleanUp(undefined), { containers: 0, cgroupsLeft: 0, unmounted: [], removedDirs: [] }, 'a second start finds nothing');
});

t.test('mountsBelow reads the given mountinfo, decodes escapes, deepest first', async (t) => {
  const info = ['/s', '/s/a b', '/s/a b/c', '/other', '/sx'].map((m, i) => line(m, i)).join('\n');
  t.same(mountsBelow('/s', info), ['/s/a b/c', '/s/a b']);
});

// Adversarial review (restart): a recorded init pid that was reused by another process (the
// container died, the pid came round) must not be killed by the next helper; only the process
// whose start time matches the record is.
t.test('cleanUp kills a recorded init only when its start time matches (pid reuse)', async (t) => {
  const root = tmpDir();
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const spawnSleeper = () => {
    const child = spawn('sleep', ['100'], { stdio: 'ignore' });
    const exited = new Promise<string | null>((resolve) => child.once('exit', (_c, sig) => resolve(sig)));
    t.teardown(() => child.kill('SIGKILL'));
    return { child, exited };
  };
  const reused = spawnSleeper();
  const recorded = spawnSleeper();
  await new Promise((r) => setTimeout(r, 50));
  const sys = fakeSystem([], mountNamespace());
  const dead = new LeftoverJournal(path.join(root, 'state'), silentLogger(), () => sys);
  const startOf = (pid: number | undefined): string => processStartTime(pid ?? -1) ?? 'none';
  // the pid now names another process: the record's start time is another one
  dead.record({ containerId: 'c-reused', pid: reused.child.pid ?? -1, startTime: String(Number(startOf(reused.child.pid)) - 1) });
  dead.record({ containerId: 'c-live', pid: recorded.child.pid ?? -1, startTime: startOf(recorded.child.pid) });
  const next = new LeftoverJournal(path.join(root, 'state'), silentLogger(), () => sys);
  const summary = await next.cleanUp(undefined);
  t.equal(summary.containers, 2, 'both records taken');
  t.equal(await recorded.exited, 'SIGKILL', 'the recorded init (start time matches) is killed');
  await new Promise((r) => setTimeout(r, 100)); // a SIGKILL sent with the other would have landed by now
  const state = fs.readFileSync(`/proc/${reused.child.pid}/stat`, 'utf8').split(') ')[1]?.[0];
  t.ok(reused.child.exitCode === null && reused.child.signalCode === null && state !== 'Z', `the process that reused a recorded pid is spared (state ${state})`);
});

t.test('detachWithoutFollowing: a mount point reached through a planted symlink is not detached; a real one is, with MNT_DETACH|UMOUNT_NOFOLLOW', (t) => {
  const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'detach-nofollow-')));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.mkdirSync(path.join(dir, 'rootfs', 'mnt'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'elsewhere'));
  // The container swapped a directory on the way for a symlink to somewhere else.
  fs.symlinkSync(path.join(dir, 'elsewhere'), path.join(dir, 'rootfs', 'swapped'));
  const calls: [string, number][] = [];
  const umount2 = (target: string, flags: number): void => {
    calls.push([target, flags]);
  };
  t.equal(detachWithoutFollowing(path.join(dir, 'rootfs', 'swapped'), umount2), false, 'symlinked path refused');
  t.equal(detachWithoutFollowing(path.join(dir, 'rootfs', 'swapped', 'x'), umount2), false, 'path below a symlink refused');
  t.same(calls, [], 'nothing detached through the symlink');
  t.equal(detachWithoutFollowing(path.join(dir, 'rootfs', 'mnt'), umount2), true, 'real mount point detached');
  t.same(calls, [[path.join(dir, 'rootfs', 'mnt'), 2 | 8]], 'MNT_DETACH|UMOUNT_NOFOLLOW on the path itself');
  t.end();
});
