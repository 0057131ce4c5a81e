// cgroup v2 device rules through the real ttRPC API: the helper runs with
// --unified-cgroup-hierarchy (v1 hierarchies ignored, so the v1 devices cgroup plays no part)
// and enforces linux.resources.devices with a BPF_PROG_TYPE_CGROUP_DEVICE program attached to
// the container's cgroup2 directory (helper/native/bpf-devices.cc). Checked from inside the
// container: an allowed node opens, a denied one fails with EPERM, the default nodes work,
// CAP_MKNOD is kept (the interim does not apply); on the hybrid layout the program is attached
// in addition to the v1 rules.
import * as path from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { AgentHarness, skipReason } from './lib/agent-harness';
import type { grpc } from '../../shared/generated/protos';
import { detectCgroupLayout } from '../../helper/ops/cgroup';
import { loadNative } from '../../shared/native';

const native = loadNative();
const layout = detectCgroupLayout();

/** Why the kernel cannot run device programs, or undefined. */
function bpfSkip(): string | undefined {
  if (layout.v2 === undefined) return 'no cgroup2 mount';
  try {
    native.close(native.bpfDeviceLoad([]));
    return undefined;
  } catch (err) {
    return `the kernel refuses BPF_PROG_TYPE_CGROUP_DEVICE programs: ${(err as Error).message}`;
  }
}

const ALL_CAPS = ['CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_SETUID', 'CAP_SETGID'];
const LOOPS: grpc.LinuxDevice.$Properties[] = [
  { Path: '/dev/loopa', Type: 'b', Major: 7, Minor: 0, FileMode: 0o600 },
  { Path: '/dev/loopb', Type: 'b', Major: 7, Minor: 1, FileMode: 0o600 },
];
const PROBE = [
  'head -c1 /dev/loopa >/dev/null && echo loopa-read || echo loopa-denied',
  'head -c1 /dev/loopb >/dev/null && echo loopb-read || echo loopb-denied',
  '(: > /dev/loopb) && echo loopb-write || echo loopb-write-denied',
  'head -c1 /dev/zero >/dev/null && echo zero-ok; echo x >/dev/null && echo null-ok',
  'rm -f /tmp/m; mknod /tmp/m c 1 1 && echo mknod-ok; head -c1 /tmp/m >/dev/null || echo mem-denied; rm -f /tmp/m',
  'grep CapEff /proc/self/status',
].join('; ');

const skip = skipReason() ?? bpfSkip();
if (skip) {
  t.plan(0, skip);
} else {
  const v2 = new AgentHarness('devices-v2');
  const hy = new AgentHarness('devices-hybrid');
  t.before(async () => {
    await v2.start('dev-v2', ['--unified-cgroup-hierarchy']);
    if (layout.mode === 'hybrid') await hy.start('dev-hybrid');
  });
  t.teardown(() => v2.dispose());
  t.teardown(() => hy.dispose());
  t.afterEach(async (tt) => {
    if (!tt.passing()) tt.comment(v2.logs());
  });

  /** Run PROBE with the two loop nodes and `rules`; {lines, stderr, status, progs} (progs: ids attached to the cgroup2 dir once created). */
  const probe = async (t: Test, h: AgentHarness, rules: Record<string, unknown>[]) => {
    const id = h.id('dv2');
    const spec = h.spec(['sh', '-c', PROBE], { capabilities: ALL_CAPS, resources: { devices: rules } });
    spec.Linux!.Devices = LOOPS;
    h.removeOnTeardown(t, id);
    await h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec });
    const progs = native.bpfDeviceQuery(path.join(layout.v2 ?? '', id));
    await h.client.call('StartContainer', { container_id: id });
    const [out, err] = await Promise.all([h.readAll('ReadStdout', id, id), h.readAll('ReadStderr', id, id)]);
    const status = await h.wait(id, id);
    return { lines: out.toString().split('\n'), stderr: err.toString(), status, progs };
  };

  t.test('v2 only: allow b 7:0 r, deny the rest; a later deny of w takes write away from a wildcard allow', async (t) => {
    const r = await probe(t, v2, [
      { allow: false, access: 'rwm' },
      { allow: true, type: 'b', major: 7, minor: -1, access: 'rw' },
      { allow: false, type: 'b', major: 7, minor: 1, access: 'w' },
    ]);
    t.equal(r.progs.length, 1, 'one device program attached to the container\'s cgroup2 dir');
    t.ok(r.lines.includes('loopa-read'), `b 7:0 (allowed by b 7:* rw) reads: ${r.lines.join('|')} ${r.stderr}`);
    t.ok(r.lines.includes('loopb-read'), 'b 7:1 reads (the deny is for w only)');
    t.ok(r.lines.includes('loopb-write-denied'), 'b 7:1 cannot be opened for writing (the later deny w wins over the wildcard allow)');
    t.match(r.stderr, /loopb: Operation not permitted/, 'EPERM from the device program');
    t.ok(r.lines.includes('zero-ok') && r.lines.includes('null-ok'), 'default nodes (/dev/zero, /dev/null) work through the program');
    t.ok(r.lines.includes('mknod-ok'), 'CAP_MKNOD kept and mknod allowed (default c *:* m): the interim does not apply');
    t.ok(r.lines.includes('mem-denied'), 'a node for c 1:1 cannot be opened (not in the rules)');
    const capEff = BigInt('0x' + (/CapEff:\s*([0-9a-f]+)/.exec(r.lines.join('\n'))?.[1] ?? '0'));
    t.equal((capEff >> 27n) & 1n, 1n, 'CAP_MKNOD (27) is in the effective set');
  });

  t.test('v2 only: the same nodes without an allow rule are denied (default deny)', async (t) => {
    const r = await probe(t, v2, [{ allow: false, access: 'rwm' }]);
    t.ok(r.lines.includes('loopa-denied'), `b 7:0 denied: ${r.lines.join('|')}`);
    t.ok(r.lines.includes('loopb-denied'), 'b 7:1 denied');
    t.match(r.stderr, /loopa: Operation not permitted/);
    t.ok(r.lines.includes('zero-ok'), 'the defaults still work');
  });

  t.test('hybrid: the program is attached in addition to the v1 devices cgroup', { skip: layout.mode !== 'hybrid' ? 'not a hybrid layout' : false }, async (t) => {
    const r = await probe(t, hy, [{ allow: false, access: 'rwm' }, { allow: true, type: 'b', major: 7, minor: 0, access: 'r' }]);
    t.equal(r.progs.length, 1, 'a device program on the cgroup2 dir');
    t.ok(r.lines.includes('loopa-read'), `b 7:0 reads: ${r.lines.join('|')} ${r.stderr}`);
    t.ok(r.lines.includes('loopb-denied'), 'b 7:1 denied');
  });
}
