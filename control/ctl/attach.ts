/**
 * kata-agent-ctl `exec` and `run`: start a process in a container and attach this program's
 * stdin/stdout/stderr to it, so a person gets an interactive shell
 * (`kata-agent-ctl exec -it --server-address ADDR CID sh`).
 *
 * With -t the process gets a terminal (OCI process.terminal): this program's terminal is put in
 * raw mode (keys, Ctrl-C included, go to the container), its size is sent with TtyWinResize at
 * the start and on every SIGWINCH, and the pty output is read with ReadStdout. Without -t:
 * ReadStdout and ReadStderr go to stdout and stderr, SIGINT/SIGTERM are forwarded with
 * SignalProcess. With -i, stdin is sent with WriteStdin and its end with CloseStdin; without
 * -i the process's stdin is closed at once (a pipe) or left alone (a terminal).
 * The exit status is the process's (WaitProcess). Upstream agent-ctl has no such command; the
 * RPC sequence is the runtime's (runtime-traffic.md: ExecProcess, TtyWinResize, WriteStdin /
 * ReadStdout, WaitProcess).
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Code, StatusError } from '../../shared/protocol';
import { formatStatus } from '../ttrpc/status';
import { AgentClient } from './client';
import { ociJsonToSpec, type OciJsonOptions } from './oci-json';

/** Bytes asked for per ReadStdout/ReadStderr. */
const READ_LEN = 32 * 1024;

/** The terminal side of an attached process (this program's stdio, or a test's). */
export interface AttachIo {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?(mode: boolean): unknown };
  stdout: NodeJS.WritableStream & { columns?: number; rows?: number };
  stderr: NodeJS.WritableStream;
  /** Subscribe to terminal size changes (default: process SIGWINCH); returns the unsubscribe. */
  onResize?(fn: () => void): () => void;
  /** Subscribe to SIGINT/SIGTERM (default: process signals); returns the unsubscribe. */
  onSignal?(fn: (signal: number) => void): () => void;
}

/** Options of {@link attachProcess}. */
export interface AttachOptions {
  containerId: string;
  execId: string;
  /** The process has a terminal (pty). */
  tty: boolean;
  /** Forward stdin (else: CloseStdin at once for pipes). */
  interactive: boolean;
}

function isEof(err: unknown): boolean {
  return err instanceof StatusError && (err.code === Code.OUT_OF_RANGE || err.code === Code.NOT_FOUND || err.code === Code.CANCELLED || err.code === Code.UNAVAILABLE);
}

function write(stream: NodeJS.WritableStream, data: Uint8Array): Promise<void> {
  return new Promise((resolve) => {
    if (stream.write(data)) resolve();
    else stream.once('drain', () => resolve());
  });
}

/**
 * Attach `io` to a started process and resolve with its exit status once it exited and its
 * output was read to the end. Rejects with the StatusError of WaitProcess (e.g. NOT_FOUND).
 * The terminal is always restored (raw mode off, listeners removed).
 */
export async function attachProcess(agent: AgentClient, opts: AttachOptions, io: AttachIo): Promise<number> {
  const ids = { container_id: opts.containerId, exec_id: opts.execId };
  const cleanups: Array<() => void> = [];
  const raw = opts.tty && opts.interactive && io.stdin.isTTY === true && typeof io.stdin.setRawMode === 'function';
  try {
    if (opts.tty) {
      const resize = (): void => {
        const rows = io.stdout.rows ?? 0;
        const column = io.stdout.columns ?? 0;
        if (rows > 0 && column > 0) void agent.call('TtyWinResize', { ...ids, row: rows, column }).catch(() => undefined);
      };
      resize();
      const onResize = io.onResize ?? ((fn: () => void) => {
        process.on('SIGWINCH', fn);
        return () => void process.off('SIGWINCH', fn);
      });
      cleanups.push(onResize(resize));
    } else {
      const onSignal = io.onSignal ?? ((fn: (signal: number) => void) => {
        const int = (): void => fn(2);
        const term = (): void => fn(15);
        process.on('SIGINT', int);
        process.on('SIGTERM', term);
        return () => {
          process.off('SIGINT', int);
          process.off('SIGTERM', term);
        };
      });
      cleanups.push(onSignal((signal) => void agent.call('SignalProcess', { ...ids, signal }).catch(() => undefined)));
    }

    if (opts.interactive) {
      if (raw) {
        io.stdin.setRawMode!(true);
        cleanups.push(() => io.stdin.setRawMode!(false));
      }
      // One WriteStdin at a time, in order: stdin is paused while a write is in flight.
      const onData = (chunk: Buffer | string): void => {
        const data = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
        io.stdin.pause();
        agent.call('WriteStdin', { ...ids, data }).then(
          () => io.stdin.resume(),
          () => undefined, // the process no longer reads stdin: drop the rest
        );
      };
      const onEnd = (): void => void agent.call('CloseStdin', ids).catch(() => undefined);
      io.stdin.on('data', onData);
      io.stdin.once('end', onEnd);
      io.stdin.resume();
      cleanups.push(() => {
        io.stdin.off('data', onData);
        io.stdin.off('end', onEnd);
        io.stdin.pause();
      });
    } else if (!opts.tty) {
      await agent.call('CloseStdin', ids).catch(() => undefined);
    }

    const pump = async (method: 'ReadStdout' | 'ReadStderr', out: NodeJS.WritableStream): Promise<void> => {
      for (;;) {
        let data: Uint8Array;
        try {
          ({ data } = await agent.call(method, { ...ids, len: READ_LEN }));
        } catch (err) {
          if (isEof(err)) return;
          throw err;
        }
        if (data.length > 0) await write(out, data);
      }
    };
    const pumps = [pump('ReadStdout', io.stdout)];
    if (!opts.tty) pumps.push(pump('ReadStderr', io.stderr));
    const { status } = await agent.call('WaitProcess', ids);
    await Promise.all(pumps);
    return status;
  } finally {
    for (const c of cleanups.reverse()) c();
  }
}

