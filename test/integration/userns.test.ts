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

  // The runtime's own mounts with runtime-tools' default options (devpts gid=5) and
  // linux_uid_mappings' maps (container 0 → guest 1000). The ipc namespace is the sandbox's (Kata's
  // rewrite: the spec's "ipc" is replaced), which the container's user namespace does not own:
  // its mqueue is made by kata-init before it enters the user namespace (was: no mqueue at all,
  // /dev/mqueue a plain directory of the /dev tmpfs, the one linux_uid_mappings failure).
  const conformanceSpec = (args: string[], namespaces = NAMESPACES) => {
    const spec = h.spec(args, { namespaces });
    const pts = spec.Mounts!.find((m) => m.destination === '/dev/pts')!;
    pts.options = [...(pts.options ?? []), 'gid=5'];
    spec.Linux!.UIDMappings = [{ ContainerID: 0, HostID: 1000, Size: 2000 }];
    spec.Linux!.GIDMappings = [{ ContainerID: 0, HostID: 1000, Size: 3000 }];
    return spec;
  };

  t.test("the runtime's mounts belong to the container's root; /dev/mqueue is the sandbox's mqueue", async (t) => {
    const id = h.id('uo');
    h.removeOnTeardown(t, id);
    const script =
      'stat -c "%n %u:%g %a" /dev /dev/pts /dev/shm /dev/pts/ptmx; stat -c "%n %a" /dev/mqueue; ' +
      'awk \'$5 == "/dev/mqueue" || $5 == "/sys" { print "mnt", $5, $(NF-2), $(NF-1), $6 }\' /proc/self/mountinfo; ' +
      'awk \'{ print "order", $5 }\' /proc/self/mountinfo; touch /dev/shm/f && stat -c "shm-file %u:%g" /dev/shm/f; ' +
      'touch /dev/mqueue/uq && stat -c "queue %u:%g" /dev/mqueue/uq && cat /dev/mqueue/uq; echo; echo end; sleep 1000';
    await h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: conformanceSpec(['sh', '-c', script]) });
    await h.client.call('StartContainer', { container_id: id });
    const out = await h.readUntil(id, id, /^end\n/m);
    t.match(out, /^\/dev 0:0 755$/m, '/dev tmpfs: the container root, mode=755');
    t.match(out, /^\/dev\/pts 0:0 755$/m, 'devpts: the container root');
    t.match(out, /^\/dev\/pts\/ptmx 0:0 666$/m, 'devpts ptmx: the container root, ptmxmode=0666');
    t.match(out, /^\/dev\/shm 0:0 1777$/m, '/dev/shm tmpfs: the container root, mode=1777');
    t.match(out, /^shm-file 0:0$/m, 'container root writes its /dev/shm');
    t.match(out, /^\/dev\/mqueue 1777$/m, "/dev/mqueue is the sandbox's instance: sticky, world-writable");
    t.match(out, /^mnt \/dev\/mqueue mqueue mqueue rw,nosuid,nodev,noexec\b/m, '/dev/mqueue is an mqueue mount, source "mqueue" (runtime-tools checks both), nosuid,nodev,noexec');
    t.match(out, /^mnt \/sys sysfs sysfs ro,nosuid,nodev,noexec\b/m, '/sys is a read-only sysfs');
    const order = out.split('\n').filter((l) => l.startsWith('order ')).map((l) => l.slice(6));
    t.same(order.filter((p) => ['/dev', '/dev/pts', '/dev/shm', '/dev/mqueue', '/sys'].includes(p)), ['/dev', '/dev/pts', '/dev/shm', '/dev/mqueue', '/sys'],
      'mountinfo lists them in the spec\'s order (the mqueue made before the user namespace is not listed first)');
    t.match(out, /^queue 0:0$/m, 'container root creates a message queue, owned by it');
    t.match(out, /^QSIZE:0 /m, 'a real queue (was: a regular file of the /dev tmpfs, /dev/mqueue not mounted)');
    // The queue lives in the sandbox's ipc namespace: a second container of the sandbox (no user
    // namespace) sees it, as the pod's containers share IPC under Kata.
    const other = await h.run(t, ['sh', '-c', 'ls /dev/mqueue; stat -c %u /dev/mqueue/uq'], {});
    const [seen] = (await Promise.all([h.readAll('ReadStdout', other, other), h.wait(other, other)])).map(String);
    t.match(seen, /^uq\n1000\n$/, `another container of the sandbox sees the queue, owned by guest uid 1000 (${seen})`);
    // A pty of the container's devpts: group 5 inside (gid=5 was taken in its user namespace).
    const pty = await h.execCollect(id, ['sh', '-c', 'stat -c "%g %a" "$(tty)"'], { terminal: true, uid: 0 });
    t.match(pty.stdout.toString(), /^5 620\r?\n$/, `a pts of the container is group 5 (tty), mode 0620 (${JSON.stringify(pty.stdout.toString())})`);
  });

  t.test('without a network namespace of its own, /sys is a fresh sysfs of the sandbox network, not a bind of the guest /sys', async (t) => {
    const id = h.id('us');
    h.removeOnTeardown(t, id);
    const script = 'awk \'$5 ~ "^/sys" && $5 !~ "^/sys/firmware" { print "mnt", $5, $(NF-2), $6 }\' /proc/self/mountinfo; ls /sys/class/net; ' +
      'touch /sys/x 2>/dev/null || echo sys-readonly';
    const spec = conformanceSpec(['sh', '-c', script], NAMESPACES.filter((n) => n.type !== 'network'));
    await h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec });
    await h.client.call('StartContainer', { container_id: id });
    const [out, err] = (await Promise.all([h.readAll('ReadStdout', id, id), h.readAll('ReadStderr', id, id)])).map(String);
    t.equal(await h.wait(id, id), 0, err);
    t.match(out, /^mnt \/sys sysfs ro,nosuid,nodev,noexec\b/m, '/sys is a sysfs, with the spec\'s ro,nosuid,nodev,noexec on this mount');
    t.ok(out.split('\n').includes('sys-readonly'), 'and it is read-only');
    t.notMatch(out, /^mnt \/sys\/(fs|kernel)/m, 'none of the guest\'s /sys submounts (cgroup, debugfs...) came along');
    const guestNet = fs.readdirSync('/sys/class/net').sort().join('\n');
    t.equal(out.split('\n').filter((l) => l !== '' && !l.startsWith('mnt ') && l !== 'sys-readonly').sort().join('\n'), guestNet, 'its /sys/class/net is the network namespace it runs in');
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
