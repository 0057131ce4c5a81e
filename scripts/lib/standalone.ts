/**
 * Stand-alone launcher: starts the privileged helper and the control plane as two processes on
 * unix sockets in a fresh run directory, the way systemd starts them in a guest, for the main
 * job (scripts/demo.ts), the integration tests and the benchmarks.
 *
 * The control plane runs as an unprivileged user (uid/gid 65534 "nobody" by default) when that
 * user can read the project's compiled code; otherwise (e.g. a checkout under a 0700 home) it
 * runs as the caller and says so in `controlUser`.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

/** Project root (this file is dist/scripts/lib/standalone.js once compiled). */
export const PROJECT_ROOT = path.resolve(__dirname, '..', '..', '..');

export interface StandaloneOptions {
  /** uid/gid for the control plane; default 65534 when usable, else the caller's. */
  controlUid?: number;
  /** Log level of both processes (default "info"). */
  logLevel?: string;
  /** Enable the debug endpoint on a free loopback port (default true). */
  debug?: boolean;
  /** Directory for sockets, state and logs (default a new mkdtemp under os.tmpdir()). */
  runDir?: string;
  /** Extra helper arguments (e.g. --kata-dir DIR, --netns /run/netns/x for tests). */
  helperArgs?: string[];
  /** Extra control-plane arguments (e.g. --config FILE), before the launcher's own flags. */
  controlArgs?: string[];
  /** Debug endpoint address given to the control plane (overrides `debug`), e.g. unix:///run/x/debug.sock. */
  debugAddr?: string;
  /**
   * Spawn the control plane right after the helper instead of once the helper's socket exists
   * (it retries the helper connection itself), as an init system starting both would; for
   * start-up timing (bench/startup.ts).
   */
  together?: boolean;
  /** Start both logs afresh (after the check that the run directory is not in use) instead of appending to them. */
  freshLogs?: boolean;
  /** Called with each helper and control-plane process right after it is spawned (so a caller can stop them if it is itself stopped during start-up). */
  onSpawn?: (child: ChildProcess) => void;
}

export interface StandaloneAgent {
  /** ttRPC address of the control plane, `unix:///.../agent.sock`. */
  address: string;
  /** Base URL of the debug endpoint (`http://127.0.0.1:PORT`), or "" when disabled or on a unix socket. */
  debugUrl: string;
  /** The control plane's debug address (`127.0.0.1:PORT`, `unix:///path`, or "" when disabled). */
  debugAddr: string;
  runDir: string;
  helperLog: string;
  controlLog: string;
  /** e.g. "uid 65534" or "uid 0 (nobody cannot read the project)". */
  controlUser: string;
  /** The current helper process (replaced by {@link restartHelper}). */
  helper: ChildProcess;
  /** The current control plane process (replaced by {@link restartControl}). */
  control: ChildProcess;
  /**
   * Kill only the control plane with `signal` (default SIGKILL), wait for it to exit, start a new
   * one on the same sockets (it re-adopts the helper's containers: docs/ARCHITECTURE.md "Restart
   * and adoption") and resolve once it serves again. Throws (with the log tail) when the new one
   * does not come up within 20 s.
   */
  restartControl(signal?: NodeJS.Signals): Promise<void>;
  /**
   * Kill the helper with `signal` (default SIGKILL), wait for it and for the control plane (which
   * exits when it loses the helper), then start a new helper on the same state directory (it
   * kills the containers and detaches the mounts the old one left) and a new control plane.
   */
  restartHelper(signal?: NodeJS.Signals): Promise<void>;
  /**
   * Stop both processes: SIGTERM the control plane (if still running) then the helper, wait up
   * to `timeoutMs` (default 10000) for each to exit, SIGKILL after that. Resolves with their
   * exit codes (null when killed by a signal).
   */
  stop(timeoutMs?: number): Promise<{ control: number | null; helper: number | null }>;
}

/**
 * The helper's environment: the caller's (its KATA_AGENT_* settings) without
 * NODE_EXTRA_CA_CERTS. Node reads and parses that CA file at every start, before any code runs
 * (~50 ms of CPU for a system bundle of ~150 certificates on the 2-core machine the benchmarks
 * run on; `node -e 0` 70 → 10–20 ms), and neither process makes a TLS connection. systemd and
 * init mode start both with a clean environment anyway; the control plane gets only PATH here.
 */
