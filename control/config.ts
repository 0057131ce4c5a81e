/**
 * Configuration of the control plane (`kata-agent`).
 *
 * Sources, later ones winning: built-in defaults, environment variables, command-line flags.
 * The kernel command line (`agent.*` options) and a TOML file are later sources (upstream
 * src/agent/src/config.rs); {@link AgentConfig} is a plain object so they can add fields.
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
import { parseArgs } from 'node:util';
import { parseLogLevel, type LogLevel } from '../shared/log';
import { Code, DEFAULT_HELPER_SOCKET, StatusError } from '../shared/protocol';

/** Default ttRPC listen address: vsock port 1024 on any CID (Kata DEFAULT_AGENT_VSOCK_PORT). */
export const DEFAULT_SERVER_ADDR = 'vsock://-1:1024';
/** Default address of the debug HTTP endpoint: a unix socket only the control uid can use. */
export const DEFAULT_DEBUG_ADDR = 'unix:///run/kata-agent/control/debug.sock';
/** Default pino log level. */
export const DEFAULT_LOG_LEVEL: LogLevel = 'info';

/** Level names accepted (pino's, plus upstream's logrus names warning/panic/critical). */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;
export type { LogLevel };

/** The control plane's configuration. */
export interface AgentConfig {
  /** ttRPC listen address: `unix:///path`, `unix://@name` or `vsock://<cid>:<port>`. */
  serverAddr: string;
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
}

/** The built-in defaults. */
export function defaultConfig(): AgentConfig {
  return {
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
  -h, --help              print this help`;

/** Result of {@link loadConfig}: the configuration, or a request for the usage text. */
export type LoadedConfig = { help: true } | { help: false; config: AgentConfig };

/**
 * Build the configuration from `env` and the command-line `argv` (without node and the script).
 * Throws StatusError INVALID_ARGUMENT for an unknown flag, a missing flag value, a bad log level,
 * a bad debug address, or a uid, count or timeout that is not an integer in range (the message
 * names the value).
 */
export function loadConfig(argv: readonly string[], env: NodeJS.ProcessEnv): LoadedConfig {
  const config = defaultConfig();
  if (env.KATA_AGENT_SERVER_ADDR) config.serverAddr = env.KATA_AGENT_SERVER_ADDR;
  if (env.KATA_AGENT_HELPER_SOCKET) config.helperSocket = env.KATA_AGENT_HELPER_SOCKET;
  if (env.KATA_AGENT_LOG_LEVEL) config.logLevel = checkLogLevel(env.KATA_AGENT_LOG_LEVEL, 'KATA_AGENT_LOG_LEVEL');
  if (env.KATA_AGENT_DEBUG_ADDR !== undefined) config.debugAddr = env.KATA_AGENT_DEBUG_ADDR;
  const UID_MAX = 0xfffffffe;
  if (env.KATA_AGENT_SERVER_PEER_UID) config.serverPeerUid = parseCount(env.KATA_AGENT_SERVER_PEER_UID, 'KATA_AGENT_SERVER_PEER_UID', 0, UID_MAX);
  if (env.KATA_AGENT_ALLOW_ABSTRACT_SOCKET !== undefined) config.allowAbstractSocket = parseBool(env.KATA_AGENT_ALLOW_ABSTRACT_SOCKET, 'KATA_AGENT_ALLOW_ABSTRACT_SOCKET');
  if (env.KATA_AGENT_MAX_CONNECTIONS) config.maxConnections = parseCount(env.KATA_AGENT_MAX_CONNECTIONS, 'KATA_AGENT_MAX_CONNECTIONS', 1, 1_000_000);
  if (env.KATA_AGENT_MAX_INFLIGHT) config.maxInflight = parseCount(env.KATA_AGENT_MAX_INFLIGHT, 'KATA_AGENT_MAX_INFLIGHT', 1, 1_000_000);
  if (env.KATA_AGENT_PASSFD_LISTENER) config.passfdListener = env.KATA_AGENT_PASSFD_LISTENER;
  if (env.KATA_AGENT_FRAME_TIMEOUT_MS) config.frameTimeoutMs = parseCount(env.KATA_AGENT_FRAME_TIMEOUT_MS, 'KATA_AGENT_FRAME_TIMEOUT_MS', 0, 0x7fffffff);

  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
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
        'max-connections': { type: 'string' },
        'max-inflight': { type: 'string' },
        'frame-timeout-ms': { type: 'string' },
        'passfd-listener': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    throw new StatusError(Code.INVALID_ARGUMENT, `${(err as Error).message}\n${USAGE}`);
  }
  if (values.help) return { help: true };
  if (typeof values['server-address'] === 'string') config.serverAddr = values['server-address'];
  if (typeof values['helper-socket'] === 'string') config.helperSocket = values['helper-socket'];
  if (typeof values['debug-addr'] === 'string') config.debugAddr = values['debug-addr'];
  if (typeof values['log-level'] === 'string') config.logLevel = checkLogLevel(values['log-level'], '--log-level');
  if (typeof values['server-peer-uid'] === 'string') config.serverPeerUid = parseCount(values['server-peer-uid'], '--server-peer-uid', 0, UID_MAX);
  if (values['allow-abstract-socket'] === true) config.allowAbstractSocket = true;
  if (typeof values['max-connections'] === 'string') config.maxConnections = parseCount(values['max-connections'], '--max-connections', 1, 1_000_000);
  if (typeof values['max-inflight'] === 'string') config.maxInflight = parseCount(values['max-inflight'], '--max-inflight', 1, 1_000_000);
  if (typeof values['passfd-listener'] === 'string') config.passfdListener = values['passfd-listener'];
  if (typeof values['frame-timeout-ms'] === 'string') config.frameTimeoutMs = parseCount(values['frame-timeout-ms'], '--frame-timeout-ms', 0, 0x7fffffff);

  if (config.serverAddr === '') throw new StatusError(Code.INVALID_ARGUMENT, 'empty server address');
  if (config.helperSocket === '') throw new StatusError(Code.INVALID_ARGUMENT, 'empty helper socket path');
  if (config.debugAddr !== '') parseDebugAddr(config.debugAddr);
  return { help: false, config };
}
