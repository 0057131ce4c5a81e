/**
 * Init mode: `kata-agent` started as PID 1 of a guest (upstream agent main.rs init_agent_as_init
 * and the `init_mode` paths: mount the early file systems, reap orphans, power off at the end).
 *
 * As PID 1 (root), the agent entry point:
 * 1. mounts proc, sysfs, devtmpfs, devpts, /dev/shm, /run and /tmp (tmpfs) and the cgroup v2
 *    hierarchy on /sys/fs/cgroup, each unless something is mounted there already;
 * 2. gives the serial port of a `serial://` server address to the control user (the port is
 *    root's 0600 device node otherwise);
 * 3. starts the helper (root; with the configuration's hotplug timeout, {@link helperConfigArgs})
 *    and the control plane (uid/gid {@link CONTROL_UID} when it can read the project, else root —
 *    logged) with the same arguments PID 1 got, both on unix sockets in
 *    {@link INIT_RUN_DIR}, output on PID 1's console;
 * 4. reaps every child (orphans re-parented to PID 1 included) on SIGCHLD and every second;
 * 5. restarts a control plane that died (killed, crashed, or exited non-zero other than a
 *    configuration error) while the helper lives: the new one adopts the helper's sandbox,
 *    containers, processes and unread output (docs/ARCHITECTURE.md "Restart and adoption"), at
 *    most {@link CONTROL_RESTART_BURST} times in {@link CONTROL_RESTART_WINDOW_MS}
 *    ({@link controlExitAction});
 * 6. when the control plane exits 0 (after DestroySandbox or a SIGTERM), exits 2 (configuration
 *    error), dies too often, or the helper exits (its containers died with it), stops the other
 *    one (SIGTERM, SIGKILL after {@link STOP_GRACE_MS}), syncs and powers the guest off with
 *    reboot(RB_POWER_OFF) (the addon's powerOff; busybox `poweroff -f` only if that fails). A
 *    fatal error (early mounts, a process that cannot start) powers off the same way. PID 1
 *    never returns: a PID 1 exit panics the kernel.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createLogger, type Logger } from '../shared/log';
import { loadConfig } from './config';
import { loadNative, type NativeAddon } from '../shared/native';
import { parseAddress } from './ttrpc/address';
import { resolveSerialPort } from './ttrpc/serial';

/** Where init mode puts the helper socket, the state and the control plane's socket dir. */
export const INIT_RUN_DIR = '/run/kata-agent';
/** The unprivileged user of the control plane ("nobody"). */
export const CONTROL_UID = 65534;
/** The virtio-serial port name of the debug console (started with `agent.debug_console` on the kernel command line). */
export const DEBUG_CONSOLE_PORT = 'agent.debug.0';
/** How long a process may take to stop after SIGTERM, in ms, before SIGKILL. */
export const STOP_GRACE_MS = 5000;
/** At most this many control-plane restarts within {@link CONTROL_RESTART_WINDOW_MS}. */
export const CONTROL_RESTART_BURST = 5;
export const CONTROL_RESTART_WINDOW_MS = 60_000;
/** control/main.ts's exit status for a configuration it cannot use: restarting would not help. */
export const CONTROL_EXIT_CONFIG = 2;

/**
 * What PID 1 does when the control plane ended `how` ("exit N" or "signal SIG"): 'stop' (power
 * off: exit 0 after DestroySandbox or SIGTERM, exit 2 for a bad configuration, or more than
 * {@link CONTROL_RESTART_BURST} restarts in the last {@link CONTROL_RESTART_WINDOW_MS} before
 * `now`), else 'restart'. `restarts` holds the times (ms) of earlier restarts; it is pruned.
 */
export function controlExitAction(how: string, restarts: number[], now: number): 'restart' | 'stop' {
  if (how === 'exit 0' || how === `exit ${CONTROL_EXIT_CONFIG}`) return 'stop';
  while (restarts.length > 0 && restarts[0] <= now - CONTROL_RESTART_WINDOW_MS) restarts.shift();
  return restarts.length >= CONTROL_RESTART_BURST ? 'stop' : 'restart';
}

