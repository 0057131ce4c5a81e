/**
 * The control plane's Agent: wires the configuration, the helper connection, the sandbox model,
 * the ttRPC server (grpc.AgentService + grpc.Health on one address) and the debug endpoint.
 *
 *   const agent = new Agent({ config, helper, logger });
 *   agent.on('shutdown', () => agent.stop());   // after DestroySandbox (upstream exits then)
 *   await agent.start();
 *
 * Events:
 *   'shutdown'     after a successful DestroySandbox has been answered; the owner should stop
 *                  the agent and exit.
 *   'helper-lost'  the helper connection closed; exit statuses will no longer arrive (pending
 *                  WaitProcess calls fail with UNAVAILABLE). The owner should exit.
 */
import { PassfdListener } from './passfd';
import { EventEmitter } from 'node:events';
import { startLazyDebugServer, type DebugEndpoint } from './debug/lazy';
import { pino, type Logger } from 'pino';
import type { LogRing } from '../shared/log-ring';
import { Code, StatusError, type HelperEvent } from '../shared/protocol';
import { adoptFromHelper, type AdoptionSummary } from './rpc/adopt';
import { restoreKeptPolicy } from './rpc/policy-keep';
import { DEFAULT_DEBUG_ADDR, parseDebugAddr, type AgentConfig } from './config';
import type { HelperConnection } from './helper';
import { AgentService, HealthService, registerServices, type AgentLimits, type GuestOptions } from './rpc';
import { Sandbox } from './sandbox/sandbox';
import { requireUnixPeerUid, TtrpcServer } from './ttrpc';
import type { Tracing } from './tracing';
import { DebugConsole, debugConsoleTarget } from './debug-console';

/**
 * How long {@link Agent.stop} lets in-flight rpcs settle before answering the rest UNAVAILABLE
 * "the agent is shutting down", in ms.
 */
export const STOP_GRACE_MS = 500;

/**
 * Long polls {@link Agent.stop} leaves unanswered: GetOOMEvent ends with its connection, which
 * the Go runtime's watchOOMEvents (shim wait.go) takes as "agent has shutdown" (`ttrpc: closed`)
 * and stops; any status would be logged as "failed to get OOM event" and asked again 1 s later
 * (then redialled in a loop until the dial timeout: the agent is gone). docs/ARCHITECTURE.md
 * "Runtime tests".
 */
const UNANSWERED_AT_STOP: ReadonlySet<string> = new Set(['grpc.AgentService/GetOOMEvent']);

/** Options of {@link Agent}. */
export interface AgentOptions {
  config: AgentConfig;
  /** A connected helper (HelperClient, or the in-process mock's client). */
  helper: HelperConnection;
  /** pino logger (default: silent). */
  logger?: Logger;
  /** Close the helper connection in {@link Agent.stop} (default true). */
  closeHelperOnStop?: boolean;
  /** RemoveContainer bound for timeout 0, in ms (default 30 s). */
  defaultRemoveTimeoutMs?: number;
  /** Helper call deadline, liveness ping, unread-output budget (defaults in control/rpc/core.ts). */
  limits?: AgentLimits;
  /** Guest rpcs: sysfs root, CopyFile / volume roots, initial policy (control/rpc/guest.ts). */
  guest?: GuestOptions;
  /** The logger's ring buffer (shared/log-ring.ts), served by the debug endpoint's /v1/logs. */
  logRing?: LogRing;
  /** OpenTelemetry spans per rpc and per helper call (control/tracing.ts); absent: no tracing. */
  tracing?: Tracing;
}

export interface Agent {
  on(event: 'shutdown', listener: () => void): this;
  on(event: 'helper-lost', listener: () => void): this;
  once(event: 'shutdown', listener: () => void): this;
  once(event: 'helper-lost', listener: () => void): this;
}

/** One agent: one sandbox, one helper, one ttRPC server. */
export class Agent extends EventEmitter {
  readonly config: AgentConfig;
  readonly sandbox = new Sandbox();
  readonly service: AgentService;
  readonly health = new HealthService();
  readonly server: TtrpcServer;
  /** The debug console once {@link start} has started it (null when off). */
  debugConsole: DebugConsole | null = null;
  /** The debug endpoint once {@link start} has started it (null when disabled). */
  debugServer: DebugEndpoint | null = null;
  private readonly helper: HelperConnection;
  private readonly log: Logger;
  private readonly closeHelperOnStop: boolean;
  private readonly onHelperEvent = (event: HelperEvent): void => this.service.handleHelperEvent(event);
  private readonly onHelperClose = (): void => {
    if (this.stopping) return;
    this.helperLost = true;
    this.log.error('connection to the helper lost');
    this.service.handleHelperLost();
    this.emit('helper-lost');
  };
  private started = false;
  private stopping = false;
  private helperLost = false;
  private readonly logRing?: LogRing;
  /** What {@link start} adopted from the helper (null before start or without a state op). */
  adopted: AdoptionSummary | null = null;

