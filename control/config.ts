/**
 * Configuration of the control plane (`kata-agent`).
 *
 * Sources, later ones winning: built-in defaults; upstream's sources (control/config-upstream.ts:
 * a TOML file from `-c/--config` or `agent.config_file=`, else the kernel command line's
 * `agent.*` words then KATA_AGENT_SERVER_ADDR / KATA_AGENT_LOG_LEVEL / KATA_AGENT_TRACING);
 * this agent's own environment variables below; command-line flags.
 *
 *   field         env                          flag               default
 *   serverAddr    KATA_AGENT_SERVER_ADDR       --server-address   vsock://-1:1024
 *   helperSocket  KATA_AGENT_HELPER_SOCKET     --helper-socket    /run/kata-agent/helper.sock
 *   logLevel      KATA_AGENT_LOG_LEVEL         --log-level        info
 *   debugAddr     KATA_AGENT_DEBUG_ADDR        --debug-addr       unix:///run/kata-agent/control/debug.sock ("" disables)
 *   serverPeerUid KATA_AGENT_SERVER_PEER_UID   --server-peer-uid  the control plane's own uid
 *   allowAbstractSocket KATA_AGENT_ALLOW_ABSTRACT_SOCKET (1/true) --allow-abstract-socket  false
 *   maxConnections KATA_AGENT_MAX_CONNECTIONS  --max-connections  RLIMIT_NOFILE soft / 4, 16..1024
 *   maxInflight   KATA_AGENT_MAX_INFLIGHT      --max-inflight     512 per connection
 *   frameTimeoutMs KATA_AGENT_FRAME_TIMEOUT_MS --frame-timeout-ms 10000 (0 disables)
 *   passfdListener KATA_AGENT_PASSFD_LISTENER  --passfd-listener  "" (off); vsock://-1:PORT as upstream
 *                  agent.passfd_listener_port, or unix:///path (tests; control/passfd.ts)
 *   debugConsoleAddr KATA_AGENT_DEBUG_CONSOLE_ADDR --debug-console-addr  from upstream's options: where the
 *                  debug console (on with agent.debug_console / --debug-console) is served:
 *                  vsock://-1:PORT, unix:///path, tty:/dev/NAME; "" off (control/debug-console.ts)
 *   allowHostNamespaces KATA_AGENT_ALLOW_HOST_NAMESPACES (1/true) --allow-host-namespaces  false
 *                  (also TOML `allow_host_namespaces = true`, this agent's own key);
 *                  host-namespace mode for stand-alone OCI use (control/oci.ts "Host-namespace
 *                  mode", docs/ARCHITECTURE.md "Host namespaces"); the helper has its own switch
 *                  (helper --allow-host-namespaces), which `--standalone` passes on
 *   traceExporter KATA_AGENT_TRACE_EXPORTER   --trace-exporter   console; where spans go when tracing
 *                  (agent.trace, KATA_AGENT_TRACING, --trace) is on: otlp:URL, file:/path, console
 *                  (control/tracing.ts)
 *
 * The ttRPC socket (threat model in docs/ARCHITECTURE.md): on a unix socket only peers with uid
 * 0 or `serverPeerUid` are served (SO_PEERCRED); an abstract address is refused unless
 * `allowAbstractSocket` (containers share the guest network namespace and could reach it); a
 * path socket is created 0600. vsock is not checked: its peer is the host.
 *
 * KATA_AGENT_SERVER_ADDR and its default follow upstream (inventory §2.1, §5.2).
 *
 * The debug endpoint (control/debug/server.ts) lists container ids and pids. By default it is a
 * unix socket, mode 0600 and owned by the control plane's uid, in the directory the helper
 * prepares for the control uid (helper/main.ts prepareControlDir), because Kata containers share
 * the guest's network namespace: a TCP port, even on 127.0.0.1, would be reachable from inside
 * every container. Query it as the control uid (or root) with
 *
 *   curl --unix-socket /run/kata-agent/control/debug.sock http://localhost/v1/sandbox
 *
 * `host:port` (e.g. `127.0.0.1:9099`, `[::1]:9099`) listens on TCP instead: an explicit opt-in,
 * for development. "" disables the endpoint. The default socket is best-effort: when it cannot
 * be created (e.g. its directory is not writable by the control uid) the agent logs a warning
 * and runs without it; an address given explicitly that cannot be listened on stops start-up.
 */
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { parseLogLevel, type LogLevel } from '../shared/log';
import { Code, DEFAULT_HELPER_SOCKET, StatusError } from '../shared/protocol';
import { parseTraceExporter } from './tracing';
import { debugConsoleTarget } from './debug-console';
import { DEFAULT_SERVER_ADDR, loadUpstreamOptions, upstreamDefaults, type UpstreamOptions } from './config-upstream';

