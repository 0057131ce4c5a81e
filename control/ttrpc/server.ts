/**
 * ttRPC server: accepts connections on unix, abstract unix and vsock addresses and runs
 * registered unary handlers, many at once per connection, answering each request as soon as its
 * handler settles (responses may leave in a different order than requests arrived).
 *
 * Behaviour follows containerd/ttrpc server.go and ttrpc-rust src/asynchronous/server.rs, with
 * these documented choices of ours:
 * - unknown service or method → UNIMPLEMENTED (`service <svc> is not implemented`,
 *   `method <svc>/<method> is not implemented`); upstream Rust answers INVALID_ARGUMENT for an
 *   unknown service.
 * - oversize request (payload > 4 MiB) → RESOURCE_EXHAUSTED
 *   `message length N exceeds maximum message size of 4194304` (upstream: INVALID_ARGUMENT);
 *   the body is discarded and the connection stays usable.
 * - even stream id → INVALID_ARGUMENT `stream id must be odd` (as upstream).
 * - timeout_nano > 0 → DEADLINE_EXCEEDED `timeout` when it expires; the handler's signal is
 *   aborted and its late result dropped (as upstream).
 * - a request envelope that does not decode → INVALID_ARGUMENT on that stream, then that
 *   connection is closed (the peer is not speaking ttRPC correctly); other connections go on.
 * - DATA frames, stray RESPONSE frames and unknown frame types → logged and ignored.
 * - a header that cannot be ttRPC (unknown type with an oversize length) → connection closed.
 * - a response above 4 MiB → replaced by RESOURCE_EXHAUSTED.
 * - connection dropped → in-flight handlers' signals aborted.
 * - server closing → new requests answered UNAVAILABLE `the server is shutting down`; in-flight
 *   handlers get `graceMs` to settle, then the rest are answered UNAVAILABLE and their signals
 *   aborted; every answer is flushed before the connection is closed.
 *
 * Protection of the control plane (control/ttrpc/limits.ts, handshake.ts, listen.ts; no
 * upstream counterpart):
 * - a handshaker (`handshaker` option) vets each connection accepted on a unix listener before
 *   any byte is read; the agent's checks the peer uid (SO_PEERCRED). A refused connection is
 *   closed and logged.
 * - abstract unix addresses are refused (PERMISSION_DENIED) unless `allowAbstract`; a unix
 *   path is created 0600 and never taken over from a live server (FAILED_PRECONDITION).
 * - at most `limits.maxConnections` connections: at the cap, the oldest connection that has not
 *   sent a complete frame yet is closed to make room; when every connection has, the new one is
 *   closed at once.
 * - at most `limits.maxInflightPerConnection` requests in flight per connection: one above it
 *   is answered RESOURCE_EXHAUSTED `too many requests in flight on this connection (limit N)`.
 * - a frame (and a new connection's first frame) must complete within `limits.frameTimeoutMs`,
 *   else the connection is closed.
 * - when more than `limits.maxWriteBacklogBytes` of responses wait for a peer that does not
 *   read them, that connection's requests are not read until the backlog drains.
 */
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import { pino, type Logger } from 'pino';
import { loadNative, type NativeAddon } from '../../shared/native';
import { Code, StatusError } from '../../shared/protocol';
import { formatAddress, toAddress, VMADDR_CID_ANY, type TtrpcAddress } from './address';
import type { MessageDecoder, MessageEncoder } from './codec';
import { encodeVarint } from './frame';
import { Connection, SHUTTING_DOWN, type Handler, type HandlerContext } from './connection';
import { FdStream } from './fdstream';
import { socketFd, type AcceptInfo, type Handshaker, type TransportKind } from './handshake';
import { resolveLimits, SharedByteBudget, type ConnectionLimits } from './limits';
import { listenUnix } from './listen';
import { resolveSerialPort, SerialPortListener } from './serial';

export type { Handler, HandlerContext } from './connection';

