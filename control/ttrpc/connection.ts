/**
 * One accepted ttRPC connection: reads frames, runs the handlers of its requests (many at once,
 * answering each as soon as it settles), enforces the per-connection limits (control/ttrpc/
 * limits.ts): requests in flight, frame completion time, write backlog.
 *
 * Behaviour and choices are documented in control/ttrpc/server.ts.
 */
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { ttrpc } from '../../shared/proto';
import { Code, StatusError } from '../../shared/protocol';
import { FrameParser, FrameType, HEADER_LENGTH, MESSAGE_LENGTH_MAX, encodeVarint, oversizeMessage, writeFrame, writeFrameChunks, type FrameHeader, type ParsedFrame } from './frame';
import { decodeRequest, encodeOkResponseFrame, OK_STATUS_AND_PAYLOAD_TAG, type RequestEnvelope } from './envelope';
import { SMALL_PARTIAL_FRAME, type ConnectionLimits, type SharedByteBudget } from './limits';
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
  /**
   * Run `fn` when the answer is handed to the connection: right before its frame is written
   * (after it was encoded, so nothing but the write syscall follows), or when it is dropped
   * (the call ended, the connection closed). ReadStdout records the delivered offset of its
   * output spool then (control/sandbox/spool.ts).
   */
  readonly onSend?: (fn: () => void) => void;
  /**
   * Run `fn` once the kernel accepted every byte of the answer's frame (the socket write
   * completed): from then on the connection holds no reference to the answer's buffers, so
   * their producer may reuse them, and a state change that must follow delivery (releasing an
   * exit status, acking an OOM event) may happen. Never run when the answer is not written or
   * the write fails (buffers are then left to the GC; the state stays for the next call).
   */
  readonly onWritten?: (fn: () => void) => void;
}

/**
 * A unary handler: gets the request's serialized payload, resolves with the serialized reply
 * (one buffer, or a list of chunks whose concatenation it is, written without copying: the
 * handler must not change them afterwards).
 * Throw (or reject with) a StatusError to answer with that code and message; anything else
 * thrown is answered INTERNAL with its message and logged as our bug.
 */
export type Handler = (payload: Buffer, ctx: HandlerContext) => Promise<Uint8Array | Uint8Array[]>;

/** Longest delay setTimeout honours (2^31-1 ms, ~24.8 days); longer deadlines are not timed. */
const MAX_TIMER_MS = 0x7fffffff;

/** After end(), how long to wait for our side to flush before destroying the stream (ms). */
const END_GRACE_MS = 2000;

/**
 * One request in flight: the handler's context and the connection's bookkeeping in one object
 * (per-call closures and objects were a measurable part of GC under load).
 */
class Call implements HandlerContext {
  /** Made when a handler first reads ctx.signal (most never do: ~2 µs a call saved). */
  controller: AbortController | undefined = undefined;
  /** Why the call was finished early, for a signal asked for afterwards. */
  abortReason: StatusError | undefined = undefined;
  timer: NodeJS.Timeout | undefined = undefined;
  finished = false;
  deadlineMs: number | undefined = undefined;
  private sentHooks: (() => void)[] | null = null;
  /** Hooks of onWritten (taken by the connection's chunked write). */
  writtenHooks: (() => void)[] | null = null;

  constructor(
    readonly streamId: number,
    readonly service: string,
    readonly method: string,
    readonly metadata: Record<string, string[]>,
  ) {}

  /** `service/method` of the request (for {@link Connection.shutdown}'s `unanswered`). */
  get name(): string {
    return `${this.service}/${this.method}`;
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.abortReason) this.controller.abort(this.abortReason);
    }
    return this.controller.signal;
  }

  onSend(fn: () => void): void {
    (this.sentHooks ??= []).push(fn);
  }

  onWritten(fn: () => void): void {
    (this.writtenHooks ??= []).push(fn);
  }

  /** The write callback running the onWritten hooks (taken once; undefined when there are none). */
  takeWrittenDone(): ((err?: Error | null) => void) | undefined {
    const hooks = this.writtenHooks;
    this.writtenHooks = null;
    return hooks ? (err?: Error | null): void => (err ? undefined : hooks.forEach((fn) => fn())) : undefined;
  }

  /** Run (once) the hooks registered with onSend. */
  runSentHooks(): void {
    const hooks = this.sentHooks;
    this.sentHooks = null;
    if (hooks) for (const fn of hooks) fn();
  }

  /** Fields naming the call in log lines. */
  logContext(): { streamId: number; service: string; method: string } {
    return { streamId: this.streamId, service: this.service, method: this.method };
  }
}

