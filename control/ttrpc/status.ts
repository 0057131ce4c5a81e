/**
 * google.rpc.Status helpers for ttRPC responses: turning thrown errors into the status a
 * Response carries, and a received status back into a {@link StatusError}.
 *
 * Source: google/rpc/code.proto (code numbers and names), containerd/ttrpc errors.go
 * (a response carries a google.rpc.Status; code 0 is success).
 */
import type { Logger } from 'pino';
import { Code, StatusError, type StatusCode } from '../../shared/protocol';
import type { ttrpc } from '../../shared/generated/protos';

/**
 * The gRPC status code numbers (google.rpc.Code, 0..16) by name. A table of our own rather than
 * @grpc/grpc-js's `status`: loading grpc-js cost ~30 ms of every start-up (node --cpu-prof) for
 * seventeen constants.
 */
export const GrpcStatus: Readonly<Record<keyof typeof Code | 'UNAUTHENTICATED', number>> = Object.freeze({ ...Code, UNAUTHENTICATED: 16 });

/** Code number → name, e.g. 3 → "INVALID_ARGUMENT" (all 17 codes, OK through UNAUTHENTICATED). */
export const CODE_NAMES: Readonly<Record<number, string>> = Object.freeze(
  Object.fromEntries(
    Object.entries(GrpcStatus)
      .filter(([name, value]) => typeof value === 'number' && Number.isNaN(Number(name)))
      .map(([name, value]) => [value as number, name]),
  ),
);

/** The name of a status code for printing; unknown numbers print as `CODE(<n>)`. */
export function codeName(code: number): string {
  return CODE_NAMES[code] ?? `CODE(${code})`;
}

/** A plain status value: `code` a google.rpc.Code number, `message` free text. */
export interface StatusValue {
  code: number;
  message: string;
}

/**
 * The wire object for a Response's `status` field. Default values are left out, so code 0 with
 * an empty message encodes as an empty sub-message (`0a 00` inside the Response), exactly as
 * the Rust agent sends its success status.
 */
export function wireStatus(code: number, message: string): ttrpc.Status.$Properties {
  const out: ttrpc.Status.$Properties = {};
  if (code !== 0) out.code = code;
  if (message !== '') out.message = message;
  return out;
}

/**
 * Map anything a handler threw to a status. A {@link StatusError} keeps its code and message;
 * any other value is an unexpected failure of ours: INTERNAL with the error's message, logged
 * at error level on `log` (with `context` fields) when a logger is given.
 */
export function statusFromError(err: unknown, log?: Logger, context?: Record<string, unknown>): StatusValue {
  if (err instanceof StatusError) {
    return { code: err.code, message: err.message };
  }
  const message = err instanceof Error ? err.message : String(err);
  log?.error({ ...context, err }, 'handler failed with an unexpected error (reported as INTERNAL)');
  return { code: Code.INTERNAL, message: message === '' ? 'internal error' : message };
}

/**
 * Turn a received status into a StatusError (code kept as sent, even outside {@link Code});
 * returns null for code 0 or a missing status (success).
 */
export function errorFromStatus(status: { code?: number | null; message?: string | null } | null | undefined): StatusError | null {
  const code = status?.code ?? 0;
  if (code === 0) return null;
  return new StatusError(code as StatusCode, status?.message ?? '');
}

/** "CODE_NAME: message", for logs and CLI output. */
export function formatStatus(status: { code: number; message: string }): string {
  return status.message === '' ? codeName(status.code) : `${codeName(status.code)}: ${status.message}`;
}

export { Code, StatusError };
export type { StatusCode };
