// Control-plane restart without loss (docs/ARCHITECTURE.md "Restart and adoption"), with the
// real helper: a container writes a numbered line every millisecond (until an exec tells it to stop); the control plane is killed
// with SIGKILL 5 times at random moments while a client reads ReadStdout; a new control plane
// re-adopts the helper's state each time. Every line must arrive once, in order; WaitProcess
// gets the container's exit status; 10 exec processes created across the restarts are all
// waitable with their own status; ids answer ALREADY_EXISTS / NOT_FOUND as before; DestroySandbox
// removes the adopted containers.
import t from 'tap';
import { AgentClient } from '../../control/ctl/client';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AgentHarness, Code, codeOf, eventually, expectCode, leftoverMounts, skipReason, sleep, within } from './lib/agent-harness';
import { detectCgroupLayout } from '../../helper/ops/cgroup';
import { KataDirFixture } from './lib/kata-dir';

const skip = skipReason();
/**
 * Lines the writer must at least have written (it writes for the whole test: ~1 per ms). The
 * test waits for the reader to have seen this many before stopping the writer: the restarts
 * alone may take less than 2 s now that the control plane starts from its bundle.
 */
const MIN_LINES = 2000;
const KILLS = 5;
const EXECS = 10;

/**
 * Calls that survive control-plane restarts: `retrying(what, fn)` retries `fn` with a new
 * connection on UNAVAILABLE / CANCELLED / a transport error (until 60 s), unless `final` accepts
 * the error; `current()` is the client in use.
 */
function resilient(h: AgentHarness): {
  retrying: <T>(what: string, fn: (c: AgentClient) => Promise<T>, final?: (err: unknown) => boolean) => Promise<T>;
  current: () => AgentClient;
} {
  let client = h.client;
  let reconnecting: Promise<AgentClient> | null = null;
  /** The current client; after a failure, a new connection (retried until control serves again). */
  const reconnect = (broken: AgentClient): Promise<AgentClient> => {
    if (client !== broken) return Promise.resolve(client);
    reconnecting ??= (async () => {
      void broken.close().catch(() => undefined);
      const deadline = Date.now() + 30_000;
      for (;;) {
        try {
          client = await AgentClient.connect(h.agent.address);
          h.client = client;
          return client;
        } catch (err) {
          if (Date.now() > deadline) throw err;
          await sleep(20);
        }
      }
    })().finally(() => {
      reconnecting = null;
    });
    return reconnecting;
  };
  /** Call with retries across restarts (any error but the ones `final` accepts is retried). */
  async function retrying<T>(what: string, fn: (c: AgentClient) => Promise<T>, final: (err: unknown) => boolean = () => false): Promise<T> {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const c = client;
      try {
        return await fn(c);
      } catch (err) {
        if (final(err) || Date.now() > deadline) throw err;
        if (codeOf(err) !== Code.UNAVAILABLE && codeOf(err) !== Code.CANCELLED && codeOf(err) !== undefined) {
          throw new Error(`${what}: ${(err as Error).message}`);
        }
        await reconnect(c);
      }
    }
  }
  return { retrying, current: () => client };
}

