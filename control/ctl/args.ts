/**
 * Parsing of kata-agent-ctl command arguments and values: human times, signal names, byte
 * strings, integers, random ids, and the argument text of one API command
 * (`json://{...}`, `file:///path.json`, `key=value` words).
 *
 * Behaviour follows upstream agent-ctl `utils.rs` (kata-containers 6e4d4c329a) where noted.
 * Every parse error is a StatusError INVALID_ARGUMENT (file reads: NOT_FOUND for a missing
 * file) naming the offending text.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { constants as osConstants } from 'node:os';
import { Code, StatusError } from '../../shared/protocol';
import { invalidArgument as invalid } from '../../shared/protocol';

/** Length of generated sandbox and container ids, in hex characters (upstream SANDBOX_ID_LEN). */
export const ID_LENGTH = 64;

/** A random id of `ID_LENGTH` lower-case hex characters, for a container or a sandbox. */
export function randomId(): string {
  return randomBytes(ID_LENGTH / 2).toString('hex');
}

const TIME_UNITS_NS: Readonly<Record<string, number>> = {
  ns: 1,
  nsec: 1,
  us: 1e3,
  'µs': 1e3,
  usec: 1e3,
  ms: 1e6,
  msec: 1e6,
  s: 1e9,
  sec: 1e9,
  secs: 1e9,
  second: 1e9,
  seconds: 1e9,
  m: 60e9,
  min: 60e9,
  mins: 60e9,
  minute: 60e9,
  minutes: 60e9,
  h: 3600e9,
  hr: 3600e9,
  hrs: 3600e9,
  hour: 3600e9,
  hours: 3600e9,
  d: 86400e9,
  day: 86400e9,
  days: 86400e9,
};

/**
 * A duration in ns from human text: "0" (= 0, "forever" for --timeout), a bare integer
 * (nanoseconds, as the upstream --timeout help says), or integer+unit groups as the Rust
 * humantime crate accepts them ("99ns", "30us", "2ms", "5s", "7m", "1h 30m", "1m30s").
 * Units: ns, us/µs, ms, s/sec, m/min, h/hr, d (and long forms). Throws INVALID_ARGUMENT
 * otherwise (negative, fractional, unknown unit) and for results above 2^53 ns.
 */
export function humanTimeToNs(text: string): number {
  const t = text.trim();
  if (t === '') throw invalid('empty duration');
  if (/^[0-9]+$/.test(t)) {
    const n = Number(t);
    if (!Number.isSafeInteger(n)) throw invalid(`duration ${JSON.stringify(text)} is too large`);
    return n;
  }
  let total = 0;
  let pos = 0;
  const re = /\s*([0-9]+)\s*([a-zA-Zµ]+)\s*/y;
  while (pos < t.length) {
    re.lastIndex = pos;
    const m = re.exec(t);
    if (!m) throw invalid(`invalid duration ${JSON.stringify(text)} (examples: 0, 99ns, 30us, 2ms, 5s, 7m, 1h30m)`);
    const unit = TIME_UNITS_NS[m[2]];
    if (unit === undefined) throw invalid(`unknown time unit ${JSON.stringify(m[2])} in ${JSON.stringify(text)}`);
    total += Number(m[1]) * unit;
    pos = re.lastIndex;
  }
  if (!Number.isSafeInteger(total)) throw invalid(`duration ${JSON.stringify(text)} is too large`);
  return total;
}

/**
 * A signal number from a name or number: "9", "SIGKILL", "KILL", "kill", "usr1" (case
 * insensitive, "SIG" prefix optional, as upstream signame_to_signum), including SIGCLD (= 17)
 * and SIGSTKFLT. "0" is accepted: signal 0 checks that the process exists without signalling
 * it, and the agent accepts it (SignalProcess 0..64). Throws INVALID_ARGUMENT for "" or an
 * unknown name, and for numbers above 64 (upstream accepts any u8; > 64 is not a signal).
 */
export function signalNumber(name: string): number {
  const t = name.trim();
  if (t === '') throw invalid('invalid signal: empty');
  if (/^[0-9]+$/.test(t)) {
    const n = Number(t);
    if (n > 64) throw invalid(`invalid signal number ${t} (want 0..64)`);
    return n;
  }
  let upper = t.toUpperCase();
  if (!upper.startsWith('SIG')) upper = `SIG${upper}`;
  const extra: Record<string, number> = { SIGCLD: 17, SIGSTKFLT: 16, SIGPOLL: 29, SIGIOT: 6 };
  const n = (osConstants.signals as Record<string, number | undefined>)[upper] ?? extra[upper];
  if (n === undefined) throw invalid(`invalid signal name: ${JSON.stringify(name)}`);
  return n;
}

