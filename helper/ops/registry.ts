/**
 * Bookkeeping shared by the real and the mock backend: the processes the helper tracks (pid,
 * pidfd, exit status, the helper's copies of their stdio fds), exit events, signalling through
 * pidfds, and deferred closing of fds that are being sent.
 */
import * as fs from 'node:fs';
import { EventEmitter } from 'node:events';
import { isErrno, loadNative, type NativeAddon, type ReapedChild } from '../../shared/native';
import { silentLogger, type Logger } from '../../shared/log';
import { exitStatusOf, type ExitEvent } from '../../shared/protocol';
import type { NamedFd } from '../api';
import { getReaper, type ChildReaper } from './reaper';
import { closeQuietly } from './io';

/** Exit status recorded when a process vanished without the helper seeing its status. */
export const UNKNOWN_EXIT_STATUS = 255;

export const SIGKILL = 9;
export const SIGTERM = 15;

/**
 * Keeps track of fds being sent: {@link close} of a pinned fd is deferred until the last pin
 * is released, so that a queued packet never carries a closed (or reused) fd number.
 */
export class FdKeeper {
  private readonly pins = new Map<number, number>();
  private readonly deferred = new Set<number>();

  /** Pin `fds` until the returned function is called (idempotent). */
  pin(fds: number[]): () => void {
    for (const fd of fds) this.pins.set(fd, (this.pins.get(fd) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const fd of fds) {
        const n = (this.pins.get(fd) ?? 1) - 1;
        if (n > 0) {
          this.pins.set(fd, n);
          continue;
        }
        this.pins.delete(fd);
        if (this.deferred.delete(fd)) closeQuietly(fd);
      }
    };
  }

  /** Close `fd` now, or when its last pin is released. */
  close(fd: number): void {
    if (this.pins.has(fd)) this.deferred.add(fd);
    else closeQuietly(fd);
  }
}

/**
 * The ends of a new process's stdio: the child's (fd 0, 1, 2) and the parent's (kept by the
 * helper). With a terminal the pty is not made here: the launcher either has kata-init open it
 * in the container's own devpts and hands the master over ({@link StdioSet.adoptPtyMaster}), or
 * (the mock, no container) calls {@link StdioSet.openHelperPty}. Until then the child ends are
 * /dev/null and `parent` is empty.
 */
export interface StdioSet {
  /** True when the process gets a terminal. */
  readonly terminal: boolean;
  /** Child fds 0, 1, 2 (the same pty slave three times with a helper pty; /dev/null before). */
  readonly child: [number, number, number];
  /**
   * Parent ends: "stdin" (write), "stdout" (read), "stderr" (read) and the memfd output spools
   * "stdoutSpool", "stderrSpool"; or "ptySpool" and (once adopted) "pty" (the master).
   */
  readonly parent: NamedFd[];
  /** Terminal only: take ownership of the pty master `fd` that kata-init opened in the container. */
  adoptPtyMaster(fd: number): void;
  /** Terminal only: a pty from the helper's own devpts as the child's 0-2 (mock backend). */
  openHelperPty(): void;
  /** Close the child ends in the helper (after spawn). Idempotent. */
  closeChild(): void;
  /** Close the parent ends (creation failed). Idempotent. */
  closeParent(): void;
}

/**
 * Capacity given to a process's stdio pipes, in bytes (1 MiB, or /proc/sys/fs/pipe-max-size when
 * that is lower). A 64 KiB pipe made every ReadStdout/WriteStdin move at most 64 KiB per
 * wake-up of the control plane and of the process; with 1 MiB a `dd bs=1M` writes a block in
 * one write and control moves it in one splice (docs/ARCHITECTURE.md "Performance"). The
 * kernel charges pipe pages to the writer's memory cgroup (the container's for its output).
 */
export const STDIO_PIPE_SIZE = 1024 * 1024;

let pipeSizeCap: number | undefined;

