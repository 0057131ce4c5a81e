/**
 * Starting processes with kata-init (helper/native/KATA-INIT.md): container inits (`create`),
 * exec processes (`exec`) and the sandbox's persistent namespaces (`sandbox`).
 *
 * kata-init gets fds 0-2 (stdio), 3 (plan, read end), 4 (sync, write end), for `create`
 * 5 (start, read end) and, with a terminal, 6 (one end of a SOCK_SEQPACKET pair). The helper
 * writes the plan and closes its end, then reads sync lines: `pid N`, `ready`, `error ...`; EOF
 * after them means the final execve succeeded.
 *
 * A terminal is the container's own: kata-init opens it in the container's devpts instance
 * (step 7b of KATA-INIT.md, before `ready` in create mode and before the fork in exec mode) and
 * sends the master back on fd 6; the helper takes it once one of those sync points has passed,
 * so the packet is already queued, and keeps it as the process's "pty" stdio end.
 *
 * A container's seccomp profile is compiled here once (helper/ops/seccomp.ts, unknown syscall
 * names logged) and sent to kata-init for the init and for every exec process of the container.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Code, StatusError, type IdMappingsPlan, type NamespacePlan } from '../../shared/protocol';
import { idMapText } from '../../shared/idmap';
import { isErrno, kataInitPath, loadNative, type NativeAddon } from '../../shared/native';
import { silentLogger, type Logger } from '../../shared/log';
import type { BeforePivot, JoinCgroup, Launcher, LaunchedInit, LaunchedProcess } from './container';
import { LineReader, StartGate, closeQuietly, writeAll, type LineItem } from './io';
import { compileSeccomp } from './seccomp';
import {
  serializeCreatePlan,
  serializeExecPlan,
  serializeSandboxPlan,
  type KernelNamespace,
  type SeccompFilter,
  type ValidContainerPlan,
  type ValidNamespace,
  type ValidProcessPlan,
} from './plan';
import type { ProcessRegistry, StdioSet, TrackedProcess } from './registry';

/** Default directory of the sandbox's namespace files. */
export const DEFAULT_SANDBOX_NS_DIR = '/run/kata-agent/sandbox-ns';

/** MNT_DETACH for umount2(2). */
const MNT_DETACH = 2;

/** Namespaces an exec process joins, in the order kata-init is given them. */
const EXEC_NAMESPACES: KernelNamespace[] = ['ipc', 'uts', 'net', 'pid', 'cgroup', 'mnt', 'user'];

/** kata-init error stages that mean a helper bug or a system failure rather than a bad spec. */
const INTERNAL_STAGES = new Set(['usage', 'fd', 'plan', 'fork', 'signal', 'start', 'nsfile', 'cgroup']);

/** CAP_SYS_RESOURCE (linux/capability.h). */
const CAP_SYS_RESOURCE = 24;

/** Whether this process has capability `cap` in its effective set (/proc/self/status CapEff). */
function hasCapability(cap: number): boolean {
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    return m !== null && (BigInt(`0x${m[1]}`) & (1n << BigInt(cap))) !== 0n;
  } catch {
    return true;
  }
}

/**
 * Map a kata-init `error` line ("<stage>: <detail>") to a StatusError with kata-init's text
 * verbatim. Most stages fail because of what the spec asks (a missing executable or cwd, a mount
 * that cannot be made, a uid without permission...): INVALID_ARGUMENT; a failing OCI hook
 * (stage `hook`) is FAILED_PRECONDITION. The stages in
 * INTERNAL_STAGES (plan parsing, fds, fork, ...) are INTERNAL.
 */
