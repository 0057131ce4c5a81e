// The real helper (bin/kata-agent-helper as root, kata-init, a busybox rootfs) driven through
// HelperClient: containers in new pid/mnt/uts/ipc namespaces with the standard OCI mounts,
// exec into them, removal of running containers, sandbox namespaces shared by two containers,
// kata-init errors relayed, SIGTERM to the helper killing its containers.
//
// Rootfs: $KATA_TEST_ROOTFS (scripts/run-tests.js builds it with scripts/make-rootfs), else one
// built here into a temp dir with scripts/make-rootfs.
import t, { type Test } from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { HelperClient } from '../../shared/helper-client';
import { loadNative } from '../../shared/native';
import { Code, type ContainerPlan, type MountPlan, type ProcessPlan } from '../../shared/protocol';
import { processPlan, readToEnd, closeAll, exitOf, rejectsStatus } from '../lib/helper-fixtures';

function repoRoot(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'binding.gyp'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no binding.gyp above ${__dirname}`);
  }
}

const ROOT = repoRoot();
const HELPER_BIN = path.join(ROOT, 'bin', 'kata-agent-helper');
const KATA_INIT = path.join(ROOT, 'build', 'Release', 'kata-init');

const skipReason =
  process.getuid?.() !== 0
    ? 'needs root (real helper, namespaces, mounts)'
    : !fs.existsSync(KATA_INIT)
      ? `kata-init not built at ${KATA_INIT} (npm run build:native)`
      : undefined;

const native = skipReason ? undefined : loadNative();

const STANDARD_MOUNTS: MountPlan[] = [
  { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
  { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
  { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
  { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
  { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
  { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
];

function containerPlan(rootfs: string, args: string[], over: Partial<ContainerPlan> = {}, procOver: Partial<ProcessPlan> = {}): ContainerPlan {
  return {
    rootfs,
    readonly: false,
    hostname: 'kata-box',
    namespaces: [
      { type: 'pid', path: '' },
      { type: 'mount', path: '' },
      { type: 'uts', path: '' },
      { type: 'ipc', path: '' },
    ],
    mounts: STANDARD_MOUNTS,
    process: processPlan(args, procOver),
    maskedPaths: ['/proc/kcore', '/proc/keys'],
    readonlyPaths: ['/proc/sys', '/proc/sysrq-trigger'],
    sysctl: {},
    rootfsPropagation: '',
    ...over,
  };
}

interface RunningHelper {
  child: ChildProcess;
  socket: string;
  stateDir: string;
  log: () => string;
  exited: Promise<number | null>;
  client: HelperClient;
}

async function startHelper(tmp: string, name: string): Promise<RunningHelper> {
  const socket = path.join(tmp, name, 'helper.sock');
  const stateDir = path.join(tmp, name, 'state');
  let log = '';
  const child = spawn(process.execPath, [HELPER_BIN, '--socket', socket, '--state-dir', stateDir, '--control-uid', '0', '--log-level', 'debug'], {
    stdio: ['ignore', 'inherit', 'pipe'],
  });
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      const client = await HelperClient.connect(socket, { timeoutMs: 5000 });
      return { child, socket, stateDir, log: () => log, exited, client };
    } catch (err) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`helper did not come up: ${(err as Error).message}\n${log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

function makeRootfs(tmp: string): string {
  if (process.env.KATA_TEST_ROOTFS && fs.existsSync(path.join(process.env.KATA_TEST_ROOTFS, 'bin', 'busybox'))) {
    return fs.realpathSync(process.env.KATA_TEST_ROOTFS);
  }
  const dir = path.join(tmp, 'rootfs');
  const r = spawnSync(path.join(ROOT, 'scripts', 'make-rootfs'), [dir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`make-rootfs failed: ${r.stderr}`);
  return fs.realpathSync(dir);
}

if (skipReason) {
  t.plan(0, skipReason);
} else {
  const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'helper-it-')));
  const rootfs = makeRootfs(tmp);
  let helper: RunningHelper;

  t.before(async () => {
    helper = await startHelper(tmp, 'main');
  });
  t.teardown(async () => {
    helper?.client.close();
    if (helper && helper.child.exitCode === null) {
      helper.child.kill('SIGTERM');
      await helper.exited;
    }
    // The sandbox namespace files are bind mounts: never rm -rf over a live mount.
    spawnSync('sh', ['-c', `grep -q ' ${tmp}' /proc/self/mountinfo && awk '$5 ~ "^${tmp}" {print $5}' /proc/self/mountinfo | xargs -r -n1 umount -l`]);
    fs.rmSync(tmp, { recursive: true, force: true });
  });
  t.afterEach(async (t) => {
    if (t.passing()) return;
    t.comment(`helper log:\n${helper.log().split('\n').slice(-40).join('\n')}`);
  });

  t.test('a container in new pid/mnt/uts/ipc namespaces with the standard mounts', async (t) => {
    const c = helper.client;
    const script = [
      'hostname',
      'echo pid=$$',
      'test -c /dev/null && test -e /dev/pts/ptmx && echo dev-ok',
      'grep -q " /dev/mqueue " /proc/self/mountinfo && echo mqueue-ok',
      'grep -q " /dev/shm " /proc/self/mountinfo && echo shm-ok',
      'awk \'$5 == "/sys" { split($6, o, ","); print "sys-" o[1] }\' /proc/self/mountinfo',
      'echo masked=$(wc -c < /etc/hostname)',
      'touch /etc/probe 2>/dev/null && echo etc-rw || echo etc-ro',
      'touch /tmp/probe && echo tmp-rw',
      'echo err-line >&2',
    ].join('; ');
    const created = await c.call('createContainer', {
      containerId: 'it-basic',
      plan: containerPlan(rootfs, ['sh', '-c', script], {
        maskedPaths: ['/proc/kcore', '/etc/hostname'],
        readonlyPaths: ['/proc/sys', '/etc'],
      }),
    });
    t.ok(created.result.pid > 1);
    const exited = exitOf(c, 'it-basic');
    const out = readToEnd(created.fds.stdout);
    const err = readToEnd(created.fds.stderr);
    const st = await c.call('state', { withFds: false });
    t.equal(st.result.containers.find((x) => x.containerId === 'it-basic')?.status, 'created');
    await c.call('startContainer', { containerId: 'it-basic' });
    t.same(await exited, { event: 'exit', containerId: 'it-basic', execId: '', pid: created.result.pid, exitStatus: 0 });
    t.equal(await out, 'kata-box\npid=1\ndev-ok\nmqueue-ok\nshm-ok\nsys-ro\nmasked=0\netc-ro\ntmp-rw\n', 'hostname, pid 1, /dev, mounts, ro /sys, masked and read-only paths');
    t.equal(await err, 'err-line\n');
    native!.close(created.fds.stdin);
    await c.call('removeContainer', { containerId: 'it-basic', timeoutMs: 5000 });
  });

  t.test('exec joins the container; removeContainer kills a running container', async (t) => {
    const c = helper.client;
    const created = await c.call('createContainer', { containerId: 'it-exec', plan: containerPlan(rootfs, ['sleep', '1000']) });
    closeAll(created.fds);
    await c.call('startContainer', { containerId: 'it-exec' });
    const ex = exitOf(c, 'it-exec', 'e1');
    const e1 = await c.call('execProcess', {
      containerId: 'it-exec',
      execId: 'e1',
      process: processPlan(['sh', '-c', 'hostname; echo "pid1=$(cat /proc/1/cmdline | tr "\\0" " ")"; cd /tmp && pwd; exit 4']),
    });
    t.ok(e1.result.pid > 1);
    const out = readToEnd(e1.fds.stdout);
    t.equal((await ex).exitStatus, 4);
    t.equal(await out, 'kata-box\npid1=sleep 1000 \n/tmp\n');
    closeAll(e1.fds);

    // The pty comes from the container's own devpts (kata-init step 7b): `tty` names it.
    const piped = await c.call('execProcess', {
      containerId: 'it-exec',
      execId: 'tty',
      process: processPlan(['sh', '-c', 'test -t 0 || echo not-a-tty']),
    });
    t.equal(await readToEnd(piped.fds.stdout), 'not-a-tty\n', 'pipes without terminal');
    closeAll(piped.fds);
    const tty2 = await c.call('execProcess', {
      containerId: 'it-exec',
      execId: 'tty2',
      process: processPlan(['sh', '-c', 'test -t 0 && test -t 1 && echo is-a-tty; tty'], { terminal: true }),
    });
    t.same(Object.keys(tty2.fds).sort(), ['pty', 'ptySpool'], 'the pty master and its output spool');
    closeAll({ s: tty2.fds.ptySpool });
    t.match(await readToEnd(tty2.fds.pty), /^is-a-tty\r?\n\/dev\/pts\/0\r?\n$/, 'the first pty of the container devpts (the init has none)');

    await rejectsStatus(
      t,
      c.call('execProcess', { containerId: 'it-exec', execId: 'e2', process: processPlan(['no-such-binary']) }),
      Code.INVALID_ARGUMENT,
      /exec: executable "no-such-binary" not found in \$PATH/,
    );

    const initExit = exitOf(c, 'it-exec');
    await c.call('removeContainer', { containerId: 'it-exec', timeoutMs: 5000 });
    t.equal((await initExit).exitStatus, 137);
    t.throws(() => native!.kill(created.result.pid, 0), 'the init is gone');
    const st = await c.call('state', { withFds: false });
    t.notOk(st.result.containers.some((x) => x.containerId === 'it-exec'), 'forgotten');
  });

  t.test('a created container can be removed before start; its id is reusable', async (t) => {
    const c = helper.client;
    const a = await c.call('createContainer', { containerId: 'it-reuse', plan: containerPlan(rootfs, ['sh', '-c', 'echo never']) });
    const out = readToEnd(a.fds.stdout);
    await c.call('removeContainer', { containerId: 'it-reuse', timeoutMs: 5000 });
    t.equal(await out, '', 'the program never ran');
    closeAll(a.fds);
    const b = await c.call('createContainer', { containerId: 'it-reuse', plan: containerPlan(rootfs, ['true']) });
    closeAll(b.fds);
    const ex = exitOf(c, 'it-reuse');
    await c.call('startContainer', { containerId: 'it-reuse' });
    t.equal((await ex).exitStatus, 0);
    await c.call('removeContainer', { containerId: 'it-reuse', timeoutMs: 5000 });
  });

  t.test('a container without its own pid namespace is refused by the helper (it could signal or ptrace the helper)', async (t) => {
    const c = helper.client;
    await rejectsStatus(
      t,
      c.call('createContainer', {
        containerId: 'it-nopidns',
        plan: containerPlan(rootfs, ['sh', '-c', 'kill -KILL 1'], { namespaces: [{ type: 'mount', path: '' }, { type: 'uts', path: '' }] }),
      }),
      Code.INVALID_ARGUMENT,
      /own pid namespace/,
    );
    await rejectsStatus(t, c.call('startContainer', { containerId: 'it-nopidns' }), Code.NOT_FOUND, /not found|it-nopidns/);
  });

  t.test('kata-init and validation errors come back with their codes', async (t) => {
    const c = helper.client;
    await rejectsStatus(
      t,
      c.call('createContainer', { containerId: 'it-noexe', plan: containerPlan(rootfs, ['/bin/nothing-here']) }),
      Code.INVALID_ARGUMENT,
      /nothing-here/,
    );
    await rejectsStatus(
      t,
      c.call('createContainer', { containerId: 'it-nocwd', plan: containerPlan(rootfs, ['true'], {}, { cwd: '/no/such/dir' }) }),
      Code.INVALID_ARGUMENT,
      /cwd/,
    );
    const link = path.join(tmp, 'rootfs-link');
    fs.symlinkSync(rootfs, link);
    await rejectsStatus(t, c.call('createContainer', { containerId: 'it-link', plan: containerPlan(link, ['true']) }), Code.INVALID_ARGUMENT, /canonical/);
    await rejectsStatus(
      t,
      c.call('createContainer', {
        containerId: 'it-nsjoin',
        plan: containerPlan(rootfs, ['true'], { namespaces: [{ type: 'mount', path: '' }, { type: 'uts', path: '/proc/1/ns/uts' }] }),
      }),
      Code.INVALID_ARGUMENT,
      /not a uts namespace of this sandbox/,
    );
    const st = await c.call('state', { withFds: false });
    t.same(st.result.containers, [], 'failed creations leave nothing behind');
  });

  t.test('forged plans: the helper itself refuses rootfs "..", rootfs "/", net.* sysctls without a network namespace, remount on a new mount', async (t) => {
    const c = helper.client;
    const dotdot = `${rootfs}/../${path.basename(rootfs)}`;
    await rejectsStatus(t, c.call('createContainer', { containerId: 'it-dotdot', plan: containerPlan(dotdot, ['true']) }), Code.INVALID_ARGUMENT, /rootfs .* contains a "\.\." component/);
    for (const root of ['/', '//', '/.']) {
      await rejectsStatus(t, c.call('createContainer', { containerId: 'it-root', plan: containerPlan(root, ['true']) }), Code.INVALID_ARGUMENT, /guest root/);
    }
    await rejectsStatus(
      t,
      c.call('createContainer', { containerId: 'it-netsysctl', plan: containerPlan(rootfs, ['true'], { sysctl: { 'net.ipv4.ip_forward': '1' } }) }),
      Code.INVALID_ARGUMENT,
      /sysctl net\.ipv4\.ip_forward needs a network namespace/,
    );
    const guest = path.join(tmp, 'guest-vol');
    fs.mkdirSync(guest, { recursive: true });
    spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', guest]);
    t.teardown(() => {
      spawnSync('umount', ['-l', guest]);
    });
    const before = fs.statfsSync(guest);
    for (const options of [['remount', 'ro'], ['remount', 'size=8k']]) {
      const mounts: MountPlan[] = [
        ...STANDARD_MOUNTS,
        { destination: '/vol', type: 'bind', source: guest, options: ['rbind'] },
        { destination: '/vol', type: 'tmpfs', source: 'tmpfs', options },
      ];
      await rejectsStatus(t, c.call('createContainer', { containerId: 'it-remount', plan: containerPlan(rootfs, ['true'], { mounts }) }), Code.INVALID_ARGUMENT, /remount/);
    }
    fs.writeFileSync(path.join(guest, 'probe'), 'x');
    t.equal(fs.statfsSync(guest).blocks, before.blocks, 'the guest tmpfs kept its size and is writable');
    const st = await c.call('state', { withFds: false });
    t.same(st.result.containers, [], 'nothing left behind');
  });

  t.test('sandbox namespaces are shared by two containers', async (t) => {
    const c = helper.client;
    const sb = await c.call('createSandbox', { sandboxId: 'it-sandbox', hostname: 'sandbox-host' });
    const nsDir = path.join(helper.stateDir, 'sandbox-ns');
    t.same(sb.result.namespaces, [
      { type: 'ipc', path: path.join(nsDir, 'ipc') },
      { type: 'uts', path: path.join(nsDir, 'uts') },
    ]);
    const namespaces = [{ type: 'pid' as const, path: '' }, { type: 'mount' as const, path: '' }, ...sb.result.namespaces];
    const outputs: string[] = [];
    for (const id of ['it-sb-a', 'it-sb-b']) {
      const r = await c.call('createContainer', {
        containerId: id,
        plan: containerPlan(rootfs, ['sh', '-c', 'hostname; readlink /proc/self/ns/uts; readlink /proc/self/ns/ipc'], { namespaces, hostname: '' }),
      });
      const out = readToEnd(r.fds.stdout);
      const ex = exitOf(c, id);
      await c.call('startContainer', { containerId: id });
      t.equal((await ex).exitStatus, 0);
      outputs.push(await out);
      closeAll(r.fds);
    }
    const [a, b] = outputs.map((o) => o.trim().split('\n'));
    t.equal(a[0], 'sandbox-host', 'container A has the sandbox hostname');
    t.equal(b[0], 'sandbox-host', 'container B has the sandbox hostname');
    t.equal(a[1], b[1], 'same uts namespace');
    t.equal(a[2], b[2], 'same ipc namespace');
    t.not(a[1], fs.readlinkSync('/proc/self/ns/uts'), 'not the host uts namespace');
    await rejectsStatus(t, c.call('createSandbox', { sandboxId: 'it-sandbox', hostname: 'x' }), Code.ALREADY_EXISTS, /sandbox "it-sandbox" already created/);
    await c.call('destroySandbox', {});
    t.same((await c.call('state', { withFds: false })).result.containers, [], 'destroySandbox removed the containers');
    t.notOk(fs.existsSync(path.join(nsDir, 'uts')), 'namespace files removed');
    t.notOk(fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(nsDir), 'namespace files unmounted');
  });

  t.test('SIGTERM to the helper kills its containers and removes its socket', async (t) => {
    const h = await startHelper(tmp, 'sigterm');
    const r = await h.client.call('createContainer', { containerId: 'it-term', plan: containerPlan(rootfs, ['sleep', '1000']) });
    closeAll(r.fds);
    await h.client.call('startContainer', { containerId: 'it-term' });
    const pid = r.result.pid;
    t.doesNotThrow(() => native!.kill(pid, 0), 'container runs');
    h.child.kill('SIGTERM');
    t.equal(await h.exited, 0, 'helper exits 0');
    t.throws(() => native!.kill(pid, 0), 'container process is gone');
    t.notOk(fs.existsSync(h.socket), 'socket removed');
    h.client.close();
  });
}
