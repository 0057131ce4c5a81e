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
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import { pino, type Logger } from 'pino';
import type { ttrpc as pb } from '../../shared/generated/protos';
import { ttrpc } from '../../shared/proto';
import { loadNative, type NativeAddon } from '../../shared/native';
import { Code, StatusError } from '../../shared/protocol';
import { formatAddress, netPath, toAddress, VMADDR_CID_ANY, type TtrpcAddress } from './address';
import type { MessageDecoder, MessageEncoder } from './codec';
import { FdStream } from './fdstream';
import { FrameParser, FrameType, MESSAGE_LENGTH_MAX, oversizeMessage, writeFrame, type FrameHeader, type ParsedFrame } from './frame';
import { codeName, statusFromError, wireStatus } from './status';

/** What a handler learns about the request besides its payload. */
export interface HandlerContext {
  /** Service name as sent, e.g. "grpc.AgentService". */
  readonly service: string;
  /** Method name as sent, e.g. "CreateContainer". */
  readonly method: string;
  /** Request metadata: key → values in arrival order (keys as sent, not lowercased). */
  readonly metadata: Record<string, string[]>;
  /** Absolute deadline in ms since the epoch (Date.now() scale), when timeout_nano > 0. */
  readonly deadlineMs?: number;
  /** Aborted when the deadline passes, the connection drops or the server closes; `reason` is a StatusError. */
  readonly signal: AbortSignal;
  /** The request's stream id (odd). */
  readonly streamId: number;
}

/**
 * A unary handler: gets the request's serialized payload, resolves with the serialized reply.
 * Throw (or reject with) a StatusError to answer with that code and message; anything else
 * thrown is answered INTERNAL with its message and logged as our bug.
 */
export type Handler = (payload: Buffer, ctx: HandlerContext) => Promise<Uint8Array>;

/** Options of {@link TtrpcServer}. */
export interface TtrpcServerOptions {
  /** pino logger (default: a silent one). */
  logger?: Logger;
  /** Listen backlog (default 10, as the Rust agent). */
  backlog?: number;
  /** Native addon for vsock (default: loaded on first vsock listen). */
  native?: NativeAddon;
}

/** Longest delay setTimeout honours (2^31-1 ms, ~24.8 days); longer deadlines are not timed. */
const MAX_TIMER_MS = 0x7fffffff;

/** After end(), how long to wait for our side to flush before destroying the stream (ms). */
const END_GRACE_MS = 2000;

interface Inflight {
  readonly controller: AbortController;
  readonly streamId: number;
  timer?: NodeJS.Timeout;
  finished: boolean;
}

/** Options of {@link TtrpcServer.close}. */
export interface CloseOptions {
  /** How long in-flight handlers may take to settle before they are answered UNAVAILABLE, in ms (default 0). */
  graceMs?: number;
  /** Message of the UNAVAILABLE answers (default "the server is shutting down"). */
  message?: string;
}

const SHUTTING_DOWN = 'the server is shutting down';

interface Listener {
  readonly description: string;
  close(): Promise<void>;
}

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** end() the stream, then destroy it once flushed (or after a grace period). */
function endThenDestroy(stream: Duplex): void {
  if (stream.destroyed) return;
  const timer = setTimeout(() => stream.destroy(), END_GRACE_MS);
  timer.unref();
  try {
    stream.end(() => {
      clearTimeout(timer);
      stream.destroy();
    });
  } catch {
    clearTimeout(timer);
    stream.destroy();
  }
}

/** One accepted connection and its in-flight requests. */
class Connection {
  private readonly parser = new FrameParser();
  private readonly inflight = new Set<Inflight>();
  private idleWaiters: Array<() => void> = [];
  private closed = false;
  private paused = false;
  readonly done: Promise<void>;

  constructor(
    private readonly server: TtrpcServer,
    private readonly stream: Duplex,
    private readonly log: Logger,
  ) {
    this.done = new Promise((resolve) => stream.once('close', () => resolve()));
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('end', () => {
      this.log.debug('peer closed the connection');
      this.shutdown('connection closed by peer');
    });
    stream.on('error', (err: Error) => {
      this.log.warn({ err }, 'connection error');
      this.shutdown(`connection error: ${err.message}`);
    });
    stream.on('close', () => this.shutdown('connection closed'));
    stream.on('drain', () => {
      if (this.paused) {
        this.paused = false;
        if (!this.closed) stream.resume();
      }
    });
  }

  /**
   * Stop serving: abort in-flight handlers (answering each with `answer` first when given: the
   * server is closing, the peer is still there), end the stream (flushing what was written)
   * and destroy it. Idempotent.
   */
  shutdown(reason: string, answer?: StatusError): void {
    if (!this.closed) {
      if (answer) {
        for (const entry of this.inflight) this.respondStatus(entry.streamId, answer.code, answer.message);
      }
      this.closed = true;
      const abortReason = new StatusError(Code.CANCELLED, reason);
      for (const entry of [...this.inflight]) this.finish(entry, abortReason);
      this.inflight.clear();
      this.server.forget(this);
    }
    endThenDestroy(this.stream);
  }

