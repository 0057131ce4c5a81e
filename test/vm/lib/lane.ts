/**
 * What a VM-lane test needs from the lane (the lane itself — a QEMU guest booted with this agent,
 * a QMP socket, a host directory — is another issue). A lane is a module named by
 * `$KATA_VM_LANE` (an absolute path to compiled JS) exporting `connect(): Promise<VmLane>`.
 * Without it, every VM test skips with {@link VM_LANE_SKIP}.
 *
 * Expected guest layout (the lane's QEMU command line): a `pci-bridge` with id
 * {@link BRIDGE_ID} at slot 02 of the root bus (so PCI paths "02/SS" name its slots), room for
 * CPU hot-add (`-smp N,maxcpus=M`, M > N) and memory hot-add (`-m S,slots=K,maxmem=X`).
 */
import type { AgentClient } from '../../../control/ctl/client';

/** The printed skip reason when no lane is there. */
export const VM_LANE_SKIP = 'needs the VM lane (QEMU guest with QMP); see the VM-lane issue';

/** The id of the guest's PCI bridge at root slot 02. */
export const BRIDGE_ID = 'kata-bridge-0';

/** A QMP connection to the lane's QEMU (qmp-spec.txt: `{"execute": cmd, "arguments": args}`). */
export interface QmpHandle {
  /** Run a QMP command; resolves with its `return` value, rejects with its `error.desc`. */
  execute(command: string, args?: Record<string, unknown>): Promise<unknown>;
}

/** A running lane: the agent in the guest, QEMU's QMP, a way to look inside the guest. */
export interface VmLane {
  /** A client connected to the agent in the guest (vsock through the lane, never CID 2 here). */
  agent: Pick<AgentClient, 'call'>;
  qmp: QmpHandle;
  /** Guest path of a writable busybox rootfs the lane has prepared (scripts/vm/lane.ts: an overlay below /run/kata-lane). */
  guestRootfs: string;
  /** A host directory whose files QEMU can open (disk images). */
  hostDir: string;
  /**
   * Run `argv` in the guest outside any container (a debug console or the lane's own channel);
   * stdout as text and the exit status.
   */
  guestRun(argv: string[]): Promise<{ stdout: string; status: number }>;
  /** Stop the lane's connections (the VM may stay up for the next file). */
  close(): Promise<void>;
}

/** Connect to the lane named by $KATA_VM_LANE, or undefined when it is not set. */
export async function connectVmLane(): Promise<VmLane | undefined> {
  const mod = process.env.KATA_VM_LANE;
  if (!mod) return undefined;
  const lane = (await import(mod)) as { connect?: () => Promise<VmLane> };
  if (typeof lane.connect !== 'function') throw new Error(`KATA_VM_LANE=${mod} does not export connect()`);
  return lane.connect();
}
