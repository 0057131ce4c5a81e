/** The OCI state handed to hooks (runtime-spec state; upstream oci_state) and the check of CreateContainerArgs.oci. */
import * as path from 'node:path';
import { Code, StatusError } from '../../../shared/protocol';
import type { ValidContainerPlan } from '../plan';
import type { OciState } from '../hooks';

/** Longest OCI version string accepted for the hook state, in bytes. */
const OCI_VERSION_MAX = 256;
/** Most annotations passed to hooks. */
const ANNOTATIONS_MAX = 1024;

/** Validate CreateContainerArgs.oci (INVALID_ARGUMENT naming the field). */
export function checkOciInfo(v: unknown): { version: string; annotations: Record<string, string> } {
  if (v === undefined) return { version: '', annotations: {} };
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new StatusError(Code.INVALID_ARGUMENT, 'oci must be a map');
  const o = v as Record<string, unknown>;
  const version = o.version ?? '';
  if (typeof version !== 'string' || Buffer.byteLength(version) > OCI_VERSION_MAX) {
    throw new StatusError(Code.INVALID_ARGUMENT, `oci.version must be a string of at most ${OCI_VERSION_MAX} bytes`);
  }
  const raw = o.annotations ?? {};
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new StatusError(Code.INVALID_ARGUMENT, 'oci.annotations must be a map');
  const entries = Object.entries(raw as Record<string, unknown>);
  if (entries.length > ANNOTATIONS_MAX) throw new StatusError(Code.INVALID_ARGUMENT, `oci.annotations has ${entries.length} entries, at most ${ANNOTATIONS_MAX}`);
  const annotations: Record<string, string> = {};
  for (const [k, val] of entries) {
    if (typeof val !== 'string') throw new StatusError(Code.INVALID_ARGUMENT, `oci.annotations[${JSON.stringify(k)}] must be a string`);
    annotations[k] = val;
  }
  return { version, annotations };
}

/**
 * The OCI state JSON of the createContainer ("creating") and startContainer ("created") hooks,
 * split around the pid kata-init fills in (its own getpid(), as runc and rustjail report it).
 * The same fields as the helper's hooks ({@link ContainerBackend} ociState).
 */
export function inContainerHookStates(
  id: string,
  oci: { version: string; annotations: Record<string, string> },
  plan: ValidContainerPlan,
): ValidContainerPlan['hookStates'] {
  const PID = 987654321987;
  const split = (status: OciState['status']): [string, string] => {
    const [before, after] = JSON.stringify(ociStateOf(id, oci, plan.rootfs, PID, status)).split(String(PID));
    return [before, after];
  };
  return {
    ...(plan.hooks.createContainer.length > 0 ? { createContainer: split('creating') } : {}),
    ...(plan.hooks.startContainer.length > 0 ? { startContainer: split('created') } : {}),
  };
}

/** The OCI state of a container for its hooks: bundle = parent of the rootfs (upstream oci_state). */
export function ociStateOf(
  id: string,
  oci: { version: string; annotations: Record<string, string> },
  rootfs: string,
  pid: number,
  status: OciState['status'],
): OciState {
  return { ociVersion: oci.version, id, status, pid, bundle: path.dirname(rootfs), annotations: oci.annotations };
}