  /** Resolves once no handler is in flight (at once if none is). */
  idle(): Promise<void> {
    if (this.inflight.size === 0 || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private finish(entry: Inflight, abortReason?: StatusError): void {
    if (entry.finished) return;
    entry.finished = true;
    if (entry.timer) clearTimeout(entry.timer);
    this.inflight.delete(entry);
    if (abortReason) entry.controller.abort(abortReason);
    if (this.inflight.size === 0 && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    let frames: ParsedFrame[];
    try {
      frames = this.parser.push(chunk);
      for (const frame of frames) {
        if (this.closed) return;
        this.onFrame(frame);
      }
    } catch (err) {
      this.log.error({ err }, 'unexpected failure while reading a frame; closing the connection');
      this.shutdown('internal error');
    }
  }

  private onFrame(frame: ParsedFrame): void {
    const { header } = frame;
    switch (frame.kind) {
      case 'garbage':
        this.log.warn({ header, reason: frame.reason }, 'malformed frame header; closing the connection');
        this.shutdown('malformed frame');
        return;
      case 'oversize':
        if (header.type === FrameType.REQUEST) {
          this.log.warn({ streamId: header.streamId, length: header.length }, 'oversize request discarded');
          this.respondStatus(header.streamId, Code.RESOURCE_EXHAUSTED, oversizeMessage(header.length));
        } else {
          this.log.warn({ header }, 'oversize frame of a type we do not accept, discarded');
        }
        return;
      case 'frame':
        if (header.type === FrameType.REQUEST) {
          this.onRequest(header, frame.payload);
        } else {
          this.log.warn({ header }, header.type === FrameType.DATA ? 'DATA frame ignored (no streaming rpcs)' : 'unexpected frame type ignored');
        }
        return;
    }
  }

  private onRequest(header: FrameHeader, body: Buffer): void {
    const { streamId } = header;
    if (streamId % 2 === 0) {
      this.respondStatus(streamId, Code.INVALID_ARGUMENT, 'stream id must be odd');
      return;
    }
    let request: pb.Request;
    try {
      request = ttrpc.Request.decode(body);
    } catch (err) {
      const message = `malformed request envelope: ${(err as Error).message}`;
      this.log.warn({ streamId, err }, 'malformed request envelope; closing the connection');
      this.respondStatus(streamId, Code.INVALID_ARGUMENT, message);
      this.shutdown('malformed request');
      return;
    }
    const service = request.service ?? '';
    const method = request.method ?? '';
    if (this.server.isClosing) {
      this.respondStatus(streamId, Code.UNAVAILABLE, SHUTTING_DOWN);
      return;
    }
    const lookup = this.server.lookup(service, method);
    if (typeof lookup === 'string') {
      this.log.debug({ streamId, service, method }, lookup);
      this.respondStatus(streamId, Code.UNIMPLEMENTED, lookup);
      return;
    }

    const metadata: Record<string, string[]> = Object.create(null) as Record<string, string[]>;
    for (const kv of request.metadata ?? []) {
      const key = kv.key ?? '';
      (metadata[key] ??= []).push(kv.value ?? '');
    }

    const entry: Inflight = { controller: new AbortController(), streamId, finished: false };
    this.inflight.add(entry);
    const timeoutNs = Number(request.timeout_nano ?? 0);
    let deadlineMs: number | undefined;
    if (Number.isFinite(timeoutNs) && timeoutNs > 0) {
      const ms = Math.ceil(timeoutNs / 1e6);
      deadlineMs = Date.now() + ms;
      if (ms <= MAX_TIMER_MS) {
        entry.timer = setTimeout(() => {
          if (entry.finished) return;
          this.finish(entry, new StatusError(Code.DEADLINE_EXCEEDED, 'timeout'));
          this.log.debug({ streamId, service, method, timeoutNs }, 'request timed out');
          this.respondStatus(streamId, Code.DEADLINE_EXCEEDED, 'timeout');
        }, ms);
      }
    }

    const ctx: HandlerContext = {
      service,
      method,
      metadata,
      deadlineMs,
      signal: entry.controller.signal,
      streamId,
    };
    const payload = toBuffer(request.payload ?? Buffer.alloc(0));
    const logContext = { streamId, service, method };
    Promise.resolve()
      .then(() => lookup(payload, ctx))
      .then(
        (result) => {
          if (entry.finished) {
            this.log.debug(logContext, 'late handler result dropped');
            return;
          }
          this.finish(entry);
          if (!(result instanceof Uint8Array)) {
            this.log.error({ ...logContext, got: typeof result }, 'handler resolved with something other than bytes');
            this.respondStatus(streamId, Code.INTERNAL, `handler for ${service}/${method} returned ${typeof result}, not bytes`);
            return;
          }
          this.respond(streamId, Code.OK, '', result);
        },
        (err: unknown) => {
          if (entry.finished) {
            this.log.debug({ ...logContext, err }, 'late handler error dropped');
            return;
          }
          this.finish(entry);
          const status = statusFromError(err, this.log, logContext);
          this.log.debug({ ...logContext, code: codeName(status.code), message: status.message }, 'request failed');
          this.respondStatus(streamId, status.code, status.message);
        },
      )
      .catch((err: unknown) => {
        this.log.error({ ...logContext, err }, 'failed to send a response; closing the connection');
        this.shutdown('internal error');
      });
  }

  private respondStatus(streamId: number, code: number, message: string): void {
    this.respond(streamId, code, message, undefined);
  }

  private respond(streamId: number, code: number, message: string, payload: Uint8Array | undefined): void {
    if (this.closed || this.stream.destroyed || !this.stream.writable) return;
    let body = ttrpc.Response.encode({ status: wireStatus(code, message), payload }).finish();
    if (body.length > MESSAGE_LENGTH_MAX) {
      this.log.warn({ streamId, length: body.length }, 'response too large, replaced by RESOURCE_EXHAUSTED');
      body = ttrpc.Response.encode({ status: wireStatus(Code.RESOURCE_EXHAUSTED, oversizeMessage(body.length)) }).finish();
    }
    const ok = writeFrame(this.stream, streamId, FrameType.RESPONSE, 0, body);
    if (!ok && !this.paused) {
      // The peer is not reading its responses: stop reading requests until it catches up.
      this.paused = true;
      this.stream.pause();
    }
  }
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

  constructor(options: TtrpcServerOptions = {}) {
    this.log = options.logger ?? pino({ level: 'silent' });
    this.backlog = options.backlog ?? 10;
    this.native = options.native;
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
   * A stream handed over after close() started is destroyed at once.
   */
  handleConnection(stream: Duplex): void {
    if (this.closing) {
      stream.destroy();
      return;
    }
    const id = this.nextConnectionId++;
    const connection = new Connection(this, stream, this.log.child({ conn: id }));
    this.connections.add(connection);
    this.log.debug({ conn: id }, 'connection accepted');
  }

  /**
   * Listen on `address` (`unix:///abs/path`, `unix://@name` or `vsock://<cid>:<port>`, or a
   * parsed {@link TtrpcAddress}). Resolves once listening.
   *
   * - unix path: an existing socket file at the path is removed first (a stale one from an
   *   earlier run); Node removes the file again on close().
   * - vsock: binds VMADDR_CID_ANY whatever the cid says, as the Rust agent does; needs the
   *   native addon.
   *
   * Errors: StatusError INVALID_ARGUMENT for a bad address string; StatusError ALREADY_EXISTS
   * when the unix path exists and is not a socket; StatusError FAILED_PRECONDITION after close();
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
    if (parsed.kind === 'unix') removeStaleSocket(parsed.path);
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      server.once('error', onError);
      server.listen({ path: netPath(parsed), backlog: this.backlog }, () => {
        server.off('error', onError);
        resolve();
      });
    });
    this.listenOn(server, description);
    this.log.info({ address: description }, 'ttRPC server listening');
  }

  /**
   * Serve the connections of an existing net.Server (listening or not yet). The server is
   * closed by {@link close}. `description` names it in logs.
   * Throws StatusError FAILED_PRECONDITION after close().
   */
  listenOn(server: net.Server, description = 'net.Server'): void {
    if (this.closing) throw new StatusError(Code.FAILED_PRECONDITION, 'server is closed');
    server.on('connection', (socket: net.Socket) => this.handleConnection(socket));
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
        this.handleConnection(stream);
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
        Promise.all([...this.connections].map((c) => c.idle())),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, graceMs);
        }),
      ]);
      clearTimeout(timer);
    }
    const answer = new StatusError(Code.UNAVAILABLE, options.message ?? SHUTTING_DOWN);
    const connections = [...this.connections];
    for (const connection of connections) connection.shutdown('server closing', answer);
    await Promise.all([listenersClosed, ...connections.map((c) => c.done)]);
  }
}