/** {@link STDIO_PIPE_SIZE} capped by /proc/sys/fs/pipe-max-size (read once). */
function stdioPipeSize(): number {
  if (pipeSizeCap === undefined) {
    let max = STDIO_PIPE_SIZE;
    try {
      max = Number.parseInt(fs.readFileSync('/proc/sys/fs/pipe-max-size', 'utf8'), 10);
    } catch {
      // no procfs: ask for the default size and let the kernel refuse
    }
    pipeSizeCap = Number.isInteger(max) && max > 0 ? Math.min(max, STDIO_PIPE_SIZE) : STDIO_PIPE_SIZE;
  }
  return pipeSizeCap;
}

/** A pipe whose capacity is grown to {@link stdioPipeSize}; a refusal keeps the kernel's default (64 KiB). */
function stdioPipe(native: NativeAddon): [number, number] {
  const ends = native.pipe();
  try {
    native.setPipeSize(ends[1], stdioPipeSize());
  } catch {
    // EPERM: a user over its pipe-user-pages limit (the mock, unprivileged): the default stays
  }
  return ends;
}

/** Make stdio for a process: three pipes, or (`terminal`) a set waiting for its pty. */
export function createStdio(terminal: boolean): StdioSet {
  const native = loadNative();
  const opened: number[] = [];
  try {
    let child: [number, number, number];
    const parent: NamedFd[] = [];
    if (terminal) {
      const devNull = fs.openSync('/dev/null', 'r+'); // libuv opens with O_CLOEXEC
      opened.push(devNull);
      child = [devNull, devNull, devNull];
    } else {
      const [inR, inW] = stdioPipe(native);
      opened.push(inR, inW);
      const [outR, outW] = stdioPipe(native);
      opened.push(outR, outW);
      const [errR, errW] = stdioPipe(native);
      opened.push(errR, errW);
      child = [inR, outW, errW];
      parent.push({ name: 'stdin', fd: inW }, { name: 'stdout', fd: outR }, { name: 'stderr', fd: errR });
    }
    // The output spools (control/sandbox/spool.ts): control buffers output in them, and the
    // helper's reference lets a restarted control plane find what was not delivered yet.
    for (const name of terminal ? ['ptySpool'] : ['stdoutSpool', 'stderrSpool']) {
      const fd = native.memfdCreate(`kata-${name}`);
      opened.push(fd);
      parent.push({ name, fd });
    }
    let childClosed = false;
    let parentClosed = false;
    const set: StdioSet = {
      terminal,
      child,
      parent,
      adoptPtyMaster: (fd: number) => {
        if (!terminal || parent.some((p) => p.name === 'pty') || parentClosed) {
          closeQuietly(fd);
          throw new Error('adoptPtyMaster: not a terminal stdio set waiting for its pty');
        }
        parent.push({ name: 'pty', fd });
      },
      openHelperPty: () => {
        if (!terminal || parent.some((p) => p.name === 'pty') || childClosed) throw new Error('openHelperPty: not a terminal stdio set waiting for its pty');
        const { master, slave } = native.openpty();
        closeQuietly(child[0]);
        child.fill(slave);
        parent.push({ name: 'pty', fd: master });
      },
      closeChild: () => {
        if (childClosed) return;
        childClosed = true;
        for (const fd of new Set(child)) closeQuietly(fd);
      },
      closeParent: () => {
        if (parentClosed) return;
        parentClosed = true;
        for (const p of parent) closeQuietly(p.fd);
      },
    };
    return set;
  } catch (err) {
    for (const fd of opened) closeQuietly(fd);
    throw err;
  }
}

/** A process the helper tracks: a container's init (execId "") or an exec process. */
export class TrackedProcess {
  /** pidfd of the process while it runs (-1 after exit or when none could be opened). */
  pidfd = -1;
  exited = false;
  exitStatus: number | null = null;
  /** The helper's copies of the parent stdio ends, by name ("stdin", "stdout", "stderr", "pty"). */
  readonly stdio = new Map<string, number>();
  /** Exit events are held until control has been told about the process (see announce). */
  announced = false;
  private exitReported = false;
  private readonly exitWaiters: (() => void)[] = [];

  constructor(
    readonly containerId: string,
    readonly execId: string,
    readonly pid: number,
  ) {}

