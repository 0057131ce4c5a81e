/**
 * `kata-agent --standalone`: run the whole agent on this machine, outside a VM, for trying it
 * by hand. Starts the helper (root) and the control plane as two processes with
 * scripts/lib/standalone.ts, on unix sockets in a private run directory (default
 * {@link DEFAULT_STANDALONE_RUN_DIR}), daemon logs in files there. Once the agent serves, prints
 * where everything is (the first stdout line is `kata-agent: serving <address>`), and runs until
 * SIGTERM/SIGINT (stops both, exit 0) or until either process exits (stops the other; exit 0 after
 * a DestroySandbox, else 1).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { startStandaloneAgent, tail } from '../scripts/lib/standalone';
import { errorLine, lastFailureIn } from '../shared/log';
import { DEFAULT_DEBUG_ADDR, DEFAULT_STANDALONE_RUN_DIR, type AgentConfig, type StandaloneRequest } from './config';
import { debugConsoleTarget } from './debug-console';
import { controlExitAction } from './init';

export { DEFAULT_STANDALONE_RUN_DIR };

/** Arguments of the control plane in stand-alone mode: `argv` without --standalone and --run-dir. */
export function controlArgsFor(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--standalone' || a.startsWith('--run-dir=')) continue;
    if (a === '--run-dir') {
      i++;
      continue;
    }
    out.push(a);
  }
  return out;
}

/**
 * The stand-alone debug endpoint: `unix://<controlDir>/debug.sock` unless the configuration
 * names another one (--debug-addr / KATA_AGENT_DEBUG_ADDR, kept as given; "" = off).
 */
export function standaloneDebugAddr(configured: string, controlDir: string): string {
  return configured === DEFAULT_DEBUG_ADDR ? `unix://${path.join(controlDir, 'debug.sock')}` : configured;
}

/**
 * How a child process ended, for the messages: "exit status N", or "killed by SIGNAME" when
 * `code` is null (Node's 'exit' event gives a signal instead of a code); "still running" when
 * both are null.
 */
export function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  if (code !== null) return `exit status ${code}`;
  return signal ? `killed by ${signal}` : 'still running';
}

/** What the stand-alone banner shows (see {@link standaloneBanner}). */
export interface StandaloneBannerInfo {
  address: string;
  runDir: string;
  controlUser: string;
  controlLog: string;
  helperLog: string;
  /** "" when the debug endpoint is off. */
  debugAddr: string;
  /** The agent's configuration: a debug console it serves is shown with its address. */
  config: Pick<AgentConfig, 'debugConsole' | 'debugConsoleVport' | 'debugConsoleAddr' | 'allowHostNamespaces'>;
  pid: number;
}

/**
 * The lines printed once the stand-alone agent serves; the first is `kata-agent: serving
 * <address>` (scripts and tests wait for it). A debug console (`--debug-console`) is shown with
 * where it listens (or its tty).
 */
export function standaloneBanner(b: StandaloneBannerInfo): string {
  const console = debugConsoleTarget(b.config);
  return (
    `kata-agent: serving ${b.address}\n` +
    `  run directory: ${b.runDir} (control plane as ${b.controlUser})\n` +
    `  logs: ${b.controlLog} ${b.helperLog}\n` +
    (b.debugAddr ? `  debug endpoint: ${b.debugAddr}\n` : '') +
    (console ? `  debug console: ${console.kind === 'listen' ? console.address : console.path}\n` : '') +
    (b.config.allowHostNamespaces ? '  host namespaces: allowed (--allow-host-namespaces: containers may share or join the agent\'s namespaces)\n' : '') +
    `  stop: kill ${b.pid}\n`
  );
}

/**
 * Run stand-alone (see the module comment); resolves with the exit code. Exit 1 with the reason
 * on stderr when not root or when either process fails to come up (with its log's tail).
 */