/** Largest success payload answered as one copied buffer (above: header and payload written apart). */
const SINGLE_BUFFER_MAX = 64 * 1024;

/** Frames handled per turn of the event loop on one connection (see Connection.pump). */
const PUMP_BATCH = 64;

/** What a connection needs from its server. */
export interface ConnectionOwner {
  /** The handler for service/method, or the UNIMPLEMENTED message when there is none. */
  lookup(service: string, method: string): Handler | string;
  /** True once the server is closing (new requests are answered UNAVAILABLE). */
  readonly isClosing: boolean;
  /** Called once when the connection stops. */
  forget(connection: Connection): void;
  /** Partial-frame bytes of all the owner's connections (limits.maxPartialFrameBytes). */
  readonly partialFrames: SharedByteBudget;
}

/** Message of the UNAVAILABLE answers while the server closes. */
export const SHUTTING_DOWN = 'the server is shutting down';

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

/**
 * One accepted connection and its in-flight requests. Created by the server after the
 * handshake; owns `stream` and destroys it when done.
 */
export class Connection {
  private readonly parser = new FrameParser();
  private readonly inflight = new Set<Call>();
  private idleWaiters: Array<{ resolve: () => void; ignore?: ReadonlySet<string> }> = [];
  private closed = false;
  /** Reading stopped because the write backlog is above the bound. */
  private paused = false;
  /** Reading stopped because partial frames of all connections exceed maxPartialFrameBytes. */
  private budgetPaused = false;
  /** This connection's bytes counted in the owner's partialFrames. */
  private partialHeld = 0;
  private readonly onBudget = (): void => this.resumeFromBudget();
  /** At least one complete frame has arrived. */
  private sawFrame = false;
  private frameTimer: NodeJS.Timeout | undefined;
  /** Frames parsed but not handled yet (reading paused in the middle of a chunk). */
  private queue: ParsedFrame[] = [];
  private queuePos = 0;
  private yieldScheduled = false;
  /** The stream is corked until this turn's check phase (corkTurn). */
  private corked = false;
  /** Responses written since the write buffer was last empty ('drain'). */
  private writesSinceDrain = 0;
  /** Requests refused for the in-flight limit (for rate-limited logging). */
  private refusedInflight = 0;
  readonly done: Promise<void>;

  constructor(
    private readonly server: ConnectionOwner,
    private readonly stream: Duplex,
    private readonly log: Logger,
    private readonly limits: ConnectionLimits,
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
    stream.on('drain', () => this.onDrain());
    this.startFrameTimer(); // the first frame must arrive in time too
  }

  /** True once a complete frame has arrived (a peer that speaks ttRPC, not a silent socket). */
  get established(): boolean {
    return this.sawFrame;
  }

  /** True while reading is stopped because the peer does not read its responses. */
  get readingPaused(): boolean {
    return this.paused;
  }

  /** Requests in flight on this connection. */
  get inflightCount(): number {
    return this.inflight.size;
  }

  private onDrain(): void {
    this.writesSinceDrain = 0;
    if (!this.paused || this.closed) return;
    if (this.stream.writableLength > this.limits.maxWriteBacklogBytes) return;
    this.paused = false;
    this.log.debug('write backlog drained; reading requests again');
    if (!this.yieldScheduled && !this.budgetPaused) this.stream.resume();
    if (!this.parser.idle || !this.sawFrame) this.startFrameTimer();
    try {
      this.pump();
    } catch (err) {
      this.log.error({ err }, 'unexpected failure while handling a frame; closing the connection');
      this.shutdown('internal error');
    }
  }

  private startFrameTimer(): void {
    this.clearFrameTimer();
    const ms = this.limits.frameTimeoutMs;
    if (ms <= 0 || this.closed) return;
    this.frameTimer = setTimeout(() => {
      this.frameTimer = undefined;
      if (this.closed) return;
      const what = this.sawFrame ? 'a frame stayed incomplete' : 'no complete frame arrived';
      this.log.warn({ timeoutMs: ms, bufferedBytes: this.parser.bufferedBytes }, `${what} for ${ms} ms; closing the connection`);
      this.shutdown('frame timeout');
    }, ms);
    this.frameTimer.unref();
  }

  private clearFrameTimer(): void {
    if (this.frameTimer) clearTimeout(this.frameTimer);
    this.frameTimer = undefined;
  }