export function kataInitError(text: string, what: string): StatusError {
  const stage = /^([a-z]+):/.exec(text)?.[1] ?? '';
  const oom = /^oom: writing (-[0-9]+) to \/proc\/self\/oom_score_adj: (Permission denied|Operation not permitted)/.exec(text);
  if (oom) {
    // Lowering oom_score_adj needs CAP_SYS_RESOURCE (proc(5)); name the field, value and capability.
    const why = hasCapability(CAP_SYS_RESOURCE)
      ? 'needs CAP_SYS_RESOURCE'
      : "needs CAP_SYS_RESOURCE, which the agent's helper lacks (not in its effective set, e.g. dropped from the bounding set)";
    return new StatusError(Code.FAILED_PRECONDITION, `${what}: process.oomScoreAdj (oom_score_adj) ${oom[1]} cannot be applied: a negative oom_score_adj ${why} (kata-init: ${text})`);
  }
  // a failing OCI createContainer/startContainer hook, as a failing prestart hook
  const code = INTERNAL_STAGES.has(stage) ? Code.INTERNAL : stage === 'hook' ? Code.FAILED_PRECONDITION : Code.INVALID_ARGUMENT;
  return new StatusError(code, `${what}: ${text}`);
}

interface KataInitRun {
  spawnPid: number;
  spawnPidfd: number;
  sinceSeq: number;
  sync: LineReader;
  /** Write end of the start pipe (create mode), or -1. */
  startFd: number;
  /** The helper's end of the pty socket (terminal), or -1. */
  ptyFd: number;
  /** Resolves when the plan has been written (errors are logged: the sync pipe tells the story). */
  planWritten: Promise<void>;
}

export interface KataInitLauncherOptions {
  registry: ProcessRegistry;
  logger?: Logger;
  /** kata-init executable (default: kataInitPath()). */
  kataInit?: string;
  /** Directory for the sandbox namespace files (default /run/kata-agent/sandbox-ns). */
  sandboxNsDir?: string;
}

/** The real {@link Launcher}: everything between fork and exec is done by kata-init. */
export class KataInitLauncher implements Launcher {
  readonly hostChecks = true;
  private readonly native: NativeAddon;
  private readonly registry: ProcessRegistry;
  private readonly log: Logger;
  private readonly kataInit: string;
  private readonly sandboxNsDir: string;
  private sandboxFiles: string[] = [];
  /** See {@link sealedKataInit}: undefined until first use, -1 when it could not be made. */
  private sealedFd: number | undefined;
  /** See {@link ownNamespace}. */
  private readonly ownNamespaces = new Map<KernelNamespace, string>();

  constructor(opts: KataInitLauncherOptions) {
    this.native = loadNative();
    this.registry = opts.registry;
    this.log = (opts.logger ?? silentLogger()).child({ component: 'kata-init' });
    this.kataInit = opts.kataInit ?? kataInitPath();
    this.sandboxNsDir = opts.sandboxNsDir ?? DEFAULT_SANDBOX_NS_DIR;
  }

  readonly hooksBeforePivot = true;

  async createInit(containerId: string, plan: ValidContainerPlan, stdio: StdioSet, join?: JoinCgroup, beforePivot?: BeforePivot): Promise<LaunchedInit> {
    let seccomp: SeccompFilter | undefined;
    if (plan.seccomp) {
      const compiled = compileSeccomp(this.native, plan.seccomp);
      if (compiled.skipped.length > 0) {
        // Field case B23: an unknown name must neither fail the container nor the agent.
        this.log.warn({ containerId, skipped: compiled.skipped }, 'seccomp: syscall names unknown to libseccomp skipped');
      }
      seccomp = { bpf: compiled.bpf, flags: compiled.flags };
      this.log.debug({ containerId, instructions: compiled.bpf.length / 8, flags: compiled.flags }, 'seccomp filter compiled');
    }
    const bytes = serializeCreatePlan(plan, seccomp, join?.v1);
    const run = this.spawn('create', bytes, stdio.child, true, stdio.terminal, join);
    stdio.closeChild();
    const what = `create container ${containerId}`;
    let pid = -1;
    try {
      if (plan.idMappings) await this.mapUserNamespace(run, plan.idMappings, what);
      pid = await this.expectPid(run, what);
      if (plan.runtimeHooksBeforePivot) {
        // kata-init waits before pivot_root (KATA-INIT.md `runtimehooks`) for the prestart and
        // createRuntime hooks; a failing hook abandons it (below)
        await this.expectLine(run, 'hooks', what);
        if (beforePivot) await beforePivot(pid);
        this.native.write(run.startFd, Buffer.from([1]), 0, 1);
      }
      await this.expectLine(run, 'ready', what);
      this.takePtyMaster(run, stdio, what);
    } catch (err) {
      this.abandon(run, pid);
      throw err;
    }
    const pidfd = this.claimPidfd(run, pid);
    const gate = new StartGate(run.startFd, containerId, this.native);
    const log = this.log.child({ containerId, pid });
    return {
      pid,
      pidfd,
      sinceSeq: run.sinceSeq,
      seccomp,
      start: async () => {
        try {
          gate.release();
        } catch (err) {
          run.sync.close();
          throw err;
        }
        const item = await run.sync.next();
        run.sync.close();
        if (item.kind === 'eof') return;
        if (item.kind === 'line' && item.text.startsWith('error ')) {
          log.warn({ error: item.text }, 'container exec failed');
          throw kataInitError(item.text.slice(6), `start container ${containerId}`);
        }
        throw this.protocolError(item, `start container ${containerId}`);
      },
      abort: () => {
        gate.close();
        run.sync.close();
      },
    };
  }

