/**
 * The upstream agent's configuration sources (kata-containers src/agent/src/config.rs at
 * 6e4d4c329a; inventory §5.1–5.2): the `agent.*` words of the kernel command line, the
 * environment variables KATA_AGENT_SERVER_ADDR / KATA_AGENT_LOG_LEVEL / KATA_AGENT_TRACING,
 * and the TOML config file (`agent.config_file=PATH` or `-c/--config PATH`).
 *
 * Precedence, as upstream: a config file (from `--config`, else from `agent.config_file=` on the
 * command line) replaces everything else here: the rest of the command line and these three
 * environment variables are then ignored. Without a file: defaults, then the command-line words
 * in order (the last occurrence wins), then the environment variables.
 *
 * Departures: upstream panics at start-up on a malformed value; here the value is rejected with
 * a StatusError INVALID_ARGUMENT naming the option, the value and the source, and the agent exits
 * 2 with that message. Unknown `agent.*` words and unknown TOML keys are ignored, as upstream,
 * but reported as warnings. An invalid KATA_AGENT_LOG_LEVEL is ignored (upstream) with a warning.
 */
import * as fs from 'node:fs';
import { parse as parseToml } from 'smol-toml';
import { parseLogLevel, type LogLevel } from '../shared/log';
import { Code, StatusError } from '../shared/protocol';

/** Default hotplug timeout: 3 s (config.rs DEFAULT_HOTPLUG_TIMEOUT), in ms. */
export const DEFAULT_HOTPLUG_TIMEOUT_MS = 3000;
/** Largest hotplug timeout accepted, in s (the helper's --hotplug-timeout-ms takes up to 7 digits). */
export const MAX_HOTPLUG_TIMEOUT_S = 9999;
/** Default ttRPC listen address: vsock port 1024 on any CID (Kata DEFAULT_AGENT_VSOCK_PORT). */
export const DEFAULT_SERVER_ADDR = 'vsock://-1:1024';

/** The upstream option set (AgentConfig in config.rs), with our field names and units. */
export interface UpstreamOptions {
  /** agent.debug_console / debug_console: a root shell (control/debug-console.ts). */
  debugConsole: boolean;
  /** agent.devmode / dev_mode. Parsed only (unused upstream too). */
  devMode: boolean;
  /** agent.log / log_level (logrus names). */
  logLevel: LogLevel;
  /** agent.hotplug_timeout (seconds) / hotplug_timeout ({secs, nanos}); in ms. */
  hotplugTimeoutMs: number;
  /** agent.debug_console_vport: the debug console's vsock port (0: /dev/console). */
  debugConsoleVport: number;
  /** agent.log_vport. Parsed only (logs go to stderr). */
  logVport: number;
  /** agent.container_pipe_size, bytes (0 = kernel default). Parsed only. */
  containerPipeSize: number;
  /** agent.server_addr / server_addr. */
  serverAddr: string;
  /** agent.passfd_listener_port. Parsed only. */
  passfdListenerPort: number;
  /** agent.unified_cgroup_hierarchy. Parsed only (no init mode). */
  unifiedCgroupHierarchy: boolean;
  /** agent.trace / tracing / KATA_AGENT_TRACING: OpenTelemetry spans (control/tracing.ts). */
  tracing: boolean;
  /**
   * TOML `allow_host_namespaces`: this agent's own key, not upstream's (host-namespace mode,
   * control/config.ts allowHostNamespaces); absent: not set by the file.
   */
  allowHostNamespaces?: boolean;
}

/** Options that are parsed and reported but not acted on yet (docs/ARCHITECTURE.md). */
export const NOT_ACTED_ON: readonly (keyof UpstreamOptions)[] = [
  'devMode', 'logVport', 'containerPipeSize', 'passfdListenerPort',
  'unifiedCgroupHierarchy',
];

/** The upstream defaults (config.rs `impl Default for AgentConfig`). */
export function upstreamDefaults(): UpstreamOptions {
  return {
    debugConsole: false,
    devMode: false,
    logLevel: 'info',
    hotplugTimeoutMs: DEFAULT_HOTPLUG_TIMEOUT_MS,
    debugConsoleVport: 0,
    logVport: 0,
    containerPipeSize: 0,
    serverAddr: DEFAULT_SERVER_ADDR,
    passfdListenerPort: 0,
    unifiedCgroupHierarchy: false,
    tracing: false,
  };
}

/** Result of {@link loadUpstreamOptions}. */
export interface UpstreamLoaded {
  options: UpstreamOptions;
  /** The TOML file the options came from, if any. */
  configFile?: string;
  /** Ignored input, for the start-up log. */
  warnings: string[];
}

function bad(option: string, value: unknown, source: string, want: string): StatusError {
  return new StatusError(Code.INVALID_ARGUMENT, `invalid ${option} ${JSON.stringify(value)} ${source} (want ${want})`);
}

/** Upstream get_bool_value: "true"/"false", else an integer (non-zero = true), else false. */
function cmdlineBool(value: string): boolean {
  if (value === 'true') return true;
  if (value === 'false') return false;
  return /^\+?[0-9]+$/.test(value) && BigInt(value) !== 0n;
}