  /** Resolves true when the process has exited, false after `timeoutMs` (undefined/0 = never times out). */
  waitExit(timeoutMs?: number): Promise<boolean> {
    if (this.exited) return Promise.resolve(true);
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (): void => {
        if (timer) clearTimeout(timer);
        resolve(true);
      };
      this.exitWaiters.push(done);
      if (timeoutMs) {
        timer = setTimeout(() => {
          const i = this.exitWaiters.indexOf(done);
          if (i >= 0) this.exitWaiters.splice(i, 1);
          resolve(false);
        }, timeoutMs);
      }
    });
  }

  /** @internal */
  markExited(status: number): boolean {
    if (this.exited) return false;
    this.exited = true;
    this.exitStatus = status;
    for (const w of this.exitWaiters.splice(0)) w();
    return true;
  }

  /** @internal true once (the caller then emits the exit event). */
  takeExitReport(): boolean {
    if (!this.exited || !this.announced || this.exitReported) return false;
    this.exitReported = true;
    return true;
  }
}

export interface TrackOptions {
  containerId: string;
  execId: string;
  pid: number;
  /** A pidfd the caller already has for `pid` (ownership passes to the registry), or -1. */
  pidfd: number;
  /** Reaper sequence snapshot taken before the process was started. */
  sinceSeq: number;
  /** Parent stdio ends (ownership passes to the registry). */
  stdio: NamedFd[];
}

export interface ProcessRegistry {
  on(event: 'exit', listener: (event: ExitEvent) => void): this;
  emit(event: 'exit', ev: ExitEvent): boolean;
}

/**
 * Tracks container and exec processes. Exit statuses come from the process-wide reaper
 * (./reaper.ts); an `exit` event (ExitEvent) is emitted once per process, but only after
 * {@link announce} (so control hears of a process before hearing of its exit).
 */
export class ProcessRegistry extends EventEmitter {
  readonly fds = new FdKeeper();
  readonly reaper: ChildReaper;
  private readonly native: NativeAddon;
  private readonly log: Logger;
  private readonly byPid = new Map<number, TrackedProcess>();
  private started = false;

  constructor(opts: { logger?: Logger; subreaper?: boolean } = {}) {
    super();
    this.native = loadNative();
    this.log = (opts.logger ?? silentLogger()).child({ component: 'registry' });
    this.reaper = getReaper();
    if (opts.subreaper) this.native.setChildSubreaper();
  }

