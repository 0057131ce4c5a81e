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

    await t.test('spec rules: deny all then the defaults still usable (runc order); CAP_MKNOD is kept; a node for a non-default device is denied', async (t) => {
      const { stdout, stderr, status } = await h.runToEnd(
        t,
        [
          'sh',
          '-c',
          'head -c1 /dev/zero >/dev/null && echo zero-ok; head -c1 /dev/urandom >/dev/null && echo urandom-ok; echo x >/dev/null && echo null-ok; ' +
            'grep CapEff /proc/self/status; rm -f /tmp/lp; mknod /tmp/lp b 7 0 && echo mknod-ok; head -c1 /tmp/lp >/dev/null || echo node-denied; rm -f /tmp/lp',
        ],
        {
          capabilities: ALL_CAPS,
          // `runc spec` and containerd start with "deny all"
          resources: { devices: [{ allow: false, access: 'rwm' }] },
        },
      );
      t.equal(status, 0, stderr);
      const lines = stdout.split('\n');
      t.ok(lines.includes('zero-ok'), `/dev/zero (a default rule) is readable: ${stdout} ${stderr}`);
      t.ok(lines.includes('urandom-ok'), '/dev/urandom is readable');
      t.ok(lines.includes('null-ok'), '/dev/null is writable');
      t.ok(lines.includes('mknod-ok'), 'CAP_MKNOD kept: the device cgroup enforces the rules (mknod allowed by the default b *:* m rule)');
      t.ok(lines.includes('node-denied'), 'a node made inside for b 7:0 (a loop device) cannot be opened');
      t.match(stderr, /Operation not permitted/, 'the kernel refused the open (EPERM)');
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

    await t.test('linux.devices: nodes created with type, numbers, mode and owner; allow and deny rules apply to them; default nodes and links present', async (t) => {
      const script =
        'stat -c "%n %F %t:%T %a %u:%g" /dev/myloop /dev/sub/myfull /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty; ' +
        'for l in fd stdin stdout stderr ptmx; do readlink /dev/$l; done; ' +
        'head -c1 /dev/myloop >/dev/null && echo myloop-read || echo myloop-denied; head -c1 /dev/sub/myfull >/dev/null && echo myfull-read';
      const devices = [
        { Path: '/dev/myloop', Type: 'b', Major: 7, Minor: 0, FileMode: 0o640, UID: 1000, GID: 100 },
        { Path: '/dev/sub/myfull', Type: 'c', Major: 1, Minor: 7, FileMode: 0o600 },
      ];
      const allowed = await runWithDevices(t, ['sh', '-c', script], devices, { devices: [{ allow: false, access: 'rwm' }, { allow: true, type: 'b', major: 7, minor: 0, access: 'r' }] });
      t.equal(allowed.status, 0, allowed.stderr);
      const lines = allowed.stdout.split('\n');
      t.ok(lines.includes('/dev/myloop block special file 7:0 640 1000:100'), `myloop: b 7:0 0640 1000:100 (${allowed.stdout})`);
      t.ok(lines.includes('/dev/sub/myfull character special file 1:7 600 0:0'), 'a node in a new sub-directory');
      for (const [n, mm] of [['null', '1:3'], ['zero', '1:5'], ['full', '1:7'], ['random', '1:8'], ['urandom', '1:9'], ['tty', '5:0']]) {
        t.ok(lines.includes(`/dev/${n} character special file ${mm} 666 0:0`), `default /dev/${n} (${mm}, 0666)`);
      }
      t.same(lines.slice(8, 13), ['/proc/self/fd', '/proc/self/fd/0', '/proc/self/fd/1', '/proc/self/fd/2', 'pts/ptmx'], '/dev symlinks');
      t.ok(lines.includes('myloop-read'), 'an allow rule for b 7:0 r: the node reads');
      t.ok(lines.includes('myfull-read'), 'the other node (c 1:7, a default rule) reads');

      const denied = await runWithDevices(t, ['sh', '-c', script], devices, {
        devices: [{ allow: true, type: 'b', major: 7, minor: 0, access: 'r' }, { allow: false, type: 'b', major: 7, minor: 0, access: 'rwm' }],
      });
      t.match(denied.stdout, /^myloop-denied$/m, 'allow then deny b 7:0: head -c1 /dev/myloop is refused');
      t.match(denied.stderr, /myloop: Operation not permitted/, 'EPERM from the device cgroup');
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
