/**
 * `kata-agent-ctl oci ...` / `bin/kata-agent-oci`: the OCI runtime command-line interface
 * (runtime-tools docs/command-line-interface.md, runc's options) carried out with agent rpcs, so
 * the OCI conformance suite, or anything else that drives a runc-style CLI, drives the agent.
 *
 *   create  CreateSandbox (once; ALREADY_EXISTS is fine) + CreateContainer with the bundle's spec
 *           (readBundle, as `kata-agent-ctl run`); a state record under --root; then a detached
 *           monitor (`oci monitor ID`) that holds the caller's stdin/stdout/stderr and copies the
 *           container's stdio to and from them (ReadStdout/ReadStderr/WriteStdin: the streams
 *           live in the agent, so "passing the fds through" is done by copying), then records the
 *           exit status (WaitProcess) and ends.
 *   start   StartContainer.          kill   SignalProcess (exec_id = the id; --all: "").
 *   delete  RemoveContainer (refused unless stopped, or --force), record removed.
 *   state   record + debug endpoint (status, pid) + exit record (control/ctl/oci-state.ts).
 *   run     create + start, attached (attachProcess) and removed at the end; -d = create + start.
 *   exec    ExecProcess, attached (executeTerminalCommand, as `kata-agent-ctl exec`).
 *   ps      the container's live pids from the debug endpoint; table = `ps -ef` rows of them.
 *
 * Errors: one line `kata-agent-oci: <message>` on stderr (and in --log); as runc words them, the
 * message of a failed create, run or exec starts `create failed: `, `run failed: `, `exec failed: `.
 * Exit status: 0 ok, 1 error, 255 a failed exec (runc exec.go: fatalWithCode(..., 255), so a
 * caller tells it from the process's own status), 2 usage error; attached run/exec: the
 * process's status.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Code, StatusError } from '../../shared/protocol';
import { formatStatus } from '../ttrpc/status';
import { signalNumber } from './args';
import { attachProcess, executeTerminalCommand, parseTerminalCommand, readBundle, type AttachIo } from './attach';
import { AgentClient } from './client';
import { connectRetrying } from './connect';
import { debugAddressFor, OciUsageError, ociUsageText, parseOciCommandLine, type OciCommand, type OciGlobals } from './oci-args';
import { agentView, buildState, OciError, OciStore, pidAlive, writeAtomic, type OciCliState, type OciRecord } from './oci-state';

/** Program name in messages. */
const PROGRAM = 'kata-agent-oci';
/**
 * How runc reports a failed command of these kinds (runc create.go, run.go: "runc <verb> failed:
 * ...", exit 1; exec.go: "exec failed: ...", exit 255): the words before the message and the exit
 * status. Other commands: the bare message, exit 1.
 */
const FAILED: Partial<Record<OciCommand['kind'], { words: string; status: number }>> = {
  create: { words: 'create failed: ', status: 1 },
  run: { words: 'run failed: ', status: 1 },
  exec: { words: 'exec failed: ', status: 255 },
};
/** How long `state` waits for the monitor to finish copying a stopped container's output, in ms. */
const MONITOR_DRAIN_WAIT_MS = 5000;

/** Where the OCI CLI writes (replaceable for tests). */
export interface OciIo {
  stdout(text: string): void;
  stderr(text: string): void;
  /** The terminal of attached run/exec (default: this process's stdio). */
  attach?: AttachIo;
  /** Start the monitor of `id` (default: a detached `oci monitor` child on this process's stdio); returns its pid. */
  startMonitor?(globals: OciGlobals, id: string): number;
}

/**
 * Run the OCI CLI with `argv` (the words after `oci`) and resolve with the exit status; never
 * rejects. See the module comment.
 */
export async function ociMain(argv: readonly string[], io: OciIo, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  if (argv.length === 0 || argv.includes('--help') || argv.includes('-h') || argv[0] === 'help') {
    io.stdout(`${ociUsageText(PROGRAM)}\n`);
    return argv.length === 0 ? 2 : 0;
  }
  let globals: OciGlobals | undefined;
  let kind: OciCommand['kind'] | undefined;
  try {
    const parsed = parseOciCommandLine(argv, env);
    globals = parsed.globals;
    kind = parsed.command.kind;
    return await runCommand(parsed.globals, parsed.command, io);
  } catch (err) {
    const usage = err instanceof OciUsageError;
    const failed = usage || kind === undefined ? undefined : FAILED[kind];
    const message = `${failed?.words ?? ''}${errorMessage(err)}`;
    io.stderr(`${PROGRAM}: ${message}${usage ? ` (${PROGRAM} --help shows the usage)` : ''}\n`);
    if (globals && globals.logFile !== '') appendLog(globals, message);
    return usage ? 2 : failed?.status ?? 1;
  }
}