/** Options of {@link TtrpcServer}. */
export interface TtrpcServerOptions {
  /** pino logger (default: a silent one). */
  logger?: Logger;
  /** Listen backlog (default 10, as the Rust agent). */
  backlog?: number;
  /** Native addon for vsock and peer checks (default: loaded on first use). */
  native?: NativeAddon;
  /** Connection-accept hook run for connections of unix listeners (default: none, all served). */
  handshaker?: Handshaker;
  /** Accept `unix://@name` addresses in {@link TtrpcServer.listen} (default false). */
  allowAbstract?: boolean;
  /** Resource limits; missing fields get the defaults of {@link resolveLimits}. */
  limits?: Partial<ConnectionLimits>;
}

/** Options of {@link TtrpcServer.close}. */
export interface CloseOptions {
  /** How long in-flight handlers may take to settle before they are answered UNAVAILABLE, in ms (default 0). */
  graceMs?: number;
  /** Message of the UNAVAILABLE answers (default "the server is shutting down"). */
  message?: string;
  /**
   * `service/method` names of long polls that are neither waited for nor answered: they end
   * with their connection, which their client reads as "the server is gone" (the Go runtime's
   * watchOOMEvents stops quietly on `ttrpc: closed` but logs any status and asks again).
   */
  unanswered?: ReadonlySet<string>;
}

interface Listener {
  readonly description: string;
  close(): Promise<void>;
}

/**
 * A ttRPC server. Register handlers, then listen on one or more addresses.
 *
 *   const server = new TtrpcServer({ logger });
 *   server.register('grpc.Health', 'Check', async (payload, ctx) => reply);
 *   await server.listen('unix:///run/kata-agent.sock');
 *   ...
 *   await server.close();
 *
 * Source: containerd/ttrpc server.go, ttrpc-rust src/asynchronous/server.rs (see the module
 * comment for where we differ).
 */
export class TtrpcServer {
  private readonly services = new Map<string, Map<string, Handler>>();
  private readonly connections = new Set<Connection>();
  private readonly listeners = new Set<Listener>();
  private readonly log: Logger;
  private readonly backlog: number;
  private native: NativeAddon | undefined;
  private nextConnectionId = 1;
  private closing = false;
  private readonly handshaker: Handshaker | undefined;
  private readonly allowAbstract: boolean;
  /** The limits in force (defaults filled in). */
  readonly limits: ConnectionLimits;
  /** Connections refused so far (handshake or connection cap), for tests and the debug endpoint. */
  refusedConnections = 0;
  private lastCapWarning = 0;

  /** Throws RangeError for a limit that is not a non-negative integer (see {@link resolveLimits}). */
  constructor(options: TtrpcServerOptions = {}) {
    this.log = options.logger ?? pino({ level: 'silent' });
    this.backlog = options.backlog ?? 10;
    this.native = options.native;
    this.handshaker = options.handshaker;
    this.allowAbstract = options.allowAbstract ?? false;
    this.limits = resolveLimits(options.limits);
    this.partialFrames = new SharedByteBudget(this.limits.maxPartialFrameBytes);
  }

  /** Bytes of incomplete request frames buffered over all connections (bounded by limits.maxPartialFrameBytes). */
  readonly partialFrames: SharedByteBudget;

  /** Number of connections being served. */
  get connectionCount(): number {
    return this.connections.size;
  }

  /**
   * Register `handler` for `service`/`method` (names exactly as clients send them, e.g.
   * "grpc.AgentService", "CreateContainer"). Returns this. Throws StatusError ALREADY_EXISTS if
   * that method already has a handler.
   */
  register(service: string, method: string, handler: Handler): this {
    let methods = this.services.get(service);
    if (!methods) {
      methods = new Map();
      this.services.set(service, methods);
    }
    if (methods.has(method)) {
      throw new StatusError(Code.ALREADY_EXISTS, `method ${service}/${method} is already registered`);
    }
    methods.set(method, handler);
    return this;
  }

  /** Register every entry of `methods` (method name → handler) under `service`. Errors as {@link register}. */
  registerService(service: string, methods: Record<string, Handler>): this {
    for (const [method, handler] of Object.entries(methods)) this.register(service, method, handler);
    return this;
  }

  /** @internal The handler for service/method, or the UNIMPLEMENTED message when there is none. */
  lookup(service: string, method: string): Handler | string {
    const methods = this.services.get(service);
    if (!methods) return `service ${service} is not implemented`;
    return methods.get(method) ?? `method ${service}/${method} is not implemented`;
  }

