// helper/ops/registry.ts createStdio: pipes without a terminal; with one, a set that waits for
// its pty (/dev/null as the child's 0-2 until then) and takes it either from kata-init
// (adoptPtyMaster: the container's devpts) or from the helper's own devpts (openHelperPty: the
// mock backend). Misuse throws and never leaks the fd it was given.
import t from 'tap';
import * as fs from 'node:fs';
import { loadNative } from '../../shared/native';
import { createStdio } from '../../helper/ops/registry';

const native = loadNative();
const linkOf = (fd: number): string => fs.readlinkSync(`/proc/self/fd/${fd}`);
const isOpen = (fd: number): boolean => fs.existsSync(`/proc/self/fd/${fd}`);

t.test('without a terminal: three pipes and two output spools, the parent ends named', async (t) => {
  const s = createStdio(false);
  t.equal(s.terminal, false);
  t.same(s.parent.map((p) => p.name), ['stdin', 'stdout', 'stderr', 'stdoutSpool', 'stderrSpool']);
  for (const p of s.parent.slice(3)) t.match(linkOf(p.fd), /^\/memfd:kata-std(out|err)Spool/, `${p.name} is a memfd`);
  for (const fd of s.child) t.match(linkOf(fd), /^pipe:/);
  t.throws(() => s.openHelperPty(), /not a terminal stdio set/);
  const [r, w] = native.pipe();
  native.close(r);
  t.throws(() => s.adoptPtyMaster(w), /not a terminal stdio set/);
  t.notOk(isOpen(w), 'the fd given to a refused adoptPtyMaster is closed');
  s.closeChild();
  s.closeParent();
  for (const fd of [...s.child, ...s.parent.map((p) => p.fd)]) t.notOk(isOpen(fd), `fd ${fd} closed`);
});

t.test('a terminal waits for its pty: /dev/null child ends, only the output spool as parent end', async (t) => {
  const s = createStdio(true);
  t.equal(s.terminal, true);
  t.same(s.parent.map((p) => p.name), ['ptySpool']);
  const spool = s.parent[0];
  t.equal(new Set(s.child).size, 1, 'one fd three times');
  t.equal(linkOf(s.child[0]), '/dev/null');
  const { master, slave } = native.openpty();
  native.close(slave);
  s.adoptPtyMaster(master);
  t.same(s.parent, [spool, { name: 'pty', fd: master }]);
  const { master: m2, slave: s2 } = native.openpty();
  native.close(s2);
  t.throws(() => s.adoptPtyMaster(m2), /waiting for its pty/, 'only one master');
  t.notOk(isOpen(m2), 'the second master was closed, not leaked');
  s.closeChild();
  s.closeParent();
  t.notOk(isOpen(master));
});

t.test('openHelperPty (mock backend): the slave becomes the child 0-2, the master the parent end', async (t) => {
  const s = createStdio(true);
  const devNull = s.child[0];
  s.openHelperPty();
  t.notOk(isOpen(devNull) && linkOf(devNull) === '/dev/null', 'the /dev/null placeholder is closed');
  t.equal(new Set(s.child).size, 1);
  t.match(linkOf(s.child[0]), /^\/dev\/pts\/\d+$/);
  t.same(s.parent.map((p) => p.name), ['ptySpool', 'pty']);
  t.throws(() => s.openHelperPty(), /waiting for its pty/);
  s.closeChild();
  s.closeParent();
});