/** A Rust i32 parse: optional sign, decimal digits, in range. */
function parseI32(value: string): number | undefined {
  if (!/^[+-]?[0-9]{1,10}$/.test(value)) return undefined;
  const n = Number(value);
  return n >= -(2 ** 31) && n < 2 ** 31 ? n : undefined;
}

function logLevelOf(value: string, option: string, source: string): LogLevel {
  // Upstream's logrus_to_slog_level is case-sensitive.
  const level = value === value.toLowerCase() ? parseLogLevel(value) : undefined;
  if (level === undefined) throw bad(option, value, source, 'one of trace, debug, info, warn, warning, error, fatal, panic, critical');
  return level;
}

function hotplugSeconds(secs: number, option: string, value: unknown, source: string): number {
  if (!Number.isInteger(secs) || secs < 0 || secs > MAX_HOTPLUG_TIMEOUT_S) throw bad(option, value, source, `seconds, 0..${MAX_HOTPLUG_TIMEOUT_S}`);
  return secs * 1000;
}

/**
 * Parse the `agent.*` words of a kernel command line into `o` (whitespace-split, as upstream).
 * Returns the path of `agent.config_file=` when present (the caller then reads only that file).
 * Throws StatusError INVALID_ARGUMENT naming option and value for a malformed value.
 */
export function applyKernelCmdline(cmdline: string, o: UpstreamOptions, warnings: string[]): string | undefined {
  const src = 'on the kernel command line';
  for (const word of cmdline.split(/[ \t\n\r\f\v]+/)) {
    if (!word.startsWith('agent.')) continue;
    const eq = word.indexOf('=');
    const key = eq < 0 ? word : word.slice(0, eq);
    const value = eq < 0 ? undefined : word.slice(eq + 1);
    const fields = word.split('=');
    const int32 = (min: number, want: string): number => {
      const n = fields.length === 2 ? parseI32(fields[1]) : undefined;
      if (n === undefined || n < min) throw bad(key, value, src, want);
      return n;
    };
    if (value === undefined) {
      if (key === 'agent.debug_console') o.debugConsole = true;
      else if (key === 'agent.devmode') o.devMode = true;
      else if (key === 'agent.trace') o.tracing = true;
      else warnings.push(`unknown kernel command-line option ${JSON.stringify(word)} ignored`);
      continue;
    }
    switch (key) {
      case 'agent.config_file':
        if (value === '') throw bad(key, value, src, 'a file path');
        return value;
      case 'agent.trace':
        o.tracing = fields.length === 2 && cmdlineBool(value);
        break;
      case 'agent.unified_cgroup_hierarchy':
        o.unifiedCgroupHierarchy = fields.length === 2 && cmdlineBool(value);
        break;
      case 'agent.log':
        if (fields.length !== 2) throw bad(key, value, src, 'a log level');
        o.logLevel = logLevelOf(value, key, src);
        break;
      case 'agent.server_addr':
        if (value === '') throw bad(key, value, src, 'an address such as vsock://-1:1024');
        o.serverAddr = value; // may itself contain '=' (upstream joins the rest)
        break;
      case 'agent.hotplug_timeout': {
        if (fields.length !== 2 || !/^\+?[0-9]{1,20}$/.test(value)) throw bad(key, value, src, `seconds, 0..${MAX_HOTPLUG_TIMEOUT_S}`);
        const ms = hotplugSeconds(Number(value), key, value, src);
        if (ms > 0) o.hotplugTimeoutMs = ms; // 0 is ignored, as upstream
        break;
      }
      case 'agent.debug_console_vport': {
        const n = int32(-(2 ** 31), 'a vsock port');
        if (n > 0) o.debugConsoleVport = n;
        break;
      }
      case 'agent.log_vport': {
        const n = int32(-(2 ** 31), 'a vsock port');
        if (n > 0) o.logVport = n;
        break;
      }
      case 'agent.passfd_listener_port': {
        const n = int32(-(2 ** 31), 'a vsock port');
        if (n > 0) o.passfdListenerPort = n;
        break;
      }
      case 'agent.container_pipe_size':
        o.containerPipeSize = int32(0, 'a size in bytes, 0 or more');
        break;
      default:
        warnings.push(`unknown kernel command-line option ${JSON.stringify(word)} ignored`);
    }
  }
  return undefined;
}

/**
 * Apply the upstream environment variables (only on the command-line path):
 * KATA_AGENT_SERVER_ADDR (any value), KATA_AGENT_LOG_LEVEL (an invalid name is ignored with a
 * warning), KATA_AGENT_TRACING (get_bool_value rules; never an error).
 */
