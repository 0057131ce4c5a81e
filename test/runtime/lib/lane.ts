// The Kata runtime lane (kata-runtime-lane: Debian's containerd + the real Kata shim
// containerd-shim-kata-v2 built from kata-containers 6e4d4c329a + fake-remote-hv) driven from
// tap: find it, bring it up against this checkout, run `ctr` with a hard watchdog, read the
// agent's logs. Development-time only (root, the built lane); see README "The real Kata runtime".
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** This checkout (the agent the lane runs). */
export const AGENT_ROOT = path.resolve(__dirname, '..', '..', '..', '..');
/** The lane's scripts (lane.sh, agent-start.sh); KATA_RUNTIME_LANE overrides. */
export const LANE_SCRIPTS = process.env.KATA_RUNTIME_LANE || '/work/shared/tools/kata-runtime-lane';
/** Where build.sh put the binaries and where lane.sh keeps its state (LANE_DIR, as lane.sh). */
export const LANE_DIR = process.env.LANE_DIR || '/var/tmp/kata-runtime-lane';
/** containerd's socket as lane.sh starts it. */
export const CONTAINERD_ADDRESS = '/run/kr-containerd/containerd.sock';
/** fake-remote-hv's run directory: <sandbox id>/agent.log is the agent's log (JSON lines). */
export const RUN_DIR = '/run/fake-remote-hv';
export const RUNTIME = 'io.containerd.kata.v2';
export const IMAGE = 'docker.io/library/busybox:latest';

/** Why the runtime suite cannot run here (root, the lane's scripts and built binaries), or ''. */
export function skipReason(): string {
  const how =
    'build the lane: `fetch github:kata-containers/kata-containers` (a git mirror of the Kata source), then ' +
    `KATA_GIT=<mirror>/repo sh ${LANE_SCRIPTS}/build.sh (~2 min, needs golang-go containerd busybox-static make)`;
  if (process.getuid && process.getuid() !== 0) return 'runtime tests SKIPPED: they need root (containerd, mounts)';
  if (!fs.existsSync(path.join(LANE_SCRIPTS, 'lane.sh'))) return `runtime tests SKIPPED: no lane scripts in ${LANE_SCRIPTS} (set KATA_RUNTIME_LANE)`;
  for (const b of ['containerd-shim-kata-v2', 'fake-remote-hv']) {
    if (!fs.existsSync(path.join(LANE_DIR, 'bin', b))) return `runtime tests SKIPPED: the lane is not built (no ${LANE_DIR}/bin/${b}); ${how}`;
  }
  for (const b of ['containerd', 'ctr', 'script']) {
    if (!process.env.PATH?.split(':').some((d) => fs.existsSync(path.join(d, b)))) return `runtime tests SKIPPED: no ${b} on PATH`;
  }
  return '';
}

/** What a watched command did: its output, exit status (null if killed), signal, whether the watchdog fired. */
export interface RunResult {
  stdout: string;
  stderr: string;
  status: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
}

/**
 * Run `cmd args` in its own process group with stdin = `input` (a string, piped then closed) or,
 * without `input`, a pipe that stays open until the command exits (no EOF, as a terminal nobody
 * types into: a ctr whose stdin ends sends CloseIO, and one that lands before the task's Start
 * wedges the shim — docs/ARCHITECTURE.md "Runtime tests"); `onStdout` sees the output so far as
 * it arrives. SIGKILLs the whole group after `timeoutMs` (ctr ignores `timeout`'s SIGTERM: it
 * forwards it to the task). Never rejects for a non-zero status; rejects only if it cannot spawn.
 */
export function run(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv; onStdout?: (soFar: string) => void } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      detached: true,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, CONTAINERD_ADDRESS, ...opts.env },
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout?.on('data', (d: Buffer) => {
      stdout += d.toString();
      opts.onStdout?.(stdout);
    });
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin?.on('error', () => undefined); // EPIPE when the command exits without reading
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }, opts.timeoutMs ?? 60_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      child.stdin?.destroy();
      resolve({ stdout, stderr, status, signal, timedOut });
    });
  });
}

/** `ctr ...` with the watchdog (default 60 s). */
export function ctr(args: string[], opts: { input?: string; timeoutMs?: number; onStdout?: (soFar: string) => void } = {}): Promise<RunResult> {
  return run('ctr', args, opts);
}

/**
 * Run `shellCommand` in a terminal: script(1) gives it a pty. Its output without CRs, NULs and
 * the "^@" echo of the NUL script(1) types into the terminal when its own stdin (/dev/null) ends.
 */
export async function inTerminal(shellCommand: string, timeoutMs = 60_000): Promise<RunResult> {
  const r = await run('script', ['-qec', shellCommand, '/dev/null'], { timeoutMs });
  return { ...r, stdout: r.stdout.replace(/[\r\0]/g, '').replace(/\^@/g, '') };
}

/** Kill and remove task and container `id`, whatever state they are in (errors ignored). */
export async function cleanup(id: string): Promise<void> {
  await ctr(['task', 'kill', '-s', 'SIGKILL', id], { timeoutMs: 15_000 });
  await ctr(['task', 'rm', '-f', id], { timeoutMs: 15_000 });
  await ctr(['container', 'rm', id], { timeoutMs: 15_000 });
}

