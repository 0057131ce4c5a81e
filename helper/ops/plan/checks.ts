/** Primitive checks of plan fields: each throws StatusError INVALID_ARGUMENT naming the field and value. */
import * as path from 'node:path';
import { invalidArgument as invalid } from '../../../shared/protocol';
import { MAX_STRING, MAX_PATH, MAX_ID } from './limits';

// ---------------------------------------------------------------------------------------------
// Primitive checks

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !Buffer.isBuffer(v);
}

export function checkString(v: unknown, field: string, max = MAX_STRING): string {
  if (typeof v !== 'string') throw invalid(`${field} must be a string, got ${describe(v)}`);
  if (Buffer.byteLength(v) > max) throw invalid(`${field} is longer than ${max} bytes`);
  if (v.includes('\0')) throw invalid(`${field} ${JSON.stringify(v)} contains a NUL byte`);
  return v;
}

export function checkBool(v: unknown, field: string): boolean {
  if (typeof v !== 'boolean') throw invalid(`${field} must be a boolean, got ${describe(v)}`);
  return v;
}

export function checkArray(v: unknown, field: string, max: number): unknown[] {
  if (!Array.isArray(v)) throw invalid(`${field} must be an array, got ${describe(v)}`);
  if (v.length > max) throw invalid(`${field} has ${v.length} entries, more than ${max}`);
  return v;
}

export function checkId(v: unknown, field: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > MAX_ID) {
    throw invalid(`${field} must be an integer in 0..${MAX_ID}, got ${describe(v)}`);
  }
  return v;
}

export function describe(v: unknown): string {
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'string') return JSON.stringify(v.length > 80 ? v.slice(0, 80) + '…' : v);
  if (Buffer.isBuffer(v)) return `bytes(${v.length})`;
  if (Array.isArray(v)) return 'an array';
  if (v === null) return 'null';
  if (typeof v === 'object') return 'a map';
  return String(v);
}

/** An absolute path without NUL, at most PATH_MAX bytes. */
export function checkAbsolute(v: unknown, field: string): string {
  const p = checkString(v, field, MAX_PATH);
  if (!p.startsWith('/')) throw invalid(`${field} ${JSON.stringify(p)} is not an absolute path`);
  return p;
}

/** An absolute path with no ".." component, normalised ("//" and "." removed). */
export function checkConfinedPath(v: unknown, field: string): string {
  const p = checkAbsolute(v, field);
  if (p.split('/').includes('..')) throw invalid(`${field} ${JSON.stringify(p)} contains a ".." component`);
  const normal = path.posix.normalize(p);
  return normal.length > 1 && normal.endsWith('/') ? normal.slice(0, -1) : normal;
}

/** An SELinux context: 1..4096 bytes, no NUL, no newline, no quote (it goes into mount data as context="..."). */
export function checkSelinuxLabel(v: unknown, field: string): string {
  const s = checkString(v, field, 4096);
  if (s === '' || /[\n"]/.test(s)) throw invalid(`${field} ${JSON.stringify(s)} is not an SELinux context`);
  return s;
}
