/**
 * kata-agent-helper: the privileged helper process.
 *
 *   kata-agent-helper [--socket PATH] [--control-uid N] [--state-dir DIR] [--netns PATH] [--mock] [--log-level L]
 *
 * --socket       listening socket (default /run/kata-agent/helper.sock); the helper refuses to
 *                start (exit 1, "another helper is serving <path>") when a live helper serves it,
 *                and replaces only a stale socket file
 * --control-uid  the control plane's uid, the only non-root uid allowed to connect
 *                (default $KATA_AGENT_CONTROL_UID, else 0; with --mock, else the helper's own
 *                uid, since a mock helper runs as an ordinary user next to its client)
 * --state-dir    directory for the helper's runtime state, e.g. the sandbox namespace files in
 *                <dir>/sandbox-ns (default /run/kata-agent)
 * --kata-dir     base directory of storages (default $KATA_AGENT_KATA_DIR, else /run/kata-containers);
 *                every storage mount point must lie below it
 * --resolv-conf  the file CreateSandbox's dns is bind-mounted over (default /etc/resolv.conf)
 * --hotplug-timeout-ms  device wait bound (default $KATA_AGENT_HOTPLUG_TIMEOUT_MS, else 3000)
 * --netns        network namespace file (e.g. /run/netns/NAME) the network ops work on (default
 *                the helper's own: the guest's); tests point it at a namespace they created
 * --unified-cgroup-hierarchy  agent option unified_cgroup_hierarchy: container cgroups only in
 *                the cgroup2 mount, v1 hierarchies ignored (default $KATA_AGENT_UNIFIED_CGROUP_HIERARCHY
 *                "true"/"1", else false)
 * --no-device-programs  never use cgroup v2 device programs (BPF_PROG_TYPE_CGROUP_DEVICE), as on a
 *                kernel without CONFIG_CGROUP_BPF: device rules then need a v1 devices hierarchy
 *                (default $KATA_AGENT_NO_DEVICE_PROGRAMS "true"/"1", else false)
 * --debug-console  serve the debugConsole op (a root shell for control's debug console); off
 *                unless this, $KATA_AGENT_DEBUG_CONSOLE "true"/"1" or `agent.debug_console` on the
 *                kernel command line (control alone cannot turn it on)
 * --allow-host-namespaces  host-namespace mode for stand-alone OCI use (runc semantics; threat
 *                model in docs/ARCHITECTURE.md "Host namespaces"): a container may lack a mount or
 *                pid namespace (it shares the helper's) and may join any namespace file by path,
 *                a user namespace included; off unless this or $KATA_AGENT_ALLOW_HOST_NAMESPACES
 *                "true"/"1" (control alone cannot turn it on)
 * --mock         serve the unprivileged mock backend (helper/mock) instead of the real one
 * --log-level    trace|debug|info|warn|error|fatal (logrus names accepted; default
 *                $KATA_AGENT_LOG_LEVEL, else info)
 *
 * The real backend refuses to run unless the effective uid is 0. On SIGTERM/SIGINT the helper
 * stops accepting, kills every container (as a VM shutdown would), releases the sandbox
 * namespaces, removes its socket and exits 0.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { createLogger, errorLine, startupFailure } from '../shared/log';
import { DEFAULT_HELPER_SOCKET } from '../shared/protocol';
import { HelperServer } from './server';
import { createRealBackendParts } from './backend';
import type { ContainerBackend } from './ops/container';
import { createMockHelperBackend } from './mock/backend';
import { DEFAULT_KATA_DIR } from './ops/mount';
import type { HelperBackend } from './api';
import { entryKind } from '../shared/launch';

const USAGE =
  'usage: kata-agent-helper [--socket PATH] [--control-uid N] [--state-dir DIR] [--kata-dir DIR] [--resolv-conf FILE] [--hotplug-timeout-ms N] [--netns PATH] [--unified-cgroup-hierarchy] [--no-device-programs] [--debug-console] [--allow-host-namespaces] [--mock] [--log-level L]';

/** --help: the usage text goes to stdout, exit 0. */
class HelpRequested extends Error {}