  /**
   * Stop serving: abort in-flight handlers (answering each with `answer` first when given: the
   * server is closing, the peer is still there — except the calls named in `unanswered`
   * (`service/method`), which end with the connection, unanswered), end the stream (flushing
   * what was written) and destroy it. Idempotent.
   */
  shutdown(reason: string, answer?: StatusError, unanswered?: ReadonlySet<string>): void {
    if (!this.closed) {
      if (answer) {
        for (const entry of this.inflight) {
          if (!unanswered?.has(entry.name)) this.respondStatus(entry.streamId, answer.code, answer.message);
        }
      }
      this.closed = true;
      this.clearFrameTimer();
      const abortReason = new StatusError(Code.CANCELLED, reason);
      for (const entry of [...this.inflight]) this.finish(entry, abortReason);
      this.inflight.clear();
      this.server.partialFrames.cancel(this.onBudget);
      this.server.partialFrames.update(this.partialHeld, 0);
      this.partialHeld = 0;
      this.server.partialFrames.releaseLeader(this);
      this.server.forget(this);
    }
    endThenDestroy(this.stream);
  }

  /**
   * Resolves once no handler is in flight (at once if none is), not counting the calls named
   * in `ignore` (`service/method`: long polls that only end with an event or the connection).
   */
  idle(ignore?: ReadonlySet<string>): Promise<void> {
    if (this.closed || this.busyCount(ignore) === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push({ resolve, ignore }));
  }

  private busyCount(ignore?: ReadonlySet<string>): number {
    if (!ignore) return this.inflight.size;
    let n = 0;
    for (const entry of this.inflight) if (!ignore.has(entry.name)) n++;
    return n;
  }

  private finish(entry: Call, abortReason?: StatusError): void {
    if (entry.finished) return;
    entry.finished = true;
    if (entry.timer) clearTimeout(entry.timer);
    this.inflight.delete(entry);
    if (abortReason) {
      entry.abortReason = abortReason;
      entry.controller?.abort(abortReason);
    }
    if (this.idleWaiters.length > 0) {
      const waiting: typeof this.idleWaiters = [];
      for (const w of this.idleWaiters) {
        if (this.busyCount(w.ignore) === 0) w.resolve();
        else waiting.push(w);
      }
      this.idleWaiters = waiting;
    }
  }

  /**
   * Count this connection's partial frame in the owner's shared bound; above it, a connection
   * holding more than SMALL_PARTIAL_FRAME bytes stops being read until the total drops.
   */
  private accountPartial(): void {
    const budget = this.server.partialFrames;
    const held = this.closed ? 0 : this.parser.bufferedBytes;
    const within = budget.update(this.partialHeld, held);
    this.partialHeld = held;
    if (held === 0) budget.releaseLeader(this);
    if (within || held <= SMALL_PARTIAL_FRAME || this.budgetPaused || this.closed) return;
    if (budget.leader === undefined || budget.leader === this) {
      budget.leader = this; // the one frame that keeps progressing
      return;
    }
    this.budgetPaused = true;
    this.log.debug({ held, total: this.server.partialFrames.used, limit: this.limits.maxPartialFrameBytes }, 'partial frames over the shared bound; reading paused');
    this.stream.pause();
    this.server.partialFrames.whenAvailable(this.onBudget);
  }

