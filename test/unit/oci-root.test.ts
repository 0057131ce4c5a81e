// Adversarial review 6: the OCI CLI (run as root) keeps its records under --root. A --root that
// another user owns (or may write) let that user swap <root>/<id> for a symlink after create's
// mkdir, so root wrote state.json (through a temporary file + rename) into any directory. The
// store now refuses such a root (OciError, exit 1) before touching anything below it.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { OciError, OciStore, writeAtomic, type OciRecord } from '../../control/ctl/oci-state';

const record = (id: string): OciRecord => ({ id, bundle: '/b', ociVersion: '1.0.2', annotations: {}, monitorPid: 0, created: new Date(0).toISOString() });

t.test('a --root owned by another user, or writable by others, is refused before any write', async (t) => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'oci-root-'));
  t.teardown(() => fs.rmSync(base, { recursive: true, force: true }));
  const victim = path.join(base, 'victim');
  fs.mkdirSync(victim);

  const shared = path.join(base, 'shared');
  fs.mkdirSync(shared, { mode: 0o777 });
  fs.chmodSync(shared, 0o777);
  const s1 = new OciStore(shared);
  let caught: unknown = null;
  try {
    s1.claim('c1');
  } catch (err) {
    caught = err;
  }
  t.ok(caught instanceof OciError, 'a world-writable root is refused (OciError: exit 1)');
  t.throws(() => s1.claim('c1'), /writable by group or others/);
  t.notOk(fs.existsSync(path.join(shared, 'c1')), 'nothing created below it');

  if (process.geteuid?.() === 0) {
    const other = path.join(base, 'other');
    fs.mkdirSync(other, { mode: 0o755 });
    fs.chownSync(other, 65534, 65534);
    const s2 = new OciStore(other);
    t.throws(() => s2.claim('c1'), /owned by uid 65534/, 'a root owned by another uid is refused');
    // the attack this prevents: the owner swaps <root>/<id> for a symlink after the mkdir
    t.throws(() => s2.write(record('c1')), /owned by uid 65534/);
    t.throws(() => s2.read('c1'), /owned by uid 65534/, 'and its records are not read either');
    t.notOk(fs.existsSync(path.join(victim, 'state.json')), 'nothing written through a symlink');
  }

  const mine = path.join(base, 'mine');
  const s3 = new OciStore(mine);
  s3.claim('c1');
  s3.write(record('c1'));
  t.equal(s3.get('c1').id, 'c1', 'a root of our own (created 0711) works');
  t.equal(fs.statSync(mine).mode & 0o777, 0o711);
});

// The pid file (and every record) is written through a temporary file; its name was
// `<file>.<pid>.tmp`, so in a world-writable directory another user could plant a symlink there
// and root wrote the pid through it into any file.
t.test('writeAtomic never writes through a symlink planted at a predictable temporary name', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oci-pidfile-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const victim = path.join(dir, 'victim');
  fs.writeFileSync(victim, 'precious');
  const file = path.join(dir, 'container.pid');
  fs.symlinkSync(victim, `${file}.${process.pid}.tmp`);
  writeAtomic(file, '4242');
  t.equal(fs.readFileSync(victim, 'utf8'), 'precious', 'the symlink target is untouched');
  t.equal(fs.readFileSync(file, 'utf8'), '4242', 'the pid file is written');
  t.ok(fs.lstatSync(file).isFile(), 'as a regular file');
  t.same(fs.readdirSync(dir).filter((n) => n.endsWith('.tmp') && n !== `container.pid.${process.pid}.tmp`), [], 'no temporary file left');
});
