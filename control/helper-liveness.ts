/**
 * Liveness of the helper: detects a helper that stops answering (SIGSTOP, a wedged event loop)
 * so that no rpc hangs on it.
 *
 * - Every helper call has a deadline (shared/helper-client.ts, 60 s by default).
 * - While a call is pending for {@link DEFAULT_PROBE_AFTER_MS}, and whenever one times out, the
 *   helper is pinged (`ping`, answered by the helper's protocol server without backend work).
 *   No answer within {@link DEFAULT_PING_TIMEOUT_MS} → the helper is declared unresponsive:
 *   every call still pending fails UNAVAILABLE "the helper is not answering", and so does every
 *   new call after one more probe (so a new call waits at most one ping timeout).
 * - Recovery: the next probe that gets an answer (a new call probes first while the helper is
 *   unresponsive) declares it responsive again, e.g. after SIGCONT. Calls abandoned meanwhile
 *   stay failed; the helper may still carry them out once it runs again (the runtime was told
 *   UNAVAILABLE and retries or cleans up as for any failed rpc).
 * - Waits that do not wait for a helper *call* (WaitProcess for an exit event, stdio reads and
 *   writes, which never go through the helper) are not failed: they end with the caller's
 *   deadline or connection (control/rpc/process.ts, stdio.ts).
 */
import type { Logger } from 'pino';
import { Code, StatusError } from '../shared/protocol';
import type { HelperConnection } from './helper';

/** Ping deadline, in ms: a helper that does not answer a ping within it is unresponsive. */
export const DEFAULT_PING_TIMEOUT_MS = 3000;
/** A helper call pending this long (ms) makes control ping the helper (and again each period). */
export const DEFAULT_PROBE_AFTER_MS = 5000;

/** Options of {@link HelperLiveness}. */
export interface HelperLivenessOptions {
  helper: HelperConnection;
  logger: Logger;
  /** Ping deadline in ms (default {@link DEFAULT_PING_TIMEOUT_MS}). */
  pingTimeoutMs?: number;
  /** Probe period while a call is pending, in ms (default {@link DEFAULT_PROBE_AFTER_MS}). */
  probeAfterMs?: number;
}

/** UNAVAILABLE "the helper is not answering" naming the op and the ping deadline. */
export function notAnsweringError(op: string, pingTimeoutMs: number, sent = true): StatusError {
  return new StatusError(
    Code.UNAVAILABLE,
    `the helper is not answering (no answer to a ping within ${pingTimeoutMs} ms); helper ${op} ${sent ? 'abandoned' : 'not sent'}`,
  );
}

/** Watches the helper while calls are pending; see the module comment. */
export class HelperLiveness {
  /** False while the helper is declared unresponsive. */
  responsive = true;
  readonly pingTimeoutMs: number;
  readonly probeAfterMs: number;
  private readonly helper: HelperConnection;
  private readonly log: Logger;
  /** Rejecters of the guarded calls still pending. */
  private readonly pending = new Map<(err: StatusError) => void, string>();
  private probing: Promise<boolean> | null = null;

  constructor(options: HelperLivenessOptions) {
    this.helper = options.helper;
    this.log = options.logger;
    this.pingTimeoutMs = options.pingTimeoutMs ?? DEFAULT_PING_TIMEOUT_MS;
    this.probeAfterMs = options.probeAfterMs ?? DEFAULT_PROBE_AFTER_MS;
  }

  /** Number of guarded helper calls pending (for tests and the debug endpoint). */
  get pendingCalls(): number {
    return this.pending.size;
  }

  /**
   * Before a call: when the helper is declared unresponsive, probe it once (at most
   * {@link pingTimeoutMs}); throws UNAVAILABLE "the helper is not answering" naming `op` when
   * it still does not answer.
   */
  async ready(op: string): Promise<void> {
    if (this.responsive) return;
    if (!(await this.probe())) throw notAnsweringError(op, this.pingTimeoutMs, false);
  }

  /**
   * Run `call` (a helper call for `op`) guarded: while it is pending the helper is probed every
   * {@link probeAfterMs}; when a probe finds it unresponsive the returned promise rejects
   * UNAVAILABLE "the helper is not answering" at once (the call itself ends later by its own
   * deadline; its late answer is dropped by the client, or, when it still comes before that
   * deadline, handed to `onLate` so the caller can undo what the helper did). Otherwise settles
   * as `call` does.
   */
  guard<T>(op: string, call: Promise<T>, onLate?: (value: T) => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (): void => {
        this.pending.delete(fail);
        if (timer) clearTimeout(timer);
      };
      const fail = (err: StatusError): void => {
        done();
        reject(err);
      };
      const arm = (): void => {
        timer = setTimeout(() => {
          if (!this.pending.has(fail)) return;
          void this.probe().then((alive) => {
            if (alive && this.pending.has(fail)) arm();
          });
        }, this.probeAfterMs);
        timer.unref();
      };
      this.pending.set(fail, op);
      arm();
      call.then(
        (value) => {
          if (!this.pending.has(fail)) {
            onLate?.(value);
            return;
          }
          done();
          resolve(value);
        },
        (err: unknown) => {
          if (!this.pending.has(fail)) return;
          done();
          reject(err);
        },
      );
    });
  }

  /**
   * Ping the helper (one ping in flight at a time, shared by concurrent callers). Resolves true
   * when it answered within {@link pingTimeoutMs} (any answer, even an error: it runs), false
   * otherwise; on false every pending guarded call fails UNAVAILABLE. Never rejects.
   */
  probe(): Promise<boolean> {
    this.probing ??= this.ping().then((alive) => {
      this.probing = null;
      this.setResponsive(alive);
      return alive;
    });
    return this.probing;
  }

  private async ping(): Promise<boolean> {
    try {
      await this.helper.call('ping', {}, { timeoutMs: this.pingTimeoutMs });
      return true;
    } catch (err) {
      if (!(err instanceof StatusError)) return false;
      // A deadline or a closed connection: not answering. Any other status is an answer.
      return err.code !== Code.DEADLINE_EXCEEDED && err.code !== Code.UNAVAILABLE;
    }
  }

  private setResponsive(alive: boolean): void {
    if (alive) {
      if (!this.responsive) this.log.warn('the helper answers again');
      this.responsive = true;
      return;
    }
    if (this.responsive) {
      this.log.error({ pingTimeoutMs: this.pingTimeoutMs, pendingCalls: this.pending.size }, 'the helper is not answering; failing its pending calls UNAVAILABLE');
    }
    this.responsive = false;
    for (const [fail, op] of [...this.pending]) fail(notAnsweringError(op, this.pingTimeoutMs));
  }
}
