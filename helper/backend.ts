/**
 * The real (privileged) helper backend: the shared container model (helper/ops/container.ts)
 * with kata-init as the launcher (helper/ops/process.ts). Runs as root.
 */
import { silentLogger, type Logger } from '../shared/log';
import { ContainerBackend } from './ops/container';
import { DEFAULT_SANDBOX_NS_DIR, KataInitLauncher } from './ops/process';
import { ProcessRegistry } from './ops/registry';
import { DeviceWaiter } from './ops/device';
import { DEFAULT_KATA_DIR, KernelMounter } from './ops/mount';
import { StorageBackend, kernelModprobe } from './ops/storage';
import { KernelUeventListener } from './ops/uevent';

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
}

/**
 * Create the real backend. Makes the calling process a child subreaper (container processes
 * are re-parented to it when kata-init's intermediate exits) and starts the reaper.
 * Throws the errno error when prctl fails.
 */
export function createRealBackend(opts: RealBackendOptions = {}): ContainerBackend {
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
  const storage = new StorageBackend({
    mounter: new KernelMounter(),
    devices: new DeviceWaiter({ uevents, timeoutMs: opts.hotplugTimeoutMs }),
    kataDir: opts.kataDir ?? DEFAULT_KATA_DIR,
    resolvConf: opts.resolvConf,
    modprobe: kernelModprobe(registry.reaper),
    logger,
  });
  return new ContainerBackend(launcher, { logger, registry, storage });
}
