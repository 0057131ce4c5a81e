// A terminal is the container's own (real agent: ttRPC, helper, kata-init, busybox rootfs):
// kata-init opens the pty in the container's devpts instance (KATA-INIT.md step 7b), so `tty`
// names /dev/pts/N of the container as under runc, job control works, TtyWinResize reaches
// `stty size`, and the pty is not one of the helper's (guest) devpts.
import t, { type Test } from 'tap';
import * as fs from 'node:fs';
import { AgentHarness, Code, expectCode, skipReason, within } from './lib/agent-harness';
import { DEFAULT_CAPABILITIES } from '../../scripts/lib/standalone';

const skip = skipReason();
if (skip) {
  t.plan(0, skip);
} else {
  const h = new AgentHarness('tty');
  t.before(async () => {
    await h.start('kata-tty');
  });
  t.teardown(() => h.dispose());
  t.afterEach(async (tt) => {
    if (!tt.passing()) tt.comment(h.logs());
  });

  /** ReadStdout of (cid, execId) until the text read so far matches `re` (or the stream ends). */
  const readUntil = (cid: string, execId: string, re: RegExp): Promise<string> => h.readUntil(cid, execId, re);

  /** st_dev of the helper's (the guest's) devpts: a pty from there has this device. */
  const guestDevpts = fs.statSync('/dev/pts/ptmx').dev;

  /** The fds of a host pid: name → [link text, st_dev of what it is]. */
  function fdsOf(pid: number): Map<string, { link: string; dev: number }> {
    const out = new Map<string, { link: string; dev: number }>();
    for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
      try {
        out.set(fd, { link: fs.readlinkSync(`/proc/${pid}/fd/${fd}`), dev: fs.statSync(`/proc/${pid}/fd/${fd}`).dev });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err; // closed meanwhile
      }
    }
    return out;
  }

  async function checkOwnPty(t: Test, cid: string, execId: string, name: RegExp, what: string): Promise<number> {
    const pid = await h.hostPid(cid, execId);
    const fds = fdsOf(pid);
    t.same([...fds.keys()].sort(), ['0', '1', '2'], `${what}: fds 0-2 only (no pty master or socket left in the container)`);
    const zero = fds.get('0')!;
    t.match(zero.link, name, `${what}: stdio is ${zero.link}`);
    t.not(zero.dev, guestDevpts, `${what}: the pty is not from the helper's /dev/pts`);
    return zero.dev;
  }

  t.test('init and exec terminals come from the container devpts; TtyWinResize reaches stty; job control', async (t) => {
    const cid = await h.run(t, ['sh', '-c', 'tty; read line; stty size; sleep 1000'], { terminal: true });
    const first = await within(readUntil(cid, cid, /\/dev\/pts\/\d+\r?\n/), 20_000, 'tty of the init');
    t.match(first, /^\/dev\/pts\/0\r?\n$/, 'the init is on /dev/pts/0 of its own devpts, as under runc');
    const initDev = await checkOwnPty(t, cid, cid, /^\/dev\/pts\/0$/, 'init');

    await h.exec(cid, 'tty-exec', ['sh', '-c', 'tty; sleep 1000'], { terminal: true });
    const ex = await within(readUntil(cid, 'tty-exec', /\r?\n/), 20_000, 'tty of the exec');
    t.match(ex, /^\/dev\/pts\/[1-9][0-9]*\r?\n$/, `the exec gets another pts of the same instance (${ex.trim()})`);
    const execDev = await checkOwnPty(t, cid, 'tty-exec', /^\/dev\/pts\/[1-9][0-9]*$/, 'exec');
    t.equal(execDev, initDev, 'init and exec share the container devpts instance');
    // The helper and control hold the masters: every pty fd of theirs is of the container's
    // devpts, none of the helper's own (what a helper-allocated pty would be).
    for (const [name, pid] of [['helper', h.agent.helper.pid!], ['control plane', h.agent.control.pid!]] as const) {
      const ptys = [...fdsOf(pid).values()].filter((f) => f.link.startsWith('/dev/pts') || f.link === '/dev/ptmx');
      t.ok(ptys.length >= 2, `the ${name} holds the two masters (${ptys.map((f) => f.link).join(', ')})`);
      t.ok(ptys.every((f) => f.dev === initDev), `the ${name}'s pty fds are all of the container's devpts`);
    }
    await h.client.call('SignalProcess', { container_id: cid, exec_id: 'tty-exec', signal: 9 });
    t.equal(await h.wait(cid, 'tty-exec'), 137);

    await h.client.call('TtyWinResize', { container_id: cid, exec_id: cid, row: 41, column: 123 });
    await h.client.call('WriteStdin', { container_id: cid, exec_id: cid, data: Buffer.from('go\n') });
    const size = await within(readUntil(cid, cid, /41 123/), 20_000, 'stty size');
    t.match(size, /^go\r?\n41 123\r?\n$/, 'stty size after TtyWinResize');

    const job = await h.execCollect(cid, ['sh', '-ic', 'echo pid=$$; tty; sleep 0 & wait; echo jobs-done'], { terminal: true });
    const out = job.stdout.toString();
    t.notMatch(out, /can't access tty|job control turned off|no job control/i, 'an interactive shell gets job control');
    t.match(out, /pid=\d+\r?\n\/dev\/pts\/[1-9][0-9]*\r?\njobs-done/, `interactive shell output (${JSON.stringify(out)})`);
    t.equal(job.status, 0);

    const user = await h.execCollect(cid, ['sh', '-c', 'stat -c "%u %a" "$(tty)"'], { terminal: true, uid: 1000 });
    t.match(user.stdout.toString(), /^1000 620\r?\n$/, 'a non-root exec owns its pts (as runc), devpts mode 0620');
  });

  t.test('CloseStdin on a container-devpts terminal still sends EOF (VEOF)', async (t) => {
    const cid = await h.run(t, ['sh', '-c', 'tty; cat; echo cat-done'], { terminal: true });
    await within(readUntil(cid, cid, /\/dev\/pts\/0\r?\n/), 20_000, 'tty of the init');
    await h.client.call('WriteStdin', { container_id: cid, exec_id: cid, data: Buffer.from('abc\n') });
    await h.client.call('CloseStdin', { container_id: cid, exec_id: cid });
    const rest = await within(readUntil(cid, cid, /cat-done/), 20_000, 'cat ends on VEOF');
    t.match(rest, /cat-done/, 'cat saw end of input');
    t.equal(await h.wait(cid, cid), 0);
  });

  t.test('a terminal without a devpts in the container is refused, naming the cause', async (t) => {
    const err = await expectCode(
      t,
      h.run(t, ['tty'], { terminal: true, mounts: [{ destination: '/dev/pts', type: 'tmpfs', source: 'tmpfs', options: ['nosuid'] }] }),
      Code.INVALID_ARGUMENT,
      'CreateContainer with terminal and no devpts',
    );
    t.match(err?.message, /tty: opening the container's \/dev\/pts\/ptmx .*needs a devpts on \/dev\/pts/, 'the error names the missing devpts');
  });

  t.test('an exec terminal refuses a ptmx the container planted (a FIFO, a symlink)', async (t) => {
    const caps = [...DEFAULT_CAPABILITIES, 'CAP_SYS_ADMIN'];
    const cases: [string, string, RegExp][] = [
      ['a FIFO', 'mkfifo /dev/pts/ptmx', /tty: \/dev\/pts\/ptmx is not on a devpts filesystem/],
      ['a symlink to the guest-visible ptmx', 'ln -s /dev/ptmx /dev/pts/ptmx', /tty: opening the container's \/dev\/pts\/ptmx .*: (Too many levels of symbolic links|Symbolic link loop)/],
    ];
    for (const [name, plant, want] of cases) {
      const cid = await h.run(t, ['sh', '-c', `umount -l /dev/pts && ${plant} && echo planted; sleep 1000`], { capabilities: caps });
      t.equal((await within(readUntil(cid, cid, /planted\n/), 20_000, `${name}: planting`)).trim(), 'planted');
      const err = await within(
        expectCode(t, h.exec(cid, 'x', ['tty'], { terminal: true }), Code.INVALID_ARGUMENT, `${name}: ExecProcess with a terminal`),
        20_000,
        `${name}: the exec answers`,
      );
      t.match(err?.message, want, `${name}: refused, naming the cause`);
      const still = await h.execCollect(cid, ['echo', 'alive']);
      t.equal(still.stdout.toString(), 'alive\n', `${name}: the container and the agent still work`);
    }
  });
}
