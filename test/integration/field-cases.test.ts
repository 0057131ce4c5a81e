// Field cases (/work/shared/reference/field-cases.md): faults other guest agents shipped, each
// replayed through the real ttRPC API against one stand-alone agent (real helper, busybox
// rootfs). One subtest per case, named by its id; repetition counts are trimmed from the
// reference (B08 5 runs per variant instead of 50, B11 pauses 3 s instead of 10, B16 10
// iterations instead of 100) to keep the file around a minute (KATA_FIELD_B08_RUNS=50 runs the
// reference count). Every subtest removes its
// containers on teardown; the last one stops the agent and checks nothing was left behind.
import t from 'tap';
import * as crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { AgentHarness, Code, eventually, expectCode, rejection, skipReason, sleep, within, type ReadMethod } from './lib/agent-harness';

/** `seq 1 n` output as busybox prints it. */
function seqOutput(n: number, eol = '\n'): Buffer {
  const parts: string[] = [];
  for (let i = 1; i <= n; i++) parts.push(`${i}${eol}`);
  return Buffer.from(parts.join(''));
}

const sha256 = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex');

/** B08: the reference output of `seq 1 500000`. */
const SEQ_500K_BYTES = 3_388_895;
const SEQ_500K_SHA256 = '18c68655ed84064b77ff577ca9275d99a308ad9603eda1201b9cd1670ad755f3';

/** Largest read asked for in bulk transfers (1 MiB; the agent caps at 4 MiB − 64 KiB). */
const BIG_READ = 1024 * 1024;

