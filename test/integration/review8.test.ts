// Adversarial review 8 (docs/ARCHITECTURE.md "Threat model", review 8): host-namespace mode
// (agent and helper --allow-host-namespaces). A spec whose mount namespace entry has a path that
// is the agent's own mount namespace (/proc/self/ns/mnt as kata-init resolves it; /proc/1/ns/mnt
// in a guest) is refused: kata-init used to set the new container's rootfs up in it — "/" made
// a recursive slave, pivot_root and the old root detached — which moved the helper, control and
// every guest process into the container's rootfs.
//
// The old code pivots the mount namespace of the helper, so this file runs itself in a private
// mount namespace of its own (unshare -m) and the helper it starts inherits that one: a
// regression wrecks only this test, never the machine.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AgentHarness, Code, expectCode, skipReason } from './lib/agent-harness';

const FLAG = ['--allow-host-namespaces'];
const INNER = 'KATA_REVIEW8_PRIVATE_MNTNS';

if (process.env[INNER] !== '1') {
  const skip = skipReason() ?? (spawnSync('unshare', ['--version']).status === 0 ? undefined : 'unshare (util-linux) is not installed');
  if (skip) {
    t.plan(0, skip);
  } else {
    // The TAP stream is the inner run's (stdout inherited); its status is ours.
    const r = spawnSync('unshare', ['--mount', '--propagation', 'private', process.execPath, ...process.execArgv, __filename], {
      stdio: 'inherit',
      env: { ...process.env, [INNER]: '1' },
    });
    process.exitCode = r.status ?? 1;
  }
} else {
  const h = new AgentHarness('review8');
  t.before(async () => {
    await h.start('kata-review8', FLAG, FLAG);
  });
  t.teardown(() => h.dispose());

  t.test('joining the agent\'s own mount namespace by path is refused; the agent keeps its root', async (t) => {
    const marker = path.join(h.tmp, 'guest-root-marker');
    fs.writeFileSync(marker, 'guest');
    // kata-init's own link, and another process of the same mount namespace (this one, as the
    // guest's /proc/1 is in a guest): the namespace is compared, not the path.
    for (const nsPath of ['/proc/self/ns/mnt', `/proc/${process.pid}/ns/mnt`]) {
      const id = h.id('ownmnt');
      const spec = h.spec(['true'], { namespaces: [{ type: 'mount', path: nsPath }, { type: 'pid' }] });
      const err = await expectCode(t, h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec }), Code.INVALID_ARGUMENT, `own mount namespace as ${nsPath}`);
      t.ok((err?.message ?? '').includes(`${nsPath} is the agent's own mount namespace`), `the refusal names ${nsPath} and why`);
    }
    // The helper (and this process, in the same mount namespace) still has its root: a file of
    // the old root is there and a container still starts from its rootfs.
    t.equal(fs.readFileSync(marker, 'utf8'), 'guest', 'the old root is still ours');
    const r = await h.runToEnd(t, ['cat', '/etc/hostname'], {});
    t.equal(r.status, 0, `a container still runs afterwards: ${r.stderr}`);
  });
}