  /** @internal True once {@link close} has started. */
  get isClosing(): boolean {
    return this.closing;
  }

  /** @internal Called by a connection when it stops. */
  forget(connection: Connection): void {
    this.connections.delete(connection);
  }

  /**
   * Serve one already-connected byte stream (a net.Socket, an {@link FdStream}, any Duplex
   * carrying ttRPC frames). The server owns the stream from now on and destroys it when done.
   * A stream handed over after close() started, one refused by the handshaker (`info.kind`
   * says which listener accepted it; a stream handed over without `info` is not checked) or
   * one above `limits.maxConnections` (when no connection without a complete frame can be
   * evicted) is destroyed at once.
   */
  handleConnection(stream: Duplex, info: AcceptInfo = { kind: 'stream', fd: -1 }): void {
    if (this.closing) {
      stream.destroy();
      return;
    }
    const id = this.nextConnectionId++;
    if (this.connections.size >= this.limits.maxConnections && !this.evictSilentConnection()) {
      this.refusedConnections++;
      const now = Date.now();
      if (now - this.lastCapWarning >= 1000) {
        this.lastCapWarning = now;
        this.log.warn({ conn: id, limit: this.limits.maxConnections, refused: this.refusedConnections }, 'too many connections; connection refused');
      }
      stream.destroy();
      return;
    }
    if (this.handshaker) {
      let verdict;
      try {
        verdict = this.handshaker(stream, info);
      } catch (err) {
        verdict = { ok: false as const, reason: `handshake failed: ${(err as Error).message}` };
      }
      if (!verdict.ok) {
        this.refusedConnections++;
        this.log.warn({ conn: id, address: info.address, peer: verdict.peer, reason: verdict.reason }, 'connection refused');
        stream.destroy();
        return;
      }
      if (verdict.peer) this.log.debug({ conn: id, peer: verdict.peer }, 'peer accepted');
    }
    if ((info.kind === 'unix' || info.kind === 'abstract') && info.fd >= 0) this.raiseSendBuffer(info.fd, id);
    const connection = new Connection(this, stream, this.log.child({ conn: id }), this.limits);
    this.connections.add(connection);
    this.log.debug({ conn: id }, 'connection accepted');
  }

  /**
   * Ask for a {@link ANSWER_SNDBUF} socket send buffer on an accepted unix connection (within
   * net.core.wmem_max; the default is ~208 KB), so that a 1 MiB ReadStdout answer leaves in one
   * writev instead of five writes and four EPOLLOUT rounds (docs/ARCHITECTURE.md "Stdio
   * throughput"). A refusal keeps the default (logged at debug).
   */
  private raiseSendBuffer(fd: number, id: number): void {
    try {
      const now = (this.native ??= loadNative()).setSendBuffer(fd, ANSWER_SNDBUF);
      this.log.debug({ conn: id, sndbuf: now }, 'socket send buffer');
    } catch (err) {
      this.log.debug({ conn: id, err }, 'cannot raise the socket send buffer');
    }
  }

  /**
   * At the connection cap, make room by closing the oldest connection that has not sent a
   * complete frame yet (a silent or slowloris socket; the runtime sends its first request right
   * after connecting). Returns false when every connection is established.
   */
  private evictSilentConnection(): boolean {
    for (const connection of this.connections) {
      if (connection.established) continue;
      this.log.warn({ limit: this.limits.maxConnections }, 'connection cap reached; closing the oldest connection that sent no frame');
      connection.shutdown('evicted: connection cap reached');
      return true;
    }
    return false;
  }

