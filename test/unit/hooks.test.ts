// helper/ops/hooks.ts without root: scanning a guest hook directory (what is taken, what is
// skipped) and running hooks (state JSON on stdin, argv, empty environment, failures and the
// timeout named in the error), and the container backend over the mock launcher (the mock
// twin: the same hook code runs in the mock helper).
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { HookRunner, scanGuestHooks, validateGuestHookPath, type OciState } from '../../helper/ops/hooks';
import { getReaper } from '../../helper/ops/reaper';
import { Code, StatusError, type ContainerPlan } from '../../shared/protocol';
import { MockLauncher } from '../../helper/mock/main';
import { ContainerBackend } from '../../helper/ops/container';
import { ProcessRegistry } from '../../helper/ops/registry';
import type { BackendReply } from '../../helper/api';
import { loadNative } from '../../shared/native';
import { minimalContainerPlan } from '../lib/helper-fixtures';

const native = loadNative();

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

t.test('the container backend over the mock launcher runs guest hooks at create, start and remove', async (t) => {
  const registry = new ProcessRegistry({ subreaper: false });
  const backend = new ContainerBackend(new MockLauncher(registry), { registry });
  t.teardown(() => backend.shutdown());
  const dir = path.join(tmp, 'backend-hooks');
  const log = path.join(tmp, 'backend-hooks.log');
  const body = `#!/bin/sh\nstate=$(/bin/cat)\nprintf '%s %s\\n' "$1" "$state" >> ${log}\ncase "$state" in *'"fail"'*) exit 4;; esac\n`;
  for (const kind of ['prestart', 'poststart', 'poststop']) write(path.join(dir, kind, 'h'), body, 0o755);
  await t.rejects(backend.createSandbox({ sandboxId: 'sb', hostname: 'h', guestHookPath: 'relative' }), { code: Code.INVALID_ARGUMENT });
  await backend.createSandbox({ sandboxId: 'sb', hostname: 'h', guestHookPath: dir });
  const plan = (): ContainerPlan => minimalContainerPlan(['sleep', '1000'], { rootfs: '/run/kata-containers/c1/rootfs' });
  const closeReply = (reply: BackendReply<unknown>): void => {
    for (const f of reply.fds ?? []) native.close(f.fd);
    reply.onSent?.();
  };
  const lines = (): { kind: string; status: string; pid: number; id: string; bundle: string }[] =>
    fs
      .readFileSync(log, 'utf8')
      .trim()
      .split('\n')
      .map((l) => {
        const s = JSON.parse(l.slice(l.indexOf(' ') + 1)) as OciState;
        return { kind: l.slice(0, l.indexOf(' ')), status: s.status, pid: s.pid ?? 0, id: s.id, bundle: s.bundle };
      });
  const created = await backend.createContainer({ containerId: 'c1', plan: plan(), oci: { version: '1.0.2', annotations: {} } });
  closeReply(created);
  await backend.startContainer({ containerId: 'c1' });
  await backend.removeContainer({ containerId: 'c1', timeoutMs: 5000 });
  const pid = created.result.pid;
  t.same(lines(), [
    { kind: 'prestart', status: 'created', pid, id: 'c1', bundle: '/run/kata-containers/c1' },
    { kind: 'poststart', status: 'running', pid, id: 'c1', bundle: '/run/kata-containers/c1' },
    { kind: 'poststop', status: 'stopped', pid, id: 'c1', bundle: '/run/kata-containers/c1' },
  ]);
  fs.rmSync(log);
  await t.rejects(backend.createContainer({ containerId: 'c2', plan: plan(), oci: { version: '1.0.2', annotations: { fail: 'yes' } } }), {
    code: Code.FAILED_PRECONDITION,
    message: `prestart hook ${path.join(dir, 'prestart', 'h')} failed: exit status 4`,
  });
  const failedPid = lines()[0].pid;
  t.same(lines().map((l) => l.kind), ['prestart'], 'no poststop for a container whose prestart failed');
  t.throws(() => process.kill(failedPid, 0), 'its init was killed and reaped');
  t.same((await backend.state({ withFds: false })).result.containers, [], 'the backend has no container left');
  await t.rejects(backend.createContainer({ containerId: 'c3', plan: plan(), oci: { version: '', annotations: { a: 1 } as unknown as Record<string, string> } }), {
    code: Code.INVALID_ARGUMENT,
    message: /oci\.annotations\["a"\] must be a string/,
  });
});