export async function runStandalone(config: AgentConfig, argv: readonly string[], req: StandaloneRequest): Promise<number> {
  if (process.getuid && process.getuid() !== 0) {
    process.stderr.write('kata-agent: --standalone needs root (the helper mounts and creates namespaces)\n');
    return 1;
  }
  const runDir = path.resolve(req.runDir ?? DEFAULT_STANDALONE_RUN_DIR);
  const controlDir = path.join(runDir, 'control');
  let agent;
  // Stopped while starting: stop what was spawned so far instead of leaving it running.
  const spawned: ChildProcess[] = [];
  const early = (signal: NodeJS.Signals): void => {
    for (const child of spawned) if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    process.stderr.write(`kata-agent: ${signal} while starting; stopped\n`);
    process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
  };
  process.once('SIGTERM', early);
  process.once('SIGINT', early);
  try {
    fs.mkdirSync(runDir, { recursive: true, mode: 0o755 });
    agent = await startStandaloneAgent({
      freshLogs: true, // after its check that the run directory is not in use
      onSpawn: (child) => spawned.push(child),
      runDir,
      logLevel: config.logLevel,
      debugAddr: standaloneDebugAddr(config.debugAddr, controlDir),
      // the helper serves the console's shells only when told so itself
      helperArgs: [
        '--hotplug-timeout-ms', String(config.hotplugTimeoutMs),
        ...(config.debugConsole ? ['--debug-console'] : []),
        // host-namespace mode needs the helper's own switch as well (helper/main.ts)
        ...(config.allowHostNamespaces ? ['--allow-host-namespaces'] : []),
      ],
      controlArgs: controlArgsFor(argv),
    });
  } catch (err) {
    // One line: what did not come up, and why according to its log's last failure record.
    const first = errorLine(err);
    const logFile = /log: (\S+)/.exec(first)?.[1];
    const why = logFile ? lastFailureIn(readOr(logFile)) : undefined;
    process.stderr.write(`kata-agent: cannot start stand-alone: ${first}${why ? ` — ${why}` : ''}\n`);
    return 1;
  } finally {
    process.removeListener('SIGTERM', early);
    process.removeListener('SIGINT', early);
  }
  process.stdout.write(
    standaloneBanner({
      address: agent.address,
      runDir,
      controlUser: agent.controlUser,
      controlLog: agent.controlLog,
      helperLog: agent.helperLog,
      debugAddr: agent.debugAddr,
      config,
      pid: process.pid,
    }),
  );

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (code: number, why: string): void => {
      if (stopping) return;
      stopping = true;
      agent.stop().then((codes) => {
        const ended = (c: number | null): string => (c === null ? 'killed by a signal' : `exit status ${c}`);
        process.stdout.write(`kata-agent: stopped (${why}; control: ${ended(codes.control)}, helper: ${ended(codes.helper)})\n`);
        resolve(code);
      });
    };
    process.on('SIGTERM', () => stop(0, 'SIGTERM'));
    process.on('SIGINT', () => stop(0, 'SIGINT'));
    // A control plane that dies while the helper lives is started again, as init mode and the
    // systemd unit do (control/init.ts controlExitAction): the new one adopts the containers.
    const restarts: number[] = [];
    const watchControl = (): void => {
      agent.control.once('exit', (code, signal) => {
        if (stopping) return;
        const how = describeExit(code, signal);
        const helperAlive = agent.helper.exitCode === null && agent.helper.signalCode === null;
        const action = controlExitAction(code !== null ? `exit ${code}` : `signal ${signal}`, restarts, Date.now());
        if (helperAlive && action === 'restart') {
          restarts.push(Date.now());
          process.stderr.write(`kata-agent: control plane ended (${how}); starting a new one, which adopts the running containers; ${agent.controlLog}:\n${tail(agent.controlLog)}\n`);
          agent.restartControl().then(
            () => {
              if (stopping) return;
              process.stdout.write(`kata-agent: control plane restarted (pid ${agent.control.pid}); serving ${agent.address}\n`);
              watchControl();
            },
            (err: unknown) => stop(1, `control plane did not come back: ${errorLine(err)}`),
          );
          return;
        }
        if (code !== 0) process.stderr.write(`kata-agent: control plane ended (${how}); ${agent.controlLog}:\n${tail(agent.controlLog)}\n`);
        stop(code === 0 ? 0 : 1, `control plane ended: ${how}`);
      });
    };
    watchControl();
    agent.helper.once('exit', (code, signal) => {
      if (stopping) return;
      const how = describeExit(code, signal);
      process.stderr.write(`kata-agent: helper ended (${how}); ${agent.helperLog}:\n${tail(agent.helperLog)}\n`);
      stop(1, `helper ended: ${how}`);
    });
  });
}

function readOr(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}
