// The default config.json of `runc spec` runs unchanged but for root.path and args (terminal,
// ambient capabilities without an inheritable set, the deny-all device rule, rlimits, masked
// paths): the capability sets the container sees in /proc/self/status are runc's (ambient
// CAP_AUDIT_WRITE, CAP_KILL, CAP_NET_BIND_SERVICE dropped with a warning, as runc does, since
// they are not inheritable).
import t from 'tap';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AgentHarness, skipReason } from './lib/agent-harness';
import { ociJsonToSpec } from '../../control/ctl/oci-json';

const RUNC = '/usr/sbin/runc';
const skip = skipReason() ?? (fs.existsSync(RUNC) ? undefined : `${RUNC} is not installed`);
if (skip) {
  t.plan(0, skip);
} else {
  const h = new AgentHarness('runc-spec');
  // The helper (and so kata-init) inherits umask 077: the container must still start with 0022.
  const saved = process.umask(0o077);
  t.before(async () => {
    try {
      await h.start('runcspec');
    } finally {
      process.umask(saved);
    }
  });
  t.teardown(() => h.dispose());
  t.test('runc spec default config', async (t) => {
    t.afterEach(async (tt) => {
      if (!tt.passing()) tt.comment(h.logs());
    });
    const dir = path.join(h.tmp, 'runc-bundle');
    fs.mkdirSync(dir, { recursive: true });
    execFileSync(RUNC, ['spec'], { cwd: dir });
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as {
      root: { path: string };
      process: { args: string[]; terminal: boolean };
    };
    t.equal(config.process.terminal, true, 'runc spec asks for a terminal');
    config.root.path = h.rootfs;
    config.process.args = ['sh', '-c', "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status; test -t 1 && echo tty:yes"];
    const spec = ociJsonToSpec(config as unknown as Record<string, unknown>, h.rootfs);
    const id = h.id('runc');
    h.removeOnTeardown(t, id);
    await h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec }).catch((err: unknown) => {
      t.comment(`CreateContainer: ${(err as Error).message}\n${h.logs()}`);
      throw err;
    });
    await h.client.call('StartContainer', { container_id: id });
    const out = (await h.readAll('ReadStdout', id, id)).toString().replace(/\r/g, '');
    t.equal(await h.wait(id, id), 0, 'exit 0');
    // CAP_AUDIT_WRITE (29), CAP_KILL (5), CAP_NET_BIND_SERVICE (10)
    const set = ((1n << 29n) | (1n << 5n) | (1n << 10n)).toString(16).padStart(16, '0');
    for (const k of ['CapEff', 'CapPrm', 'CapBnd']) t.match(out, new RegExp(`^${k}:\\s*${set}$`, 'm'), `${k} = runc's three capabilities`);
    t.match(out, /^CapInh:\s*0{16}$/m, 'CapInh empty');
    t.match(out, /^CapAmb:\s*0{16}$/m, 'CapAmb empty: the non-inheritable ambient capabilities were dropped');
    t.match(out, /^tty:yes$/m, 'stdout is a terminal');
    t.match(h.logs(), /ambient capabilities not in both the permitted and the inheritable set dropped/, 'the drop is logged');
  });

  t.test('process fields: umask 0022, a sysctl the kernel lacks is skipped with a warning, consoleSize sets the initial window', async (t) => {
    const spec = h.spec(['sh', '-c', 'umask; cat /proc/sys/fs/mqueue/msg_max; stty size'], {
      terminal: true,
      sysctl: { 'fs.mqueue.kata_no_such_key': '1', 'fs.mqueue.msg_max': '17' },
    });
    spec.Process!.ConsoleSize = { Height: 33, Width: 101 };
    const id = h.id('proc');
    h.removeOnTeardown(t, id);
    await h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec });
    await h.client.call('StartContainer', { container_id: id });
    const out = (await h.readAll('ReadStdout', id, id)).toString().replace(/\r/g, '');
    t.equal(await h.wait(id, id), 0, `exit 0 (${out})`);
    t.match(out, /^0022$/m, 'umask 0022 although the helper runs with 077');
    t.match(out, /^17$/m, 'the known sysctl is applied');
    t.match(out, /^33 101$/m, 'the terminal starts 33 rows x 101 columns');
    t.match(h.logs(), /sysctl skipped: the guest kernel has no such key/, 'the unknown key is logged');
  });
}
