/**
 * The host side of the agent's debug console (control/init.ts startDebugConsole): a root shell
 * in the guest reading commands from a virtio-serial port. Each {@link DebugConsole.run} sends
 * one command line, its stdout followed by an end marker with the exit status; stderr is
 * dropped. One command at a time (calls are queued).
 */
import * as net from 'node:net';
import { connectUnix } from './qmp';

/** Quote `arg` for a POSIX shell. */
export function shellQuote(arg: string): string {
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

export class DebugConsole {
  private text = '';
  private waiter: (() => void) | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private seq = 0;

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.text += chunk;
      this.waiter?.();
    });
  }

  /** Connect to QEMU's chardev socket of the debug port. */
  static async connect(socketPath: string): Promise<DebugConsole> {
    const socket = await connectUnix(socketPath);
    return new DebugConsole(socket);
  }

  /**
   * Run `argv` in the guest (no shell interpretation of its words); resolves with its stdout
   * and exit status. Rejects when no answer comes within `timeoutMs` (default 120 s).
   */
  run(argv: string[], timeoutMs = 120_000): Promise<{ stdout: string; status: number }> {
    const next = this.queue.then(() => this.runNow(argv, timeoutMs));
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async runNow(argv: string[], timeoutMs: number): Promise<{ stdout: string; status: number }> {
    const marker = `__KATA_LANE_END_${process.pid}_${++this.seq}__`;
    this.text = '';
    this.socket.write(`${argv.map(shellQuote).join(' ')} 2>/dev/null </dev/null; printf '\\n%s %d\\n' ${marker} $?\n`);
    const deadline = Date.now() + timeoutMs;
    const re = new RegExp(`\\n${marker} (\\d+)\\n`);
    for (;;) {
      const m = re.exec(this.text);
      if (m) {
        const stdout = this.text.slice(0, m.index);
        this.text = this.text.slice(m.index + m[0].length);
        return { stdout, status: Number(m[1]) };
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`guest command ${JSON.stringify(argv)} gave no answer within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 1000));
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  close(): void {
    this.socket.destroy();
  }
}
