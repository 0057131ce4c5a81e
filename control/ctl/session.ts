/**
 * A kata-agent-ctl run: executes command lines (built-ins and API commands) against one agent
 * connection, remembering values between commands, and reports results through two line
 * sinks (stdout: one JSON response per line; stderr: errors and warnings).
 *
 * Command syntax and built-ins follow upstream agent-ctl client.rs (kata-containers 6e4d4c329a):
 * a command starting with a lower-case letter is a built-in (echo, help, list, repeat, sleep,
 * quit), anything else an API command named by its rpc (or an alias, see methods.ts).
 * `repeat N` runs the next command N times (-1 = forever); DestroySandbox and quit end the run.
 *
 * Differences from upstream: the connection is made on the first API command (so `list` needs
 * no agent and no bundle); one connection serves both services; in interactive mode a failed
 * command does not end the session.
 */
import * as readline from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { Code, StatusError } from '../../shared/protocol';
import { formatStatus } from '../ttrpc/status';
import { humanTimeToNs, parseInteger } from './args';
import { AgentClient, responseToObject } from './client';
import { connectRetrying } from './connect';
import { METHODS, METHOD_ALIASES, METHOD_NAMES, NOT_IMPLEMENTED, resolveMethodName, type MethodName } from './methods';
import { formatResponseLine } from './output';
import { buildRequest, type RequestContext } from './requests';

export { CONNECT_RETRY_MS } from './connect';

/** Metadata key and value upstream agent-ctl sends with every call when auto values are on. */
export const AUTO_VALUES_METADATA = { key: 'agent-ctl-cfg', value: 'no-auto-values' } as const;

/** Options of a {@link CtlSession}. */
export interface SessionOptions {
  /** Agent address (unix:///path, unix://@name, vsock://cid:port). */
  serverAddress: string;
  /** OCI bundle directory ("" = none). */
  bundleDir?: string;
  /** Deadline of each call in ns (0 = none). */
  timeoutNs?: number;
  /** Generate missing values (default true). */
  autoValues?: boolean;
  /** Keep going after a failed command, and end the run with success (default false). */
  ignoreErrors?: boolean;
  /** Send the OCI spec's Hostname as "" as upstream does (default false: keep it). */
  clearHostname?: boolean;
  /** With a hybrid-vsock unix socket: the agent's vsock port to ask for (CONNECT <port>). */
  hybridVsockPort?: number;
  /** Receives each stdout line (no newline). */
  stdout(line: string): void;
  /** Receives each stderr line (no newline). */
  stderr(line: string): void;
  /** Debug logging (requests sent, timings). */
  logger?: Logger;
  /** How to connect (default AgentClient.connect); for tests. */
  connect?(address: string): Promise<AgentClient>;
}

/** What one command line did. */
export type CommandOutcome = 'ok' | 'failed' | 'stop';

interface Builtin {
  name: string;
  description: string;
}

const BUILTINS: readonly Builtin[] = [
  { name: 'echo', description: 'Display the arguments' },
  { name: 'help', description: "Alias for 'list'" },
  { name: 'list', description: 'List all available commands' },
  { name: 'repeat', description: "Repeat the next command 'n' times [-1 for forever]" },
  { name: 'sleep', description: 'Pause for the given time (ns, or with a unit: 99ns, 30us, 2ms, 5s, 7m)' },
  { name: 'quit', description: 'Exit this program' },
];

/** Whether `name` is a built-in command of connect (echo, help, list, repeat, sleep, quit). */
export function isBuiltinName(name: string): boolean {
  return BUILTINS.some((b) => b.name === name);
}

/**
 * The text of the `list` built-in: built-ins, then every API command with its service; a
 * method in `notImplemented` (default methods.ts NOT_IMPLEMENTED, empty now) is marked
 * "[not implemented by this agent]".
 */
export function commandListText(notImplemented: ReadonlySet<MethodName> = NOT_IMPLEMENTED): string[] {
  const lines = ['Built-in commands:', ''];
  for (const b of BUILTINS) lines.push(`  ${b.name.padEnd(8)} ${b.description}`);
  lines.push('', 'Agent API commands:', '');
  const aliasOf = new Map<string, string[]>();
  for (const [alias, target] of Object.entries(METHOD_ALIASES)) aliasOf.set(target, [...(aliasOf.get(target) ?? []), alias]);
  for (const name of [...METHOD_NAMES].sort()) {
    const aliases = aliasOf.get(name);
    const extra = aliases ? `, alias ${aliases.join(', ')}` : '';
    const mark = notImplemented.has(name) ? ' [not implemented by this agent]' : '';
    lines.push(`  ${name} (${METHODS[name].service}${extra})${mark}`);
  }
  lines.push('');
  return lines;
}

/** One kata-agent-ctl run; see the module comment. */
export class CtlSession {
  /** Values remembered across commands (cid, sid, exec_id, ...). */
  readonly values = new Map<string, string>();
  private agent: AgentClient | null = null;
  private repeatNext = 1;
  private readonly ctx: RequestContext;
  private readonly autoValues: boolean;

  constructor(private readonly options: SessionOptions) {
    this.autoValues = options.autoValues ?? true;
    this.ctx = {
      values: this.values,
      autoValues: this.autoValues,
      bundleDir: options.bundleDir ?? '',
      clearHostname: options.clearHostname ?? false,
    };
  }

  /**
   * Run command lines in order. Resolves with the exit status: 0 when every command succeeded
   * (or --ignore-errors), 1 after the first failure (the rest are not run). Stops after quit or
   * a successful DestroySandbox.
   */
  async runAll(lines: readonly string[]): Promise<number> {
    for (const line of lines) {
      const outcome = await this.runLine(line);
      if (outcome === 'stop') break;
      if (outcome === 'failed' && !this.options.ignoreErrors) return 1;
    }
    return 0;
  }

