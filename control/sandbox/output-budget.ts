/**
 * The budget of unread output of exited processes.
 *
 * Output a process wrote before it exited stays readable after the exit (field case B08), so a
 * caller that never reads it would make control hold it for as long as the record lives (up to
 * ~1 MiB queued per stream, 1024 exited records per container). All exited processes of the
 * sandbox share one budget of queued unread bytes ({@link MAX_UNREAD_EXITED_OUTPUT}); when it is
 * exceeded, the oldest exits lose their unread output first — and never silently: every later
 * read of a stream that lost data fails DATA_LOSS naming the stream, the process and the number
 * of bytes dropped, instead of ending with EOF (see {@link dataLossError}).
 */
import { Code, StatusError } from '../../shared/protocol';
import type { Process } from './process';

/** Default budget of unread output of exited processes, in bytes (64 MiB). */
export const MAX_UNREAD_EXITED_OUTPUT = 64 * 1024 * 1024;

/**
 * DATA_LOSS for a stream whose unread output was dropped by the budget. gRPC's code for
 * "unrecoverable data loss": the Kata runtime ends its copy of the stream on any read error, as
 * on EOF (so the shim behaves the same), while a caller that looks at the status (kata-agent-ctl,
 * logs) learns that output is missing; OUT_OF_RANGE "EOF" would claim the stream was complete.
 */
export function dataLossError(stream: string, p: Pick<Process, 'execId' | 'containerId'>, droppedBytes: number, budget: number): StatusError {
  return new StatusError(
    Code.DATA_LOSS,
    `${stream} of process ${JSON.stringify(p.execId)} of container ${p.containerId}: ${droppedBytes} unread bytes (and whatever ` +
      `followed them) were dropped after the process exited, because unread output of exited processes exceeded the ` +
      `agent's budget of ${budget} bytes`,
  );
}

/** Tracks the exited processes whose output is not drained, oldest exit first. */
export class UnreadOutputBudget {
  /** Exited processes with output not drained, in exit order. */
  private readonly exited = new Set<Process>();
  private scheduled = false;

  /** @param budgetBytes total queued unread bytes allowed across exited processes */
  constructor(readonly budgetBytes = MAX_UNREAD_EXITED_OUTPUT) {}

  /** Exited processes whose output is tracked (not drained yet). */
  get tracked(): number {
    return this.exited.size;
  }

  /** Queued unread output bytes of the tracked exited processes. */
  get unreadBytes(): number {
    let n = 0;
    for (const p of this.exited) n += p.stdio.unreadBytes;
    return n;
  }

  /** `p` has exited: its unread output counts from now on (output still arriving too). */
  add(p: Process): void {
    if (p.stdio.outputDrained || this.exited.has(p)) return;
    this.exited.add(p);
    for (const o of p.stdio.outputs()) o.onQueued = () => this.schedule();
    this.enforce();
  }

  /** Stop tracking `p` (its record is gone). */
  remove(p: Process): void {
    if (!this.exited.delete(p)) return;
    for (const o of p.stdio.outputs()) o.onQueued = null;
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.enforce();
    });
  }

  /**
   * Forget drained processes, then, while the total exceeds the budget, drop the unread output
   * of the oldest exits (their reads then fail with {@link dataLossError}). Returns the bytes
   * dropped.
   */
  enforce(): number {
    let total = 0;
    for (const p of [...this.exited]) {
      if (p.stdio.outputDrained) this.remove(p);
      else total += p.stdio.unreadBytes;
    }
    let dropped = 0;
    for (const p of [...this.exited]) {
      if (total <= this.budgetBytes) break;
      const outputs = p.stdio.outputs();
      outputs.forEach((o, i) => {
        if (o.queuedBytes === 0) return;
        const name = p.terminal ? 'terminal output' : i === 0 ? 'stdout' : 'stderr';
        const n = o.drop((bytes) => dataLossError(name, p, bytes, this.budgetBytes));
        total -= n;
        dropped += n;
      });
      if (p.stdio.outputDrained) this.remove(p);
    }
    return dropped;
  }
}