t.test('control plane killed 5 times while a client reads: no line lost or repeated, statuses kept', { skip }, async (t) => {
  const h = new AgentHarness('restart');
  t.teardown(() => h.dispose());
  await h.start('restart-host');
  const logs = (): string => h.logs();

  const { retrying, current } = resilient(h);

  // Numbered lines every millisecond until told to stop (a file in its /dev/shm, made by an exec
  // once every restart is done), then "end <last>" and exit 7.
  const cid = await h.run(t, ['sh', '-c', 'i=0; while [ ! -e /dev/shm/stop ]; do i=$((i+1)); echo $i; usleep 1000; done; echo end $i; exit 7']);

  // The reader: ReadStdout until EOF, across restarts.
  const chunks: Buffer[] = [];
  const reader = (async () => {
    for (;;) {
      try {
        const { data } = await retrying('ReadStdout', (c) => c.call('ReadStdout', { container_id: cid, exec_id: cid, len: 4096 }), (e) => codeOf(e) === Code.OUT_OF_RANGE);
        chunks.push(Buffer.from(data));
      } catch (err) {
        if (codeOf(err) === Code.OUT_OF_RANGE) return;
        throw err;
      }
    }
  })();

  // Kill control at random moments; create exec processes between the kills.
  const execs: { id: string; status: number }[] = [];
  for (let k = 0; k < KILLS; k++) {
    for (let j = 0; j < EXECS / KILLS; j++) {
      const id = `x${k}-${j}`;
      const status = 10 + execs.length;
      // Some exit while control is down: their status must come from the helper's state.
      await retrying(`ExecProcess ${id}`, (c) =>
        c.call('ExecProcess', {
          container_id: cid,
          exec_id: id,
          process: { Args: ['sh', '-c', `usleep ${j * 200000}; exit ${status}`], Cwd: '/', User: { UID: 0, GID: 0 }, Env: ['PATH=/bin:/usr/bin', h.mark] },
        }),
      );
      execs.push({ id, status });
    }
    await sleep(100 + Math.floor(Math.random() * 500));
    await h.agent.restartControl('SIGKILL');
  }

  // Enough output across the restarts whatever their speed: at least MIN_LINES lines read.
  const linesRead = (): number => Buffer.concat(chunks).toString().split('\n').length - 1;
  const enough = Date.now() + 60_000;
  while (linesRead() < MIN_LINES && Date.now() < enough) await sleep(50);
  await retrying('ExecProcess stop', (c) =>
    c.call('ExecProcess', {
      container_id: cid,
      exec_id: 'stop',
      process: { Args: ['touch', '/dev/shm/stop'], Cwd: '/', User: { UID: 0, GID: 0 }, Env: ['PATH=/bin:/usr/bin', h.mark] },
    }),
  );
  await within(reader, 60_000, `reading the container's stdout\n${logs()}`);
  const text = Buffer.concat(chunks).toString();
  const lines = text.split('\n').filter((l) => l !== '');
  const last = lines.pop() ?? '';
  const n = Number(/^end (\d+)$/.exec(last)?.[1] ?? -1);
  t.ok(n >= MIN_LINES, `the writer ended with "end <n>", n ≥ ${MIN_LINES}: ${JSON.stringify(last)} (${text.length} bytes read)`);
  const firstBad = lines.findIndex((l, i) => l !== String(i + 1));
  t.equal(lines.length, n, `every line arrived (${lines.length} of ${n})`);
  t.equal(firstBad, -1, firstBad < 0 ? 'in order, none twice' : `line ${firstBad} is ${lines[firstBad]}, expected ${firstBad + 1}`);
  t.equal(await retrying('WaitProcess init', (c) => c.call('WaitProcess', { container_id: cid, exec_id: cid })).then((r) => r.status), 7, 'the init\'s exit status');
  for (const e of execs) {
    const { status } = await retrying(`WaitProcess ${e.id}`, (c) => c.call('WaitProcess', { container_id: cid, exec_id: e.id }));
    t.equal(status, e.status, `exec ${e.id} waitable after the restarts, status ${e.status}`);
  }

  // The adopted ids answer as before.
  let client = current();
  const dup = await client.call('CreateContainer', { container_id: cid, exec_id: cid, OCI: h.spec(['true']) }).catch((e: unknown) => e);
  t.equal(codeOf(dup), Code.ALREADY_EXISTS, 'CreateContainer of an adopted id: ALREADY_EXISTS');
  const missing = await client.call('WaitProcess', { container_id: cid, exec_id: 'nope' }).catch((e: unknown) => e);
  t.equal(codeOf(missing), Code.NOT_FOUND, 'an unknown exec of an adopted container: NOT_FOUND');
  const dupSandbox = await client.call('CreateSandbox', { sandbox_id: 'restart-sandbox', hostname: 'x' }).catch((e: unknown) => e);
  t.equal(codeOf(dupSandbox), Code.ALREADY_EXISTS, 'the sandbox was adopted too');

  // A container running across one more restart, then DestroySandbox removes it for real.
  const sleeper = await h.run(t, ['sleep', '1000']);
  const sleeperPid = await h.hostPid(sleeper);
  await h.agent.restartControl('SIGKILL');
  client = await AgentClient.connect(h.agent.address);
  h.client = client;
  t.equal(await h.hostPid(sleeper), sleeperPid, 'the running container was adopted with its pid');
  const out = await h.shutdown(true);
  t.equal(out.destroyError, null, 'DestroySandbox after the restarts');
  t.ok(await eventually(() => out.processes().length === 0, 5000), `no container process left: ${out.processes().join(', ')}`);
  t.same(out.mounts, [], 'no mount left');
});

