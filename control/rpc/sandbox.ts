/**
 * Sandbox rpcs: CreateSandbox and DestroySandbox (Kata agent rpc.rs create_sandbox /
 * destroy_sandbox at 6e4d4c329a).
 */
import type { google as gpb, grpc as pb } from '../../shared/generated/protos';
import { Code, CONTAINER_ID_RE, StatusError } from '../../shared/protocol';
import { HOST_NAME_MAX } from '../oci';
import { removeContainerById } from './container';
import { type AgentCore } from './core';
import { storagePlansFrom } from './storage';

type Empty = gpb.protobuf.Empty.$Properties;

/**
 * CreateSandbox: records hostname and sandbox id and asks the helper for the sandbox's
 * persistent namespaces, then (upstream order) loads kernel_modules (modprobe in the helper),
 * sets up the sandbox storages (reference-counted, released at DestroySandbox) and writes the
 * dns lines to <kata dir>/sandbox/resolv.conf bound over /etc/resolv.conf. A failure after the
 * namespaces undoes everything. ALREADY_EXISTS on a second call (upstream does not check);
 * a non-empty guest_hook_path makes the helper read the OCI hooks under it (prestart/,
 * poststart/, poststop/; helper/ops/hooks.ts) and run them for every container created later;
 * INVALID_ARGUMENT for a guest_hook_path that is not absolute or has a NUL or "..";
 * INVALID_ARGUMENT for a malformed storage (control/rpc/storage.ts, helper/ops/mount.ts), a dns
 * line with a newline, an empty module name; INVALID_ARGUMENT for a bad hostname or sandbox id (an empty sandbox id is
 * accepted, as upstream; a non-empty one must be a valid container id). `sandbox_pidns` is ignored, as
 * upstream (the per-container flag decides).
 */
export function createSandbox(core: AgentCore, req: pb.CreateSandboxRequest): Promise<Empty> {
  return core.serialise(async () => {
    core.checkNotDestroyed();
    const sandbox = core.sandbox;
    if (sandbox.created) {
      throw new StatusError(Code.ALREADY_EXISTS, `sandbox ${JSON.stringify(sandbox.id)} is already created`);
    }
    const storages = storagePlansFrom(req.storages, 'CreateSandboxRequest.storages');
    const dns = req.dns.map((line, i) => {
      if (/[\0\n\r]/.test(line)) throw new StatusError(Code.INVALID_ARGUMENT, `CreateSandboxRequest.dns[${i}] ${JSON.stringify(line)} is not one resolv.conf line`);
      return line;
    });
    const modules = req.kernel_modules.map((m, i) => {
      if (!m.name) throw new StatusError(Code.INVALID_ARGUMENT, `CreateSandboxRequest.kernel_modules[${i}]: Kernel module name is empty`);
      return { name: m.name ?? '', parameters: [...(m.parameters ?? [])] };
    });
    const guestHookPath = guestHookPathFrom(req.guest_hook_path);
    const hostname = req.hostname;
    if (hostname.includes('\0') || Buffer.byteLength(hostname) > HOST_NAME_MAX) {
      throw new StatusError(Code.INVALID_ARGUMENT, `invalid hostname ${JSON.stringify(hostname)}: at most ${HOST_NAME_MAX} bytes, no NUL`);
    }
    const sandboxId = req.sandbox_id;
    if (sandboxId !== '' && !CONTAINER_ID_RE.test(sandboxId)) {
      throw new StatusError(
        Code.INVALID_ARGUMENT,
        `invalid sandbox id ${JSON.stringify(sandboxId)} (empty, or 2 to 256 ASCII letters, digits, ".", "_" or "-" starting with a letter or digit)`,
      );
    }
    // Upstream order (rpc.rs create_sandbox): kernel modules, namespaces, storages, DNS.
    if (modules.length > 0) await core.callNoFds('loadKernelModules', { modules });
    const result = await core.callNoFds('createSandbox', guestHookPath ? { sandboxId, hostname, guestHookPath } : { sandboxId, hostname });
    try {
      if (storages.length > 0) await core.callNoFds('addStorages', { owner: '', storages });
      if (dns.length > 0) await core.callNoFds('setupDns', { lines: dns });
    } catch (err) {
      // Leave nothing behind so that a corrected CreateSandbox can follow.
      await core.callNoFds('releaseStorages', { owner: '' }).catch((e: unknown) => core.log.error({ err: e }, 'releasing sandbox storages failed'));
      await core.callNoFds('destroySandbox', {}).catch((e: unknown) => core.log.error({ err: e }, 'undoing the sandbox failed'));
      throw err;
    }
    sandbox.id = sandboxId;
    sandbox.hostname = hostname;
    sandbox.namespaces = Array.isArray(result.namespaces) ? result.namespaces : [];
    sandbox.deviceCgroup = result.deviceCgroup === true;
    sandbox.storages = storages;
    sandbox.created = true;
    core.log.info({ sandbox: sandboxId, hostname, namespaces: sandbox.namespaces }, 'sandbox created');
    return {};
  });
}