  /**
   * Listen on `address` (`unix:///abs/path`, `unix://@name` or `vsock://<cid>:<port>`, or a
   * parsed {@link TtrpcAddress}). Resolves once listening.
   *
   * - unix path: created mode 0600; an existing socket file is probed: a live server there is
   *   never replaced, a stale file is removed (control/ttrpc/listen.ts). Node removes the file
   *   again on close().
   * - abstract: only with the `allowAbstract` option.
   * - vsock: binds VMADDR_CID_ANY whatever the cid says, as the Rust agent does; needs the
   *   native addon.
   *
   * Errors: StatusError INVALID_ARGUMENT for a bad address string; PERMISSION_DENIED for an
   * abstract address without `allowAbstract`; ALREADY_EXISTS when the unix path exists and is
   * not a socket; FAILED_PRECONDITION when another server serves the path, or after close();
   * otherwise the system error of bind/listen (an Error with `code`, e.g. "EADDRINUSE",
   * "EACCES"; a NativeError for vsock).
   */
  async listen(address: string | TtrpcAddress): Promise<void> {
    if (this.closing) throw new StatusError(Code.FAILED_PRECONDITION, 'server is closed');
    const parsed = toAddress(address);
    const description = formatAddress(parsed);
    if (parsed.kind === 'vsock') {
      this.listenVsock(parsed.port, description);
      return;
    }
    if (parsed.kind === 'serial') {
      this.listenSerial(parsed.path, description);
      return;
    }
    const server = await listenUnix(parsed, {
      backlog: this.backlog,
      allowAbstract: this.allowAbstract,
      onStaleRemoved: (path) => this.log.info({ path }, 'removed a stale socket file'),
    });
    this.listenOn(server, description, parsed.kind);
    this.log.info({ address: description }, 'ttRPC server listening');
  }

  /**
   * Serve the connections of an existing net.Server (listening or not yet). The server is
   * closed by {@link close}. `description` names it in logs; `kind` is what the handshaker is
   * told (default 'unix': a handshaker checks the peer).
   * Throws StatusError FAILED_PRECONDITION after close().
   */
  listenOn(server: net.Server, description = 'net.Server', kind: TransportKind = 'unix'): void {
    if (this.closing) throw new StatusError(Code.FAILED_PRECONDITION, 'server is closed');
    server.on('connection', (socket: net.Socket) => this.handleConnection(socket, { kind, address: description, fd: socketFd(socket) }));
    server.on('error', (err: Error) => this.log.error({ err, address: description }, 'listener error'));
    this.listeners.add({
      description,
      close: () =>
        new Promise<void>((resolve) => {
          if (!server.listening) {
            resolve();
            return;
          }
          server.close(() => resolve());
        }),
    });
  }

  /**
   * Serve a virtio-serial port: one connection at a time, a new one each time a host client
   * connects to the port's chardev (control/ttrpc/serial.ts). Throws StatusError NOT_FOUND for an
   * unknown port name, the open(2) error (ENOENT, EBUSY) otherwise.
   */
  private listenSerial(portPath: string, description: string): void {
    const device = resolveSerialPort(portPath);
    const port = new SerialPortListener(device, {
      native: (this.native ??= loadNative()),
      onSession: (session) => {
        this.log.debug({ address: description, device }, 'host connected to the serial port');
        this.handleConnection(session, { kind: 'serial', address: description, fd: port.fd });
      },
      onError: (err) => this.log.error({ err, address: description }, 'serial port failed'),
    });
    this.listeners.add({ description, close: async () => port.close() });
    this.log.info({ address: description, device }, 'ttRPC server listening');
  }

  private listenVsock(port: number, description: string): void {
    const native = (this.native ??= loadNative());
    const fd = native.vsockListen(-1, port, this.backlog);
    let retry: NodeJS.Timeout | undefined;
    let stopped = false;
    const poller = new native.Poller(fd, (status) => {
      if (stopped) return;
      if (status < 0) {
        this.log.error({ address: description, status }, 'poll on the vsock listener failed');
        return;
      }
      for (;;) {
        let connFd: number;
        try {
          connFd = native.accept(fd);
        } catch (err) {
          // EMFILE and friends: back off instead of spinning on a level-triggered poll.
          this.log.error({ err, address: description }, 'accept failed; retrying in 100 ms');
          poller.stop();
          retry = setTimeout(() => {
            if (!stopped) poller.start(true, false);
          }, 100);
          return;
        }
        if (connFd < 0) return;
        let stream: FdStream;
        try {
          stream = new FdStream(connFd, { native });
        } catch (err) {
          this.log.error({ err }, 'cannot wrap an accepted vsock connection');
          try {
            native.close(connFd);
          } catch {
            // nothing more to do
          }
          continue;
        }
        this.handleConnection(stream, { kind: 'vsock', address: description, fd: connFd });
      }
    });
    poller.start(true, false);
    this.listeners.add({
      description,
      close: async () => {
        stopped = true;
        if (retry) clearTimeout(retry);
        poller.close();
        try {
          native.close(fd);
        } catch (err) {
          this.log.warn({ err }, 'closing the vsock listener failed');
        }
      },
    });
    this.log.info({ address: description, cid: VMADDR_CID_ANY }, 'ttRPC server listening');
  }