const MS_NOSUID = 0x2;
const MS_NODEV = 0x4;
const MS_NOEXEC = 0x8;

/** One early mount: mount(source, target, fstype, flags, data). */
export interface EarlyMount {
  source: string;
  target: string;
  fstype: string;
  flags: number;
  data: string;
}

/** mount(2) flags for binds. */
const MS_BIND = 0x1000;
const MS_REC = 0x4000;
/** The project directory this agent runs from (dist/control/init.js → two levels up). */
const AGENT_ROOT = path.resolve(__dirname, '..', '..');

/** The early mounts of init mode, in order (upstream init_agent_as_init's list plus cgroup2, /run and /tmp). */
export const EARLY_MOUNTS: readonly EarlyMount[] = [
  { source: 'proc', target: '/proc', fstype: 'proc', flags: MS_NOSUID | MS_NODEV | MS_NOEXEC, data: '' },
  { source: 'sysfs', target: '/sys', fstype: 'sysfs', flags: MS_NOSUID | MS_NODEV | MS_NOEXEC, data: '' },
  { source: 'dev', target: '/dev', fstype: 'devtmpfs', flags: MS_NOSUID, data: 'mode=0755' },
  { source: 'devpts', target: '/dev/pts', fstype: 'devpts', flags: MS_NOSUID | MS_NOEXEC, data: 'gid=5,mode=0620,ptmxmode=0666' },
  { source: 'shm', target: '/dev/shm', fstype: 'tmpfs', flags: MS_NOSUID | MS_NODEV, data: 'mode=1777' },
  { source: 'tmpfs', target: '/run', fstype: 'tmpfs', flags: MS_NOSUID | MS_NODEV, data: 'mode=0755' },
  { source: 'tmpfs', target: '/tmp', fstype: 'tmpfs', flags: MS_NOSUID | MS_NODEV, data: 'mode=1777' },
  { source: 'cgroup2', target: '/sys/fs/cgroup', fstype: 'cgroup2', flags: MS_NOSUID | MS_NODEV | MS_NOEXEC, data: '' },
];

/** Mount points listed in `mountinfo` text (field 5 of /proc/self/mountinfo). */
export function mountPoints(mountinfo: string): Set<string> {
  const out = new Set<string>();
  for (const line of mountinfo.split('\n')) {
    const fields = line.split(' ');
    if (fields.length > 4) out.add(fields[4].replace(/\\040/g, ' '));
  }
  return out;
}

/** Do the {@link EARLY_MOUNTS} not mounted yet; returns the targets mounted. Errors of mount(2) thrown. */
export function earlyMounts(native: NativeAddon, log: Logger): string[] {
  const done: string[] = [];
  for (const m of EARLY_MOUNTS) {
    let mounted = new Set<string>();
    try {
      mounted = mountPoints(fs.readFileSync('/proc/self/mountinfo', 'utf8'));
    } catch {
      // proc not mounted yet
    }
    if (mounted.has(m.target)) continue;
    fs.mkdirSync(m.target, { recursive: true });
    // A tmpfs over a directory that holds the agent itself (a checkout under /tmp shared into
    // the guest) would hide the programs init is about to start: keep the agent's tree visible
    // by binding it aside first and back into the new tmpfs after.
    const hidden = AGENT_ROOT === m.target || AGENT_ROOT.startsWith(`${m.target}/`);
    const hold = `/dev/shm/.kata-agent-root`;
    if (hidden && m.target !== '/dev/shm') {
      fs.mkdirSync(hold, { recursive: true });
      native.mount(AGENT_ROOT, hold, '', MS_BIND | MS_REC, '');
    }
    native.mount(m.source, m.target, m.fstype, m.flags, m.data);
    if (hidden && m.target !== '/dev/shm') {
      fs.mkdirSync(AGENT_ROOT, { recursive: true });
      native.mount(hold, AGENT_ROOT, '', MS_BIND | MS_REC, '');
      log.info({ target: m.target, agentRoot: AGENT_ROOT }, 'init: the agent tree bound back over the new mount');
    }
    done.push(m.target);
  }
  log.info({ mounted: done }, 'init: early mounts done');
  return done;
}