/** `seq 1 n` output with `eol` line ends. */
function seqOutput(n: number, eol = '\n'): Buffer {
  const parts: string[] = [];
  for (let i = 1; i <= n; i++) parts.push(`${i}${eol}`);
  return Buffer.from(parts.join(''));
}

t.test('output a killed control plane had buffered and not delivered arrives from the next one (pipes, terminal, 3.3 MB mid-stream)', { skip }, async (t) => {
  const h = new AgentHarness('restart-spool');
  t.teardown(() => h.dispose());
  await h.start('restart-spool');
  const { retrying } = resilient(h);
  const box = await h.run(t, ['sleep', '1000']);

  // Three processes whose output exceeds a pipe (1 MiB, STDIO_PIPE_SIZE; 1,288,895 B is below the
  // pipe plus the spool's 1 MiB high-water mark): they can only exit because control drained
  // their pipes into its buffer, which nobody has read when control is killed.
  await h.exec(box, 'out', ['seq', '1', '200000']);
  await h.exec(box, 'err', ['sh', '-c', 'seq 1 200000 >&2']);
  await h.exec(box, 'tty', ['seq', '1', '20000'], { terminal: true });
  for (const id of ['out', 'err', 'tty']) t.equal(await within(h.wait(box, id), 20_000, `WaitProcess ${id}`), 0, `${id} exited before anything was read`);
  const head = Buffer.from((await h.client.call('ReadStdout', { container_id: box, exec_id: 'out', len: 1000 })).data);
  t.equal(head.length, 1000, '1000 bytes of "out" delivered before the kill');

  await h.agent.restartControl('SIGKILL');
  const readAll = async (method: 'ReadStdout' | 'ReadStderr', execId: string): Promise<Buffer> => {
    const parts: Buffer[] = [];
    for (;;) {
      try {
        const { data } = await retrying(method, (c) => c.call(method, { container_id: box, exec_id: execId, len: 64 * 1024 }), (e) => codeOf(e) === Code.OUT_OF_RANGE);
        parts.push(Buffer.from(data));
      } catch (err) {
        if (codeOf(err) === Code.OUT_OF_RANGE) return Buffer.concat(parts);
        throw err;
      }
    }
  };
  const out = Buffer.concat([head, await readAll('ReadStdout', 'out')]);
  t.ok(out.equals(seqOutput(200_000)), `stdout: ${out.length} bytes, the 1000 delivered before the kill not repeated, none missing`);
  t.equal((await readAll('ReadStdout', 'err')).length, 0, 'stdout of "err": empty');
  t.ok((await readAll('ReadStderr', 'err')).equals(seqOutput(200_000)), 'stderr: every byte after the restart');
  t.ok((await readAll('ReadStdout', 'tty')).equals(seqOutput(20_000, '\r\n')), 'terminal output: every byte after the restart');

  // WriteStdin continues: a cat adopted with its stdin pipe (the helper's copy).
  await retrying('ExecProcess cat', (c) =>
    c.call('ExecProcess', { container_id: box, exec_id: 'cat', process: { Args: ['cat'], Cwd: '/', User: { UID: 0, GID: 0 }, Env: ['PATH=/bin:/usr/bin', h.mark] } }),
  );
  await retrying('WriteStdin', (c) => c.call('WriteStdin', { container_id: box, exec_id: 'cat', data: Buffer.from('before\n') }));
  t.equal(Buffer.from((await retrying('ReadStdout', (c) => c.call('ReadStdout', { container_id: box, exec_id: 'cat', len: 100 }))).data).toString(), 'before\n', 'cat echoes before the restart');
  await h.agent.restartControl('SIGKILL');
  await retrying('WriteStdin', (c) => c.call('WriteStdin', { container_id: box, exec_id: 'cat', data: Buffer.from('after\n') }));
  t.equal(Buffer.from((await retrying('ReadStdout', (c) => c.call('ReadStdout', { container_id: box, exec_id: 'cat', len: 100 }))).data).toString(), 'after\n', 'WriteStdin and ReadStdout continue after the restart');
  await retrying('CloseStdin', (c) => c.call('CloseStdin', { container_id: box, exec_id: 'cat' }));
  t.equal((await retrying('WaitProcess cat', (c) => c.call('WaitProcess', { container_id: box, exec_id: 'cat' }))).status, 0, 'CloseStdin after the restart ends cat');

  // B08 across a restart: 3,388,895 bytes on stdout, control killed while the reader is halfway.
  await retrying('ExecProcess big', (c) =>
    c.call('ExecProcess', { container_id: box, exec_id: 'big', process: { Args: ['seq', '1', '500000'], Cwd: '/', User: { UID: 0, GID: 0 }, Env: ['PATH=/bin:/usr/bin', h.mark] } }),
  );
  const reading = readAll('ReadStdout', 'big');
  await sleep(300);
  await h.agent.restartControl('SIGKILL');
  const big = await within(reading, 60_000, 'reading 3.3 MB across a restart');
  t.equal(big.length, 3_388_895, 'all 3,388,895 bytes');
  t.ok(big.equals(seqOutput(500_000)), 'byte-exact');
  t.equal((await retrying('WaitProcess big', (c) => c.call('WaitProcess', { container_id: box, exec_id: 'big' }))).status, 0, 'its exit status');
});

