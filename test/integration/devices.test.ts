// Device cgroup and device nodes through the real ttRPC API (real helper, busybox rootfs), each
// checked from inside the container: linux.resources.devices rules are enforced by the v1
// devices cgroup (a deny rule makes `head -c1` fail, the default rules keep /dev/null and
// friends usable), CAP_MKNOD then stays as the spec asks, and bad device rules are refused.
import t from 'tap';
import type { Test } from 'tap';
import { AgentHarness, Code, expectCode, skipReason } from './lib/agent-harness';
import type { grpc } from '../../shared/generated/protos';
import { detectCgroupLayout } from '../../helper/ops/cgroup';

const layout = detectCgroupLayout();
const ALL_CAPS = ['CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_SETUID', 'CAP_SETGID'];

const skip = skipReason() ?? (layout.v1.devices === undefined ? 'no v1 devices cgroup hierarchy (device rules cannot be enforced)' : undefined);
if (skip) {
  t.plan(0, skip);
} else {
  const h = new AgentHarness('devices');
  t.test('device cgroup and nodes', async (t) => {
    await h.start('dev');
    t.teardown(() => h.dispose());
    t.afterEach(async (tt) => {
      if (!tt.passing()) tt.comment(h.logs());
    });

    await t.test('a deny rule for c 1:5 stops reading /dev/zero; the default devices stay usable; CAP_MKNOD is kept', async (t) => {
      const { stdout, stderr, status } = await h.runToEnd(
        t,
        [
          'sh',
          '-c',
          'head -c1 /dev/zero >/dev/null && echo zero-ok || echo zero-denied; ' +
            'head -c1 /dev/urandom >/dev/null && echo urandom-ok; echo x >/dev/null && echo null-ok; ' +
            'grep CapEff /proc/self/status; rm -f /tmp/z; mknod /tmp/z c 1 5 && echo mknod-ok; head -c1 /tmp/z >/dev/null || echo node-denied; rm -f /tmp/z',
        ],
        {
          capabilities: ALL_CAPS,
          resources: { devices: [{ allow: false, type: 'c', major: 1, minor: 5, access: 'rwm' }] },
        },
      );
      t.equal(status, 0, stderr);
      const lines = stdout.split('\n');
      t.ok(lines.includes('zero-denied'), `reading /dev/zero is denied by the rule: ${stdout} ${stderr}`);
      t.match(stderr, /Operation not permitted/, 'the kernel refused the open (EPERM)');
      t.ok(lines.includes('urandom-ok'), '/dev/urandom (a default rule) is readable');
      t.ok(lines.includes('null-ok'), '/dev/null is writable');
      t.ok(lines.includes('mknod-ok'), 'CAP_MKNOD kept: the device cgroup enforces the rules (mknod allowed by the default c *:* m rule)');
      t.ok(lines.includes('node-denied'), 'a node made inside for c 1:5 is denied too');
      const capEff = BigInt('0x' + (/CapEff:\s*([0-9a-f]+)/.exec(stdout)?.[1] ?? '0'));
      t.equal((capEff >> 27n) & 1n, 1n, 'CAP_MKNOD (27) is in the effective set');
    });

    await t.test('without rules a node for a device not in the defaults cannot be opened (deny by default)', async (t) => {
      const { stdout, status, stderr } = await h.runToEnd(t, ['sh', '-c', 'rm -f /tmp/mem; mknod /tmp/mem c 1 1 && echo mknod-ok; head -c1 /tmp/mem >/dev/null && echo mem-read || echo mem-denied; rm -f /tmp/mem'], {
        capabilities: ALL_CAPS,
      });
      t.equal(status, 0, stderr);
      t.match(stdout, /mknod-ok/, stderr);
      t.match(stdout, /mem-denied/, '/dev/mem (c 1:1) is not readable');
    });

    /** Run `args` with linux.devices `devices` (and `resources`) to the end. */
    const runWithDevices = async (t: Test, args: string[], devices: grpc.LinuxDevice.$Properties[], resources?: Record<string, unknown>) => {
      const id = h.id('dv');
      const spec = h.spec(args, { capabilities: ALL_CAPS, ...(resources ? { resources } : {}) });
      spec.Linux!.Devices = devices;
      h.removeOnTeardown(t, id);
      await h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec });
      await h.client.call('StartContainer', { container_id: id });
      const [out, err] = await Promise.all([h.readAll('ReadStdout', id, id), h.readAll('ReadStderr', id, id)]);
      return { stdout: out.toString(), stderr: err.toString(), status: await h.wait(id, id) };
    };

    await t.test('linux.devices: nodes created with type, numbers, mode and owner; a deny rule stops opening one; default nodes and links present', async (t) => {
      const r = await runWithDevices(
        t,
        [
          'sh',
          '-c',
          'stat -c "%n %F %t:%T %a %u:%g" /dev/myzero /dev/sub/myfull /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty; ' +
            'for l in fd stdin stdout stderr ptmx; do readlink /dev/$l; done; ' +
            'head -c1 /dev/myzero >/dev/null && echo myzero-read || echo myzero-denied; head -c1 /dev/sub/myfull >/dev/null && echo myfull-read',
        ],
        [
          { Path: '/dev/myzero', Type: 'c', Major: 1, Minor: 5, FileMode: 0o640, UID: 1000, GID: 100 },
          { Path: '/dev/sub/myfull', Type: 'c', Major: 1, Minor: 7, FileMode: 0o600 },
        ],
        { devices: [{ allow: false, type: 'c', major: 1, minor: 5, access: 'rwm' }] },
      );
      t.equal(r.status, 0, r.stderr);
      const lines = r.stdout.split('\n');
      t.ok(lines.includes('/dev/myzero character special file 1:5 640 1000:100'), `myzero: c 1:5 0640 1000:100 (${r.stdout})`);
      t.ok(lines.includes('/dev/sub/myfull character special file 1:7 600 0:0'), 'a node in a new sub-directory');
      for (const [n, mm] of [['null', '1:3'], ['zero', '1:5'], ['full', '1:7'], ['random', '1:8'], ['urandom', '1:9'], ['tty', '5:0']]) {
        t.ok(lines.includes(`/dev/${n} character special file ${mm} 666 0:0`), `default /dev/${n} (${mm}, 0666)`);
      }
      t.same(lines.slice(8, 13), ['/proc/self/fd', '/proc/self/fd/0', '/proc/self/fd/1', '/proc/self/fd/2', 'pts/ptmx'], '/dev symlinks');
      t.ok(lines.includes('myzero-denied'), 'the deny rule for c 1:5 stops reading the linux.devices node');
      t.ok(lines.includes('myfull-read'), 'the other node (c 1:7, a default rule) reads');
    });

    await t.test('bad linux.devices are INVALID_ARGUMENT naming the field', async (t) => {
      for (const [dev, field] of [
        [{ Path: '/dev/x', Type: 'z', Major: 1, Minor: 3 }, /OCI\.Linux\.Devices\[0\]\.Type "z"/],
        [{ Path: 'dev/x', Type: 'c', Major: 1, Minor: 3 }, /OCI\.Linux\.Devices\[0\]\.Path "dev\/x".*absolute/],
        [{ Path: '/etc/x', Type: 'c', Major: 1, Minor: 3 }, /OCI\.Linux\.Devices\[0\]\.Path "\/etc\/x".*below \/dev/],
        [{ Path: '/dev/../etc/x', Type: 'c', Major: 1, Minor: 3 }, /OCI\.Linux\.Devices\[0\]\.Path/],
      ] as const) {
        const id = h.id('bad');
        const spec = h.spec(['true']);
        spec.Linux!.Devices = [dev];
        h.removeOnTeardown(t, id);
        const err = await expectCode(t, h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec }), Code.INVALID_ARGUMENT, `${dev.Path} ${dev.Type}`);
        t.match(err?.message ?? '', field);
      }
    });

    await t.test('bad device rules are INVALID_ARGUMENT naming the field', async (t) => {
      const err = await expectCode(t, h.create(t, ['true'], { resources: { devices: [{ allow: true, type: 'x', access: 'rwm' }] } }), Code.INVALID_ARGUMENT, 'type x');
      t.match(err?.message ?? '', /OCI\.Linux\.Resources\.Devices\[0\]\.Type "x"/);
      const err2 = await expectCode(t, h.create(t, ['true'], { resources: { devices: [{ allow: true, type: 'c', access: 'rwz' }] } }), Code.INVALID_ARGUMENT, 'access rwz');
      t.match(err2?.message ?? '', /OCI\.Linux\.Resources\.Devices\[0\]\.Access "rwz"/);
    });
  });
}
