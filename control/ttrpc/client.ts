/**
 * ttRPC client: one connection, many concurrent unary calls multiplexed by stream id
 * (1, 3, 5, ... as containerd/ttrpc client.go and ttrpc-rust do).
 *
 * Errors: every rejection is a StatusError.
 * - the server's status when it answers with code ≠ 0 (code passed through as sent);
 * - DEADLINE_EXCEEDED `timeout` when `timeoutNs` elapses locally before the answer;
 * - UNAVAILABLE when the connection cannot be made, closes or fails with the call pending;
 * - CANCELLED after close() or when the call's AbortSignal fires;
 * - RESOURCE_EXHAUSTED when the request or the response exceeds 4 MiB;
 * - INVALID_ARGUMENT for a bad timeoutNs;
 * - INTERNAL when the response envelope (or, with {@link unary}, the reply) does not decode.
 */
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import { pino, type Logger } from 'pino';
import { ttrpc } from '../../shared/proto';
import type { ttrpc as pb } from '../../shared/generated/protos';
import { loadNative, type NativeAddon } from '../../shared/native';
import { Code, StatusError } from '../../shared/protocol';
import { formatAddress, netPath, toAddress, type TtrpcAddress } from './address';
import type { MessageDecoder, MessageEncoder } from './codec';
import { FdStream } from './fdstream';
import { FrameParser, FrameType, MESSAGE_LENGTH_MAX, oversizeMessage, writeFrame, type ParsedFrame } from './frame';
import { errorFromStatus } from './status';

/** Options of one call. */
export interface CallOptions {
  /**
   * Deadline in ns (sent as timeout_nano; 0 or absent = none). The call is also rejected
   * locally with DEADLINE_EXCEEDED `timeout` when it elapses. Must be a non-negative safe integer.
   */
  timeoutNs?: number;
  /** Request metadata: key → value or values (sent as repeated KeyValue, keys unchanged). */
  metadata?: Record<string, string | readonly string[]>;
  /** Aborting rejects the call with CANCELLED (the server is not told; its answer is dropped). */
  signal?: AbortSignal;
}

/** Options of {@link TtrpcClient}. */
export interface TtrpcClientOptions {
  /** pino logger (default: a silent one). */
  logger?: Logger;
  /** Native addon for vsock (default: loaded on first vsock connect). */
  native?: NativeAddon;
  /** Give up connecting to a unix address after this many ms (default 10000). */
  connectTimeoutMs?: number;
}

interface PendingCall {
  resolve(payload: Buffer): void;
  reject(err: StatusError): void;
}

const MAX_TIMER_MS = 0x7fffffff;
const MAX_STREAM_ID = 0xffffffff;

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * A ttRPC client over one connection.
 *
 *   const client = await TtrpcClient.connect('unix:///run/kata-agent.sock');
 *   const reply = await client.call('grpc.Health', 'Check', requestBytes, { timeoutNs: 5e9 });
 *   await client.close();
 *
 * Source: containerd/ttrpc client.go, ttrpc-rust src/asynchronous/client.rs.
 */
export class TtrpcClient {
  private readonly parser = new FrameParser();
  private readonly pending = new Map<number, PendingCall>();
  private readonly log: Logger;
  private nextStreamId = 1;
  private closedReason: StatusError | null = null;
  /** Resolves when the connection has closed, whoever closed it. */
  readonly closed: Promise<void>;

  private constructor(
    private readonly stream: Duplex,
    options: TtrpcClientOptions,
  ) {
    this.log = options.logger ?? pino({ level: 'silent' });
    this.closed = new Promise((resolve) => stream.once('close', () => resolve()));
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('end', () => this.fail(new StatusError(Code.UNAVAILABLE, 'connection closed by the server')));
    stream.on('error', (err: Error) => {
      this.log.debug({ err }, 'connection error');
      this.fail(new StatusError(Code.UNAVAILABLE, `connection error: ${err.message}`));
    });
    stream.on('close', () => this.fail(new StatusError(Code.UNAVAILABLE, 'connection closed')));
  }

