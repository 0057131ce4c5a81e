/**
 * Shared set-up of the end-to-end integration tests (agent-e2e.test.ts, field-cases.test.ts):
 * one stand-alone agent per test file (helper as root, control plane unprivileged, over the
 * real ttRPC API), a busybox rootfs, and small helpers that create containers which are always
 * removed when the subtest ends (even on failure), run execs, read streams to EOF and check
 * status codes.
 *
 * Rootfs: $KATA_TEST_ROOTFS (scripts/run-tests.js builds it with scripts/make-rootfs), else one
 * built here into a temp dir with scripts/make-rootfs.
 */
import type { Test } from 'tap';
import { spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { AgentClient } from '../../../control/ctl/client';
import { ociJsonToSpec } from '../../../control/ctl/oci-json';
import type { grpc } from '../../../shared/proto';
import { Code, StatusError } from '../../../shared/protocol';
import { codeName } from '../../../control/ttrpc/status';
import { PROJECT_ROOT, busyboxConfig, startStandaloneAgent, tail, type StandaloneAgent } from '../../../scripts/lib/standalone';

export { Code, StatusError, busyboxConfig };

/** Why this machine cannot run the end-to-end tests, or undefined when it can. */
export function skipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (real helper, namespaces, mounts)';
  const kataInit = path.join(PROJECT_ROOT, 'build', 'Release', 'kata-init');
  if (!fs.existsSync(kataInit)) return `kata-init not built at ${kataInit} (npm run build:native)`;
  return undefined;
}

/** Why user-namespace tests cannot run here (user.max_user_namespaces 0, no such kernel), or undefined. */
export function userNsSkip(): string | undefined {
  try {
    if (Number(fs.readFileSync('/proc/sys/user/max_user_namespaces', 'utf8').trim()) === 0) return 'user namespaces are disabled (user.max_user_namespaces = 0)';
  } catch {
    return 'no /proc/sys/user/max_user_namespaces (kernel without user namespaces)';
  }
  return undefined;
}

/** The busybox rootfs: $KATA_TEST_ROOTFS when it holds one, else built under `tmp`. */
export function testRootfs(tmp: string): string {
  const env = process.env.KATA_TEST_ROOTFS;
  if (env && fs.existsSync(path.join(env, 'bin', 'busybox'))) return fs.realpathSync(env);
  const dir = path.join(tmp, 'rootfs');
  const r = spawnSync(path.join(PROJECT_ROOT, 'scripts', 'make-rootfs'), [dir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`make-rootfs failed: ${r.stderr}`);
  return fs.realpathSync(dir);
}

/** gRPC status code of a rejection (undefined when it is not a StatusError). */
export function codeOf(err: unknown): number | undefined {
  return err instanceof StatusError ? err.code : undefined;
}

/** Resolves with the StatusError `p` rejects with; throws if `p` resolves. */
export async function rejection(p: Promise<unknown>): Promise<StatusError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof StatusError) return err;
    throw err;
  }
  throw new Error('expected the call to fail, it succeeded');
}

/** Assert `p` rejects with status `code`; returns the error (message checks by the caller). */
export async function expectCode(t: Test, p: Promise<unknown>, code: number, what: string): Promise<StatusError | undefined> {
  try {
    await p;
    t.fail(`${what}: expected status ${codeName(code)}, the call succeeded`);
    return undefined;
  } catch (err) {
    t.equal(codeOf(err), code, `${what} → ${codeName(code)} (${(err as Error).message})`);
    return err instanceof StatusError ? err : undefined;
  }
}

/** Reject with an Error after `ms` unless `p` settles first (a hang becomes a failure). */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export type ReadMethod = 'ReadStdout' | 'ReadStderr';

/**
 * Options of an exec: a terminal, the env (default PATH only), cwd (default "/"), uid = gid
 * (default 0), the grpc.Process Capabilities (default none: the container's are inherited),
 * OOMScoreAdj (default 0), Rlimits and NoNewPrivileges (default false).
 */
