// Integration tests for kata-init (helper/native/kata-init/), driven directly through
// child_process.spawn the way the helper drives it: fd 3 = plan, fd 4 = sync lines, fd 5 =
// start (see helper/native/KATA-INIT.md). Needs root, a built build/Release/kata-init and a
// static busybox (test/fixtures/mini-rootfs.sh builds the rootfs).
import t from 'tap';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { loadNative } from '../../shared/native';

function repoRoot(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'binding.gyp'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no binding.gyp above ${__dirname}`);
  }
}

const ROOT = repoRoot();
const KATA_INIT = process.env.KATA_INIT ?? path.join(ROOT, 'build', 'Release', 'kata-init');
const MINI_ROOTFS = path.join(ROOT, 'test', 'fixtures', 'mini-rootfs.sh');
const TIMEOUT_MS = 10_000;

// Linux MS_* mount flags.
const MS = {
  RDONLY: 1,
  NOSUID: 2,
  NODEV: 4,
  NOEXEC: 8,
  BIND: 4096,
  REC: 16384,
  PRIVATE: 1 << 18,
  SLAVE: 1 << 19,
  SHARED: 1 << 20,
  STRICTATIME: 1 << 24,
};

type Rec = (string | number)[];

/** The plan wire format: every field NUL-terminated, records back to back. */
function encodePlan(recs: Rec[]): Buffer {
  return Buffer.from(recs.flat().map((f) => `${f}\0`).join(''));
}

/** The mounts an OCI runtime spec usually asks for. */
const STANDARD_MOUNTS: Rec[] = [
  ['mount', 'proc', '/proc', 'proc', MS.NOSUID | MS.NOEXEC | MS.NODEV, ''],
  ['mount', 'tmpfs', '/dev', 'tmpfs', MS.NOSUID | MS.STRICTATIME, 'mode=755,size=65536k'],
  ['mount', 'devpts', '/dev/pts', 'devpts', MS.NOSUID | MS.NOEXEC, 'newinstance,ptmxmode=0666,mode=0620'],
  ['mount', 'shm', '/dev/shm', 'tmpfs', MS.NOSUID | MS.NOEXEC | MS.NODEV, 'mode=1777,size=65536k'],
  ['mount', 'mqueue', '/dev/mqueue', 'mqueue', MS.NOSUID | MS.NOEXEC | MS.NODEV, ''],
  ['mount', 'sysfs', '/sys', 'sysfs', MS.NOSUID | MS.NOEXEC | MS.NODEV | MS.RDONLY, ''],
];

interface CreateOpts {
  rootfs: string;
  args: string[];
  hostname?: string;
  propagation?: number;
  ns?: Rec[];
  mounts?: Rec[];
  extra?: Rec[];
  env?: string[];
}

function createPlan(o: CreateOpts): Rec[] {
  return [
    ['rootfs', o.rootfs],
    ['propagation', o.propagation ?? MS.SLAVE | MS.REC],
    ...(o.ns ?? ['pid', 'mnt', 'uts', 'ipc', 'net'].map((n) => ['ns', n, ''])),
    ...(o.hostname !== undefined ? [['hostname', o.hostname]] : []),
    ...(o.mounts ?? STANDARD_MOUNTS),
    ...(o.extra ?? []),
    ...(o.env ?? ['PATH=/bin']).map((e) => ['env', e]),
    ...o.args.map((a) => ['arg', a]),
  ];
}

function withTimeout<T>(p: Promise<T>, what: string, ms = TIMEOUT_MS): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Collects a readable stream; `text` is live, `done` resolves with everything at EOF. */
function collect(stream: Readable) {
  const c = { text: '', ended: false, done: undefined as unknown as Promise<string> };
  c.done = new Promise<string>((resolve) => {
    stream.setEncoding('utf8');
    stream.on('data', (d: string) => (c.text += d));
    stream.on('error', () => {});
    stream.on('close', () => {
      c.ended = true;
      resolve(c.text);
    });
  });
  return c;
}

/** All live runs, so that teardown can kill what a failed test left behind. */
const runs = new Set<KataInit>();

/**
 * One kata-init process. The container process is a grandchild after the pid namespace fork,
 * so its end is observed through its stdio and the sync fd reaching EOF, not through waitpid.
 */
class KataInit {
  readonly child: ChildProcess;
  readonly stdout: ReturnType<typeof collect>;
  readonly stderr: ReturnType<typeof collect>;
  readonly lines: string[] = [];
  /** Resolves with the exit code of the process we spawned (the intermediate). */
  readonly exited: Promise<number | null>;
  /** Resolves with every sync line once fd 4 reaches EOF. */
  readonly syncDone: Promise<string[]>;
  pid = 0;
  private partial = '';
  private consumed = 0;
  private syncEnded = false;
  private wake: (() => void) | undefined;

  constructor(mode: 'create' | 'exec' | 'sandbox', plan: Rec[]) {
    this.child = spawn(KATA_INIT, [mode], {
      stdio: ['pipe', 'pipe', 'pipe', 'pipe', 'pipe', 'pipe'],
      env: {},
    });
    runs.add(this);
    this.child.on('error', () => {});
    for (const s of this.child.stdio) s?.on('error', () => {});
    (this.child.stdin as Writable).end();
    this.stdout = collect(this.child.stdout as Readable);
    this.stderr = collect(this.child.stderr as Readable);
    this.exited = new Promise((resolve) => this.child.on('exit', (code) => resolve(code)));
    (this.child.stdio[3] as Writable).end(encodePlan(plan));
    const sync = this.child.stdio[4] as Readable;
    sync.setEncoding('utf8');
    sync.on('data', (d: string) => {
      const parts = (this.partial + d).split('\n');
      this.partial = parts.pop() ?? '';
      for (const l of parts) {
        this.lines.push(l);
        const m = /^pid (\d+)$/.exec(l);
        if (m) this.pid = Number(m[1]);
      }
      this.wake?.();
    });
    this.syncDone = new Promise((resolve) => {
      sync.on('close', () => {
        if (this.partial) this.lines.push(`${this.partial} (no newline)`);
        this.syncEnded = true;
        this.wake?.();
        resolve(this.lines);
      });
    });
  }

  /** The next sync line, or null at EOF. */
  nextLine(): Promise<string | null> {
    return withTimeout(
      new Promise<string | null>((resolve) => {
        const check = () => {
          if (this.consumed < this.lines.length) {
            this.wake = undefined;
            resolve(this.lines[this.consumed++]);
          } else if (this.syncEnded) {
            this.wake = undefined;
            resolve(null);
          }
        };
        this.wake = check;
        check();
      }),
      `a sync line after ${JSON.stringify(this.lines)}`,
    );
  }

  /** Waits for `pid N` and `ready`. */
  async ready(t: tap.Test): Promise<void> {
    t.match(await this.nextLine(), /^pid \d+$/, 'first sync line is pid');
    t.equal(await this.nextLine(), 'ready', 'then ready');
  }

  /** fd n of the child, parent side (node types stdio as a 5-tuple). */
  private fd(n: number): Writable {
    return (this.child.stdio as unknown as Writable[])[n];
  }

  start(): void {
    this.fd(5).end(Buffer.from('g'));
  }

  cancel(): void {
    this.fd(5).end();
  }

  /** Waits until the container process is gone: sync, stdout and stderr all at EOF. */
  async finished(): Promise<{ lines: string[]; stdout: string; stderr: string }> {
    const [lines, stdout, stderr] = await withTimeout(
      Promise.all([this.syncDone, this.stdout.done, this.stderr.done]),
      `the container to finish (sync ${JSON.stringify(this.lines)}, stdout ${JSON.stringify(this.stdout.text)}, stderr ${JSON.stringify(this.stderr.text)})`,
    );
    runs.delete(this);
    return { lines, stdout, stderr };
  }

  /** Kills the container process if it still holds its stdio. */
  kill(): void {
    if (this.pid > 0 && !(this.stdout.ended && this.syncEnded)) {
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    for (const s of this.child.stdio) s?.destroy();
    runs.delete(this);
  }
}

/** Runs a container to completion: create, wait for ready, start, collect. */
async function runContainer(t: tap.Test, o: CreateOpts) {
  const k = new KataInit('create', createPlan(o));
  await k.ready(t);
  k.start();
  const r = await k.finished();
  t.same(r.lines.slice(2), [], 'no sync line after ready: exec succeeded');
  return r;
}

const isRoot = process.getuid?.() === 0;
if (!isRoot || !fs.existsSync(KATA_INIT) || !fs.existsSync('/bin/busybox')) {
  t.comment(`skipping: needs root, ${KATA_INIT} and /bin/busybox`);
  t.pass('skipped');
} else {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-init-test-'));
  const makeRootfs = (name: string) => {
    const dir = path.join(tmp, name);
    execFileSync('sh', [MINI_ROOTFS, dir]);
    return dir;
  };
  const rootfs = makeRootfs('rootfs');
  const hostMountsBefore = fs.readFileSync('/proc/self/mountinfo', 'utf8');

  t.teardown(() => {
    for (const k of [...runs]) k.kill();
    // Mounts live in the containers' mount namespaces; never rm -rf through one that leaked.
    if (!fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(tmp)) {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  t.test('create: namespaces, hostname, pid 1, stdout/stderr, start gating', async (t) => {
    const k = new KataInit(
      'create',
      createPlan({
        rootfs,
        hostname: 'kata-t1',
        args: ['sh', '-c', 'echo hello; hostname; echo $$; echo oops >&2'],
      }),
    );
    t.teardown(() => k.kill());
    await k.ready(t);
    t.ok(k.pid > 1, 'pid line names the container process');
    await delay(300);
    t.equal(k.stdout.text, '', 'nothing runs before the start byte (stdout)');
    t.equal(k.stderr.text, '', 'nothing runs before the start byte (stderr)');
    k.start();
    const r = await k.finished();
    t.same(r.lines.slice(2), [], 'fd 4 reaches EOF with no error');
    t.equal(r.stdout, 'hello\nkata-t1\n1\n', 'hello, the plan hostname, pid 1');
    t.equal(r.stderr, 'oops\n', 'stderr kept apart from stdout');
    t.equal(await k.exited, 0, 'the intermediate exits 0');
  });

  t.test('create: EOF on the start fd ends the container silently', async (t) => {
    const k = new KataInit('create', createPlan({ rootfs, args: ['sh', '-c', 'echo should-not-run'] }));
    t.teardown(() => k.kill());
    await k.ready(t);
    k.cancel();
    const r = await k.finished();
    t.same(r.lines.slice(2), [], 'no error line');
    t.equal(r.stdout, '', 'no stdout');
    t.equal(r.stderr, '', 'no stderr');
  });

  t.test('create: errors are one line on fd 4 and nothing runs', async (t) => {
    const cases: [string, CreateOpts, RegExp][] = [
      [
        'missing executable',
        { rootfs, args: ['no-such-program'] },
        /^error exec: executable "no-such-program" not found in \$PATH: No such file or directory$/,
      ],
      [
        'missing absolute executable',
        { rootfs, args: ['/bin/no-such-program'] },
        /^error exec: executable "\/bin\/no-such-program" not found: No such file or directory$/,
      ],
      [
        'missing cwd',
        { rootfs, args: ['sh', '-c', 'echo ran'], extra: [['cwd', '/no/such/dir']] },
        /^error cwd: chdir to cwd "\/no\/such\/dir": No such file or directory$/,
      ],
      [
        'missing bind source',
        { rootfs, args: ['sh'], extra: [['mount', '/no/such/source', '/mnt', '', MS.BIND, '']] },
        /^error mount: bind source \/no\/such\/source \(for \/mnt\): No such file or directory$/,
      ],
    ];
    for (const [name, opts, want] of cases) {
      const k = new KataInit('create', createPlan(opts));
      t.teardown(() => k.kill());
      const r = await k.finished();
      t.equal(r.lines.length, 2, `${name}: pid then one error line`);
      t.match(r.lines[0], /^pid \d+$/, `${name}: pid comes first`);
      t.match(r.lines[1], want, `${name}: error text`);
      t.equal(r.stdout + r.stderr, '', `${name}: nothing ran`);
    }

    // A plan error happens before the fork: the spawned process itself exits 1.
    const bad = new KataInit('create', [['rootfs', rootfs], ['bogus', 'x']]);
    const r = await bad.finished();
    t.same(r.lines, ['error plan: unknown record "bogus"'], 'unknown record');
    t.equal(await bad.exited, 1, 'exit status 1');
  });

  t.test('create: proc, /dev, bind mounts', async (t) => {
    const hostDir = fs.mkdtempSync(path.join(tmp, 'hostdir-'));
    fs.writeFileSync(path.join(hostDir, 'marker'), 'from-host\n');
    const hostFile = path.join(tmp, 'hostfile');
    fs.writeFileSync(hostFile, 'a host file\n');
    const r = await runContainer(t, {
      rootfs,
      args: [
        'sh',
        '-c',
        [
          'ls /proc/self >/dev/null && echo proc-ok',
          'echo $(ls /dev)',
          'stat -c "%a %t:%T" /dev/null /dev/urandom',
          'readlink /dev/fd; readlink /dev/stdin; readlink /dev/ptmx',
          'echo x > /dev/null && echo devnull-ok',
          'cat /mnt/data/marker',
          'cat /etc/hostfile',
          'if (echo x > /mnt/ro/new) 2>/dev/null; then echo ro-writable; else echo ro-readonly; fi',
          'if (echo x > /mnt/data/new) 2>/dev/null; then echo rw-writable; else echo rw-readonly; fi',
        ].join('; '),
      ],
      mounts: [
        ...STANDARD_MOUNTS,
        ['mount', hostDir, '/mnt/data', '', MS.BIND | MS.REC, ''],
        ['mount', hostDir, '/mnt/ro', '', MS.BIND | MS.REC | MS.RDONLY, ''],
        ['mount', hostFile, '/etc/hostfile', '', MS.BIND, ''],
      ],
    });
    t.equal(r.stderr, '', 'no stderr');
    const out = r.stdout.split('\n');
    t.equal(out[0], 'proc-ok', 'proc is mounted');
    t.equal(
      out[1],
      'fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero',
      '/dev has the default nodes, the symlinks and the planned mounts',
    );
    t.match(r.stdout, /^666 1:3$/m, '/dev/null is a 0666 char device 1:3');
    t.match(r.stdout, /^666 1:9$/m, '/dev/urandom is a 0666 char device 1:9');
    t.match(r.stdout, /^\/proc\/self\/fd\n\/proc\/self\/fd\/0\npts\/ptmx$/m, '/dev symlinks');
    t.match(r.stdout, /^devnull-ok$/m, '/dev/null writable');
    t.match(r.stdout, /^from-host$/m, 'bind-mounted host directory visible');
    t.match(r.stdout, /^a host file$/m, 'bind-mounted host file onto a created empty file');
    t.match(r.stdout, /^ro-readonly$/m, 'ro bind is read-only (remounted)');
    t.match(r.stdout, /^rw-writable$/m, 'rw bind is writable');
    t.ok(fs.existsSync(path.join(hostDir, 'new')), 'the rw write reached the host dir');
    t.ok(fs.statSync(path.join(rootfs, 'etc', 'hostfile')).isFile(), 'target file created in the rootfs');
  });

  t.test('create: a symlinked mount target is resolved inside the rootfs', async (t) => {
    const fsdir = makeRootfs('rootfs-escape');
    const outside = fs.mkdtempSync('/tmp/kata-init-outside-');
    t.teardown(() => fs.rmSync(outside, { recursive: true, force: true }));
    fs.writeFileSync(path.join(outside, 'host-only'), 'host\n');
    fs.symlinkSync(outside, path.join(fsdir, 'escape')); // absolute
    fs.symlinkSync(`../../../../../../..${outside}`, path.join(fsdir, 'escape2')); // relative, too many ..
    fs.mkdirSync(path.join(fsdir, 'deep'));
    fs.symlinkSync('../../..', path.join(fsdir, 'deep', 'up')); // climbs above the rootfs
    const src = fs.mkdtempSync(path.join(tmp, 'src-'));
    fs.writeFileSync(path.join(src, 'marker'), 'mounted\n');

    const r = await runContainer(t, {
      rootfs: fsdir,
      args: [
        'sh',
        '-c',
        `cat /escape/sub/marker; ls ${outside}; echo --; ls /escape2; echo --; ls /deep/up/tmp/landed; echo --; grep -c -F " ${outside}/" /proc/self/mountinfo`,
      ],
      mounts: [
        ...STANDARD_MOUNTS,
        ['mount', src, '/escape/sub', '', MS.BIND | MS.REC, ''],
        ['mount', 'tmpfs', '/escape2/t', 'tmpfs', 0, ''],
        ['mount', src, '/deep/up/tmp/landed', '', MS.BIND, ''],
      ],
    });
    t.equal(r.stderr, '', 'no stderr');
    const [marker, rest] = r.stdout.split('\n', 1).concat(r.stdout.slice(r.stdout.indexOf('\n') + 1));
    t.equal(marker, 'mounted', 'the bind is reachable through the container symlink');
    const sections = rest.split('--\n');
    t.equal(sections[0], 'sub\nt\n', `the container's ${outside} has the mounts, not host-only`);
    t.equal(sections[1], 'sub\nt\n', 'relative link with too many .. clamped to the same place');
    t.equal(sections[2], 'marker\n', '.. above the rootfs stays at the rootfs');
    t.equal(sections[3], '2\n', 'mountinfo shows both mounts under the container path');
    t.same(fs.readdirSync(outside), ['host-only'], 'the host path outside the rootfs is untouched');
    t.ok(fs.statSync(path.join(fsdir, outside, 'sub')).isDirectory(), 'target created inside the rootfs');
    t.ok(fs.existsSync(path.join(fsdir, 'tmp', 'landed')), '/deep/up/tmp/landed created as rootfs/tmp/landed');
    t.notOk(fs.existsSync('/tmp/landed'), 'nothing created at the host /tmp/landed');
  });

  t.test('create: readonly root, masked and readonly paths, sysctl', async (t) => {
    const fsdir = makeRootfs('rootfs-ro');
    const r = await runContainer(t, {
      rootfs: fsdir,
      args: [
        'sh',
        '-c',
        [
          'if (echo x > /f) 2>/dev/null; then echo root-writable; else echo root-readonly; fi',
          'if (echo x > /tmp/f) 2>/dev/null; then echo tmp-writable; else echo tmp-readonly; fi',
          'echo keys:$(cat /proc/keys)',
          'echo firmware:$(ls /sys/firmware)',
          'cat /proc/sys/net/ipv4/ip_forward',
          'if (echo 0 > /proc/sys/net/ipv4/ip_forward) 2>/dev/null; then echo sys-writable; else echo sys-readonly; fi',
        ].join('; '),
      ],
      mounts: [...STANDARD_MOUNTS, ['mount', 'tmpfs', '/tmp', 'tmpfs', MS.NOSUID | MS.NODEV, '']],
      extra: [
        ['readonly', 1],
        ['masked', '/proc/keys'],
        ['masked', '/sys/firmware'],
        ['masked', '/proc/does-not-exist'],
        ['readonlypath', '/proc/sys'],
        ['readonlypath', '/proc/nope'],
        ['sysctl', 'net.ipv4.ip_forward', '1'],
      ],
    });
    t.equal(r.stderr, '', 'no stderr');
    t.equal(
      r.stdout,
      'root-readonly\ntmp-writable\nkeys:\nfirmware:\n1\nsys-readonly\n',
      'ro root, rw tmpfs, masked file and dir empty, sysctl applied before /proc/sys went ro',
    );
  });

  t.test('create: propagation of /, of mount records and mountprop', async (t) => {
    const src = fs.mkdtempSync(path.join(tmp, 'prop-'));
    const r = await runContainer(t, {
      rootfs,
      args: ['sh', '-c', 'cat /proc/self/mountinfo'],
      mounts: [
        ['mount', 'proc', '/proc', 'proc', MS.NOSUID | MS.NOEXEC | MS.NODEV, ''],
        ['mount', src, '/mnt/a', '', MS.BIND | MS.REC | MS.PRIVATE, ''],
        ['mount', 'tmpfs', '/mnt/b', 'tmpfs', 0, ''],
        ['mount', 'tmpfs', '/mnt/c', 'tmpfs', 0, ''],
      ],
      // rshared cannot be in place for pivot_root: kata-init applies it afterwards.
      propagation: MS.SHARED | MS.REC,
      extra: [['mountprop', '/mnt/b', MS.PRIVATE]],
    });
    const fields = (mnt: string) => {
      const line = r.stdout.split('\n').find((l) => l.split(' ')[4] === mnt);
      return line?.split(' - ')[0].split(' ').slice(6).join(' ') ?? 'missing';
    };
    t.match(fields('/'), /shared:/, 'the root is shared after pivot_root');
    t.equal(fields('/mnt/a'), '', 'the private bit of a mount record survives the rshared root');
    t.equal(fields('/mnt/b'), '', 'mountprop made /mnt/b private');
    t.match(fields('/mnt/c'), /shared:/, '/mnt/c shared like the root');
  });

  t.test('create: user, groups, rlimits, no_new_privs, cwd, env', async (t) => {
    const r = await runContainer(t, {
      rootfs,
      args: ['sh', '-c', 'id; ulimit -n; grep NoNewPrivs /proc/self/status; pwd; echo $FOO'],
      env: ['PATH=/usr/bin:/bin', 'FOO=bar'],
      extra: [
        ['uid', 65534],
        ['gid', 65534],
        ['group', 100],
        ['group', 200],
        ['rlimit', 7, 1000, 2000],
        ['nonewprivs', 1],
        ['cwd', '/tmp'],
      ],
    });
    t.equal(r.stderr, '', 'no stderr');
    t.equal(
      r.stdout,
      'uid=65534(nobody) gid=65534(nogroup) groups=100,200\n1000\nNoNewPrivs:\t1\n/tmp\nbar\n',
      'identity, limits, flags, cwd and env as planned',
    );
  });

  t.test('create: caps and oomscoreadj records', async (t) => {
    const show = 'grep -E "^Cap(Prm|Eff|Bnd|Amb)" /proc/self/status; cat /proc/self/oom_score_adj';
    const kill = 1 << 5;
    const r = await runContainer(t, { rootfs, args: ['sh', '-c', show], extra: [['caps', kill, kill, kill, 0, 0], ['oomscoreadj', 123], ['nonewprivs', 1]] });
    t.equal(r.stderr, '', 'no stderr');
    t.equal(
      r.stdout,
      'CapPrm:\t0000000000000020\nCapEff:\t0000000000000020\nCapBnd:\t0000000000000020\nCapAmb:\t0000000000000000\n123\n',
      'CAP_KILL only, oom_score_adj 123',
    );
    const bind = 1 << 10;
    const amb = await runContainer(t, {
      rootfs,
      args: ['sh', '-c', show],
      extra: [['uid', 65534], ['gid', 65534], ['caps', bind, bind, bind, bind, bind]],
    });
    t.match(amb.stdout, /^CapEff:\t0000000000000400$/m, 'a non-root uid keeps an ambient capability across execve');
    t.match(amb.stdout, /^CapAmb:\t0000000000000400$/m, 'in the ambient set');

    const errors: [string, Rec[], RegExp][] = [
      ['oom out of range', [['oomscoreadj', 1001]], /^error plan: record "oomscoreadj": 1001 is outside -1000\.\.1000/],
      ['caps not a number', [['caps', 'all', 0, 0, 0, 0]], /^error plan: record "caps": "all" is not a decimal number$/],
      ['ambient outside inheritable', [['caps', kill, kill, kill, 0, kill]], /^error caps: raising ambient capability CAP_KILL \(5\) \(it must be in the permitted and inheritable sets\): Operation not permitted$/],
      ['effective outside permitted', [['caps', kill, kill | 1, kill, 0, 0]], /^error caps: capset effective 0x21 permitted 0x20 inheritable 0 .*: Operation not permitted$/],
    ];
    for (const [name, extra, want] of errors) {
      const k = new KataInit('create', createPlan({ rootfs, args: ['true'], extra }));
      t.teardown(() => k.kill());
      const res = await k.finished();
      t.match(res.lines[res.lines.length - 1], want, name);
    }
  });

  t.test('create and exec: seccomp and seccompflags records', async (t) => {
    // A filter denying mkdir with EPERM, compiled as the helper does (libseccomp via the addon).
    const { bpf } = loadNative().seccompCompile({
      defaultAction: 'SCMP_ACT_ALLOW',
      syscalls: [{ names: ['mkdir', 'mkdirat'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 }],
    });
    const hex = bpf.toString('hex');
    const probe = 'busybox mkdir /tmp/sc-$$ 2>&1; echo rc=$?; grep ^Seccomp: /proc/self/status';
    for (const nnp of [1, 0]) {
      const r = await runContainer(t, { rootfs, args: ['sh', '-c', probe], extra: [['nonewprivs', nnp], ['uid', 65534], ['gid', 65534], ['seccomp', hex], ['seccompflags', 1]] });
      t.match(r.stdout, /Operation not permitted\nrc=1\nSeccomp:\t2\n$/, `nonewprivs ${nnp}: mkdir denied with EPERM, seccomp mode 2 (filter)`);
    }
    const c = new KataInit('create', createPlan({ rootfs, args: ['sleep', '100'], extra: [['seccomp', hex]] }));
    t.teardown(() => c.kill());
    await c.ready(t);
    c.start();
    t.equal(await c.nextLine(), null, 'the filtered init exec\'d');
    const e = new KataInit('exec', [
      ...['pid', 'mnt'].map((n) => ['ns', n, `/proc/${c.pid}/ns/${n}`]),
      ['env', 'PATH=/bin'],
      ['seccomp', hex],
      ...['sh', '-c', probe].map((a) => ['arg', a]),
    ]);
    t.teardown(() => e.kill());
    const er = await e.finished();
    t.match(er.stdout, /Operation not permitted\nrc=1\nSeccomp:\t2\n$/, 'exec mode loads the filter too');
    c.kill();
    await c.finished();

    const errors: [string, Rec[], RegExp][] = [
      ['odd hex', [['seccomp', hex.slice(0, -1)]], /^error plan: record "seccomp": \d+ hex digits is not a whole number of BPF instructions/],
      ['not hex', [['seccomp', 'zz'.repeat(8)]], /^error plan: record "seccomp": not a hex digit at offset 0$/],
      ['empty', [['seccomp', '']], /^error plan: record "seccomp": 0 hex digits/],
      ['twice', [['seccomp', hex], ['seccomp', hex]], /^error plan: record "seccomp" given twice$/],
      ['flags without a filter', [['seccompflags', 1]], /^error plan: "seccompflags" without a "seccomp" record$/],
      ['a flag the kernel refuses', [['nonewprivs', 1], ['seccomp', hex], ['seccompflags', 2 ** 31]], /^error seccomp: loading the seccomp filter \(\d+ instructions, flags 0x80000000\): Invalid argument$/],
      ['a filter the kernel refuses', [['nonewprivs', 1], ['seccomp', '0'.repeat(16)]], /^error seccomp: loading the seccomp filter \(1 instructions, flags 0\): Invalid argument$/],
    ];
    for (const [name, extra, want] of errors) {
      const k = new KataInit('create', createPlan({ rootfs, args: ['sh', '-c', 'echo ran'], extra }));
      t.teardown(() => k.kill());
      if (name.startsWith('a f')) {
        await k.ready(t);
        k.start();
      }
      const res = await k.finished();
      t.match(res.lines[res.lines.length - 1], want, name);
      t.equal(res.stdout + res.stderr, '', `${name}: nothing ran`);
    }
  });

  t.test('create: "tty 1" needs the pty socket on fd 6 (the master goes back over it)', async (t) => {
    const k = new KataInit('create', createPlan({ rootfs, args: ['sh', '-c', 'echo ran'], extra: [['tty', 1]] }));
    t.teardown(() => k.kill());
    const res = await k.finished();
    t.match(res.lines[res.lines.length - 1], /^error fd: "tty 1" needs the pty socket on fd 6: Bad file descriptor$/);
    t.equal(res.stdout + res.stderr, '', 'nothing ran');
  });

  t.test('create: /proc rules on the resolved mount target (a rootfs symlink to /proc)', async (t) => {
    const fsdir = makeRootfs('rootfs-proclink');
    fs.symlinkSync('/proc', path.join(fsdir, 'myproc'));
    const cases: [string, Rec[], RegExp][] = [
      ['tmpfs over /proc via the link', [['mount', 'tmpfs', '/myproc', 'tmpfs', 0, '']],
        /^error mount: target \/myproc resolves to \/proc inside the rootfs: only a proc filesystem may be mounted on \/proc, got type tmpfs$/],
      ['tmpfs below /proc via the link', [...STANDARD_MOUNTS, ['mount', 'tmpfs', '/myproc/self/attr', 'tmpfs', 0, '']],
        /^error mount: target \/myproc\/self\/attr resolves to \/proc\/1\/attr inside the rootfs: mounting over anything below \/proc is not allowed/],
      ['a bind of a non-proc source onto /proc', [['mount', tmp, '/myproc', '', MS.BIND, '']],
        /^error mount: target \/myproc resolves to \/proc inside the rootfs: only a proc filesystem may be mounted on \/proc, got a bind of /],
    ];
    for (const [name, mounts, want] of cases) {
      const k = new KataInit('create', createPlan({ rootfs: fsdir, args: ['true'], mounts }));
      t.teardown(() => k.kill());
      const res = await k.finished();
      t.match(res.lines[res.lines.length - 1], want, name);
      t.equal(res.stdout + res.stderr, '', `${name}: nothing ran`);
    }
    const ok = await runContainer(t, {
      rootfs: fsdir,
      args: ['sh', '-c', 'head -c 5 /proc/cpuinfo; echo'],
      mounts: [['mount', 'proc', '/myproc', 'proc', MS.NOSUID | MS.NODEV | MS.NOEXEC, ''], ['mount', '/proc/self/mountinfo', '/myproc/cpuinfo', '', MS.BIND, '']],
    });
    t.equal(ok.stderr, '', 'proc through the link, and an allow-listed bind below it, are fine');
    t.notMatch(ok.stdout, /^proce/, 'the bind covers /proc/cpuinfo');
  });

  t.test('create: remount (and move) only ever apply to the container\'s own new mount', async (t) => {
    const guest = path.join(tmp, 'guest-remount');
    fs.mkdirSync(guest, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', guest]);
    t.teardown(() => execFileSync('umount', ['-l', guest]));
    const before = fs.statfsSync(guest);
    const REMOUNT = 32;
    const MOVE = 8192;
    const cases: [string, Rec[]][] = [
      ['tmpfs remount ro over a bound guest dir', [['mount', 'tmpfs', '/vol', 'tmpfs', REMOUNT | MS.RDONLY, '']]],
      ['tmpfs remount size=8k over a bound guest dir', [['mount', 'tmpfs', '/vol', 'tmpfs', REMOUNT, 'size=8k']]],
      ['a move', [['mount', '/vol', '/vol2', '', MOVE, '']]],
    ];
    for (const [name, extra] of cases) {
      const mounts: Rec[] = [...STANDARD_MOUNTS, ['mount', guest, '/vol', '', MS.BIND | MS.REC, ''], ...extra];
      const k = new KataInit('create', createPlan({ rootfs, args: ['true'], mounts }));
      t.teardown(() => k.kill());
      const res = await k.finished();
      t.match(res.lines[res.lines.length - 1], /^error mount: mount flags 0x[0-9a-f]+ of \/vol2? \(.*\) are not allowed/, `${name}: refused`);
    }
    fs.writeFileSync(path.join(guest, 'probe'), 'x');
    t.equal(fs.statfsSync(guest).blocks, before.blocks, 'the guest tmpfs kept its size and is writable');
    const r = await runContainer(t, {
      rootfs,
      args: ['sh', '-c', 'if echo x > /vol/new 2>/dev/null; then echo writable; else echo read-only; fi'],
      mounts: [...STANDARD_MOUNTS, ['mount', guest, '/vol', '', MS.BIND | MS.REC | REMOUNT | MS.RDONLY, '']],
    });
    t.equal(r.stdout, 'read-only\n', 'bind + remount + ro: the container\'s bind is read-only');
    fs.writeFileSync(path.join(guest, 'probe2'), 'x');
    t.pass('the guest tmpfs stays writable');
  });

  t.test('create: only fds 0-2 reach the container program', async (t) => {
    const r = await runContainer(t, { rootfs, args: ['ls', '/proc/self/fd'] });
    t.equal(r.stdout, '0\n1\n2\n3\n', '0 1 2 and the directory ls itself opened');
  });

  t.test('exec: joins a running container', async (t) => {
    const c = new KataInit('create', createPlan({ rootfs, hostname: 'kata-exec', args: ['sleep', '100'] }));
    t.teardown(() => c.kill());
    await c.ready(t);
    c.start();
    t.equal(await c.nextLine(), null, 'sleep was exec\'d (fd 4 EOF)');
    const ns = (types: string[]) => types.map((n) => ['ns', n, `/proc/${c.pid}/ns/${n}`]);

    const e = new KataInit('exec', [
      ...ns(['pid', 'mnt', 'uts', 'ipc', 'net']),
      ['env', 'PATH=/bin'],
      ['arg', 'sh'],
      ['arg', '-c'],
      ['arg', 'hostname; echo $$; ps; ls /proc/self/fd'],
    ]);
    t.teardown(() => e.kill());
    const r = await e.finished();
    t.equal(r.lines.length, 1, 'only a pid line (no ready in exec mode)');
    t.match(r.lines[0], /^pid \d+$/, 'pid line');
    t.equal(r.stderr, '', 'no stderr');
    const out = r.stdout.split('\n');
    t.equal(out[0], 'kata-exec', 'same uts namespace');
    t.not(out[1], '1', 'not pid 1: joined the existing pid namespace');
    t.match(r.stdout, /^\s*1\s+root\s+sleep 100$/m, 'ps sees the container init as pid 1');
    t.match(r.stdout, /\n0\n1\n2\n3\n$/, 'only fds 0-2 (plus ls\'s own)');

    const bad = new KataInit('exec', [...ns(['pid', 'mnt']), ['arg', 'nope']]);
    const br = await bad.finished();
    // Exec mode resolves the executable in the intermediate, before the pid-namespace fork
    // (nothing privileged runs inside the container's pid namespace): the error comes first.
    t.match(br.lines[0], /^error exec: executable "nope" not found in \$PATH/, 'exec-mode lookup error, before any pid line');
    t.equal(br.lines.length, 1, 'no pid line: nothing was forked into the container');

    c.kill();
    await c.finished();
  });

  t.test('sandbox: pinned uts/ipc namespaces that a container joins', async (t) => {
    const dir = fs.mkdtempSync(path.join(tmp, 'sandbox-'));
    const uts = path.join(dir, 'uts');
    const ipc = path.join(dir, 'ipc');
    fs.writeFileSync(uts, '');
    fs.writeFileSync(ipc, '');
    const s = new KataInit('sandbox', [
      ['hostname', 'kata-sbx'],
      ['nsfile', 'uts', uts],
      ['nsfile', 'ipc', ipc],
    ]);
    t.teardown(() => {
      for (const f of [uts, ipc]) {
        try {
          execFileSync('umount', ['-l', f], { stdio: 'ignore' });
        } catch {
          /* not mounted */
        }
      }
    });
    const sr = await s.finished();
    t.same(sr.lines, ['ready'], 'ready, then EOF');
    t.equal(await s.exited, 0, 'exit 0');
    t.equal(os.hostname() === 'kata-sbx', false, 'host hostname untouched');

    const r = await runContainer(t, {
      rootfs,
      ns: [
        ['ns', 'pid', ''],
        ['ns', 'mnt', ''],
        ['ns', 'uts', uts],
        ['ns', 'ipc', ipc],
      ],
      hostname: 'ignored-when-joined',
      args: ['sh', '-c', 'hostname; readlink /proc/self/ns/ipc'],
    });
    const ipcIno = fs.statSync(ipc).ino;
    t.equal(r.stdout, `kata-sbx\nipc:[${ipcIno}]\n`, 'container joined the pinned namespaces');
  });

  t.test('no container mount leaked into the host mount namespace', async (t) => {
    const now = fs.readFileSync('/proc/self/mountinfo', 'utf8');
    const leaked = now.split('\n').filter((l) => l.includes(tmp) && !hostMountsBefore.includes(l));
    t.same(leaked, [], 'host mountinfo unchanged under the test dir');
  });
}
