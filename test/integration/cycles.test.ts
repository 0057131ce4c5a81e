// 200 create/start/wait/remove cycles of busybox `true` on a real stand-alone agent
// (test/stress/cycles.ts; `npm run stress:cycles` runs 10,000): the helper's and the control
// plane's open fds, the helper's mounts and the cgroups named after the run's containers come
// back to their baseline. RSS is reported in a comment, not asserted. Needs root and
// KATA_TEST_ROOTFS (scripts/run-tests.js builds it).
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { startStandaloneAgent } from '../../scripts/lib/standalone';
import { AgentClient } from '../../control/ctl/client';
import { ociJsonToSpec } from '../../control/ctl/oci-json';
import { busyboxConfig } from '../../scripts/lib/standalone';
import { cgroupDirsWith, countResources, runCycles } from '../stress/cycles';

const rootfs = process.env.KATA_TEST_ROOTFS ?? '';
const skip =
  process.getuid?.() !== 0
    ? 'needs root (the helper creates namespaces, mounts and cgroups)'
    : !rootfs || !fs.existsSync(path.join(rootfs, 'bin', 'busybox'))
      ? 'KATA_TEST_ROOTFS is not a busybox rootfs (scripts/make-rootfs)'
      : undefined;

t.test('200 create/remove cycles leave no fds, mounts or cgroups behind', { skip }, async (t) => {
  const agent = await startStandaloneAgent({ logLevel: 'info', debug: false });
  t.teardown(() => agent.stop());
  const tag = `cyct${process.pid}`;
  const s = await runCycles(agent, rootfs, 200, tag);
  t.comment(JSON.stringify(s));
  t.equal(s.after.helperFds, s.before.helperFds, `helper fds back to ${s.before.helperFds}`);
  t.equal(s.after.controlFds, s.before.controlFds, `control fds back to ${s.before.controlFds}`);
  t.equal(s.after.helperMounts, s.before.helperMounts, `helper mounts back to ${s.before.helperMounts}`);
  t.equal(s.after.cgroups, 0, 'no cgroup of the run\'s containers is left');
  t.equal(s.before.cgroups, 0, 'the warm-up container\'s cgroup was removed too');

  // The cgroup count sees a live container (so the zeros above are not vacuous).
  const client = await AgentClient.connect(agent.address);
  t.teardown(() => client.close());
  const cid = `${tag}-live`;
  await client.call('CreateContainer', { container_id: cid, exec_id: cid, OCI: ociJsonToSpec(busyboxConfig(rootfs, ['sleep', '60']), rootfs) });
  t.ok(cgroupDirsWith(tag) > 0, `a live container's cgroup is counted (${cgroupDirsWith(tag)})`);
  t.comment(`with a live container: ${JSON.stringify(countResources(agent, tag, rootfs))}`);
  await client.call('RemoveContainer', { container_id: cid, timeout: 10 });
  t.equal(cgroupDirsWith(tag), 0, 'and is gone after RemoveContainer');
});