  constructor(options: AgentOptions) {
    super();
    this.config = options.config;
    // Spans per helper op wrap the connection; events and close pass straight through.
    this.helper = options.tracing ? options.tracing.wrapHelper(options.helper) : options.helper;
    this.log = options.logger ?? pino({ level: 'silent' });
    this.logRing = options.logRing;
    this.closeHelperOnStop = options.closeHelperOnStop ?? true;
    this.service = new AgentService({
      helper: this.helper,
      sandbox: this.sandbox,
      logger: this.log.child({ component: 'rpc' }),
      onShutdown: () => this.emit('shutdown'),
      defaultRemoveTimeoutMs: options.defaultRemoveTimeoutMs,
      ...options.limits,
      guest: options.guest,
      allowHostNamespaces: this.config.allowHostNamespaces === true,
    });
    // Threat model (docs/ARCHITECTURE.md): on unix sockets only root and the configured uid.
    this.server = new TtrpcServer({
      logger: this.log.child({ component: 'ttrpc' }),
      handshaker: requireUnixPeerUid({ uids: [this.config.serverPeerUid] }),
      allowAbstract: this.config.allowAbstractSocket,
      limits: {
        maxConnections: this.config.maxConnections,
        maxInflightPerConnection: this.config.maxInflight,
        frameTimeoutMs: this.config.frameTimeoutMs,
      },
    });
    registerServices(this.server, this.service, this.health, this.log.child({ component: 'rpc' }), options.tracing);
    this.helper.on('event', this.onHelperEvent);
    this.helper.on('close', this.onHelperClose);
  }

  /**
   * Adopt the helper's sandbox, containers and processes (control/rpc/adopt.ts; rejects with its
   * StatusError, e.g. UNAVAILABLE when the helper is gone), then listen on `config.serverAddr` and start the debug endpoint on `config.debugAddr` (unless
   * ""). Rejects with the listen error (StatusError INVALID_ARGUMENT for a bad address, a
   * system error such as EADDRINUSE otherwise); nothing is left listening then. The default
   * debug address is best-effort: failing to listen there is logged and the agent runs without
   * the endpoint.
   */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    // Re-adopt what a previous control plane left with the helper before serving anything, so
    // that no rpc sees a half-built model (docs/ARCHITECTURE.md "Restart and adoption").
    try {
      this.adopted = await adoptFromHelper(this.service.core);
    } catch (err) {
      if (!(err instanceof StatusError && err.code === Code.UNIMPLEMENTED)) throw err;
      this.log.warn({ err }, 'the helper has no state op: nothing adopted');
    }
    // A SetPolicy answered before the restart stays in force (control/rpc/policy-keep.ts).
    await restoreKeptPolicy(this.service.core, this.service.guest.policy);
    await this.server.listen(this.config.serverAddr);
    if (this.config.passfdListener) {
      try {
        this.service.core.passfd = new PassfdListener(this.config.passfdListener, this.log.child({ component: 'passfd' }));
      } catch (err) {
        await this.server.close();
        throw err;
      }
    }
    if (this.config.debugAddr !== '') {
      try {
        // The address is bound now; fastify and the routes are loaded on the first connection:
        // the ttRPC server does not need them (start-to-SERVING, bench/startup.ts).
        this.debugServer = await startLazyDebugServer(parseDebugAddr(this.config.debugAddr), () => {
          const { buildDebugServer } = require('./debug/server') as typeof import('./debug/server');
          return buildDebugServer(this.sandbox, {
            metrics: this.service.metrics,
            logs: this.logRing,
            config: this.config,
            notReady: () => (this.stopping ? 'stopping' : this.helperLost ? 'helper connection lost' : this.sandbox.destroyed ? 'sandbox destroyed' : null),
          });
        });
      } catch (err) {
        if (this.config.debugAddr === DEFAULT_DEBUG_ADDR) {
          // The default endpoint is a diagnostic: never a reason not to serve the runtime.
          this.log.warn(
            { err, debug: this.config.debugAddr },
            'debug endpoint not started (its directory must be writable by the control uid; set KATA_AGENT_DEBUG_ADDR or --debug-addr, "" disables it)',
          );
        } else {
          await this.server.close();
          throw err;
        }
      }
    }
    const consoleTarget = debugConsoleTarget(this.config);
    if (consoleTarget) {
      try {
        this.debugConsole = await DebugConsole.start(consoleTarget, this.helper, this.log.child({ component: 'debug-console' }));
      } catch (err) {
        // A diagnostic, as the debug endpoint: never a reason not to serve the runtime.
        this.log.warn({ err, target: consoleTarget }, 'debug console not started');
      }
    }
    this.log.info({ address: this.config.serverAddr, debug: this.debugServer ? this.config.debugAddr : null }, 'agent listening');
  }

  /**
   * Stop: close the ttRPC server — new requests are refused, in-flight calls get
   * {@link STOP_GRACE_MS} to settle (e.g. WaitProcess answering UNAVAILABLE after the helper was
   * lost), the rest are answered UNAVAILABLE "the agent is shutting down" except pending
   * GetOOMEvent long polls, which end unanswered with their connection (UNANSWERED_AT_STOP),
   * and every answer is flushed before the connections close — then the debug endpoint and, unless
   * disabled, the helper connection. Containers are left to the helper (it is the source of
   * truth). Idempotent.
   */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    await this.server.close({ graceMs: STOP_GRACE_MS, message: 'the agent is shutting down', unanswered: UNANSWERED_AT_STOP });
    if (this.debugServer) await this.debugServer.close();
    this.debugConsole?.close();
    this.service.core.passfd?.close();
    this.helper.off('event', this.onHelperEvent);
    this.helper.off('close', this.onHelperClose);
    if (this.closeHelperOnStop) this.helper.close();
    this.log.info('agent stopped');
  }
}