  /** Start reaping. */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.reaper.acquire(this.log);
  }

  /** Stop reaping (the process-wide reaper keeps running while another registry uses it). */
  stop(): void {
    if (!this.started) return;
    this.started = false;
    for (const pid of this.byPid.keys()) this.reaper.unwatch(pid);
    this.reaper.release();
  }

  /** Current reaper sequence: snapshot before starting a process, pass to {@link track}. */
  get seq(): number {
    return this.reaper.seq;
  }

  /** Is `pid` a live tracked process? */
  isLive(pid: number): boolean {
    const p = this.byPid.get(pid);
    return p !== undefined && !p.exited;
  }

  /**
   * Start tracking a process that has been started after `sinceSeq`. If it has already been
   * reaped, it is recorded as exited at once. Takes ownership of `pidfd` and the stdio fds.
   */
  track(opts: TrackOptions): TrackedProcess {
    const proc = new TrackedProcess(opts.containerId, opts.execId, opts.pid);
    for (const s of opts.stdio) proc.stdio.set(s.name, s.fd);
    const already = this.reaper.take(opts.pid, opts.sinceSeq);
    if (already) {
      closeQuietly(opts.pidfd);
      this.recordExit(proc, already);
      return proc;
    }
    let pidfd = opts.pidfd;
    if (pidfd < 0) {
      try {
        pidfd = this.native.pidfdOpen(opts.pid);
      } catch (err) {
        if (isErrno(err, 'ESRCH')) {
          this.log.warn({ pid: opts.pid, containerId: opts.containerId, execId: opts.execId }, 'process vanished before it could be tracked');
          proc.markExited(UNKNOWN_EXIT_STATUS);
          return proc;
        }
        throw err;
      }
    }
    proc.pidfd = pidfd;
    this.byPid.set(opts.pid, proc);
    this.reaper.watch(opts.pid, opts.sinceSeq, (child) => {
      this.byPid.delete(opts.pid);
      this.recordExit(proc, child);
    });
    return proc;
  }

  /** Control now knows `proc`: emit its exit event if it already exited (and from now on). */
  announce(proc: TrackedProcess): void {
    proc.announced = true;
    this.report(proc);
  }

  /**
   * Stop tracking `proc` and close its fds (deferred while pinned). A process still running is
   * left to the reaper, which will drop its status.
   */
  forget(proc: TrackedProcess): void {
    if (this.byPid.get(proc.pid) === proc) {
      this.byPid.delete(proc.pid);
      this.reaper.discard(proc.pid, -1);
    }
    closeQuietly(proc.pidfd);
    proc.pidfd = -1;
    this.closeStdio(proc);
    proc.announced = false;
  }

  /** Close the helper's copies of `proc`'s stdio (all of them, or only `names`). */
  closeStdio(proc: TrackedProcess, names?: string[]): void {
    for (const [name, fd] of [...proc.stdio]) {
      if (names && !names.includes(name)) continue;
      proc.stdio.delete(name);
      this.fds.close(fd);
    }
  }

  /**
   * Send `signal` to `proc` through its pidfd. A process that has exited (or exits meanwhile:
   * ESRCH) is not an error (Kata rpc.rs do_signal_process tolerates ESRCH).
   */
  signal(proc: TrackedProcess, signal: number): void {
    if (proc.exited || proc.pidfd < 0) return;
    try {
      this.native.pidfdSendSignal(proc.pidfd, signal);
    } catch (err) {
      if (isErrno(err, 'ESRCH')) return;
      throw err;
    }
  }

  /**
   * Kill a process that is not (or no longer) tracked and drop its status: used when creation
   * fails after kata-init reported a pid. Safe against pid reuse: a pid already reaped after
   * `sinceSeq` is not signalled.
   */
  killUntracked(pid: number, sinceSeq: number): void {
    if (this.reaper.take(pid, sinceSeq)) return;
    let pidfd = -1;
    try {
      pidfd = this.native.pidfdOpen(pid);
      this.native.pidfdSendSignal(pidfd, SIGKILL);
    } catch (err) {
      if (!isErrno(err, 'ESRCH')) this.log.warn({ err, pid }, 'could not kill process');
    } finally {
      closeQuietly(pidfd);
    }
    this.reaper.discard(pid, sinceSeq);
  }

  private recordExit(proc: TrackedProcess, child: ReapedChild): void {
    closeQuietly(proc.pidfd);
    proc.pidfd = -1;
    const status = exitStatusOf(child.exitCode, child.signal);
    if (!proc.markExited(status)) return;
    this.log.debug({ containerId: proc.containerId, execId: proc.execId, pid: proc.pid, exitStatus: status }, 'process exited');
    this.report(proc);
  }

  private report(proc: TrackedProcess): void {
    if (!proc.takeExitReport()) return;
    this.emit('exit', {
      event: 'exit',
      containerId: proc.containerId,
      execId: proc.execId,
      pid: proc.pid,
      exitStatus: proc.exitStatus ?? UNKNOWN_EXIT_STATUS,
    });
  }
}

/**
 * Does the process `pid` handle, ignore or block `signal`? Reads SigBlk/SigIgn/SigCgt from
 * /proc/<pid>/status (Kata rpc.rs is_signal_handled). Signals outside 1..64 and unreadable status
 * count as not handled.
 */
export function isSignalHandled(pid: number, signal: number): boolean {
  if (signal < 1 || signal > 64) return false;
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return false;
  }
  const bit = 1n << BigInt(signal - 1);
  for (const line of text.split('\n')) {
    const m = /^(SigBlk|SigIgn|SigCgt):\s*([0-9a-fA-F]+)/.exec(line);
    if (m && (BigInt('0x' + m[2]) & bit) !== 0n) return true;
  }
  return false;
}
