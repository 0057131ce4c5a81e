/** createSandbox / destroySandbox and which namespace files a container may join. */
import * as fs from 'node:fs';
import { Code, CONTAINER_ID_RE, StatusError, type CreateSandboxArgs, type CreateSandboxResult, type DestroySandboxArgs, type DestroySandboxResult } from '../../../shared/protocol';
import type { BackendReply } from '../../api';
import { HOST_NAME_MAX, type KernelNamespace } from '../plan';
import { emptyGuestHooks, scanGuestHooks, validateGuestHookPath } from '../hooks';
import { checkArgs } from '../guest-args';
import type { ContainerContext } from './context';
import { TEARDOWN_TIMEOUT_MS, removeAll } from './remove';

const NS_PATH_RE = /^\/proc\/([0-9]+)\/ns\/([a-z]+)$/;
/** Named network namespaces, as `ip netns add` pins them (iproute2 convention). */
const NETNS_PATH_RE = /^\/(?:var\/)?run\/netns\/[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/;

/**
 * Create the sandbox's persistent ipc/uts namespaces (Kata sandbox.rs setup_shared_namespaces).
 * `sandboxId` may be empty (upstream accepts an empty CreateSandboxRequest.sandbox_id); a
 * non-empty one must be a valid container id (INVALID_ARGUMENT "invalid sandbox id ...").
 * A second call → ALREADY_EXISTS "sandbox ... already created", as control answers a second
 * CreateSandbox (upstream tolerates it; we refuse so that a confused control plane notices).
 */
export async function createSandbox(ctx: ContainerContext, rawArgs: CreateSandboxArgs): Promise<BackendReply<CreateSandboxResult>> {
  const args = checkArgs(rawArgs, 'createSandbox');
  const sandboxId = args.sandboxId ?? '';
  if (typeof sandboxId !== 'string' || (sandboxId !== '' && !CONTAINER_ID_RE.test(sandboxId))) {
    throw new StatusError(
      Code.INVALID_ARGUMENT,
      `invalid sandbox id ${JSON.stringify(sandboxId)} (empty, or 2 to 256 ASCII letters, digits, ".", "_" or "-" starting with a letter or digit)`,
    );
  }
  const hostname = args.hostname ?? '';
  if (typeof hostname !== 'string' || Buffer.byteLength(hostname) > HOST_NAME_MAX || hostname.includes('\0')) {
    throw new StatusError(Code.INVALID_ARGUMENT, `invalid sandbox hostname ${JSON.stringify(hostname)}`);
  }
  const guestHookPath = args.guestHookPath === undefined || args.guestHookPath === '' ? '' : validateGuestHookPath(args.guestHookPath);
  if (ctx.sandbox || ctx.sandboxBusy) {
    const which = ctx.sandbox ? JSON.stringify(ctx.sandbox.id) : '(being created)';
    throw new StatusError(Code.ALREADY_EXISTS, `sandbox ${which} already created`);
  }
  ctx.sandboxBusy = true;
  try {
    const namespaces = await ctx.launcher.createSandbox(sandboxId, hostname);
    // Device rules are enforced by a v1 devices hierarchy and/or a cgroup v2 device program.
    const deviceCgroup = ctx.cgroups?.enforcesDevices() === true;
    ctx.sandbox = { id: sandboxId, hostname, namespaces, deviceCgroup };
    // Upstream (rpc.rs create_sandbox, sandbox.rs add_hooks) reads the hooks once, here.
    ctx.guestHooks = guestHookPath ? scanGuestHooks(guestHookPath, ctx.log) : emptyGuestHooks();
    ctx.log.info({ sandboxId, namespaces }, 'sandbox created');
    return { result: { namespaces, deviceCgroup } };
  } finally {
    ctx.sandboxBusy = false;
  }
}

/**
 * Kill and forget every container, then release the sandbox namespaces. Works without a
 * sandbox too. DEADLINE_EXCEEDED when some process could not be seen to die.
 */
export async function destroySandbox(ctx: ContainerContext, rawArgs: DestroySandboxArgs): Promise<BackendReply<DestroySandboxResult>> {
  checkArgs(rawArgs, 'destroySandbox');
  const failures = await removeAll(ctx, TEARDOWN_TIMEOUT_MS);
  await ctx.launcher.destroySandbox();
  ctx.sandbox = undefined;
  ctx.guestHooks = emptyGuestHooks();
  if (failures.length > 0) throw new StatusError(Code.DEADLINE_EXCEEDED, failures.join('; '));
  return { result: {} };
}

/**
 * A container may join a namespace only of this sandbox: /proc/<pid>/ns/<type> of a live
 * process the helper tracks, one of the sandbox's namespace files (bind mounts), or — for the
 * network namespace only — a named network namespace under /run/netns or /var/run/netns
 * (how the guest's network set-up pins them). Never an arbitrary path such as /proc/1/ns/mnt:
 * the control plane is not trusted to pick the guest's own namespaces. kata-init's setns with
 * the namespace type makes the kernel refuse a file that is not a namespace of that type.
 */
export function namespacePathAllowed(ctx: ContainerContext, type: KernelNamespace, nsPath: string): boolean {
  if (type === 'net' && NETNS_PATH_RE.test(nsPath)) return fs.existsSync(nsPath);
  if (ctx.sandbox?.namespaces.some((n) => n.path === nsPath && (n.type === type || (n.type === 'network' && type === 'net')))) {
    return true;
  }
  const m = NS_PATH_RE.exec(nsPath);
  if (!m || m[2] !== type) return false;
  const pid = Number(m[1]);
  return ctx.registry.isLive(pid) && fs.existsSync(nsPath);
}
