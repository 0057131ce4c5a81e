/**
 * The mock helper backend: the same container model, validation, bookkeeping, exit events and
 * stdio fds as the real backend (helper/ops/container.ts), but processes run directly on the
 * host as the calling user — no namespaces, no rootfs, no mounts, no uid/gid change, no rlimits.
 * It lets the whole control plane be tested without privileges.
 *
 * What differs from the real helper:
 * - Plans are validated like the real ones, but host-side path checks are off: the rootfs, bind
 *   sources and namespace paths only need to be well-formed absolute paths.
 * - A container's init is `/bin/sh` holding the start pipe: createContainer starts it (so it has
 *   a real pid, can be signalled and killed before start), startContainer lets it `exec` the
 *   program. args[0] is resolved through the plan's PATH *on the host*; cwd is the plan's cwd if
 *   that directory exists on the host, else os.tmpdir(). The program's argv[0] is the resolved
 *   path. A terminal is a real pty from the helper's devpts (there is no container devpts
 *   here); the process gets a new session but no controlling tty.
 * - createSandbox returns no namespaces; destroySandbox only removes the containers.
 * - A seccomp profile is validated but neither compiled nor applied.
 * - Storages (./storage.ts): validated, reference-counted and their directories made under the
 *   Kata directory (`kataDir`, default <tmpdir>/kata-containers-mock), but mounts are only
 *   recorded; modprobe is recorded.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Code, StatusError, type NamespacePlan } from '../../shared/protocol';
import { loadNative, type NativeAddon } from '../../shared/native';
import { silentLogger, type Logger } from '../../shared/log';
import { composeBackend, type HelperBackend } from '../api';
import { NetworkBackend } from '../ops/network';
import { MockNetlink } from './network';
import { createMockCgroups, type MockCgroups } from './cgroup';
import { ContainerBackend, type JoinCgroup, type Launcher, type LaunchedInit, type LaunchedProcess } from '../ops/container';
import type { GuestPaths } from '../ops/guest';
import { createMockGuest, type MockGuest } from './guest';
import { StartGate, closeQuietly } from '../ops/io';
import { planPath, type SeccompFilter, type ValidContainerPlan, type ValidProcessPlan } from '../ops/plan';
import { ProcessRegistry, type StdioSet, type TrackedProcess } from '../ops/registry';
import { createMockStorage } from './storage';

/** The shell that stands in for kata-init. */
const SHELL = '/bin/sh';

/** Init: cd, wait for the start byte on fd 3 (EOF alone = removed before start: exit 0), then exec. */
const INIT_SCRIPT = 'cd -- "$1" || exit 127; shift; IFS= read -r b <&3; [ -n "$b" ] || exit 0; exec 3<&-; exec "$@"';
/** Exec: cd, then exec. */
const EXEC_SCRIPT = 'cd -- "$1" || exit 127; shift; exec "$@"';

