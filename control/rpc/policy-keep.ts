/**
 * The policy survives a control-plane restart: SetPolicy hands the document to the helper
 * (keepPolicy, in chunks) before it takes effect, and a starting control plane installs the
 * helper's kept document before it serves anything (Agent.start, after adoption). Upstream keeps
 * the policy in the agent's memory (policy.rs), which lives as long as the sandbox; ours must
 * live as long as the helper, or a control plane restarted by PID 1 would serve what the policy
 * denied. docs/ARCHITECTURE.md "Restart and adoption", "adversarial review (restart)".
 */
import { Code, KEPT_POLICY_CHUNK_BYTES, KEPT_POLICY_MAX_BYTES, StatusError } from '../../shared/protocol';
import type { AgentCore } from './core';
import { parsePolicy, type Policy, type PolicyEngine } from './policy';

/**
 * What a restarted control plane enforces when the kept document no longer parses (e.g. a control
 * plane of another version): every AgentService rpc denied. Failing open would be a bypass.
 */
export function denyAllPolicy(): Policy {
  return { defaultAllow: false, rpcs: new Map() };
}

/**
 * Hand `text` (a policy document control has parsed) to the helper, in chunks of
 * KEPT_POLICY_CHUNK_BYTES. Resolves when the helper keeps it. A helper without the op
 * (UNIMPLEMENTED) is logged: the policy then lives in control's memory only. Rejects with the
 * helper call's StatusError otherwise (the caller must not install the policy then).
 */
export async function keepPolicyInHelper(core: AgentCore, text: string): Promise<void> {
  const bytes = Buffer.from(text, 'utf8');
  try {
    let offset = 0;
    do {
      const data = bytes.subarray(offset, offset + KEPT_POLICY_CHUNK_BYTES);
      const last = offset + data.length >= bytes.length;
      await core.callNoFds('keepPolicy', { offset, data, last });
      offset += data.length;
    } while (offset < bytes.length);
  } catch (err) {
    if (err instanceof StatusError && err.code === Code.UNIMPLEMENTED) {
      core.log.warn('the helper cannot keep the policy: a restarted control plane would not enforce it');
      return;
    }
    throw err;
  }
}

/**
 * Read the helper's kept policy and install it in `engine` (it replaces the start-up policy: a
 * SetPolicy came after the start). Returns whether one was installed. A document that does not
 * parse installs {@link denyAllPolicy} (logged). Rejects with the helper call's StatusError
 * (UNIMPLEMENTED from a helper without the op is "nothing kept"), INTERNAL for a helper that
 * answers more than the size it announced.
 */
export async function restoreKeptPolicy(core: AgentCore, engine: PolicyEngine): Promise<boolean> {
  const chunks: Buffer[] = [];
  let offset = 0;
  for (;;) {
    let result;
    try {
      result = await core.callNoFds('keptPolicy', { offset });
    } catch (err) {
      if (err instanceof StatusError && err.code === Code.UNIMPLEMENTED) return false;
      throw err;
    }
    if (result.total === null) return false;
    const total = result.total;
    const data = Buffer.from(result.data);
    if (!Number.isSafeInteger(total) || total < 0 || total > KEPT_POLICY_MAX_BYTES || offset + data.length > total || (data.length === 0 && offset < total)) {
      throw new StatusError(Code.INTERNAL, `helper keptPolicy: ${data.length} bytes at offset ${offset} of a ${JSON.stringify(total)}-byte policy`);
    }
    chunks.push(data);
    offset += data.length;
    if (offset === total) break;
  }
  try {
    engine.set(parsePolicy(Buffer.concat(chunks).toString('utf8')));
    core.log.info('enforcing the policy kept by the helper (set before a control-plane restart)');
  } catch (err) {
    engine.set(denyAllPolicy());
    core.log.error({ err }, 'the policy kept by the helper does not parse: every rpc is denied');
  }
  return true;
}