/** Parsed `exec` / `run` command line. */
export interface TerminalCommand {
  kind: 'exec' | 'run';
  serverAddress: string;
  interactive: boolean;
  tty: boolean;
  bundleDir: string;
  containerId: string;
  args: string[];
  env: string[];
  cwd: string;
  uid: number;
  gid: number;
  /** exec only: start the process and return 0 without attaching (its output stays in the agent). */
  detach?: boolean;
  /** exec only: called with the exec id once ExecProcess succeeded, before attaching (e.g. --pid-file). */
  onStarted?: (execId: string) => Promise<void>;
}

/** A usage error of exec/run (exit status 2). */
export class TerminalUsageError extends Error {}

const EXEC_USAGE = 'exec [-i] [-t] --server-address ADDR [--bundle-dir DIR] [-u UID[:GID]] [-w DIR] [-e K=V]... CID [--] CMD [ARG...]';
const RUN_USAGE = 'run [-i] [-t] --server-address ADDR --bundle-dir DIR [--cid ID] [--] [CMD [ARG...]]';

/**
 * Parse `exec`/`run` arguments (after the subcommand). Options end at the first positional
 * (exec: the container id; the rest is the command) or at `--`; short flags group (-it).
 * Throws {@link TerminalUsageError} naming the bad word.
 */
export function parseTerminalCommand(kind: 'exec' | 'run', argv: readonly string[]): TerminalCommand {
  const cmd: TerminalCommand = {
    kind, serverAddress: '', interactive: false, tty: false, bundleDir: '', containerId: '', args: [], env: [], cwd: '', uid: -1, gid: -1,
  };
  const usage = kind === 'exec' ? EXEC_USAGE : RUN_USAGE;
  const bad = (m: string): TerminalUsageError => new TerminalUsageError(`${m}\nusage: kata-agent-ctl ${usage}`);
  let i = 0;
  const value = (name: string): string => {
    if (i + 1 >= argv.length) throw bad(`${name} needs a value`);
    return argv[++i];
  };
  for (; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      i++;
      break;
    }
    const eq = a.startsWith('--') ? a.indexOf('=') : -1;
    const name = eq > 0 ? a.slice(0, eq) : a;
    const inline = eq > 0 ? a.slice(eq + 1) : undefined;
    const val = (): string => inline ?? value(name);
    if (name === '--server-address') cmd.serverAddress = val();
    else if (name === '--bundle-dir') cmd.bundleDir = val();
    else if (name === '--cid' && kind === 'run') cmd.containerId = val();
    else if ((name === '-e' || name === '--env') && kind === 'exec') {
      const e = val();
      if (!/^[^=]+=/.test(e)) throw bad(`invalid environment entry ${JSON.stringify(e)} (want KEY=VALUE)`);
      cmd.env.push(e);
    } else if ((name === '-w' || name === '--cwd') && kind === 'exec') cmd.cwd = val();
    else if ((name === '-u' || name === '--user') && kind === 'exec') {
      const u = val();
      const m = /^([0-9]{1,10})(?::([0-9]{1,10}))?$/.exec(u);
      if (!m || Number(m[1]) > 0xffffffff || Number(m[2] ?? 0) > 0xffffffff) throw bad(`invalid user ${JSON.stringify(u)} (want UID or UID:GID, numbers)`);
      cmd.uid = Number(m[1]);
      cmd.gid = Number(m[2] ?? m[1]);
    } else if (name === '--interactive') cmd.interactive = true;
    else if (name === '--tty') cmd.tty = true;
    else if (/^-[it]+$/.test(a)) {
      if (a.includes('i')) cmd.interactive = true;
      if (a.includes('t')) cmd.tty = true;
    } else if (a.startsWith('-')) throw bad(`unknown option ${JSON.stringify(a)}`);
    else break;
  }
  const rest = argv.slice(i);
  if (cmd.serverAddress === '') throw bad(`${kind} needs --server-address ADDR`);
  if (kind === 'exec') {
    if (rest.length < 2) throw bad('exec needs a container id and a command');
    cmd.containerId = rest[0];
    cmd.args = rest.slice(1);
  } else {
    if (cmd.bundleDir === '') throw bad('run needs --bundle-dir DIR (an OCI bundle: scripts/make-bundle DIR)');
    cmd.args = [...rest];
  }
  return cmd;
}

