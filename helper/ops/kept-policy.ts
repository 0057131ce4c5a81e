/**
 * The policy document control enforces, kept across control-plane restarts (keepPolicy /
 * keptPolicy, shared/protocol.ts). Upstream keeps the policy in the agent's memory, which dies
 * with the VM; here control can restart while the sandbox lives, and a restarted control plane
 * that forgot a SetPolicy would serve every rpc the policy denied. The helper does not parse the
 * document (control does); it checks sizes and chunk order. In memory only: a new helper starts
 * a new sandbox. Used as is by the real and the mock backend.
 */
import { Code, KEPT_POLICY_CHUNK_BYTES, KEPT_POLICY_MAX_BYTES, StatusError, type KeepPolicyArgs, type KeepPolicyResult, type KeptPolicyArgs, type KeptPolicyResult } from '../../shared/protocol';
import type { BackendReply } from '../api';
import { checkArgs } from './guest-args';

function offsetArg(v: unknown, op: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new StatusError(Code.INVALID_ARGUMENT, `${op}: offset must be a non-negative integer, got ${JSON.stringify(v)}`);
  return v;
}

/** See the module comment. */
export class KeptPolicy {
  private kept: Buffer | null = null;
  /** Chunks of the upload in progress. */
  private upload: Buffer[] = [];
  private uploaded = 0;

  /**
   * Take one chunk. INVALID_ARGUMENT for a chunk that is not bytes, larger than
   * KEPT_POLICY_CHUNK_BYTES, out of order (offset ≠ bytes received, unless 0) or that makes the
   * document larger than KEPT_POLICY_MAX_BYTES (the upload is dropped; the kept one stays).
   */
  async keepPolicy(rawArgs: KeepPolicyArgs): Promise<BackendReply<KeepPolicyResult>> {
    const args = checkArgs(rawArgs, 'keepPolicy');
    const offset = offsetArg(args.offset, 'keepPolicy');
    const data = args.data;
    if (!(data instanceof Uint8Array) || data.length > KEPT_POLICY_CHUNK_BYTES) {
      throw new StatusError(Code.INVALID_ARGUMENT, `keepPolicy: data must be at most ${KEPT_POLICY_CHUNK_BYTES} bytes`);
    }
    if (typeof args.last !== 'boolean') throw new StatusError(Code.INVALID_ARGUMENT, `keepPolicy: last must be a boolean, got ${JSON.stringify(args.last)}`);
    if (offset === 0) {
      this.upload = [];
      this.uploaded = 0;
    } else if (offset !== this.uploaded) {
      throw new StatusError(Code.INVALID_ARGUMENT, `keepPolicy: chunk at offset ${offset}, expected ${this.uploaded}`);
    }
    if (this.uploaded + data.length > KEPT_POLICY_MAX_BYTES) {
      this.upload = [];
      this.uploaded = 0;
      throw new StatusError(Code.INVALID_ARGUMENT, `keepPolicy: the policy is larger than ${KEPT_POLICY_MAX_BYTES} bytes`);
    }
    this.upload.push(Buffer.from(data));
    this.uploaded += data.length;
    if (!args.last) return { result: { kept: false } };
    this.kept = Buffer.concat(this.upload);
    this.upload = [];
    this.uploaded = 0;
    return { result: { kept: true } };
  }

  /** Up to KEPT_POLICY_CHUNK_BYTES of the kept document from `offset`. INVALID_ARGUMENT for a bad offset. */
  async keptPolicy(rawArgs: KeptPolicyArgs): Promise<BackendReply<KeptPolicyResult>> {
    const args = checkArgs(rawArgs, 'keptPolicy');
    const offset = offsetArg(args.offset, 'keptPolicy');
    if (this.kept === null) return { result: { total: null, data: Buffer.alloc(0) } };
    return { result: { total: this.kept.length, data: this.kept.subarray(offset, offset + KEPT_POLICY_CHUNK_BYTES) } };
  }
}
