/**
 * The control plane's side of the helper protocol (shared/protocol.ts): request/response calls
 * with fd passing, and the helper's unsolicited events.
 */
import { EventEmitter } from 'node:events';
import { SeqpacketChannel } from './channel';
import { loadNative } from './native';
import { silentLogger, type Logger } from './log';
import {
  Code,
  HELPER_PROTOCOL_VERSION,
  StatusError,
  type HelperEvent,
  type OpName,
  type Ops,
  type StatusCode,
} from './protocol';

/**
 * Default deadline of a helper call, in ms: 60 s, the deadline the Kata runtime gives the rpcs
 * that lead to helper calls (CreateContainer, StartContainer, ...). A call that needs longer
 * passes its own (RemoveContainer: its removal bound + 10 s).
 */
export const DEFAULT_HELPER_CALL_TIMEOUT_MS = 60_000;

export interface HelperClientOptions {
  logger?: Logger;
  /** Deadline for connect + hello, in ms (default 10000). */
  timeoutMs?: number;
  /**
   * Deadline of a call that gives none, in ms (default {@link DEFAULT_HELPER_CALL_TIMEOUT_MS};
   * 0 = none). A helper that stops answering (e.g. SIGSTOP) then never hangs a call forever.
   */
  callTimeoutMs?: number;
}

export interface CallOptions {
  /**
   * Deadline for this call in ms (default: the client's `callTimeoutMs`; 0 = none). On expiry
   * the call rejects with DEADLINE_EXCEEDED naming the op; a late response is dropped and its
   * fds closed. The helper may still have carried out the operation.
   */
  timeoutMs?: number;
}

/** A successful call: the op's result and the fds of the response by name (caller owns them). */
export interface CallResult<K extends OpName> {
  result: Ops[K][1];
  fds: Record<string, number>;
}

interface PendingCall {
  op: OpName;
  resolve: (value: CallResult<OpName>) => void;
  reject: (err: Error) => void;
  timer?: NodeJS.Timeout;
}

const KNOWN_CODES = new Set<number>(Object.values(Code));

export interface HelperClient {
  on(event: 'event', listener: (event: HelperEvent) => void): this;
  on(event: 'close', listener: () => void): this;
  once(event: 'event', listener: (event: HelperEvent) => void): this;
  once(event: 'close', listener: () => void): this;
  emit(event: 'event', ev: HelperEvent): boolean;
  emit(event: 'close'): boolean;
}

/**
 * Client of the privileged helper. Create it with {@link HelperClient.connect} (unix socket) or
 * {@link HelperClient.fromFd} (an already connected socket, e.g. one end of seqpacketPair for an
 * in-process helper); both complete the `hello` handshake before resolving.
 *
 * Events: `event` (HelperEvent, e.g. a process exit) and `close` (once, when the connection is
 * gone; calls still pending are rejected with UNAVAILABLE).
 */
export class HelperClient extends EventEmitter {
  private readonly channel: SeqpacketChannel;
  private readonly log: Logger;
  private readonly pending = new Map<number, PendingCall>();
  private nextId = 1;
  private readonly callTimeoutMs: number;
  /** The helper's pid, from `hello` (0 before the handshake). */
  helperPid = 0;

  private constructor(fd: number, logger: Logger, callTimeoutMs: number) {
    super();
    this.callTimeoutMs = callTimeoutMs;
    this.log = logger.child({ component: 'helper-client' });
    this.channel = new SeqpacketChannel(fd, { logger: this.log, label: 'helper' });
    this.channel.on('message', (message, fds) => this.onMessage(message, fds));
    this.channel.on('close', () => this.onClose());
    this.channel.on('truncated', (message, reason) => this.onTruncated(message, reason));
  }

  /** A reply whose fds were lost (MSG_CTRUNC): fail that call only, with RESOURCE_EXHAUSTED. */
  private onTruncated(message: unknown, reason: string): void {
    const id = typeof message === 'object' && message !== null ? (message as Record<string, unknown>).id : undefined;
    const entry = typeof id === 'number' ? this.pending.get(id) : undefined;
    if (entry === undefined) {
      this.log.warn({ id }, 'truncated helper message that answers no pending call, dropped');
      return;
    }
    this.pending.delete(id as number);
    if (entry.timer) clearTimeout(entry.timer);
    entry.reject(new StatusError(Code.RESOURCE_EXHAUSTED, `helper reply to ${entry.op} lost: ${reason}`));
  }

  /**
   * Connect to the helper's listening socket at `socketPath` and do the `hello` handshake.
   * Rejects with UNAVAILABLE when the socket cannot be connected, FAILED_PRECONDITION when the
   * helper speaks another protocol version (the message names both), DEADLINE_EXCEEDED when the
   * helper does not answer within `timeoutMs`.
   */
  static async connect(socketPath: string, opts: HelperClientOptions = {}): Promise<HelperClient> {
    let fd: number;
    try {
      fd = loadNative().seqpacketConnect(socketPath);
    } catch (err) {
      throw new StatusError(Code.UNAVAILABLE, `cannot connect to the helper at ${socketPath}: ${(err as Error).message}`);
    }
    return HelperClient.fromFd(fd, opts);
  }