/** Parsed command line. */
export interface HelperCliOptions {
  socket: string;
  controlUid: number;
  stateDir: string;
  kataDir: string;
  resolvConf?: string;
  hotplugTimeoutMs: number;
  mock: boolean;
  logLevel?: string;
  /** Network namespace file for the network ops ("" = the helper's own). */
  netns: string;
  /** Agent option unified_cgroup_hierarchy (helper/ops/cgroup.ts): only the cgroup2 mount is used. */
  unifiedCgroupHierarchy: boolean;
  /** Never attach cgroup v2 device programs (helper/ops/bpf-devices.ts). */
  noDevicePrograms: boolean;
  /**
   * Serve the `debugConsole` op (a root shell): `--debug-console`, KATA_AGENT_DEBUG_CONSOLE=1, or
   * `agent.debug_console` on the kernel command line. Off otherwise, whatever control asks.
   */
  debugConsole: boolean;
  /** Host-namespace mode: `--allow-host-namespaces` or KATA_AGENT_ALLOW_HOST_NAMESPACES=1. Off otherwise, whatever control asks. */
  allowHostNamespaces: boolean;
}

/** Parse argv (without node and script). Throws an Error with a usage message on bad input. */
export function parseHelperArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): HelperCliOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      socket: { type: 'string' },
      'control-uid': { type: 'string' },
      'state-dir': { type: 'string' },
      'kata-dir': { type: 'string' },
      'resolv-conf': { type: 'string' },
      'hotplug-timeout-ms': { type: 'string' },
      mock: { type: 'boolean' },
      netns: { type: 'string' },
      'unified-cgroup-hierarchy': { type: 'boolean' },
      'no-device-programs': { type: 'boolean' },
      'debug-console': { type: 'boolean' },
      'allow-host-namespaces': { type: 'boolean' },
      'log-level': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) throw new HelpRequested(USAGE);
  if (values.netns !== undefined && !values.netns.startsWith('/')) throw new Error(`--netns must be an absolute path (see --help)`);
  const ownUid = process.getuid ? String(process.getuid()) : '0';
  const uidText = values['control-uid'] ?? env.KATA_AGENT_CONTROL_UID ?? (values.mock ? ownUid : '0');
  if (!/^[0-9]+$/.test(uidText) || Number(uidText) > 2 ** 32 - 2) {
    throw new Error(`invalid control uid ${JSON.stringify(uidText)} (see --help)`);
  }
  const kataDir = values['kata-dir'] ?? env.KATA_AGENT_KATA_DIR ?? DEFAULT_KATA_DIR;
  if (!path.isAbsolute(kataDir) || path.resolve(kataDir) === '/') throw new Error(`invalid kata dir ${JSON.stringify(kataDir)} (see --help)`);
  const hotplugText = values['hotplug-timeout-ms'] ?? env.KATA_AGENT_HOTPLUG_TIMEOUT_MS ?? '3000';
  if (!/^[0-9]{1,7}$/.test(hotplugText) || Number(hotplugText) === 0) throw new Error(`invalid hotplug timeout ${JSON.stringify(hotplugText)} (see --help)`);
  return {
    kataDir: path.resolve(kataDir),
    resolvConf: values['resolv-conf'],
    hotplugTimeoutMs: Number(hotplugText),
    socket: values.socket ?? DEFAULT_HELPER_SOCKET,
    controlUid: Number(uidText),
    stateDir: values['state-dir'] ?? '/run/kata-agent',
    mock: values.mock ?? false,
    logLevel: values['log-level'],
    netns: values.netns ?? '',
    unifiedCgroupHierarchy:
      values['unified-cgroup-hierarchy'] ?? ['1', 'true'].includes((env.KATA_AGENT_UNIFIED_CGROUP_HIERARCHY ?? '').toLowerCase()),
    noDevicePrograms: values['no-device-programs'] ?? ['1', 'true'].includes((env.KATA_AGENT_NO_DEVICE_PROGRAMS ?? '').toLowerCase()),
    debugConsole: values['debug-console'] ?? (['1', 'true'].includes((env.KATA_AGENT_DEBUG_CONSOLE ?? '').toLowerCase()) || kernelAsksDebugConsole()),
    allowHostNamespaces: values['allow-host-namespaces'] ?? ['1', 'true'].includes((env.KATA_AGENT_ALLOW_HOST_NAMESPACES ?? '').toLowerCase()),
  };
}

