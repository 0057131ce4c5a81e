// helper/ops/container.ts: an exec whose container's init vanishes while it starts (review: an
// ExecProcess racing RemoveContainer got INVALID_ARGUMENT "ns: opening ipc namespace
// /proc/N/ns/ipc: No such file or directory" from kata-init). The launcher stands in for
// kata-init: it fails the way kata-init does when the init's namespace files are gone.
//
// Own file: the backend reaps every child of this process (helper/ops/reaper.ts).
import t from 'tap';
import * as fs from 'node:fs';
import { MockLauncher } from '../../helper/mock/main';
import { ContainerBackend } from '../../helper/ops/container';
import type { ValidProcessPlan } from '../../helper/ops/plan';
import { ProcessRegistry, type StdioSet, type TrackedProcess } from '../../helper/ops/registry';
import { loadNative } from '../../shared/native';
import { Code, StatusError, type ContainerPlan } from '../../shared/protocol';
import type { BackendReply } from '../../helper/api';
import { minimalContainerPlan, processPlan } from '../lib/helper-fixtures';

const native = loadNative();

const plan = (args: string[]): ContainerPlan => minimalContainerPlan(args);

/** What kata-init exec reports when the init's namespace files are gone. */
class VanishingInitLauncher extends MockLauncher {
  mode: 'normal' | 'kill-init' | 'fail' = 'normal';

  override async exec(containerId: string, execId: string, init: TrackedProcess, p: ValidProcessPlan, stdio: StdioSet) {
    if (this.mode === 'normal') return super.exec(containerId, execId, init, p, stdio);
    stdio.closeChild();
    if (this.mode === 'kill-init') {
      native.kill(init.pid, 9);
      const deadline = Date.now() + 5000;
      while (fs.existsSync(`/proc/${init.pid}/ns/ipc`) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    }
    throw new StatusError(
      Code.INVALID_ARGUMENT,
      `exec ${execId} in container ${containerId}: ns: opening ipc namespace /proc/${init.pid}/ns/ipc: No such file or directory`,
    );
  }
}

const registry = new ProcessRegistry({ subreaper: false });
const launcher = new VanishingInitLauncher(registry);
const backend = new ContainerBackend(launcher, { registry });
t.teardown(() => backend.shutdown());

function closeReply(reply: BackendReply<unknown>): void {
  for (const f of reply.fds ?? []) native.close(f.fd);
  reply.onSent?.();
}

async function runContainer(id: string): Promise<void> {
  closeReply(await backend.createContainer({ containerId: id, plan: plan(['sleep', '1000']) }));
  await backend.startContainer({ containerId: id });
}

t.test('the init dies while the exec joins it: FAILED_PRECONDITION, not INVALID_ARGUMENT', async (t) => {
  await runContainer('vanish');
  launcher.mode = 'kill-init';
  await t.rejects(backend.execProcess({ containerId: 'vanish', execId: 'x', process: processPlan(['true']) }), {
    code: Code.FAILED_PRECONDITION,
    message: /^container vanish is not running \(its init has exited\): exec process x could not join it: .*opening ipc namespace/,
  });
  launcher.mode = 'normal';
  await backend.removeContainer({ containerId: 'vanish', timeoutMs: 5000 });
});

t.test('the container is being removed while the exec starts: FAILED_PRECONDITION', async (t) => {
  await runContainer('removing');
  launcher.mode = 'fail';
  const original = launcher.exec.bind(launcher);
  let removal: Promise<unknown> | undefined;
  launcher.exec = async (...args: Parameters<VanishingInitLauncher['exec']>) => {
    removal = backend.removeContainer({ containerId: 'removing', timeoutMs: 5000 });
    await new Promise((r) => setTimeout(r, 20));
    return original(...args);
  };
  await t.rejects(backend.execProcess({ containerId: 'removing', execId: 'x', process: processPlan(['true']) }), {
    code: Code.FAILED_PRECONDITION,
    message: /^container removing is being removed: exec process x could not join it/,
  });
  await removal;
  launcher.exec = original;
  launcher.mode = 'normal';
});

t.test('the same launcher failure with a live init is the spec\'s fault: INVALID_ARGUMENT passes through', async (t) => {
  await runContainer('alive');
  launcher.mode = 'fail';
  await t.rejects(backend.execProcess({ containerId: 'alive', execId: 'x', process: processPlan(['true']) }), { code: Code.INVALID_ARGUMENT });
  launcher.mode = 'normal';
  await backend.removeContainer({ containerId: 'alive', timeoutMs: 5000 });
});