/**
 * Remove a socket file left at `path` by an earlier run. Throws StatusError ALREADY_EXISTS when
 * something other than a socket is there.
 */
function removeStaleSocket(path: string): void {
  let stat: fs.Stats;
  try {
    stat = fs.lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!stat.isSocket()) {
    throw new StatusError(Code.ALREADY_EXISTS, `cannot listen on ${path}: it exists and is not a socket`);
  }
  fs.unlinkSync(path);
}

/**
 * Adapt a typed function to a {@link Handler}: decodes the payload with `requestType`, calls
 * `fn`, encodes its result with `responseType`. A payload that does not decode is answered
 * INVALID_ARGUMENT `cannot decode <service>/<method> request: <reason>`; errors of `fn` pass
 * through as for any handler.
 */
export function unaryHandler<Req, Res>(
  requestType: MessageDecoder<Req>,
  responseType: MessageEncoder<Res>,
  fn: (request: Req, ctx: HandlerContext) => Promise<Res> | Res,
): Handler {
  return async (payload, ctx) => {
    let request: Req;
    try {
      request = requestType.decode(payload);
    } catch (err) {
      throw new StatusError(Code.INVALID_ARGUMENT, `cannot decode ${ctx.service}/${ctx.method} request: ${(err as Error).message}`);
    }
    const response = await fn(request, ctx);
    return responseType.encode(response).finish();
  };
}
