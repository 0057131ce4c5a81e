/**
 * Run a program from the helper to completion: the native spawn (close_range, its own session)
 * and the process-wide reaper, never node:child_process — the reaper's waitpid(-1) would take
 * child_process's exits, whose events then never fire (helper/ops/reaper.ts). Used by the guest
 * hooks, modprobe, the volume tools (resize2fs, xfs_growfs) and iptables-save/-restore.
 */
import * as net from 'node:net';
import type { NativeAddon, ReapedChild } from '../../shared/native';
import { closeQuietly } from './io';
import type { ChildReaper } from './reaper';

/** After the program exits, how long its output pipes may stay open (a child it left holds them), in ms. */
const OUTPUT_GRACE_MS = 1000;
/** How often the reaper is swept while a program runs, in ms (the reaper's own timers are unref'd). */
const EXIT_SWEEP_MS = 200;

/** What {@link runProgram} needs: the native addon and the helper's reaper. */
export interface RunDeps {
  native: NativeAddon;
  reaper: ChildReaper;
}

/** One program to run. */
export interface RunSpec {
  /** Absolute path of the executable. */
  file: string;
  /** argv, argv[0] included. */
  argv: string[];
  /** The whole environment ("K=V" entries). */
  envp: string[];
  /** Written to its stdin, which is then closed (default: nothing). */
  stdin?: Buffer | string;
  /** SIGKILLed after this many ms. */
  timeoutMs: number;
  /** Bytes of stdout and of stderr kept each; the rest is read and counted, not kept. */
  maxOutput: number;
}

/** How a program ended. */
export interface RunResult {
  /** Exit code, or null when killed by a signal. */
  exitCode: number | null;
  /** The signal that killed it, or null. */
  signal: number | null;
  /** True when the timeout killed it. */
  timedOut: boolean;
  stdout: Buffer;
  /** Total stdout bytes written (may exceed what `stdout` kept). */
  stdoutSize: number;
  stderr: string;
}

/**
 * Spawn `spec.file` with pipes for 0-2 in its own session and wait for its exit (reaped by the
 * helper's reaper) and, within a grace period, the end of its output. Throws the spawn error
 * (errno message) when it cannot start.
 */
export async function runProgram(deps: RunDeps, spec: RunSpec): Promise<RunResult> {
  const { native, reaper } = deps;
  const opened: number[] = [];
  let spawned: { pid: number; pidfd: number };
  let inW: number, outR: number, errR: number;
  const sinceSeq = reaper.seq;
  try {
    const [inR, inW0] = native.pipe();
    opened.push(inR, inW0);
    const [outR0, outW] = native.pipe();
    opened.push(outR0, outW);
    const [errR0, errW] = native.pipe();
    opened.push(errR0, errW);
    spawned = native.spawn({ file: spec.file, argv: spec.argv, envp: spec.envp, fds: [inR, outW, errW], setsid: true });
    for (const fd of [inR, outW, errW]) closeQuietly(fd);
    [inW, outR, errR] = [inW0, outR0, errR0];
  } catch (err) {
    for (const fd of opened) closeQuietly(fd);
    throw err;
  }
  const { pid, pidfd } = spawned;
  const stdout = readCapped(outR, spec.maxOutput);
  const stderr = readCapped(errR, spec.maxOutput);
  const stdin = new net.Socket({ fd: inW, readable: false, writable: true });
  stdin.on('error', () => undefined); // EPIPE: a program that does not read its stdin
  stdin.end(spec.stdin ?? '');
  let timedOut = false;
  const child = await new Promise<ReapedChild>((resolve) => {
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        native.pidfdSendSignal(pidfd, 9);
      } catch {
        /* already dead */
      }
    }, spec.timeoutMs);
    // Ref'd on purpose: the reaper's own sweep timer and SIGCHLD listener do not keep the event
    // loop alive, so without it a process with nothing else to do could exit before the reap.
    const sweeper = setInterval(() => reaper.sweep(), EXIT_SWEEP_MS);
    reaper.watch(pid, sinceSeq, (c) => {
      clearTimeout(timer);
      clearInterval(sweeper);
      resolve(c);
    });
  });
  closeQuietly(pidfd);
  stdin.destroy();
  const grace = setTimeout(() => {
    stdout.stop();
    stderr.stop();
  }, OUTPUT_GRACE_MS);
  const [out, err] = await Promise.all([stdout.data, stderr.data]);
  clearTimeout(grace);
  return {
    exitCode: child.signal !== null ? null : child.exitCode,
    signal: child.signal,
    timedOut,
    stdout: out.data,
    stdoutSize: out.size,
    stderr: err.data.toString('utf8'),
  };
}

/** A pipe being read by {@link readCapped}. */
interface CappedReader {
  /** What was kept and the total size, once EOF or {@link CappedReader.stop}. */
  data: Promise<{ data: Buffer; size: number }>;
  /** Stop reading now (something the program started keeps the pipe open). */
  stop(): void;
}

/** Read a pipe to EOF keeping the first `max` bytes (the rest is drained). Takes ownership of `fd`. */
function readCapped(fd: number, max: number): CappedReader {
  const sock = new net.Socket({ fd, readable: true, writable: false });
  const chunks: Buffer[] = [];
  let size = 0;
  let finish: () => void = () => undefined;
  const data = new Promise<{ data: Buffer; size: number }>((resolve) => {
    finish = () => {
      sock.destroy();
      resolve({ data: Buffer.concat(chunks), size });
    };
  });
  sock.on('data', (b: Buffer) => {
    if (size < max) chunks.push(b.subarray(0, max - size));
    size += b.length;
  });
  sock.on('end', finish);
  sock.on('error', finish);
  sock.on('close', finish);
  return { data, stop: () => finish() };
}
