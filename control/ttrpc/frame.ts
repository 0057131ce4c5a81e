/**
 * ttRPC framing: how request and response envelopes travel over a byte stream.
 *
 * Every message is one frame: a 10-byte big-endian header followed by `length` payload bytes.
 *
 *   offset 0  u32  length     payload bytes (header not counted)
 *   offset 4  u32  stream id  chosen by the client (odd), echoed by the response
 *   offset 8  u8   type       1 REQUEST, 2 RESPONSE, 3 DATA
 *   offset 9  u8   flags      0x1 REMOTE_CLOSED, 0x2 REMOTE_OPEN, 0x4 NO_DATA (unary traffic: 0)
 *
 * Source: containerd/ttrpc channel.go (messageHeader, readMessageHeader) and ttrpc-rust
 * src/proto.rs, which agree byte for byte. The payload limit is MESSAGE_LENGTH_MAX (4 MiB).
 */

/** Size of a frame header, in bytes. */
export const HEADER_LENGTH = 10;

/** Largest frame payload accepted or sent, in bytes (4 MiB; header not counted). */
export const MESSAGE_LENGTH_MAX = 4 << 20;

/** Frame types (header byte 8). */
export const FrameType = {
  REQUEST: 1,
  RESPONSE: 2,
  DATA: 3,
} as const;
export type FrameTypeValue = (typeof FrameType)[keyof typeof FrameType];

/** Frame flags (header byte 9); only streaming rpcs use them, unary frames carry 0. */
export const FrameFlag = {
  REMOTE_CLOSED: 0x1,
  REMOTE_OPEN: 0x2,
  NO_DATA: 0x4,
} as const;

/** A decoded frame header. `length` is the payload size in bytes. */
export interface FrameHeader {
  length: number;
  streamId: number;
  type: number;
  flags: number;
}

/**
 * What {@link FrameParser.push} reports:
 * - `frame`: a complete frame of at most MESSAGE_LENGTH_MAX payload bytes.
 * - `oversize`: a frame whose payload exceeded MESSAGE_LENGTH_MAX; its body has been read and
 *   discarded (never buffered) and only the header is reported, so the receiver can answer on
 *   that stream id.
 * - `garbage`: a header that cannot belong to a ttRPC peer (an unknown frame type together with
 *   an oversize length, e.g. an HTTP request line read as a header). Nothing after it can be
 *   trusted; the parser stops and the receiver should close the connection.
 */
export type ParsedFrame =
  | { kind: 'frame'; header: FrameHeader; payload: Buffer }
  | { kind: 'oversize'; header: FrameHeader }
  | { kind: 'garbage'; header: FrameHeader; reason: string };

/** True for the three frame types containerd/ttrpc defines. */
export function isKnownFrameType(type: number): boolean {
  return type === FrameType.REQUEST || type === FrameType.RESPONSE || type === FrameType.DATA;
}

/**
 * The status message for a payload above the limit, e.g.
 * `message length 4194305 exceeds maximum message size of 4194304`.
 * (Upstream uses the same wording with status INVALID_ARGUMENT; we answer RESOURCE_EXHAUSTED.)
 */
export function oversizeMessage(length: number): string {
  return `message length ${length} exceeds maximum message size of ${MESSAGE_LENGTH_MAX}`;
}

/** Decode a header from the 10 bytes of `buf` at `offset` (default 0). Throws RangeError if `buf` is shorter. */
export function decodeHeader(buf: Buffer, offset = 0): FrameHeader {
  if (buf.length - offset < HEADER_LENGTH) {
    throw new RangeError(`frame header needs ${HEADER_LENGTH} bytes, got ${buf.length - offset}`);
  }
  return {
    length: buf.readUInt32BE(offset),
    streamId: buf.readUInt32BE(offset + 4),
    type: buf[offset + 8],
    flags: buf[offset + 9],
  };
}

/**
 * Encode a 10-byte header. `length` and `streamId` must be u32, `type` and `flags` u8;
 * throws RangeError otherwise (a bug in the caller, never input from the peer).
 */
export function encodeHeader(header: FrameHeader): Buffer {
  const buf = Buffer.allocUnsafe(HEADER_LENGTH);
  buf.writeUInt32BE(header.length, 0);
  buf.writeUInt32BE(header.streamId, 4);
  buf.writeUInt8(header.type, 8);
  buf.writeUInt8(header.flags, 9);
  return buf;
}

/**
 * Encode one whole frame (header + payload) into a single Buffer. Does not enforce
 * MESSAGE_LENGTH_MAX: callers check the limit first so they can answer with a status instead.
 */
export function encodeFrame(streamId: number, type: number, flags: number, payload: Uint8Array): Buffer {
  const buf = Buffer.allocUnsafe(HEADER_LENGTH + payload.length);
  buf.writeUInt32BE(payload.length, 0);
  buf.writeUInt32BE(streamId, 4);
  buf.writeUInt8(type, 8);
  buf.writeUInt8(flags, 9);
  buf.set(payload, HEADER_LENGTH);
  return buf;
}

/** The writable side {@link writeFrame} needs (a net.Socket or any stream.Writable). */
export interface FrameSink {
  write(chunk: Uint8Array, done?: (err?: Error | null) => void): boolean;
  cork?(): void;
  uncork?(): void;
}

/** Above this payload size a frame is written as header + payload instead of one copied buffer. */
const COPY_LIMIT = 64 * 1024;

/**
 * Write one frame to `sink`. Returns what `sink.write` returned for the last chunk (false: the
 * sink's buffer is above its high-water mark; wait for 'drain' before writing much more).
 * Large payloads are not copied: header and payload are written as two corked chunks.
 */
