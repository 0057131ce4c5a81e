/**
 * The debug console (upstream: kata-containers src/agent/src/console.rs and main.rs
 * start_sandbox at 6e4d4c329a): a root shell in the guest for a person debugging it, off unless
 * `agent.debug_console` (TOML `debug_console`, flag `--debug-console`) is set.
 *
 * Where (config `debugConsoleAddr`, else from upstream's options):
 * - `vsock://-1:N` (upstream `agent.debug_console_vport=N`, what `kata-runtime exec` connects
 *   to): a listener; each connection gets its own shell on a new pty (op `debugConsole`, the
 *   helper starts the shell as root and hands the pty master here) and this module copies
 *   between the connection and the master until either side ends; closing the master hangs the
 *   shell up (SIGHUP to its session).
 * - `unix:///path`: the same over a unix socket (mode 0600), for tests and machines without vsock.
 * - `tty:/dev/…` (upstream without a vport: /dev/console): one shell on that terminal, started
 *   by the helper; as upstream, not restarted when it exits.
 *
 * Threat model (docs/ARCHITECTURE.md): whoever reaches the address is root in the guest. vsock
 * is reachable only from the host; a unix socket is 0600 and owned by the control uid; never a
 * TCP port or an abstract socket (containers share the guest's network namespace).
 */
import * as fs from 'node:fs';
import type { Logger } from '../shared/log';
import { loadNative, type NativeAddon } from '../shared/native';
import { Code, StatusError } from '../shared/protocol';
import type { HelperConnection } from './helper';
import { parseAddress } from './ttrpc/address';
import { FdStream } from './ttrpc/fdstream';
import { listenStream, type StreamListener } from './ttrpc/stream-listener';

/** Upstream's console device when no vport is given (console.rs CONSOLE_PATH). */
export const DEFAULT_DEBUG_CONSOLE_TTY = '/dev/console';

/** Sessions open at once; a connection beyond is closed at once (each session is a shell and two fds). */
export const MAX_DEBUG_CONSOLE_SESSIONS = 16;

/** Where the debug console is served. */
export type DebugConsoleTarget = { kind: 'listen'; address: string } | { kind: 'tty'; path: string };

/**
 * The debug console's target from the configuration: undefined when `debugConsole` is off or
 * `debugConsoleAddr` is ""; `debugConsoleAddr` when given; else vsock://-1:`debugConsoleVport`
 * when the port is > 0; else the tty /dev/console (upstream). INVALID_ARGUMENT for an address that
 * is none of vsock://CID:PORT, unix:///path, tty:/dev/...
 */
export function debugConsoleTarget(config: { debugConsole: boolean; debugConsoleVport: number; debugConsoleAddr?: string }): DebugConsoleTarget | undefined {
  if (!config.debugConsole || config.debugConsoleAddr === '') return undefined;
  const addr = config.debugConsoleAddr ?? (config.debugConsoleVport > 0 ? `vsock://-1:${config.debugConsoleVport}` : `tty:${DEFAULT_DEBUG_CONSOLE_TTY}`);
  return parseDebugConsoleAddr(addr);
}

/** Parse a debug console address (see {@link debugConsoleTarget}); INVALID_ARGUMENT naming it otherwise. */
export function parseDebugConsoleAddr(addr: string): DebugConsoleTarget {
  if (addr.startsWith('tty:/dev/')) return { kind: 'tty', path: addr.slice(4) };
  let kind: string | undefined;
  try {
    kind = parseAddress(addr).kind;
  } catch {
    kind = undefined;
  }
  if (kind === 'vsock' || kind === 'unix') return { kind: 'listen', address: addr };
  throw new StatusError(Code.INVALID_ARGUMENT, `invalid debug console address ${JSON.stringify(addr)} (want vsock://CID:PORT, unix:///path or tty:/dev/NAME)`);
}

/** A running debug console; {@link close} stops it (open sessions are hung up). */
export class DebugConsole {
  private readonly sessions = new Set<() => void>();
  private listener: StreamListener | undefined;
  private closed = false;

  private constructor(
    private readonly helper: HelperConnection,
    private readonly log: Logger,
    private readonly native: NativeAddon,
  ) {}

  /**
   * Start the console at `target`. A listener: the listen error (EADDRINUSE, ...) is thrown;
   * a tty: the helper's error (INVALID_ARGUMENT for a bad tty, FAILED_PRECONDITION without a shell).
   */
  static async start(target: DebugConsoleTarget, helper: HelperConnection, log: Logger, native = loadNative()): Promise<DebugConsole> {
    const c = new DebugConsole(helper, log, native);
    if (target.kind === 'tty') {
      const { result } = await helper.call('debugConsole', { tty: target.path });
      log.info({ tty: target.path, pid: result.pid, shell: result.shell }, 'debug console shell on the tty');
      return c;
    }
    c.listener = listenStream(native, target.address, 8, 'debug console', log, (conn) => void c.session(conn));
    if (c.listener.unixPath) fs.chmodSync(c.listener.unixPath, 0o600);
    log.warn({ address: target.address }, 'debug console listening: a root shell for each connection');
    return c;
  }

  /** Open sessions (tests, debug). */
  get sessionCount(): number {
    return this.sessions.size;
  }

  /** One connection: a shell on a new pty, copied both ways until either side ends. */
  private async session(conn: number): Promise<void> {
    if (this.sessions.size >= MAX_DEBUG_CONSOLE_SESSIONS) {
      this.log.warn({ max: MAX_DEBUG_CONSOLE_SESSIONS }, 'debug console: too many sessions, connection closed');
      this.native.close(conn);
      return;
    }
    const client = new FdStream(conn, { native: this.native });
    let master: FdStream | undefined;
    const end = (): void => {
      if (!this.sessions.delete(end)) return;
      client.destroy();
      master?.destroy();
    };
    this.sessions.add(end);
    client.on('error', end).on('close', end).on('end', end);
    try {
      const { result, fds } = await this.helper.call('debugConsole', {});
      if (fds.master === undefined) throw new StatusError(Code.INTERNAL, 'helper debugConsole reply without the pty master');
      if (!this.sessions.has(end) || this.closed) {
        this.native.close(fds.master);
        return;
      }
      master = new FdStream(fds.master, { native: this.native });
      // EIO on the master once the shell and its children have gone: the session's end.
      master.on('error', end).on('close', end).on('end', end);
      client.pipe(master);
      master.pipe(client);
      this.log.info({ pid: result.pid, shell: result.shell }, 'debug console session started');
    } catch (err) {
      this.log.warn({ err }, 'debug console session failed');
      end();
    }
  }

  /** Stop listening and hang up every session. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.listener?.close();
    if (this.listener?.unixPath) fs.rmSync(this.listener.unixPath, { force: true });
    for (const end of [...this.sessions]) end();
  }
}