/** The status column of `ctr task ls` for `id` (RUNNING, PAUSED, STOPPED...) or '' if absent. */
export async function taskStatus(id: string): Promise<string> {
  const r = await ctr(['task', 'ls'], { timeoutMs: 15_000 });
  const line = r.stdout.split('\n').find((l) => l.split(/\s+/)[0] === id);
  return line ? line.trim().split(/\s+/)[2] ?? '' : '';
}

/** The AGENT the running lane's fake-remote-hv was started with, or '' (not up / unknown). */
export function laneAgent(): string {
  try {
    const pid = fs.readFileSync(path.join(LANE_DIR, 'fake-remote-hv.pid'), 'utf8').trim();
    const env = fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
    return env.find((e) => e.startsWith('AGENT='))?.slice('AGENT='.length) ?? '';
  } catch {
    return '';
  }
}

/** lane.sh up|down (AGENT = `agent`); rejects with its output if it fails. */
export async function lane(verb: 'up' | 'down', agent = AGENT_ROOT): Promise<void> {
  const r = await run('sh', [path.join(LANE_SCRIPTS, 'lane.sh'), verb], { env: { AGENT: agent, LANE_DIR }, timeoutMs: 120_000 });
  if (r.status !== 0) throw new Error(`lane.sh ${verb} failed (${r.status ?? r.signal}): ${r.stdout}${r.stderr}`);
  if (verb === 'up') {
    // lane.sh starts its syslog sink in the background: the first shim fails ("Unix syslog
    // delivery error") if it starts before /dev/log exists.
    for (let i = 0; i < 50 && !fs.existsSync('/dev/log'); i++) await new Promise((res) => setTimeout(res, 100));
  }
}

/** One "rpc failed" line of an agent log: the RPC, its gRPC status code and message. */
export interface RpcFailure {
  method: string;
  code: number;
  err: string;
}

/** The "rpc failed" lines of sandbox `id`'s agent log ([] if it has no log). */
export function rpcFailures(id: string): RpcFailure[] {
  let text: string;
  try {
    text = fs.readFileSync(path.join(RUN_DIR, id, 'agent.log'), 'utf8');
  } catch {
    return [];
  }
  const out: RpcFailure[] = [];
  for (const line of text.split('\n')) {
    if (!line.includes('rpc failed')) continue;
    try {
      const j = JSON.parse(line) as { msg?: string; method?: string; code?: number; err?: string };
      if (j.msg === 'rpc failed') out.push({ method: String(j.method), code: Number(j.code), err: String(j.err) });
    } catch {
      /* not JSON */
    }
  }
  return out;
}

/** Whether sandbox `id`'s agent log records a call of RPC `method`. */
export function agentSaw(id: string, method: string): boolean {
  try {
    return fs.readFileSync(path.join(RUN_DIR, id, 'agent.log'), 'utf8').includes(`"method":"${method}"`);
  } catch {
    return false;
  }
}

/** The time (ms since the epoch) of the first `"method":"<method>"` line in sandbox `id`'s agent log, or null. */
export function agentFirstCall(id: string, method: string): number | null {
  let text: string;
  try {
    text = fs.readFileSync(path.join(RUN_DIR, id, 'agent.log'), 'utf8');
  } catch {
    return null;
  }
  const line = text.split('\n').find((l) => l.includes(`"method":"${method}"`) && l.includes('"msg":"rpc call"'));
  const time = line && /"time":"([^"]+)"/.exec(line)?.[1];
  return time ? Date.parse(time) : null;
}

/** The shims' log (their syslog, kept by lane.sh's sink): its size now, for {@link shimLogSince}. */
export function shimLogSize(): number {
  try {
    return fs.statSync(path.join(LANE_DIR, 'syslog.log')).size;
  } catch {
    return 0;
  }
}

/**
 * The shims' log lines written after byte `offset` (from {@link shimLogSize}) by the shims of
 * sandboxes `ids` (each shim, `kata[<pid>]`, found by its lines with `sandbox=<id>`; some of its
 * lines, e.g. the agent dialer's, carry no sandbox field).
 */
export function shimLogSince(offset: number, ids: readonly string[]): string[] {
  let fd: number;
  try {
    fd = fs.openSync(path.join(LANE_DIR, 'syslog.log'), 'r');
  } catch {
    return [];
  }
  try {
    const size = fs.fstatSync(fd).size;
    const buf = Buffer.alloc(Math.max(0, size - offset));
    fs.readSync(fd, buf, 0, buf.length, offset);
    const wanted = new Set(ids);
    const lines = buf.toString('utf8').split('\n');
    const shimPid = (l: string): string => /kata\[(\d+)\]/.exec(l)?.[1] ?? '';
    const pids = new Set(lines.filter((l) => wanted.has(/ sandbox=(\S+)/.exec(l)?.[1] ?? '')).map(shimPid));
    pids.delete('');
    return lines.filter((l) => pids.has(shimPid(l)));
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Make the runtime's share tree a shared mount again if it is not (lane.sh up makes it one; on
 * this shared machine it was seen turned private while the lane was up, and then the rootfs
 * bind mounts the shim makes never reach the agent: "executable not found"). Returns whether
 * it had to.
 */
export async function ensureSharedTree(): Promise<boolean> {
  const tree = '/run/kata-containers/shared/sandboxes';
  const line = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === tree);
  if (line && / shared:\d+/.test(line)) return false;
  await run('mount', ['--make-shared', tree], { timeoutMs: 10_000 });
  return true;
}
