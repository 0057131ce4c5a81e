/**
 * Logging set-up shared by the control plane and the helper: pino, one JSON object per line on
 * stderr (fd 2), written synchronously so that the last lines before a crash are not lost.
 *
 * The fields are those upstream's log readers expect (kata-agent's slog JSON, inventory §5.3;
 * the runtime and `kata-log-parser` read them): `level` as a name ("trace", "debug", "info",
 * "warn", "error", "fatal"), `time` in RFC 3339 (UTC, ms), `name` "kata-agent", `pid`,
 * `source` "agent", and `subsystem`: "root" for the control plane, "helper" for the helper
 * (upstream's children override it, e.g. "rpc"); then `msg` and the record's own keys (a
 * record's own `pid` is renamed `processPid`: JSON readers keep only one of two equal keys).
 */
import pino from 'pino';
import type { LogRing } from './log-ring';

export type Logger = pino.Logger;

/** Pino level names we emit. */
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';

/** Environment variable read when no level is passed to {@link createLogger}. */
export const LOG_LEVEL_ENV = 'KATA_AGENT_LOG_LEVEL';

const LEVEL_ALIASES: Record<string, LogLevel> = {
  trace: 'trace',
  debug: 'debug',
  info: 'info',
  warn: 'warn',
  warning: 'warn',
  error: 'error',
  fatal: 'fatal',
  panic: 'fatal',
  critical: 'fatal',
};

/**
 * Map a level name to a pino level. Accepts the pino names and the logrus-style names upstream
 * Kata uses (agent.log=…): "warning" → warn, "panic"/"critical" → fatal. Case-insensitive.
 * Returns undefined for an unknown name.
 */
export function parseLogLevel(name: string | undefined): LogLevel | undefined {
  if (name === undefined) return undefined;
  return LEVEL_ALIASES[name.trim().toLowerCase()];
}

/**
 * Create the logger of component `name` ("kata-agent" or "kata-agent-helper": its subsystem). Level: `level` if given, else $KATA_AGENT_LOG_LEVEL, else
 * "info". `options.ring`: also keep the lines in this ring buffer (the debug endpoint's
 * /v1/logs). An unrecognised level name falls back to "info" and the logger says so once (warn).
 */
export function createLogger(name: string, level?: string, options: { ring?: LogRing } = {}): Logger {
  const requested = level ?? process.env[LOG_LEVEL_ENV];
  const parsed = parseLogLevel(requested);
  const logger = pino(
    {
      level: parsed ?? 'info',
      base: { name: 'kata-agent', pid: process.pid, source: 'agent', subsystem: subsystemOf(name) },
      formatters: {
        level: (label: string) => ({ level: label }),
        // `pid` is the logging process's (base); a record's own pid (a container process, the
        // helper's) would be a second `pid` key in the line: it is written as `processPid`.
        log: (record: Record<string, unknown>) => {
          if (!('pid' in record)) return record;
          const { pid, ...rest } = record;
          return { ...rest, processPid: pid };
        },
      },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    options.ring
      ? pino.multistream([
          { level: 'trace', stream: pino.destination({ fd: 2, sync: true }) },
          { level: 'trace', stream: options.ring },
        ])
      : pino.destination({ fd: 2, sync: true }),
  );
  if (requested !== undefined && requested !== '' && parsed === undefined) {
    logger.warn({ requested }, 'unknown log level, using info');
  }
  return logger;
}

/** `subsystem` of a component's records: "kata-agent" → "root", "kata-agent-helper" → "helper". */
export function subsystemOf(name: string): string {
  if (name === 'kata-agent') return 'root';
  return name.startsWith('kata-agent-') ? name.slice('kata-agent-'.length) : name;
}

/** A logger that drops everything (tests, library defaults). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/** The first line of an error's message (a StatusError's or Error's, else its string form). */
export function errorLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.split('\n')[0];
}

/**
 * A start-up failure: the JSON record (fatal, with `err` and `fields`) stays in the log, and a
 * person reading the terminal gets one line on stderr, `<program>: <msg>: <first line of the
 * error>` — the JSON record may be on the same stderr, but this line is the one to read.
 */
export function startupFailure(log: Logger, program: string, msg: string, err: unknown, fields: Record<string, unknown> = {}): void {
  log.fatal({ ...fields, err }, msg);
  process.stderr.write(`${program}: ${msg}: ${errorLine(err)}\n`);
}

/**
 * The last fatal or error record of a JSON log text as one human phrase (`msg: err.message`),
 * or undefined when there is none. Used to say why a daemon did not come up without printing
 * its JSON log.
 */
export function lastFailureIn(logText: string): string | undefined {
  const lines = logText.trimEnd().split('\n').reverse();
  for (const line of lines) {
    if (!line.startsWith('{')) continue;
    try {
      const rec = JSON.parse(line) as { level?: unknown; msg?: unknown; err?: { message?: unknown } };
      if (rec.level !== 'fatal' && rec.level !== 'error') continue;
      const why = typeof rec.err?.message === 'string' ? `: ${rec.err.message.split('\n')[0]}` : '';
      return `${String(rec.msg)}${why}`;
    } catch {
      continue;
    }
  }
  return undefined;
}