/**
 * Bytes from CLI text: "hex:<even number of hex digits>" gives the decoded bytes, anything else
 * its UTF-8 encoding (upstream str_to_bytes). Throws INVALID_ARGUMENT for bad hex.
 */
export function strToBytes(text: string): Buffer {
  if (!text.startsWith('hex:')) return Buffer.from(text, 'utf8');
  const hex = text.slice(4);
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw invalid(`invalid hex data ${JSON.stringify(text)} (want hex:<pairs of hex digits>)`);
  }
  return Buffer.from(hex, 'hex');
}

/**
 * An integer from CLI text: decimal (optionally negative), or 0x/0o/0b prefixed. `what` names
 * the value in the error. Throws INVALID_ARGUMENT when not an integer or outside [min, max].
 */
export function parseInteger(text: string, what: string, min: number, max: number): number {
  const t = text.trim();
  let n: number;
  if (/^-?[0-9]+$/.test(t)) n = Number(t);
  else if (/^0[xX][0-9a-fA-F]+$/.test(t) || /^0[oO][0-7]+$/.test(t) || /^0[bB][01]+$/.test(t)) n = Number(t);
  else throw invalid(`invalid ${what} ${JSON.stringify(text)}: not an integer`);
  if (n < min || n > max) throw invalid(`invalid ${what} ${JSON.stringify(text)}: out of range ${min}..${max}`);
  return n;
}

/** A boolean from "true"/"false" (also "1"/"0", "yes"/"no"); INVALID_ARGUMENT otherwise. */
export function parseBool(text: string, what: string): boolean {
  const t = text.trim().toLowerCase();
  if (t === 'true' || t === '1' || t === 'yes') return true;
  if (t === 'false' || t === '0' || t === 'no') return false;
  throw invalid(`invalid ${what} ${JSON.stringify(text)}: want true or false`);
}

/**
 * A comma-separated list of u64 addresses in hex ("0x1c0000000,1d0000000"; the 0x is optional),
 * for MemHotplugByProbe. (Upstream decodes the hex digits as little-endian bytes, which breaks
 * for odd digit counts; we read them as numbers.) Throws INVALID_ARGUMENT for a bad entry.
 */
export function parseHexAddressList(text: string): number[] {
  if (text.trim() === '') return [];
  return text.split(',').map((part) => {
    const p = part.trim().replace(/^0[xX]/, '');
    if (!/^[0-9a-fA-F]{1,16}$/.test(p)) throw invalid(`invalid memory address ${JSON.stringify(part)} (want hex, e.g. 0x1c0000000)`);
    const n = Number.parseInt(p, 16);
    if (!Number.isSafeInteger(n)) throw invalid(`memory address ${JSON.stringify(part)} is above 2^53`);
    return n;
  });
}

/**
 * A PCI path as the runtime writes it (types.PciPath): slots in hex separated by "/", e.g.
 * "02/03" → [2, 3]. Each slot 00..1f. Throws INVALID_ARGUMENT.
 */
export function parsePciPath(text: string): number[] {
  const parts = text.trim().split('/');
  return parts.map((p) => {
    if (!/^[0-9a-fA-F]{1,2}$/.test(p) || Number.parseInt(p, 16) > 0x1f) {
      throw invalid(`invalid PCI path ${JSON.stringify(text)} (want hex slots 00..1f separated by "/", e.g. 02/03)`);
    }
    return Number.parseInt(p, 16);
  });
}

/** The text of a `file:///path` argument (e.g. a policy document). Throws INVALID_ARGUMENT / NOT_FOUND. */
export function readFileArg(text: string, key: string): string {
  if (!text.startsWith('file://') || text.length === 'file://'.length) throw invalid(`${key}=${text}: want ${key}=file:///path`);
  const file = text.slice('file://'.length);
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new StatusError(e.code === 'ENOENT' ? Code.NOT_FOUND : Code.INVALID_ARGUMENT, `${key}: cannot read ${file}: ${e.message}`);
  }
}

/** The argument text of one API command, parsed. */
export interface CommandArgs {
  /** The request document from `json://...` or `file://...`, or null when none was given. */
  document: { [k: string]: unknown } | null;
  /** `key=value` words in order (a key may repeat; the last one wins). */
  pairs: Array<[string, string]>;
}