export { DEFAULT_SERVER_ADDR };
/** Default address of the debug HTTP endpoint: a unix socket only the control uid can use. */
export const DEFAULT_DEBUG_ADDR = 'unix:///run/kata-agent/control/debug.sock';
/** Run directory of `--standalone` without `--run-dir` (not the guest's /run/kata-agent). */
export const DEFAULT_STANDALONE_RUN_DIR = '/run/kata-agent-standalone';
/** Default pino log level. */
export const DEFAULT_LOG_LEVEL: LogLevel = 'info';

/** Level names accepted (pino's, plus upstream's logrus names warning/panic/critical). */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;
export type { LogLevel };

/** The control plane's configuration: upstream's options plus this agent's own. */
export interface AgentConfig extends UpstreamOptions {
  /** ttRPC listen address: `unix:///path`, `unix://@name` or `vsock://<cid>:<port>`. */
  serverAddr: string;
  /** The TOML file the upstream options came from, if any. */
  configFile?: string;
  /** Path of the helper's SOCK_SEQPACKET socket ("@name" = abstract). */
  helperSocket: string;
  /** pino log level. */
  logLevel: LogLevel;
  /** Debug HTTP endpoint: `unix:///abs/path` or `host:port` (TCP, opt-in); "" disables it. */
  debugAddr: string;
  /** Uid allowed to connect to a unix ttRPC socket besides root (SO_PEERCRED). */
  serverPeerUid: number;
  /** Listen on an abstract unix address when asked to (refused otherwise). */
  allowAbstractSocket: boolean;
  /** Connections served at once (default: from RLIMIT_NOFILE, see control/ttrpc/limits.ts). */
  maxConnections?: number;
  /** Requests in flight per connection (default 512). */
  maxInflight?: number;
  /** Time a frame may take to arrive completely, in ms (default 10000; 0 disables). */
  frameTimeoutMs?: number;
  /** passfd I/O listener address (control/passfd.ts); "" or absent: off. */
  passfdListener?: string;
  /** Debug console address (control/debug-console.ts); absent: from debugConsoleVport; "" off. */
  debugConsoleAddr?: string;
  /** Span exporter when `tracing` is on (control/tracing.ts parseTraceExporter); absent: console. */
  traceExporter?: string;
  /**
   * Host-namespace mode (runc semantics for stand-alone OCI use): a spec may omit any namespace
   * (the container shares the agent's) and namespace paths are joined as given. Off by default.
   */
  allowHostNamespaces?: boolean;
}

/** The built-in defaults. */
export function defaultConfig(): AgentConfig {
  return {
    ...upstreamDefaults(),
    serverAddr: DEFAULT_SERVER_ADDR,
    helperSocket: DEFAULT_HELPER_SOCKET,
    logLevel: DEFAULT_LOG_LEVEL,
    debugAddr: DEFAULT_DEBUG_ADDR,
    serverPeerUid: process.getuid?.() ?? 0,
    allowAbstractSocket: false,
  };
}

/** Parse a non-negative decimal integer (at most `max`); StatusError INVALID_ARGUMENT naming the value and source. */
function parseCount(value: string, source: string, min: number, max: number): number {
  const n = /^[0-9]{1,10}$/.test(value) ? Number(value) : NaN;
  if (!(n >= min && n <= max)) {
    throw new StatusError(Code.INVALID_ARGUMENT, `invalid ${source} ${JSON.stringify(value)} (want an integer ${min}..${max})`);
  }
  return n;
}

function parseBool(value: string, source: string): boolean {
  if (/^(1|true|yes|on)$/i.test(value)) return true;
  if (/^(0|false|no|off|)$/i.test(value)) return false;
  throw new StatusError(Code.INVALID_ARGUMENT, `invalid ${source} ${JSON.stringify(value)} (want true or false)`);
}

