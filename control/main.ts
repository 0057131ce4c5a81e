/**
 * `kata-agent`: the control plane's entry point.
 *
 * Reads the configuration (control/config.ts), connects to the helper (retrying for up to 10 s
 * while its socket does not exist yet or refuses connections), starts the ttRPC server and the
 * debug endpoint, logs an announce record, and runs until SIGTERM/SIGINT (clean stop, exit 0),
 * a DestroySandbox (as upstream, the agent exits after answering it; exit 0) or the loss of the
 * helper connection (exit 1). A start-up failure exits 1 with the reason logged.
 * Started as PID 1 (a guest's init), it runs init mode instead (control/init.ts): early mounts,
 * helper and control plane as children, reaping, power-off at the end.
 */
import { LogRing } from '../shared/log-ring';
import { createLogger, errorLine, startupFailure, type Logger } from '../shared/log';
import { HelperClient } from '../shared/helper-client';
import { Code, StatusError } from '../shared/protocol';
import { Agent } from './agent';
import { loadConfig, USAGE, type AgentConfig } from './config';
import { NOT_ACTED_ON, upstreamDefaults } from './config-upstream';
import { runStandalone } from './standalone';
import { runInit } from './init';
import { DEFAULT_TRACE_EXPORTER, parseTraceExporter, startTracing, type Tracing } from './tracing';
import { agentVersion } from './rpc/health';
import { parseAddress, probeUnixSocket } from './ttrpc';
import { entryKind } from '../shared/launch';

/** How long to keep retrying the helper connection at start-up, in ms. */
export const HELPER_CONNECT_TIMEOUT_MS = 10_000;
/** Pause between helper connection attempts, in ms. */
const HELPER_RETRY_MS = 10;

/**
 * Connect to the helper at `socketPath`, retrying while the connection is UNAVAILABLE (the
 * socket does not exist yet, ECONNREFUSED) for at most `timeoutMs`. Other errors (a protocol
 * version mismatch: FAILED_PRECONDITION) fail at once.
 */
export async function connectHelper(socketPath: string, log: Logger, timeoutMs = HELPER_CONNECT_TIMEOUT_MS): Promise<HelperClient> {
  const deadline = Date.now() + timeoutMs;
  let attempts = 0;
  for (;;) {
    attempts++;
    try {
      return await HelperClient.connect(socketPath, { logger: log, timeoutMs: Math.max(1000, deadline - Date.now()) });
    } catch (err) {
      const retriable = err instanceof StatusError && err.code === Code.UNAVAILABLE;
      if (!retriable) throw err;
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new StatusError(Code.UNAVAILABLE, `helper not reachable at ${socketPath} after ${attempts} attempts in ${timeoutMs} ms: ${err.message}`);
      }
      if (attempts === 1) log.info({ socket: socketPath }, 'waiting for the helper socket');
      await new Promise((resolve) => setTimeout(resolve, Math.min(HELPER_RETRY_MS, remaining)));
    }
  }
}

/**
 * Check, before anything else starts, that the agent may listen on `config.serverAddr`: an
 * abstract address needs `allowAbstractSocket` (PERMISSION_DENIED otherwise), and a live server
 * on the unix path is never taken over (FAILED_PRECONDITION `another agent is serving <path>`).
 * A stale socket file is left for the listener to replace. Other errors as
 * {@link parseAddress} / {@link probeUnixSocket}. The listener checks again (the state may
 * change in between); this early check keeps a second agent from even connecting to the helper.
 */
export async function checkServerAddress(config: AgentConfig): Promise<void> {
  const address = parseAddress(config.serverAddr);
  if (address.kind === 'abstract' && !config.allowAbstractSocket) {
    throw new StatusError(
      Code.PERMISSION_DENIED,
      `refusing to listen on the abstract socket ${config.serverAddr}: containers share the guest network namespace and could connect to it (use --allow-abstract-socket to allow it anyway)`,
    );
  }
  if (address.kind === 'unix' && (await probeUnixSocket(address.path)) === 'live') {
    throw new StatusError(Code.FAILED_PRECONDITION, `another agent is serving ${address.path}; refusing to start (stop it first)`);
  }
}

