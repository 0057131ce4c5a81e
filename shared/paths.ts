/**
 * Path confinement shared by control (validation of host requests) and the helper (which checks
 * again itself): CopyFile, GetVolumeStats and ResizeVolume paths must be absolute, normalised
 * and below one of a set of roots.
 */
import * as path from 'node:path';
import { Code, StatusError } from './protocol';

/** A PCI path as upstream pci.rs: "SS[.F]" hex elements (slot ≤ 0x1f, function ≤ 7) joined by "/". */
export const PCI_PATH_RE = /^[0-9a-fA-F]{2}(\.[0-7])?(\/[0-9a-fA-F]{2}(\.[0-7])?){0,15}$/;

/** `v` as a PCI path ({@link PCI_PATH_RE}); INVALID_ARGUMENT "`what` ... is not a PCI path" otherwise. */
export function checkPciPath(v: unknown, what: string): string {
  if (typeof v !== 'string' || !PCI_PATH_RE.test(v)) throw new StatusError(Code.INVALID_ARGUMENT, `${what} ${JSON.stringify(v)} is not a PCI path ("02/05")`);
  return v;
}

/**
 * An absolute, normalised path (no "." or ".." component, no "//", no trailing "/", no NUL,
 * at most 4096 bytes) strictly below one of `roots`; returns the matching root and the
 * components below it. INVALID_ARGUMENT otherwise. `allowRoot`: the root itself is accepted
 * (components empty).
 */
export function confinedPath(
  v: unknown,
  field: string,
  roots: readonly string[],
  allowRoot = false,
): { root: string; parts: string[] } {
  if (typeof v !== 'string' || v === '' || v.includes('\0') || Buffer.byteLength(v) > 4096) {
    throw new StatusError(Code.INVALID_ARGUMENT, `${field} ${JSON.stringify(v)} is not a path`);
  }
  if (!v.startsWith('/')) throw new StatusError(Code.INVALID_ARGUMENT, `${field} ${JSON.stringify(v)} is not absolute`);
  const parts = v.split('/').slice(1);
  if (parts.some((p) => p === '' || p === '.' || p === '..')) {
    throw new StatusError(Code.INVALID_ARGUMENT, `${field} ${JSON.stringify(v)} is not normalised (empty, "." or ".." component)`);
  }
  for (const root of roots) {
    const r = path.resolve(root);
    if (v === r && allowRoot) return { root: r, parts: [] };
    const prefix = r === '/' ? '/' : `${r}/`;
    if (v.startsWith(prefix) && v.length > prefix.length) return { root: r, parts: v.slice(prefix.length).split('/') };
  }
  throw new StatusError(Code.INVALID_ARGUMENT, `${field} ${JSON.stringify(v)} is outside ${roots.join(', ')}`);
}

