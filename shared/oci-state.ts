/**
 * The OCI runtime state (runtime-spec runtime.md#state): what a hook reads on stdin
 * (helper/ops/hooks.ts) and what `kata-agent-oci state` prints (control/ctl/oci-state.ts).
 */

/** One container's state JSON. */
export interface OciState {
  ociVersion: string;
  id: string;
  status: 'creating' | 'created' | 'running' | 'stopped';
  /** The container init's pid as seen by the reader (the guest, or the caller's machine); absent when there is none. */
  pid?: number;
  /** The bundle directory (for hooks, upstream's: the parent of the canonical rootfs path). */
  bundle: string;
  annotations?: Record<string, string>;
}
