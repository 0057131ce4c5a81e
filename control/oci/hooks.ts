/**
 * OCI hooks (config.md#posix-platform-hooks) → {@link HooksPlan}.
 */
import type { grpc } from '../../shared/generated/protos';
import { Code, StatusError, type HookPlan, type HooksPlan } from '../../shared/protocol';
import { checkAbsPath, checkString, invalid, toInt } from './common';

/** The OCI hook lists (config.md#posix-platform-hooks), in proto spelling. */
export const HOOK_FIELDS = ['Prestart', 'CreateRuntime', 'CreateContainer', 'StartContainer', 'Poststart', 'Poststop'] as const;

/** Most hooks of one kind, and the longest hook timeout in seconds. */
export const MAX_HOOKS = 64;
export const MAX_HOOK_TIMEOUT_SEC = 3600;

/**
 * OCI hooks (config.md#posix-platform-hooks) → {@link HooksPlan}, run by the helper in the
 * guest's (the runtime's) namespaces with the OCI state on stdin (helper/ops/hooks.ts).
 * Prestart, CreateRuntime, Poststart, Poststop are carried. CreateContainer and StartContainer
 * must run inside the container's namespaces, which is not built: UNIMPLEMENTED naming the
 * field. INVALID_ARGUMENT naming `OCI.Hooks.<Kind>[i].<field>` for a Path that is empty or not
 * absolute or has a NUL, a NUL in Args or Env, a Timeout outside 0..3600 (0 = the default
 * 10 s), more than {@link MAX_HOOKS} hooks of a kind. Undefined when there are none.
 */
export function hooksFromOci(hooks: grpc.Hooks.$Properties | null | undefined): HooksPlan | undefined {
  if (!hooks) return undefined;
  const out: HooksPlan = {};
  const kinds = [
    ['Prestart', 'prestart'], ['CreateRuntime', 'createRuntime'], ['CreateContainer', 'createContainer'],
    ['StartContainer', 'startContainer'], ['Poststart', 'poststart'], ['Poststop', 'poststop'],
  ] as const;
  for (const [name, key] of kinds) {
    const list = hooks[name] ?? [];
    if (list.length === 0) continue;
    if (list.length > MAX_HOOKS) throw invalid(`OCI.Hooks.${name}`, list.length, `more than ${MAX_HOOKS} hooks`);
    out[key] = list.map((h, i): HookPlan => {
      const f = `OCI.Hooks.${name}[${i}]`;
      const p = h.Path ?? '';
      if (p === '') throw new StatusError(Code.INVALID_ARGUMENT, `${f}.Path is required`);
      checkAbsPath(`${f}.Path`, p, false);
      const args = (h.Args ?? []).map((a, j) => checkString(`${f}.Args[${j}]`, a));
      const env = (h.Env ?? []).map((e, j) => checkString(`${f}.Env[${j}]`, e));
      const timeout = toInt(h.Timeout);
      if (!Number.isInteger(timeout) || timeout < 0 || timeout > MAX_HOOK_TIMEOUT_SEC) {
        throw invalid(`${f}.Timeout`, timeout, `must be 0..${MAX_HOOK_TIMEOUT_SEC} seconds (0 = the default)`);
      }
      return { path: p, args, env, ...(timeout > 0 ? { timeoutSec: timeout } : {}) };
    });
  }
  return Object.keys(out).length > 0 ? out : undefined;
}
