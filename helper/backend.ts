/**
 * The real (privileged) helper backend: the shared container model (helper/ops/container.ts)
 * with kata-init as the launcher (helper/ops/process.ts). Runs as root.
 */
import { silentLogger, type Logger } from '../shared/log';
import { composeBackend, type HelperBackend } from './api';
import { ContainerBackend } from './ops/container';
import { createNetlinkDriver } from './ops/netlink';
import { NetworkBackend } from './ops/network';
import { DEFAULT_SANDBOX_NS_DIR, KataInitLauncher } from './ops/process';
import { ProcessRegistry } from './ops/registry';

export interface RealBackendOptions {
  logger?: Logger;
  /** Directory of the sandbox's persistent namespace files (default /run/kata-agent/sandbox-ns). */
  sandboxNsDir?: string;
  /** kata-init executable (default build/Release/kata-init). */
  kataInit?: string;
  /** Network namespace file the network ops work on ("" or absent = the helper's own). */
  netns?: string;
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
  return new ContainerBackend(launcher, { logger, registry });
}

/**
 * The real backend with its network half: container ops by {@link createRealBackend}, network
 * ops (helper/ops/network.ts) through libnl in the namespace `opts.netns` (default the helper's).
 */
export function createRealHelperBackend(opts: RealBackendOptions = {}): HelperBackend {
  const containers = createRealBackend(opts);
  return composeBackend(containers, new NetworkBackend(createNetlinkDriver(opts.netns ?? ''), { logger: opts.logger }));
}