function checkLogLevel(value: string, source: string): LogLevel {
  const level = parseLogLevel(value);
  if (level === undefined) {
    throw new StatusError(
      Code.INVALID_ARGUMENT,
      `invalid log level ${JSON.stringify(value)} from ${source} (want one of ${LOG_LEVELS.join(', ')})`,
    );
  }
  return level;
}

/** A parsed debug endpoint address. */
export type DebugAddress = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

/**
 * Parse a debug endpoint address: `unix:///abs/path` (a unix socket file; abstract sockets
 * are refused: they have no permissions and are reachable from the whole network namespace)
 * or `host:port` (TCP; IPv6 hosts in brackets, e.g. `[::1]:9099`). Throws StatusError
 * INVALID_ARGUMENT naming the value when it is neither.
 */
export function parseDebugAddr(addr: string): DebugAddress {
  if (addr.startsWith('unix://')) {
    const p = addr.slice('unix://'.length);
    if (!p.startsWith('/') || p.includes('\0') || Buffer.byteLength(p) > 107) {
      throw new StatusError(
        Code.INVALID_ARGUMENT,
        `invalid debug address ${JSON.stringify(addr)} (want unix:///absolute/path, at most 107 bytes; abstract sockets are not allowed)`,
      );
    }
    return { kind: 'unix', path: p };
  }
  const m = /^(\[[0-9A-Fa-f:.]+\]|[^:[\]\s/]+):([0-9]{1,5})$/.exec(addr);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) {
    throw new StatusError(Code.INVALID_ARGUMENT, `invalid debug address ${JSON.stringify(addr)} (want unix:///path or host:port)`);
  }
  const host = m[1].startsWith('[') ? m[1].slice(1, -1) : m[1];
  return { kind: 'tcp', host, port };
}

/** Usage text of the command-line flags. */
export const USAGE = `usage: kata-agent [options]
  --standalone            start the helper too (as root), on unix sockets in a private run
                          directory; print the address once serving; run until SIGTERM
  --run-dir DIR           run directory of --standalone (default ${DEFAULT_STANDALONE_RUN_DIR})
  -c, --config FILE       upstream TOML config file; the kernel command line's agent.* options
                          and KATA_AGENT_SERVER_ADDR/LOG_LEVEL/TRACING are then ignored
  (also read: /proc/cmdline agent.* options, as upstream; see docs/ARCHITECTURE.md)
  --server-address ADDR   ttRPC listen address (unix:///path, unix://@name, vsock://CID:PORT)
                          [env KATA_AGENT_SERVER_ADDR, default ${DEFAULT_SERVER_ADDR}]
  --helper-socket PATH    helper socket [env KATA_AGENT_HELPER_SOCKET, default ${DEFAULT_HELPER_SOCKET}]
  --debug-addr ADDR       debug HTTP endpoint: unix:///path (mode 0600) or HOST:PORT (TCP, reachable
                          from containers sharing the network namespace), "" disables
                          [env KATA_AGENT_DEBUG_ADDR, default ${DEFAULT_DEBUG_ADDR}]
  --log-level LEVEL       ${LOG_LEVELS.join('|')} [env KATA_AGENT_LOG_LEVEL, default ${DEFAULT_LOG_LEVEL}]
  --server-peer-uid UID   uid allowed on a unix ttRPC socket besides root (SO_PEERCRED)
                          [env KATA_AGENT_SERVER_PEER_UID, default: the agent's own uid]
  --allow-abstract-socket accept a unix://@name server address (reachable from containers)
                          [env KATA_AGENT_ALLOW_ABSTRACT_SOCKET=1]
  --max-connections N     ttRPC connections served at once [env KATA_AGENT_MAX_CONNECTIONS,
                          default RLIMIT_NOFILE/4, 16..1024]
  --max-inflight N        requests in flight per connection [env KATA_AGENT_MAX_INFLIGHT, default 512]
  --frame-timeout-ms MS   a frame must arrive within MS, else the connection is closed
                          [env KATA_AGENT_FRAME_TIMEOUT_MS, default 10000, 0 disables]
  --passfd-listener ADDR  passfd I/O listener: vsock://-1:PORT (upstream agent.passfd_listener_port)
                          or unix:///path [env KATA_AGENT_PASSFD_LISTENER, default off]
  --debug-console         a root shell for debugging (upstream agent.debug_console): on
                          /dev/console, or per connection on vsock port agent.debug_console_vport
  --debug-console-addr A  where: vsock://-1:PORT, unix:///path or tty:/dev/NAME; "" disables
                          [env KATA_AGENT_DEBUG_CONSOLE_ADDR]
  --allow-host-namespaces a spec may omit namespaces (the container shares the agent's) and
                          join any namespace path, as with runc; for stand-alone OCI use only
                          (the helper needs its own --allow-host-namespaces; --standalone passes it)
                          [env KATA_AGENT_ALLOW_HOST_NAMESPACES=1, default off]
  --trace                 OpenTelemetry spans per rpc and helper op (upstream agent.trace)
                          [env KATA_AGENT_TRACING=1, default off]
  --trace-exporter SPEC   where spans go: otlp:http://HOST:4318/v1/traces, file:/PATH or console
                          [env KATA_AGENT_TRACE_EXPORTER, default console]
  -h, --help              print this help`;

