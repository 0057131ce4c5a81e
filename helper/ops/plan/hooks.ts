/** Re-validation of ContainerPlan.hooks (OCI hooks). */
import type { HookPlan, HooksPlan } from '../../../shared/protocol';
import { invalidArgument as invalid } from '../../../shared/protocol';
import { isRecord, checkString, checkArray, describe, checkAbsolute } from './checks';

/**
 * Re-check ContainerPlan.hooks (control/oci.ts hooksFromOci): a map of prestart, createRuntime,
 * createContainer, startContainer, poststart, poststop lists (at most 64 each) of {path absolute, args, env (strings without
 * NUL), timeoutSec 1..3600 or absent}. INVALID_ARGUMENT naming hooks.<kind>[i].
 */
const HOOK_KINDS = ['prestart', 'createRuntime', 'createContainer', 'startContainer', 'poststart', 'poststop'] as const;

export function validateHooks(raw: unknown): Required<HooksPlan> {
  const out: Required<HooksPlan> = { prestart: [], createRuntime: [], createContainer: [], startContainer: [], poststart: [], poststop: [] };
  if (raw === undefined) return out;
  if (!isRecord(raw)) throw invalid(`hooks must be a map, got ${describe(raw)}`);
  for (const kind of Object.keys(raw)) if (!(kind in out)) throw invalid(`hooks.${kind} is not a hook kind the helper runs`);
  for (const kind of HOOK_KINDS) {
    if (raw[kind] === undefined) continue;
    out[kind] = checkArray(raw[kind], `hooks.${kind}`, 64).map((h, i): HookPlan => {
      const f = `hooks.${kind}[${i}]`;
      if (!isRecord(h)) throw invalid(`${f} must be a map, got ${describe(h)}`);
      const args = checkArray(h.args ?? [], `${f}.args`, 1024).map((a, j) => checkString(a, `${f}.args[${j}]`));
      const env = checkArray(h.env ?? [], `${f}.env`, 1024).map((e, j) => checkString(e, `${f}.env[${j}]`));
      const t = h.timeoutSec;
      if (t !== undefined && (typeof t !== 'number' || !Number.isInteger(t) || t < 1 || t > 3600)) {
        throw invalid(`${f}.timeoutSec must be an integer in 1..3600, got ${describe(t)}`);
      }
      return { path: checkAbsolute(h.path, `${f}.path`), args, env, ...(t !== undefined ? { timeoutSec: t } : {}) };
    });
  }
  return out;
}