function isExecutableFile(p: string): boolean {
  try {
    if (!fs.statSync(p).isFile()) return false;
    fs.accessSync(p, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Resolve `arg0` as execvp would with PATH `searchPath` (an empty entry = `cwd`); a name with a
 * "/" is taken relative to `cwd`. Returns the absolute path or undefined.
 */
export function resolveExecutable(arg0: string, searchPath: string, cwd: string): string | undefined {
  if (arg0.includes('/')) {
    const p = path.resolve(cwd, arg0);
    return isExecutableFile(p) ? p : undefined;
  }
  for (const dir of searchPath.split(':')) {
    const p = path.resolve(cwd, dir === '' ? '.' : dir, arg0);
    if (isExecutableFile(p)) return p;
  }
  return undefined;
}

function hostCwd(cwd: string): string {
  try {
    if (fs.statSync(cwd).isDirectory()) return cwd;
  } catch {
    // fall through
  }
  return os.tmpdir();
}

/** The mock's {@link Launcher}: plain host processes. */
export class MockLauncher implements Launcher {
  readonly hostChecks = false;
  private readonly native: NativeAddon;

  constructor(private readonly registry: ProcessRegistry) {
    this.native = loadNative();
  }

  async createInit(containerId: string, plan: ValidContainerPlan, stdio: StdioSet, join?: JoinCgroup): Promise<LaunchedInit> {
    const proc = plan.process;
    const cwd = hostCwd(proc.cwd);
    const file = this.resolve(proc, cwd, `create container ${containerId}`);
    if (stdio.terminal) stdio.openHelperPty(); // no container devpts here
    const [startR, startW] = this.native.pipe();
    let spawned;
    const sinceSeq = this.registry.seq;
    try {
      spawned = this.native.spawn({
        file: SHELL,
        argv: ['kata-mock-init', '-c', INIT_SCRIPT, 'kata-mock-init', cwd, file, ...proc.args.slice(1)],
        envp: proc.env,
        fds: [...stdio.child, startR],
        setsid: proc.terminal,
      });
    } catch (err) {
      closeQuietly(startW);
      throw err;
    } finally {
      closeQuietly(startR);
      stdio.closeChild();
    }
    try {
      join?.(spawned.pid);
    } catch (err) {
      closeQuietly(startW); // the parked mock init reads EOF and exits
      throw err;
    }
    const gate = new StartGate(startW, containerId, this.native);
    return {
      pid: spawned.pid,
      pidfd: spawned.pidfd,
      sinceSeq,
      start: async () => gate.release(),
      abort: () => gate.close(),
    };
  }

  async exec(
    containerId: string,
    execId: string,
    _init: TrackedProcess,
    plan: ValidProcessPlan,
    stdio: StdioSet,
    _seccomp?: SeccompFilter,
    join?: JoinCgroup,
  ): Promise<LaunchedProcess> {
    const cwd = hostCwd(plan.cwd);
    const file = this.resolve(plan, cwd, `exec ${execId} in container ${containerId}`);
    if (stdio.terminal) stdio.openHelperPty(); // no container devpts here
    const sinceSeq = this.registry.seq;
    try {
      const spawned = this.native.spawn({
        file: SHELL,
        argv: ['kata-mock-exec', '-c', EXEC_SCRIPT, 'kata-mock-exec', cwd, file, ...plan.args.slice(1)],
        envp: plan.env,
        fds: [...stdio.child],
        setsid: plan.terminal,
      });
      join?.(spawned.pid); // the mock does not enforce: recording the pid after the start is enough
      return { pid: spawned.pid, pidfd: spawned.pidfd, sinceSeq };
    } finally {
      stdio.closeChild();
    }
  }

  async createSandbox(): Promise<NamespacePlan[]> {
    return [];
  }

  async destroySandbox(): Promise<void> {
    // nothing to release
  }

  private resolve(plan: ValidProcessPlan, cwd: string, what: string): string {
    const arg0 = plan.args[0];
    const file = resolveExecutable(arg0, planPath(plan.env), cwd);
    if (file === undefined) {
      throw new StatusError(
        Code.INVALID_ARGUMENT,
        arg0.includes('/') ? `${what}: executable "${arg0}" not found` : `${what}: executable "${arg0}" not found in $PATH`,
      );
    }
    return file;
  }
}

/**
 * A mock backend. It reaps children of the calling process (see helper/ops/reaper.ts: do not rely
 * on node:child_process exit events while it runs). Stop it with `shutdown()`.
 */
export function createMockBackend(opts: { logger?: Logger; kataDir?: string; cgroups?: MockCgroups; allowHostNamespaces?: boolean } = {}): ContainerBackend {
  const logger = opts.logger ?? silentLogger();
  const registry = new ProcessRegistry({ logger, subreaper: false });
  // Never the real /run/kata-containers by default: the mock makes real directories there.
  const { storage } = createMockStorage({ kataDir: opts.kataDir ?? path.join(os.tmpdir(), 'kata-containers-mock'), logger });
  // A fresh temp cgroup tree unless given (the caller then owns its cleanup).
  const cgroups = opts.cgroups ?? createMockCgroups({ logger });
  return new ContainerBackend(new MockLauncher(registry), { logger, registry, storage, cgroups: cgroups.manager, allowHostNamespaces: opts.allowHostNamespaces === true });
}

/** A complete mock backend: the container model, the mock guest family, and both composed. */
export interface MockBackendParts {
  backend: HelperBackend;
  containers: ContainerBackend;
  guest: MockGuest;
  /** The in-memory network namespace of the network ops. */
  netlink: MockNetlink;
}

/**
 * {@link createMockBackend} plus the mock guest ops (helper/mock/guest.ts) and the network ops
 * over an in-memory kernel ({@link MockNetlink}, given or fresh), composed into one
 * HelperBackend. Its shutdown also removes the guest family's temp trees.
 */
export function createMockHelperBackend(
  opts: { logger?: Logger; guest?: GuestPaths; kataDir?: string; netlink?: MockNetlink; allowHostNamespaces?: boolean } = {},
): MockBackendParts {
  const containers = createMockBackend(opts);
  const guest = createMockGuest(opts.guest);
  const netlink = opts.netlink ?? new MockNetlink();
  const composed = composeBackend(containers, guest.family, new NetworkBackend(netlink, { logger: opts.logger, waitNic: (p) => guest.devices.netPci(p) }));
  const backend: HelperBackend = {
    ...composed,
    shutdown: async () => {
      await composed.shutdown();
      guest.cleanup();
    },
  };
  return { backend, containers, guest, netlink };
}