/** Whether the kernel command line has the word `agent.debug_console` (upstream config.rs). */
export function kernelAsksDebugConsole(cmdline?: string): boolean {
  let text = cmdline;
  if (text === undefined) {
    try {
      text = fs.readFileSync('/proc/cmdline', 'utf8');
    } catch {
      return false;
    }
  }
  return /(^|\s)agent\.debug_console(\s|$)/.test(text);
}

/** Run the helper until SIGTERM/SIGINT. Returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  let opts: HelperCliOptions;
  try {
    opts = parseHelperArgs(argv);
  } catch (err) {
    if (err instanceof HelpRequested) {
      process.stdout.write(`${err.message}\n`);
      return 0;
    }
    process.stderr.write(`kata-agent-helper: ${errorLine(err)}\n`);
    return 2;
  }
  const log = createLogger('kata-agent-helper', opts.logLevel);
  if (!opts.mock && process.geteuid?.() !== 0) {
    process.stderr.write(
      'kata-agent-helper: the real helper must run as root (effective uid 0); use --mock for the unprivileged mock\n',
    );
    return 1;
  }
  let backend: HelperBackend;
  let containers: ContainerBackend | undefined;
  try {
    const parts = opts.mock
      ? createMockHelperBackend({ logger: log, kataDir: opts.kataDir, allowHostNamespaces: opts.allowHostNamespaces })
      : createRealBackendParts({
          logger: log,
          netns: opts.netns,
          sandboxNsDir: path.join(opts.stateDir, 'sandbox-ns'),
          kataDir: opts.kataDir,
          resolvConf: opts.resolvConf,
          hotplugTimeoutMs: opts.hotplugTimeoutMs,
          unifiedCgroupHierarchy: opts.unifiedCgroupHierarchy,
          stateDir: opts.stateDir,
          noDevicePrograms: opts.noDevicePrograms,
          debugConsole: opts.debugConsole,
          allowHostNamespaces: opts.allowHostNamespaces,
        });
    backend = parts.backend;
    containers = parts.containers;
  } catch (err) {
    startupFailure(log, 'kata-agent-helper', 'cannot set up the helper backend', err);
    return 1;
  }
  // A previous helper that died left its containers running and its mounts: end them first.
  await containers?.cleanLeftovers();
  const server = new HelperServer({ backend, controlUid: opts.controlUid, logger: log });
  try {
    if (!opts.mock) prepareControlDir(opts.stateDir, opts.controlUid);
    server.listen(opts.socket);
  } catch (err) {
    startupFailure(log, 'kata-agent-helper', `cannot listen on ${opts.socket}`, err, { socket: opts.socket });
    await backend.shutdown();
    return 1;
  }
  if (opts.allowHostNamespaces) log.warn('host-namespace mode (--allow-host-namespaces): containers may share or join the helper\'s namespaces');
  log.info({ socket: opts.socket, controlUid: opts.controlUid, mock: opts.mock, pid: process.pid, entry: entryKind() ?? null }, 'kata-agent-helper ready');
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, 'stopping: killing containers');
      server.close();
      backend
        .shutdown()
        .catch((err: unknown) => log.error({ err }, 'shutdown failed'))
        .finally(() => resolve(0));
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
}

/**
 * `<stateDir>/control`: the one directory of the helper's state tree the control plane may
 * write (mode 0700, owned by the control uid), for its own sockets such as the debug endpoint
 * (control/config.ts DEFAULT_DEBUG_ADDR). The rest of the state dir stays root's.
 */
export function prepareControlDir(stateDir: string, controlUid: number): string {
  const dir = path.join(stateDir, 'control');
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o755 });
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = fs.lstatSync(dir);
  if (!st.isDirectory()) throw new Error(`${dir} is not a directory`);
  fs.chownSync(dir, controlUid, controlUid);
  fs.chmodSync(dir, 0o700);
  return dir;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`kata-agent-helper: ${errorLine(err)}\n`);
      createLogger('kata-agent-helper').fatal({ err }, 'unexpected failure');
      process.exit(1);
    },
  );
}
