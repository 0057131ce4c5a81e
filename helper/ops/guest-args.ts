/**
 * Argument checks shared by the helper's ops (helper/ops/sysfs.ts, guest.ts, copy-file.ts,
 * container.ts): each throws StatusError INVALID_ARGUMENT naming the field and the value.
 */
import { Code, StatusError, type StatusCode } from '../../shared/protocol';

/** The args map of `op`, or INVALID_ARGUMENT. */
export function checkArgs(args: unknown, op: string): Record<string, unknown> {
  if (typeof args !== 'object' || args === null || Array.isArray(args)) {
    throw new StatusError(Code.INVALID_ARGUMENT, `${op}: args must be a map`);
  }
  return args as Record<string, unknown>;
}

/** A boolean (absent = false). */
export function boolArg(v: unknown, field: string): boolean {
  if (v === undefined) return false;
  if (typeof v !== 'boolean') throw new StatusError(Code.INVALID_ARGUMENT, `${field} must be a boolean, got ${JSON.stringify(v)}`);
  return v;
}

/** A safe integer in [lo, hi]. */
export function intArg(v: unknown, field: string, lo: number, hi: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < lo || v > hi) {
    throw new StatusError(Code.INVALID_ARGUMENT, `${field} must be an integer in [${lo}, ${hi}], got ${JSON.stringify(String(v))}`);
  }
  return v;
}

/** Bytes (msgpack bin arrives as a Buffer/Uint8Array). */
export function bytesArg(v: unknown, field: string, max: number): Buffer {
  if (!(v instanceof Uint8Array)) throw new StatusError(Code.INVALID_ARGUMENT, `${field} must be bytes`);
  if (v.length > max) throw new StatusError(Code.INVALID_ARGUMENT, `${field} is ${v.length} bytes, more than ${max}`);
  return Buffer.from(v.buffer, v.byteOffset, v.length);
}

export { confinedPath } from '../../shared/paths';

const ERRNO_CODES: Record<string, StatusCode> = {
  ENOENT: Code.NOT_FOUND,
  EEXIST: Code.ALREADY_EXISTS,
  EPERM: Code.PERMISSION_DENIED,
  EACCES: Code.PERMISSION_DENIED,
  EINVAL: Code.INVALID_ARGUMENT,
  ELOOP: Code.INVALID_ARGUMENT,
  ENOTDIR: Code.INVALID_ARGUMENT,
  EISDIR: Code.INVALID_ARGUMENT,
  ENOSPC: Code.RESOURCE_EXHAUSTED,
  EBUSY: Code.FAILED_PRECONDITION,
  ENODEV: Code.FAILED_PRECONDITION,
  ENOTBLK: Code.INVALID_ARGUMENT,
  ENOTTY: Code.FAILED_PRECONDITION,
};

/** A StatusError for an errno failure of `what` (ENOENT → NOT_FOUND, EPERM → PERMISSION_DENIED, ... else INTERNAL). */
export function errnoStatus(err: unknown, what: string): StatusError {
  if (err instanceof StatusError) return err;
  const e = err as NodeJS.ErrnoException;
  const code = (e && typeof e.code === 'string' && ERRNO_CODES[e.code]) || Code.INTERNAL;
  return new StatusError(code, `${what}: ${e?.message ?? String(err)}`);
}