export interface ExecOptions {
  terminal?: boolean;
  env?: string[];
  cwd?: string;
  uid?: number;
  capabilities?: grpc.LinuxCapabilities.$Properties;
  oomScoreAdj?: number;
  /** Process.Rlimits, proto shape: [{Type: 'RLIMIT_NOFILE', Soft, Hard}]. */
  rlimits?: { Type: string; Soft: number; Hard: number }[];
  /** Process.NoNewPrivileges (default false). */
  noNewPrivileges?: boolean;
}

/** One agent per test file, with a connected client and the rootfs its containers use. */
export class AgentHarness {
  agent!: StandaloneAgent;
  client!: AgentClient;
  readonly tmp: string;
  readonly rootfs: string;
  private seq = 0;
  private stopped = false;
  /**
   * `KATA_TEST_MARK=<unique>`: put into the environment of every container process and exec,
   * so that processes left behind can be found (and told apart from other tests' on the host).
   */
  readonly mark: string;

  constructor(readonly name: string) {
    this.tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), `${name}-`)));
    this.mark = `KATA_TEST_MARK=${path.basename(this.tmp)}`;
    // The control plane runs as nobody: it must reach the run dir below.
    fs.chmodSync(this.tmp, 0o755);
    this.rootfs = testRootfs(this.tmp);
  }

  /**
   * Start the agent and connect; `hostname` non-empty → CreateSandbox with it; `helperArgs` go
   * to the helper, `controlArgs` to the control plane.
   */
  async start(hostname?: string, helperArgs: string[] = [], controlArgs: string[] = []): Promise<void> {
    this.agent = await startStandaloneAgent({ logLevel: process.env.KATA_TEST_LOG_LEVEL ?? 'info', runDir: path.join(this.tmp, 'run'), helperArgs, controlArgs });
    this.client = await AgentClient.connect(this.agent.address);
    if (hostname !== undefined) await this.client.call('CreateSandbox', { sandbox_id: `${this.name}-sandbox`, hostname });
  }

  /** The log tails of both processes (for failure diagnostics). */
  logs(): string {
    if (!this.agent) return '';
    return `--- control log ---\n${tail(this.agent.controlLog, 30)}\n--- helper log ---\n${tail(this.agent.helperLog, 30)}`;
  }

  /** A fresh container id with `prefix`. */
  id(prefix: string): string {
    return `${prefix}-${process.pid}-${++this.seq}`;
  }

  /**
   * The grpc.Spec of a busybox container running `args` (busyboxConfig with `extra`; `mounts`
   * are appended; `hooks` is set on the grpc.Spec as given, since config.json conversion drops
   * hooks as upstream agent-ctl does).
   */
  spec(
    args: string[],
    extra: Parameters<typeof busyboxConfig>[2] & { mounts?: Record<string, unknown>[]; rootfs?: string; hooks?: grpc.Hooks.$Properties } = {},
  ): ReturnType<typeof ociJsonToSpec> {
    const config = busyboxConfig(extra.rootfs ?? this.rootfs, args, extra);
    const proc = config.process as { env: string[] };
    proc.env = [...proc.env, this.mark];
    if (extra.mounts) (config.mounts as Record<string, unknown>[]).push(...extra.mounts);
    const spec = ociJsonToSpec(config, this.rootfs);
    if (extra.hooks) spec.Hooks = extra.hooks;
    return spec;
  }

  /** Register removal of container `id` when `t` ends (NOT_FOUND is fine: already removed). */
  removeOnTeardown(t: Test, id: string): void {
    t.teardown(async () => {
      if (this.stopped) return;
      try {
        await this.client.call('RemoveContainer', { container_id: id, timeout: 10 });
      } catch (err) {
        if (codeOf(err) !== Code.NOT_FOUND) console.error(`# teardown: RemoveContainer ${id}: ${(err as Error).message}`);
      }
    });
  }

  /** CreateContainer (removed on teardown of `t`). Returns the id. */
  async create(t: Test, args: string[], extra: Parameters<AgentHarness['spec']>[1] & { id?: string } = {}): Promise<string> {
    const id = extra.id ?? this.id('c');
    this.removeOnTeardown(t, id);
    await this.client.call('CreateContainer', { container_id: id, exec_id: id, OCI: this.spec(args, extra) });
    return id;
  }

  /** CreateContainer + StartContainer (removed on teardown of `t`). Returns the id. */
  async run(t: Test, args: string[], extra: Parameters<AgentHarness['create']>[2] = {}): Promise<string> {
    const id = await this.create(t, args, extra);
    await this.client.call('StartContainer', { container_id: id });
    return id;
  }

  /**
   * Run a container to its end: CreateContainer + StartContainer (removed on teardown of `t`),
   * both streams read to EOF, WaitProcess. {stdout, stderr} as text and the exit status.
   */
  async runToEnd(
    t: Test,
    args: string[],
    extra: Parameters<AgentHarness['run']>[2] = {},
  ): Promise<{ stdout: string; stderr: string; status: number }> {
    const id = await this.run(t, args, extra);
    const [stdout, stderr] = await Promise.all([this.readAll('ReadStdout', id, id), this.readAll('ReadStderr', id, id)]);
    return { stdout: stdout.toString(), stderr: stderr.toString(), status: await this.wait(id, id) };
  }

  /** ExecProcess `args` in container `cid` as exec `execId`. */
  async exec(cid: string, execId: string, args: string[], opts: ExecOptions = {}): Promise<void> {
    const proc = {
      Terminal: opts.terminal ?? false,
      User: { UID: opts.uid ?? 0, GID: opts.uid ?? 0 },
      Args: args,
      Env: [...(opts.env ?? ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin']), this.mark],
      Cwd: opts.cwd ?? '/',
      ...(opts.capabilities ? { Capabilities: opts.capabilities } : {}),
      ...(opts.oomScoreAdj !== undefined ? { OOMScoreAdj: opts.oomScoreAdj } : {}),
      ...(opts.rlimits ? { Rlimits: opts.rlimits } : {}),
      ...(opts.noNewPrivileges !== undefined ? { NoNewPrivileges: opts.noNewPrivileges } : {}),
    };
    await this.client.call('ExecProcess', { container_id: cid, exec_id: execId, process: proc });
  }

  /** Read `method` until the agent reports the end of the stream (OUT_OF_RANGE); the bytes read. */
  /** ReadStdout of `execId` until the text read so far matches `re` (or the stream ends); the text. */
  async readUntil(cid: string, execId: string, re: RegExp): Promise<string> {
    let text = '';
    while (!re.test(text)) {
      try {
        const { data } = await this.client.call('ReadStdout', { container_id: cid, exec_id: execId, len: 4096 });
        text += Buffer.from(data).toString();
      } catch (err) {
        if (codeOf(err) === Code.OUT_OF_RANGE) break;
        throw err;
      }
    }
    return text;
  }

  async readAll(method: ReadMethod, cid: string, execId: string, len = 64 * 1024): Promise<Buffer> {
    const parts: Buffer[] = [];
    for (;;) {
      try {
        const { data } = await this.client.call(method, { container_id: cid, exec_id: execId, len });
        parts.push(Buffer.from(data));
      } catch (err) {
        if (codeOf(err) === Code.OUT_OF_RANGE) return Buffer.concat(parts);
        throw err;
      }
    }
  }

  /** WaitProcess → exit status. */
  async wait(cid: string, execId: string): Promise<number> {
    const { status } = await this.client.call('WaitProcess', { container_id: cid, exec_id: execId });
    return status;
  }

  /** Run exec `args`, read stdout/stderr to EOF and wait: {stdout, stderr, status}. */
  async execCollect(cid: string, args: string[], opts: ExecOptions = {}): Promise<{ stdout: Buffer; stderr: Buffer; status: number }> {
    const execId = this.id('x');
    await this.exec(cid, execId, args, opts);
    const [stdout, stderr] = opts.terminal
      ? [await this.readAll('ReadStdout', cid, execId), Buffer.alloc(0)]
      : await Promise.all([this.readAll('ReadStdout', cid, execId), this.readAll('ReadStderr', cid, execId)]);
    const status = await this.wait(cid, execId);
    return { stdout, stderr, status };
  }

  /** GET a debug endpoint path; parsed JSON and HTTP status. */
  async debug(p: string): Promise<{ status: number; body: Record<string, unknown> }> {
    const res = await fetch(`${this.agent.debugUrl}${p}`);
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  /** Host pid of a container's process from the debug endpoint (init when `execId` is the container id). */
  async hostPid(cid: string, execId = cid): Promise<number> {
    const { status, body } = await this.debug(`/v1/containers/${encodeURIComponent(cid)}`);
    if (status !== 200) throw new Error(`debug endpoint: container ${cid}: HTTP ${status} ${JSON.stringify(body)}`);
    const procs = body.processes as { execId: string; pid: number }[];
    const p = procs.find((x) => x.execId === execId);
    if (!p) throw new Error(`debug endpoint: no process ${execId} in ${cid}: ${JSON.stringify(procs)}`);
    return p.pid;
  }

  /**
   * End of the file: DestroySandbox (when `sandbox`), stop both processes, then report what
   * was left behind: mounts under the run dir or the rootfs in /proc/mounts, and (a function
   * listing) processes carrying this file's {@link mark} — container processes. Each list
   * should be empty.
   */
  async shutdown(sandbox: boolean): Promise<{
    destroyError: string | null;
    exits: { control: number | null; helper: number | null };
    mounts: string[];
    processes: () => string[];
  }> {
    let destroyError: string | null = null;
    if (sandbox) {
      try {
        await this.client.call('DestroySandbox', {});
      } catch (err) {
        destroyError = (err as Error).message;
      }
    }
    await this.client.close().catch(() => undefined);
    // After DestroySandbox the control plane exits by itself (as upstream); let it.
    if (sandbox && destroyError === null) await exitOf(this.agent.control, 10_000);
    const exits = await this.agent.stop(10_000);
    this.stopped = true;
    return { destroyError, exits, mounts: leftoverMounts([this.tmp, this.rootfs]), processes: () => this.leftoverProcesses() };
  }

  /** "pid comm" of container processes still alive (see {@link shutdown}). */
  leftoverProcesses(): string[] {
    return processesWithEnv(this.mark);
  }

  /** Safety net for the file's teardown: stop the agent if still running, remove the temp dir. */
  async dispose(): Promise<void> {
    if (this.agent && !this.stopped) {
      await this.client?.close().catch(() => undefined);
      await this.agent.stop(5000).catch(() => undefined);
      this.stopped = true;
    }
    if (process.env.KATA_TEST_KEEP) console.error(`# ${this.name}: kept ${this.tmp} (KATA_TEST_KEEP)`);
    else if (leftoverMounts([this.tmp]).length === 0) fs.rmSync(this.tmp, { recursive: true, force: true });
  }
}

/** /proc/mounts lines whose mount point is at or under one of `dirs`. */
export function leftoverMounts(dirs: string[]): string[] {
  return fs
    .readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .filter((line) => {
      const mp = line.split(' ')[1];
      return mp !== undefined && dirs.some((d) => mp === d || mp.startsWith(`${d}/`));
    });
}

/** "pid comm" of every process whose environment holds the entry `entry` (e.g. "K=V"); needs root. */
export function processesWithEnv(entry: string): string[] {
  const out: string[] = [];
  for (const pid of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const env = fs.readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0');
      if (env.includes(entry)) out.push(`${pid} ${fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim()}`);
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Resolves when `child` has exited (at once if it has), or after `ms`. */
export function exitOf(child: ChildProcess, ms: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** True while host pid `pid` exists (process.kill(pid, 0) succeeds, a zombie included); false on ESRCH. */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
}

/** Poll every `stepMs` until `cond` holds (true) or `ms` passed (false). */
export async function eventually(cond: () => boolean, ms: number, stepMs = 20): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (cond()) return true;
    if (Date.now() > deadline) return false;
    await sleep(stepMs);
  }
}