  async exec(
    containerId: string,
    execId: string,
    init: TrackedProcess,
    plan: ValidProcessPlan,
    stdio: StdioSet,
    seccomp?: SeccompFilter,
    join?: JoinCgroup,
  ): Promise<LaunchedProcess> {
    const namespaces = this.namespacesOf(init.pid);
    // A container sharing our mount namespace (host-namespace mode) has only a chroot of its
    // own: the exec process goes into the init's root instead of a mount namespace.
    const root = namespaces.some((n) => n.type === 'mnt') ? undefined : `/proc/${init.pid}/root`;
    const bytes = serializeExecPlan(namespaces, plan, seccomp, join?.v1, root);
    const run = this.spawn('exec', bytes, stdio.child, false, stdio.terminal, join);
    stdio.closeChild();
    const what = `exec ${execId} in container ${containerId}`;
    let pid = -1;
    try {
      pid = await this.expectPid(run, what);
      const item = await run.sync.next();
      if (item.kind === 'line' && item.text.startsWith('error ')) throw kataInitError(item.text.slice(6), what);
      if (item.kind !== 'eof') throw this.protocolError(item, what);
      this.takePtyMaster(run, stdio, what);
    } catch (err) {
      this.abandon(run, pid);
      throw err;
    } finally {
      run.sync.close();
    }
    return { pid, pidfd: this.claimPidfd(run, pid), sinceSeq: run.sinceSeq };
  }

  /**
   * `kata-init sandbox`: new ipc and uts namespaces kept alive by bind mounts onto
   * <sandboxNsDir>/{ipc,uts} (Kata keeps both per sandbox, sandbox.rs setup_shared_namespaces).
   */
  async createSandbox(sandboxId: string, hostname: string): Promise<NamespacePlan[]> {
    fs.mkdirSync(this.sandboxNsDir, { recursive: true, mode: 0o755 });
    const files = (['ipc', 'uts'] as const).map((type) => ({ type, path: path.join(this.sandboxNsDir, type) }));
    for (const f of files) {
      this.releaseNsFile(f.path);
      fs.writeFileSync(f.path, '', { mode: 0o644 });
    }
    const what = `create sandbox ${JSON.stringify(sandboxId)}`;
    const devNull = fs.openSync('/dev/null', 'r+');
    let run: KataInitRun;
    try {
      run = this.spawn('sandbox', serializeSandboxPlan(hostname, files), [devNull, devNull, devNull], false);
    } finally {
      fs.closeSync(devNull);
    }
    const exited = new Promise<number | null>((resolve) => {
      this.registry.reaper.watch(run.spawnPid, run.sinceSeq, (child) => resolve(child.signal !== null ? 128 + child.signal : child.exitCode));
    });
    closeQuietly(run.spawnPidfd);
    try {
      await this.expectLine(run, 'ready', what);
      const end = await run.sync.next();
      if (end.kind !== 'eof') throw this.protocolError(end, what);
      const status = await exited;
      if (status !== 0) throw new StatusError(Code.INTERNAL, `${what}: kata-init exited with status ${status}`);
    } catch (err) {
      for (const f of files) this.releaseNsFile(f.path);
      throw err;
    } finally {
      run.sync.close();
    }
    this.sandboxFiles = files.map((f) => f.path);
    return files.map((f) => ({ type: f.type, path: f.path }));
  }