/** The value of `--name VALUE` / `--name=VALUE` in argv (last wins), or undefined. */
function argValue(argv: readonly string[], name: string): string | undefined {
  let value: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === name && i + 1 < argv.length) value = argv[++i];
    else if (argv[i].startsWith(`${name}=`)) value = argv[i].slice(name.length + 1);
  }
  return value;
}

/** Whether `uid` (as "other") can reach and read `file`: every parent dir o+x, the file o+r. */
function othersCanRead(file: string): boolean {
  try {
    if ((fs.statSync(file).mode & 0o004) === 0) return false;
    for (let dir = path.dirname(file); ; dir = path.dirname(dir)) {
      if ((fs.statSync(dir).mode & 0o001) === 0) return false;
      if (dir === '/') return true;
    }
  } catch {
    return false;
  }
}

/**
 * The debug console (upstream's `agent.debug_console`, there on the console or a vsock port):
 * when the kernel command line has `agent.debug_console` and a virtio-serial port named
 * {@link DEBUG_CONSOLE_PORT} exists, a root `/bin/sh` reads commands from that port and writes
 * to it, restarted whenever it exits (it gets EOF while no host client is connected). PID 1
 * keeps the port open, so bytes the host sends between two shells are not discarded.
 * `watchers` learns each shell's pid (PID 1 reaps it).
 */
function startDebugConsole(log: Logger, env: NodeJS.ProcessEnv, watchers: Map<number, (how: string) => void>): void {
  let cmdline = '';
  try {
    cmdline = fs.readFileSync('/proc/cmdline', 'utf8');
  } catch {
    return;
  }
  if (!/(^|\s)agent\.debug_console(\s|$)/.test(cmdline)) return;
  let fd: number;
  try {
    fd = fs.openSync(resolveSerialPort(DEBUG_CONSOLE_PORT), fs.constants.O_RDWR | fs.constants.O_NOCTTY);
  } catch (err) {
    log.warn({ err, port: DEBUG_CONSOLE_PORT }, 'init: no debug console port');
    return;
  }
  const run = (): void => {
    const startedAt = Date.now();
    const sh = spawn('/bin/sh', [], { stdio: [fd, fd, fd], env, cwd: '/' });
    if (sh.pid === undefined) return;
    // A shell that ends at once had EOF (no host client): wait longer before the next one.
    const again = (): void => void setTimeout(run, Date.now() - startedAt < 1000 ? 1000 : 50);
    watchers.set(sh.pid, again);
    sh.on('exit', () => {
      if (sh.pid !== undefined && watchers.delete(sh.pid)) again();
    });
  };
  log.info({ port: DEBUG_CONSOLE_PORT }, 'init: debug console enabled');
  run();
}

/**
 * The helper's `--hotplug-timeout-ms` from the agent's configuration (agent.hotplug_timeout on
 * the kernel command line, or the --config file): the helper does the device waits, and in
 * init mode it is PID 1's child, not control's. Nothing (the helper's 3 s default) when the
 * configuration does not load: control, reading the same, says why and exits.
 */
export function helperConfigArgs(argv: readonly string[], env: NodeJS.ProcessEnv, log: Logger): string[] {
  try {
    const loaded = loadConfig(argv, env);
    if (!loaded.help) return ['--hotplug-timeout-ms', String(loaded.config.hotplugTimeoutMs)];
  } catch (err) {
    log.warn({ err }, 'init: the agent configuration does not load; the helper keeps its defaults');
  }
  return [];
}

/** Set to "1" in the control plane's environment by init mode: the agent is the guest's PID 1 (GetGuestDetails init_daemon). */
export const INIT_MODE_ENV = 'KATA_AGENT_INIT_MODE';