function errorMessage(err: unknown): string {
  if (err instanceof StatusError) return formatStatus({ code: err.code, message: err.message });
  return err instanceof Error ? err.message : String(err);
}

/** Append one error line to --log, in runc's (logrus) text or json shape; best effort. */
function appendLog(globals: OciGlobals, message: string): void {
  const time = new Date().toISOString();
  const line = globals.logFormat === 'json' ? JSON.stringify({ level: 'error', msg: message, time }) : `time="${time}" level=error msg=${JSON.stringify(message)}`;
  try {
    fs.appendFileSync(globals.logFile, `${line}\n`);
  } catch {
    // the log is a copy of what stderr says
  }
}

async function withAgent<T>(globals: OciGlobals, fn: (agent: AgentClient) => Promise<T>): Promise<T> {
  const agent = await connectRetrying(globals.address, (a) => AgentClient.connect(a));
  try {
    return await fn(agent);
  } finally {
    await agent.close();
  }
}

async function runCommand(globals: OciGlobals, cmd: OciCommand, io: OciIo): Promise<number> {
  const store = new OciStore(globals.root);
  const debug = debugAddressFor(globals);
  switch (cmd.kind) {
    case 'create':
      await create(globals, store, cmd, io, true);
      return 0;
    case 'run':
      if (cmd.detach) {
        await create(globals, store, cmd, io, true);
        await withAgent(globals, (agent) => agent.call('StartContainer', { container_id: cmd.id }));
        return 0;
      }
      return runAttached(globals, store, cmd, io);
    case 'start':
      store.get(cmd.id);
      await withAgent(globals, (agent) => agent.call('StartContainer', { container_id: cmd.id }));
      return 0;
    case 'state': {
      const record = store.get(cmd.id);
      io.stdout(`${JSON.stringify(await currentState(store, record, debug), null, 2)}\n`);
      return 0;
    }
    case 'kill': {
      const record = store.get(cmd.id);
      const signal = signalNumber(cmd.signal);
      // runtime.md#kill: neither created nor running MUST be an error (the agent itself accepts
      // a signal to an exited process without effect, as upstream).
      // Without a debug endpoint (e.g. a vsock agent and no --debug-address) the signal goes anyway.
      if (debug !== '' && (await currentState(store, record, debug)).status === 'stopped') throw new OciError(`container ${cmd.id} is not running`);
      await withAgent(globals, (agent) => agent.call('SignalProcess', { container_id: cmd.id, exec_id: cmd.all ? '' : cmd.id, signal }));
      return 0;
    }
    case 'delete':
      await remove(globals, store, cmd.id, cmd.force, debug);
      return 0;
    case 'exec': {
      const record = store.get(cmd.id);
      const words = ['--server-address', globals.address, '--bundle-dir', record.bundle];
      if (cmd.user) words.push('-u', cmd.user);
      if (cmd.cwd) words.push('-w', cmd.cwd);
      for (const e of cmd.env) words.push('-e', e);
      if (!cmd.detach) words.push('-i');
      if (cmd.tty) words.push('-t');
      const term = { ...parseTerminalCommand('exec', [...words, '--', cmd.id, ...cmd.args]), detach: cmd.detach };
      if (cmd.pidFile !== '') {
        const pidFile = path.resolve(cmd.pidFile);
        term.onStarted = async (execId) => {
          const p = (await agentView(debug, cmd.id))?.processes.find((x) => x.execId === execId);
          if (!p) throw new OciError(`exec process ${execId} of container ${cmd.id} is not known to the agent`);
          writeAtomic(pidFile, String(p.pid));
        };
      }
      return executeTerminalCommand(term, io.attach ?? { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
    }
    case 'ps':
      return ps(store, cmd, debug, io);
    case 'monitor':
      return monitor(globals, store, cmd.id);
  }
}

/**
 * `create` (and the first half of `run`): claim the id, send CreateSandbox (if none yet) and
 * CreateContainer, write the record, start the monitor when `withMonitor`, write --pid-file.
 * On failure nothing stays behind (container removed, record removed).
 */
async function create(
  globals: OciGlobals,
  store: OciStore,
  cmd: { id: string; bundle: string; pidFile: string; consoleSocket: string },
  io: OciIo,
  withMonitor: boolean,
): Promise<OciRecord> {
  const bundle = path.resolve(cmd.bundle);
  const { config, spec } = readBundle(bundle, { keepHooks: true });
  if (cmd.consoleSocket !== '' || spec.Process?.Terminal) {
    throw new OciError('process.terminal / --console-socket is not supported: the terminal is the agent\'s; use `kata-agent-ctl run -t`');
  }
  store.claim(cmd.id);
  let created = false;
  try {
    return await withAgent(globals, async (agent) => {
      await agent.call('CreateSandbox', { sandbox_id: '', hostname: '' }).catch((err: unknown) => {
        if (!(err instanceof StatusError && err.code === Code.ALREADY_EXISTS)) throw err;
      });
      await agent.call('CreateContainer', { container_id: cmd.id, exec_id: cmd.id, OCI: spec });
      created = true;
      const annotations = config.annotations;
      const record: OciRecord = {
        id: cmd.id,
        bundle,
        annotations: typeof annotations === 'object' && annotations !== null && !Array.isArray(annotations) ? (annotations as Record<string, string>) : {},
        ociVersion: typeof config.ociVersion === 'string' ? config.ociVersion : '',
        rootfs: spec.Root?.Path ?? '',
        created: new Date().toISOString(),
        monitorPid: 0,
      };
      store.write(record);
      if (withMonitor) {
        record.monitorPid = (io.startMonitor ?? startMonitor)(globals, cmd.id);
        store.write(record);
      }
      if (cmd.pidFile !== '') {
        const view = await agentView(debugAddressFor(globals), cmd.id);
        if (!view) throw new OciError(`container ${cmd.id} vanished from the agent right after create`);
        writeAtomic(path.resolve(cmd.pidFile), String(view.pid));
      }
      return record;
    });
  } catch (err) {
    if (created) await withAgent(globals, (agent) => agent.call('RemoveContainer', { container_id: cmd.id, timeout: 10 })).catch(() => undefined);
    store.remove(cmd.id);
    throw err;
  }
}

/** Start `oci monitor ID` detached (own session) on this process's stdin/stdout/stderr; its pid. */
function startMonitor(globals: OciGlobals, id: string): number {
  const child = spawn(
    process.execPath,
    [path.join(__dirname, 'main.js'), 'oci', '--address', globals.address, '--debug-address', debugAddressFor(globals), '--root', globals.root,
      ...(globals.logFile ? ['--log', globals.logFile, '--log-format', globals.logFormat] : []), 'monitor', id],
    { detached: true, stdio: 'inherit' },
  );
  child.unref();
  return child.pid ?? 0;
}

/**
 * The monitor: copy the init's output to this process's stdout/stderr and this stdin to it
 * (stdin not a terminal), wait for its exit, write the exit record. Ends quietly when the
 * container is removed first (NOT_FOUND).
 */
async function monitor(globals: OciGlobals, store: OciStore, id: string): Promise<number> {
  const status = await withAgent(globals, (agent) =>
    attachProcess(agent, { containerId: id, execId: id, tty: false, interactive: process.stdin.isTTY !== true }, {
      stdin: process.stdin,
      stdout: process.stdout,
      stderr: process.stderr,
      // Signals to the monitor are not the container's business (it has its own session anyway).
      onSignal: () => () => undefined,
    }),
  ).catch((err: unknown) => {
    if (err instanceof StatusError && (err.code === Code.NOT_FOUND || err.code === Code.UNAVAILABLE || err.code === Code.CANCELLED)) return null;
    throw err;
  });
  if (status !== null) store.writeExit(id, status);
  return 0;
}

/** The state JSON now; waits (bounded) for a live monitor to finish copying a stopped container's output. */
async function currentState(store: OciStore, record: OciRecord, debug: string): Promise<OciCliState> {
  const view = await agentView(debug, record.id);
  let exit = store.readExit(record.id);
  if (view?.status === 'stopped' && exit === null) {
    const deadline = Date.now() + MONITOR_DRAIN_WAIT_MS;
    while (exit === null && pidAlive(record.monitorPid) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
      exit = store.readExit(record.id);
    }
  }
  return buildState(record, view, exit, store.owner(record.id));
}

/** `delete`: RemoveContainer (only a stopped container unless `force`), stop the monitor, drop the record. */
async function remove(globals: OciGlobals, store: OciStore, id: string, force: boolean, debug: string): Promise<void> {
  const record = store.get(id);
  if (!force) {
    const state = await currentState(store, record, debug);
    // runtime.md#delete: a container that is not stopped (created included; runc 1.1 deletes a
    // created one) MUST be an error without effect; --force kills it first (RemoveContainer does).
    if (state.status !== 'stopped') throw new OciError(`cannot delete container ${id} that is not stopped: ${state.status}`);
  }
  await withAgent(globals, (agent) => agent.call('RemoveContainer', { container_id: id, timeout: 10 })).catch((err: unknown) => {
    if (!(err instanceof StatusError && err.code === Code.NOT_FOUND)) throw err;
  });
  // The monitor ends by itself once the container is gone (its reads answer NOT_FOUND).
  const deadline = Date.now() + 2000;
  while (pidAlive(record.monitorPid) && isOurMonitor(record.monitorPid, id) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  if (pidAlive(record.monitorPid) && isOurMonitor(record.monitorPid, id)) process.kill(record.monitorPid, 'SIGKILL');
  store.remove(id);
}

/** Whether `pid` still runs this container's monitor (its command line ends `monitor <id>`), not a recycled pid. */
function isOurMonitor(pid: number, id: string): boolean {
  try {
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((a) => a !== '');
    return argv.length >= 2 && argv[argv.length - 2] === 'monitor' && argv[argv.length - 1] === id;
  } catch {
    return false;
  }
}

/** `run` without -d: create, start, attach this program's stdio, remove; resolves with the process's status. */
async function runAttached(globals: OciGlobals, store: OciStore, cmd: Extract<OciCommand, { kind: 'run' }>, io: OciIo): Promise<number> {
  await create(globals, store, cmd, io, false);
  try {
    return await withAgent(globals, async (agent) => {
      await agent.call('StartContainer', { container_id: cmd.id });
      const status = await attachProcess(agent, { containerId: cmd.id, execId: cmd.id, tty: false, interactive: true },
        io.attach ?? { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
      store.writeExit(cmd.id, status);
      return status;
    });
  } finally {
    await withAgent(globals, (agent) => agent.call('RemoveContainer', { container_id: cmd.id, timeout: 10 })).catch(() => undefined);
    store.remove(cmd.id);
  }
}

/** `ps`: the live pids (json: an array), or the `ps -ef` (or PS ARGS) rows of them under the header. */
async function ps(store: OciStore, cmd: Extract<OciCommand, { kind: 'ps' }>, debug: string, io: OciIo): Promise<number> {
  store.get(cmd.id);
  const view = await agentView(debug, cmd.id);
  const pids = view ? view.processes.filter((p) => !p.exited && p.pid > 0).map((p) => p.pid) : [];
  if (cmd.format === 'json') {
    io.stdout(`${JSON.stringify(pids)}\n`);
    return 0;
  }
  const out = spawnSync('ps', cmd.psArgs.length > 0 ? cmd.psArgs : ['-ef'], { encoding: 'utf8' });
  if (out.status !== 0) throw new OciError(`ps ${cmd.psArgs.join(' ')} failed: ${out.stderr || out.error?.message || `exit ${out.status}`}`);
  const lines = out.stdout.split('\n').filter((l) => l !== '');
  const column = (lines[0] ?? '').trim().split(/\s+/).indexOf('PID');
  if (column < 0) throw new OciError('ps output has no PID column');
  const wanted = new Set(pids);
  io.stdout(`${[lines[0], ...lines.slice(1).filter((l) => wanted.has(Number(l.trim().split(/\s+/)[column])))].join('\n')}\n`);
  return 0;
}
