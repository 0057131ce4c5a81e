/**
 * Helpers shared by the OCI spec conversion modules (control/oci/): the INVALID_ARGUMENT error
 * every check throws, string and path checks, protobuf integer reading, the warning callback.
 */
import { Code, StatusError } from '../../shared/protocol';

/**
 * Receives the conversion's warnings (pino's argument order: fields, then message): unknown
 * capability names (skipped, as upstream), fields accepted but not enforced.
 */
export type OciWarn = (fields: Record<string, unknown>, message: string) => void;

/** StatusError INVALID_ARGUMENT "invalid <field> <value as JSON>: <why>". */
export function invalid(field: string, value: unknown, why: string): StatusError {
  return new StatusError(Code.INVALID_ARGUMENT, `invalid ${field} ${JSON.stringify(value)}: ${why}`);
}

/** `value` itself; INVALID_ARGUMENT naming `field` when it contains a NUL byte. */
export function checkString(field: string, value: string): string {
  if (value.includes('\0')) throw invalid(field, value, 'contains a NUL byte');
  return value;
}

/** True when `p` has a ".." path component. */
function hasDotDot(p: string): boolean {
  return p.split('/').includes('..');
}

/** An absolute path without NUL bytes (and, when `noDotDot`, without ".." components). */
export function checkAbsPath(field: string, value: string, noDotDot: boolean): string {
  checkString(field, value);
  if (!value.startsWith('/')) throw invalid(field, value, 'must be an absolute path');
  if (noDotDot && hasDotDot(value)) throw invalid(field, value, 'must not contain ".." components');
  return value;
}

/** A protobuf integer (number or Long-like) as a number; unset is 0. */
export function toInt(value: number | { toNumber(): number } | null | undefined): number {
  return typeof value === 'number' ? value : value == null ? 0 : value.toNumber();
}

/** {@link toInt}, INVALID_ARGUMENT naming `field` when negative or not finite. */
export function toUint(field: string, value: number | { toNumber(): number } | null | undefined): number {
  const n = toInt(value);
  if (!Number.isFinite(n) || n < 0) throw invalid(field, n, 'must be a non-negative integer');
  return n;
}
