/**
 * Command line of `kata-agent-ctl oci` (and `bin/kata-agent-oci`): the OCI runtime command-line
 * interface (opencontainers/runtime-tools docs/command-line-interface.md, version 1.0.1) with
 * runc's spelling of options, so a tool that drives runc drives the agent.
 *
 *   kata-agent-oci [GLOBAL...] create [--bundle|-b DIR] [--pid-file F] [--console-socket S] ID
 *   kata-agent-oci [GLOBAL...] start ID
 *   kata-agent-oci [GLOBAL...] state ID
 *   kata-agent-oci [GLOBAL...] kill [--all|-a] ID [SIGNAL]        (SIGNAL default TERM; --signal S too)
 *   kata-agent-oci [GLOBAL...] delete [--force|-f] ID
 *   kata-agent-oci [GLOBAL...] run [--bundle|-b DIR] [--detach|-d] [--pid-file F] ID
 *   kata-agent-oci [GLOBAL...] exec [--detach|-d] [--tty|-t] [--cwd D] [--env|-e K=V]... [--user|-u UID[:GID]] [--pid-file F] ID CMD [ARG...]
 *   kata-agent-oci [GLOBAL...] ps [--format|-f table|json] ID [PS-ARGS...]
 *
 * Global options: --address ADDR (env KATA_AGENT_ADDR; default the stand-alone agent's socket),
 * --debug-address ADDR (env KATA_AGENT_DEBUG_ADDR; default the debug.sock next to a unix agent
 * socket), --root DIR (state records, default /run/kata-agent-oci), --log FILE, --log-format
 * text|json. runc's --debug, --systemd-cgroup, --rootless, --criu are accepted and ignored (they
 * choose runc internals that have no meaning for a remote agent).
 */

/** Where the stand-alone daemon (`kata-agent --standalone`) serves by default (control/standalone.ts). */
export const DEFAULT_AGENT_ADDRESS = 'unix:///run/kata-agent-standalone/control/agent.sock';
/** Default directory of the per-container state records (runc: /run/runc). */
export const DEFAULT_OCI_ROOT = '/run/kata-agent-oci';

/** Global options of the OCI CLI. */
export interface OciGlobals {
  /** ttRPC address of the agent. */
  address: string;
  /** Debug endpoint: `unix:///path` or `host:port`. */
  debugAddress: string;
  /** Directory of the state records. */
  root: string;
  /** Append error lines here too ("" = none), as runc --log. */
  logFile: string;
  logFormat: 'text' | 'json';
}

/** One parsed OCI CLI command. */
export type OciCommand =
  | { kind: 'create'; id: string; bundle: string; pidFile: string; consoleSocket: string }
  | { kind: 'start'; id: string }
  | { kind: 'state'; id: string }
  | { kind: 'kill'; id: string; signal: string; all: boolean }
  | { kind: 'delete'; id: string; force: boolean }
  | { kind: 'run'; id: string; bundle: string; pidFile: string; detach: boolean; consoleSocket: string }
  | { kind: 'exec'; id: string; args: string[]; detach: boolean; tty: boolean; cwd: string; env: string[]; user: string; pidFile: string }
  | { kind: 'ps'; id: string; format: 'table' | 'json'; psArgs: string[] }
  /** Internal: the per-container monitor `create` starts (output pump, exit record). */
  | { kind: 'monitor'; id: string };

/** A usage error of the OCI CLI (exit status 2), naming the bad word. */
export class OciUsageError extends Error {}

/** Boolean runc globals accepted and ignored. */
const IGNORED_GLOBAL_FLAGS = new Set(['--debug', '--systemd-cgroup', '--rootless', '--no-pivot', '--no-new-keyring']);
/** runc globals with a value accepted and ignored. */
const IGNORED_GLOBAL_VALUES = new Set(['--criu', '--rootless']);

interface OptionSpec {
  /** Names, e.g. ['--bundle', '-b']. */
  names: string[];
  /** Takes a value. */
  value: boolean;
  /** May repeat (values collected). */
  multiple?: boolean;
}

type Parsed = { opts: Map<string, string[]>; positionals: string[] };

