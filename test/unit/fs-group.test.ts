// fs_group ownership of a volume (helper/ops/storage.ts setOwnership; upstream set_ownership):
// modes and group applied to every entry, symlinks never followed — also when the container
// swaps a directory for a symlink while the walk is under way.
import t, { type Test } from 'tap';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { setOwnership } from '../../helper/ops/storage';

/** The module object the helper's `import * as fs` reads through (patchable). */
const nodeFs = createRequire(__filename)('node:fs') as typeof fs;

function tree(t: Test): { vol: string; outside: string; outsideFile: string } {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-group-'));
  t.teardown(() => fs.rmSync(base, { recursive: true, force: true }));
  const vol = path.join(base, 'vol');
  const outside = path.join(base, 'guest');
  fs.mkdirSync(path.join(vol, 'd', 'sub'), { recursive: true });
  fs.mkdirSync(outside);
  const outsideFile = path.join(outside, 'secret');
  fs.writeFileSync(outsideFile, 's');
  for (const p of [path.join(vol, 'a'), path.join(vol, 'd', 'f')]) fs.writeFileSync(p, 'x');
  fs.symlinkSync(outsideFile, path.join(vol, 'link'));
  for (const p of [outside, path.join(vol, 'd'), path.join(vol, 'd', 'sub')]) fs.chmodSync(p, 0o700);
  for (const p of [outsideFile, path.join(vol, 'a'), path.join(vol, 'd', 'f')]) fs.chmodSync(p, 0o600);
  return { vol, outside, outsideFile };
}

const mode = (p: string): number => fs.lstatSync(p).mode & 0o7777;

t.test('files get g+rw, directories g+rwx and setgid, the group is set, symlinks are skipped', async (t) => {
  const { vol, outsideFile } = tree(t);
  const gid = process.getgid!();
  setOwnership(vol, gid, false, false);
  t.equal(mode(path.join(vol, 'a')), 0o660);
  t.equal(mode(path.join(vol, 'd', 'f')), 0o660);
  t.equal(mode(path.join(vol, 'd')), 0o2770);
  t.equal(mode(path.join(vol, 'd', 'sub')), 0o2770);
  t.equal(fs.lstatSync(path.join(vol, 'd', 'f')).gid, gid);
  t.equal(mode(outsideFile), 0o600, 'the file a symlink names is untouched');
  setOwnership(vol, gid, true, false);
  t.equal(mode(path.join(vol, 'a')), 0o660, 'read-only adds only 0440 (bits already set stay)');
});

t.test('onRootMismatch: nothing when the root already has the group and bits', async (t) => {
  const { vol } = tree(t);
  fs.chmodSync(vol, 0o2770);
  setOwnership(vol, process.getgid!(), false, true);
  t.equal(mode(path.join(vol, 'a')), 0o600, 'children left as they were');
});

t.test('a directory swapped for a symlink between the check and the change is not followed', async (t) => {
  const { vol, outside, outsideFile } = tree(t);
  const dIno = fs.statSync(path.join(vol, 'd')).ino;
  let fired = false;
  // Right when the walk changes d's group (after it checked d is a directory), the container
  // swaps d for a symlink to a guest directory; the mode change that follows must not reach it.
  for (const name of ['chownSync', 'lchownSync'] as const) {
    const real = nodeFs[name] as (...a: unknown[]) => unknown;
    (nodeFs as unknown as Record<string, unknown>)[name] = (...args: unknown[]): unknown => {
      const r = real.apply(nodeFs, args);
      if (!fired && fs.statSync(String(args[0])).ino === dIno) {
        fired = true;
        fs.renameSync(path.join(vol, 'd'), path.join(vol, 'd.old'));
        fs.symlinkSync(outside, path.join(vol, 'd'));
      }
      return r;
    };
    t.teardown(() => {
      (nodeFs as unknown as Record<string, unknown>)[name] = real;
    });
  }
  setOwnership(vol, process.getgid!(), false, false);
  t.ok(fired, 'the swap happened');
  t.equal(mode(outside), 0o700, 'the guest directory keeps its mode');
  t.equal(mode(outsideFile), 0o600, 'the guest file keeps its mode');
  t.equal(mode(path.join(vol, 'd.old')), 0o2770, 'the directory that was checked got the change');
});