t.test('an OOM event not yet answered by GetOOMEvent survives a control-plane restart, and is answered once', { skip: skip ?? (detectCgroupLayout().mode === 'none' ? 'no cgroup filesystem mounted' : undefined) }, async (t) => {
  const h = new AgentHarness('restart-oom');
  t.teardown(() => h.dispose());
  await h.start('restart-oom');
  const MiB = 1024 * 1024;
  const id = await h.run(t, ['sleep', '1000'], { mounts: [{ destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'size=256m'] }] });
  await h.client.call('UpdateContainer', { container_id: id, resources: { Memory: { Limit: 16 * MiB, Swap: 16 * MiB } } });
  const { status } = await h.execCollect(id, ['dd', 'if=/dev/zero', 'of=/tmp/fill', 'bs=1M', 'count=64']);
  t.equal(status, 137, 'dd was killed by the OOM killer');
  t.ok(await eventually(() => h.logs().includes('container cgroup had an OOM kill'), 10_000), 'the helper saw the OOM kill');
  await h.agent.restartControl('SIGKILL');
  h.client = await AgentClient.connect(h.agent.address);
  const ev = await h.client.call('GetOOMEvent', {}, { timeoutNs: 10e9 });
  t.equal(ev.container_id, id, 'the restarted control plane answers the OOM event of before the kill');
  await sleep(200); // the ack reaches the helper
  await h.agent.restartControl('SIGKILL');
  h.client = await AgentClient.connect(h.agent.address);
  await expectCode(t, h.client.call('GetOOMEvent', {}, { timeoutNs: 1e9 }), Code.DEADLINE_EXCEEDED, 'answered once: not again after another restart');
});

