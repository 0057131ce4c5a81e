/**
 * Fuzz and resource-exhaustion harness for the control plane's ttRPC server (security issue
 * items 3, 6, 7): a real `kata-agent` process with the out-of-process mock helper, driven by
 *
 * - {@link fuzzFrames}: random and mutated ttRPC frames generated with fast-check from a seed
 *   (valid headers with junk payloads, bad lengths, bad types, truncated frames, bit flips,
 *   junk envelopes, and valid envelopes with junk protobuf for every method of the protocol);
 * - {@link nonReadingClients}: clients that send requests and never read the answers;
 * - {@link idleConnections}: many connections that send nothing (or half a header).
 *
 * Every scenario reports the control plane's RSS (VmRSS of /proc/<pid>/status, in KiB) before,
 * at its peak and after; {@link healthCheck} proves the agent still answers. Used by
 * test/fuzz/ttrpc-fuzz.ts (`npm run fuzz`) and, shortened, by test/unit/ttrpc-fuzz.test.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { METHODS, METHOD_NAMES } from '../../control/ctl/methods';
import { FrameType, TtrpcClient, encodeFrame, encodeHeader } from '../../control/ttrpc';
import { ttrpc } from '../../shared/proto';

const root = path.resolve(__dirname, '..', '..', '..');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A running control plane (kata-agent) with its mock helper. */
export interface ControlUnderTest {
  readonly address: string;
  readonly pid: number;
  readonly agent: ChildProcess;
  /** The last 64 KiB of the agent's stderr (pino JSON lines). */
  stderr(): string;
  /** True while the agent process has not exited. */
  alive(): boolean;
  /** Kill both processes and remove the temporary directory. */
  stop(): Promise<void>;
}

/** Options of {@link startControl}. */
export interface StartOptions {
  /** Extra kata-agent flags (e.g. ['--frame-timeout-ms', '500']). */
  args?: string[];
  /** Soft and hard RLIMIT_NOFILE of the agent (set with the shell's ulimit); default inherited. */
  nofile?: number;
  /** Agent log level (default 'error': the fuzz makes many warnings). */
  logLevel?: string;
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Start the mock helper and kata-agent on a fresh unix socket; resolves once it announced itself. */
export async function startControl(options: StartOptions = {}): Promise<ControlUnderTest> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-fuzz-'));
  const helperSocket = path.join(dir, 'helper.sock');
  const agentSocket = path.join(dir, 'agent.sock');
  const helper = spawn(process.execPath, [path.join(root, 'bin', 'kata-agent-helper'), '--mock', '--socket', helperSocket, '--log-level', 'error'], { stdio: 'ignore' });
  const agentArgs = [path.join(root, 'bin', 'kata-agent'), '--server-address', `unix://${agentSocket}`, '--helper-socket', helperSocket, '--debug-addr', '', ...(options.args ?? [])];
  const env = { ...process.env, KATA_AGENT_LOG_LEVEL: options.logLevel ?? 'error' };
  const agent =
    options.nofile === undefined
      ? spawn(process.execPath, agentArgs, { stdio: ['ignore', 'ignore', 'pipe'], env })
      : spawn('/bin/sh', ['-c', `ulimit -n ${options.nofile} && exec "$0" "$@"`, process.execPath, ...agentArgs], { stdio: ['ignore', 'ignore', 'pipe'], env });
  let stderr = '';
  agent.stderr!.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-65536);
  });
  const stop = async (): Promise<void> => {
    agent.kill('SIGKILL');
    helper.kill('SIGKILL');
    await Promise.all([exited(agent), exited(helper)]);
    fs.rmSync(dir, { recursive: true, force: true });
  };
  // Announce is logged at info; with a higher level wait for the socket to answer instead.
  const address = `unix://${agentSocket}`;
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (agent.exitCode !== null) {
      await stop();
      throw new Error(`kata-agent exited ${agent.exitCode} at start: ${stderr}`);
    }
    if (fs.existsSync(agentSocket) && (await healthCheck(address).catch(() => false))) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`kata-agent did not answer within 15 s: ${stderr}`);
    }
    await sleep(50);
  }
  return {
    address,
    pid: agent.pid!,
    agent,
    stderr: () => stderr,
    alive: () => agent.exitCode === null && agent.signalCode === null,
    stop,
  };
}

