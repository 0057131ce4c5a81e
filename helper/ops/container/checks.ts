/** Small argument checks and the NOT_FOUND / FAILED_PRECONDITION errors the container verbs share. */
import { Code, StatusError } from '../../../shared/protocol';

export function notFound(what: string): StatusError {
  return new StatusError(Code.NOT_FOUND, what);
}

export function precondition(what: string): StatusError {
  return new StatusError(Code.FAILED_PRECONDITION, what);
}

export function checkBoolArg(v: unknown, field: string, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') throw new StatusError(Code.INVALID_ARGUMENT, `${field} must be a boolean`);
  return v;
}