t.test('helper SIGKILLed: control answers UNAVAILABLE and exits; the next helper kills the containers and detaches the mounts the old one left', { skip }, async (t) => {
  const h = new AgentHarness('helper-loss');
  t.teardown(() => h.dispose());
  await h.start('helper-loss');
  const box = await h.run(t, ['sleep', '1000']);
  await h.exec(box, 'x1', ['sleep', '1000']);
  const pids = [await h.hostPid(box), await h.hostPid(box, 'x1')];
  t.equal(h.leftoverProcesses().length, 2, `two container processes run: ${h.leftoverProcesses().join(', ')}`);
  const mountsBefore = leftoverMounts([h.tmp]);
  t.ok(mountsBefore.length > 0, `the helper has mounts below its state dir (${mountsBefore.length}: sandbox namespaces)`);

  const oldControl = h.agent.control;
  const waiting = h.client.call('WaitProcess', { container_id: box, exec_id: 'x1' }).then(
    () => 'answered',
    (err: unknown) => err,
  );
  h.agent.helper.kill('SIGKILL');
  const err = await within(waiting, 20_000, 'the pending WaitProcess');
  t.equal(codeOf(err), Code.UNAVAILABLE, `a WaitProcess in flight: UNAVAILABLE (${(err as Error).message})`);
  t.equal(await within(new Promise((r) => (oldControl.exitCode !== null ? r(oldControl.exitCode) : oldControl.once('exit', (code) => r(code)))), 20_000, 'control exit'), 1, 'control exits (1) once the helper is gone');

  // kata-init set PR_SET_PDEATHSIG before execve: the container processes die with the helper.
  t.ok(await eventually(() => pids.every((pid) => !alive(pid)), 10_000), `the container processes died with the helper (${pids.join(', ')})`);
  t.ok(leftoverMounts([h.tmp]).length > 0, 'its mounts are still there until the next helper starts');
  await h.agent.restartHelper('SIGKILL');
  t.same(h.leftoverProcesses(), [], 'no container process left');
  t.same(leftoverMounts([h.tmp]), [], 'no mount left below the run dir');
  t.match(h.logs(), /killed a container left by a previous helper/, 'the new helper says what it cleaned');

  h.client = await AgentClient.connect(h.agent.address);
  const gone = await h.client.call('WaitProcess', { container_id: box, exec_id: box }).catch((e: unknown) => e);
  t.equal(codeOf(gone), Code.NOT_FOUND, 'the new control plane does not know the killed container');
  await h.client.call('CreateSandbox', { sandbox_id: 'helper-loss-2', hostname: 'again' });
  const again = await h.run(t, ['sh', '-c', 'echo fresh']);
  t.equal((await h.readAll('ReadStdout', again, again)).toString(), 'fresh\n', 'a new container runs after the helper restart');
  const out = await h.shutdown(true);
  t.equal(out.destroyError, null, 'DestroySandbox');
  t.same(out.mounts, [], 'no mount left at the end');
});