  /**
   * Wrap a connected non-blocking SOCK_SEQPACKET socket `fd` (the client owns it from now on)
   * and do the `hello` handshake; errors as for {@link connect}.
   */
  static async fromFd(fd: number, opts: HelperClientOptions = {}): Promise<HelperClient> {
    const client = new HelperClient(fd, opts.logger ?? silentLogger(), opts.callTimeoutMs ?? DEFAULT_HELPER_CALL_TIMEOUT_MS);
    try {
      const { result } = await client.call('hello', { version: HELPER_PROTOCOL_VERSION }, { timeoutMs: opts.timeoutMs ?? 10000 });
      if (result.version !== HELPER_PROTOCOL_VERSION) {
        throw new StatusError(
          Code.FAILED_PRECONDITION,
          `helper protocol version mismatch: control speaks ${HELPER_PROTOCOL_VERSION}, helper speaks ${String(result.version)}`,
        );
      }
      client.helperPid = result.pid;
      return client;
    } catch (err) {
      client.close();
      throw err;
    }
  }

  /** True once the connection is closed. */
  get closed(): boolean {
    return this.channel.closed;
  }

  /**
   * Call `op` with `args`. Resolves with the result and the response's fds by name (the caller
   * owns those fds and must close them). Rejects with a StatusError carrying the helper's code
   * and message; UNAVAILABLE when the connection is closed or closes before the response;
   * RESOURCE_EXHAUSTED when the request is too large for one packet; DEADLINE_EXCEEDED "helper
   * did not answer <op> within <n> ms" after `opts.timeoutMs` (default: the client's
   * `callTimeoutMs`, {@link DEFAULT_HELPER_CALL_TIMEOUT_MS}).
   */
  call<K extends OpName>(op: K, args: Ops[K][0], opts: CallOptions = {}): Promise<CallResult<K>> {
    return new Promise<CallResult<K>>((resolve, reject) => {
      const id = this.nextId++;
      const entry: PendingCall = {
        op,
        resolve: resolve as (value: CallResult<OpName>) => void,
        reject,
      };
      this.pending.set(id, entry);
      try {
        this.channel.send({ id, op, args });
      } catch (err) {
        this.pending.delete(id);
        reject(err);
        return;
      }
      const timeoutMs = opts.timeoutMs ?? this.callTimeoutMs;
      if (timeoutMs > 0) {
        entry.timer = setTimeout(() => {
          if (this.pending.delete(id)) {
            reject(new StatusError(Code.DEADLINE_EXCEEDED, `helper did not answer ${op} within ${timeoutMs} ms`));
          }
        }, timeoutMs);
      }
    });
  }

  /** Close the connection; pending calls reject with UNAVAILABLE. Idempotent. */
  close(): void {
    this.channel.close();
  }

  private onMessage(message: unknown, fds: number[]): void {
    if (typeof message !== 'object' || message === null || Array.isArray(message)) {
      this.closeFds(fds);
      this.log.error({ message }, 'helper sent a message that is not an object, ignored');
      return;
    }
    const msg = message as Record<string, unknown>;
    if (typeof msg.event === 'string') {
      this.closeFds(fds);
      this.emit('event', msg as unknown as HelperEvent);
      return;
    }
    const id = msg.id;
    const entry = typeof id === 'number' ? this.pending.get(id) : undefined;
    if (entry === undefined) {
      this.closeFds(fds);
      this.log.warn({ id }, 'response to an unknown or timed-out call, dropped');
      return;
    }
    this.pending.delete(id as number);
    if (entry.timer) clearTimeout(entry.timer);
    if (msg.ok === true) {
      const names = Array.isArray(msg.fds) ? msg.fds : [];
      if (names.length !== fds.length || !names.every((n) => typeof n === 'string')) {
        this.closeFds(fds);
        entry.reject(
          new StatusError(
            Code.INTERNAL,
            `helper response to ${entry.op} names ${names.length} fds but carries ${fds.length}`,
          ),
        );
        return;
      }
      const byName: Record<string, number> = {};
      names.forEach((name, i) => {
        const previous = byName[name as string];
        if (previous !== undefined) this.closeFds([previous]);
        byName[name as string] = fds[i];
      });
      entry.resolve({ result: msg.result as Ops[OpName][1], fds: byName });
      return;
    }
    this.closeFds(fds);
    const error = (typeof msg.error === 'object' && msg.error !== null ? msg.error : {}) as Record<string, unknown>;
    const code = typeof error.code === 'number' && KNOWN_CODES.has(error.code) ? (error.code as StatusCode) : Code.UNKNOWN;
    const text = typeof error.message === 'string' ? error.message : `helper ${entry.op} failed without a message`;
    entry.reject(new StatusError(code, text));
  }

  private onClose(): void {
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const entry of pending) {
      if (entry.timer) clearTimeout(entry.timer);
      entry.reject(new StatusError(Code.UNAVAILABLE, `connection to the helper closed during ${entry.op}`));
    }
    this.emit('close');
  }

  private closeFds(fds: number[]): void {
    const native = loadNative();
    for (const fd of fds) {
      try {
        native.close(fd);
      } catch {
        // already closed
      }
    }
  }
}