  async destroySandbox(): Promise<void> {
    for (const f of this.sandboxFiles) this.releaseNsFile(f);
    this.sandboxFiles = [];
  }

  // -------------------------------------------------------------------------------------------

  /** Detach a namespace bind mount (if any) and remove the file (if any). */
  private releaseNsFile(file: string): void {
    try {
      this.native.umount2(file, MNT_DETACH);
    } catch (err) {
      if (!isErrno(err, 'EINVAL') && !isErrno(err, 'ENOENT')) this.log.warn({ err, file }, 'umount of namespace file failed');
    }
    try {
      fs.unlinkSync(file);
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) this.log.warn({ err, file }, 'cannot remove namespace file');
    }
  }

  /**
   * The helper's own namespace of `type` (the /proc/self/ns link text, '' when the kernel lacks
   * it), read once: the helper never changes namespaces (setns happens in kata-init).
   */
  private ownNamespace(type: KernelNamespace): string {
    let ours = this.ownNamespaces.get(type);
    if (ours === undefined) {
      ours = '';
      try {
        ours = fs.readlinkSync(`/proc/self/ns/${type}`);
      } catch {
        // not supported here: join theirs
      }
      this.ownNamespaces.set(type, ours);
    }
    return ours;
  }

  /** The init's namespaces that differ from the helper's (joining one's own is pointless or, for some types, refused). */
  private namespacesOf(initPid: number): ValidNamespace[] {
    const list: ValidNamespace[] = [];
    for (const type of EXEC_NAMESPACES) {
      const p = `/proc/${initPid}/ns/${type}`;
      let theirs: string;
      try {
        theirs = fs.readlinkSync(p);
      } catch (err) {
        if (isErrno(err, 'ENOENT')) {
          if (type === 'cgroup') continue; // kernel without cgroup namespaces
          throw new StatusError(Code.FAILED_PRECONDITION, `container init (pid ${initPid}) is gone`);
        }
        throw err;
      }
      if (theirs !== this.ownNamespace(type)) list.push({ type, path: p });
    }
    return list;
  }

  /**
   * Spawn kata-init `mode` and send it `plan`. With `join`, kata-init is born in its cgroup2
   * cgroup (spawn `cgroupFd`) and moves itself into the v1 ones (the plan's `cgroupjoin`
   * records, which the caller put there) before anything else, so it runs every later step, its
   * fork and the container program, inside them (see {@link JoinCgroup} for why not
   * cgroup.procs). Where the kernel cannot clone into a cgroup, the cgroup2 join is done through
   * cgroup.procs between the spawn and the plan write (kata-init reads its whole plan first).
   * When that throws, kata-init is killed and the error rethrown.
   */
  private spawn(
    mode: 'create' | 'exec' | 'sandbox',
    plan: Buffer,
    stdio: number[],
    withStart: boolean,
    withPty = false,
    join?: JoinCgroup,
  ): KataInitRun {
    const opened: number[] = [];
    try {
      const [planR, planW] = this.native.pipe();
      opened.push(planR, planW);
      const [syncR, syncW] = this.native.pipe();
      opened.push(syncR, syncW);
      let startR = -1;
      let startW = -1;
      if (withStart) {
        [startR, startW] = this.native.pipe();
        opened.push(startR, startW);
      }
      let ptyR = -1;
      let ptyW = -1;
      if (withPty) {
        [ptyR, ptyW] = this.native.seqpacketPair();
        opened.push(ptyR, ptyW);
      }
      const fds = [stdio[0], stdio[1], stdio[2], planR, syncW, startR];
      if (withPty) fds.push(ptyW);
      const sinceSeq = this.registry.seq;
      // setsid: kata-init never shares the helper's process group or session, so nothing in a
      // container can signal the helper with kill(0, ...) (kata-init's own child, the
      // container process, makes a session of its own too).
      const cgroupFd = join?.v2 !== undefined ? this.openCgroupDir(join.v2) : -1;
      let child: ReturnType<NativeAddon['spawn']>;
      try {
        const execFd = this.sealedKataInit();
        child = this.native.spawn({
          file: this.kataInit,
          argv: ['kata-init', mode],
          envp: [],
          fds,
          setsid: true,
          ...(cgroupFd >= 0 ? { cgroupFd } : {}),
          ...(execFd >= 0 ? { execFd } : {}),
        });
      } finally {
        closeQuietly(cgroupFd);
      }
      closeQuietly(planR);
      closeQuietly(syncW);
      closeQuietly(startR);
      closeQuietly(ptyW);
      if (join?.v2 !== undefined && child.intoCgroup !== true) {
        try {
          join(child.pid, 'v2');
        } catch (err) {
          try {
            this.native.pidfdSendSignal(child.pidfd, 9);
          } catch {
            // already gone
          }
          closeQuietly(child.pidfd);
          for (const fd of [planW, syncR, startW, ptyR]) closeQuietly(fd);
          opened.length = 0; // every fd is closed: the outer catch must not close them again
          this.registry.reaper.discard(child.pid, sinceSeq);
          throw err;
        }
      }
      const sync = new LineReader(syncR);
      const planWritten = writeAll(planW, plan)
        .catch((err: unknown) => {
          this.log.debug({ err, mode }, 'writing the plan failed (kata-init exited early)');
        })
        .finally(() => closeQuietly(planW));
      return { spawnPid: child.pid, spawnPidfd: child.pidfd, sinceSeq, sync, startFd: startW, ptyFd: ptyR, planWritten };
    } catch (err) {
      for (const fd of opened) closeQuietly(fd);
      if (isErrno(err, 'ENOENT') || isErrno(err, 'EACCES')) {
        throw new StatusError(Code.INTERNAL, `cannot run kata-init at ${this.kataInit}: ${(err as Error).message}`);
      }
      throw err;
    }
  }

  /**
   * The sealed memfd copy of kata-init that every spawn runs (made on first use, kept for the
   * helper's life), or -1 when it cannot be made (then kata-init is spawned from its file and
   * makes its own sealed copy, KATA-INIT.md step 0). Either way the container never reaches the
   * file through /proc/<pid>/exe (runc CVE-2019-5736); one copy instead of one per spawn saves
   * a memfd copy, an execve and a second start-up of kata-init per container and exec.
   */
  private sealedKataInit(): number {
    if (this.sealedFd === undefined) {
      try {
        this.sealedFd = this.native.sealedCopy(this.kataInit);
      } catch (err) {
        this.log.warn({ err, kataInit: this.kataInit }, 'no sealed copy of kata-init: each spawn makes its own');
        this.sealedFd = -1;
      }
    }
    return this.sealedFd;
  }

  /** A directory fd (O_RDONLY|O_DIRECTORY|O_CLOEXEC) of cgroup `dir`; INTERNAL when it cannot be opened. */
  private openCgroupDir(dir: string): number {
    try {
      return fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    } catch (err) {
      throw new StatusError(Code.INTERNAL, `cannot open cgroup ${dir}: ${(err as Error).message}`);
    }
  }

  /**
   * Terminal only: the pty master kata-init sent on fd 6 (step 7b) becomes the "pty" end of
   * `stdio`; the socket is closed. Called after `ready` (create) or after the sync EOF (exec),
   * both of which kata-init reaches only after sending, so the packet is there or never comes:
   * INTERNAL when it is missing or malformed.
   */
  private takePtyMaster(run: KataInitRun, stdio: StdioSet, what: string): void {
    if (run.ptyFd < 0) return;
    let msg: ReturnType<NativeAddon['seqpacketRecv']>;
    try {
      msg = this.native.seqpacketRecv(run.ptyFd, 16);
    } finally {
      closeQuietly(run.ptyFd);
      run.ptyFd = -1;
    }
    if (msg && msg.fds.length === 1 && msg.data.toString() === 'pty' && !msg.truncated) {
      stdio.adoptPtyMaster(msg.fds[0]);
      return;
    }
    for (const fd of msg?.fds ?? []) closeQuietly(fd);
    throw new StatusError(
      Code.INTERNAL,
      `${what}: kata-init did not send the pty master (${msg ? `${msg.fds.length} fds, ${JSON.stringify(msg.data.toString())}` : 'nothing'} on fd 6)`,
    );
  }

  /** Read the `pid N` line. */
  /**
   * A new user namespace (KATA-INIT.md `userns`): kata-init has unshared it and waits; write its
   * gid_map and uid_map (as the privileged parent: no newuidmap, setgroups left "allow" so the
   * container can still call setgroups), then one byte on the start pipe lets it go on. A map
   * the kernel refuses is INVALID_ARGUMENT naming the file.
   */
  private async mapUserNamespace(run: KataInitRun, maps: IdMappingsPlan, what: string): Promise<void> {
    await this.expectLine(run, 'userns', what);
    for (const [file, list] of [['gid_map', maps.gid], ['uid_map', maps.uid]] as const) {
      const target = `/proc/${run.spawnPid}/${file}`;
      try {
        fs.writeFileSync(target, idMapText(list), { flag: 'r+' });
      } catch (err) {
        throw new StatusError(Code.INVALID_ARGUMENT, `${what}: writing ${target} (${JSON.stringify(idMapText(list))}): ${(err as Error).message}`);
      }
    }
    this.native.write(run.startFd, Buffer.from([1]), 0, 1);
  }

  private async expectPid(run: KataInitRun, what: string): Promise<number> {
    const item = await run.sync.next();
    if (item.kind === 'line') {
      const m = /^pid ([0-9]+)$/.exec(item.text);
      if (m) {
        const pid = Number(m[1]);
        if (pid > 0) return pid;
      }
      if (item.text.startsWith('error ')) throw kataInitError(item.text.slice(6), what);
    }
    throw this.protocolError(item, what);
  }

  private async expectLine(run: KataInitRun, expected: string, what: string): Promise<void> {
    const item = await run.sync.next();
    if (item.kind === 'line' && item.text === expected) return;
    if (item.kind === 'line' && item.text.startsWith('error ')) throw kataInitError(item.text.slice(6), what);
    throw this.protocolError(item, what);
  }

  private protocolError(item: LineItem, what: string): StatusError {
    if (item.kind === 'eof') return new StatusError(Code.INTERNAL, `${what}: kata-init exited without reporting (sync pipe closed)`);
    if (item.kind === 'failed') return new StatusError(Code.INTERNAL, `${what}: reading kata-init's sync pipe failed: ${item.error.message}`);
    return new StatusError(Code.INTERNAL, `${what}: unexpected line from kata-init: ${JSON.stringify(item.text)}`);
  }

  /**
   * After `pid N`: when N is kata-init itself (no pid namespace change) keep the spawn pidfd;
   * otherwise kata-init was the intermediate, which exits at once: drop its pidfd and status.
   */
  private claimPidfd(run: KataInitRun, pid: number): number {
    if (pid === run.spawnPid) return run.spawnPidfd;
    closeQuietly(run.spawnPidfd);
    this.registry.reaper.discard(run.spawnPid, run.sinceSeq);
    return -1;
  }

  /** Creation failed: kill what kata-init started and drop the statuses. */
  private abandon(run: KataInitRun, pid: number): void {
    run.sync.close();
    closeQuietly(run.startFd);
    run.startFd = -1;
    closeQuietly(run.ptyFd);
    run.ptyFd = -1;
    if (pid > 0 && pid !== run.spawnPid) this.registry.killUntracked(pid, run.sinceSeq);
    try {
      this.native.pidfdSendSignal(run.spawnPidfd, 9);
    } catch {
      // already gone
    }
    closeQuietly(run.spawnPidfd);
    this.registry.reaper.discard(run.spawnPid, run.sinceSeq);
  }
}
