// Small items of a new-user review, each with its regression: the --help text names the real
// stand-alone run directory; a log record's own pid does not repeat the `pid` key; the helper
// names a socket directory it cannot create (not "another helper is serving").
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { USAGE } from '../../control/config';
import { DEFAULT_STANDALONE_RUN_DIR } from '../../control/standalone';

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
