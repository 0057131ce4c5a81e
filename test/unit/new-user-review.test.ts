// Small items of a new-user review, each with its regression: the --help text names the real
// stand-alone run directory; a log record's own pid does not repeat the `pid` key; the helper
// names a socket directory it cannot create (not "another helper is serving").
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { DEFAULT_DEBUG_ADDR, USAGE } from '../../control/config';
import { DEFAULT_STANDALONE_RUN_DIR, describeExit, standaloneBanner, standaloneDebugAddr } from '../../control/standalone';

const root = path.resolve(__dirname, '..', '..', '..');

t.test('--help names the default --run-dir that --standalone uses', async (t) => {
  t.match(USAGE, `--run-dir DIR           run directory of --standalone (default ${DEFAULT_STANDALONE_RUN_DIR})`);
  t.notMatch(USAGE, /kata-agent-XXXXXX/);
  const r = spawnSync(path.join(root, 'bin', 'kata-agent'), ['--help'], { encoding: 'utf8' });
  t.match(r.stdout, '/run/kata-agent-standalone');
});

t.test('one pid key per log line; the record pid becomes processPid', async (t) => {
  const code = `require(${JSON.stringify(path.join(root, 'dist', 'shared', 'log.js'))}).createLogger('kata-agent', 'info').info({ pid: 4242, container: 'c' }, 'process started')`;
  const r = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8' });
  const line = r.stderr.trim();
  t.equal(line.match(/"pid":/g)?.length, 1, `one pid key: ${line}`);
  const rec = JSON.parse(line) as Record<string, unknown>;
  t.equal(rec.pid, r.pid, 'pid: the logging process');
  t.equal(rec.processPid, 4242, 'the record pid kept as processPid');
});

t.test('helper: a socket whose directory is missing is named, not "another helper is serving"', async (t) => {
  const r = spawnSync(path.join(root, 'bin', 'kata-agent-helper'), ['--mock', '--socket', '/nonexistent-kata-dir/deeper/x.sock'], { encoding: 'utf8', timeout: 20_000 });
  t.equal(r.status, 1);
  const last = r.stderr.trim().split('\n').pop() ?? '';
  t.match(last, /socket directory \/nonexistent-kata-dir\/deeper does not exist and cannot be created: its parent \/nonexistent-kata-dir does not exist/);
  t.notMatch(r.stderr, /another helper/);
});

t.test('stand-alone: a daemon killed by a signal is said so (not "exited (null)")', async (t) => {
  t.equal(describeExit(null, 'SIGKILL'), 'killed by SIGKILL');
  t.equal(describeExit(1, null), 'exit status 1');
  t.equal(describeExit(0, null), 'exit status 0');
});

t.test('stand-alone banner: the debug console is shown with its address when on', async (t) => {
  const base = {
    address: 'unix:///r/control/agent.sock',
    runDir: '/r',
    controlUser: 'uid 65534',
    controlLog: '/r/control.log',
    helperLog: '/r/helper.log',
    debugAddr: 'unix:///r/control/debug.sock',
    pid: 42,
  };
  const on = standaloneBanner({ ...base, config: { debugConsole: true, debugConsoleVport: 0, debugConsoleAddr: 'unix:///r/control/console.sock' } });
  t.match(on, /^kata-agent: serving unix:\/\/\/r\/control\/agent.sock\n/, 'the first line is the address');
  t.match(on, '  debug console: unix:///r/control/console.sock\n');
  t.match(on, '  debug endpoint: unix:///r/control/debug.sock\n');
  t.match(on, '  stop: kill 42\n');
  t.match(standaloneBanner({ ...base, config: { debugConsole: true, debugConsoleVport: 0 } }), '  debug console: /dev/console\n', 'default: the tty');
  t.notMatch(standaloneBanner({ ...base, config: { debugConsole: false, debugConsoleVport: 0 } }), /debug console/, 'off: not shown');
});

t.test('bench: --help prints its usage and runs nothing; an unknown argument is refused', async (t) => {
  const script = path.join(root, 'dist', 'bench', 'run.js');
  const help = spawnSync(process.execPath, [script, '--help'], { encoding: 'utf8', timeout: 20_000 });
  t.equal(help.status, 0);
  t.match(help.stdout, /^usage: npm run bench/);
  t.match(help.stdout, 'BENCH_ITERATIONS');
  t.notMatch(help.stdout + help.stderr, /runc version|needs root|kata-bench-/, 'no benchmark started');
  const bad = spawnSync(process.execPath, [script, '--iterations=5'], { encoding: 'utf8', timeout: 20_000 });
  t.equal(bad.status, 2);
  t.match(bad.stderr, 'bench: no options (got --iterations=5)');
});

t.test('kata-agent-ctl --help does not claim run needs CreateSandbox (it works without one)', async (t) => {
  const r = spawnSync(path.join(root, 'bin', 'kata-agent-ctl'), ['--help'], { encoding: 'utf8' });
  t.equal(r.status, 0);
  t.notMatch(r.stdout, /sandbox must exist/);
  t.match(r.stdout, "connect -c 'CreateSandbox hostname=H' first for the sandbox's hostname");
});

t.test('stand-alone: --debug-addr moves the debug endpoint (was silently replaced by the run dir one)', async (t) => {
  t.equal(standaloneDebugAddr(DEFAULT_DEBUG_ADDR, '/r/control'), 'unix:///r/control/debug.sock', 'not given: in the run directory');
  t.equal(standaloneDebugAddr('unix:///tmp/d.sock', '/r/control'), 'unix:///tmp/d.sock', 'given: kept');
  t.equal(standaloneDebugAddr('127.0.0.1:9999', '/r/control'), '127.0.0.1:9999', 'loopback TCP kept');
  t.equal(standaloneDebugAddr('', '/r/control'), '', '"" disables');
});
