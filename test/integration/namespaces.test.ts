// Namespaces of a container through the real agent: a new network namespace (only loopback),
// joining a named network namespace by path (/run/netns, as `ip netns add` pins it), and the
// helper refusing a namespace path outside the sandbox (the guest's own /proc/1/ns/*).
import t, { type Test } from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { AgentHarness, Code, expectCode, skipReason } from './lib/agent-harness';

const BASE_NS = [{ type: 'mount' }, { type: 'uts' }, { type: 'ipc' }];
const skip = skipReason() ?? (spawnSync('ip', ['-V']).status === 0 ? undefined : 'iproute2 (ip) is not installed');
if (skip) {
  t.plan(0, skip);
} else {
  const h = new AgentHarness('namespaces');
  t.before(async () => {
    await h.start('kata-ns');
  });
  t.teardown(() => h.dispose());

  /** Run `args` in a new container with `namespaces`; its stdout and exit status. */
  const runCollect = async (tt: Test, args: string[], namespaces: { type: string; path?: string }[]) => {
    const cid = await h.run(tt, args, { namespaces });
    const [stdout, stderr] = await Promise.all([h.readAll('ReadStdout', cid, cid), h.readAll('ReadStderr', cid, cid)]);
    return { stdout: stdout.toString(), stderr: stderr.toString(), status: await h.wait(cid, cid) };
  };

  t.test('a new network namespace has only loopback', async (t) => {
    const r = await runCollect(t, ['sh', '-c', 'ls /sys/class/net'], [...BASE_NS, { type: 'network' }]);
    t.equal(r.status, 0, r.stderr);
    t.same(r.stdout.split(/\s+/).filter(Boolean), ['lo'], 'only lo in a new network namespace');
  });

  t.test('joining a named network namespace by path', async (t) => {
    const name = `kata-test-${process.pid}`;
    execFileSync('ip', ['netns', 'add', name]);
    t.teardown(() => {
      spawnSync('ip', ['netns', 'delete', name]);
    });
    execFileSync('ip', ['netns', 'exec', name, 'ip', 'link', 'set', 'lo', 'mtu', '12345']);
    const inode = fs.statSync(`/run/netns/${name}`).ino;
    const r = await runCollect(t, ['sh', '-c', 'readlink /proc/self/ns/net; cat /sys/class/net/lo/mtu'], [
      ...BASE_NS,
      { type: 'network', path: `/run/netns/${name}` },
    ]);
    t.equal(r.status, 0, r.stderr);
    const [link, mtu] = r.stdout.split(/\s+/).filter(Boolean);
    t.equal(link, `net:[${inode}]`, 'the container is in the named namespace');
    t.equal(mtu, '12345', "the namespace's loopback (mtu set from outside) is the container's");
  });

  t.test('a namespace path outside the sandbox is refused', async (t) => {
    for (const [type, p] of [
      ['mount', '/proc/1/ns/mnt'],
      ['network', '/proc/1/ns/net'],
      ['network', '/etc/passwd'],
      ['network', '/run/netns/../../proc/1/ns/net'],
    ] as const) {
      const cid = h.id('nsbad');
      const namespaces = [...BASE_NS.filter((n) => n.type !== type), { type, path: p }];
      await expectCode(
        t,
        h.client.call('CreateContainer', { container_id: cid, exec_id: cid, OCI: h.spec(['true'], { namespaces }) }),
        Code.INVALID_ARGUMENT,
        `${type} namespace path ${p}`,
      );
    }
    t.equal((await h.client.callObject('Check', { service: '' })).status, 'SERVING', 'the agent still serves');
  });
}
