// Adversarial review 6 (docs/ARCHITECTURE.md "Threat model", adversarial review): what a process
// of the container — or code the container controls, such as a startContainer hook (its path
// resolves in the container) — can reach. Each probe lists a process's open fds with
// `ls -l /proc/<the shell's pid>/fd` (the shell, not ls) and must see only 0-2, none of them an agent fd (no
// output spool memfd, helper socket, kata-init sync pipe or guest directory). A container with a
// user namespace cannot rewrite its own id maps nor map the guest's root in a nested one.
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AgentHarness, skipReason, userNsSkip } from './lib/agent-harness';
import { fdsOf, LIST_FDS } from './lib/fds';

/** What a probe may hold: its pipes, a terminal, /dev/null, or the file its listing goes to. */
const ALLOWED_FD = /^pipe:\[\d+\]$|^\/dev\/(null|pts\/\d+)$|\/dev\/(create-fds|shm\/start-fds)$/;


const skip = skipReason();
if (skip) {
  t.plan(0, skip);
} else {
  const h = new AgentHarness('review6');
  t.before(async () => {
    await h.start('review6');
  });
  t.teardown(() => h.dispose());
  t.afterEach(async (tt) => {
    if (!tt.passing()) tt.comment(h.logs());
  });

  t.test('createContainer and startContainer hooks hold only fds 0-2 (pipes), no agent fd', async (t) => {
    const id = h.id('hfd');
    h.removeOnTeardown(t, id);
    const spec = h.spec(['sh', '-c', 'cat /dev/create-fds; echo ===; cat /dev/shm/start-fds; echo ===; ' + LIST_FDS + '; true'], {
      hooks: {
        // the guest's shell (no script file of its own held open), output into the container's /dev
        CreateContainer: [{ Path: '/bin/sh', Args: ['sh', '-c', `exec > "$0/dev/create-fds"; ${LIST_FDS}; true`, h.rootfs] }],
        StartContainer: [{ Path: '/bin/sh', Args: ['sh', '-c', `exec > /dev/shm/start-fds; ${LIST_FDS}; true`] }],
      },
    });
    await h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec });
    await h.client.call('StartContainer', { container_id: id });
    const [out, err] = (await Promise.all([h.readAll('ReadStdout', id, id), h.readAll('ReadStderr', id, id)])).map(String);
    t.equal(await h.wait(id, id), 0, err);
    const [create = '', start = '', init = ''] = out.split('===\n');
    for (const [who, listing] of [['createContainer hook', create], ['startContainer hook', start], ['container init', init]] as const) {
      const fds = fdsOf(listing);
      t.same(Object.keys(fds).sort(), ['0', '1', '2'], `${who}: only fds 0-2 (${JSON.stringify(fds)})`);
      for (const [fd, target] of Object.entries(fds)) t.match(target, ALLOWED_FD, `${who}: fd ${fd} -> ${target} is no agent fd`);
    }
  });

  // A createContainer hook runs as root with the helper's capabilities in the guest's root (before
  // pivot_root) but inside the container's new pid namespace. One that leaves a process behind
  // (a daemon, a buggy `cmd &`) gave the container a neighbour with every capability whose
  // /proc/<pid>/root is the guest's "/": with CAP_SYS_PTRACE the container read guest files
  // through it. kata-init now kills whatever the createContainer hooks left in the new pid
  // namespace before it goes on.
  t.test('a process left by a createContainer hook does not survive into the container (no path to the guest root)', async (t) => {
    const marker = path.join(h.tmp, `guest-only-${process.pid}`);
    fs.writeFileSync(marker, 'guest');
    const id = h.id('hleft');
    h.removeOnTeardown(t, id);
    const spec = h.spec(
      // every other process of the container's pid namespace: its effective capabilities and whether
      // its root reaches the guest's marker (both need only CAP_SYS_PTRACE to read)
      ['sh', '-c', `for d in /proc/[0-9]*; do [ "$d" = /proc/1 ] || [ "$d" = /proc/$$ ] && continue; c=$(sed -n "s/^CapEff:\\t//p" $d/status 2>/dev/null); [ -n "$c" ] && echo "OTHER $d caps=$c"; [ -e "$d/root${marker}" ] && echo "GUEST-ROOT via $d"; done; echo checked`],
      {
        capabilities: ['CAP_SYS_PTRACE', 'CAP_KILL', 'CAP_DAC_OVERRIDE'],
        hooks: { CreateContainer: [{ Path: '/bin/sh', Args: ['sh', '-c', 'sleep 1000 </dev/null >/dev/null 2>&1 &'] }] },
      },
    );
    await h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec });
    await h.client.call('StartContainer', { container_id: id });
    const [out, err] = (await Promise.all([h.readAll('ReadStdout', id, id), h.readAll('ReadStderr', id, id)])).map(String);
    t.equal(await h.wait(id, id), 0, err);
    t.match(out, /checked/, 'the probe ran');
    t.notMatch(out, /GUEST-ROOT/, `the guest root is not reachable through a hook's leftover: ${out}`);
    t.notMatch(out, /OTHER/, `no other process in the container's pid namespace (the hook's leftover had the helper's capabilities): ${out}`);
  });

  // A startContainer hook runs a binary of the container's rootfs (an image can replace it) with
  // the container's credentials. With noNewPrivileges the container's seccomp filter was loaded
  // only after the hooks, right before the program's execve: the hook — and anything it left
  // running — had no filter at all. runc loads it before the startContainer hooks; so do we now.
  for (const noNewPrivileges of [true, false]) {
    t.test(`a startContainer hook runs under the container's seccomp filter (noNewPrivileges ${noNewPrivileges})`, async (t) => {
      const id = h.id('hsec');
      h.removeOnTeardown(t, id);
      const spec = h.spec(['sh', '-c', 'cat /dev/shm/hook-seccomp'], {
        noNewPrivileges,
        seccomp: { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['mkdir', 'mkdirat'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 }] },
        hooks: {
          StartContainer: [{ Path: '/bin/sh', Args: ['sh', '-c', 'exec > /dev/shm/hook-seccomp 2>&1; grep -E "^(Seccomp|NoNewPrivs):" /proc/self/status; mkdir /dev/shm/made-by-hook && echo MKDIR-ALLOWED; true'] }],
        },
      });
      await h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec });
      await h.client.call('StartContainer', { container_id: id });
      const [out, err] = (await Promise.all([h.readAll('ReadStdout', id, id), h.readAll('ReadStderr', id, id)])).map(String);
      t.equal(await h.wait(id, id), 0, err);
      t.match(out, /^Seccomp:\t2$/m, `the hook runs in seccomp filter mode: ${out}`);
      t.notMatch(out, /MKDIR-ALLOWED/, 'a syscall the profile denies is denied to the hook');
    });
  }

  const nsSkip = userNsSkip();
  t.test('a user-namespace container: fds 0-2 in init and exec; its id maps cannot be rewritten; no nested map of the guest root', { skip: nsSkip }, async (t) => {
    const spec = h.spec(['sh', '-c', `${LIST_FDS}; echo ===; echo "0 0 1" > /proc/self/uid_map && echo MAP-REWRITTEN; echo "0 0 1" > /proc/self/gid_map && echo GMAP-REWRITTEN; cat /proc/self/uid_map; sleep 100`], {
      namespaces: [{ type: 'mount' }, { type: 'uts' }, { type: 'ipc' }, { type: 'network' }, { type: 'user' }],
    });
    spec.Linux!.UIDMappings = [{ ContainerID: 0, HostID: 100000, Size: 65536 }];
    spec.Linux!.GIDMappings = [{ ContainerID: 0, HostID: 100000, Size: 65536 }];
    const id = h.id('ufd');
    h.removeOnTeardown(t, id);
    await h.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec });
    await h.client.call('StartContainer', { container_id: id });
    // a nested user namespace (container root has CAP_SETUID in its own) mapping host uid 0
    const nested = await h.execCollect(id, ['sh', '-c', 'unshare -U sh -c "echo 0 0 1 > /proc/self/uid_map && echo NESTED-ROOT; cat /proc/self/uid_map; true" 2>&1; ' + LIST_FDS + '; true']);
    t.notMatch(nested.stdout.toString(), /NESTED-ROOT/, `a nested user namespace cannot map the guest's uid 0: ${nested.stdout}`);
    t.match(nested.stdout.toString(), /write error/, "the write into the nested uid_map was refused (unshare ran)");
    const execFds = fdsOf(nested.stdout.toString());
    t.same(Object.keys(execFds).sort(), ['0', '1', '2'], `exec: only fds 0-2 (${JSON.stringify(execFds)})`);
    for (const [fd, target] of Object.entries(execFds)) t.match(target, ALLOWED_FD, `exec: fd ${fd} -> ${target}`);
    await h.client.call('SignalProcess', { container_id: id, exec_id: id, signal: 9 });
    const [out] = (await Promise.all([h.readAll('ReadStdout', id, id), h.readAll('ReadStderr', id, id)])).map(String);
    await h.wait(id, id);
    const [listing = '', rest = ''] = out.split('===\n');
    const fds = fdsOf(listing);
    t.same(Object.keys(fds).sort(), ['0', '1', '2'], `userns init: only fds 0-2 (${JSON.stringify(fds)})`);
    t.notMatch(rest, /MAP-REWRITTEN|GMAP-REWRITTEN/, 'the container cannot rewrite its uid_map/gid_map');
    t.match(rest.trim().split(/\s+/).join(' '), /^0 100000 65536/, `the map is still the helper's: ${rest}`);
  });
}