export function writeFrame(sink: FrameSink, streamId: number, type: number, flags: number, payload: Uint8Array, done?: (err?: Error | null) => void): boolean {
  if (payload.length <= COPY_LIMIT) {
    return sink.write(encodeFrame(streamId, type, flags, payload), done);
  }
  sink.cork?.();
  sink.write(encodeHeader({ length: payload.length, streamId, type, flags }));
  const ok = sink.write(payload, done);
  sink.uncork?.();
  return ok;
}

/** Protobuf base-128 varint of a non-negative integer below 2^53. */
export function encodeVarint(n: number): Buffer {
  const out: number[] = [];
  let v = n;
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
  return Buffer.from(out);
}

/**
 * Write one frame whose payload is `chunks` concatenated: the header (with the first chunk when
 * it is small) then each chunk, corked so that they leave in one writev, without copying the
 * large ones. Returns what the last write returned (false: the stream's buffer is full).
 * `done`, when given, is the last write's callback: it runs once the kernel took every byte of
 * the frame (or with an error when the stream failed first).
 */
export function writeFrameChunks(
  sink: FrameSink,
  streamId: number,
  type: number,
  flags: number,
  chunks: Uint8Array[],
  done?: (err?: Error | null) => void,
): boolean {
  const length = chunks.reduce((n, c) => n + c.length, 0);
  const header = encodeHeader({ length, streamId, type, flags });
  sink.cork?.();
  let ok = true;
  const [first, ...rest] = chunks;
  const last = rest.length === 0;
  if (first && first.length <= 64) ok = sink.write(Buffer.concat([header, first]), last ? done : undefined);
  else {
    sink.write(header, first ? undefined : done);
    if (first) ok = sink.write(first, last ? done : undefined);
  }
  for (let i = 0; i < rest.length; i++) ok = sink.write(rest[i], i === rest.length - 1 ? done : undefined);
  sink.uncork?.();
  return ok;
}

/**
 * Incremental frame parser for a byte stream. Feed it chunks in arrival order with
 * {@link push}; it returns the frames completed by each chunk.
 *
 * Memory: it holds at most one partial header plus the body of one frame of at most
 * MESSAGE_LENGTH_MAX bytes; an oversize body is counted down and dropped as it arrives.
 * After reporting `garbage` the parser is stopped: further input is ignored.
 */
export class FrameParser {
  private header: FrameHeader | null = null;
  private readonly headerBuf = Buffer.alloc(HEADER_LENGTH);
  private headerFill = 0;
  private bodyChunks: Buffer[] = [];
  private bodyFill = 0;
  /** Bytes of an oversize body still to drop. */
  private discardLeft = 0;
  private stopped = false;

  /** True once a `garbage` header has been reported. */
  get isStopped(): boolean {
    return this.stopped;
  }

  /** Bytes buffered for the frame in progress (header and body; discarded bytes excluded). */
  get bufferedBytes(): number {
    return this.headerFill + this.bodyFill;
  }

  /** True when no partial frame is pending (a clean place for the stream to end). */
  get idle(): boolean {
    return this.header === null && this.headerFill === 0;
  }

  /** Consume `chunk`; returns the frames it completed, in order. */
  push(chunk: Buffer): ParsedFrame[] {
    const out: ParsedFrame[] = [];
    let pos = 0;
    while (pos < chunk.length && !this.stopped) {
      if (this.header === null) {
        let header: FrameHeader;
        if (this.headerFill === 0 && chunk.length - pos >= HEADER_LENGTH) {
          // The whole header is in this chunk (the usual case): read it in place.
          header = decodeHeader(chunk, pos);
          pos += HEADER_LENGTH;
        } else {
          const take = Math.min(HEADER_LENGTH - this.headerFill, chunk.length - pos);
          chunk.copy(this.headerBuf, this.headerFill, pos, pos + take);
          this.headerFill += take;
          pos += take;
          if (this.headerFill < HEADER_LENGTH) break;
          this.headerFill = 0;
          header = decodeHeader(this.headerBuf);
        }
        if (header.length > MESSAGE_LENGTH_MAX && !isKnownFrameType(header.type)) {
          this.stopped = true;
          out.push({
            kind: 'garbage',
            header,
            reason: `frame of unknown type ${header.type} with length ${header.length}`,
          });
          break;
        }
        this.header = header;
        if (header.length > MESSAGE_LENGTH_MAX) {
          this.discardLeft = header.length;
        } else if (header.length === 0) {
          out.push({ kind: 'frame', header, payload: Buffer.alloc(0) });
          this.header = null;
        }
        continue;
      }

      const header = this.header;
      if (this.discardLeft > 0) {
        const take = Math.min(this.discardLeft, chunk.length - pos);
        this.discardLeft -= take;
        pos += take;
        if (this.discardLeft === 0) {
          out.push({ kind: 'oversize', header });
          this.header = null;
        }
        continue;
      }

      if (this.bodyFill === 0 && chunk.length - pos >= header.length) {
        // The whole body is in this chunk: a view of it, nothing buffered.
        out.push({ kind: 'frame', header, payload: chunk.subarray(pos, pos + header.length) });
        pos += header.length;
        this.header = null;
        continue;
      }
      const take = Math.min(header.length - this.bodyFill, chunk.length - pos);
      this.bodyChunks.push(chunk.subarray(pos, pos + take));
      this.bodyFill += take;
      pos += take;
      if (this.bodyFill === header.length) {
        const payload = this.bodyChunks.length === 1 ? this.bodyChunks[0] : Buffer.concat(this.bodyChunks, this.bodyFill);
        this.bodyChunks = [];
        this.bodyFill = 0;
        this.header = null;
        out.push({ kind: 'frame', header, payload });
      }
    }
    return out;
  }
}
