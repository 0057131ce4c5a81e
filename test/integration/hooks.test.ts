// Guest hooks (CreateSandboxRequest.guest_hook_path; Kata agent sandbox.rs add_hooks, rustjail
// container.rs): a hook directory with prestart/poststart/poststop scripts that append the OCI
// state they read on stdin to a log; containers run through the real agent (helper as root,
// control unprivileged). Checks that each hook ran once, in order, with the container's id, pid
// and status, and that a failing prestart hook fails CreateContainer naming the hook and leaves
// nothing running.
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AgentHarness, Code, expectCode, pidAlive, skipReason } from './lib/agent-harness';
import type { grpc } from '../../shared/generated/protos';

interface LoggedState {
  kind: string;
  state: { ociVersion: string; id: string; status: string; pid?: number; bundle: string; annotations: Record<string, string> };
}

const skip = skipReason();
if (skip) {
  t.plan(0, skip);
} else {
  const h = new AgentHarness('hooks');
  const hookDir = path.join(h.tmp, 'hooks');
  const log = path.join(h.tmp, 'hooks.log');
  // $1 = the hook kind (argv [name, kind]); one line per run: "<kind> <state json>".
  const script = (fail: boolean): string =>
    '#!/bin/sh\n' +
    'state=$(/bin/cat)\n' +
    `printf '%s %s\\n' "$1" "$state" >> ${log}\n` +
    (fail ? 'case "$state" in *fail-prestart*) echo "refused by the test hook" >&2; exit 3;; esac\n' : '') +
    'exit 0\n';
  for (const kind of ['prestart', 'poststart', 'poststop']) {
    fs.mkdirSync(path.join(hookDir, kind), { recursive: true });
    fs.writeFileSync(path.join(hookDir, kind, '10-log'), script(kind === 'prestart'), { mode: 0o755 });
    // Skipped as upstream does: not executable, a symlink.
    fs.writeFileSync(path.join(hookDir, kind, '20-not-executable'), script(false), { mode: 0o644 });
    fs.symlinkSync(path.join(hookDir, kind, '10-log'), path.join(hookDir, kind, '30-symlink'));
  }
  const entries = (): LoggedState[] =>
    fs.existsSync(log)
      ? fs
          .readFileSync(log, 'utf8')
          .split('\n')
          .filter((l) => l !== '')
          .map((l) => {
            const i = l.indexOf(' ');
            return { kind: l.slice(0, i), state: JSON.parse(l.slice(i + 1)) as LoggedState['state'] };
          })
      : [];

  t.before(async () => {
    await h.start();
    await h.client.call('CreateSandbox', { sandbox_id: 'hooks-sandbox', hostname: 'hooks', guest_hook_path: hookDir });
  });
  t.teardown(() => h.dispose());

  t.test('OCI spec hooks: prestart, createRuntime, poststart, poststop run with their args, env and the state, before the guest hooks', async (t) => {
    fs.rmSync(log, { force: true });
    const specHook = path.join(h.tmp, 'spec-hook');
    // argv [spec-hook, <label>] ($1 = the label); logs "<label>:<$HOOKVAR> <state>"
    fs.writeFileSync(specHook, `#!/bin/sh\nstate=$(/bin/cat)\nprintf '%s %s\\n' "$1:$HOOKVAR" "$state" >> ${log}\n`, { mode: 0o755 });
    const hook = (label: string) => ({ Path: specHook, Args: ['spec-hook', label], Env: [`HOOKVAR=${label}-env`], Timeout: 5 });
    const id = h.id('sh');
    h.removeOnTeardown(t, id);
    const spec = h.spec(['true'], {
      hooks: { Prestart: [hook('pre')], CreateRuntime: [hook('cr')], Poststart: [hook('post')], Poststop: [hook('stop')] },
    });
    await h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec });
    await h.client.call('StartContainer', { container_id: id });
    t.equal(await h.wait(id, id), 0);
    await h.client.call('RemoveContainer', { container_id: id, timeout: 10 });
    const got = entries();
    t.same(got.map((e) => e.kind), ['pre:pre-env', 'prestart', 'cr:cr-env', 'post:post-env', 'poststart', 'stop:stop-env', 'poststop'],
      'spec hooks first (upstream appends the guest hooks), createRuntime after prestart; args and env as given');
    t.same(got.map((e) => e.state.id), got.map(() => id), 'every hook got the container id on stdin');
    t.same(got.filter((e) => e.kind.includes(':')).map((e) => e.state.status), ['created', 'created', 'running', 'stopped'], 'statuses');
  });

  t.test('OCI spec hooks: a relative path, a NUL in args, a bad timeout are refused naming the field', async (t) => {
    for (const [hooks, code, re] of [
      [{ Prestart: [{ Path: 'bin/hook' }] }, Code.INVALID_ARGUMENT, /OCI\.Hooks\.Prestart\[0\]\.Path "bin\/hook".*absolute/],
      [{ Poststop: [{ Path: '/bin/true', Args: ['a\0b'] }] }, Code.INVALID_ARGUMENT, /OCI\.Hooks\.Poststop\[0\]\.Args\[0\]/],
      [{ CreateRuntime: [{ Path: '/bin/true', Timeout: -1 }] }, Code.INVALID_ARGUMENT, /OCI\.Hooks\.CreateRuntime\[0\]\.Timeout/],
      [{ StartContainer: [{ Path: 'true' }] }, Code.INVALID_ARGUMENT, /OCI\.Hooks\.StartContainer\[0\]\.Path "true"/],
    ] as [grpc.Hooks.$Properties, number, RegExp][]) {
      const id = h.id('bad');
      h.removeOnTeardown(t, id);
      const err = await expectCode(t, h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: h.spec(['true'], { hooks }) }), code, JSON.stringify(hooks));
      t.match(err?.message ?? '', re);
    }
  });

  t.test('OCI spec hooks: a failing prestart hook fails CreateContainer (FAILED_PRECONDITION naming it) and leaves nothing running', async (t) => {
    const id = h.id('pf');
    h.removeOnTeardown(t, id);
    const err = await expectCode(
      t,
      h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: h.spec(['sleep', '1000'], { hooks: { CreateRuntime: [{ Path: '/bin/false' }] } }) }),
      Code.FAILED_PRECONDITION,
      'failing createRuntime hook',
    );
    t.match(err?.message ?? '', /createRuntime hook \/bin\/false failed: exit status 1/);
    await expectCode(t, h.client.call('StartContainer', { container_id: id }), Code.NOT_FOUND, 'the container is gone');
  });

  t.test('prestart at create, poststart at start, poststop at removal, each once with the state', async (t) => {
    fs.rmSync(log, { force: true });
    const id = h.id('hk');
    h.removeOnTeardown(t, id);
    const spec = h.spec(['sh', '-c', 'echo hi']);
    spec.Annotations = { 'io.test/a': 'b' };
    await h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec });
    const pid = await h.hostPid(id);
    t.same(entries().map((e) => e.kind), ['prestart'], 'after CreateContainer: prestart only');
    await h.client.call('StartContainer', { container_id: id });
    t.same(entries().map((e) => e.kind), ['prestart', 'poststart'], 'after StartContainer: poststart');
    t.equal(await h.wait(id, id), 0, 'the container ran');
    await h.client.call('RemoveContainer', { container_id: id, timeout: 10 });
    const got = entries();
    t.same(got.map((e) => e.kind), ['prestart', 'poststart', 'poststop'], 'each hook once, in order (non-executable and symlinked files skipped)');
    t.same(got.map((e) => e.state.status), ['created', 'running', 'stopped'], 'statuses');
    for (const e of got) {
      t.equal(e.state.id, id, `${e.kind}: id`);
      t.equal(e.state.pid, pid, `${e.kind}: pid of the init (${pid})`);
      t.equal(e.state.bundle, path.dirname(h.rootfs), `${e.kind}: bundle = parent of the rootfs`);
      t.same(e.state.annotations, { 'io.test/a': 'b' }, `${e.kind}: annotations`);
      t.type(e.state.ociVersion, 'string', `${e.kind}: ociVersion`);
    }
  });

  t.test('a failing prestart hook fails CreateContainer naming it, and leaves nothing running', async (t) => {
    fs.rmSync(log, { force: true });
    const id = h.id('hkfail');
    h.removeOnTeardown(t, id);
    const spec = h.spec(['sleep', '1000']);
    spec.Annotations = { 'fail-prestart': '1' };
    const err = await expectCode(t, h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec }), Code.FAILED_PRECONDITION, 'CreateContainer');
    t.match(err?.message ?? '', `prestart hook ${path.join(hookDir, 'prestart', '10-log')} failed: exit status 3`, 'the error names the hook and its status');
    t.match(err?.message ?? '', /refused by the test hook/, 'and quotes its stderr');
    const got = entries();
    t.same(got.map((e) => e.kind), ['prestart'], 'only the prestart hook ran (no poststop for a container that was never created)');
    const pid = got[0]?.state.pid ?? 0;
    t.ok(pid > 0, `the hook saw the parked init's pid ${pid}`);
    t.notOk(pidAlive(pid), 'the parked init was killed and reaped');
    const { body } = await h.debug('/v1/sandbox');
    t.same((body.containers as { id: string }[]).map((c) => c.id), [], 'the agent knows no container');
    // The id is free again.
    spec.Annotations = {};
    await h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec });
    await h.client.call('RemoveContainer', { container_id: id, timeout: 10 });
  });
}
