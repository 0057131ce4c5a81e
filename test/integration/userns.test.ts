// User namespaces (OCI linux.namespaces "user" + linux.uidMappings/gidMappings) through the
// real agent: the helper writes kata-init's uid_map and gid_map after it unshared the user
// namespace (no newuidmap), every other namespace of the container is then owned by it. Checked
// from inside: `id` says root, /proc/self/uid_map and gid_map show the mappings; an exec joins
// the same user namespace; the guest sees the container's root as uid 100000.
import t from 'tap';
import * as fs from 'node:fs';
import { AgentHarness, Code, expectCode, skipReason, userNsSkip } from './lib/agent-harness';

const NAMESPACES = [{ type: 'mount' }, { type: 'uts' }, { type: 'ipc' }, { type: 'network' }, { type: 'user' }];
const MAP = [{ ContainerID: 0, HostID: 100000, Size: 65536 }];


const skip = skipReason() ?? userNsSkip();
if (skip) {
  t.plan(0, skip);
} else {
  const h = new AgentHarness('userns');
  t.before(async () => {
    await h.start('userns');
  });
  t.teardown(() => h.dispose());
  t.afterEach(async (tt) => {
    if (!tt.passing()) tt.comment(h.logs());
  });

  const specWith = (args: string[]) => {
    const spec = h.spec(args, { namespaces: NAMESPACES });
    spec.Linux!.UIDMappings = MAP;
    spec.Linux!.GIDMappings = MAP;
    return spec;
  };
  const mapLine = (text: string): string => text.trim().split(/\s+/).join(' ');

  t.test('a container with a user namespace 0 → 100000: id says root, the maps show the mapping, /sys is there', async (t) => {
    const id = h.id('un');
    h.removeOnTeardown(t, id);
    const script =
      'id -u; id -g; cat /proc/self/uid_map; cat /proc/self/gid_map; ls -d /sys/kernel/mm && echo sys-ok; ' +
      'echo dev-owner:$(stat -c %u:%g /dev /dev/shm | tr "\\n" " "); touch /dev/shm/x && echo shm-write-ok; stat -c pts-gid:%g /dev/pts/0 2>/dev/null; true';
    await h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: specWith(['sh', '-c', script]) });
    await h.client.call('StartContainer', { container_id: id });
    const [out, err] = (await Promise.all([h.readAll('ReadStdout', id, id), h.readAll('ReadStderr', id, id)])).map(String);
    t.equal(await h.wait(id, id), 0, err);
    const lines = out.split('\n');
    t.equal(lines[0], '0', `uid 0 inside (${out} ${err})`);
    t.equal(lines[1], '0', 'gid 0 inside');
    t.equal(mapLine(lines[2] ?? ''), '0 100000 65536', '/proc/self/uid_map shows the mapping');
    t.equal(mapLine(lines[3] ?? ''), '0 100000 65536', '/proc/self/gid_map shows the mapping');
    t.ok(lines.includes('sys-ok'), '/sys is mounted (a network namespace of its own: its own sysfs)');
    t.match(out, /^dev-owner:0:0 0:0\s*$/m, "the container's own tmpfs mounts (/dev, /dev/shm) belong to its root");
    t.ok(lines.includes('shm-write-ok'), 'container root can write its /dev/shm');
  });

  t.test('an exec joins the user namespace; the guest sees the container root as uid 100000', async (t) => {
    const id = h.id('ux');
    h.removeOnTeardown(t, id);
    await h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: specWith(['sleep', '1000']) });
    await h.client.call('StartContainer', { container_id: id });
    const ex = await h.execCollect(id, ['sh', '-c', 'id -u; cat /proc/self/uid_map; sleep 1000 >/dev/null 2>&1 & echo $!; readlink /proc/self/ns/user']);
    t.equal(ex.status, 0, ex.stderr.toString());
    const lines = ex.stdout.toString().split('\n');
    t.equal(lines[0], '0', 'the exec is root in the container');
    t.equal(mapLine(lines[1] ?? ''), '0 100000 65536', 'the exec is in the container\'s user namespace');
    t.not(lines[3], fs.readlinkSync('/proc/self/ns/user'), 'not the guest\'s user namespace');
    // the container's processes, as the guest sees them: uid 100000
    const uids = fs
      .readdirSync('/proc')
      .filter((p) => /^[0-9]+$/.test(p))
      .filter((p) => {
        try {
          return fs.readlinkSync(`/proc/${p}/ns/user`) === lines[3];
        } catch {
          return false;
        }
      })
      .map((p) => /^Uid:\s+([0-9]+)/m.exec(fs.readFileSync(`/proc/${p}/status`, 'utf8'))?.[1]);
    t.ok(uids.length >= 2, `the guest finds the container's processes in that user namespace (${uids.length})`);
    t.same([...new Set(uids)], ['100000'], 'each runs as guest uid 100000');
  });

  t.test('bad mappings are INVALID_ARGUMENT naming the field; mappings without a user namespace too', async (t) => {
    for (const [uid, re] of [
      [[{ ContainerID: 0, HostID: 100000, Size: 0 }], /OCI\.Linux\.UIDMappings\[0\]\.Size 0/],
      [[{ ContainerID: 0, HostID: 100000, Size: 10 }, { ContainerID: 5, HostID: 200000, Size: 10 }], /OCI\.Linux\.UIDMappings\[1\]\.ContainerID range 5\.\.14 overlaps/],
      [[], /OCI\.Linux\.UIDMappings is empty/],
    ] as const) {
      const id = h.id('ub');
      h.removeOnTeardown(t, id);
      const spec = specWith(['true']);
      spec.Linux!.UIDMappings = [...uid];
      const e = await expectCode(t, h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec }), Code.INVALID_ARGUMENT, JSON.stringify(uid));
      t.match(e?.message ?? '', re);
    }
    const id = h.id('ub');
    h.removeOnTeardown(t, id);
    const spec = h.spec(['true']);
    spec.Linux!.UIDMappings = MAP;
    const e = await expectCode(t, h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec }), Code.INVALID_ARGUMENT, 'no user ns');
    t.match(e?.message ?? '', /UIDMappings\/GIDMappings given without a user namespace/);
  });
}