/**
 * Read `<bundleDir>/config.json`: the document as written (for its annotations and ociVersion)
 * and as grpc.Spec (root path made absolute; control/ctl/oci-json.ts). Throws Error naming the
 * file when it cannot be read or parsed, StatusError INVALID_ARGUMENT for a malformed spec.
 */
export function readBundle(bundleDir: string, opts: OciJsonOptions = {}): { config: { [k: string]: unknown }; spec: ReturnType<typeof ociJsonToSpec> } {
  const file = path.join(bundleDir, 'config.json');
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read the OCI spec ${file}: ${(err as Error).message}`);
  }
  const spec = ociJsonToSpec(json, path.resolve(bundleDir), opts);
  return { config: json as { [k: string]: unknown }, spec };
}

function bundleSpec(bundleDir: string): ReturnType<typeof ociJsonToSpec> {
  return readBundle(bundleDir).spec;
}

const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * Run `exec` or `run` against the agent and resolve with the exit status to use: the process's
 * status, or 1 when a call failed (its status printed on io.stderr as `CODE: message`).
 * `run` creates the container (CreateContainer with the bundle's spec, terminal and args as
 * asked), starts it, attaches, and removes it afterwards. Without a CreateSandbox before, the
 * agent gives the container its own uts/ipc namespaces (no sandbox hostname).
 */
export async function runTerminalCommand(cmd: TerminalCommand, io: AttachIo): Promise<number> {
  try {
    return await executeTerminalCommand(cmd, io);
  } catch (err) {
    io.stderr.write(`${formatError(err)}\n`);
    return 1;
  }
}

/**
 * {@link runTerminalCommand} without the error reporting: resolves with the process's status,
 * rejects with the failure (StatusError of the call, or Error) for the caller to report (the OCI
 * CLI words and numbers it as runc does). A failed RemoveContainer after `run` is still printed.
 */
export async function executeTerminalCommand(cmd: TerminalCommand, io: AttachIo): Promise<number> {
  const agent = await AgentClient.connect(cmd.serverAddress);
  let created = false;
  try {
    const term = `TERM=${process.env.TERM ?? 'xterm'}`;
    // With -t the process starts with this terminal's size (OCI process.consoleSize, applied by
    // the agent before the process runs for `run`), not 0x0 until the first TtyWinResize.
    const rows = io.stdout.rows ?? 0;
    const columns = io.stdout.columns ?? 0;
    const consoleSize = cmd.tty && rows > 0 && columns > 0 ? { Height: rows, Width: columns } : undefined;
    if (cmd.kind === 'run') {
      const spec = bundleSpec(cmd.bundleDir);
      const proc = spec.Process ?? {};
      proc.Terminal = cmd.tty;
      if (consoleSize) proc.ConsoleSize = consoleSize;
      if (cmd.args.length > 0) proc.Args = cmd.args;
      if (cmd.tty) proc.Env = [...(proc.Env ?? []).filter((e: string) => !e.startsWith('TERM=')), term];
      spec.Process = proc;
      const id = cmd.containerId || randomBytes(8).toString('hex');
      await agent.call('CreateContainer', { container_id: id, exec_id: id, OCI: spec });
      created = true;
      cmd.containerId = id;
      await agent.call('StartContainer', { container_id: id });
      return await attachProcess(agent, { containerId: id, execId: id, tty: cmd.tty, interactive: cmd.interactive }, io);
    }
    const base = cmd.bundleDir ? bundleSpec(cmd.bundleDir).Process ?? {} : {};
    const env = [...(base.Env ?? [DEFAULT_PATH]).filter((e: string) => !(cmd.tty && e.startsWith('TERM='))), ...(cmd.tty ? [term] : []), ...cmd.env];
    const process_ = {
      ...base,
      Terminal: cmd.tty,
      Args: cmd.args,
      Env: env,
      Cwd: cmd.cwd || base.Cwd || '/',
      User: cmd.uid >= 0 ? { UID: cmd.uid, GID: cmd.gid } : base.User ?? { UID: 0, GID: 0 },
      ...(consoleSize ? { ConsoleSize: consoleSize } : {}),
    };
    const execId = `ctl-${randomBytes(6).toString('hex')}`;
    await agent.call('ExecProcess', { container_id: cmd.containerId, exec_id: execId, process: process_ });
    if (cmd.onStarted) await cmd.onStarted(execId);
    if (cmd.detach) return 0;
    return await attachProcess(agent, { containerId: cmd.containerId, execId, tty: cmd.tty, interactive: cmd.interactive }, io);
  } finally {
    if (created) await agent.call('RemoveContainer', { container_id: cmd.containerId, timeout: 10 }).catch((err: unknown) => io.stderr.write(`${formatError(err)}\n`));
    await agent.close();
  }
}

function formatError(err: unknown): string {
  if (err instanceof StatusError) return formatStatus({ code: err.code, message: err.message });
  return `ERROR: ${err instanceof Error ? err.message : String(err)}`;
}