export function applyUpstreamEnv(env: NodeJS.ProcessEnv, o: UpstreamOptions, warnings: string[]): void {
  if (env.KATA_AGENT_SERVER_ADDR !== undefined) o.serverAddr = env.KATA_AGENT_SERVER_ADDR;
  const level = env.KATA_AGENT_LOG_LEVEL;
  if (level !== undefined) {
    const parsed = level === level.toLowerCase() ? parseLogLevel(level) : undefined;
    if (parsed) o.logLevel = parsed;
    else warnings.push(`invalid KATA_AGENT_LOG_LEVEL ${JSON.stringify(level)} ignored`);
  }
  if (env.KATA_AGENT_TRACING !== undefined) o.tracing = cmdlineBool(env.KATA_AGENT_TRACING);
}

type TomlValue = unknown;

/**
 * Parse a TOML config (keys of config.rs AgentConfigBuilder) over the defaults. `file` names
 * the source in messages. hotplug_timeout is serde's Duration table `{ secs = 3, nanos = 0 }`;
 * a bare integer (seconds) is accepted too. Throws StatusError INVALID_ARGUMENT on a syntax
 * error or a value of the wrong type or range (naming key, value and file).
 */
export function parseUpstreamToml(text: string, file: string, warnings: string[]): UpstreamOptions {
  const src = `in ${file}`;
  let doc: Record<string, TomlValue>;
  try {
    doc = parseToml(text) as Record<string, TomlValue>;
  } catch (err) {
    throw new StatusError(Code.INVALID_ARGUMENT, `cannot parse config file ${file}: ${(err as Error).message.split('\n')[0]}`);
  }
  const o = upstreamDefaults();
  const bool = (k: string, v: TomlValue): boolean => {
    if (typeof v !== 'boolean') throw bad(k, v, src, 'true or false');
    return v;
  };
  const i32 = (k: string, v: TomlValue, min: number): number => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v >= 2 ** 31) throw bad(k, v, src, `an integer ${min}..${2 ** 31 - 1}`);
    return v;
  };
  for (const [k, v] of Object.entries(doc)) {
    switch (k) {
      case 'debug_console': o.debugConsole = bool(k, v); break;
      case 'dev_mode': o.devMode = bool(k, v); break;
      case 'unified_cgroup_hierarchy': o.unifiedCgroupHierarchy = bool(k, v); break;
      case 'tracing': o.tracing = bool(k, v); break;
      case 'allow_host_namespaces': o.allowHostNamespaces = bool(k, v); break;
      case 'log_level':
        if (typeof v !== 'string') throw bad(k, v, src, 'a log level name');
        o.logLevel = logLevelOf(v, k, src);
        break;
      case 'server_addr':
        if (typeof v !== 'string' || v === '') throw bad(k, v, src, 'an address such as vsock://-1:1024');
        o.serverAddr = v;
        break;
      case 'hotplug_timeout': {
        if (typeof v === 'number') {
          o.hotplugTimeoutMs = hotplugSeconds(v, k, v, src);
          break;
        }
        const t = v as { secs?: unknown; nanos?: unknown } | null;
        const secs = t && typeof t === 'object' ? t.secs : undefined;
        const nanos = t && typeof t === 'object' ? (t.nanos ?? 0) : undefined;
        if (typeof secs !== 'number' || typeof nanos !== 'number' || !Number.isInteger(nanos) || nanos < 0 || nanos >= 1e9) {
          throw bad(k, v, src, '{ secs = N, nanos = N } or seconds');
        }
        o.hotplugTimeoutMs = hotplugSeconds(secs, k, v, src) + Math.floor(nanos / 1e6);
        break;
      }
      case 'debug_console_vport': o.debugConsoleVport = i32(k, v, -(2 ** 31)); break;
      case 'log_vport': o.logVport = i32(k, v, -(2 ** 31)); break;
      case 'passfd_listener_port': o.passfdListenerPort = i32(k, v, -(2 ** 31)); break;
      case 'container_pipe_size': o.containerPipeSize = i32(k, v, 0); break;
      default:
        warnings.push(`unknown key ${JSON.stringify(k)} in ${file} ignored`);
    }
  }
  return o;
}

/** Read and parse a TOML config file; StatusError INVALID_ARGUMENT when unreadable or invalid. */
export function readUpstreamToml(file: string, warnings: string[]): UpstreamOptions {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new StatusError(Code.INVALID_ARGUMENT, `cannot read config file ${JSON.stringify(file)}: ${(err as Error).message}`);
  }
  return parseUpstreamToml(text, file, warnings);
}

/**
 * The upstream options from (in upstream's precedence) `configFile` (the `--config` flag), else
 * the kernel command line `cmdline` (its `agent.config_file=` switching to that file), then the
 * environment. Errors as the functions above.
 */
export function loadUpstreamOptions(cmdline: string, env: NodeJS.ProcessEnv, configFile?: string): UpstreamLoaded {
  const warnings: string[] = [];
  if (configFile !== undefined) return { options: readUpstreamToml(configFile, warnings), configFile, warnings };
  const options = upstreamDefaults();
  const fromCmdline = applyKernelCmdline(cmdline, options, warnings);
  if (fromCmdline !== undefined) return { options: readUpstreamToml(fromCmdline, warnings), configFile: fromCmdline, warnings };
  applyUpstreamEnv(env, options, warnings);
  return { options, warnings };
}
