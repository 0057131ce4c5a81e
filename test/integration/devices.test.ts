// Device cgroup and device nodes through the real ttRPC API (real helper, busybox rootfs), each
// checked from inside the container: linux.resources.devices rules are enforced by the v1
// devices cgroup (a deny rule makes `head -c1` fail, the default rules keep /dev/null and
// friends usable), CAP_MKNOD then stays as the spec asks, and bad device rules are refused.
import t from 'tap';
import { AgentHarness, Code, expectCode, skipReason } from './lib/agent-harness';
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
            'grep CapEff /proc/self/status; mknod /tmp/z c 1 5 && echo mknod-ok; head -c1 /tmp/z >/dev/null || echo node-denied',
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
      const { stdout, status, stderr } = await h.runToEnd(t, ['sh', '-c', 'mknod /tmp/mem c 1 1 && echo mknod-ok; head -c1 /tmp/mem >/dev/null && echo mem-read || echo mem-denied'], {
        capabilities: ALL_CAPS,
      });
      t.equal(status, 0, stderr);
      t.match(stdout, /mknod-ok/);
      t.match(stdout, /mem-denied/, '/dev/mem (c 1:1) is not readable');
    });

    await t.test('bad device rules are INVALID_ARGUMENT naming the field', async (t) => {
      const err = await expectCode(t, h.create(t, ['true'], { resources: { devices: [{ allow: true, type: 'x', access: 'rwm' }] } }), Code.INVALID_ARGUMENT, 'type x');
      t.match(err?.message ?? '', /OCI\.Linux\.Resources\.Devices\[0\]\.Type "x"/);
      const err2 = await expectCode(t, h.create(t, ['true'], { resources: { devices: [{ allow: true, type: 'c', access: 'rwz' }] } }), Code.INVALID_ARGUMENT, 'access rwz');
      t.match(err2?.message ?? '', /OCI\.Linux\.Resources\.Devices\[0\]\.Access "rwz"/);
    });
  });
}
