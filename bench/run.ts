/**
 * Container start and exec latency of the agent, side by side with runc, in one run
 * (`npm run bench`; needs root and runc: bench/install-deps.sh).
 *
 * Both sides run the same busybox rootfs (scripts/make-rootfs) and the same OCI config
 * (busyboxConfig() of scripts/lib/standalone.ts) with equivalent namespaces: new mount, uts,
 * ipc and pid namespaces, no network namespace. The agent adds the pid namespace itself (Kata's
 * rewrite) and, since no CreateSandbox is sent, unshares new ipc/uts namespaces for each
 * container; runc's config.json lists pid, mount, uts and ipc.
 *
 * Scenarios (every iteration runs every variant once, in a rotating order, so the variants
 * share the machine's noise):
 *  - start `true`: ours = CreateContainer → StartContainer → WaitProcess over one persistent
 *    ttRPC connection (RemoveContainer timed separately); runc = `runc run` (spawned, timed to its
 *    exit, which includes its delete-on-exit) and `runc create` → `runc start` → wait for the
 *    container's exit (EOF of its stdout pipe) (`runc delete` timed separately).
 *  - start `sh -c 'echo hi'`: as above, and the output ("hi\n") is read and checked on every
 *    side (ours: ReadStdout/ReadStderr to EOF concurrently with WaitProcess).
 *  - exec `true` into a running container: ours = ExecProcess + WaitProcess; runc = `runc exec`.
 * Then baselines (a ttRPC round trip, Node spawning /bin/true, `runc --version`) and, with a
 * second agent at log level debug, where our time goes: the client-side time of each RPC next to
 * the helper's own time for the operation ("helper op done" ms in its log).
 *
 * Environment: BENCH_ITERATIONS (default 30) timed iterations per scenario, BENCH_WARMUP
 * (default 3) untimed ones before. Output: a table on stdout, bench/results/latest.json and a
 * snapshot bench/results/<YYYY-MM-DD>.md + .json (UTC date; a later run that day replaces it). The benchmark reports; it never passes or fails on a
 * figure (it exits non-zero only when something does not work).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { RESULT_HEADERS, loadNow, targetRows, type Target, check, envInt, exited, fmt, machine, now, progress, progressDone, resultRows, rotated, run, since, stats, table, type Row, type Stats } from './lib';
import { buildGoBench, startGoServer } from './go-ref';
import { density, type DensityResult } from './density';
import { rpcAndStdio, type RpcStdioResult } from './rpc-stdio';
import { startup, type StartupResult } from './startup';
import { AgentClient } from '../control/ctl/client';
import { ociJsonToSpec } from '../control/ctl/oci-json';
import { PROJECT_ROOT, busyboxConfig, startStandaloneAgent, tail, type StandaloneAgent } from '../scripts/lib/standalone';

// ---------------------------------------------------------------------------------------------
// Process helpers

// ---------------------------------------------------------------------------------------------
// runc

const RUNC = 'runc';

class Runc {
  constructor(
    /** runc --root: its state directory, private to this run. */
    readonly root: string,
  ) {}

  private args(...rest: string[]): string[] {
    return ['--root', this.root, ...rest];
  }

  /** `runc run --bundle B id` until exit (and stdio closed); the container's output. */
  async run(bundle: string, id: string): Promise<string> {
    const r = await run(RUNC, this.args('run', '--bundle', bundle, id));
    check(`runc run ${id}`, r);
    return r.stdout;
  }

  /**
   * `runc create` then `runc start`, then wait for the container's exit: its stdout/stderr are
   * pipes handed to `runc create` (runc's pass-through stdio), held after `runc create` exits by
   * the container process only, so their EOF is the container's exit. Returns the phase times
   * and the output; `runc delete` is left to {@link delete}.
   */
  async createStartWait(bundle: string, id: string): Promise<{ createMs: number; startMs: number; totalMs: number; stdout: string }> {
    const t0 = now();
    const child = spawn(RUNC, this.args('create', '--bundle', bundle, id), { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
    const created = await exited(child);
    if (created.code !== 0) {
      await closed;
      throw new Error(`runc create ${id} failed (exit ${created.code ?? created.signal}): ${Buffer.concat(err).toString().trim()}`);
    }
    const createMs = since(t0);
    const t1 = now();
    check(`runc start ${id}`, await run(RUNC, this.args('start', id)));
    const startMs = since(t1);
    await closed;
    const totalMs = since(t0);
    const stderr = Buffer.concat(err).toString();
    if (stderr.trim() !== '') throw new Error(`runc container ${id} wrote to stderr: ${stderr.trim()}`);
    return { createMs, startMs, totalMs, stdout: Buffer.concat(out).toString() };
  }

  /** `runc delete --force id`. */
  async delete(id: string): Promise<void> {
    check(`runc delete ${id}`, await run(RUNC, this.args('delete', '--force', id)));
  }

  /**
   * `runc run --detach` of a long-running container. Its stdio is /dev/null: runc passes its
   * own stdio through to the container, which would hold pipes open for as long as it runs.
   */
  async runDetached(bundle: string, id: string): Promise<void> {
    const child = spawn(RUNC, this.args('run', '--detach', '--bundle', bundle, id), { stdio: 'ignore' });
    const r = await exited(child);
    if (r.code !== 0) throw new Error(`runc run --detach ${id} failed (exit ${r.code ?? r.signal}); run it by hand to see why`);
  }

  /** `runc exec id args...` until exit; its output. */
  async exec(id: string, args: string[]): Promise<string> {
    const r = await run(RUNC, this.args('exec', id, ...args));
    check(`runc exec ${id}`, r);
    return r.stdout;
  }

  /** Best-effort removal of every container still in this runc root (cleanup). */
  cleanup(): void {
    let ids: string[] = [];
    try {
      ids = fs.readdirSync(this.root);
    } catch {
      return;
    }
    for (const id of ids) spawnSync(RUNC, this.args('delete', '--force', id), { stdio: 'ignore' });
  }
}

// ---------------------------------------------------------------------------------------------
// The agent

function isEof(err: unknown): boolean {
  // The agent ends a stream with OUT_OF_RANGE (11); upstream's "read meet eof" likewise.
  return (err as { code?: number }).code === 11;
}

async function readAll(client: AgentClient, method: 'ReadStdout' | 'ReadStderr', cid: string, execId: string): Promise<string> {
  const parts: Buffer[] = [];
  for (;;) {
    try {
      const { data } = await client.call(method, { container_id: cid, exec_id: execId, len: 64 * 1024 });
      parts.push(Buffer.from(data));
    } catch (err) {
      if (isEof(err)) return Buffer.concat(parts).toString();
      throw err;
    }
  }
}

interface OurStart {
  createMs: number;
  startMs: number;
  waitMs: number;
  totalMs: number;
  removeMs: number;
  stdout: string;
}

type GrpcSpec = ReturnType<typeof ociJsonToSpec>;

/**
 * CreateContainer → StartContainer → WaitProcess (with ReadStdout/ReadStderr to EOF alongside
 * when `readOutput`), then RemoveContainer; each phase timed on the client.
 */
async function ourStart(client: AgentClient, spec: GrpcSpec, cid: string, readOutput: boolean): Promise<OurStart> {
  const t0 = now();
  await client.call('CreateContainer', { container_id: cid, exec_id: cid, OCI: spec });
  const createMs = since(t0);
  const t1 = now();
  await client.call('StartContainer', { container_id: cid });
  const startMs = since(t1);
  const t2 = now();
  let stdout = '';
  let status: number;
  if (readOutput) {
    const [out, err, waited] = await Promise.all([
      readAll(client, 'ReadStdout', cid, cid),
      readAll(client, 'ReadStderr', cid, cid),
      client.call('WaitProcess', { container_id: cid, exec_id: cid }),
    ]);
    if (err.trim() !== '') throw new Error(`container ${cid} wrote to stderr: ${err.trim()}`);
    stdout = out;
    status = waited.status;
  } else {
    status = (await client.call('WaitProcess', { container_id: cid, exec_id: cid })).status;
  }
  const waitMs = since(t2);
  const totalMs = since(t0);
  if (status !== 0) throw new Error(`container ${cid} exited with status ${status}`);
  const t3 = now();
  await client.call('RemoveContainer', { container_id: cid, timeout: 10 });
  const removeMs = since(t3);
  return { createMs, startMs, waitMs, totalMs, removeMs, stdout };
}

/** ExecProcess + WaitProcess of `process` in `cid`; ms. */
async function ourExec(client: AgentClient, cid: string, execId: string, processSpec: NonNullable<GrpcSpec['Process']>): Promise<number> {
  const t0 = now();
  await client.call('ExecProcess', { container_id: cid, exec_id: execId, process: processSpec });
  const { status } = await client.call('WaitProcess', { container_id: cid, exec_id: execId });
  const ms = since(t0);
  if (status !== 0) throw new Error(`exec ${execId} in ${cid} exited with status ${status}`);
  return ms;
}

// ---------------------------------------------------------------------------------------------
// Set-up

interface Bundle {
  dir: string;
  /** The config.json object runc gets. */
  config: Record<string, unknown>;
  /** What the agent gets: the same config without the pid entry (the agent adds it). */
  spec: GrpcSpec;
}

/**
 * linux.resources of both sides: "deny every device" first, as `runc spec` and containerd write
 * it (and the Kata runtime sends it), so that both write the device cgroup (deny all, then their
 * default allow-list: runc's specconv AllowedDevices, the agent's DEFAULT_DEVICE_RULES).
 */
const BENCH_RESOURCES = { devices: [{ allow: false, access: 'rwm' }] };

/** A runc bundle in `dir` for `args` on `rootfs`, and the equivalent agent spec. */
function makeBundle(dir: string, rootfs: string, args: string[]): Bundle {
  fs.mkdirSync(dir, { recursive: true });
  const agentConfig = busyboxConfig(rootfs, args, { resources: BENCH_RESOURCES });
  const config = busyboxConfig(rootfs, args, { resources: BENCH_RESOURCES });
  const linux = config.linux as { namespaces: { type: string }[] };
  linux.namespaces = [{ type: 'pid' }, ...linux.namespaces];
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
  return { dir, config, spec: ociJsonToSpec(agentConfig, dir) };
}

function requireRunc(): string {
  const r = spawnSync(RUNC, ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    console.error('bench: runc is not installed; run bench/install-deps.sh (apt-get install runc) first.');
    process.exit(1);
  }
  return r.stdout.split('\n')[0].trim();
}

// ---------------------------------------------------------------------------------------------
// Report


// ---------------------------------------------------------------------------------------------

interface HelperOpTimes {
  [op: string]: number[];
}

/** "helper op done" lines of a debug-level helper log: ms per op. */
function helperOpTimes(logFile: string): HelperOpTimes {
  const times: HelperOpTimes = {};
  for (const line of fs.readFileSync(logFile, 'utf8').split('\n')) {
    if (!line.includes('"helper op done"')) continue;
    try {
      const rec = JSON.parse(line) as { op?: unknown; ms?: unknown };
      if (typeof rec.op === 'string' && typeof rec.ms === 'number') (times[rec.op] ??= []).push(rec.ms);
    } catch {
      /* a partial line */
    }
  }
  return times;
}

/**
 * Remove the bench's scratch directory, unless something is still mounted under it (then a
 * recursive delete could reach into the mounted file system): leave it and say so.
 */
function removeWorkDir(work: string): void {
  const mounted = fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m === work || m.startsWith(`${work}/`));
  if (mounted.length > 0) {
    console.error(`bench: not removing ${work}: still mounted there: ${mounted.join(', ')}`);
    return;
  }
  fs.rmSync(work, { recursive: true, force: true });
}