  /**
   * Connect to `address` (`unix:///abs/path`, `unix://@name`, `vsock://<cid>:<port>` or a parsed
   * {@link TtrpcAddress}). Rejects with StatusError INVALID_ARGUMENT for a bad address,
   * UNAVAILABLE when the connection fails or times out (message names the address and cause).
   */
  static async connect(address: string | TtrpcAddress, options: TtrpcClientOptions = {}): Promise<TtrpcClient> {
    const parsed = toAddress(address);
    const description = formatAddress(parsed);
    if (parsed.kind === 'vsock') {
      const native = options.native ?? loadNative();
      let fd: number;
      try {
        fd = native.vsockConnect(parsed.cid, parsed.port);
      } catch (err) {
        throw new StatusError(Code.UNAVAILABLE, `cannot connect to ${description}: ${(err as Error).message}`);
      }
      return new TtrpcClient(new FdStream(fd, { native }), options);
    }
    const timeoutMs = options.connectTimeoutMs ?? 10_000;
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.createConnection({ path: netPath(parsed) });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new StatusError(Code.UNAVAILABLE, `cannot connect to ${description}: timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      s.once('error', (err) => {
        clearTimeout(timer);
        reject(new StatusError(Code.UNAVAILABLE, `cannot connect to ${description}: ${err.message}`));
      });
      s.once('connect', () => {
        clearTimeout(timer);
        resolve(s);
      });
    });
    return new TtrpcClient(socket, options);
  }

  /** Use an already-connected stream (a net.Socket, an FdStream, any Duplex). The client owns it. */
  static fromStream(stream: Duplex, options: TtrpcClientOptions = {}): TtrpcClient {
    return new TtrpcClient(stream, options);
  }

  /** True once the connection is closed or close() was called. */
  get isClosed(): boolean {
    return this.closedReason !== null;
  }

  /** Number of calls awaiting an answer. */
  get pendingCalls(): number {
    return this.pending.size;
  }

  /**
   * Call `service`/`method` with the serialized request `payload`; resolves with the serialized
   * reply (empty Buffer for an empty reply). Rejections: see the module comment.
   */
  call(service: string, method: string, payload: Uint8Array, options: CallOptions = {}): Promise<Buffer> {
    if (this.closedReason) return Promise.reject(this.closedReason);
    const timeoutNs = options.timeoutNs ?? 0;
    if (!Number.isSafeInteger(timeoutNs) || timeoutNs < 0) {
      return Promise.reject(new StatusError(Code.INVALID_ARGUMENT, `timeoutNs must be a non-negative integer, got ${timeoutNs}`));
    }
    if (options.signal?.aborted) return Promise.reject(new StatusError(Code.CANCELLED, 'call cancelled'));

    const metadata: pb.KeyValue.$Properties[] = [];
    for (const [key, value] of Object.entries(options.metadata ?? {})) {
      for (const v of typeof value === 'string' ? [value] : value) metadata.push({ key, value: v });
    }
    const body = ttrpc.Request.encode({
      service,
      method,
      payload,
      timeout_nano: timeoutNs > 0 ? timeoutNs : undefined,
      metadata,
    }).finish();
    if (body.length > MESSAGE_LENGTH_MAX) {
      return Promise.reject(new StatusError(Code.RESOURCE_EXHAUSTED, oversizeMessage(body.length)));
    }

    const streamId = this.allocateStreamId();
    return new Promise<Buffer>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const signal = options.signal;
      const onAbort = (): void => settle(() => reject(new StatusError(Code.CANCELLED, 'call cancelled')));
      const settle = (action: () => void): void => {
        if (this.pending.get(streamId) !== entry) return;
        this.pending.delete(streamId);
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        action();
      };
      const entry: PendingCall = {
        resolve: (p) => settle(() => resolve(p)),
        reject: (e) => settle(() => reject(e)),
      };
      this.pending.set(streamId, entry);
      if (timeoutNs > 0) {
        const ms = Math.ceil(timeoutNs / 1e6);
        if (ms <= MAX_TIMER_MS) {
          timer = setTimeout(() => entry.reject(new StatusError(Code.DEADLINE_EXCEEDED, 'timeout')), ms);
        }
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        writeFrame(this.stream, streamId, FrameType.REQUEST, 0, body);
      } catch (err) {
        entry.reject(new StatusError(Code.UNAVAILABLE, `cannot send request: ${(err as Error).message}`));
      }
    });
  }

  /**
   * Close the connection. Pending calls are rejected with CANCELLED `client closed`; later calls
   * with the same error. Resolves when the connection is closed. Idempotent.
   */
  async close(): Promise<void> {
    this.fail(new StatusError(Code.CANCELLED, 'client closed'));
    if (!this.stream.destroyed) {
      const timer = setTimeout(() => this.stream.destroy(), 2000);
      timer.unref();
      this.stream.end(() => {
        clearTimeout(timer);
        this.stream.destroy();
      });
    }
    await this.closed;
  }

  private allocateStreamId(): number {
    for (;;) {
      const id = this.nextStreamId;
      this.nextStreamId = id + 2 > MAX_STREAM_ID ? 1 : id + 2;
      if (!this.pending.has(id)) return id;
    }
  }

  /** Mark the client closed with `reason` (first reason wins) and reject every pending call. */
  private fail(reason: StatusError): void {
    if (!this.closedReason) this.closedReason = reason;
    const calls = [...this.pending.values()];
    for (const call of calls) call.reject(this.closedReason);
    if (!this.stream.destroyed && reason.code === Code.UNAVAILABLE) this.stream.destroy();
  }

  private onData(chunk: Buffer): void {
    let frames: ParsedFrame[];
    try {
      frames = this.parser.push(chunk);
    } catch (err) {
      this.log.error({ err }, 'unexpected failure while reading a frame');
      this.fail(new StatusError(Code.UNAVAILABLE, `connection failed: ${(err as Error).message}`));
      return;
    }
    for (const frame of frames) this.onFrame(frame);
  }

  private onFrame(frame: ParsedFrame): void {
    const { header } = frame;
    if (frame.kind === 'garbage') {
      this.log.warn({ header, reason: frame.reason }, 'malformed frame from the server; closing');
      this.fail(new StatusError(Code.UNAVAILABLE, `malformed frame from the server: ${frame.reason}`));
      return;
    }
    if (header.type !== FrameType.RESPONSE) {
      this.log.warn({ header }, 'ignoring a frame that is not a response');
      return;
    }
    const call = this.pending.get(header.streamId);
    if (!call) {
      this.log.debug({ streamId: header.streamId }, 'response for no pending call (late or unknown) dropped');
      return;
    }
    if (frame.kind === 'oversize') {
      call.reject(new StatusError(Code.RESOURCE_EXHAUSTED, oversizeMessage(header.length)));
      return;
    }
    let response: pb.Response;
    try {
      response = ttrpc.Response.decode(frame.payload);
    } catch (err) {
      call.reject(new StatusError(Code.INTERNAL, `malformed response envelope: ${(err as Error).message}`));
      return;
    }
    const error = errorFromStatus(response.status);
    if (error) call.reject(error);
    else call.resolve(toBuffer(response.payload ?? Buffer.alloc(0)));
  }
}

/** A typed call function made by {@link unary}. */
export type UnaryCall<Req, Res> = (request: Req, options?: CallOptions) => Promise<Res>;

/**
 * A typed call of `service`/`method` over `client`: encodes the request with `requestType`,
 * decodes the reply with `responseType` (protobufjs static message classes fit both shapes).
 * Rejects as {@link TtrpcClient.call}, plus INTERNAL `cannot decode <service>/<method> response`
 * when the reply does not decode.
 */
export function unary<Req, Res>(
  client: TtrpcClient,
  service: string,
  method: string,
  requestType: MessageEncoder<Req>,
  responseType: MessageDecoder<Res>,
): UnaryCall<Req, Res> {
  return async (request, options) => {
    const reply = await client.call(service, method, requestType.encode(request).finish(), options);
    try {
      return responseType.decode(reply);
    } catch (err) {
      throw new StatusError(Code.INTERNAL, `cannot decode ${service}/${method} response: ${(err as Error).message}`);
    }
  };
}
