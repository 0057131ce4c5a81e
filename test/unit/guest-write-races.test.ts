// Adversarial review: a container that can write into a directory the helper writes into
// (a CopyFile volume, a watchable-bind copy mounted rw) swaps a directory for a symlink to a
// guest directory at the worst moment (between the helper's check and its write). The swap is
// made deterministic by hooking the fs call the helper makes right after its check; a real
// container loops renameat2(RENAME_EXCHANGE) and, for the watcher, deletes its copy so that
// the helper rewrites it every 2 s.
import t, { type Test } from 'tap';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { CopyFileOps } from '../../helper/ops/copy-file';
import { BindWatcher } from '../../helper/ops/watcher';
import { MockMounter } from '../../helper/mock/storage';

/** The module object the helper's `import * as fs` reads through (patchable, unlike ours). */
const nodeFs = createRequire(__filename)('node:fs') as typeof fs;

type FsName = 'mkdirSync' | 'readFileSync' | 'copyFileSync' | 'readdirSync';

/** Run `swap` once: right after a mkdirSync, right before a read/copy, whose path matches. */
function hookOnce(t: Test, names: FsName[], match: (p: string) => boolean, swap: (p: string) => void): { fired: () => boolean } {
  let fired = false;
  for (const name of names) {
    const real = nodeFs[name] as (...a: unknown[]) => unknown;
    const hooked = (...args: unknown[]): unknown => {
      const p = String(args[0]);
      if (fired || !match(p)) return real.apply(nodeFs, args);
      fired = true;
      if (name !== 'mkdirSync') swap(p);
      const r = real.apply(nodeFs, args);
      if (name === 'mkdirSync') swap(p);
      return r;
    };
    (nodeFs as unknown as Record<string, unknown>)[name] = hooked;
    t.teardown(() => {
      (nodeFs as unknown as Record<string, unknown>)[name] = real;
    });
  }
  return { fired: () => fired };
}

/** Replace directory `p` by a symlink to `to` (what the container does). */
function swapForSymlink(p: string, to: string): void {
  fs.rmSync(p, { recursive: true, force: true });
  fs.symlinkSync(to, p);
}

function tmpTree(t: Test): { base: string; outside: string } {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'write-races-'));
  t.teardown(() => fs.rmSync(base, { recursive: true, force: true }));
  const outside = path.join(base, 'guest-etc');
  fs.mkdirSync(outside, { mode: 0o700 });
  fs.chmodSync(outside, 0o700);
  return { base, outside };
}

t.test('CopyFile: a parent swapped for a symlink right after mkdir is not chmod-ed through', async (t) => {
  const { base, outside } = tmpTree(t);
  const root = path.join(base, 'shared');
  fs.mkdirSync(root);
  const ops = new CopyFileOps({ roots: [root], chown: false });
  const hook = hookOnce(t, ['mkdirSync'], (p) => p.startsWith('/proc/self/fd/') && p.endsWith('/sub'), (p) => swapForSymlink(p, outside));
  const res = await ops.copyFile({ path: `${root}/sub/file`, fileMode: 0o100644, dirMode: 0o777, uid: 0, gid: 0, fileSize: 1, offset: 0, data: Buffer.from('x') }).then(
    () => 'written',
    (e: Error) => e.message,
  );
  t.ok(hook.fired(), 'the swap happened');
  t.equal(fs.statSync(outside).mode & 0o777, 0o700, `the guest directory keeps its mode (copyFile: ${res})`);
  t.same(fs.readdirSync(outside), [], 'nothing written into the guest directory');
});

function watcherFixture(t: Test): { outside: string; target: string; watcher: BindWatcher; tick: () => void } {
  const { base, outside } = tmpTree(t);
  const source = path.join(base, 'share', 'configmap');
  fs.mkdirSync(path.join(source, 'd'), { recursive: true });
  fs.writeFileSync(path.join(source, 'd', 'f'), 'configmap data');
  const watchableDir = path.join(base, 'watchable');
  fs.mkdirSync(watchableDir);
  const watcher = new BindWatcher({ mounter: new MockMounter(), watchableDir, intervalMs: 3_600_000 });
  t.teardown(() => watcher.close());
  const target = path.join(watchableDir, 'c1');
  watcher.add('c1', source, target);
  t.equal(fs.readFileSync(path.join(target, 'd', 'f'), 'utf8'), 'configmap data', 'first sync copied the volume');
  return { outside, target, watcher, tick: () => (watcher as unknown as { tick(): void }).tick() };
}

