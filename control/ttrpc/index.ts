/**
 * ttRPC for the Kata agent: framing, status mapping, server, client and addresses.
 * Wire format: containerd/ttrpc (channel.go, request.proto); see the individual modules.
 */
export {
  HEADER_LENGTH,
  MESSAGE_LENGTH_MAX,
  FrameType,
  FrameFlag,
  FrameParser,
  decodeHeader,
  encodeHeader,
  encodeFrame,
  writeFrame,
  isKnownFrameType,
  oversizeMessage,
} from './frame';
export type { FrameHeader, FrameTypeValue, FrameSink, ParsedFrame } from './frame';
export { GrpcStatus, CODE_NAMES, codeName, wireStatus, statusFromError, errorFromStatus, formatStatus, Code, StatusError } from './status';
export type { StatusValue, StatusCode } from './status';
export { VMADDR_CID_ANY, UNIX_PATH_MAX, parseAddress, formatAddress, netPath, toAddress } from './address';
export type { TtrpcAddress } from './address';
export type { MessageEncoder, MessageDecoder } from './codec';
export { TtrpcServer, bytesFieldChunks, unaryHandler } from './server';
export type { Handler, HandlerContext, TtrpcServerOptions } from './server';
export { TtrpcClient, unary } from './client';
export type { CallOptions, TtrpcClientOptions, UnaryCall } from './client';
export { FdStream } from './fdstream';
export { requireUnixPeerUid, socketFd } from './handshake';
export type { AcceptInfo, Handshaker, HandshakeResult, TransportKind, UnixPeerOptions } from './handshake';
export { resolveLimits, defaultMaxConnections, nofileLimit, DEFAULT_MAX_INFLIGHT, DEFAULT_FRAME_TIMEOUT_MS, DEFAULT_MAX_WRITE_BACKLOG } from './limits';
export type { ConnectionLimits } from './limits';
export { listenUnix, probeUnixSocket } from './listen';
export type { FdStreamOptions } from './fdstream';
