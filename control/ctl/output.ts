/**
 * How kata-agent-ctl prints responses: one JSON object per line on stdout.
 *
 * The object is the decoded response converted by protobufjs toObject with proto field names,
 * every field present with its default (status 0 shows), enums by name, 64-bit integers as
 * numbers. Bytes fields (ReadStdout/ReadStderr `data`, GetIPTables `data`, ...) print as text
 * when they are valid UTF-8, else as the string "base64:<base64 of the bytes>" so binary data
 * stays recoverable and distinguishable from text.
 * (Upstream agent-ctl logs the Rust Debug form of the reply instead; there is no stable format
 * to match.)
 */
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Bytes as printed: their UTF-8 text when valid, else "base64:..." (see the module comment). */
export function printableBytes(bytes: Uint8Array): string {
  try {
    return utf8.decode(bytes);
  } catch {
    return `base64:${Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64')}`;
  }
}

/** Deep copy of `value` with every Uint8Array replaced by {@link printableBytes}. */
export function toPrintable(value: unknown): unknown {
  if (value instanceof Uint8Array) return printableBytes(value);
  if (Array.isArray(value)) return value.map(toPrintable);
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = toPrintable(v);
    return out;
  }
  return value;
}

/** The response line (no trailing newline) for a response object from responseToObject. */
export function formatResponseLine(object: { [k: string]: unknown }): string {
  return JSON.stringify(toPrintable(object));
}