/** Longest guest_hook_path, in bytes (PATH_MAX). */
const GUEST_HOOK_PATH_MAX = 4096;

/**
 * CreateSandboxRequest.guest_hook_path: "" (no hooks) or an absolute path without NUL or ".."
 * of at most 4096 bytes; INVALID_ARGUMENT naming the value otherwise. Upstream accepts any
 * string and only logs when reading it fails; a relative path would be resolved against the
 * helper's cwd, so it is refused here. The helper checks it again.
 */
export function guestHookPathFrom(p: string): string {
  if (p === '') return '';
  if (!p.startsWith('/') || p.includes('\0') || Buffer.byteLength(p) > GUEST_HOOK_PATH_MAX || p.split('/').includes('..')) {
    throw new StatusError(
      Code.INVALID_ARGUMENT,
      `CreateSandboxRequest.guest_hook_path ${JSON.stringify(p)} must be an absolute path without NUL or ".." of at most ${GUEST_HOOK_PATH_MAX} bytes`,
    );
  }
  return p;
}

/**
 * DestroySandbox: marks the sandbox as being destroyed (from now on CreateContainer and
 * ExecProcess fail FAILED_PRECONDITION), waits for the CreateContainer / ExecProcess calls in
 * flight to settle, removes every container (as RemoveContainer with the default bound; those
 * just created included), asks the helper to destroy the sandbox, fails pending GetOOMEvent
 * calls, and — after this reply has been sent — calls `onShutdown` (upstream exits the agent).
 * A concurrent second DestroySandbox gets the same answer, a later one FAILED_PRECONDITION.
 * If a container cannot be removed, the first error is returned and the agent stays up (a
 * retry is possible).
 */
export function destroySandbox(core: AgentCore, _req: pb.DestroySandboxRequest): Promise<Empty> {
  if (core.destroyRun) return core.destroyRun;
  try {
    core.checkNotDestroyed();
  } catch (err) {
    return Promise.reject(err);
  }
  // No new containers or exec processes from now on (they check this flag).
  core.destroying = true;
  const run = core.serialise(async () => {
    const sandbox = core.sandbox;
    try {
      while (core.inflight.size > 0) await Promise.allSettled([...core.inflight]);
      const errors: Error[] = [];
      for (const id of [...sandbox.containers.keys()]) {
        try {
          await removeContainerById(core, id, core.defaultRemoveTimeoutMs);
        } catch (err) {
          errors.push(err as Error);
        }
      }
      if (errors.length > 0) {
        const first = errors[0];
        const code = first instanceof StatusError ? first.code : Code.INTERNAL;
        throw new StatusError(code, `DestroySandbox: ${errors.length} container(s) could not be removed; first: ${first.message}`);
      }
      if (sandbox.created) {
        await core.callNoFds('releaseStorages', { owner: '' });
        await core.callNoFds('destroySandbox', {});
      }
    } catch (err) {
      core.destroying = false;
      core.destroyRun = null;
      throw err;
    }
    core.destroying = false;
    core.destroyRun = null; // later calls: FAILED_PRECONDITION (destroyed)
    sandbox.created = false;
    sandbox.destroyed = true;
    // Pending GetOOMEvent polls are not answered: they end with the connection when the agent
    // stops right after this reply (the runtime's watchOOMEvents then stops quietly on
    // "ttrpc: closed"; an error status is logged and asked again). Upstream answers INTERNAL "".
    core.log.info({ sandbox: sandbox.id }, 'sandbox destroyed; shutting down after the reply');
    if (!core.shutdownRequested) {
      core.shutdownRequested = true;
      // After the response has been written (the handler's result is sent in microtasks).
      setImmediate(() => core.onShutdown());
    }
    return {};
  });
  core.destroyRun = run;
  return run;
}