/** Stand-alone mode requested on the command line. */
export interface StandaloneRequest {
  /** --run-dir, if given. */
  runDir?: string;
}

/**
 * Result of {@link loadConfig}: the configuration (with the warnings about ignored input, and
 * the stand-alone request if any), or a request for the usage text.
 */
export type LoadedConfig =
  | { help: true }
  | { help: false; config: AgentConfig; warnings: string[]; standalone?: StandaloneRequest };

/** Sources {@link loadConfig} reads besides argv and env (tests give them explicitly). */
export interface ConfigSources {
  /** Kernel command line (default: the contents of /proc/cmdline, "" when unreadable). */
  cmdline?: string;
}

function readProcCmdline(): string {
  try {
    return fs.readFileSync('/proc/cmdline', 'utf8');
  } catch {
    return '';
  }
}

/**
 * Build the configuration from the command-line `argv` (without node and the script), `env`
 * and the kernel command line / TOML file (precedence in the file comment). Throws StatusError
 * INVALID_ARGUMENT for an unknown flag, a missing flag value, a bad log level, a bad debug
 * address, a uid, count or timeout that is not an integer in range, or a malformed upstream
 * option (the message names the option and the value).
 */
export function loadConfig(argv: readonly string[], env: NodeJS.ProcessEnv, sources: ConfigSources = {}): LoadedConfig {
  const values = parseFlags(argv);
  if (values.help) return { help: true };
  const configFile = typeof values.config === 'string' ? values.config : undefined;
  const upstream = loadUpstreamOptions(sources.cmdline ?? readProcCmdline(), env, configFile);
  const config: AgentConfig = { ...defaultConfig(), ...upstream.options };
  if (upstream.configFile !== undefined) config.configFile = upstream.configFile;
  if (env.KATA_AGENT_HELPER_SOCKET) config.helperSocket = env.KATA_AGENT_HELPER_SOCKET;
  if (env.KATA_AGENT_DEBUG_ADDR !== undefined) config.debugAddr = env.KATA_AGENT_DEBUG_ADDR;
  const UID_MAX = 0xfffffffe;
  if (env.KATA_AGENT_SERVER_PEER_UID) config.serverPeerUid = parseCount(env.KATA_AGENT_SERVER_PEER_UID, 'KATA_AGENT_SERVER_PEER_UID', 0, UID_MAX);
  if (env.KATA_AGENT_ALLOW_ABSTRACT_SOCKET !== undefined) config.allowAbstractSocket = parseBool(env.KATA_AGENT_ALLOW_ABSTRACT_SOCKET, 'KATA_AGENT_ALLOW_ABSTRACT_SOCKET');
  if (env.KATA_AGENT_MAX_CONNECTIONS) config.maxConnections = parseCount(env.KATA_AGENT_MAX_CONNECTIONS, 'KATA_AGENT_MAX_CONNECTIONS', 1, 1_000_000);
  if (env.KATA_AGENT_MAX_INFLIGHT) config.maxInflight = parseCount(env.KATA_AGENT_MAX_INFLIGHT, 'KATA_AGENT_MAX_INFLIGHT', 1, 1_000_000);
  if (env.KATA_AGENT_PASSFD_LISTENER) config.passfdListener = env.KATA_AGENT_PASSFD_LISTENER;
  if (env.KATA_AGENT_DEBUG_CONSOLE_ADDR !== undefined) config.debugConsoleAddr = env.KATA_AGENT_DEBUG_CONSOLE_ADDR;
  if (env.KATA_AGENT_TRACE_EXPORTER) config.traceExporter = env.KATA_AGENT_TRACE_EXPORTER;
  if (env.KATA_AGENT_ALLOW_HOST_NAMESPACES !== undefined) config.allowHostNamespaces = parseBool(env.KATA_AGENT_ALLOW_HOST_NAMESPACES, 'KATA_AGENT_ALLOW_HOST_NAMESPACES');
  if (env.KATA_AGENT_FRAME_TIMEOUT_MS) config.frameTimeoutMs = parseCount(env.KATA_AGENT_FRAME_TIMEOUT_MS, 'KATA_AGENT_FRAME_TIMEOUT_MS', 0, 0x7fffffff);
  applyFlags(values, config);
  if (config.serverAddr === '') throw new StatusError(Code.INVALID_ARGUMENT, 'empty server address');
  if (config.helperSocket === '') throw new StatusError(Code.INVALID_ARGUMENT, 'empty helper socket path');
  if (config.debugAddr !== '') parseDebugAddr(config.debugAddr);
  if (config.traceExporter !== undefined) parseTraceExporter(config.traceExporter);
  debugConsoleTarget(config);
  const loaded: LoadedConfig = { help: false, config, warnings: upstream.warnings };
  if (values.standalone === true) {
    loaded.standalone = typeof values['run-dir'] === 'string' ? { runDir: values['run-dir'] } : {};
  } else if (values['run-dir'] !== undefined) {
    throw new StatusError(Code.INVALID_ARGUMENT, `--run-dir needs --standalone\n${USAGE}`);
  }
  return loaded;
}

