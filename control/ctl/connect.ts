/**
 * Connecting a client to an agent that may still be starting: an agent started in the background a
 * moment ago (`kata-agent --standalone &`) may not serve its unix socket yet, so "no such file" and
 * "connection refused" are retried for a while (kata-agent-ctl and kata-agent-oci alike).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Code, StatusError } from '../../shared/protocol';

/** How long a unix-socket connection is retried while the socket is missing or refused (ms). */
export const CONNECT_RETRY_MS = 5000;

/**
 * `connect(address)`, retried every 100 ms for up to `retryMs` while it fails UNAVAILABLE with
 * ENOENT/ECONNREFUSED on a `unix://` address; any other failure (or the deadline) is thrown as is.
 */
export async function connectRetrying<T>(address: string, connect: (address: string) => Promise<T>, retryMs = CONNECT_RETRY_MS): Promise<T> {
  const deadline = Date.now() + retryMs;
  for (;;) {
    try {
      return await connect(address);
    } catch (err) {
      const notYet = err instanceof StatusError && err.code === Code.UNAVAILABLE && /ENOENT|ECONNREFUSED/.test(err.message);
      if (!notYet || !address.startsWith('unix://') || Date.now() >= deadline) throw err;
      await sleep(100);
    }
  }
}
