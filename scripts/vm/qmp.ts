/**
 * A small QMP client (QEMU docs/interop/qmp-spec.txt): connect to the unix socket, read the
 * greeting, negotiate `qmp_capabilities`, then `{"execute", "arguments", "id"}` commands,
 * answered by `{"return"}` or `{"error": {"class", "desc"}}` with the same id; asynchronous
 * `{"event"}` lines are kept in {@link QmpClient.events}.
 */
import * as net from 'node:net';
import type { QmpHandle } from '../../test/vm/lib/lane';

/** One QMP event (e.g. DEVICE_DELETED). */
export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
}

/** A connected QMP session. */
export class QmpClient implements QmpHandle {
  readonly events: QmpEvent[] = [];
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<string, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private greeted: (() => void) | undefined;

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('close', () => {
      for (const p of this.pending.values()) p.reject(new Error('QMP connection closed'));
      this.pending.clear();
    });
  }

  /** Connect to `socketPath` and negotiate capabilities. Rejects with the socket error. */
  static async connect(socketPath: string): Promise<QmpClient> {
    const socket = await connectUnix(socketPath);
    const client = new QmpClient(socket);
    await new Promise<void>((resolve) => (client.greeted = resolve));
    await client.execute('qmp_capabilities');
    return client;
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (!line) continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if ('QMP' in msg) {
        this.greeted?.();
        this.greeted = undefined;
      } else if ('event' in msg) {
        this.events.push(msg as unknown as QmpEvent);
      } else if (typeof msg.id === 'string' && this.pending.has(msg.id)) {
        const p = this.pending.get(msg.id)!;
        this.pending.delete(msg.id);
        if ('error' in msg) {
          const err = msg.error as { class?: string; desc?: string };
          p.reject(new Error(`QMP ${err.class ?? 'error'}: ${err.desc ?? line}`));
        } else p.resolve(msg.return);
      }
    }
  }

  /** Run `command`; resolves with its `return`, rejects with an Error carrying `error.desc`. */
  execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const id = `lane-${this.nextId++}`;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.socket.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id })}\n`);
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

/** A connected stream to the unix socket at `socketPath`; rejects with the socket error. */
export function connectUnix(socketPath: string): Promise<net.Socket> {
  return new Promise<net.Socket>((resolve, reject) => {
    const s = net.createConnection({ path: socketPath });
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}