  /**
   * Stop listening and answer new requests UNAVAILABLE; give in-flight handlers `graceMs` to
   * settle (their answers are sent as usual), then answer the rest UNAVAILABLE (`message`) and
   * abort their signals (reason: StatusError CANCELLED); end every connection once its answers
   * are flushed.
   * Resolves when all listeners and connections are closed. Idempotent (a later call does not
   * wait for the grace period again).
   */
  async close(options: CloseOptions = {}): Promise<void> {
    const first = !this.closing;
    this.closing = true;
    const listeners = [...this.listeners];
    this.listeners.clear();
    const listenersClosed = Promise.all(listeners.map((l) => l.close()));
    const graceMs = first ? (options.graceMs ?? 0) : 0;
    if (graceMs > 0 && this.connections.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.all([...this.connections].map((c) => c.idle(options.unanswered))),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, graceMs);
        }),
      ]);
      clearTimeout(timer);
    }
    const answer = new StatusError(Code.UNAVAILABLE, options.message ?? SHUTTING_DOWN);
    const connections = [...this.connections];
    for (const connection of connections) connection.shutdown('server closing', answer, options.unanswered);
    await Promise.all([listenersClosed, ...connections.map((c) => c.done)]);
  }
}

/**
 * Adapt a typed function to a {@link Handler}: decodes the payload with `requestType`, calls
 * `fn`, encodes its result with `responseType`. A payload that does not decode is answered
 * INVALID_ARGUMENT `cannot decode <service>/<method> request: <reason>`; errors of `fn` pass
 * through as for any handler.
 *
 * `chunks`, when given, may encode a result itself as a list of byte chunks whose concatenation
 * is the serialized message (e.g. {@link bytesFieldChunks}); the connection then writes them
 * without copying. Returning undefined falls back to `responseType`.
 */
export function unaryHandler<Req, Res>(
  requestType: MessageDecoder<Req>,
  responseType: MessageEncoder<Res>,
  fn: (request: Req, ctx: HandlerContext) => Promise<Res> | Res,
  chunks?: (response: Res) => Uint8Array[] | undefined,
): Handler {
  return async (payload, ctx) => {
    let request: Req;
    try {
      request = requestType.decode(payload);
    } catch (err) {
      throw new StatusError(Code.INVALID_ARGUMENT, `cannot decode ${ctx.service}/${ctx.method} request: ${(err as Error).message}`);
    }
    const response = await fn(request, ctx);
    return chunks?.(response) ?? responseType.encode(response).finish();
  };
}

/**
 * SO_SNDBUF asked for on accepted unix connections: 2 MiB, which the kernel doubles to 4 MiB
 * of bookkeeping when net.core.wmem_max allows (capped there otherwise): a 1 MiB answer plus
 * its skb overhead fits. Only bytes the peer has not read yet occupy it.
 */
export const ANSWER_SNDBUF = 2 * 1024 * 1024;

/** Below this many bytes a copy costs less than a second buffer in the write. */
const ZERO_COPY_MIN = 4096;

/**
 * Serialize a message whose only set field is the bytes field 1 (e.g. ReadStreamResponse
 * `{data}`) as chunks without copying the data: `0a <varint len>` then the data itself. For
 * data under 4 KiB, or anything else set, undefined (encode normally). The data buffer is
 * written to the socket later: its producer must not reuse it once the handler has resolved.
 */
export function bytesFieldChunks(response: { data?: Uint8Array | null } & object): Uint8Array[] | undefined {
  const data = response.data;
  if (!(data instanceof Uint8Array) || data.length < ZERO_COPY_MIN || Object.keys(response).some((k) => k !== 'data')) return undefined;
  return [Buffer.concat([Buffer.from([0x0a]), encodeVarint(data.length)]), data];
}
