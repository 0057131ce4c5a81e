/**
 * The real (privileged) helper backend: the shared container model (helper/ops/container.ts)
 * with kata-init as the launcher (helper/ops/process.ts), plus the guest ops family
 * (helper/ops/sysfs.ts, copy-file.ts, guest.ts) over the native addon. Runs as root.
 */
import * as path from 'node:path';
import { JournalingMounter, LeftoverJournal } from './ops/leftovers';
import { silentLogger, type Logger } from '../shared/log';
import { composeBackend, type HelperBackend } from './api';
import { ContainerBackend } from './ops/container';
import { CgroupManager, detectCgroupLayout } from './ops/cgroup';
import { nativeDevicePrograms } from './ops/bpf-devices';
import { loadNative } from '../shared/native';
import { CopyFileOps } from './ops/copy-file';
import { DebugConsoleOps } from './ops/debug-console';
import { GuestOps, guestFamily, nativeGuestSystem, type GuestPaths } from './ops/guest';
import { createNetlinkDriver } from './ops/netlink';
import { NetworkBackend } from './ops/network';
import { DEFAULT_SANDBOX_NS_DIR, KataInitLauncher } from './ops/process';
import { ProcessRegistry } from './ops/registry';
import { DeviceWaiter } from './ops/device';
import { DEFAULT_KATA_DIR, KernelMounter } from './ops/mount';
import { StorageBackend, kernelModprobe } from './ops/storage';
import { KernelUeventListener } from './ops/uevent';
import { SysfsOps } from './ops/sysfs';

export interface RealBackendOptions {
  logger?: Logger;
  /** Directory of the sandbox's persistent namespace files (default /run/kata-agent/sandbox-ns). */
  sandboxNsDir?: string;
  /** kata-init executable (default build/Release/kata-init). */
  kataInit?: string;
  /** Base directory of storages (default /run/kata-containers). */
  kataDir?: string;
  /** File the sandbox DNS is bound over (default /etc/resolv.conf). */
  resolvConf?: string;
  /** Device wait bound in ms (default 3000, upstream agent.hotplug_timeout). */
  hotplugTimeoutMs?: number;
  /** Where the guest ops act (default shared/protocol.ts GUEST_PATHS). */
  guest?: GuestPaths;
  /** Network namespace file the network ops work on ("" or absent = the helper's own). */
  netns?: string;
  /** Agent option unified_cgroup_hierarchy: use only the cgroup2 mount, ignore v1 hierarchies. */
  unifiedCgroupHierarchy?: boolean;
  /**
   * The helper's state directory: containers are journaled in `<stateDir>/containers` and guest
   * mounts in `<stateDir>/mounts` so that the next helper kills and detaches what a crashed one
   * left (helper/ops/leftovers.ts). Absent: no journal.
   */
  stateDir?: string;
  /** Never use cgroup v2 device programs (helper --no-device-programs). */
  noDevicePrograms?: boolean;
  /** Serve the debugConsole op (helper --debug-console); default off. */
  debugConsole?: boolean;
  /** Host-namespace mode (helper --allow-host-namespaces, docs/ARCHITECTURE.md "Host namespaces"); default off. */
  allowHostNamespaces?: boolean;
}

/** The real backend: the composed backend the server dispatches to, and its container model. */
export interface RealBackend {
  backend: HelperBackend;
  containers: ContainerBackend;
}

/**
 * Create the real backend. Makes the calling process a child subreaper (container processes
 * are re-parented to it when kata-init's intermediate exits) and starts the reaper.
 * Throws the errno error when prctl fails.
 */
export function createRealBackend(opts: RealBackendOptions = {}): HelperBackend {
  return createRealBackendParts(opts).backend;
}

/** {@link createRealBackend}, also returning the container model (tests). */
export function createRealBackendParts(opts: RealBackendOptions = {}): RealBackend {
  const logger = opts.logger ?? silentLogger();
  const registry = new ProcessRegistry({ logger, subreaper: true });
  const launcher = new KataInitLauncher({
    registry,
    logger,
    kataInit: opts.kataInit,
    sandboxNsDir: opts.sandboxNsDir ?? DEFAULT_SANDBOX_NS_DIR,
  });
  const uevents = new KernelUeventListener(logger);
  try {
    uevents.start();
  } catch (err) {
    logger.warn({ err }, 'no kernel uevent socket: device waits see only what sysfs already has');
  }
  const devices = new DeviceWaiter({ uevents, timeoutMs: opts.hotplugTimeoutMs });
  // Every guest mount is journaled so that the next helper undoes them after a crash.
  const journal = opts.stateDir ? new LeftoverJournal(opts.stateDir, logger) : undefined;
  const storage = new StorageBackend({
    mounter: journal ? new JournalingMounter(new KernelMounter(), journal) : new KernelMounter(),
    devices,
    kataDir: opts.kataDir ?? DEFAULT_KATA_DIR,
    resolvConf: opts.resolvConf,
    modprobe: kernelModprobe(registry.reaper),
    logger,
  });
  const layout = detectCgroupLayout(opts.unifiedCgroupHierarchy === true);
  logger.info({ cgroups: layout }, 'cgroup hierarchies detected');
  const cgroups = new CgroupManager({ layout, logger, devicePrograms: opts.noDevicePrograms === true ? undefined : nativeDevicePrograms(loadNative(), logger) });
  const containers = new ContainerBackend(launcher, { logger, registry, storage, cgroups, journal, allowHostNamespaces: opts.allowHostNamespaces === true });
  const g = opts.guest ?? {};
  const guest = guestFamily(
    new SysfsOps({ root: g.sysfsRoot, logger }),
    new CopyFileOps({ roots: g.copyRoots }),
    // AddSwap waits for its disk through the storages' device waiter (same uevents, same timeout).
    new GuestOps({ system: nativeGuestSystem(registry.reaper), devices, volumeRoots: g.volumeRoots, logger }),
    new DebugConsoleOps({ native: loadNative(), reaper: registry.reaper, logger, enabled: opts.debugConsole === true }),
  );
  // UpdateInterface with a pciPath waits for the NIC through the same device waiter (hotplug timeout).
  const network = new NetworkBackend(createNetlinkDriver(opts.netns ?? '', registry.reaper), { logger, waitNic: (p) => devices.netPci(p) });
  const composed = composeBackend(containers, guest, network);
  // The uevent socket is the backend's own: closed with it, so nothing keeps the loop alive.
  const backend: HelperBackend = {
    ...composed,
    shutdown: async () => {
      try {
        await composed.shutdown();
      } finally {
        uevents.close();
      }
    },
  };
  return { backend, containers };
}