/** VmRSS of `pid` in KiB (0 when the process is gone). */
export function rssKiB(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** Number of open fds of `pid` (0 when unreadable). */
export function fdCount(pid: number): number {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
}

/** Health.Check over a fresh connection; true when the answer is SERVING (1). */
export async function healthCheck(address: string, timeoutMs = 5000): Promise<boolean> {
  const client = await TtrpcClient.connect(address);
  try {
    const reply = await client.call('grpc.Health', 'Check', METHODS.Check.request.encode({}).finish(), { timeoutNs: timeoutMs * 1e6 });
    return METHODS.Check.response.decode(reply).status === 1;
  } finally {
    client.close();
  }
}

/** Samples the RSS of `pid` every `everyMs` until stopped; reports the peak in KiB. */
export function rssSampler(pid: number, everyMs = 50): { stop(): number } {
  let peak = rssKiB(pid);
  const timer = setInterval(() => {
    peak = Math.max(peak, rssKiB(pid));
  }, everyMs);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(peak, rssKiB(pid));
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Frame generation

const oddStreamId = fc.integer({ min: 0, max: 0x7fffffff }).map((n) => n * 2 + 1);
const junk = (max: number): fc.Arbitrary<Uint8Array> => fc.uint8Array({ maxLength: max });
const methodSpecs = METHOD_NAMES.map((name) => METHODS[name]);

/** A payload that never decodes as protobuf: its first tag has wire type 7. */
function undecodable(bytes: Uint8Array): Uint8Array {
  return Buffer.concat([Buffer.from([0x0f]), bytes]);
}

function requestFrame(streamId: number, service: string, method: string, payload: Uint8Array, timeoutNano = 0): Buffer {
  return encodeFrame(streamId, FrameType.REQUEST, 0, ttrpc.Request.encode({ service, method, payload, timeout_nano: timeoutNano }).finish());
}

/**
 * A valid envelope for a real method with a junk payload. DestroySandbox would stop the agent
 * if its (empty) request decoded, so its junk never decodes; every other method gets raw junk.
 */
const validEnvelopeJunkPayload = fc
  .record({ spec: fc.constantFrom(...methodSpecs), streamId: oddStreamId, payload: junk(256), timeout: fc.constantFrom(0, 0, 0, 1_000_000, 5_000_000_000) })
  .map(({ spec, streamId, payload, timeout }) =>
    requestFrame(streamId, spec.service, spec.method, spec.method === 'DestroySandbox' ? undecodable(payload) : payload, timeout),
  );

/** Frames a correct server answers or ignores without closing the connection. */
const benignFrame: fc.Arbitrary<Buffer> = fc.oneof(
  { weight: 8, arbitrary: validEnvelopeJunkPayload },
  // Even stream id, unknown service / method.
  {
    weight: 1,
    arbitrary: fc.record({ id: fc.integer({ min: 0, max: 0x7fffffff }).map((n) => n * 2), svc: fc.string({ maxLength: 30 }), m: fc.string({ maxLength: 30 }) }).map(({ id, svc, m }) => requestFrame(id, svc, m, new Uint8Array(0))),
  },
  // Valid header, bad or other type, consistent length (ignored).
  {
    weight: 1,
    arbitrary: fc
      .record({ id: fc.nat(), type: fc.oneof(fc.constantFrom(0, FrameType.RESPONSE, FrameType.DATA), fc.integer({ min: 4, max: 255 })), flags: fc.integer({ min: 0, max: 255 }), body: junk(128) })
      .map(({ id, type, flags, body }) => encodeFrame(id, type, flags, body)),
  },
);

/**
 * Frames after which the connection's byte stream cannot be trusted (the server may close it,
 * or wait for bytes that never come): the last frame of a batch, after which the client closes.
 */
const hostileFrame: fc.Arbitrary<Buffer> = fc.oneof(
  // Junk envelope under a valid header.
  { weight: 3, arbitrary: fc.record({ id: oddStreamId, body: junk(200) }).map(({ id, body }) => encodeFrame(id, FrameType.REQUEST, 0, body)) },
  // Bit flips anywhere in a valid request (header included).
  {
    weight: 3,
    arbitrary: fc
      .record({ frame: validEnvelopeJunkPayload, flips: fc.array(fc.record({ at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }), { minLength: 1, maxLength: 8 }) })
      .map(({ frame, flips }) => {
        const out = Buffer.from(frame);
        for (const f of flips) out[f.at % out.length] ^= 1 << f.bit;
        // Never turn it into a DestroySandbox that decodes: leave such (improbable) frames broken.
        return out.includes('DestroySandbox') ? out.subarray(0, 9) : out;
      }),
  },
  // Bad lengths: shorter or longer than the body, up to u32 max.
  {
    weight: 2,
    arbitrary: fc
      .record({ id: oddStreamId, type: fc.integer({ min: 0, max: 255 }), length: fc.oneof(fc.integer({ min: 0, max: 64 }), fc.integer({ min: 0, max: 0xffffffff })), body: junk(64) })
      .map(({ id, type, length, body }) => Buffer.concat([encodeHeader({ length, streamId: id, type, flags: 0 }), body])),
  },
  // Truncated valid frame.
  { weight: 2, arbitrary: fc.record({ frame: validEnvelopeJunkPayload, cut: fc.nat() }).map(({ frame, cut }) => frame.subarray(0, cut % frame.length)) },
  // Raw junk.
  { weight: 1, arbitrary: junk(300).map((b) => Buffer.from(b)) },
);

/** One connection's worth of traffic: benign frames, then maybe one hostile frame. */
const batchArb = fc.record({ benign: fc.array(benignFrame, { minLength: 20, maxLength: 200 }), hostile: fc.option(hostileFrame, { freq: 2 }) });

/** Result of {@link fuzzFrames}. */
export interface FuzzStats {
  frames: number;
  bytes: number;
  connections: number;
  /** Connections the server closed before the client did. */
  closedByServer: number;
  /** Response bytes received. */
  responseBytes: number;
  peakRssKiB: number;
}

/**
 * Send at least `frames` generated frames to `address` over `parallel` concurrent connection
 * workers; each connection carries one batch (20..200 benign frames, then maybe one hostile
 * one) and is closed by the client after it (or earlier by the server). Deterministic for a
 * `seed` (the generated frames; timing varies). `pid` is sampled for the RSS peak.
 */
export async function fuzzFrames(address: string, pid: number, options: { frames: number; seed: number; parallel?: number; onProgress?: (sent: number) => void }): Promise<FuzzStats> {
  const stats: FuzzStats = { frames: 0, bytes: 0, connections: 0, closedByServer: 0, responseBytes: 0, peakRssKiB: 0 };
  const sampler = rssSampler(pid, 200);
  const socketPath = address.slice('unix://'.length);
  let batchIndex = 0;
  let pool: Array<{ benign: Buffer[]; hostile: Buffer | null }> = [];
  const nextBatch = (): { benign: Buffer[]; hostile: Buffer | null } => {
    if (pool.length === 0) pool = fc.sample(batchArb, { seed: options.seed + batchIndex++ * 7919, numRuns: 50 });
    return pool.pop()!;
  };
  let lastReport = 0;
  const worker = async (): Promise<void> => {
    while (stats.frames < options.frames) {
      const batch = nextBatch();
      const data = Buffer.concat(batch.hostile ? [...batch.benign, batch.hostile] : batch.benign);
      stats.frames += batch.benign.length + (batch.hostile ? 1 : 0);
      stats.bytes += data.length;
      stats.connections++;
      await new Promise<void>((resolve) => {
        const socket = net.createConnection({ path: socketPath });
        let ended = false;
        let lastData = Date.now();
        socket.on('data', (d: Buffer) => {
          stats.responseBytes += d.length;
          lastData = Date.now();
        });
        socket.on('error', () => undefined);
        socket.on('end', () => {
          if (!ended) stats.closedByServer++;
        });
        socket.on('close', () => resolve());
        socket.on('connect', () => {
          socket.write(data, () => {
            // Let the server answer (until 30 ms pass without an answer once answers came, or
            // 500 ms without any: on a loaded machine the first answer can take longer than 30 ms;
            // at most 2 s), then hang up: a half-sent frame must not wait for the frame timeout.
            const started = Date.now();
            lastData = started;
            const check = (): void => {
              if (socket.destroyed) return;
              const quiet = lastData === started ? 500 : 30;
              if (Date.now() - lastData >= quiet || Date.now() - started > 2000) {
                ended = true;
                socket.destroy();
              } else setTimeout(check, 10);
            };
            setTimeout(check, 10);
          });
        });
      });
      if (options.onProgress && stats.frames - lastReport >= 100_000) {
        lastReport = stats.frames;
        options.onProgress(stats.frames);
      }
    }
  };
  await Promise.all(Array.from({ length: options.parallel ?? 8 }, () => worker()));
  stats.peakRssKiB = sampler.stop();
  return stats;
}

// ---------------------------------------------------------------------------------------------
// Resource exhaustion

/** Result of a memory scenario: RSS in KiB before, at the peak, after the clients went away. */
export interface MemoryStats {
  beforeKiB: number;
  peakKiB: number;
  afterKiB: number;
  /** Requests written by the clients (non-reading) or connections opened (idle). */
  sent: number;
  /** Connections the server closed or refused. */
  closedByServer: number;
  /** Whether a Health.Check on a fresh connection was answered during the load. */
  healthDuringLoad: boolean;
  /** Open fds of the control plane during the load (idle: half-way through the hold). */
  controlFds: number;
}

/**
 * `clients` connections that write requests (`method` of grpc.Health or AgentService with an
 * empty payload, default Health.Check; requests batched 1000 per write) and never read, for
 * `durationMs`; then they are closed and the control plane gets `settleMs` to release memory.
 */
export async function nonReadingClients(address: string, pid: number, options: { clients: number; durationMs: number; settleMs?: number; method?: keyof typeof METHODS }): Promise<MemoryStats> {
  const spec = METHODS[options.method ?? 'Check'];
  const beforeKiB = rssKiB(pid);
  const sampler = rssSampler(pid);
  const socketPath = address.slice('unix://'.length);
  let sent = 0;
  let closedByServer = 0;
  const sockets: net.Socket[] = [];
  const stopAt = Date.now() + options.durationMs;
  const one = async (): Promise<void> => {
    const socket = net.createConnection({ path: socketPath });
    sockets.push(socket);
    socket.pause(); // never read
    socket.on('error', () => undefined);
    socket.on('end', () => closedByServer++);
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    let streamId = 1;
    while (Date.now() < stopAt && !socket.destroyed) {
      const frames: Buffer[] = [];
      for (let i = 0; i < 1000; i++, streamId += 2) frames.push(requestFrame(streamId >>> 0 || 1, spec.service, spec.method, new Uint8Array(0)));
      sent += frames.length;
      if (!socket.write(Buffer.concat(frames))) {
        // The server stopped reading us: wait for drain, or until the scenario ends.
        await Promise.race([new Promise((r) => socket.once('drain', r)), sleep(Math.max(0, stopAt - Date.now()))]);
      }
    }
  };
  const workers = Array.from({ length: options.clients }, () => one());
  await sleep(options.durationMs / 2);
  const healthDuringLoad = await healthCheck(address).catch(() => false);
  await Promise.all(workers);
  const controlFds = fdCount(pid);
  const peakKiB = sampler.stop();
  for (const s of sockets) s.destroy();
  await sleep(options.settleMs ?? 2000);
  return { beforeKiB, peakKiB, afterKiB: rssKiB(pid), sent, closedByServer, healthDuringLoad, controlFds };
}

/**
 * Open `count` connections that send nothing (`partial`: 5 bytes of a header, slowloris) and
 * hold them for `holdMs`; counts those the server closed. Health.Check must still be served.
 */
export async function idleConnections(address: string, pid: number, options: { count: number; holdMs: number; partial?: boolean; settleMs?: number }): Promise<MemoryStats> {
  const beforeKiB = rssKiB(pid);
  const sampler = rssSampler(pid);
  const socketPath = address.slice('unix://'.length);
  let closedByServer = 0;
  const sockets: net.Socket[] = [];
  const header = encodeHeader({ length: 100, streamId: 1, type: FrameType.REQUEST, flags: 0 }).subarray(0, 5);
  for (let i = 0; i < options.count; i++) {
    const socket = net.createConnection({ path: socketPath });
    sockets.push(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => closedByServer++);
    socket.on('connect', () => {
      if (options.partial) socket.write(header);
    });
    if (i % 100 === 99) await sleep(5); // do not overflow the listen backlog
  }
  await sleep(options.holdMs / 2);
  const controlFds = fdCount(pid);
  const healthDuringLoad = await healthCheck(address).catch(() => false);
  await sleep(options.holdMs / 2);
  const peakKiB = sampler.stop();
  const closed = closedByServer;
  for (const s of sockets) s.destroy();
  await sleep(options.settleMs ?? 1000);
  return { beforeKiB, peakKiB, afterKiB: rssKiB(pid), sent: options.count, closedByServer: closed, healthDuringLoad, controlFds };
}
