/**
 * The debug console's shell (op `debugConsole`; upstream: kata-containers src/agent/src/console.rs
 * at 6e4d4c329a). Upstream's agent, when `agent.debug_console` is set, runs the first of
 * /bin/bash, /bin/sh that exists: on /dev/console (no vport), or, with
 * `agent.debug_console_vport=N`, once per vsock connection on a new pty (setsid, the pty as
 * controlling terminal) while the agent copies between the connection and the pty master.
 *
 * Here the shell must be root, so the helper starts it: on a tty the request names (re-validated:
 * a character device under /dev/ that is a terminal) or on a new pty whose master goes to control,
 * which relays it (control/debug-console.ts: data never flows through the helper). The shell runs
 * in its own session with the tty as controlling terminal, with a fixed environment (PATH, HOME,
 * TERM), and the helper's reaper reaps it. The mock helper uses this same class unprivileged:
 * there is nothing to fake in opening a pty and starting a shell as the test's user.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tty from 'node:tty';
import type { BackendReply } from '../api';
import type { NativeAddon } from '../../shared/native';
import { Code, StatusError, invalidArgument, type DebugConsoleArgs, type DebugConsoleResult } from '../../shared/protocol';
import { silentLogger, type Logger } from '../../shared/log';
import { closeQuietly } from './io';
import type { ChildReaper } from './reaper';

/** Shells tried in order (upstream console.rs SHELLS). */
export const DEBUG_CONSOLE_SHELLS: readonly string[] = ['/bin/bash', '/bin/sh'];

/** The shell's whole environment. */
const SHELL_ENV = ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/root', 'TERM=vt100'];

/** Options of {@link DebugConsoleOps}. */
export interface DebugConsoleOptions {
  native: NativeAddon;
  reaper: ChildReaper;
  /** Shells tried in order (default {@link DEBUG_CONSOLE_SHELLS}). */
  shells?: readonly string[];
  logger?: Logger;
  /**
   * Whether the op is served (default true: the mock). The real helper serves it only when its
   * own configuration asks for the console (helper --debug-console): a root shell must not be
   * one request away for whatever runs as the control uid.
   */
  enabled?: boolean;
}

/** Starts debug-console shells (see the module comment). */
export class DebugConsoleOps {
  private readonly native: NativeAddon;
  private readonly reaper: ChildReaper;
  private readonly shells: readonly string[];
  private readonly log: Logger;
  private readonly enabled: boolean;

  constructor(opts: DebugConsoleOptions) {
    this.enabled = opts.enabled ?? true;
    this.native = opts.native;
    this.reaper = opts.reaper;
    this.shells = opts.shells ?? DEBUG_CONSOLE_SHELLS;
    this.log = opts.logger ?? silentLogger();
  }

  /**
   * Start a shell on `args.tty` or on a new pty (its master is the reply's fd `master`, closed
   * here once sent). INVALID_ARGUMENT for a tty that is not an absolute normalised path under
   * /dev/, cannot be opened or is not a terminal (message names it); FAILED_PRECONDITION when no
   * shell exists; PERMISSION_DENIED when the helper was not started with the console enabled;
   * the spawn's errno error otherwise.
   */
  async debugConsole(args: DebugConsoleArgs): Promise<BackendReply<DebugConsoleResult>> {
    if (!this.enabled) {
      throw new StatusError(Code.PERMISSION_DENIED, 'debugConsole: the debug console is not enabled in the helper (--debug-console, KATA_AGENT_DEBUG_CONSOLE=1 or agent.debug_console on the kernel command line)');
    }
    const a = (typeof args === 'object' && args !== null ? args : {}) as Record<string, unknown>;
    const ttyPath = a.tty;
    if (ttyPath !== undefined) {
      if (typeof ttyPath !== 'string' || !ttyPath.startsWith('/dev/') || path.posix.normalize(ttyPath) !== ttyPath || ttyPath.includes('\0') || ttyPath.length > 4096) {
        throw invalidArgument(`debug console tty ${JSON.stringify(ttyPath)}: want an absolute, normalised path under /dev/`);
      }
    }
    const shell = this.shells.find((s) => {
      try {
        fs.accessSync(s, fs.constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
    if (shell === undefined) throw new StatusError(Code.FAILED_PRECONDITION, `no shell for the debug console (tried ${this.shells.join(', ')})`);

    let master = -1;
    let slave: number;
    if (typeof ttyPath === 'string') {
      try {
        slave = fs.openSync(ttyPath, fs.constants.O_RDWR | fs.constants.O_NOCTTY);
      } catch (err) {
        throw invalidArgument(`debug console tty ${JSON.stringify(ttyPath)}: ${(err as Error).message}`);
      }
      if (!fs.fstatSync(slave).isCharacterDevice() || !tty.isatty(slave)) {
        closeQuietly(slave);
        throw invalidArgument(`debug console tty ${JSON.stringify(ttyPath)} is not a terminal`);
      }
    } else {
      ({ master, slave } = this.native.openpty());
    }
    const since = this.reaper.seq;
    let pid: number;
    try {
      const spawn = (controllingTty: boolean) =>
        this.native.spawn({ file: shell, argv: [shell], envp: SHELL_ENV, fds: [slave, slave, slave], setsid: true, controllingTty });
      let spawned;
      try {
        spawned = spawn(true);
      } catch (err) {
        // A tty that is another session's controlling terminal (e.g. /dev/console) refuses
        // TIOCSCTTY (EPERM): the shell then runs without job control, as upstream (it ignores
        // that ioctl's result).
        if ((err as { syscall?: string }).syscall !== 'ioctl(TIOCSCTTY)') throw err;
        this.log.warn({ err, tty: ttyPath }, 'debug console: the tty cannot be the shell\'s controlling terminal; no job control');
        spawned = spawn(false);
      }
      pid = spawned.pid;
      closeQuietly(spawned.pidfd);
    } catch (err) {
      if (master >= 0) closeQuietly(master);
      throw err;
    } finally {
      closeQuietly(slave);
    }
    this.reaper.watch(pid, since, (child) => this.log.info({ pid, exitCode: child.exitCode, signal: child.signal }, 'debug console shell ended'));
    this.log.info({ pid, shell, tty: ttyPath ?? 'pty' }, 'debug console shell started');
    if (master < 0) return { result: { pid, shell } };
    return { result: { pid, shell }, fds: [{ name: 'master', fd: master }], onSent: () => closeQuietly(master) };
  }
}