/**
 * Run the agent; resolves with the process exit code. Meant for the process's entry point
 * ({@link run}): its SIGTERM/SIGINT handlers stay installed until the process exits.
 */
export async function main(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  if (process.pid === 1) return runInit(argv, env);
  let loaded;
  try {
    loaded = loadConfig(argv, env);
  } catch (err) {
    process.stderr.write(`kata-agent: ${errorLine(err)} (kata-agent --help shows the usage)\n`);
    return 2;
  }
  if (loaded.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const config = loaded.config;
  if (loaded.standalone) return runStandalone(config, argv, loaded.standalone);
  const logRing = new LogRing(1000);
  const log = createLogger('kata-agent', config.logLevel, { ring: logRing });
  for (const warning of loaded.warnings) log.warn(warning);
  const defaults = upstreamDefaults();
  const ignored = NOT_ACTED_ON.filter((k) => config[k] !== defaults[k]);
  if (ignored.length > 0) {
    log.warn({ options: Object.fromEntries(ignored.map((k) => [k, config[k]])) }, 'options parsed but not acted on yet (docs/ARCHITECTURE.md)');
  }

  try {
    await checkServerAddress(config);
  } catch (err) {
    startupFailure(log, 'kata-agent', 'cannot start the agent', err, { address: config.serverAddr });
    return 1;
  }

  let helper: HelperClient;
  try {
    helper = await connectHelper(config.helperSocket, log);
  } catch (err) {
    startupFailure(log, 'kata-agent', 'cannot connect to the helper', err);
    return 1;
  }

  let tracing: Tracing | undefined;
  if (config.tracing) {
    const exporter = config.traceExporter ?? DEFAULT_TRACE_EXPORTER;
    tracing = startTracing(parseTraceExporter(exporter), log.child({ component: 'tracing' }));
    log.info({ exporter }, 'tracing on: spans per rpc and per helper op');
  }
  const agent = new Agent({ config, helper, logger: log, logRing, tracing });
  let resolveExit!: (code: number) => void;
  const exited = new Promise<number>((resolve) => {
    resolveExit = resolve;
  });
  let stopping = false;
  const stop = (code: number, reason: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ reason }, 'stopping');
    agent
      .stop()
      .then(() => tracing?.shutdown())
      .then(
        () => resolveExit(code),
        (err: unknown) => {
          log.error({ err }, 'error while stopping');
          resolveExit(1);
        },
      );
  };
  agent.on('shutdown', () => stop(0, 'sandbox destroyed'));
  agent.on('helper-lost', () => stop(1, 'helper connection lost'));
  // The handlers stay installed until the process exits (run() calls process.exit): removing
  // them would restore the default action, and a second SIGTERM in the window between the stop
  // and the exit would kill the process ("exit null"). While stopping, signals are ignored.
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      log.debug({ signal }, 'already stopping; signal ignored');
      return;
    }
    stop(0, signal);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  try {
    await agent.start();
  } catch (err) {
    startupFailure(log, 'kata-agent', `cannot start the agent on ${config.serverAddr}`, err, { address: config.serverAddr });
    await agent.stop().catch(() => undefined);
    return 1;
  }
  log.info(
    {
      version: agentVersion(),
      address: config.serverAddr,
      debugAddr: agent.debugServer ? config.debugAddr : null,
      helperSocket: config.helperSocket,
      helperPid: helper.helperPid,
      adopted: agent.adopted,
      // 'bundle' or 'modules' when started through bin/kata-agent (shared/launch.ts)
      entry: entryKind() ?? null,
      config,
    },
    'announce',
  );
  return exited;
}

/** Run {@link main} with this process's arguments and environment, then exit with its code. */
export function run(): void {
  main(process.argv.slice(2), process.env).then(
    (code) => process.exit(code),
    (err: unknown) => {
      // One line for the person; the stack as a JSON record for the log.
      process.stderr.write(`kata-agent: ${errorLine(err)}\n`);
      createLogger('kata-agent').fatal({ err }, 'unexpected failure');
      process.exit(1);
    },
  );
}

if (require.main === module) run();
