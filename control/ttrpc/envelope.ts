/**
 * The ttRPC request and response envelopes (containerd/ttrpc request.proto: `Request`
 * {service=1, method=2, payload=3, timeout_nano=4, metadata=5}, `Response` {status=1,
 * payload=2}) on the server's hot path, without protobufjs for the common shapes:
 * - {@link decodeRequest} reads a request of ASCII service/method names, a payload and a
 *   timeout below 2^49 ns by hand, and hands anything else (metadata, unknown fields, non-ASCII
 *   names, malformed input) to the generated protobufjs decoder, so both give the same result
 *   and errors come from protobufjs alone.
 * - {@link encodeOkResponseFrame} writes a whole success frame (header + `0a 00` + payload
 *   field) into one buffer, byte for byte what `ttrpc.Response.encode({status: {}, payload})`
 *   and {@link encodeFrame} give (proto3: an empty payload is omitted).
 *
 * Profile of Health.Check at concurrency 32: protobufjs' Reader/Writer objects and the copy of
 * the encoded response into the frame were ~4% of the control plane's time, most of it GC.
 */
import type { ttrpc as pb } from '../../shared/generated/protos';
import { ttrpc } from '../../shared/proto';
import { HEADER_LENGTH, type FrameTypeValue } from './frame';

/** A decoded request envelope. */
export interface RequestEnvelope {
  service: string;
  method: string;
  /** The request payload (a view into the frame, not copied); empty when absent. */
  payload: Buffer;
  /** timeout_nano as a number (0: none; may be negative or inexact above 2^53). */
  timeoutNano: number;
  /** Metadata key/value pairs in arrival order, when any. */
  metadata: pb.IKeyValue[] | undefined;
}

const EMPTY: Buffer = Buffer.alloc(0);

/** An ASCII string of body[start, end), or undefined when a byte is ≥ 0x80. */
function asciiField(body: Buffer, start: number, end: number): string | undefined {
  for (let i = start; i < end; i++) if (body[i] >= 0x80) return undefined;
  return body.toString('latin1', start, end);
}

/**
 * Decode a request envelope. Throws what protobufjs throws for a malformed one (the caller
 * answers INVALID_ARGUMENT and closes the connection).
 */
export function decodeRequest(body: Buffer): RequestEnvelope {
  return decodeRequestFast(body) ?? decodeRequestSlow(body);
}

function decodeRequestSlow(body: Buffer): RequestEnvelope {
  const r = ttrpc.Request.decode(body);
  const p = r.payload;
  return {
    service: r.service ?? '',
    method: r.method ?? '',
    payload: p ? (Buffer.isBuffer(p) ? p : Buffer.from(p.buffer, p.byteOffset, p.byteLength)) : EMPTY,
    timeoutNano: Number(r.timeout_nano ?? 0),
    metadata: r.metadata && r.metadata.length > 0 ? r.metadata : undefined,
  };
}

/** The common shapes by hand; undefined means "let protobufjs decide". */
function decodeRequestFast(body: Buffer): RequestEnvelope | undefined {
  let service = '';
  let method = '';
  let payload: Buffer = EMPTY;
  let timeoutNano = 0;
  let pos = 0;
  const end = body.length;
  while (pos < end) {
    const tag = body[pos++];
    if (tag === 0x20) {
      // timeout_nano: a varint of at most 7 bytes (< 2^49) read exactly as a number.
      let v = 0;
      let mul = 1;
      for (let i = 0; ; i++) {
        if (i === 7 || pos >= end) return undefined;
        const b = body[pos++];
        v += (b & 0x7f) * mul;
        mul *= 0x80;
        if (b < 0x80) break;
      }
      timeoutNano = v;
      continue;
    }
    if (tag !== 0x0a && tag !== 0x12 && tag !== 0x1a) return undefined;
    // Length: a varint of at most 4 bytes (< 2^28; frames are ≤ 4 MiB).
    let len = 0;
    let shift = 0;
    for (let i = 0; ; i++) {
      if (i === 4 || pos >= end) return undefined;
      const b = body[pos++];
      len |= (b & 0x7f) << shift;
      shift += 7;
      if (b < 0x80) break;
    }
    const stop = pos + len;
    if (stop > end) return undefined;
    if (tag === 0x1a) payload = len === 0 ? EMPTY : body.subarray(pos, stop);
    else {
      const s = asciiField(body, pos, stop);
      if (s === undefined) return undefined;
      if (tag === 0x0a) service = s;
      else method = s;
    }
    pos = stop;
  }
  return { service, method, payload, timeoutNano, metadata: undefined };
}

/** A success Response's first bytes: status (field 1) empty, then the payload tag (field 2). */
export const OK_STATUS_AND_PAYLOAD_TAG = Buffer.from([0x0a, 0x00, 0x12]);

/** Bytes of the protobuf varint of `n` (0 ≤ n < 2^35). */
function varintLength(n: number): number {
  return n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5;
}

/** Size of the Response envelope around a success payload of `length` bytes. */
export function okEnvelopeLength(length: number): number {
  return length === 0 ? 2 : 3 + varintLength(length) + length;
}

/**
 * One whole RESPONSE frame (flags 0) answering `streamId` with success and `payload`, in one
 * buffer. The caller checks the size limit first ({@link okEnvelopeLength}).
 */
export function encodeOkResponseFrame(streamId: number, type: FrameTypeValue, payload: Uint8Array): Buffer {
  const bodyLength = okEnvelopeLength(payload.length);
  const buf = Buffer.allocUnsafe(HEADER_LENGTH + bodyLength);
  buf.writeUInt32BE(bodyLength, 0);
  buf.writeUInt32BE(streamId, 4);
  buf[8] = type;
  buf[9] = 0;
  buf[10] = 0x0a;
  buf[11] = 0x00;
  if (payload.length === 0) return buf;
  buf[12] = 0x12;
  let pos = 13;
  let v = payload.length;
  while (v >= 0x80) {
    buf[pos++] = (v & 0x7f) | 0x80;
    v >>>= 7;
  }
  buf[pos++] = v;
  buf.set(payload, pos);
  return buf;
}