type FlagValues = Record<string, string | boolean | undefined>;

function parseFlags(argv: readonly string[]): FlagValues {
  try {
    return parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        'server-address': { type: 'string' },
        'helper-socket': { type: 'string' },
        'debug-addr': { type: 'string' },
        'log-level': { type: 'string' },
        'server-peer-uid': { type: 'string' },
        'allow-abstract-socket': { type: 'boolean' },
        'allow-host-namespaces': { type: 'boolean' },
        'max-connections': { type: 'string' },
        'max-inflight': { type: 'string' },
        'frame-timeout-ms': { type: 'string' },
        'passfd-listener': { type: 'string' },
        trace: { type: 'boolean' },
        'debug-console': { type: 'boolean' },
        'debug-console-addr': { type: 'string' },
        'trace-exporter': { type: 'string' },
        config: { type: 'string', short: 'c' },
        standalone: { type: 'boolean' },
        'run-dir': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (err) {
    throw new StatusError(Code.INVALID_ARGUMENT, `${(err as Error).message}\n${USAGE}`);
  }
}

function applyFlags(values: FlagValues, config: AgentConfig): void {
  const UID_MAX = 0xfffffffe;
  if (typeof values['server-address'] === 'string') config.serverAddr = values['server-address'];
  if (typeof values['helper-socket'] === 'string') config.helperSocket = values['helper-socket'];
  if (typeof values['debug-addr'] === 'string') config.debugAddr = values['debug-addr'];
  if (typeof values['log-level'] === 'string') config.logLevel = checkLogLevel(values['log-level'], '--log-level');
  if (typeof values['server-peer-uid'] === 'string') config.serverPeerUid = parseCount(values['server-peer-uid'], '--server-peer-uid', 0, UID_MAX);
  if (values['allow-abstract-socket'] === true) config.allowAbstractSocket = true;
  if (values['allow-host-namespaces'] === true) config.allowHostNamespaces = true;
  if (typeof values['max-connections'] === 'string') config.maxConnections = parseCount(values['max-connections'], '--max-connections', 1, 1_000_000);
  if (typeof values['max-inflight'] === 'string') config.maxInflight = parseCount(values['max-inflight'], '--max-inflight', 1, 1_000_000);
  if (typeof values['passfd-listener'] === 'string') config.passfdListener = values['passfd-listener'];
  if (values.trace === true) config.tracing = true;
  if (values['debug-console'] === true) config.debugConsole = true;
  if (typeof values['debug-console-addr'] === 'string') config.debugConsoleAddr = values['debug-console-addr'];
  if (typeof values['trace-exporter'] === 'string') config.traceExporter = values['trace-exporter'];
  if (typeof values['frame-timeout-ms'] === 'string') config.frameTimeoutMs = parseCount(values['frame-timeout-ms'], '--frame-timeout-ms', 0, 0x7fffffff);
}