export function agentEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const out = { ...env };
  delete out.NODE_EXTRA_CA_CERTS;
  return out;
}

const canRunAsSeen = new Map<number, boolean>();

/** Whether `uid` can read the compiled code (a Node probe, run once per uid and process). */
function canRunAs(uid: number): boolean {
  const seen = canRunAsSeen.get(uid);
  if (seen !== undefined) return seen;
  const probe = spawnSync(
    process.execPath,
    ['-e', `require('fs').accessSync(${JSON.stringify(path.join(PROJECT_ROOT, 'dist', 'control', 'main.js'))}, 4);` +
      `require(${JSON.stringify(path.join(PROJECT_ROOT, 'node_modules', 'pino'))});`],
    { uid, gid: uid, stdio: 'ignore', timeout: 10_000 },
  );
  canRunAsSeen.set(uid, probe.status === 0);
  return probe.status === 0;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

async function waitForPath(file: string, child: ChildProcess, what: string, log: string, timeoutMs: number, logNeedle?: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!fs.existsSync(file) || (logNeedle !== undefined && !logContains(log, logNeedle))) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before it was ready (${file}); log: ${log}\n${tail(log)}`);
    }
    if (Date.now() > deadline) throw new Error(`${what} was not ready (${file}) within ${timeoutMs} ms; log: ${log}\n${tail(log)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function countInLog(file: string, needle: string): number {
  try {
    return fs.readFileSync(file, 'utf8').split(needle).length - 1;
  } catch {
    return 0;
  }
}

function logContains(file: string, needle: string): boolean {
  try {
    return fs.readFileSync(file, 'utf8').includes(needle);
  } catch {
    return false;
  }
}

/** Last `lines` lines of a log file ("" if unreadable). */
export function tail(file: string, lines = 20): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

function waitExit(child: ChildProcess, timeoutMs: number): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

/**
 * Whether something accepts connections on the unix socket `file` (a running agent or helper);
 * false when the file is missing, stale (ECONNREFUSED) or no answer comes within 1 s.
 */
export function unixSocketServing(file: string): Promise<boolean> {
  if (!fs.existsSync(file)) return Promise.resolve(false);
  return new Promise((resolve) => {
    const sock = net.connect(file);
    const done = (serving: boolean): void => {
      sock.destroy();
      resolve(serving);
    };
    sock.setTimeout(1000, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

/**
 * The environment of the control plane: PATH, plus the launcher's KATA_AGENT_BUNDLE (bin/
 * reads it to start from the dist/ modules instead of the bundle) so both processes honour it.
 */
export function controlEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = { PATH: env.PATH ?? '/usr/bin:/bin' };
  if (env.KATA_AGENT_BUNDLE !== undefined) out.KATA_AGENT_BUNDLE = env.KATA_AGENT_BUNDLE;
  return out;
}

/**
 * Start helper and control plane; resolves once the agent serves its ttRPC socket (the socket
 * exists and the control plane has logged its "announce" record, written after the server and
 * the debug endpoint are up).
 * Throws (with the log tail) when either process fails to come up within 20 s.
 * Needs root (the helper refuses to run otherwise).
 */
export async function startStandaloneAgent(opts: StandaloneOptions = {}): Promise<StandaloneAgent> {
  const runDir = opts.runDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'kata-agent-'));
  fs.mkdirSync(runDir, { recursive: true });
  fs.chmodSync(runDir, 0o755);
  const logLevel = opts.logLevel ?? 'info';

  let controlUid = opts.controlUid ?? 65534;
  let controlUser = `uid ${controlUid}`;
  if (opts.controlUid === undefined && !canRunAs(controlUid)) {
    controlUid = process.getuid ? process.getuid() : 0;
    controlUser = `uid ${controlUid} (uid 65534 cannot read ${PROJECT_ROOT})`;
  }

  const helperSocket = path.join(runDir, 'helper.sock');
  const controlDir = path.join(runDir, 'control');
  fs.mkdirSync(controlDir, { recursive: true });
  fs.chownSync(controlDir, controlUid, controlUid);
  const agentSocket = path.join(controlDir, 'agent.sock');
  const helperLog = path.join(runDir, 'helper.log');
  const controlLog = path.join(runDir, 'control.log');
  // Never take over a run directory in use: a second helper would unlink the first one's socket.
  for (const sock of [agentSocket, helperSocket]) {
    if (await unixSocketServing(sock)) throw new Error(`another agent is serving ${sock} (run directory ${runDir}); stop it first, or give another --run-dir`);
  }
  if (opts.freshLogs) for (const f of [helperLog, controlLog]) fs.rmSync(f, { force: true });

  /** Start a helper; wait for its socket unless `wait` is false (`together`: control waits for it). */
  const spawnHelper = async (wait = true): Promise<ChildProcess> => {
    fs.rmSync(helperSocket, { force: true }); // a killed helper's socket file stays behind
    const helperOut = fs.openSync(helperLog, 'a');
    const child = spawn(
      process.execPath,
      [path.join(PROJECT_ROOT, 'bin', 'kata-agent-helper'), '--socket', helperSocket, '--control-uid', String(controlUid),
        '--state-dir', path.join(runDir, 'state'), '--log-level', logLevel, ...(opts.helperArgs ?? [])],
      { stdio: ['ignore', helperOut, helperOut], env: agentEnv() },
    );
    fs.closeSync(helperOut);
    opts.onSpawn?.(child);
    if (wait) await waitForPath(helperSocket, child, 'kata-agent-helper', helperLog, 20_000);
    return child;
  };
  let helper = await spawnHelper(!opts.together);

  const debugUrl = opts.debugAddr !== undefined || opts.debug === false ? '' : `http://127.0.0.1:${await freePort()}`;
  const debugAddr = opts.debugAddr ?? debugUrl.replace('http://', '');
  const spawnControl = async (): Promise<ChildProcess> => {
    const controlOut = fs.openSync(controlLog, 'a');
    fs.fchownSync(controlOut, controlUid, controlUid);
    const announced = countInLog(controlLog, '"msg":"announce"');
    const child = spawn(process.execPath, [path.join(PROJECT_ROOT, 'bin', 'kata-agent'), ...(opts.controlArgs ?? []),
      '--server-address', `unix://${agentSocket}`, '--helper-socket', helperSocket, '--debug-addr', debugAddr, '--log-level', logLevel], {
      stdio: ['ignore', controlOut, controlOut],
      uid: controlUid,
      gid: controlUid,
      env: controlEnv(),
    });
    fs.closeSync(controlOut);
    opts.onSpawn?.(child);
    const deadline = Date.now() + 20_000;
    await waitForPath(agentSocket, child, 'kata-agent', controlLog, 20_000);
    while (countInLog(controlLog, '"msg":"announce"') <= announced) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`kata-agent exited (${child.exitCode ?? child.signalCode}) before it was ready; log: ${controlLog}\n${tail(controlLog)}`);
      if (Date.now() > deadline) throw new Error(`kata-agent was not ready within 20000 ms; log: ${controlLog}\n${tail(controlLog)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return child;
  };
  let control: ChildProcess;
  try {
    control = await spawnControl();
  } catch (err) {
    helper.kill('SIGKILL');
    throw err;
  }

  return {
    address: `unix://${agentSocket}`,
    debugUrl,
    debugAddr,
    runDir,
    helperLog,
    controlLog,
    controlUser,
    get helper() {
      return helper;
    },
    get control() {
      return control;
    },
    async restartHelper(signal: NodeJS.Signals = 'SIGKILL') {
      const controlExited = control.exitCode !== null || control.signalCode !== null ? Promise.resolve() : new Promise((r) => control.once('exit', r));
      if (helper.exitCode === null && helper.signalCode === null) {
        const exited = new Promise((r) => helper.once('exit', r));
        helper.kill(signal);
        await exited;
      }
      await controlExited; // control exits on its own once the helper is gone
      helper = await spawnHelper();
      control = await spawnControl();
    },
    async restartControl(signal: NodeJS.Signals = 'SIGKILL') {
      if (control.exitCode === null && control.signalCode === null) {
        const exited = new Promise((r) => control.once('exit', r));
        control.kill(signal);
        await exited;
      }
      control = await spawnControl();
    },
    async stop(timeoutMs = 10_000) {
      if (control.exitCode === null && control.signalCode === null) control.kill('SIGTERM');
      const controlCode = await waitExit(control, timeoutMs);
      if (helper.exitCode === null && helper.signalCode === null) helper.kill('SIGTERM');
      const helperCode = await waitExit(helper, timeoutMs);
      return { control: controlCode, helper: helperCode };
    },
  };
}

/**
 * Docker's (and containerd's) default capability set for a container (moby
 * oci/caps/defaults.go): what busyboxConfig gives every set but inheritable and ambient.
 */
export const DEFAULT_CAPABILITIES: readonly string[] = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW', 'CAP_SETGID',
  'CAP_SETUID', 'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE',
];

/** OCI process.capabilities (config.md#linux-process), lower camel-case as in config.json. */
export interface OciCapabilities {
  bounding?: string[];
  effective?: string[];
  inheritable?: string[];
  permitted?: string[];
  ambient?: string[];
}

/** Optional parts of {@link busyboxConfig}. */
export interface BusyboxExtra {
  hostname?: string;
  terminal?: boolean;
  cwd?: string;
  env?: string[];
  namespaces?: { type: string; path?: string }[];
  /** process.user (default uid 0, gid 0). */
  user?: { uid: number; gid: number; additionalGids?: number[] };
  /** process.noNewPrivileges (default true). */
  noNewPrivileges?: boolean;
  /**
   * process.capabilities: a list = that list in bounding, effective and permitted (inheritable
   * and ambient empty, as containerd); an object = as given; null = no capabilities object.
   * Default {@link DEFAULT_CAPABILITIES}.
   */
  capabilities?: string[] | OciCapabilities | null;
  /** process.oomScoreAdj (default none). */
  oomScoreAdj?: number;
  /** linux.resources (config-linux.md#control-groups), as in config.json. */
  resources?: Record<string, unknown>;
  /** linux.seccomp (config-linux.md#seccomp), as in config.json. */
  seccomp?: Record<string, unknown>;
  /** process.rlimits (config.md#posix-process), e.g. [{type: 'RLIMIT_NOFILE', soft: 1024, hard: 4096}]. */
  rlimits?: { type: string; soft: number; hard: number }[];
  /** linux.sysctl (config-linux.md#sysctl). */
  sysctl?: Record<string, string>;
}

/**
 * A minimal OCI runtime-spec config (config.md) for a busybox container on `rootfs` running
 * `args`: new mount/uts/ipc namespaces (Kata adds the pid namespace), the standard mounts,
 * Docker's default capabilities ({@link DEFAULT_CAPABILITIES}), masked and read-only paths.
 * The shape is runc's `config.json`; kata-agent-ctl's ociJsonToSpec turns it into grpc.Spec.
 */
export function busyboxConfig(rootfs: string, args: string[], extra: BusyboxExtra = {}): Record<string, unknown> {
  const caps = extra.capabilities === undefined ? [...DEFAULT_CAPABILITIES] : extra.capabilities;
  const capabilities =
    caps === null
      ? undefined
      : Array.isArray(caps)
        ? { bounding: [...caps], effective: [...caps], permitted: [...caps], inheritable: [], ambient: [] }
        : caps;
  const linux: Record<string, unknown> = {
    namespaces: extra.namespaces ?? [{ type: 'mount' }, { type: 'uts' }, { type: 'ipc' }],
    maskedPaths: ['/proc/kcore', '/proc/keys', '/proc/timer_list', '/sys/firmware'],
    readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
  };
  if (extra.resources) linux.resources = extra.resources;
  if (extra.seccomp) linux.seccomp = extra.seccomp;
  if (extra.sysctl) linux.sysctl = extra.sysctl;
  return {
    ociVersion: '1.1.0',
    process: {
      terminal: extra.terminal ?? false,
      user: extra.user ?? { uid: 0, gid: 0 },
      args,
      env: extra.env ?? ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'TERM=xterm'],
      cwd: extra.cwd ?? '/',
      noNewPrivileges: extra.noNewPrivileges ?? true,
      ...(capabilities ? { capabilities } : {}),
      ...(extra.oomScoreAdj !== undefined ? { oomScoreAdj: extra.oomScoreAdj } : {}),
      ...(extra.rlimits ? { rlimits: extra.rlimits } : {}),
    },
    root: { path: rootfs, readonly: false },
    hostname: extra.hostname ?? '',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
      { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    ],
    linux,
  };
}
