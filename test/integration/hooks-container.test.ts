// OCI createContainer and startContainer hooks (runtime-spec config.md#posix-platform-hooks),
// run by kata-init inside the container (helper/native/kata-init/hooks.c) through the real
// agent. Each hook leaves a marker only the container can see: createContainer writes into the
// container's /dev tmpfs through the not-yet-pivoted rootfs path (so it ran in the container's
// mount namespace, before pivot_root, with the guest's paths); startContainer writes the state
// it read, its hostname and its environment into the container's /dev/shm (so it ran in the
// container's namespaces, after pivot_root). A failing or hanging hook fails CreateContainer or
// StartContainer with FAILED_PRECONDITION naming it.
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AgentHarness, Code, expectCode, skipReason } from './lib/agent-harness';

const skip = skipReason();
if (skip) {
  t.plan(0, skip);
} else {
  const h = new AgentHarness('hooks-ctr');
  t.before(async () => {
    await h.start('hooks-ctr');
  });
  t.teardown(() => h.dispose());
  t.afterEach(async (tt) => {
    if (!tt.passing()) tt.comment(h.logs());
  });

  t.test('createContainer: in the container mount namespace before pivot_root; startContainer: in the container after pivot_root, with the state, args and env', async (t) => {
    // A guest script (the path resolves in the guest's root: pivot_root has not happened).
    const createHook = path.join(h.tmp, 'create-hook');
    fs.writeFileSync(
      createHook,
      '#!/bin/sh\nstate=$(/bin/cat)\nprintf "%s|%s|%s" "$1" "$CREATEVAR" "$state" > "$2/dev/created-by-hook"\n',
      { mode: 0o755 },
    );
    const id = h.id('hc');
    h.removeOnTeardown(t, id);
    const spec = h.spec(['sh', '-c', 'cat /dev/created-by-hook; echo; cat /dev/shm/start-hook; echo; echo "pid:$$ host:$(hostname)"'], {
      hooks: {
        CreateContainer: [{ Path: createHook, Args: ['create-hook', 'arg-one', h.rootfs], Env: ['CREATEVAR=create-env'], Timeout: 10 }],
        // a path inside the container's rootfs (busybox sh), run after pivot_root
        StartContainer: [{ Path: '/bin/sh', Args: ['sh', '-c', 'printf "%s|%s|%s" "$(hostname)" "$STARTVAR" "$(cat)" > /dev/shm/start-hook'], Env: ['STARTVAR=start-env'] }],
      },
    });
    await h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec });
    t.notOk(fs.existsSync(path.join(h.rootfs, 'dev', 'created-by-hook')), 'the marker is not in the guest view of the rootfs (it went to the container\'s /dev tmpfs)');
    await h.client.call('StartContainer', { container_id: id });
    const [out, err] = await Promise.all([h.readAll('ReadStdout', id, id), h.readAll('ReadStderr', id, id)]);
    t.equal(await h.wait(id, id), 0, err.toString());
    const [created = '', started = '', tail = ''] = out.toString().split('\n');
    const [arg, createEnv, createState] = created.split('|');
    t.equal(arg, 'arg-one', `createContainer got its args: ${out.toString()}`);
    t.equal(createEnv, 'create-env', 'createContainer got its env');
    const cs = JSON.parse(createState ?? '{}') as { id?: string; status?: string; pid?: number; bundle?: string };
    t.equal(cs.id, id, 'createContainer state: the container id');
    t.equal(cs.status, 'creating', 'createContainer state: status creating');
    t.equal(cs.bundle, path.dirname(h.rootfs), 'createContainer state: the bundle');
    const [host, startEnv, startState] = started.split('|');
    const m = /^pid:([0-9]+) host:(.*)$/.exec(tail);
    t.ok(m, `container output: ${tail}`);
    t.equal(host, m?.[2], 'startContainer saw the container\'s hostname (its uts namespace)');
    t.equal(startEnv, 'start-env', 'startContainer got its env');
    const ss = JSON.parse(startState ?? '{}') as { id?: string; status?: string; pid?: number };
    t.equal(ss.status, 'created', 'startContainer state: status created');
    t.equal(ss.id, id);
    t.equal(String(ss.pid), m?.[1], 'startContainer state: the pid of the container process as the container sees it (runc, rustjail)');
  });

  t.test('runtime-spec order: prestart, createRuntime (runtime namespace, before pivot_root), then createContainer, all during CreateContainer', async (t) => {
    const log = path.join(h.tmp, 'order.log');
    fs.rmSync(log, { force: true });
    // runtime hooks (guest namespaces): the label and where the container process's root is now
    const runtimeHook = path.join(h.tmp, 'runtime-hook');
    fs.writeFileSync(runtimeHook, `#!/bin/sh\npid=$(/bin/cat | sed 's/.*"pid":\\([0-9]*\\).*/\\1/')\necho "$1 $(readlink /proc/$pid/root)" >> ${log}\n`, { mode: 0o755 });
    const createHook = path.join(h.tmp, 'order-create-hook');
    fs.writeFileSync(createHook, `#!/bin/sh\necho "createContainer" >> ${log}\n`, { mode: 0o755 });
    const id = h.id('ho');
    h.removeOnTeardown(t, id);
    const spec = h.spec(['true'], {
      hooks: {
        Prestart: [{ Path: runtimeHook, Args: ['runtime-hook', 'prestart'] }],
        CreateRuntime: [{ Path: runtimeHook, Args: ['runtime-hook', 'createRuntime'] }],
        CreateContainer: [{ Path: createHook }],
      },
    });
    await h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec });
    const lines = fs.readFileSync(log, 'utf8').trim().split('\n');
    t.same(lines, ['prestart /', 'createRuntime /', 'createContainer'], 'in order; the container process had not pivoted yet (its root was still the guest\'s /)');
    await h.client.call('StartContainer', { container_id: id });
    t.equal(await h.wait(id, id), 0);
  });

  t.test('a failing createContainer hook fails CreateContainer naming it (FAILED_PRECONDITION, its output) and leaves no container', async (t) => {
    const id = h.id('hf');
    h.removeOnTeardown(t, id);
    const spec = h.spec(['true'], { hooks: { CreateContainer: [{ Path: '/bin/sh', Args: ['sh', '-c', 'echo refused by the create hook >&2; exit 3'] }] } });
    const e = await expectCode(t, h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec }), Code.FAILED_PRECONDITION, 'failing createContainer hook');
    t.match(e?.message ?? '', /hook: createContainer hook \[0\] \/bin\/sh exited with status 3: refused by the create hook/);
    await expectCode(t, h.client.call('StartContainer', { container_id: id }), Code.NOT_FOUND, 'the container is gone');
  });

  t.test('a failing startContainer hook fails StartContainer naming it; the program does not run', async (t) => {
    const id = h.id('hs');
    h.removeOnTeardown(t, id);
    const spec = h.spec(['sh', '-c', 'echo program-ran'], { hooks: { StartContainer: [{ Path: '/bin/sh', Args: ['sh', '-c', 'echo no start >&2; exit 4'] }] } });
    await h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec });
    const e = await expectCode(t, h.client.call('StartContainer', { container_id: id }), Code.FAILED_PRECONDITION, 'failing startContainer hook');
    t.match(e?.message ?? '', /startContainer hook \[0\] \/bin\/sh exited with status 4: no start/);
    const out = await h.readAll('ReadStdout', id, id).catch(() => Buffer.alloc(0));
    t.notMatch(out.toString(), /program-ran/, 'the container program never ran');
  });

  t.test('a hook that exits without reading a large state (100 KiB of annotations, more than a pipe holds) does not break the create or start (EPIPE on the state pipe is fine)', async (t) => {
    const id = h.id('hp');
    h.removeOnTeardown(t, id);
    const spec = h.spec(['sh', '-c', 'echo ran'], { hooks: { CreateContainer: [{ Path: '/bin/true' }], StartContainer: [{ Path: '/bin/true' }] } });
    spec.Annotations = { big: 'x'.repeat(100 * 1024) };
    await h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec });
    await h.client.call('StartContainer', { container_id: id });
    t.match((await h.readAll('ReadStdout', id, id)).toString(), /ran/, 'the container ran');
    t.equal(await h.wait(id, id), 0);
  });

  t.test('a createContainer hook over its timeout is killed and fails CreateContainer', async (t) => {
    const id = h.id('ht');
    h.removeOnTeardown(t, id);
    const spec = h.spec(['true'], { hooks: { CreateContainer: [{ Path: '/bin/sleep', Args: ['sleep', '100'], Timeout: 1 }] } });
    const e = await expectCode(t, h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec }), Code.FAILED_PRECONDITION, 'hanging hook');
    t.match(e?.message ?? '', /createContainer hook \[0\] \/bin\/sleep did not finish within its timeout of 1 s/);
  });
}