  /**
   * Read command lines from `input` until EOF, quit or DestroySandbox, prompting on `prompt`
   * (a writable, e.g. stderr) when given. The command list is shown first, as upstream does.
   * Failed commands are reported and the session goes on. Resolves with 0.
   */
  async runInteractive(input: NodeJS.ReadableStream, prompt?: NodeJS.WritableStream): Promise<number> {
    for (const line of commandListText()) this.options.stdout(line);
    const rl = readline.createInterface({ input, output: prompt, terminal: false });
    const ask = (): void => {
      prompt?.write('Enter command: ');
    };
    ask();
    try {
      for await (const line of rl) {
        const outcome = await this.runLine(line);
        if (outcome === 'stop') break;
        ask();
      }
    } finally {
      rl.close();
    }
    return 0;
  }

  /**
   * Run one command line (with its repeat count, if `repeat N` came before). Never rejects:
   * failures are reported on stderr and give 'failed'.
   */
  async runLine(line: string): Promise<CommandOutcome> {
    const text = line.trim();
    if (text === '') return 'ok';
    const space = text.search(/\s/);
    const name = space < 0 ? text : text.slice(0, space);
    const rest = space < 0 ? '' : text.slice(space).trim();

    if (name === 'repeat') {
      try {
        const n = parseInteger(rest, 'repeat count', -1, Number.MAX_SAFE_INTEGER);
        this.repeatNext = n === 0 ? 1 : n;
        return 'ok';
      } catch (err) {
        this.reportLocal(name, err);
        return 'failed';
      }
    }

    const count = this.repeatNext;
    this.repeatNext = 1;
    let result: CommandOutcome = 'ok';
    for (let i = 0; count < 0 || i < count; i++) {
      const outcome = await this.runOnce(name, rest);
      if (outcome === 'stop') return 'stop';
      if (outcome === 'failed') {
        result = 'failed';
        if (!this.options.ignoreErrors) return 'failed';
      }
    }
    return result;
  }

  /** Close the agent connection, if one was made. */
  async close(): Promise<void> {
    const agent = this.agent;
    this.agent = null;
    await agent?.close();
  }

  private reportLocal(command: string, err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    this.options.stderr(`ERROR: ${command}: ${message}`);
  }

  private async runOnce(name: string, rest: string): Promise<CommandOutcome> {
    if (/^[a-z]/.test(name)) return this.runBuiltin(name, rest);
    const method = resolveMethodName(name);
    if (!method) {
      this.options.stderr(`ERROR: invalid command ${JSON.stringify(name)} (try 'list')`);
      return 'failed';
    }
    return this.runApi(method, rest);
  }

  private async runBuiltin(name: string, rest: string): Promise<CommandOutcome> {
    switch (name) {
      case 'echo':
        this.options.stdout(rest);
        return 'ok';
      case 'help':
      case 'list':
        for (const line of commandListText()) this.options.stdout(line);
        return 'ok';
      case 'sleep':
        try {
          const ns = humanTimeToNs(rest);
          await sleep(Math.ceil(ns / 1e6));
          return 'ok';
        } catch (err) {
          this.reportLocal(name, err);
          return 'failed';
        }
      case 'quit':
        return 'stop';
      default:
        this.options.stderr(`ERROR: invalid command ${JSON.stringify(name)} (try 'list')`);
        return 'failed';
    }
  }

  private async connection(): Promise<AgentClient> {
    if (this.agent && !this.agent.ttrpc.isClosed) return this.agent;
    const connect = this.options.connect ?? ((address: string) => AgentClient.connect(address, this.connectOptions()));
    this.agent = await connectRetrying(this.options.serverAddress, connect);
    return this.agent;
  }

  private connectOptions(): Parameters<typeof AgentClient.connect>[1] {
    const out: Parameters<typeof AgentClient.connect>[1] = {};
    if (this.options.hybridVsockPort !== undefined) out.hybridVsockPort = this.options.hybridVsockPort;
    return out;
  }

  private async runApi(method: MethodName, rest: string): Promise<CommandOutcome> {
    let built;
    try {
      built = buildRequest(method, rest, this.ctx);
    } catch (err) {
      this.reportLocal(method, err);
      return 'failed';
    }
    for (const w of built.warnings) this.options.stderr(`warning: ${method}: ${w}`);
    if (NOT_IMPLEMENTED.has(method)) this.options.stderr(`warning: ${method}: not implemented by this agent (see 'list')`);

    const metadata: Record<string, string> = {};
    if (this.autoValues) metadata[AUTO_VALUES_METADATA.key] = AUTO_VALUES_METADATA.value;
    const log = this.options.logger;
    const started = process.hrtime.bigint();
    try {
      const agent = await this.connection();
      log?.debug({ method, request: (built.request as { toJSON?: () => unknown }).toJSON?.() }, 'sending request');
      const reply = await agent.call(method, built.request as never, { timeoutNs: this.options.timeoutNs ?? 0, metadata });
      const object = responseToObject(method, reply);
      log?.debug({ method, ms: Number(process.hrtime.bigint() - started) / 1e6 }, 'response received');
      this.options.stdout(`${method}: ${formatResponseLine(object)}`);
    } catch (err) {
      if (err instanceof StatusError) {
        this.options.stderr(formatStatus({ code: err.code, message: err.message }));
      } else {
        this.options.stderr(formatStatus({ code: Code.INTERNAL, message: err instanceof Error ? err.message : String(err) }));
      }
      return 'failed';
    }
    return method === 'DestroySandbox' ? 'stop' : 'ok';
  }
}
