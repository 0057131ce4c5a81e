// Restrictive OCI fields, end to end through the real ttRPC API (real helper, kata-init, busybox
// rootfs): capabilities (init, exec inheritance, ambient for a non-root uid), the CAP_MKNOD
// interim while device cgroup rules cannot be enforced, OOMScoreAdj, /proc protection on the
// resolved mount destination (a rootfs symlink to /proc), and the fields refused with
// UNIMPLEMENTED or accepted but only logged (seccomp filtering itself: seccomp.test.ts).
// Regression tests for the security review that found a CAP_KILL-only container running with
// CapEff 000001fffeffffff.
import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AgentHarness, Code, expectCode, skipReason } from './lib/agent-harness';
import { DEFAULT_CAPABILITIES } from '../../scripts/lib/standalone';
import { guestHasSelinux } from '../../helper/ops/selinux';

/** The Cap* lines of /proc/self/status as a map: {CapEff: '0000000000000020', ...}. */
function capLines(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of text.matchAll(/^(Cap(?:Inh|Prm|Eff|Bnd|Amb)):\s*([0-9a-f]+)$/gm)) out[m[1]] = m[2];
  return out;
}

const SHOW_CAPS = "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status";

/** The same names in every set (ambient too when `ambient`). */
function allSets(names: string[], ambient = true): Record<string, string[]> {
  return { bounding: names, effective: names, permitted: names, inheritable: names, ambient: ambient ? names : [] };
}

/** A 64-bit mask as /proc/self/status prints it. */
const hex = (mask: bigint): string => mask.toString(16).padStart(16, '0');