/** `--help` text: the benchmark takes no options, only environment variables. */
export const BENCH_USAGE = `usage: npm run bench   (or: node dist/bench/run.js), as root, with runc installed
Container start and exec latency of the agent next to runc (bench/README.md). No options;
environment: BENCH_ITERATIONS (timed iterations per scenario, default 30),
BENCH_WARMUP (untimed ones before, default 3). Results: stdout, bench/results/.`;

async function main(argv: readonly string[]): Promise<number> {
  if (argv.includes('-h') || argv.includes('--help')) {
    console.log(BENCH_USAGE);
    return 0;
  }
  if (argv.length > 0) {
    console.error(`bench: no options (got ${argv.join(' ')})\n${BENCH_USAGE}`);
    return 2;
  }
  if (process.getuid && process.getuid() !== 0) {
    console.error('bench: needs root (the helper and runc create namespaces and mounts).');
    return 1;
  }
  const runcVersion = requireRunc();
  const iterations = envInt('BENCH_ITERATIONS', 30, 1);
  const warmup = envInt('BENCH_WARMUP', 3, 0);
  const rounds = envInt('BENCH_ROUNDS', 5, 1);
  const densitySteps = (process.env.BENCH_DENSITY ?? '1,100,500').split(',').map(Number).filter((n) => Number.isInteger(n) && n > 0);
  const sections = new Set((process.env.BENCH_ONLY ?? 'lifecycle,rpc,startup,density').split(',').map((x) => x.trim()));
  const load0 = loadNow();

  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-bench-'));
  fs.chmodSync(work, 0o755);
  const rootfs = path.join(work, 'rootfs');
  execFileSync(path.join(PROJECT_ROOT, 'scripts', 'make-rootfs'), [rootfs], { stdio: ['ignore', 'ignore', 'inherit'] });
  const bTrue = makeBundle(path.join(work, 'bundle-true'), rootfs, ['true']);
  const bEcho = makeBundle(path.join(work, 'bundle-echo'), rootfs, ['sh', '-c', 'echo hi']);
  const bSleep = makeBundle(path.join(work, 'bundle-sleep'), rootfs, ['sleep', '86400']);
  const execProcess = bTrue.spec.Process;
  if (!execProcess) throw new Error('the OCI spec of bundle-true has no process');
  const runc = new Runc(path.join(work, 'runc-state'));

  const tag = crypto.randomBytes(3).toString('hex');
  let seq = 0;
  const nextId = (prefix: string): string => `${prefix}-${tag}-${seq++}`;

  let standalone: StandaloneAgent | undefined;
  let client: AgentClient | undefined;
  const ourExecCid = `bench-exec-${tag}`;
  const runcExecCid = `runc-exec-${tag}`;
  let ourExecRunning = false;
  let runcExecRunning = false;

  // Undo everything (containers on both sides, the agent, runc's state, the scratch directory);
  // also on SIGINT/SIGTERM. Runs once.
  let cleaning: Promise<void> | undefined;
  const cleanup = (): Promise<void> =>
    (cleaning ??= (async () => {
      const c = client;
      client = undefined;
      if (c) {
        if (ourExecRunning) await c.call('RemoveContainer', { container_id: ourExecCid, timeout: 10 }).catch(() => undefined);
        await c.close().catch(() => undefined);
      }
      const agent = standalone;
      standalone = undefined;
      if (agent) await agent.stop(5000).catch(() => undefined);
      if (runcExecRunning) await runc.delete(runcExecCid).catch(() => undefined);
      runc.cleanup();
      removeWorkDir(work);
    })());
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      progressDone();
      console.error(`bench: ${signal}, cleaning up`);
      void cleanup().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
    });
  }

  const samples: Record<string, number[]> = {};
  const add = (key: string, ms: number, timed: boolean): void => {
    if (timed) (samples[key] ??= []).push(ms);
  };

  try {
    standalone = await startStandaloneAgent({ logLevel: 'info', debug: false, runDir: path.join(work, 'agent') });
    client = await AgentClient.connect(standalone.address);
    await client.call('Check', { service: '' });
    const agentUser = standalone.controlUser;
    const total = warmup + iterations;

    if (sections.has('lifecycle')) {
      // Scenario A1/A2: container start.
      for (const [scenario, bundle, readOutput] of [
        ['start true', bTrue, false],
        ["start sh -c 'echo hi'", bEcho, true],
      ] as const) {
        for (let i = 0; i < total; i++) {
          const timed = i >= warmup;
          progress(`${scenario}: ${timed ? `iteration ${i - warmup + 1}/${iterations}` : `warm-up ${i + 1}/${warmup}`}`);
          const c = client;
          await rotated(i, [
            async () => {
              const r = await ourStart(c, bundle.spec, nextId('bench'), readOutput);
              if (readOutput && r.stdout !== 'hi\n') throw new Error(`our container printed ${JSON.stringify(r.stdout)}, expected "hi\\n"`);
              add(`${scenario}/ours`, r.totalMs, timed);
              add(`${scenario}/ours + RemoveContainer`, r.totalMs + r.removeMs, timed);
              add(`${scenario}/ours:CreateContainer`, r.createMs, timed);
              add(`${scenario}/ours:StartContainer`, r.startMs, timed);
              add(`${scenario}/ours:WaitProcess`, r.waitMs, timed);
              add(`${scenario}/ours:RemoveContainer`, r.removeMs, timed);
            },
            async () => {
              const t0 = now();
              const out = await runc.run(bundle.dir, nextId('runc'));
              add(`${scenario}/runc run`, since(t0), timed);
              if (readOutput && out !== 'hi\n') throw new Error(`runc's container printed ${JSON.stringify(out)}, expected "hi\\n"`);
            },
            async () => {
              const id = nextId('runc');
              const r = await runc.createStartWait(bundle.dir, id);
              const t0 = now();
              await runc.delete(id);
              const deleteMs = since(t0);
              if (readOutput && r.stdout !== 'hi\n') throw new Error(`runc's container printed ${JSON.stringify(r.stdout)}, expected "hi\\n"`);
              add(`${scenario}/runc create+start+wait`, r.totalMs, timed);
              add(`${scenario}/runc:create`, r.createMs, timed);
              add(`${scenario}/runc:start`, r.startMs, timed);
              add(`${scenario}/runc:delete`, deleteMs, timed);
            },
          ]);
        }
        progressDone();
      }

      // Scenario B: exec into a running container.
      await client.call('CreateContainer', { container_id: ourExecCid, exec_id: ourExecCid, OCI: bSleep.spec });
      ourExecRunning = true;
      await client.call('StartContainer', { container_id: ourExecCid });
      await runc.runDetached(bSleep.dir, runcExecCid);
      runcExecRunning = true;
      for (let i = 0; i < total; i++) {
        const timed = i >= warmup;
        progress(`exec true: ${timed ? `iteration ${i - warmup + 1}/${iterations}` : `warm-up ${i + 1}/${warmup}`}`);
        const c = client;
        await rotated(i, [
          async () => add('exec true/ours', await ourExec(c, ourExecCid, nextId('exec'), execProcess), timed),
          async () => {
            const t0 = now();
            await runc.exec(runcExecCid, ['true']);
            add('exec true/runc exec', since(t0), timed);
          },
        ]);
      }
      progressDone();
      await client.call('RemoveContainer', { container_id: ourExecCid, timeout: 10 });
      ourExecRunning = false;
      await runc.delete(runcExecCid);
      runcExecRunning = false;

      // Baselines.
      for (let i = 0; i < total; i++) {
        const timed = i >= warmup;
        const t0 = now();
        await client.call('Check', { service: '' });
        add('baseline/ttRPC round trip (Health.Check)', since(t0), timed);
        const t1 = now();
        check('/bin/true', await run('/bin/true', []));
        add('baseline/Node spawn of /bin/true', since(t1), timed);
        const t2 = now();
        check('runc --version', await run(RUNC, ['--version']));
        add('baseline/runc --version', since(t2), timed);
      }
    }

    // ttRPC and stdio throughput and density, on the same agent, against the Go references.
    const goBuild = sections.has('rpc') || sections.has('startup') ? await buildGoBench() : { reason: 'not run' };
    const goBin = 'bin' in goBuild ? goBuild.bin : undefined;
    if (!goBin && (sections.has('rpc') || sections.has('startup'))) console.error(`bench: no Go reference: ${'reason' in goBuild ? goBuild.reason : ''}`);
    let rpcStdio: RpcStdioResult | undefined;
    if (sections.has('rpc') && goBin) {
      const goSock = path.join(work, 'go-ref.sock');
      const goServer = await startGoServer(goBin, goSock);
      try {
        rpcStdio = await rpcAndStdio(goBin, standalone.address, goSock, rootfs, rounds, tag);
      } finally {
        goServer.kill('SIGKILL');
      }
    }
    let dens: DensityResult | undefined;
    if (sections.has('density') && densitySteps.length > 0) {
      dens = await density(client, bSleep.spec, { helper: standalone.helper.pid ?? -1, control: standalone.control.pid ?? -1 }, densitySteps, tag);
    }

    await client.close();
    client = undefined;
    await standalone.stop();
    standalone = undefined;

    let start: StartupResult | undefined;
    if (sections.has('startup')) start = await startup(work, goBin, rounds);

    // Where our time goes: a second agent at debug level, whose helper logs each op's time.
    const breakdownRuns = sections.has('lifecycle') ? Math.max(5, Math.min(iterations, 20)) : 0;
    standalone = breakdownRuns > 0 ? await startStandaloneAgent({ logLevel: 'debug', debug: false, runDir: path.join(work, 'agent-debug') }) : undefined;
    client = standalone ? await AgentClient.connect(standalone.address) : undefined;
    const client2 = client as AgentClient;
    const clientSide: Record<string, number[]> = {};
    const addClient = (k: string, ms: number): void => {
      (clientSide[k] ??= []).push(ms);
    };
    for (let i = 0; i < (breakdownRuns > 0 ? warmup + breakdownRuns : 0); i++) {
      progress(`breakdown: ${i + 1}/${warmup + breakdownRuns}`);
      const r = await ourStart(client2, bTrue.spec, nextId('bd'), false);
      if (i >= warmup) {
        addClient('createContainer', r.createMs);
        addClient('startContainer', r.startMs);
        addClient('removeContainer', r.removeMs);
        addClient('total', r.totalMs);
      }
    }
    progressDone();
    await client?.close();
    client = undefined;
    const helperLog = standalone?.helperLog;
    await standalone?.stop();
    standalone = undefined;
    const helperAll = helperLog ? helperOpTimes(helperLog) : {};
    // Drop the warm-up runs' entries (one per op per run, in order).
    const helperSide: Record<string, number[]> = {};
    for (const op of ['createContainer', 'startContainer', 'removeContainer']) helperSide[op] = (helperAll[op] ?? []).slice(warmup);

    // ------------------------------------------------------------------------------------------
    // Report.
    const st = (k: string): Stats => stats(samples[k] ?? []);
    const rows: Row[] = [];
    for (const scenario of ['start true', "start sh -c 'echo hi'"]) {
      for (const v of ['ours', 'ours + RemoveContainer', 'runc run', 'runc create+start+wait']) rows.push({ scenario, variant: v, stats: st(`${scenario}/${v}`) });
    }
    rows.push({ scenario: 'exec true', variant: 'ours', stats: st('exec true/ours') });
    rows.push({ scenario: 'exec true', variant: 'runc exec', stats: st('exec true/runc exec') });

    const ratios: { scenario: string; ours: string; reference: string; ratio: number }[] = [];
    for (const scenario of ['start true', "start sh -c 'echo hi'"]) {
      // Like for like: `runc run` deletes the container before it exits.
      ratios.push({
        scenario,
        ours: 'ours + RemoveContainer',
        reference: 'runc run',
        ratio: st(`${scenario}/ours + RemoveContainer`).median / st(`${scenario}/runc run`).median,
      });
      ratios.push({
        scenario,
        ours: 'ours',
        reference: 'runc create+start+wait',
        ratio: st(`${scenario}/ours`).median / st(`${scenario}/runc create+start+wait`).median,
      });
    }
    ratios.push({ scenario: 'exec true', ours: 'ours', reference: 'runc exec', ratio: st('exec true/ours').median / st('exec true/runc exec').median });

    const phaseRows: Row[] = [];
    for (const scenario of ['start true', "start sh -c 'echo hi'"]) {
      for (const v of ['ours:CreateContainer', 'ours:StartContainer', 'ours:WaitProcess', 'ours:RemoveContainer', 'runc:create', 'runc:start', 'runc:delete']) {
        phaseRows.push({ scenario, variant: v, stats: st(`${scenario}/${v}`) });
      }
    }
    const baselineRows: Row[] = ['ttRPC round trip (Health.Check)', 'Node spawn of /bin/true', 'runc --version'].map((v) => ({
      scenario: 'baseline',
      variant: v,
      stats: st(`baseline/${v}`),
    }));

    const breakdown = ['createContainer', 'startContainer', 'removeContainer'].map((op) => {
      const c = stats(clientSide[op] ?? []);
      const h = stats(helperSide[op] ?? []);
      return { op, clientMedianMs: c.median, helperMedianMs: h.median, outsideHelperMs: c.median - h.median, n: Math.min(c.n, h.n) };
    });
    const breakdownTotal = stats(clientSide.total ?? []);

    const ratioHeaders = ['scenario', 'ours', 'runc', 'ours/runc (medians)'];
    const ratioRowsText = ratios.map((r) => [r.scenario, r.ours, r.reference, `${r.ratio.toFixed(2)}×`]);
    const bdHeaders = ['RPC (start true)', 'client median ms', 'helper op median ms', 'outside the helper ms'];
    const bdRowsText = breakdown.map((b) => [
      b.op === 'createContainer' ? 'CreateContainer' : b.op === 'startContainer' ? 'StartContainer' : 'RemoveContainer',
      fmt(b.clientMedianMs),
      fmt(b.helperMedianMs),
      fmt(b.outsideHelperMs),
    ]);
    const env = machine();
    const load1 = loadNow();
    const startTrue = ratios.find((r) => r.scenario === 'start true' && r.reference === 'runc run');
    const execTrue = ratios.find((r) => r.scenario === 'exec true');
    const targets: Target[] = [];
    if (sections.has('lifecycle') && startTrue && execTrue) {
      targets.push({
        target: 'lifecycle: create+start+wait+remove of `true`',
        ours: `${fmt(st('start true/ours + RemoveContainer').median)} ms`,
        reference: `${fmt(st('start true/runc run').median)} ms (runc run)`,
        figure: `${startTrue.ratio.toFixed(2)}×`,
        goal: '≤ 0.25×',
        met: startTrue.ratio <= 0.25,
      });
      targets.push({
        target: 'exec+wait of `true`',
        ours: `${fmt(st('exec true/ours').median)} ms`,
        reference: `${fmt(st('exec true/runc exec').median)} ms (runc exec)`,
        figure: `${execTrue.ratio.toFixed(2)}×`,
        goal: '≤ 0.15×',
        met: execTrue.ratio <= 0.15,
      });
    }
    targets.push(...(rpcStdio?.targets ?? []), ...(start?.targets ?? []), ...(dens?.targets ?? []));
    const tg = targetRows(targets);
    const tpHeaders = ['what', 'variant', 'n', 'median', 'unit', 'per call µs'];
    const tpRows = (rpcStdio?.rows ?? []).map((r) => [r.what, r.variant, String(r.n), r.median.toFixed(0), r.unit, r.perCallUs.toFixed(1)]);
    const densHeaders = ['containers', 'create+start median ms', 'helper PSS MiB', 'control PSS MiB'];
    const densRows = (dens?.steps ?? []).map((d) => [String(d.containers), fmt(d.createStartMedianMs), (d.helperPss / 2 ** 20).toFixed(1), (d.controlPss / 2 ** 20).toFixed(1)]);
    const startRows = start
      ? [
          ['agent: spawn of helper + control to SERVING', fmt(stats(start.servingMs).median), fmt(stats(start.servingMs).min), fmt(stats(start.servingMs).max)],
          ['node -e 0', fmt(stats(start.nodeEmptyMs).median), fmt(stats(start.nodeEmptyMs).min), fmt(stats(start.nodeEmptyMs).max)],
          ['Go ttrpc server to first Check', fmt(stats(start.goServingMs).median), fmt(stats(start.goServingMs).min), fmt(stats(start.goServingMs).max)],
        ]
      : [];
    const startHeaders = ['start-up', 'median ms', 'min ms', 'max ms'];
    const when = new Date();

    const say = (s = ''): void => {
      process.stdout.write(`${s}\n`);
    };
    say(`kata-agent-ts vs ${runcVersion}: ${iterations} iterations (+${warmup} warm-up) per scenario, interleaved; ${rounds} rounds of the throughput and start-up sections`);
    say(`load average (1 min): ${load0} at the start, ${load1} at the end; sections: ${[...sections].join(', ')}`);
    say();
    say(table(tg.headers, tg.rows, false));
    say();
    if (tpRows.length > 0) say(`${table(tpHeaders, tpRows, false)}\n`);
    if (startRows.length > 0) say(`${table(startHeaders, startRows, false)}\n`);
    if (densRows.length > 0) say(`${table(densHeaders, densRows, false)}\nremove median ${fmt(dens?.removeMedianMs ?? NaN)} ms\n`);
    say(`${env.os}; ${env.kernel}; ${env.cpu}; ${env.memory}; Node ${env.node}; cgroup ${env.cgroup}; control plane ${agentUser}`);
    say();
    if (sections.has('lifecycle')) {
      say(table(RESULT_HEADERS, resultRows(rows), false));
      say();
      say(table(ratioHeaders, ratioRowsText, false));
      say();
      say('phases (client-side):');
      say(table(RESULT_HEADERS, resultRows(phaseRows), false));
      say();
      say(table(RESULT_HEADERS, resultRows(baselineRows), false));
      say();
      say(`where our time goes (second agent at log level debug, ${breakdownRuns} runs of start true; create+start+wait median ${fmt(breakdownTotal.median)} ms):`);
      say(table(bdHeaders, bdRowsText, false));
    }

    const resultsDir = path.join(PROJECT_ROOT, 'bench', 'results');
    fs.mkdirSync(resultsDir, { recursive: true });
    const json = {
      date: when.toISOString(),
      iterations,
      warmup,
      machine: env,
      runc: runcVersion,
      controlPlaneUser: agentUser,
      results: rows.map((r) => ({ scenario: r.scenario, variant: r.variant, ...r.stats })),
      ratiosOfMedians: ratios,
      phases: phaseRows.map((r) => ({ scenario: r.scenario, phase: r.variant, ...r.stats })),
      baselines: baselineRows.map((r) => ({ what: r.variant, ...r.stats })),
      breakdown: { runs: breakdownRuns, createStartWaitMedianMs: breakdownTotal.median, rpcs: breakdown },
      load: { start: load0, end: load1 },
      targets,
      throughput: rpcStdio?.rows ?? [],
      startup: start ?? null,
      density: dens ?? null,
      samples,
    };
    // A partial run (BENCH_ONLY) writes partial-<date> files and leaves the day's snapshot alone.
    const day = `${process.env.BENCH_ONLY ? 'partial-' : ''}${when.toISOString().slice(0, 10)}`;
    const jsonText = `${JSON.stringify(json, null, 2)}\n`;
    if (!process.env.BENCH_ONLY) fs.writeFileSync(path.join(resultsDir, 'latest.json'), jsonText);
    fs.writeFileSync(path.join(resultsDir, `${day}.json`), jsonText);
    const md = [
      `# Container start and exec latency: kata-agent-ts vs runc (${day})`,
      '',
      `Produced by \`npm run bench\` (bench/run.ts); every sample is in ${day}.json. All`,
      'times in ms, measured by one Node client process: ours over one persistent ttRPC connection',
      'to a stand-alone agent (helper + control plane on unix sockets, log level info), runc spawned',
      'as a process per command. Same busybox rootfs and OCI config on both sides; new mount, uts,',
      'ipc and pid namespaces, no network namespace. The variants of each iteration run one after',
      'the other in a rotating order.',
      '',
      `- Machine: ${env.os}; ${env.kernel}; ${env.cpu}; ${env.memory}; cgroup ${env.cgroup}`,
      `- Node ${env.node}; ${runcVersion}; control plane ${agentUser}`,
      `- ${iterations} timed iterations per scenario after ${warmup} warm-up iterations`,
      '',
      `- Load average (1 min): ${load0} at the start, ${load1} at the end (a shared machine: read ratios, not absolute figures)`,
      '',
      '## Targets (performance issue)',
      '',
      table(tg.headers, tg.rows, true),
      '',
      ...(tpRows.length > 0
        ? ['## ttRPC and stdio throughput (one Go client against each server; medians over rounds)', '', table(tpHeaders, tpRows, true), '']
        : []),
      ...(startRows.length > 0 ? ['## Start-up (spawn to first SERVING)', '', table(startHeaders, startRows, true), ''] : []),
      ...(densRows.length > 0
        ? ['## Density (sleeping containers on one agent)', '', table(densHeaders, densRows, true), '', `RemoveContainer median ${fmt(dens?.removeMedianMs ?? NaN)} ms.`, '']
        : []),
      '## Results',
      '',
      table(RESULT_HEADERS, resultRows(rows), true),
      '',
      '- start: ours = CreateContainer → StartContainer → WaitProcess returned (RemoveContainer',
      '  below, not included); `runc run` = spawn to exit, including its delete-on-exit;',
      '  `runc create+start+wait` = `runc create`, `runc start`, then EOF of the container\'s stdout',
      '  (`runc delete` below, not included).',
      "- `sh -c 'echo hi'`: the output is read (ours: ReadStdout/ReadStderr to EOF alongside",
      '  WaitProcess) and checked to be `hi\\n`.',
      '- exec: ExecProcess + WaitProcess vs `runc exec` (spawn to exit), into a running `sleep`.',
      '',
      '## Ratios (ours / runc, medians)',
      '',
      table(ratioHeaders, ratioRowsText, true),
      '',
      '## What each side does (read the ratios with this in mind)',
      '',
      '- runc is a short-lived process per command (`runc run` and `runc create` also re-exec',
      '  themselves as `runc init`); the agent is a long-lived daemon, so its figures hold no process',
      '  start-up. The `runc --version` baseline below is the cost of one runc start.',
      `- Both create (and on removal remove) a cgroup for every container, here on a cgroup ${env.cgroup}`,
      `  host (${env.cgroupHierarchies}): \`/<id>\` in every controller hierarchy and the cgroup2 one`,
      '  (the config names no cgroupsPath; control/oci-cgroups.ts), with the same resources: the',
      '  config\'s only one is the device rule "deny all" (as `runc spec` writes it), after which',
      '  each side writes its default device allow-list. runc also makes one in the name=systemd',
      '  hierarchy (no controller), which the agent leaves alone. Both sides put the container',
      '  process in every hierarchy before it runs anything of the container.',
      '- The config has no seccomp profile and Docker\'s default capability list: both sides load',
      '  no filter and keep those capabilities.',
      '- The same: namespaces (new mount, uts, ipc, pid), the rootfs bind and pivot_root, the mounts',
      '  (/proc, /dev tmpfs + device nodes, /dev/pts, /dev/shm, /dev/mqueue, /sys), masked and',
      '  read-only paths, no_new_privs, the container\'s stdio as pipes.',
      '',
      '## Phases (client-side)',
      '',
      table(RESULT_HEADERS, resultRows(phaseRows), true),
      '',
      '## Baselines',
      '',
      table(RESULT_HEADERS, resultRows(baselineRows), true),
      '',
      '## Where our time goes',
      '',
      `A second agent at log level debug, ${breakdownRuns} runs of \`start true\` (create+start+wait`,
      `median ${fmt(breakdownTotal.median)} ms): the client's time of each RPC next to the helper's own`,
      'time for the operation ("helper op done" in its log, from request received to reply ready);',
      'the difference is the ttRPC hop, the control plane and the control↔helper channel.',
      '',
      table(bdHeaders, bdRowsText, true),
      '',
    ].join('\n');
    fs.writeFileSync(path.join(resultsDir, `${day}.md`), md);
    say();
    const rel = (f: string): string => path.relative(PROJECT_ROOT, path.join(resultsDir, f));
    say(`wrote ${process.env.BENCH_ONLY ? '' : `${rel('latest.json')}, `}${rel(`${day}.json`)} and ${rel(`${day}.md`)}`);
    return 0;
  } catch (err) {
    progressDone();
    console.error(`bench failed: ${(err as Error).stack ?? String(err)}`);
    if (standalone) {
      console.error(`--- control log (${standalone.controlLog}) ---\n${tail(standalone.controlLog)}`);
      console.error(`--- helper log (${standalone.helperLog}) ---\n${tail(standalone.helperLog)}`);
    }
    return 1;
  } finally {
    await cleanup();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
