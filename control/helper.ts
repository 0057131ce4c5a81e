/**
 * What control needs of its connection to the privileged helper: the shape of
 * shared/helper-client.ts HelperClient (which satisfies it), kept structural so a test double
 * or an in-process mock can stand in.
 */
import type { HelperEvent, OpName, Ops } from '../shared/protocol';

/** A successful helper call: the op's result and the response's fds by name (caller owns them). */
export interface HelperCallResult<K extends OpName> {
  result: Ops[K][1];
  fds: Record<string, number>;
}

/** A connected helper. */
export interface HelperConnection {
  /**
   * Call `op`; rejects with a StatusError carrying the helper's code (UNAVAILABLE when the
   * connection is gone, DEADLINE_EXCEEDED after `timeoutMs`).
   */
  call<K extends OpName>(op: K, args: Ops[K][0], opts?: { timeoutMs?: number }): Promise<HelperCallResult<K>>;
  /** `event`: unsolicited helper events (process exits); `close`: the connection is gone. */
  on(event: 'event', listener: (event: HelperEvent) => void): unknown;
  on(event: 'close', listener: () => void): unknown;
  off(event: 'event', listener: (event: HelperEvent) => void): unknown;
  off(event: 'close', listener: () => void): unknown;
  /** Close the connection. Idempotent. */
  close(): void;
}