const skip = skipReason();
if (skip) {
  t.plan(0, skip);
} else {
  const h = new AgentHarness('security');
  const hi = new AgentHarness('security-interim');
  t.before(async () => {
    await h.start('kata-security');
    // No device cgroup (the helper ignores the v1 hierarchies and uses no v2 device program): the CAP_MKNOD/nodev interim
    // tests run here; the enforced device cgroup is test/integration/devices.test.ts.
    await hi.start('kata-interim', ['--unified-cgroup-hierarchy', '--no-device-programs']);
  });
  t.teardown(() => h.dispose());
  t.teardown(() => hi.dispose());
  t.afterEach(async (tt) => {
    if (!tt.passing()) tt.comment(h.logs());
  });

  const runToEnd = h.runToEnd.bind(h);

  t.test('capabilities: a CAP_KILL-only container has only CAP_KILL and cannot undo /proc protections', async (t) => {
    const script = [
      SHOW_CAPS,
      'if umount /proc/sys 2>/dev/null; then echo umount-sys:done; else echo umount-sys:refused; fi',
      'if (echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null; then echo drop-caches:written; else echo drop-caches:refused; fi',
      'if umount /proc/keys 2>/dev/null; then echo umount-keys:done; else echo umount-keys:refused; fi',
      'echo keys-bytes:$(cat /proc/keys 2>/dev/null | wc -c)',
    ].join('; ');
    const r = await runToEnd(t, ['sh', '-c', script], { capabilities: allSets(['CAP_KILL']) });
    t.equal(r.status, 0, `exit 0 (stderr ${JSON.stringify(r.stderr)})`);
    const caps = capLines(r.stdout);
    for (const k of ['CapEff', 'CapPrm', 'CapBnd', 'CapInh', 'CapAmb']) t.equal(caps[k], '0000000000000020', `${k} is CAP_KILL only`);
    t.match(r.stdout, /^umount-sys:refused$/m, 'umount /proc/sys is refused');
    t.match(r.stdout, /^drop-caches:refused$/m, '/proc/sys/vm/drop_caches cannot be written');
    t.match(r.stdout, /^umount-keys:refused$/m, 'the mask over /proc/keys cannot be unmounted');
    t.match(r.stdout, /^keys-bytes:0$/m, '/proc/keys reads empty (masked)');

    // The same script with CAP_SYS_ADMIN added: the refusals above are the capabilities' doing.
    const adminScript = [SHOW_CAPS, 'if umount /proc/sys 2>/dev/null; then echo umount-sys:done; else echo umount-sys:refused; fi',
      'if umount /proc/keys 2>/dev/null; then echo umount-keys:done; else echo umount-keys:refused; fi'].join('; ');
    const admin = await runToEnd(t, ['sh', '-c', adminScript], { capabilities: allSets(['CAP_KILL', 'CAP_SYS_ADMIN']) });
    t.equal(capLines(admin.stdout).CapEff, hex((1n << 5n) | (1n << 21n)), 'control: CAP_KILL + CAP_SYS_ADMIN');
    t.match(admin.stdout, /^umount-sys:done$/m, 'control: with CAP_SYS_ADMIN umount /proc/sys works');
    t.match(admin.stdout, /^umount-keys:done$/m, 'control: with CAP_SYS_ADMIN the mask can be removed');
  });

  t.test('capabilities: the Docker default set, with and without CAP_MKNOD', async (t) => {
    const runToEnd = hi.runToEnd.bind(hi);
    const docker = 0xa80425fbn; // moby's default set, CAP_MKNOD (27) included
    const allowAll = { devices: [{ allow: true, access: 'rwm' }] };
    const withMknod = await runToEnd(t, ['sh', '-c', SHOW_CAPS], { resources: allowAll });
    const caps = capLines(withMknod.stdout);
    for (const k of ['CapEff', 'CapPrm', 'CapBnd']) t.equal(caps[k], hex(docker), `${k} = Docker's default (devices allow all)`);
    t.equal(caps.CapInh, hex(0n), 'CapInh empty');
    t.equal(caps.CapAmb, hex(0n), 'CapAmb empty');

    const denied = await runToEnd(t, ['sh', '-c', SHOW_CAPS]);
    const dcaps = capLines(denied.stdout);
    for (const k of ['CapEff', 'CapPrm', 'CapBnd']) {
      t.equal(dcaps[k], hex(docker & ~(1n << 27n)), `${k} = Docker's default without CAP_MKNOD (no device rules)`);
    }
    t.same(DEFAULT_CAPABILITIES.length, 14, 'busyboxConfig default: the 14 Docker capabilities');
  });

  t.test('capabilities: an exec without capabilities takes the container\'s; with its own, its own', async (t) => {
    const cid = await h.run(t, ['sleep', '1000'], { capabilities: allSets(['CAP_KILL'], false) });
    const inherited = await h.execCollect(cid, ['sh', '-c', SHOW_CAPS]);
    t.equal(inherited.status, 0, 'exec ran');
    t.equal(capLines(inherited.stdout.toString()).CapEff, '0000000000000020', 'exec CapEff = the container\'s (CAP_KILL)');
    t.equal(capLines(inherited.stdout.toString()).CapBnd, '0000000000000020', 'exec CapBnd = the container\'s');

    const own = await h.execCollect(cid, ['sh', '-c', SHOW_CAPS], {
      capabilities: { Bounding: ['CAP_CHOWN', 'CAP_KILL'], Effective: ['CAP_CHOWN', 'CAP_KILL'], Permitted: ['CAP_CHOWN', 'CAP_KILL'] },
    });
    t.equal(capLines(own.stdout.toString()).CapEff, '0000000000000021', 'exec with its own set: CAP_CHOWN + CAP_KILL');

    const unknown = await h.execCollect(cid, ['sh', '-c', SHOW_CAPS], {
      capabilities: { Bounding: ['CAP_KILL', 'CAP_NO_SUCH_THING'], Effective: ['CAP_KILL'], Permitted: ['CAP_KILL'] },
    });
    t.equal(unknown.status, 0, 'an unknown capability name is skipped, not an error (as upstream)');
    t.equal(capLines(unknown.stdout.toString()).CapBnd, '0000000000000020', 'the known names still apply');
  });

  t.test('capabilities: a non-root uid keeps capabilities across exec only through the ambient set', async (t) => {
    const bind = ['CAP_NET_BIND_SERVICE'];
    const ambient = await runToEnd(t, ['sh', '-c', `id -u; ${SHOW_CAPS}`], { user: { uid: 1000, gid: 1000 }, capabilities: allSets(bind) });
    t.equal(ambient.status, 0, `exit 0 (stderr ${JSON.stringify(ambient.stderr)})`);
    t.match(ambient.stdout, /^1000$/m, 'runs as uid 1000');
    const caps = capLines(ambient.stdout);
    t.equal(caps.CapEff, '0000000000000400', 'CapEff = CAP_NET_BIND_SERVICE');
    t.equal(caps.CapPrm, '0000000000000400', 'CapPrm = CAP_NET_BIND_SERVICE');
    t.equal(caps.CapAmb, '0000000000000400', 'CapAmb = CAP_NET_BIND_SERVICE');

    const none = await runToEnd(t, ['sh', '-c', SHOW_CAPS], { user: { uid: 1000, gid: 1000 }, capabilities: allSets(bind, false) });
    t.equal(capLines(none.stdout).CapEff, hex(0n), 'without ambient: no effective capability after exec');
    t.equal(capLines(none.stdout).CapBnd, '0000000000000400', 'the bounding set is still applied');

    const cid = await h.run(t, ['sleep', '1000'], { user: { uid: 1000, gid: 1000 }, capabilities: allSets(bind) });
    const ex = await h.execCollect(cid, ['sh', '-c', SHOW_CAPS], { uid: 1000 });
    t.equal(capLines(ex.stdout.toString()).CapEff, '0000000000000400', 'a non-root exec inheriting the set keeps it too');
  });

  t.test('CAP_MKNOD: removed unless the device rules allow every device', async (t) => {
    const runToEnd = hi.runToEnd.bind(hi);
    const script = 'if mknod /dev/kt-sda b 8 0 2>/dev/null; then echo mknod:done; ls -l /dev/kt-sda; else echo mknod:refused; fi';
    const denied = await runToEnd(t, ['sh', '-c', script]);
    t.match(denied.stdout, /^mknod:refused$/m, 'default (no device rules): mknod of a block device is refused');
    const dockerRules = {
      devices: [
        { allow: false, access: 'rwm' },
        { allow: true, type: 'c', major: 1, minor: 3, access: 'rwm' },
      ],
    };
    const restricted = await runToEnd(t, ['sh', '-c', script], { resources: dockerRules });
    t.match(restricted.stdout, /^mknod:refused$/m, 'deny-all then allow c 1:3: refused');
    const allowed = await runToEnd(t, ['sh', '-c', script], { resources: { devices: [{ allow: true, access: 'rwm' }] } });
    t.match(allowed.stdout, /^mknod:done$/m, 'an allow-all rule: mknod works');
    t.match(allowed.stdout, /^b.* 8,\s+0 .*\/dev\/kt-sda$/m, 'the node is block 8:0');

    const cid = await hi.run(t, ['sleep', '1000']);
    const ex = await hi.execCollect(cid, ['sh', '-c', `${SHOW_CAPS}; ${script}`], {
      capabilities: { Bounding: ['CAP_MKNOD', 'CAP_KILL'], Effective: ['CAP_MKNOD', 'CAP_KILL'], Permitted: ['CAP_MKNOD', 'CAP_KILL'] },
    });
    t.equal(capLines(ex.stdout.toString()).CapBnd, '0000000000000020', 'an exec asking for CAP_MKNOD does not get it either');
    t.match(ex.stdout.toString(), /^mknod:refused$/m, 'the exec cannot mknod');
  });

  t.test('device nodes shipped in the image cannot be opened unless the device rules allow all', async (t) => {
    const runToEnd = hi.runToEnd.bind(hi);
    // Review finding: with CAP_MKNOD withheld, a node already in the image (unpacked by the
    // runtime as root) still opened, e.g. a block device of the guest disk. Without a device
    // cgroup, every mount but the /dev tmpfs and devpts is nodev.
    const rootfs = path.join(hi.tmp, 'rootfs-devnode');
    execFileSync('cp', ['-a', hi.rootfs, rootfs]);
    execFileSync('mknod', [path.join(rootfs, 'evil-zero'), 'c', '1', '5']);
    fs.chmodSync(path.join(rootfs, 'evil-zero'), 0o666);
    const script =
      'if head -c 4 /evil-zero >/dev/null 2>&1; then echo image-node:opened; else echo image-node:refused; fi; ' +
      'echo x > /dev/null && echo devnull:ok; head -c 4 /dev/zero | wc -c; grep -c " nodev" /proc/self/mountinfo >/dev/null && echo mounted';
    const denied = await runToEnd(t, ['sh', '-c', script], { rootfs, capabilities: ['CAP_KILL'] });
    t.match(denied.stdout, /^image-node:refused$/m, 'CAP_KILL only, no device rules: the image node cannot be opened');
    t.match(denied.stdout, /^devnull:ok$/m, '/dev/null (the /dev tmpfs) still works');
    t.match(denied.stdout, /^4$/m, '/dev/zero still works');
    const root = await runToEnd(t, ['sh', '-c', script], { rootfs });
    t.match(root.stdout, /^image-node:refused$/m, 'the default capability set: refused too');
    const allowAll = await runToEnd(t, ['sh', '-c', script], { rootfs, resources: { devices: [{ allow: true, access: 'rwm' }] } });
    t.match(allowAll.stdout, /^image-node:opened$/m, 'an allow-all device rule: the node opens (privileged containers)');

    const cid = await hi.run(t, ['sleep', '1000'], { rootfs });
    const ex = await hi.execCollect(cid, ['sh', '-c', script]);
    t.match(ex.stdout.toString(), /^image-node:refused$/m, 'an exec is refused as well');
    const tty = await hi.execCollect(cid, ['sh', '-c', 'test -t 0 && echo tty:ok'], { terminal: true });
    t.match(tty.stdout.toString(), /tty:ok/, 'a terminal exec still works (devpts keeps its devices)');
  });

  t.test('OOMScoreAdj: the container and its execs get the value asked for (0 when unset)', async (t) => {
    const r = await runToEnd(t, ['cat', '/proc/self/oom_score_adj'], { oomScoreAdj: 500 });
    t.equal(r.stdout, '500\n', 'the init runs with oom_score_adj 500');
    const dflt = await runToEnd(t, ['cat', '/proc/self/oom_score_adj']);
    t.equal(dflt.stdout, '0\n', 'unset: 0');
    const cid = await h.run(t, ['sleep', '1000'], { oomScoreAdj: 200 });
    const ex = await h.execCollect(cid, ['cat', '/proc/self/oom_score_adj'], { oomScoreAdj: 300 });
    t.equal(ex.stdout.toString(), '300\n', 'an exec with its own value');
    const ex0 = await h.execCollect(cid, ['cat', '/proc/self/oom_score_adj']);
    t.equal(ex0.stdout.toString(), '0\n', 'an exec without one: 0 (as upstream: OOMScoreAdj is per process)');
    const err = await expectCode(t, h.create(t, ['true'], { oomScoreAdj: 1001 }), Code.INVALID_ARGUMENT, 'OOMScoreAdj 1001');
    t.match(err?.message ?? '', /OCI\.Process\.OOMScoreAdj/, 'the message names the field');
  });

  t.test('/proc protection applies to the resolved destination (rootfs symlink to /proc)', async (t) => {
    const rootfs = path.join(h.tmp, 'rootfs-proclink');
    execFileSync('cp', ['-a', h.rootfs, rootfs]);
    fs.symlinkSync('/proc', path.join(rootfs, 'myproc'));
    fs.symlinkSync('/srv/data', path.join(rootfs, 'mydata'));
    const tmpfs = (destination: string): Record<string, unknown> => ({ destination, type: 'tmpfs', source: 'tmpfs', options: ['nosuid'] });

    const onProc = await expectCode(t, h.create(t, ['true'], { rootfs, mounts: [tmpfs('/myproc')] }), Code.INVALID_ARGUMENT, 'tmpfs on /myproc');
    t.match(onProc?.message ?? '', /: mount: target \/myproc resolves to \/proc inside the rootfs: only a proc filesystem/, 'names the requested and the resolved destination');
    const onAttr = await expectCode(t, h.create(t, ['true'], { rootfs, mounts: [tmpfs('/myproc/self/attr')] }), Code.INVALID_ARGUMENT, 'tmpfs on /myproc/self/attr');
    t.match(onAttr?.message ?? '', /target \/myproc\/self\/attr resolves to \/proc\/\d+\/attr inside the rootfs: mounting over anything below \/proc is not allowed/, 'names both paths');

    const ok = await runToEnd(t, ['sh', '-c', 'grep -c " /srv/data " /proc/self/mountinfo; readlink /mydata'], { rootfs, mounts: [tmpfs('/mydata')] });
    t.equal(ok.stdout, '1\n/srv/data\n', 'a symlinked destination elsewhere still works (mounted on /srv/data)');

    // Allow-listed binds below /proc still work, including /proc/net/dev, which resolves
    // through procfs's own link /proc/net -> self/net to /proc/<pid>/net/dev.
    const fake = path.join(h.tmp, 'fake-cpuinfo');
    fs.writeFileSync(fake, 'fake cpuinfo\n');
    const cpuinfo = await runToEnd(t, ['cat', '/proc/cpuinfo'], {
      mounts: [{ destination: '/proc/cpuinfo', type: 'bind', source: fake, options: ['bind', 'ro'] }],
    });
    t.equal(cpuinfo.stdout, 'fake cpuinfo\n', 'a bind onto /proc/cpuinfo is allowed');
    const netdev = await runToEnd(t, ['true'], {
      mounts: [{ destination: '/proc/net/dev', type: 'bind', source: fake, options: ['bind'] }],
    });
    t.equal(netdev.status, 0, 'a bind onto /proc/net/dev is not refused');
  });

  t.test('refused with UNIMPLEMENTED or INVALID_ARGUMENT, naming the field', async (t) => {
    const create = (spec: ReturnType<AgentHarness['spec']>): Promise<unknown> => {
      const id = h.id('refused');
      h.removeOnTeardown(t, id);
      return h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec });
    };
    // Every hook kind runs (hooks.test.ts, hooks-container.test.ts); a new user namespace works
    // (userns.test.ts) but joining an existing one is refused.
    const joinUserns = h.spec(['true'], { namespaces: [{ type: 'mount' }, { type: 'user', path: '/proc/1/ns/user' }] });
    const un = await expectCode(t, create(joinUserns), Code.UNIMPLEMENTED, 'joining a user namespace');
    t.match(un?.message ?? '', /existing user namespace/, 'says joining a user namespace is not supported');

    const seccomp = { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['mkdir'], action: 'SCMP_ACT_NOTIFY' }] };
    const sc = await expectCode(t, create(h.spec(['true'], { seccomp })), Code.UNIMPLEMENTED, 'a seccomp SCMP_ACT_NOTIFY rule');
    t.match(sc?.message ?? '', /OCI\.Linux\.Seccomp\.Syscalls\[0\]\.Action "SCMP_ACT_NOTIFY"/, 'names OCI.Linux.Seccomp.Syscalls[0].Action');

    // SELinux labels on a guest without SELinux: accepted, dropped with a warning naming them
    if (!guestHasSelinux()) {
      const labelled = h.spec(['sh', '-c', 'echo labelled-ran']);
      labelled.Process!.SelinuxLabel = 'system_u:system_r:container_t:s0';
      labelled.Linux!.MountLabel = 'system_u:object_r:container_file_t:s0';
      const lid = h.id('selinux');
      h.removeOnTeardown(t, lid);
      await h.client.call('CreateContainer', { container_id: lid, exec_id: lid, OCI: labelled });
      await h.client.call('StartContainer', { container_id: lid });
      t.match((await h.readAll('ReadStdout', lid, lid)).toString(), /labelled-ran/, 'a container with SELinux labels runs');
      t.match(h.logs(), /SELinux process label ignored: the guest has no SELinux/, 'the process label is logged as ignored');
      t.match(h.logs(), /SELinux mount label ignored/, 'the mount label too');
    }

    const root = await expectCode(t, create(h.spec(['true'], { rootfs: '/' })), Code.INVALID_ARGUMENT, 'root.path "/"');
    t.match(root?.message ?? '', /OCI\.Root\.Path "\/"/, 'names OCI.Root.Path');
  });

  t.test('accepted: an allow-only seccomp profile, resources (enforced: cgroups, not logged as unenforced)', async (t) => {
    const r = await runToEnd(t, ['sh', '-c', 'echo ran; grep pids /proc/self/cgroup'], {
      seccomp: { defaultAction: 'SCMP_ACT_ALLOW' },
      resources: { memory: { limit: 67108864 }, pids: { limit: 100 }, cpu: { shares: 512 } },
    });
    t.match(r.stdout, /^ran\n[0-9]+:pids:\/[^\n]+\n$/, 'the container runs, in a pids cgroup of its own');
    t.notMatch(r.stdout, /:pids:\/\n/, 'not the root pids cgroup');
    const log = fs.readFileSync(h.agent.controlLog, 'utf8');
    t.notOk(log.split('\n').some((l) => l.includes('not enforced') && l.includes('OCI.Linux.Resources.Memory.Limit')), 'resources are not listed as unenforced');
  });

  t.test('shutdown: nothing left behind', async (t) => {
    const { destroyError, mounts, processes } = await h.shutdown(true);
    t.equal(destroyError, null, 'DestroySandbox succeeded');
    t.same(mounts, [], 'no mount left under the run dir or the rootfs');
    t.same(processes(), [], 'no container process left');
  });
}