/**
 * Parse options (`--name V`, `--name=V`, `-n V`, grouped boolean short flags) up to the first
 * positional when `stopAtPositional` (exec: the command's own options follow), else anywhere.
 */
function parseOptions(argv: readonly string[], specs: OptionSpec[], command: string, stopAtPositional: boolean): Parsed {
  const byName = new Map<string, OptionSpec>();
  for (const s of specs) for (const n of s.names) byName.set(n, s);
  const opts = new Map<string, string[]>();
  const positionals: string[] = [];
  const put = (spec: OptionSpec, v: string): void => {
    const key = spec.names[0];
    opts.set(key, spec.multiple ? [...(opts.get(key) ?? []), v] : [v]);
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!a.startsWith('-') || a === '-') {
      if (stopAtPositional) {
        positionals.push(...argv.slice(i));
        break;
      }
      positionals.push(a);
      continue;
    }
    const eq = a.startsWith('--') ? a.indexOf('=') : -1;
    const name = eq > 0 ? a.slice(0, eq) : a;
    const spec = byName.get(name);
    if (spec) {
      if (!spec.value) {
        if (eq > 0) throw new OciUsageError(`${command}: option ${name} takes no value`);
        put(spec, 'true');
      } else if (eq > 0) {
        put(spec, a.slice(eq + 1));
      } else {
        if (i + 1 >= argv.length) throw new OciUsageError(`${command}: option ${name} needs a value`);
        put(spec, argv[++i]);
      }
      continue;
    }
    // Grouped short boolean flags (-dt).
    if (/^-[a-zA-Z]{2,}$/.test(a)) {
      const flags = [...a.slice(1)].map((c) => byName.get(`-${c}`));
      if (flags.every((f) => f !== undefined && !f.value)) {
        for (const f of flags) put(f!, 'true');
        continue;
      }
    }
    throw new OciUsageError(`${command}: unknown option ${JSON.stringify(a)}`);
  }
  return { opts, positionals };
}

/** A container id as runc accepts it (runc libcontainer: ^[\w+-\.]+$), at most 1024 bytes. */
const OCI_ID_RE = /^[\w+.-]{1,1024}$/;

function oneId(command: string, positionals: string[], extra: 'none' | 'rest'): string {
  if (positionals.length === 0) throw new OciUsageError(`${command}: need a container id`);
  if (extra === 'none' && positionals.length > 1) throw new OciUsageError(`${command}: unexpected argument ${JSON.stringify(positionals[1])}`);
  const id = positionals[0];
  if (!OCI_ID_RE.test(id) || id === '.' || id === '..') throw new OciUsageError(`${command}: invalid container id ${JSON.stringify(id)}`);
  return id;
}

const opt = (p: Parsed, name: string): string => p.opts.get(name)?.[0] ?? '';

/** `--preserve-fds N`: only 0 can be honoured (an fd of this host cannot reach the agent's container). */
function checkPreserveFds(p: Parsed, command: string): void {
  const n = opt(p, '--preserve-fds');
  if (n !== '' && n !== '0') throw new OciUsageError(`${command}: --preserve-fds ${JSON.stringify(n)}: extra fds cannot be passed to the agent's container (only 0)`);
}
const flag = (p: Parsed, name: string): boolean => p.opts.has(name);

/**
 * Parse the whole OCI CLI command line (after `oci`): global options, then the command and its
 * options. `env` supplies KATA_AGENT_ADDR and KATA_AGENT_DEBUG_ADDR. Throws
 * {@link OciUsageError} for an unknown command or option, a missing or invalid id (runc's id
 * alphabet: letters, digits, `_ + - .`), or a missing value.
 */
