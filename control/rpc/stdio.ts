/**
 * Stdio rpcs: ReadStdout, ReadStderr, WriteStdin, CloseStdin, TtyWinResize (Kata agent rpc.rs
 * do_read_stream / do_write_stream / close_stdin / tty_win_resize at 6e4d4c329a). Data never
 * goes through the helper: control holds the parent ends (control/sandbox/stdio.ts).
 */
import type { google as gpb, grpc as pb } from '../../shared/generated/protos';
import { Code, StatusError } from '../../shared/protocol';
import type { OutputStream } from '../sandbox/stdio';
import type { AgentCore, RpcContext } from './core';

type Empty = gpb.protobuf.Empty.$Properties;

/** Largest ReadStdout/ReadStderr chunk, in bytes: 4 MiB − 64 KiB, so a response fits the ttRPC limit. */
export const MAX_READ_LEN = 4 * 1024 * 1024 - 64 * 1024;

function checkReadLen(len: number): number {
  if (len <= 0) throw new StatusError(Code.INVALID_ARGUMENT, 'len must be > 0');
  return Math.min(len, MAX_READ_LEN);
}

/**
 * ReadStdout: up to `len` bytes (capped at {@link MAX_READ_LEN}) of the process's stdout (the
 * pty output with a terminal), waiting until some are available. OUT_OF_RANGE "EOF" at the
 * end of the stream, INVALID_ARGUMENT for len 0, NOT_FOUND for unknown ids.
 */
export async function readStdout(core: AgentCore, req: pb.ReadStreamRequest, ctx: RpcContext = {}): Promise<pb.ReadStreamResponse.$Properties> {
  const p = core.sandbox.getContainer(req.container_id).getProcess(req.exec_id);
  return readOutput(p.stdio.stdout, checkReadLen(req.len), ctx);
}

/** ReadStderr: as {@link readStdout} for stderr (with a terminal: the same pty output, as upstream). */
export async function readStderr(core: AgentCore, req: pb.ReadStreamRequest, ctx: RpcContext = {}): Promise<pb.ReadStreamResponse.$Properties> {
  const p = core.sandbox.getContainer(req.container_id).getProcess(req.exec_id);
  return readOutput(p.stdio.stderr, checkReadLen(req.len), ctx);
}

/**
 * One read of `stream`; the bytes count as delivered (an output spool moves its delivered offset
 * past them: a restarted control plane resumes after them) right before the encoded answer is
 * written to the caller's connection: only the write syscall separates the two, and no other
 * process (the reader) is woken in between, so a kill lands there only by µs-scale chance
 * (docs/ARCHITECTURE.md "Restart and adoption"). Committing after the write instead made a
 * restart deliver a read twice in 1 of 8 test rounds: the write wakes the reader, which may
 * run (and kill) before control records the offset.
 */
async function readOutput(stream: OutputStream, len: number, ctx: RpcContext): Promise<pb.ReadStreamResponse.$Properties> {
  // Bytes already there are taken at once: no wait, hence no cancellation signal to create.
  const data = stream.tryRead(len) ?? (await stream.read(len, ctx.signal));
  if (ctx.onSend) ctx.onSend(() => stream.commit(data.length));
  else stream.commit(data.length);
  // Once the answer left for the socket its buffer goes back to the read pool.
  if (ctx.onWritten) ctx.onWritten(() => stream.recycle(data));
  return { data };
}

/**
 * WriteStdin: writes all of `data` (resolves once every byte was accepted by the pipe or pty,
 * as upstream's write_all; waits while it is full) and returns its length. Writes to one
 * process complete in call order. At most MAX_PENDING_STDIN (8 MiB) may wait for a process
 * that does not read: beyond, RESOURCE_EXHAUSTED naming the limit (nothing is queued). A
 * write whose call ends (deadline, connection drop) before any of its bytes reached the pipe
 * is dropped. FAILED_PRECONDITION after CloseStdin, once the process has exited or no longer
 * reads stdin, or when the container is removed while the write waits; NOT_FOUND for unknown
 * ids.
 */
export async function writeStdin(core: AgentCore, req: pb.WriteStreamRequest, ctx: RpcContext = {}): Promise<pb.WriteStreamResponse.$Properties> {
  const p = core.sandbox.getContainer(req.container_id).getProcess(req.exec_id);
  try {
    const len = await p.stdio.stdin.write(req.data, ctx.signal);
    return { len };
  } catch (err) {
    if (err instanceof StatusError && err.code === Code.RESOURCE_EXHAUSTED) {
      throw new StatusError(err.code, `process ${JSON.stringify(p.execId)} of container ${p.containerId}: ${err.message}`);
    }
    throw err;
  }
}

/**
 * CloseStdin: the process gets EOF on stdin. Pipes: our write end is closed (after pending
 * writes) and so is the helper's copy. Terminal: the master stays open so output keeps
 * flowing (B13); ^D is written once and further writes fail. Idempotent; NOT_FOUND for
 * unknown ids.
 */
export async function closeStdin(core: AgentCore, req: pb.CloseStdinRequest): Promise<Empty> {
  const container = core.sandbox.getContainer(req.container_id);
  const p = container.getProcess(req.exec_id);
  await p.stdio.closeStdin();
  if (!p.released) {
    try {
      await core.callNoFds('closeStdin', { containerId: container.id, execId: p.helperExecId });
    } catch (err) {
      if (!(p.exited && err instanceof StatusError && err.code === Code.NOT_FOUND)) throw err;
    }
  }
  return {};
}

/**
 * OCI process.consoleSize (config.md#process: the initial size of the terminal, in characters):
 * set on the pty right after the process is created, as TtyWinResize would (runc sets it on
 * its console the same way). Nothing without a terminal or when either dimension is 0 (proto3:
 * unset). A failing ioctl is logged, not an error: the process runs with the default size.
 */
export function applyConsoleSize(
  p: { terminal: boolean; stdio: { resize(rows: number, cols: number): void } },
  box: { Height?: number | null; Width?: number | null } | null | undefined,
  log: { warn(fields: Record<string, unknown>, msg: string): void },
): void {
  const rows = box?.Height ?? 0;
  const cols = box?.Width ?? 0;
  if (!p.terminal || rows === 0 || cols === 0) return;
  try {
    p.stdio.resize(rows, cols);
  } catch (err) {
    log.warn({ err, rows, cols }, 'setting the initial console size failed');
  }
}

/**
 * TtyWinResize: sets the pty window size. NOT_FOUND for unknown ids or a process whose exit was
 * already collected by WaitProcess (field case B04), FAILED_PRECONDITION without a terminal. A
 * resize that races the exit (exited, not yet waited for: `ctr run -t` resizes as the process
 * ends) is answered OK without effect, as upstream's ioctl on the still-open master is.
 */
export async function ttyWinResize(core: AgentCore, req: pb.TtyWinResizeRequest): Promise<Empty> {
  const p = core.sandbox.getContainer(req.container_id).getProcess(req.exec_id);
  if (p.exited && p.waited) throw new StatusError(Code.NOT_FOUND, `process ${JSON.stringify(p.execId)} of container ${p.containerId} has exited`);
  if (!p.terminal) throw new StatusError(Code.FAILED_PRECONDITION, `process ${JSON.stringify(p.execId)} has no terminal`);
  if (p.exited) return {};
  p.stdio.resize(req.row, req.column);
  return {};
}
