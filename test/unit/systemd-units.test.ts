// scripts/install-units and the three units in the checkout's root: rendered into a temporary
// DESTDIR, checked by systemd-analyze verify (clean) and systemd-analyze security --offline=true
// (the control plane's exposure at most 2.0). Skips, saying so, without systemd-analyze.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..', '..', '..');
const script = path.join(root, 'scripts', 'install-units');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'units-test-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
const UNITS = ['kata-agent.service', 'kata-agent-helper.service', 'kata-containers.target'];

function run(cmd: string, args: string[], cwd = tmp): { status: number | null; out: string; err: string } {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8' });
  return { status: r.status, out: r.stdout ?? '', err: r.stderr ?? '' };
}

function render(name: string, vars: string[]): string {
  const dest = path.join(tmp, name);
  const r = run(script, [`DESTDIR=${dest}`, ...vars]);
  if (r.status !== 0) throw new Error(`install-units failed: ${r.err}`);
  return path.join(dest, 'usr', 'lib', 'systemd', 'system');
}

const analyze = run('systemd-analyze', ['--version']);
const noAnalyze = analyze.status !== 0 ? 'systemd-analyze is not installed (Debian: apt-get install systemd)' : false;

t.test('install-units renders every placeholder and checks its values', async (t) => {
  const dir = render('plain', ['CONTROL_USER=kata-agent', 'CONTROL_GROUP=kata-agent', 'CONTROL_UID=990', 'BINDIR=/usr/local/bin']);
  t.same(fs.readdirSync(dir).sort(), [...UNITS].sort());
  const control = fs.readFileSync(path.join(dir, 'kata-agent.service'), 'utf8');
  const helper = fs.readFileSync(path.join(dir, 'kata-agent-helper.service'), 'utf8');
  t.notMatch(control + helper, /@[A-Z_]+@/, 'no placeholder left');
  t.match(control, /^User=kata-agent$/m);
  t.match(control, /^Group=kata-agent$/m);
  t.match(control, /^ExecStart=\/usr\/local\/bin\/kata-agent$/m);
  t.match(helper, /^ExecStart=\/usr\/local\/bin\/kata-agent-helper --socket \/run\/kata-agent\/helper.sock --control-uid 990$/m);
  t.match(control, /^FailureAction=poweroff$/m, 'the VM goes down with the agent, as upstream');
  t.match(control, /^ExecStopPost=\+\/bin\/sh -c 'if \[ "\$\$SERVICE_RESULT" = success \]; then \/bin\/sync; exec \/usr\/bin\/systemctl --force poweroff; fi'$/m, 'a clean exit (DestroySandbox) powers off');
  t.notMatch(control, /^ExecStop=/m, 'no unconditional power-off: it would run on every restart too');
  t.match(control, /^Restart=on-failure$/m, 'a control plane that dies is started again (it adopts the containers)');
  t.match(control, /^RestartPreventExitStatus=2$/m, 'not for a configuration error');
  t.match(control, /^StartLimitBurst=5$/m);

  const dflt = render('default', ['CONTROL_UID=65534']);
  const c2 = fs.readFileSync(path.join(dflt, 'kata-agent.service'), 'utf8');
  t.match(c2, /^User=nobody$/m);
  t.match(c2, new RegExp(`^ExecStart=${root.replace(/[.+]/g, '\\$&')}/bin/kata-agent$`, 'm'), 'BINDIR defaults to the checkout');

  for (const [arg, msg] of [
    ['CONTROL_UID=0', /invalid CONTROL_UID "0" \(the control plane must not run as root\)/],
    ['CONTROL_UID=1x', /invalid CONTROL_UID "1x"/],
    ['BINDIR=bin', /invalid BINDIR "bin" \(want an absolute path\)/],
    ['CONTROL_GROUP=a b', /invalid CONTROL_GROUP "a b"/],
    ['FOO=1', /unknown argument "FOO=1"/],
  ] as const) {
    const r = run(script, [`DESTDIR=${path.join(tmp, 'bad')}`, 'CONTROL_UID=990', arg]);
    t.equal(r.status, 2, `${arg} refused`);
    t.match(r.err, msg);
  }
  t.notOk(fs.existsSync(path.join(tmp, 'bad', 'usr', 'lib', 'systemd', 'system', 'kata-agent.service')), 'nothing written on a bad value');
});

t.test('systemd-analyze verify: the rendered units are clean', { skip: noAnalyze }, async (t) => {
  // BINDIR must exist: verify checks that ExecStart's program is executable.
  const dir = render('verify', ['CONTROL_USER=kata-agent', 'CONTROL_GROUP=kata-agent', 'CONTROL_UID=990']);
  const r = run('systemd-analyze', ['verify', ...UNITS.map((u) => path.join(dir, u))]);
  t.equal(r.status, 0, 'verify exits 0');
  t.equal((r.out + r.err).trim(), '', 'verify prints nothing');
  // With the default user nobody, systemd's only remark is that nobody is a shared user.
  const d2 = render('verify-nobody', ['CONTROL_UID=65534']);
  const r2 = run('systemd-analyze', ['verify', ...UNITS.map((u) => path.join(d2, u))]);
  t.equal(r2.status, 0);
  t.same(
    (r2.out + r2.err).trim().split('\n').filter((l) => l !== '').map((l) => l.replace(/^.*kata-agent\.service:\d+: /, '')),
    ['Special user nobody configured, this is not safe!'],
  );
});

function exposure(dir: string, unit: string): number {
  const r = run('systemd-analyze', ['security', '--offline=true', unit], dir);
  const m = /Overall exposure level for \S+: ([0-9.]+)/.exec(r.out + r.err);
  if (!m) throw new Error(`no exposure figure in: ${r.out}${r.err}`);
  return Number(m[1]);
}

const offline = noAnalyze || /--offline/.test(run('systemd-analyze', ['security', '--help']).out)
  ? noAnalyze
  : 'this systemd-analyze has no security --offline (systemd < 250)';

t.test('systemd-analyze security --offline: control plane <= 2.0', { skip: offline }, async (t) => {
  const dir = render('security', ['CONTROL_USER=kata-agent', 'CONTROL_GROUP=kata-agent', 'CONTROL_UID=990']);
  const control = exposure(dir, 'kata-agent.service');
  t.ok(control <= 2.0, `kata-agent.service exposure ${control} <= 2.0`);
  const d2 = render('security-nobody', ['CONTROL_UID=65534']);
  const withNobody = exposure(d2, 'kata-agent.service');
  t.ok(withNobody <= 2.0, `kata-agent.service as nobody: exposure ${withNobody} <= 2.0`);
  // The helper is root with everything containers may be given (see its unit's comments):
  // reported, not bounded.
  t.comment(`kata-agent-helper.service exposure ${exposure(dir, 'kata-agent-helper.service')}`);
});