export function parseOciCommandLine(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): { globals: OciGlobals; command: OciCommand } {
  const globals: OciGlobals = {
    address: env.KATA_AGENT_ADDR || DEFAULT_AGENT_ADDRESS,
    debugAddress: env.KATA_AGENT_DEBUG_ADDR ?? '',
    root: DEFAULT_OCI_ROOT,
    logFile: '',
    logFormat: 'text',
  };
  let i = 0;
  const value = (name: string): string => {
    if (i + 1 >= argv.length) throw new OciUsageError(`global option ${name} needs a value`);
    return argv[++i];
  };
  for (; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('-')) break;
    const eq = a.startsWith('--') ? a.indexOf('=') : -1;
    const name = eq > 0 ? a.slice(0, eq) : a;
    const v = (): string => (eq > 0 ? a.slice(eq + 1) : value(name));
    if (name === '--address') globals.address = v();
    else if (name === '--debug-address') globals.debugAddress = v();
    else if (name === '--root') globals.root = v();
    else if (name === '--log') globals.logFile = v();
    else if (name === '--log-format') {
      const f = v();
      if (f !== 'text' && f !== 'json') throw new OciUsageError(`--log-format ${JSON.stringify(f)}: want text or json`);
      globals.logFormat = f;
    } else if (IGNORED_GLOBAL_VALUES.has(name) && eq > 0) continue;
    else if (IGNORED_GLOBAL_FLAGS.has(name)) continue;
    else if (IGNORED_GLOBAL_VALUES.has(name)) v();
    else throw new OciUsageError(`unknown global option ${JSON.stringify(a)}`);
  }
  if (globals.root === '') throw new OciUsageError('--root needs a directory');
  const sub = argv[i];
  const rest = argv.slice(i + 1);
  return { globals, command: parseCommand(sub, rest) };
}

function parseCommand(sub: string | undefined, rest: readonly string[]): OciCommand {
  const bundle = { names: ['--bundle', '-b'], value: true };
  const pidFile = { names: ['--pid-file'], value: true };
  const consoleSocket = { names: ['--console-socket'], value: true };
  // runc create/run options with no meaning here (accepted, ignored).
  const ignored = [
    { names: ['--no-pivot'], value: false },
    { names: ['--no-new-keyring'], value: false },
    { names: ['--preserve-fds'], value: true },
    { names: ['--no-subreaper'], value: false },
  ];
  switch (sub) {
    case undefined:
      throw new OciUsageError('need a command (create, start, state, kill, delete, run, exec, ps)');
    case 'create': {
      const p = parseOptions(rest, [bundle, pidFile, consoleSocket, ...ignored], sub, false);
      checkPreserveFds(p, sub);
      return { kind: 'create', id: oneId(sub, p.positionals, 'none'), bundle: opt(p, '--bundle') || '.', pidFile: opt(p, '--pid-file'), consoleSocket: opt(p, '--console-socket') };
    }
    case 'run': {
      const p = parseOptions(rest, [bundle, pidFile, consoleSocket, { names: ['--detach', '-d'], value: false }, ...ignored], sub, false);
      checkPreserveFds(p, sub);
      return {
        kind: 'run', id: oneId(sub, p.positionals, 'none'), bundle: opt(p, '--bundle') || '.', pidFile: opt(p, '--pid-file'),
        detach: flag(p, '--detach'), consoleSocket: opt(p, '--console-socket'),
      };
    }
    case 'start':
    case 'state':
    case 'monitor': {
      const p = parseOptions(rest, [], sub, false);
      return { kind: sub, id: oneId(sub, p.positionals, 'none') };
    }
    case 'kill': {
      const p = parseOptions(rest, [{ names: ['--all', '-a'], value: false }, { names: ['--signal', '-s'], value: true }], sub, false);
      const id = oneId(sub, p.positionals, 'rest');
      if (p.positionals.length > 2) throw new OciUsageError(`kill: unexpected argument ${JSON.stringify(p.positionals[2])}`);
      return { kind: 'kill', id, signal: p.positionals[1] ?? (opt(p, '--signal') || 'TERM'), all: flag(p, '--all') };
    }
    case 'delete': {
      const p = parseOptions(rest, [{ names: ['--force', '-f'], value: false }], sub, false);
      return { kind: 'delete', id: oneId(sub, p.positionals, 'none'), force: flag(p, '--force') };
    }
    case 'exec': {
      const p = parseOptions(rest, [
        { names: ['--detach', '-d'], value: false },
        { names: ['--tty', '-t'], value: false },
        { names: ['--cwd'], value: true },
        { names: ['--env', '-e'], value: true, multiple: true },
        { names: ['--user', '-u'], value: true },
        pidFile,
        consoleSocket,
      ], sub, true);
      if (opt(p, '--console-socket') !== '') throw new OciUsageError('exec: --console-socket is not supported (the terminal is the agent\'s; -t attaches this one)');
      const id = oneId(sub, p.positionals, 'rest');
      const args = p.positionals.slice(1);
      if (args.length === 0) throw new OciUsageError('exec: need a command to run after the container id');
      const env = p.opts.get('--env') ?? [];
      for (const e of env) if (!/^[^=]+=/.test(e)) throw new OciUsageError(`exec: invalid environment entry ${JSON.stringify(e)} (want KEY=VALUE)`);
      return {
        kind: 'exec', id, args, detach: flag(p, '--detach'), tty: flag(p, '--tty'), cwd: opt(p, '--cwd'), env,
        user: opt(p, '--user'), pidFile: opt(p, '--pid-file'),
      };
    }
    case 'ps': {
      const p = parseOptions(rest, [{ names: ['--format', '-f'], value: true }], sub, true);
      const format = opt(p, '--format') || 'table';
      if (format !== 'table' && format !== 'json') throw new OciUsageError(`ps: --format ${JSON.stringify(format)}: want table or json`);
      return { kind: 'ps', id: oneId(sub, p.positionals, 'rest'), format, psArgs: p.positionals.slice(1) };
    }
    default:
      throw new OciUsageError(`unknown command ${JSON.stringify(sub)}`);
  }
}

