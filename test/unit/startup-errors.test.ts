// Start-up errors of every program are one human line on stderr (the JSON records stay in the
// log): kata-agent, kata-agent-helper, kata-agent-ctl; and the phrase kata-agent --standalone
// takes from a daemon's log when it did not come up.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { lastFailureIn } from '../../shared/log';

const root = path.resolve(__dirname, '..', '..', '..');
const bin = (name: string): string => path.join(root, 'bin', name);

/** The stderr lines meant for a person (not JSON log records). */
function humanLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l !== '' && !l.startsWith('{'));
}

t.test('kata-agent', async (t) => {
  const abstract = spawnSync(bin('kata-agent'), ['--server-address', 'unix://@kata-test-startup', '--debug-addr', ''], { encoding: 'utf8', timeout: 20_000 });
  t.equal(abstract.status, 1);
  t.same(humanLines(abstract.stderr), [
    'kata-agent: cannot start the agent: refusing to listen on the abstract socket unix://@kata-test-startup: containers share the guest network namespace and could connect to it (use --allow-abstract-socket to allow it anyway)',
  ]);
  t.match(abstract.stderr, /^\{.*"level":"fatal".*"msg":"cannot start the agent"/m, 'the JSON record is still written');
  const badFlag = spawnSync(bin('kata-agent'), ['--bogus'], { encoding: 'utf8', timeout: 20_000 });
  t.equal(badFlag.status, 2);
  t.equal(humanLines(badFlag.stderr).length, 1, badFlag.stderr);
  t.match(badFlag.stderr, /^kata-agent: /);
});

t.test('kata-agent-helper', async (t) => {
  const uid = spawnSync(bin('kata-agent-helper'), ['--control-uid', 'x'], { encoding: 'utf8' });
  t.equal(uid.status, 2);
  t.equal(uid.stderr, 'kata-agent-helper: invalid control uid "x" (see --help)\n');
  const help = spawnSync(bin('kata-agent-helper'), ['--help'], { encoding: 'utf8' });
  t.equal(help.status, 0, '--help is not an error');
  t.match(help.stdout, /^usage: kata-agent-helper /);
  const long = `/tmp/${'x'.repeat(120)}/helper.sock`;
  const listen = spawnSync(bin('kata-agent-helper'), ['--mock', '--socket', long], { encoding: 'utf8', timeout: 20_000 });
  t.equal(listen.status, 1);
  t.same(humanLines(listen.stderr).length, 1, 'one human line');
  t.match(humanLines(listen.stderr)[0], /^kata-agent-helper: cannot listen on \/tmp\/x+\/helper.sock: bind: File name too long/);
  t.match(listen.stderr, /^\{.*"level":"fatal"/m, 'the JSON record is still written');
});

t.test('kata-agent-ctl', async (t) => {
  for (const args of [['bogus'], ['connect'], ['exec', '--server-address', 'unix:///x', 'c1'], ['run', '--server-address', 'unix:///x']]) {
    const r = spawnSync(bin('kata-agent-ctl'), args, { encoding: 'utf8', timeout: 20_000 });
    t.equal(r.status, 2, args.join(' '));
    t.equal(r.stderr.split('\n').filter((l) => l !== '').length, 1, `${args.join(' ')}: ${r.stderr}`);
    t.match(r.stderr, /^ERROR: .*\(kata-agent-ctl --help shows the usage\)\n$/);
  }
});

t.test("lastFailureIn: a daemon's last failure from its JSON log", async (t) => {
  const log = [
    '{"level":"info","msg":"starting"}',
    '{"level":"fatal","msg":"cannot listen on /run/x.sock","err":{"message":"listen EACCES: permission denied /run/x.sock\\n    at stack"}}',
    'not json',
  ].join('\n');
  t.equal(lastFailureIn(log), 'cannot listen on /run/x.sock: listen EACCES: permission denied /run/x.sock');
  t.equal(lastFailureIn('{"level":"info","msg":"fine"}'), undefined);
});
