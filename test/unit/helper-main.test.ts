import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { prepareControlDir } from '../../helper/main';

t.test('prepareControlDir: <stateDir>/control, mode 0700, owned by the control uid', async (t) => {
  const state = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-state-'));
  t.teardown(() => fs.rmSync(state, { recursive: true, force: true }));
  const uid = process.getuid ? process.getuid() : 0;
  const dir = prepareControlDir(path.join(state, 'run'), uid);
  t.equal(dir, path.join(state, 'run', 'control'));
  const st = fs.statSync(dir);
  t.ok(st.isDirectory());
  t.equal(st.mode & 0o777, 0o700, 'only the control uid may enter');
  t.equal(st.uid, uid, 'owned by the control uid');
  fs.chmodSync(dir, 0o755);
  prepareControlDir(path.join(state, 'run'), uid);
  t.equal(fs.statSync(dir).mode & 0o777, 0o700, 'a loosened mode is tightened again on restart');
  fs.rmdirSync(dir);
  fs.writeFileSync(dir, 'x');
  t.throws(() => prepareControlDir(path.join(state, 'run'), uid), /not a directory|EEXIST/, 'a file in its place is refused');
});