/**
 * The debug endpoint to ask for status and pids: `globals.debugAddress` when set, else
 * `unix://<dir>/debug.sock` next to a unix agent socket `unix://<dir>/agent.sock` (the layout of
 * `kata-agent --standalone`, control/standalone.ts), else "" (none known).
 */
export function debugAddressFor(globals: OciGlobals): string {
  if (globals.debugAddress !== '') return globals.debugAddress;
  const m = /^unix:\/\/(\/.*)\/[^/]+$/.exec(globals.address);
  return m ? `unix://${m[1]}/debug.sock` : '';
}

/** The usage text of the OCI CLI. */
export function ociUsageText(program: string): string {
  return `${program}: the OCI runtime command-line interface over a Kata agent (runc-style).

USAGE:
    ${program} [GLOBAL OPTIONS] COMMAND [OPTIONS] ID [ARGS]

COMMANDS:
    create [--bundle|-b DIR] [--pid-file FILE] ID    create the container (process not started)
    start ID                                         start the container's process
    state ID                                         print the state JSON (OCI runtime-spec runtime.md#state)
    kill [--all|-a] ID [SIGNAL]                      send a signal (default TERM; names or numbers)
    delete [--force|-f] ID                           remove a stopped (with --force: any) container
    run [--bundle|-b DIR] [--detach|-d] [--pid-file FILE] ID
                                                     create and start; attached unless -d (exit status = the process's)
    exec [-d] [-t] [--cwd DIR] [-e K=V]... [-u UID[:GID]] [--pid-file FILE] ID CMD [ARG...]
                                                     run a process in the container
    ps [--format|-f table|json] ID [PS ARGS...]      the container's processes

GLOBAL OPTIONS:
    --address ADDR        the agent's ttRPC address (env KATA_AGENT_ADDR;
                          default ${DEFAULT_AGENT_ADDRESS}, where kata-agent --standalone serves)
    --debug-address ADDR  the agent's debug endpoint, unix:///path or 127.0.0.1:PORT (env KATA_AGENT_DEBUG_ADDR;
                          default: debug.sock next to a unix agent socket); state, ps, delete
                          (without --force) and --pid-file need it; kill uses it to refuse a stopped container
    --root DIR            state records, one directory per container (default ${DEFAULT_OCI_ROOT})
    --log FILE            also append error messages to FILE
    --log-format text|json
    Accepted and ignored (runc internals): --debug, --systemd-cgroup, --rootless, --criu PATH.

Exit status: 0 on success, 1 on an error (unknown id, the agent's refusal: the message names it), 255 when exec
fails (as runc), 2 for a usage error; run and exec (attached): the process's exit status.`;
}