  private resumeFromBudget(): void {
    if (!this.budgetPaused || this.closed) return;
    this.budgetPaused = false;
    if (!this.paused && !this.yieldScheduled) this.stream.resume();
  }

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    try {
      const frames = this.parser.push(chunk);
      this.accountPartial();
      if (frames.length > 0) this.sawFrame = true;
      // A frame must complete within frameTimeoutMs of its first byte (slowloris).
      if (this.parser.idle && this.sawFrame) this.clearFrameTimer();
      else if (!this.paused && (frames.length > 0 || this.frameTimer === undefined)) this.startFrameTimer();
      if (frames.length === 0) return;
      // Several requests in one chunk (a pipelining client): hold their answers and write them
      // together at the end of this turn (one writev instead of a write per answer).
      if (frames.length > 1) this.corkTurn();
      if (this.queuePos < this.queue.length) this.queue.push(...frames);
      else {
        this.queue = frames;
        this.queuePos = 0;
      }
      this.pump();
    } catch (err) {
      this.log.error({ err }, 'unexpected failure while reading a frame; closing the connection');
      this.shutdown('internal error');
    }
  }

  /**
   * Handle queued frames until the queue is empty or reading is paused: one chunk can carry
   * thousands of small requests, and a peer that does not read must not get them all answered
   * at once. At most {@link PUMP_BATCH} frames are handled per turn of the event loop, so the
   * answers of quick handlers are written (and the write backlog seen) before more requests are
   * taken; the frames left wait here (at most one chunk's worth) with reading stopped.
   */
  private pump(): void {
    let budget = PUMP_BATCH;
    while (!this.closed && !this.paused && this.queuePos < this.queue.length) {
      if (budget-- === 0) {
        this.yieldTurn();
        return;
      }
      const frame = this.queue[this.queuePos++];
      this.onFrame(frame);
    }
    if (this.queuePos >= this.queue.length) {
      this.queue = [];
      this.queuePos = 0;
    }
  }

  /**
   * Cork the stream until the check phase of this event-loop turn: answers of handlers that
   * finish within the turn (their microtasks run before it) leave in one writev. Idempotent
   * within a turn.
   */
  private corkTurn(): void {
    if (this.corked || typeof this.stream.cork !== 'function') return;
    this.corked = true;
    this.stream.cork();
    setImmediate(() => {
      this.corked = false;
      this.stream.uncork();
    });
  }

  /** Stop reading, let the event loop turn (answers get written), then pump again. */
  private yieldTurn(): void {
    if (this.yieldScheduled) return;
    this.yieldScheduled = true;
    this.stream.pause();
    setImmediate(() => {
      this.yieldScheduled = false;
      if (this.closed) return;
      try {
        this.pump();
      } catch (err) {
        this.log.error({ err }, 'unexpected failure while handling a frame; closing the connection');
        this.shutdown('internal error');
        return;
      }
      if (!this.paused && !this.yieldScheduled && !this.budgetPaused) this.stream.resume();
    });
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
    let request: RequestEnvelope;
    try {
      request = decodeRequest(body);
    } catch (err) {
      const message = `malformed request envelope: ${(err as Error).message}`;
      this.log.warn({ streamId, err }, 'malformed request envelope; closing the connection');
      this.respondStatus(streamId, Code.INVALID_ARGUMENT, message);
      this.shutdown('malformed request');
      return;
    }
    const { service, method } = request;
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

    if (this.inflight.size >= this.limits.maxInflightPerConnection) {
      if (this.refusedInflight++ % 1000 === 0) {
        this.log.warn({ streamId, service, method, limit: this.limits.maxInflightPerConnection, refused: this.refusedInflight }, 'too many requests in flight; request refused (logged once per 1000)');
      }
      this.respondStatus(streamId, Code.RESOURCE_EXHAUSTED, `too many requests in flight on this connection (limit ${this.limits.maxInflightPerConnection})`);
      return;
    }

    const metadata: Record<string, string[]> = Object.create(null) as Record<string, string[]>;
    if (request.metadata) {
      for (const kv of request.metadata) {
        const key = kv.key ?? '';
        (metadata[key] ??= []).push(kv.value ?? '');
      }
    }

    const call = new Call(streamId, service, method, metadata);
    this.inflight.add(call);
    const timeoutNs = request.timeoutNano;
    if (Number.isFinite(timeoutNs) && timeoutNs > 0) {
      const ms = Math.ceil(timeoutNs / 1e6);
      call.deadlineMs = Date.now() + ms;
      if (ms <= MAX_TIMER_MS) {
        call.timer = setTimeout(() => {
          if (call.finished) return;
          this.finish(call, new StatusError(Code.DEADLINE_EXCEEDED, 'timeout'));
          this.log.debug({ ...call.logContext(), timeoutNs }, 'request timed out');
          this.respondStatus(streamId, Code.DEADLINE_EXCEEDED, 'timeout');
        }, ms);
      }
    }

    // The handler runs now (its synchronous part within this frame's turn); a throw becomes a
    // rejection.
    let pending: Promise<Uint8Array | Uint8Array[]>;
    try {
      pending = lookup(request.payload, call);
    } catch (err) {
      pending = Promise.reject(err);
    }
    pending.then(
      (result) => this.settled(call, result),
      (err: unknown) => this.failed(call, err),
    );
  }

  /** A handler resolved: answer with its bytes (or INTERNAL when it resolved with something else). */
  private settled(call: Call, result: Uint8Array | Uint8Array[]): void {
    try {
      if (call.finished) {
        this.log.debug(call.logContext(), 'late handler result dropped');
        call.runSentHooks();
        return;
      }
      this.finish(call);
      if (!(result instanceof Uint8Array) && !(Array.isArray(result) && result.every((c) => c instanceof Uint8Array))) {
        this.log.error({ ...call.logContext(), got: typeof result }, 'handler resolved with something other than bytes');
        this.respondStatus(call.streamId, Code.INTERNAL, `handler for ${call.service}/${call.method} returned ${typeof result}, not bytes`);
        call.runSentHooks();
        return;
      }
      this.respond(call.streamId, Code.OK, '', result, call);
    } catch (err) {
      this.sendFailed(call, err);
    }
  }

  /** A handler failed: answer with its status. */
  private failed(call: Call, err: unknown): void {
    try {
      if (call.finished) {
        this.log.debug({ ...call.logContext(), err }, 'late handler error dropped');
        call.runSentHooks();
        return;
      }
      call.runSentHooks();
      this.finish(call);
      const status = statusFromError(err, this.log, call.logContext());
      this.log.debug({ ...call.logContext(), code: codeName(status.code), message: status.message }, 'request failed');
      this.respondStatus(call.streamId, status.code, status.message);
    } catch (e) {
      this.sendFailed(call, e);
    }
  }

  private sendFailed(call: Call, err: unknown): void {
    this.log.error({ ...call.logContext(), err }, 'failed to send a response; closing the connection');
    this.shutdown('internal error');
  }

  private respondStatus(streamId: number, code: number, message: string): void {
    this.respond(streamId, code, message, undefined);
  }

  /**
   * Write one response frame (a chunked payload is sent as it is, without copies);
   * `call`'s onSend hooks run right before the write (or when nothing is written).
   */
  private respond(streamId: number, code: number, message: string, payload: Uint8Array | Uint8Array[] | undefined, call?: Call): void {
    if (this.closed || this.stream.destroyed || !this.stream.writable) {
      call?.runSentHooks();
      return;
    }
    let ok: boolean;
    // Bytes of the frame written now (header included), for the backlog check below.
    let written: number;
    if (code === Code.OK && payload instanceof Uint8Array && payload.length <= SINGLE_BUFFER_MAX) {
      // The common answer: one buffer, header and envelope written by hand (control/ttrpc/envelope.ts).
      call?.runSentHooks();
      const frame = encodeOkResponseFrame(streamId, FrameType.RESPONSE, payload);
      written = frame.length;
      ok = this.stream.write(frame, call?.takeWrittenDone());
    } else {
      let body: Uint8Array | Uint8Array[];
      if (code === Code.OK && payload !== undefined) {
        // Success with a large or chunked payload: the envelope is `0a 00` (empty OK status, as
        // protobufjs encodes it) then field 2 `12 <varint len>`, followed by the chunks as they are.
        const chunks = Array.isArray(payload) ? payload : [payload];
        const length = chunks.reduce((n, c) => n + c.length, 0);
        body = length === 0 ? [Buffer.from([0x0a, 0x00])] : [Buffer.concat([OK_STATUS_AND_PAYLOAD_TAG, encodeVarint(length)]), ...chunks];
      } else {
        body = ttrpc.Response.encode({ status: wireStatus(code, message), payload: Array.isArray(payload) ? undefined : payload }).finish();
      }
      let replaced = false;
      const bodyLength = Array.isArray(body) ? body.reduce((n, c) => n + c.length, 0) : body.length;
      if (bodyLength > MESSAGE_LENGTH_MAX) {
        this.log.warn({ streamId, length: bodyLength }, 'response too large, replaced by RESOURCE_EXHAUSTED');
        body = ttrpc.Response.encode({ status: wireStatus(Code.RESOURCE_EXHAUSTED, oversizeMessage(bodyLength)) }).finish();
        replaced = true;
      }
      written = (Array.isArray(body) ? body.reduce((n, c) => n + c.length, 0) : body.length) + HEADER_LENGTH;
      call?.runSentHooks();
      // An error answer, or one replaced by RESOURCE_EXHAUSTED, is not the one the hooks were for.
      const done = code === Code.OK && !replaced ? call?.takeWrittenDone() : undefined;
      ok = Array.isArray(body) ? writeFrameChunks(this.stream, streamId, FrameType.RESPONSE, 0, body, done) : writeFrame(this.stream, streamId, FrameType.RESPONSE, 0, body, done);
    }
    this.writesSinceDrain++;
    // The peer is not reading its responses: stop reading its requests until the backlog
    // drains ('drain' is only emitted after a write returned false, hence the `!ok`). Frames
    // are counted since the last drain: an over-count only pauses until the next drain. The
    // backlog is what waits besides this frame: one large answer (a ReadStdout of up to 4 MiB,
    // more than a socket buffer) is not a peer that stops reading.
    if (
      !ok &&
      !this.paused &&
      (this.stream.writableLength - written > this.limits.maxWriteBacklogBytes || this.writesSinceDrain > this.limits.maxWriteBacklogFrames)
    ) {
      this.paused = true;
      this.clearFrameTimer();
      this.log.warn({ backlogBytes: this.stream.writableLength, backlogFrames: this.writesSinceDrain }, 'peer is not reading its responses; reading paused');
      this.stream.pause();
    }
  }
}