/** End index (exclusive) of the JSON value starting at `text[start]` ({...}, [...] or a scalar). */
function scanJson(text: string, start: number): number {
  const open = text[start];
  if (open !== '{' && open !== '[') {
    let i = start;
    while (i < text.length && !/\s/.test(text[i])) i++;
    return i;
  }
  let depth = 0;
  let inString = false;
  for (let i = start; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
    } else if (c === '"') {
      inString = true;
    } else if (c === '{' || c === '[') {
      depth++;
    } else if (c === '}' || c === ']') {
      depth--;
      if (depth === 0) return i + 1;
    }
  }
  return text.length;
}

/** One shell-like word at `start`: runs of plain, 'single' or "double" quoted text (\ escapes in "..."). */
function scanWord(text: string, start: number): { word: string; end: number } {
  let word = '';
  let i = start;
  while (i < text.length && !/\s/.test(text[i])) {
    const c = text[i];
    if (c === "'") {
      const close = text.indexOf("'", i + 1);
      if (close < 0) throw invalid(`unterminated ' quote in ${JSON.stringify(text)}`);
      word += text.slice(i + 1, close);
      i = close + 1;
    } else if (c === '"') {
      i++;
      while (i < text.length && text[i] !== '"') {
        if (text[i] === '\\' && i + 1 < text.length) i++;
        word += text[i];
        i++;
      }
      if (i >= text.length) throw invalid(`unterminated " quote in ${JSON.stringify(text)}`);
      i++;
    } else {
      word += c;
      i++;
    }
  }
  return { word, end: i };
}

function parseDocument(jsonText: string, origin: string): { [k: string]: unknown } {
  let value: unknown;
  try {
    value = JSON.parse(jsonText);
  } catch (err) {
    throw invalid(`invalid JSON in ${origin}: ${(err as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalid(`${origin} must hold a JSON object (the request), got ${Array.isArray(value) ? 'an array' : JSON.stringify(value)}`);
  }
  return value as { [k: string]: unknown };
}

/**
 * Read and parse a JSON object file. Throws NOT_FOUND when it does not exist, INVALID_ARGUMENT
 * when it cannot be read or is not a JSON object.
 */
export function readJsonFile(path: string): { [k: string]: unknown } {
  let text: string;
  try {
    text = fs.readFileSync(path, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new StatusError(e.code === 'ENOENT' ? Code.NOT_FOUND : Code.INVALID_ARGUMENT, `cannot read ${path}: ${e.message}`);
  }
  return parseDocument(text, path);
}

/**
 * Parse the argument text of an API command (everything after the command name):
 *
 * - `json://<JSON object>`: the request, partial or complete, with proto field names; the
 *   object may contain spaces (it ends where its braces balance).
 * - `file:///abs/path.json`: the same, read from a file (path up to the next whitespace).
 * - `key=value` words; values may be quoted ('a b' or "a b"); the value is everything after
 *   the first "=".
 *
 * At most one json:// or file:// document per command. Throws INVALID_ARGUMENT for a word
 * that is none of these, a second document, bad JSON or a non-object; NOT_FOUND for a missing
 * file.
 */
export function parseCommandArgs(text: string): CommandArgs {
  const out: CommandArgs = { document: null, pairs: [] };
  let i = 0;
  const setDocument = (doc: { [k: string]: unknown }): void => {
    if (out.document) throw invalid(`more than one json:// or file:// request in ${JSON.stringify(text)}`);
    out.document = doc;
  };
  while (i < text.length) {
    if (/\s/.test(text[i])) {
      i++;
      continue;
    }
    const rest = text.slice(i);
    if (rest.startsWith('json://')) {
      const start = i + 'json://'.length;
      const end = scanJson(text, start);
      setDocument(parseDocument(text.slice(start, end), 'json://'));
      i = end;
      continue;
    }
    if (rest.startsWith('file://')) {
      const { word, end } = scanWord(text, i);
      const path = word.slice('file://'.length);
      if (path === '') throw invalid('empty path in file://');
      setDocument(readJsonFile(path));
      i = end;
      continue;
    }
    const { word, end } = scanWord(text, i);
    const eq = word.indexOf('=');
    if (eq <= 0) {
      throw invalid(`unexpected argument ${JSON.stringify(word)} (want key=value, json://{...} or file:///path.json)`);
    }
    out.pairs.push([word.slice(0, eq), word.slice(eq + 1)]);
    i = end;
  }
  return out;
}