/**
 * Power the guest off: the addon's powerOff (sync(2), then reboot(RB_POWER_OFF); refused unless
 * PID 1). Should that fail (logged), busybox `poweroff -f` makes the same call. Never returns
 * normally when either works; logs fatal when both failed.
 */
function powerOff(native: NativeAddon, log: Logger, why: string): void {
  log.info({ why }, 'init: powering off');
  try {
    native.powerOff();
  } catch (err) {
    log.error({ err }, 'init: reboot(RB_POWER_OFF) failed; trying busybox poweroff -f');
  }
  const r = spawnSync('/bin/busybox', ['poweroff', '-f'], { stdio: 'inherit', timeout: 10_000 });
  log.fatal({ status: r.status, error: r.error?.message }, 'init: poweroff failed');
}

/**
 * Run as PID 1 (see the module comment). `argv` are the agent's arguments (passed on to the
 * control plane). Returns only when not PID 1 (exit code 2, nothing done).
 */
export async function runInit(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const log = createLogger('kata-agent-init', argValue(argv, '--log-level') ?? env.KATA_AGENT_LOG_LEVEL ?? 'info');
  if (process.pid !== 1) {
    log.error({ pid: process.pid }, 'init mode needs PID 1');
    return 2;
  }
  const native = loadNative();
  const started = Date.now();
  try {
    earlyMounts(native, log);
  } catch (err) {
    log.fatal({ err }, 'init: early mounts failed');
    powerOff(native, log, 'early mounts failed');
    return 1;
  }

  const root = path.resolve(__dirname, '..', '..');
  const mainJs = path.join(root, 'dist', 'control', 'main.js');
  const controlUid = othersCanRead(mainJs) ? CONTROL_UID : 0;
  // The bin/ scripts load each process from its bundle when fresh (shared/launch.ts).
  const controlEntry = path.join(root, 'bin', 'kata-agent');
  if (controlUid === 0) log.warn({ file: mainJs }, 'init: nobody cannot read the agent; the control plane runs as root');

  const serverAddr = argValue(argv, '--server-address') ?? env.KATA_AGENT_SERVER_ADDR;
  if (serverAddr) {
    try {
      const addr = parseAddress(serverAddr);
      if (addr.kind === 'serial') {
        const device = resolveSerialPort(addr.path);
        fs.chownSync(device, controlUid, controlUid);
        fs.chmodSync(device, 0o600);
      }
    } catch (err) {
      log.error({ err, address: serverAddr }, 'init: cannot prepare the server address (the control plane will say why)');
    }
  }

  // process.execPath was resolved before /proc existed (it may name anything): ask /proc now.
  let nodePath = process.argv[0];
  try {
    nodePath = fs.readlinkSync('/proc/self/exe');
  } catch {
    // keep argv[0]
  }
  const helperSocket = path.join(INIT_RUN_DIR, 'helper.sock');
  fs.mkdirSync(INIT_RUN_DIR, { recursive: true, mode: 0o755 });
  // The control plane's own directory (its default debug socket lives there).
  fs.mkdirSync(path.join(INIT_RUN_DIR, 'control'), { recursive: true, mode: 0o700 });
  fs.chownSync(path.join(INIT_RUN_DIR, 'control'), controlUid, controlUid);
  const nodeEnv = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' };
  const helper: ChildProcess = spawn(
    nodePath,
    [path.join(root, 'bin', 'kata-agent-helper'), '--socket', helperSocket, '--control-uid', String(controlUid),
      '--state-dir', path.join(INIT_RUN_DIR, 'state'), '--log-level', argValue(argv, '--log-level') ?? 'info',
      ...helperConfigArgs(argv, env, log)],
    { stdio: ['ignore', 'inherit', 'inherit'], env: nodeEnv },
  );
  // PID 1 serves agent.debug_console itself on its virtio-serial port (startDebugConsole): the
  // control plane's console (control/debug-console.ts) runs only for a vsock port.
  let cmdline = '';
  try {
    cmdline = fs.readFileSync('/proc/cmdline', 'utf8');
  } catch {
    // no /proc/cmdline: no console either way
  }
  const controlEnv = /(^|\s)agent\.debug_console_vport=/.test(cmdline) ? nodeEnv : { ...nodeEnv, KATA_AGENT_DEBUG_CONSOLE_ADDR: '' };
  const spawnControl = (): ChildProcess =>
    spawn(nodePath, [controlEntry, ...argv, '--helper-socket', helperSocket], {
      stdio: ['ignore', 'inherit', 'inherit'],
      uid: controlUid,
      gid: controlUid,
      // GetGuestDetails' init_daemon: the agent as a whole is PID 1 (upstream: getpid() == 1).
      env: { ...controlEnv, [INIT_MODE_ENV]: '1' },
    });
  let control = spawnControl();
  log.info({ helperPid: helper.pid, controlPid: control.pid, controlUid, ms: Date.now() - started }, 'init: helper and control plane started');

  return new Promise<number>(() => {
    let ending = false;
    const exited = new Map<number, string>();
    const watchers = new Map<number, (how: string) => void>();
    const controlRestarts: number[] = [];
    const end = (who: string, how: string): void => {
      if (ending) return;
      ending = true;
      const fatal = !(who === 'control' && how === 'exit 0');
      (fatal ? log.fatal.bind(log) : log.info.bind(log))({ who, how }, 'init: stopping the guest');
      const others = [control, helper].filter((c) => c.pid !== undefined && !exited.has(c.pid));
      for (const c of others) c.kill('SIGTERM');
      const deadline = Date.now() + STOP_GRACE_MS;
      const wait = (): void => {
        sweep();
        const left = others.filter((c) => c.pid !== undefined && !exited.has(c.pid));
        if (left.length === 0 || Date.now() > deadline) {
          for (const c of left) c.kill('SIGKILL');
          powerOff(native, log, fatal ? `${who} ${how}` : 'sandbox destroyed');
          return;
        }
        setTimeout(wait, 50);
      };
      wait();
    };
    const onControlExit = (how: string): void => {
      if (ending) return;
      const helperAlive = helper.pid !== undefined && !exited.has(helper.pid);
      if (!helperAlive || controlExitAction(how, controlRestarts, Date.now()) === 'stop') {
        end('control', how);
        return;
      }
      controlRestarts.push(Date.now());
      log.error({ how, restarts: controlRestarts.length }, 'init: the control plane died: starting a new one (it adopts the running containers)');
      control = spawnControl();
      supervise(control);
    };
    const onExit = (pid: number, how: string): void => {
      if (exited.has(pid)) return;
      exited.set(pid, how);
      const watcher = watchers.get(pid);
      watchers.delete(pid);
      if (pid === control.pid) onControlExit(how);
      else if (pid === helper.pid) end('helper', how);
      else if (watcher) watcher(how);
      else log.debug({ pid, how }, 'init: reaped an orphan');
    };
    startDebugConsole(log, nodeEnv, watchers);
    const sweep = (): void => {
      let reaped;
      try {
        reaped = native.reap();
      } catch {
        return; // ECHILD: nothing to reap
      }
      for (const c of reaped) onExit(c.pid, c.exitCode !== null ? `exit ${c.exitCode}` : `signal ${c.signal}`);
    };
    // libuv may reap its own children first: take their exits from the 'exit' events too.
    const supervise = (c: ChildProcess): void => {
      c.on('exit', (code, signal) => {
        if (c.pid !== undefined) onExit(c.pid, code !== null ? `exit ${code}` : `signal ${signal}`);
      });
      c.on('error', (err) => {
        log.fatal({ err }, 'init: cannot start a process');
        end(c === helper ? 'helper' : 'control', 'spawn failed');
      });
    };
    supervise(helper);
    supervise(control);
    process.on('SIGCHLD', sweep);
    setInterval(sweep, 1000);
    // SIGTERM/SIGINT to PID 1 (e.g. ctrl-alt-del): stop the agent like a DestroySandbox.
    for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => control.kill('SIGTERM'));
  });
}
