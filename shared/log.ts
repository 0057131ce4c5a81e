/**
 * Logging set-up shared by the control plane and the helper: pino, one JSON object per line on
 * stderr (fd 2), written synchronously so that the last lines before a crash are not lost.
 *
 * Every line carries the base fields `name` (the component, e.g. "kata-agent-helper"), `pid`
 * and `source` ("agent", as upstream kata-agent logs), plus pino's `level` and `time` (ms since
 * the epoch).
 */
import pino from 'pino';

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
 * Create a logger named `name`. Level: `level` if given, else $KATA_AGENT_LOG_LEVEL, else
 * "info". An unrecognised level name falls back to "info" and the logger says so once (warn).
 */
export function createLogger(name: string, level?: string): Logger {
  const requested = level ?? process.env[LOG_LEVEL_ENV];
  const parsed = parseLogLevel(requested);
  const logger = pino(
    {
      name,
      level: parsed ?? 'info',
      base: { name, pid: process.pid, source: 'agent' },
    },
    pino.destination({ fd: 2, sync: true }),
  );
  if (requested !== undefined && requested !== '' && parsed === undefined) {
    logger.warn({ requested }, 'unknown log level, using info');
  }
  return logger;
}

/** A logger that drops everything (tests, library defaults). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
