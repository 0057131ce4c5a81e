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
import { startStandaloneAgent, tail } from '../scripts/lib/standalone';
import { errorLine, lastFailureIn } from '../shared/log';
import { DEFAULT_STANDALONE_RUN_DIR, type AgentConfig, type StandaloneRequest } from './config';

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
  try {
    fs.mkdirSync(runDir, { recursive: true, mode: 0o755 });
    for (const f of ['helper.log', 'control.log']) fs.rmSync(path.join(runDir, f), { force: true });
    agent = await startStandaloneAgent({
      runDir,
      logLevel: config.logLevel,
      debugAddr: config.debugAddr === '' ? '' : `unix://${path.join(controlDir, 'debug.sock')}`,
      // the helper serves the console's shells only when told so itself
      helperArgs: ['--hotplug-timeout-ms', String(config.hotplugTimeoutMs), ...(config.debugConsole ? ['--debug-console'] : [])],
      controlArgs: controlArgsFor(argv),
    });
  } catch (err) {
    // One line: what did not come up, and why according to its log's last failure record.
    const first = errorLine(err);
    const logFile = /log: (\S+)/.exec(first)?.[1];
    const why = logFile ? lastFailureIn(readOr(logFile)) : undefined;
    process.stderr.write(`kata-agent: cannot start stand-alone: ${first}${why ? ` — ${why}` : ''}\n`);
    return 1;
  }
  process.stdout.write(
    `kata-agent: serving ${agent.address}\n` +
      `  run directory: ${runDir} (control plane as ${agent.controlUser})\n` +
      `  logs: ${agent.controlLog} ${agent.helperLog}\n` +
      (agent.debugAddr ? `  debug endpoint: ${agent.debugAddr}\n` : '') +
      `  stop: kill ${process.pid}\n`,
  );

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (code: number, why: string): void => {
      if (stopping) return;
      stopping = true;
      agent.stop().then((codes) => {
        process.stdout.write(`kata-agent: stopped (${why}; control exit ${codes.control}, helper exit ${codes.helper})\n`);
        resolve(code);
      });
    };
    process.on('SIGTERM', () => stop(0, 'SIGTERM'));
    process.on('SIGINT', () => stop(0, 'SIGINT'));
    agent.control.once('exit', (code) => {
      if (stopping) return;
      if (code !== 0) process.stderr.write(`kata-agent: control plane exited (${code}); ${agent.controlLog}:\n${tail(agent.controlLog)}\n`);
      stop(code === 0 ? 0 : 1, `control plane exited ${code}`);
    });
    agent.helper.once('exit', (code) => {
      if (stopping) return;
      process.stderr.write(`kata-agent: helper exited (${code}); ${agent.helperLog}:\n${tail(agent.helperLog)}\n`);
      stop(1, `helper exited ${code}`);
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
