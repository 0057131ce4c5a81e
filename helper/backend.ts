/**
 * The real (privileged) helper backend: the shared container model (helper/ops/container.ts)
 * with kata-init as the launcher (helper/ops/process.ts). Runs as root.
 */
import { silentLogger, type Logger } from '../shared/log';
import { ContainerBackend } from './ops/container';
import { DEFAULT_SANDBOX_NS_DIR, KataInitLauncher } from './ops/process';
import { ProcessRegistry } from './ops/registry';

export interface RealBackendOptions {
  logger?: Logger;
  /** Directory of the sandbox's persistent namespace files (default /run/kata-agent/sandbox-ns). */
  sandboxNsDir?: string;
  /** kata-init executable (default build/Release/kata-init). */
  kataInit?: string;
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