const skip = skipReason();
if (skip) {
  t.plan(0, skip);
} else {
  const h = new AgentHarness('field-cases');
  t.before(async () => {
    await h.start('kata-field');
  });
  t.teardown(() => h.dispose());
  t.afterEach(async (tt) => {
    if (!tt.passing()) tt.comment(h.logs());
  });

  /** Drain stdout and stderr of `cid`/`execId` at once; {stdout, stderr}. */
  const drainBoth = async (cid: string, execId: string): Promise<{ stdout: Buffer; stderr: Buffer }> => {
    const [stdout, stderr] = await within(
      Promise.all([h.readAll('ReadStdout', cid, execId, BIG_READ), h.readAll('ReadStderr', cid, execId, BIG_READ)]),
      60_000,
      `draining ${cid}/${execId}`,
    );
    return { stdout, stderr };
  };

  t.test('B08 large stdout/stderr output is byte-exact (Create and Exec, Wait before and after draining)', async (t) => {
    t.equal(sha256(seqOutput(500_000)), SEQ_500K_SHA256, 'reference digest of seq 1 500000 (sanity)');
    const RUNS = Number(process.env.KATA_FIELD_B08_RUNS ?? 5);
    const box = await h.run(t, ['sleep', '1000']);
    for (const via of ['Create', 'Exec'] as const) {
      for (const stream of ['stdout', 'stderr'] as const) {
        for (const waitFirst of [true, false]) {
          const variant = `${via} ${stream} Wait ${waitFirst ? 'before' : 'after'} draining`;
          const bad: string[] = [];
          for (let run = 0; run < RUNS; run++) {
            const script = stream === 'stdout' ? 'seq 1 500000' : 'seq 1 500000 1>&2';
            let cid: string;
            let execId: string;
            if (via === 'Create') {
              cid = await h.run(t, ['sh', '-c', script]);
              execId = cid;
            } else {
              cid = box;
              execId = h.id('b08');
              await h.exec(cid, execId, ['sh', '-c', script]);
            }
            const waiting = waitFirst ? h.wait(cid, execId) : null;
            if (waiting) await sleep(20); // the Wait is in flight before the first read
            const { stdout, stderr } = await drainBoth(cid, execId);
            const status = await within(waiting ?? h.wait(cid, execId), 10_000, 'WaitProcess');
            const [data, other] = stream === 'stdout' ? [stdout, stderr] : [stderr, stdout];
            if (data.length !== SEQ_500K_BYTES || sha256(data) !== SEQ_500K_SHA256 || other.length !== 0 || status !== 0) {
              bad.push(`run ${run}: ${data.length} bytes sha ${sha256(data).slice(0, 12)}, other stream ${other.length} bytes, status ${status}`);
            }
            if (via === 'Create') await h.client.call('RemoveContainer', { container_id: cid, timeout: 10 });
          }
          t.same(bad, [], `${variant}: ${RUNS} runs of ${SEQ_500K_BYTES} bytes, sha256 ${SEQ_500K_SHA256.slice(0, 12)}…`);
        }
      }
    }

    // Wait answered before the first read: an output that fits the buffers is complete after the exit.
    const small = seqOutput(100_000);
    for (const stream of ['stdout', 'stderr'] as const) {
      const execId = h.id('b08w');
      await h.exec(box, execId, ['sh', '-c', stream === 'stdout' ? 'seq 1 100000' : 'seq 1 100000 >&2']);
      t.equal(await within(h.wait(box, execId), 10_000, 'WaitProcess'), 0, `${stream}: exited before any read`);
      await sleep(100);
      const { stdout, stderr } = await drainBoth(box, execId);
      const [data, other] = stream === 'stdout' ? [stdout, stderr] : [stderr, stdout];
      t.equal(data.length, small.length, `${stream}: all ${small.length} bytes readable after the Wait`);
      t.ok(data.equals(small), `${stream}: the exact bytes`);
      t.equal(other.length, 0, 'nothing on the other stream');
    }
  });

  t.test('B10 tty output carries no NUL padding', async (t) => {
    const box = await h.run(t, ['sleep', '1000']);
    const abc = await h.execCollect(box, ['sh', '-c', 'printf abc'], { terminal: true });
    t.equal(abc.stdout.toString('latin1'), 'abc', 'tty: printf abc → exactly "abc"');
    t.equal(abc.status, 0);

    const plain = await h.execCollect(box, ['seq', '1', '20000']);
    t.equal(plain.stdout.length, 108_894, 'no tty: 108,894 bytes');
    t.ok(plain.stdout.equals(seqOutput(20_000)), 'no tty: the exact bytes');

    const tty = await h.execCollect(box, ['seq', '1', '20000'], { terminal: true });
    t.equal(tty.stdout.length, 108_894 + 20_000, 'tty: 108,894 + 20,000 bytes (one CR per line)');
    t.equal(tty.stdout.indexOf(0), -1, 'tty: no NUL byte');
    t.ok(tty.stdout.equals(seqOutput(20_000, '\r\n')), 'tty: the exact bytes with CRLF');
    t.equal(tty.status, 0);
  });

  t.test('B11 a paused reader gets backpressure, not lost output', async (t) => {
    const box = await h.run(t, ['sleep', '1000']);
    const execId = 'yes';
    await h.exec(box, execId, ['sh', '-c', 'yes | head -c 50000000']);
    let total = 0;
    let badAt = -1;
    const consume = (chunk: Buffer): void => {
      for (let i = 0; i < chunk.length && badAt < 0; i++) {
        if (chunk[i] !== ((total + i) % 2 === 0 ? 0x79 : 0x0a)) badAt = total + i;
      }
      total += chunk.length;
    };
    const read = async (method: ReadMethod, until: number): Promise<boolean> => {
      while (total < until) {
        try {
          const { data } = await h.client.call(method, { container_id: box, exec_id: execId, len: BIG_READ });
          consume(Buffer.from(data));
        } catch (err) {
          if ((err as { code?: number }).code === Code.OUT_OF_RANGE) return true;
          throw err;
        }
      }
      return false;
    };
    await read('ReadStdout', 1024 * 1024);
    t.ok(total >= 1024 * 1024, `read ${total} bytes before the pause`);
    await sleep(3000);
    const procs = (await h.debug(`/v1/containers/${box}`)).body.processes as { execId: string; exited: boolean }[];
    t.equal(procs.find((p) => p.execId === execId)?.exited, false, 'the writer is still blocked after a 3 s pause (backpressure)');
    await within(read('ReadStdout', Infinity), 60_000, 'reading to EOF');
    t.equal(total, 50_000_000, 'exactly 50,000,000 bytes');
    t.equal(badAt, -1, 'every byte is in the "y\\n" pattern');
    t.equal(await h.wait(box, execId), 0, 'status 0');
  });

  t.test('B13 CloseStdin on a tty process does not cut off its output', async (t) => {
    const box = await h.run(t, ['sleep', '1000']);
    const execId = 'late';
    await h.exec(box, execId, ['sh', '-c', 'sleep 1; echo after'], { terminal: true });
    await h.client.call('CloseStdin', { container_id: box, exec_id: execId });
    const out = await within(h.readAll('ReadStdout', box, execId), 10_000, 'reading the tty to EOF');
    t.match(out.toString(), /after\r?\n/, 'output written after CloseStdin arrives');
    t.equal(await h.wait(box, execId), 0, 'status 0');
    const late = await within(
      rejection(h.client.call('WriteStdin', { container_id: box, exec_id: execId, data: Buffer.from('x') })),
      5000,
      'WriteStdin after CloseStdin',
    );
    t.ok(late.code !== Code.OK, `WriteStdin after CloseStdin fails (${late.message})`);

    // While the tty process is still running, too.
    await h.exec(box, 'tty2', ['sh', '-c', 'sleep 2'], { terminal: true });
    await h.client.call('CloseStdin', { container_id: box, exec_id: 'tty2' });
    const running = await within(
      rejection(h.client.call('WriteStdin', { container_id: box, exec_id: 'tty2', data: Buffer.from('x') })),
      5000,
      'WriteStdin after CloseStdin (running tty)',
    );
    t.equal(running.code, Code.FAILED_PRECONDITION, `refused while running (${running.message})`);

    // And for pipes.
    await h.exec(box, 'pipe', ['sh', '-c', 'cat; sleep 2']);
    await h.client.call('CloseStdin', { container_id: box, exec_id: 'pipe' });
    const piped = await within(
      rejection(h.client.call('WriteStdin', { container_id: box, exec_id: 'pipe', data: Buffer.from('x') })),
      5000,
      'WriteStdin after CloseStdin (pipe)',
    );
    t.equal(piped.code, Code.FAILED_PRECONDITION, `pipe: refused (${piped.message})`);
    t.equal(await h.wait(box, 'tty2'), 0);
    t.equal(await h.wait(box, 'pipe'), 0);
  });

  t.test('B14 WaitProcess more than once; RemoveContainer right after SIGKILL', async (t) => {
    // (a) Two concurrent Waits and a late one.
    const box = await h.run(t, ['sleep', '1000']);
    await h.exec(box, 'sleeper', ['sleep', '1']);
    const both = await within(Promise.all([h.wait(box, 'sleeper'), h.wait(box, 'sleeper')]), 10_000, 'two concurrent Waits');
    t.same(both, [0, 0], 'both concurrent Waits return 0');
    let late: number | string;
    try {
      late = await within(h.wait(box, 'sleeper'), 2000, 'the late Wait');
    } catch (err) {
      late = (err as { code?: number }).code === Code.NOT_FOUND ? 'NOT_FOUND' : (err as Error).message;
    }
    t.ok(late === 0 || late === 'NOT_FOUND', `the late Wait answers 0 or NOT_FOUND at once (got ${late})`);

    // (b) RemoveContainer with no delay after SIGKILL, then the id again.
    const cid = h.id('b14');
    await h.run(t, ['sleep', '1000'], { id: cid });
    const pid = await h.hostPid(cid);
    await h.client.call('SignalProcess', { container_id: cid, exec_id: cid, signal: 9 });
    await h.client.call('RemoveContainer', { container_id: cid, timeout: 10 });
    t.pass('RemoveContainer right after SIGKILL succeeds');
    let gone = false;
    try {
      process.kill(pid, 0);
    } catch {
      gone = true;
    }
    t.ok(gone, `the init (host pid ${pid}) is gone`);
    await h.client.call('CreateContainer', { container_id: cid, exec_id: cid, OCI: h.spec(['echo', 'again']) });
    await h.client.call('StartContainer', { container_id: cid });
    t.equal((await h.readAll('ReadStdout', cid, cid)).toString(), 'again\n', 'the same id is created and runs again');
    t.equal(await h.wait(cid, cid), 0);
  });

  t.test('B16 a killed exec is reaped at once and its Wait still returns 137', async (t) => {
    const box = await h.run(t, ['sleep', '1000']);
    const zombies: string[] = [];
    const statuses: number[] = [];
    const lingering: string[] = [];
    for (let i = 0; i < 10; i++) {
      const victim = `victim-${i}`;
      await h.exec(box, victim, ['sleep', '1000']);
      await h.client.call('SignalProcess', { container_id: box, exec_id: victim, signal: 9 });
      await sleep(200);
      const ps = await h.execCollect(box, ['ps', '-o', 'stat,pid,comm']);
      const rows = ps.stdout
        .toString()
        .split('\n')
        .slice(1)
        .filter((l) => l.trim() !== '')
        .map((l) => l.trim().split(/\s+/));
      for (const [stat, pid, comm] of rows) {
        if (stat.startsWith('Z')) zombies.push(`iteration ${i}: ${pid} ${comm} ${stat}`);
        if (comm === 'sleep' && pid !== '1') lingering.push(`iteration ${i}: ${pid} ${stat}`);
      }
      statuses.push(await within(h.wait(box, victim), 5000, `Wait ${victim}`));
    }
    t.same(zombies, [], 'no Z entries in ps');
    t.same(lingering, [], 'the killed sleep is gone from the container 0.2 s after SIGKILL');
    t.same(statuses, Array(10).fill(137), 'every Wait after the kill returns 137');
  });

  t.test('B17 HOME for container processes', async (t) => {
    const box = await h.run(t, ['sleep', '1000']);
    const home = async (opts: { uid?: number; env?: string[] }): Promise<string> => {
      const r = await h.execCollect(box, ['sh', '-c', 'echo "$HOME"'], { env: ['PATH=/bin:/usr/bin'], ...opts });
      return `${r.stdout.toString().trim()} (status ${r.status})`;
    };
    t.equal(await home({ uid: 0 }), '/root (status 0)', 'uid 0: the home of root in the container /etc/passwd');
    t.equal(await home({ uid: 4242 }), '/ (status 0)', 'uid 4242 without a passwd entry: /');
    t.equal(await home({ env: ['PATH=/bin:/usr/bin', 'HOME=/custom'] }), '/custom (status 0)', 'HOME in the env is kept');

    const initHome = await h.run(t, ['sh', '-c', 'echo "$HOME"'], { env: ['PATH=/bin:/usr/bin'] });
    const { stdout } = await drainBoth(initHome, initHome);
    t.equal(stdout.toString(), '/root\n', 'the init process gets HOME too');
    t.equal(await h.wait(initHome, initHome), 0);

    // A rootfs without /etc/passwd: HOME is "/" and the process still starts.
    const bare = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-nopasswd-'));
    t.teardown(() => fs.rmSync(bare, { recursive: true, force: true }));
    fs.chmodSync(bare, 0o755);
    execFileSync('cp', ['-a', `${h.rootfs}/.`, bare]);
    fs.rmSync(path.join(bare, 'etc', 'passwd'));
    const nopw = await h.run(t, ['sh', '-c', 'echo "$HOME"'], { env: ['PATH=/bin:/usr/bin'], rootfs: bare });
    const out = await drainBoth(nopw, nopw);
    t.equal(out.stdout.toString(), '/\n', 'no /etc/passwd in the rootfs: HOME=/');
    t.equal(await h.wait(nopw, nopw), 0);
  });

  t.test('B18 empty or malformed env entries do not break the start', async (t) => {
    const cid = await h.run(t, ['env'], { env: ['', '=x', 'FOO=bar', 'NOEQUALS', 'PATH=/bin:/usr/bin'] });
    const { stdout, stderr } = await drainBoth(cid, cid);
    t.equal(await h.wait(cid, cid), 0, 'env exits 0');
    const lines = stdout.toString().split('\n');
    t.ok(lines.includes('FOO=bar'), 'FOO=bar is present');
    t.ok(lines.includes('PATH=/bin:/usr/bin'), 'PATH is present');
    t.same(
      lines.filter((l) => l.startsWith('=') || l === 'NOEQUALS'),
      [],
      'the invalid entries were skipped',
    );
    t.equal(stderr.toString(), '', 'nothing on stderr');
    // Exec with the same env.
    const box = await h.run(t, ['sleep', '1000']);
    const r = await h.execCollect(box, ['env'], { env: ['', '=x', 'FOO=bar', 'NOEQUALS'] });
    t.equal(r.status, 0, 'exec: env exits 0');
    const execLines = r.stdout.toString().split('\n');
    t.ok(execLines.includes('FOO=bar'), 'exec: FOO=bar is present');
    t.same(
      execLines.filter((l) => l.startsWith('=') || l === 'NOEQUALS'),
      [],
      'exec: the invalid entries were skipped',
    );
    t.equal((await h.client.callObject('Check', { service: '' })).status, 'SERVING', 'the agent is alive');
  });

  t.test('B19 a cwd missing from the image is a clear CreateContainer error', async (t) => {
    const cid = h.id('b19');
    h.removeOnTeardown(t, cid);
    const err = await rejection(
      h.client.call('CreateContainer', { container_id: cid, exec_id: cid, OCI: h.spec(['pwd'], { cwd: '/does/not/exist' }) }),
    );
    t.match(err.message, '/does/not/exist', `the error names the cwd (${err.code}: ${err.message})`);
    t.equal((await h.client.callObject('Check', { service: '' })).status, 'SERVING', 'the agent is alive');
    t.equal((await h.debug(`/v1/containers/${cid}`)).status, 404, 'no container record is left');

    // The id is usable and an existing cwd is honoured.
    await h.client.call('CreateContainer', { container_id: cid, exec_id: cid, OCI: h.spec(['pwd'], { cwd: '/tmp' }) });
    await h.client.call('StartContainer', { container_id: cid });
    t.equal((await h.readAll('ReadStdout', cid, cid)).toString(), '/tmp\n', 'an existing cwd: pwd prints it');
    t.equal(await h.wait(cid, cid), 0);

    // Exec: the same.
    const box = await h.run(t, ['sleep', '1000']);
    await expectCode(t, h.exec(box, 'nocwd', ['pwd'], { cwd: '/does/not/exist' }), err.code, 'ExecProcess with a missing cwd fails like Create');
    const r = await h.execCollect(box, ['pwd'], { cwd: '/etc' });
    t.equal(r.stdout.toString(), '/etc\n', 'exec in an existing cwd');
  });

  t.test('B20 OCI rlimits are applied, for the init and for an exec', async (t) => {
    const rlimits = [
      { type: 'RLIMIT_NOFILE', soft: 1024, hard: 4096 },
      { type: 'RLIMIT_NPROC', soft: 300, hard: 400 },
    ];
    const cid = await h.run(t, ['sh', '-c', 'ulimit -Sn; ulimit -Hn; ulimit -Su; ulimit -Hu'], { rlimits });
    const { stdout } = await drainBoth(cid, cid);
    t.equal(stdout.toString(), '1024\n4096\n300\n400\n', 'the init gets the spec rlimits');
    t.equal(await h.wait(cid, cid), 0);

    const box = await h.run(t, ['sleep', '1000'], { rlimits });
    const own = await h.execCollect(box, ['sh', '-c', 'ulimit -Sn; ulimit -Hn'], {
      rlimits: [{ Type: 'RLIMIT_NOFILE', Soft: 512, Hard: 2048 }],
    });
    t.equal(own.stdout.toString(), '512\n2048\n', 'an exec with its own rlimits gets them');
    // Baseline without rlimits in the spec: whatever the helper's own limits are (recorded, as
    // the field case asks); the point is that spec values are not dropped.
    const base = await h.execCollect(box, ['sh', '-c', 'ulimit -Sn; ulimit -Hn']);
    t.comment(`baseline RLIMIT_NOFILE of an exec without rlimits: ${base.stdout.toString().trim().replace('\n', ' / ')}`);
    t.equal(base.status, 0);
    await expectCode(
      t,
      h.client.call('CreateContainer', {
        container_id: h.id('badrl'),
        exec_id: 'x',
        OCI: h.spec(['true'], { rlimits: [{ type: 'RLIMIT_NOPE', soft: 1, hard: 1 }] }),
      }),
      Code.INVALID_ARGUMENT,
      'an unknown rlimit type',
    );
  });

  t.test('B22 namespaced sysctls are applied; a non-namespaced one is refused', async (t) => {
    const netns = [{ type: 'mount' }, { type: 'uts' }, { type: 'ipc' }, { type: 'network' }];
    const cid = await h.run(
      t,
      ['sh', '-c', 'cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/net/ipv4/ping_group_range /proc/sys/kernel/shm_rmid_forced'],
      {
        namespaces: netns,
        sysctl: {
          'net.ipv4.ip_unprivileged_port_start': '0',
          'net.ipv4.ping_group_range': '0 2147483647',
          'kernel.shm_rmid_forced': '1',
        },
      },
    );
    const { stdout, stderr } = await drainBoth(cid, cid);
    t.equal(stdout.toString().replace(/\t/g, ' '), '0\n0 2147483647\n1\n', `net and ipc sysctls applied (${stderr.toString()})`);
    t.equal(await h.wait(cid, cid), 0);
    const err = await expectCode(
      t,
      h.client.call('CreateContainer', {
        container_id: h.id('vm'),
        exec_id: 'x',
        OCI: h.spec(['true'], { sysctl: { 'vm.overcommit_memory': '1' } }),
      }),
      Code.INVALID_ARGUMENT,
      'vm.overcommit_memory (not namespaced) is refused',
    );
    t.match(err?.message ?? '', /vm\.overcommit_memory/, 'the error names the key');
  });

  t.test('B26 no fd or pty leak over many execs, waited or not', async (t) => {
    const fdCount = (pid: number | undefined): number => fs.readdirSync(`/proc/${pid}/fd`).length;
    const ptyCount = (): number => fs.readdirSync('/dev/pts').length;
    const helperPid = h.agent.helper.pid;
    const controlPid = h.agent.control.pid;
    const box = await h.run(t, ['sleep', '1000']);
    await h.execCollect(box, ['true']); // warm-up: lazily opened fds
    await h.execCollect(box, ['true'], { terminal: true });
    const before = { helper: fdCount(helperPid), control: fdCount(controlPid), pts: ptyCount() };
    const runs = Number(process.env.KATA_FIELD_B26_RUNS ?? 2000);
    let failed = 0;
    for (let i = 0; i < runs; i++) {
      const r = await h.execCollect(box, ['true'], { terminal: i % 2 === 1 });
      if (r.status !== 0) failed++;
    }
    t.equal(failed, 0, `${runs} execs (tty alternating) all succeed`);
    const afterWaited = { helper: fdCount(helperPid), control: fdCount(controlPid), pts: ptyCount() };
    t.ok(afterWaited.helper <= before.helper + 4, `helper fds ${before.helper} → ${afterWaited.helper}`);
    t.ok(afterWaited.control <= before.control + 4, `control fds ${before.control} → ${afterWaited.control}`);
    t.ok(afterWaited.pts <= before.pts + 2, `/dev/pts entries ${before.pts} → ${afterWaited.pts}`);

    // Execs never waited for (nor read): everything is released by RemoveContainer at the latest.
    const other = await h.run(t, ['sleep', '1000']);
    for (let i = 0; i < 50; i++) await h.exec(other, `unwaited-${i}`, ['true'], { terminal: true });
    await h.client.call('RemoveContainer', { container_id: other, timeout: 10 });
    const ok = await eventually(
      () => fdCount(helperPid) <= before.helper + 4 && fdCount(controlPid) <= before.control + 4 && ptyCount() <= before.pts + 2,
      3000,
    );
    t.ok(ok, `after RemoveContainer of 50 un-waited tty execs: helper fds ${fdCount(helperPid)}, control fds ${fdCount(controlPid)}, /dev/pts ${ptyCount()} (before ${JSON.stringify(before)})`);
  });

  t.test('shutdown: DestroySandbox, agent exits, nothing left behind', async (t) => {
    const ids = ((await h.debug('/v1/sandbox')).body.containers as { id: string }[]).map((c) => c.id);
    t.same(ids, [], 'every subtest removed its containers');
    const res = await h.shutdown(true);
    t.equal(res.destroyError, null, 'DestroySandbox succeeded');
    t.same(res.exits, { control: 0, helper: 0 }, 'both processes exit 0');
    t.same(res.mounts, [], 'no mount left under the run dir or the rootfs');
    t.same(res.processes(), [], 'no container process left');
  });
}