t.test('watchable-bind: a directory swapped for a symlink after the parent check is not written through', async (t) => {
  const { outside, target, tick } = watcherFixture(t);
  // The container deletes its copy (so the watcher rewrites it) and swaps d for a symlink.
  fs.rmSync(path.join(target, 'd', 'f'));
  // The swap happens when the watcher reads the source file, i.e. after it checked the target's parents.
  const hook = hookOnce(t, ['readFileSync', 'copyFileSync'], (p) => p.endsWith('/configmap/d/f'), () => {
    fs.renameSync(path.join(target, 'd'), path.join(target, 'd.moved'));
    fs.symlinkSync(outside, path.join(target, 'd'));
  });
  tick();
  t.ok(hook.fired(), 'the swap happened');
  t.same(fs.readdirSync(outside), [], 'nothing written into the guest directory');
});

t.test('watchable-bind: a directory swapped for a symlink right after mkdir is not chmod-ed through', async (t) => {
  const { outside, target, tick } = watcherFixture(t);
  fs.rmSync(path.join(target, 'd'), { recursive: true });
  const hook = hookOnce(t, ['mkdirSync'], (p) => p.endsWith('/d'), (p) => swapForSymlink(p, outside));
  tick();
  t.ok(hook.fired(), 'the swap happened');
  t.equal(fs.statSync(outside).mode & 0o777, 0o700, 'the guest directory keeps its mode');
  t.same(fs.readdirSync(outside), [], 'nothing written into the guest directory');
});

/** The watcher fixture with a deeper volume: d/sub/x, plus a guest file the container aims at. */
function deepFixture(t: Test): ReturnType<typeof watcherFixture> & { source: string; victim: string } {
  const f = watcherFixture(t);
  const source = path.join(path.dirname(f.outside), 'share', 'configmap');
  fs.mkdirSync(path.join(source, 'd', 'sub'));
  fs.writeFileSync(path.join(source, 'd', 'sub', 'x'), 'x');
  f.tick();
  t.equal(fs.readFileSync(path.join(f.target, 'd', 'sub', 'x'), 'utf8'), 'x', 'd/sub/x synced');
  const victim = path.join(f.outside, 'victim');
  fs.writeFileSync(victim, 'guest data');
  return { ...f, source, victim };
}

t.test('watchable-bind: removing a deleted directory never descends through a subdirectory swapped for a symlink', async (t) => {
  const { target, tick, source, victim, outside } = deepFixture(t);
  fs.rmSync(path.join(source, 'd'), { recursive: true });
  // While the watcher lists d, the container swaps d/sub for a symlink to the guest directory.
  const hook = hookOnce(t, ['readdirSync'], (p) => p.startsWith('/proc/self/fd/'), () => swapForSymlink(path.join(target, 'd', 'sub'), outside));
  tick();
  t.ok(hook.fired(), 'the swap happened');
  t.equal(fs.readFileSync(victim, 'utf8'), 'guest data', 'the guest file is still there');
  t.notOk(fs.existsSync(path.join(target, 'd')), 'd removed from the copy');
});

t.test('watchable-bind: RemoveContainer deletes the copy without following a planted symlink', async (t) => {
  const { target, watcher, victim, outside } = deepFixture(t);
  fs.rmSync(path.join(target, 'd'), { recursive: true });
  fs.symlinkSync(outside, path.join(target, 'd'));
  watcher.remove('c1');
  t.equal(fs.readFileSync(victim, 'utf8'), 'guest data', 'the guest file is still there');
  t.notOk(fs.existsSync(target), 'the whole copy removed');
});