t.test('helper SIGKILLed with storages mounted: the next helper detaches its guest mounts (shm, tmpfs volume, watchable tmpfs and bind, resolv.conf) and removes the dirs it made', { skip }, async (t) => {
  const h = new AgentHarness('helper-loss-storage');
  const fx = new KataDirFixture(h.tmp);
  t.teardown(async () => {
    fx.cleanup();
    await h.dispose();
  });
  fx.prepare(); // the share the guest pre-mounted: not the helper's, must stay
  await h.start(undefined, fx.helperArgs());
  const sandboxStorages = [
    { driver: 'virtio-fs', source: 'kataShared', mount_point: fx.share, fstype: 'virtiofs', options: [] },
    { driver: 'ephemeral', source: 'shm', mount_point: fx.shm, fstype: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777', 'size=8m'] },
  ];
  await h.client.call('CreateSandbox', { sandbox_id: 'loss-storage', hostname: 'loss', dns: ['nameserver 10.9.8.7'], storages: sandboxStorages });
  const eph = path.join(fx.kata, 'sandbox', 'ephemeral', 'mem');
  const small = path.join(fx.share, 'watchable', 'small');
  const big = path.join(fx.share, 'watchable', 'big');
  fs.mkdirSync(path.join(fx.hostShare, 'small'));
  fs.writeFileSync(path.join(fx.hostShare, 'small', 'key'), 'v\n');
  fs.mkdirSync(path.join(fx.hostShare, 'big'));
  for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(fx.hostShare, 'big', `f${i}`), `${i}\n`); // over 16 entries: bind-mounted
  const box = h.id('st');
  await h.client.call('CreateContainer', {
    container_id: box,
    exec_id: box,
    storages: [
      { driver: 'ephemeral', source: 'tmpfs', fstype: 'tmpfs', mount_point: eph, options: [] },
      { driver: 'watchable-bind', source: path.join(fx.share, 'small'), fstype: 'bind', mount_point: small, options: [] },
      { driver: 'watchable-bind', source: path.join(fx.share, 'big'), fstype: 'bind', mount_point: big, options: [] },
    ],
    OCI: h.spec(['sleep', '1000'], {
      mounts: [
        { destination: '/dev/shm', type: 'bind', source: fx.shm, options: ['rbind'] },
        { destination: '/mem', type: 'bind', source: eph, options: ['rbind'] },
        { destination: '/small', type: 'bind', source: small, options: ['rbind', 'ro'] },
        { destination: '/big', type: 'bind', source: big, options: ['rbind', 'ro'] },
      ],
    }),
  });
  await h.client.call('StartContainer', { container_id: box });
  const pid = await h.hostPid(box);
  const watchable = path.join(fx.share, 'watchable');
  const before = fx.mountsUnderKata();
  for (const mp of [fx.shm, eph, watchable, big]) t.ok(before.includes(mp), `mounted before the kill: ${mp}`);
  t.ok(leftoverMounts([fx.resolv]).length > 0, 'resolv.conf bound');
  t.equal(fs.readdirSync(path.join(h.tmp, 'run', 'state', 'mounts')).length, 5, 'five guest mounts journaled (shm, tmpfs volume, watchable tmpfs, big bind, resolv.conf)');

  await h.agent.restartHelper('SIGKILL');
  t.ok(await eventually(() => !alive(pid), 10_000), 'the container process is gone');
  t.same(h.leftoverProcesses(), [], 'no container process left');
  t.same(fx.mountsUnderKata(), [fx.share], 'below the kata dir only the pre-mounted share is left (not the helper\'s: kept)');
  t.same(leftoverMounts([path.join(h.tmp, 'run')]), [], 'no mount left below the state dir');
  t.same(leftoverMounts([fx.resolv]), [], 'resolv.conf no longer bound');
  t.equal(fs.readFileSync(fx.resolv, 'utf8'), 'nameserver 127.0.0.53\n', 'the original resolv.conf is back');
  t.notOk(fs.existsSync(path.join(fx.kata, 'sandbox', 'ephemeral')), 'the directories it made for the tmpfs volume are removed');
  t.notOk(fs.existsSync(fx.shm), 'and the shm mount point');
  t.ok(fs.existsSync(path.join(fx.hostShare, 'big', 'f19')), 'the share\'s content is untouched');
  t.same(fs.readdirSync(path.join(h.tmp, 'run', 'state', 'mounts')), [], 'the mount journal is empty');
  t.match(h.logs(), /detached mounts left by a previous helper/, 'the new helper says what it detached');

  h.client = await AgentClient.connect(h.agent.address);
  await h.client.call('CreateSandbox', { sandbox_id: 'loss-storage-2', hostname: 'again', storages: sandboxStorages });
  const again = await h.run(t, ['sh', '-c', 'echo fresh > /dev/shm/x; cat /dev/shm/x'], { mounts: [{ destination: '/dev/shm', type: 'bind', source: fx.shm, options: ['rbind'] }] });
  t.equal((await h.readAll('ReadStdout', again, again)).toString(), 'fresh\n', 'a new sandbox with a new shm works');
  t.equal(await h.wait(again, again), 0);
  await h.client.call('RemoveContainer', { container_id: again, timeout: 0 });
  await h.client.call('DestroySandbox', {});
  t.same(fx.mountsUnderKata(), [fx.share], 'DestroySandbox leaves only the pre-mounted share');
});

/** True while `pid` exists and is not a zombie. */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}
