// helper/ops/hooks.ts without root: scanning a guest hook directory (what is taken, what is
// skipped) and running hooks (state JSON on stdin, argv, empty environment, failures and the
// timeout named in the error).
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { HookRunner, scanGuestHooks, validateGuestHookPath, type OciState } from '../../helper/ops/hooks';
import { getReaper } from '../../helper/ops/reaper';
import { Code, StatusError } from '../../shared/protocol';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hooks-unit-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
const reaper = getReaper();
reaper.acquire();
t.teardown(() => reaper.release());

const state: OciState = { ociVersion: '1.0.2', id: 'c1', status: 'created', pid: 42, bundle: '/run/b', annotations: { a: 'b' } };

function write(file: string, body: string, mode: number): string {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, body, { mode });
  fs.chmodSync(file, mode);
  return file;
}

t.test('validateGuestHookPath', async (t) => {
  t.equal(validateGuestHookPath('/etc/hooks/'), '/etc/hooks/');
  for (const bad of ['', 'rel', '/a/../b', '/a\0b', 42, '/' + 'x'.repeat(5000)]) {
    let code: number | undefined;
    try {
      validateGuestHookPath(bad);
    } catch (e) {
      code = e instanceof StatusError ? e.code : -1;
    }
    t.equal(code, Code.INVALID_ARGUMENT, `refused: ${JSON.stringify(bad).slice(0, 20)}`);
  }
});

t.test('scan: executable regular files in name order; others skipped; missing kinds empty', async (t) => {
  const dir = path.join(tmp, 'scan');
  write(path.join(dir, 'prestart', 'b'), '#!/bin/sh\n', 0o755);
  write(path.join(dir, 'prestart', 'a'), '#!/bin/sh\n', 0o700);
  write(path.join(dir, 'prestart', 'noexec'), '#!/bin/sh\n', 0o644);
  write(path.join(dir, 'prestart', 'world-writable'), '#!/bin/sh\n', 0o777);
  fs.symlinkSync(path.join(dir, 'prestart', 'a'), path.join(dir, 'prestart', 'link'));
  fs.mkdirSync(path.join(dir, 'prestart', 'subdir'));
  write(path.join(dir, 'poststop', 'p'), '#!/bin/sh\n', 0o755);
  const hooks = scanGuestHooks(dir);
  t.same(hooks.prestart, [
    { path: path.join(dir, 'prestart', 'a'), args: ['a', 'prestart'], env: [] },
    { path: path.join(dir, 'prestart', 'b'), args: ['b', 'prestart'], env: [] },
  ]);
  t.same(hooks.poststart, [], 'no poststart directory: none');
  t.same(hooks.poststop.map((h) => h.args), [['p', 'poststop']]);
  t.same(scanGuestHooks(path.join(tmp, 'does-not-exist')), { prestart: [], poststart: [], poststop: [] }, 'a missing directory: no hooks');
});

t.test('run: the state on stdin, argv as given, empty environment', async (t) => {
  const out = path.join(tmp, 'out');
  const hook = write(path.join(tmp, 'run', 'h'), `#!/bin/sh\n/bin/cat > ${out}\necho "$0|$1|$(/usr/bin/env | /usr/bin/wc -l)" >> ${out}.args\n`, 0o755);
  const runner = new HookRunner({ reaper });
  await runner.run('prestart', { path: hook, args: ['h', 'prestart'], env: [] }, state);
  t.same(JSON.parse(fs.readFileSync(out, 'utf8')), state, 'the hook read the OCI state JSON');
  const [argv0, arg1, envCount] = fs.readFileSync(`${out}.args`, 'utf8').trim().split('|');
  t.equal(argv0, hook, '$0 is the script (the kernel runs it through its #! line)');
  t.equal(arg1, 'prestart', '$1 is the hook kind');
  t.ok(Number(envCount) <= 3, `nearly empty environment (only what sh sets itself): ${envCount} variables`);
});

t.test('run: non-zero exit, signal, missing file and timeout are FAILED_PRECONDITION naming the hook', async (t) => {
  const runner = new HookRunner({ reaper });
  const failing = write(path.join(tmp, 'run', 'fail'), '#!/bin/sh\necho "no way" >&2\nexit 7\n', 0o755);
  await t.rejects(runner.run('prestart', { path: failing, args: [], env: [] }, state), {
    code: Code.FAILED_PRECONDITION,
    message: `prestart hook ${failing} failed: exit status 7; stderr: no way`,
  });
  const killed = write(path.join(tmp, 'run', 'killed'), '#!/bin/sh\nkill -TERM $$\n', 0o755);
  await t.rejects(runner.run('poststart', { path: killed, args: [], env: [] }, state), { message: `poststart hook ${killed} failed: killed by signal 15` });
  const missing = path.join(tmp, 'run', 'missing');
  await t.rejects(runner.run('poststop', { path: missing, args: [], env: [] }, state), { code: Code.FAILED_PRECONDITION, message: new RegExp(`poststop hook ${missing} failed`) });
});

t.test('run: a hook outliving its timeout is killed, FAILED_PRECONDITION naming it', async (t) => {
  const runner = new HookRunner({ reaper });
  const hang = write(path.join(tmp, 'run', 'hang'), '#!/bin/sh\nexec /bin/sleep 1000\n', 0o755);
  let err: unknown;
  try {
    await runner.run('prestart', { path: hang, args: [], env: [], timeoutSec: 1 }, state);
  } catch (e) {
    err = e;
  }
  t.equal((err as StatusError | undefined)?.code, Code.FAILED_PRECONDITION);
  t.equal((err as Error | undefined)?.message, `prestart hook ${hang} failed: timed out after 1 s (killed)`);
});

t.test('runAll: failFast stops at the first failure; otherwise every hook runs', async (t) => {
  const runner = new HookRunner({ reaper });
  const count = path.join(tmp, 'count');
  const ok = write(path.join(tmp, 'all', 'ok'), `#!/bin/sh\necho x >> ${count}\n`, 0o755);
  const bad = write(path.join(tmp, 'all', 'bad'), '#!/bin/sh\nexit 1\n', 0o755);
  const hooks = [bad, ok].map((p) => ({ path: p, args: [], env: [] }));
  await t.rejects(runner.runAll('prestart', hooks, state, true), { message: /prestart hook .*bad failed/ });
  t.notOk(fs.existsSync(count), 'prestart: the hook after the failing one did not run');
  await runner.runAll('poststop', hooks, state, false);
  t.equal(fs.readFileSync(count, 'utf8'), 'x\n', 'poststop: the failure is logged, the next hook ran');
});
