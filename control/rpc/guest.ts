/**
 * The guest-operation rpcs of AgentService: GetGuestDetails, OnlineCPUMem, MemHotplugByProbe,
 * ReseedRandomDev, SetGuestDateTime, AddSwap, GetVolumeStats, ResizeVolume, CopyFile and
 * SetPolicy. Control parses and validates the request (INVALID_ARGUMENT naming the bad value);
 * the privileged work is one helper op each (helper/ops/sysfs.ts, copy-file.ts, guest.ts),
 * which validates again.
 *
 * Behaviour follows the Kata agent (src/agent/src/rpc.rs, sandbox.rs online_cpu_memory,
 * random.rs, linux_abi.rs at 6e4d4c329a; inventory §4.4-§4.6, §4.11), with these departures:
 *   - status codes: bad input INVALID_ARGUMENT, missing things NOT_FOUND / FAILED_PRECONDITION
 *     (upstream answers INTERNAL for nearly everything);
 *   - CopyFile confined to the copy roots (default /run/kata-containers/shared/containers, as
 *     upstream HEAD), refusing "..", other places and symlinks on the way;
 *   - GetVolumeStats / ResizeVolume confined to the volume roots (default /run/kata-containers);
 *   - ResizeVolume implemented (upstream: NOT_FOUND / UNIMPLEMENTED);
 *   - SetPolicy takes this agent's JSON policy (docs/POLICY.md), not Rego;
 *   - AddSwap's disk is waited for by the helper (uevents, hotplug timeout) as upstream.
 */
import * as path from 'node:path';
import type { google as gpb, grpc as pb } from '../../shared/generated/protos';
import { confinedPath } from '../../shared/paths';
import {
  COPY_FILE_HELPER_CHUNK,
  COPY_FILE_MAX_SIZE,
  GUEST_PATHS,
  MAX_ENTROPY_BYTES,
  MAX_NB_CPUS,
  MAX_PROBE_ADDRESSES,
  invalidArgument as invalid,
  STORAGE_DRIVERS,
} from '../../shared/protocol';
import type { AgentCore } from './core';
import { INIT_MODE_ENV } from '../init';
import { agentVersion } from './health';
import { parsePolicy, PolicyEngine } from './policy';
import { keepPolicyInHelper } from './policy-keep';

type Empty = gpb.protobuf.Empty.$Properties;

/**
 * The storage drivers this agent announces in AgentDetails.storage_handlers: upstream's driver
 * names (src/agent/src/device.rs DRIVER_*_TYPE) that control/rpc/storage.ts and
 * helper/ops/storage.ts carry out (blk-ccw is s390x only and answers UNIMPLEMENTED here).
 */
export const STORAGE_HANDLERS: readonly string[] = STORAGE_DRIVERS.filter((d) => d !== 'blk-ccw');

/** Most entropy bytes one ReseedRandomDev call may carry (sent to the helper in 4 KiB pieces). */
export const MAX_RESEED_BYTES = 64 * 1024;
/** Longest symlink target CopyFile accepts, in bytes (PATH_MAX). */
const MAX_SYMLINK_TARGET = 4096;
/** Helper timeout of OnlineCPUMem: 100 rounds 50 ms apart, plus slack, in ms. */
const ONLINE_TIMEOUT_MS = 30_000;
/** Helper timeout of ResizeVolume (resize2fs on a large volume), in ms. */
const RESIZE_TIMEOUT_MS = 10 * 60_000;
/** PCI slots are 5 bits (Kata pci.rs SlotFn). */
const PCI_SLOT_MAX = 0x1f;
const S_IFMT = 0o170000;
const S_IFLNK = 0o120000;
const S_IFDIR = 0o040000;

/** Where the guest rpcs act (defaults: shared/protocol.ts GUEST_PATHS); tests use temp trees. */
export interface GuestOptions {
  /** Roots CopyFile may write below. */
  copyRoots?: string[];
  /** Roots GetVolumeStats / ResizeVolume paths must lie below. */
  volumeRoots?: string[];
  /** The policy in force at start (default: allow everything). */
  policy?: string;
}

/** The guest area's own state: its paths and the policy engine. */
export class GuestContext {
  readonly copyRoots: string[];
  readonly volumeRoots: string[];
  readonly policy: PolicyEngine;
  /** Settles when the SetPolicy before has handed its document to the helper. */
  policyTurn: Promise<void> = Promise.resolve();

  /** Throws INVALID_ARGUMENT when `opts.policy` is not a valid policy. */
  constructor(opts: GuestOptions = {}) {
    this.copyRoots = (opts.copyRoots ?? [GUEST_PATHS.copyRoot]).map((r) => path.resolve(r));
    this.volumeRoots = (opts.volumeRoots ?? [GUEST_PATHS.volumeRoot]).map((r) => path.resolve(r));
    this.policy = new PolicyEngine(opts.policy === undefined ? undefined : parsePolicy(opts.policy));
  }
}

function num(v: number | { toNumber(): number } | null | undefined): number {
  return typeof v === 'number' ? v : v == null ? 0 : v.toNumber();
}

/**
 * GetGuestDetails (Kata rpc.rs get_guest_details): the memory block size (hex sysfs value) and
 * probe support when asked, and AgentDetails {version, init_daemon (the agent is the guest's
 * PID 1: control itself, or started by init mode, which sets {@link INIT_MODE_ENV} = "1"),
 * device_handlers [] (as upstream), storage_handlers {@link STORAGE_HANDLERS}, supports_seccomp
 * true (seccomp profiles are applied, helper/ops/seccomp.ts)}. The runtime reads
 * mem_block_size_bytes >> 20, support_mem_hotplug_probe and supports_seccomp (sandbox.go).
 */
export async function getGuestDetails(core: AgentCore, req: pb.GuestDetailsRequest): Promise<pb.GuestDetailsResponse.$Properties> {
  const mem = await core.callNoFds('memoryInfo', { blockSize: req.mem_block_size === true, hotplugProbe: req.mem_hotplug_probe === true });
  return {
    mem_block_size_bytes: mem.blockSizeBytes,
    support_mem_hotplug_probe: mem.hotplugProbe,
    agent_details: {
      version: agentVersion(),
      init_daemon: process.pid === 1 || process.env[INIT_MODE_ENV] === '1',
      device_handlers: [],
      storage_handlers: [...STORAGE_HANDLERS],
      supports_seccomp: true,
    },
  };
}

/**
 * OnlineCPUMem (Kata sandbox.rs online_cpu_memory): the helper onlines offline CPUs until
 * nb_cpus are online (retrying, DEADLINE_EXCEEDED when they never come) and, unless cpu_only,
 * every offline memory block. `wait` is ignored: the call is always synchronous, as upstream.
 * With nothing offline ({} from the runtime after every container change) nothing is written.
 * nb_cpus above {@link MAX_NB_CPUS} → INVALID_ARGUMENT.
 */
export async function onlineCpuMem(core: AgentCore, req: pb.OnlineCPUMemRequest): Promise<Empty> {
  const nbCpus = req.nb_cpus ?? 0;
  if (nbCpus > MAX_NB_CPUS) throw invalid(`nb_cpus ${nbCpus} is more than ${MAX_NB_CPUS}`);
  const r = await core.callNoFds('onlineCpuMem', { nbCpus, cpuOnly: req.cpu_only === true }, ONLINE_TIMEOUT_MS);
  if (nbCpus > 0) fixContainerCpusets(core, r.onlineCpus);
  return {};
}

/**
 * Upstream rewrites the cpuset of every container's cgroup (and their ancestors) after new CPUs
 * came online, so that containers whose spec names no cpus can use them. This agent creates no
 * cgroups yet (linux.resources are accepted but not enforced, control/oci.ts unenforcedFields):
 * there is no cpuset to fix. The cgroup work hooks in here.
 */
export function fixContainerCpusets(core: AgentCore, onlineCpus: number): void {
  core.log.debug({ onlineCpus, containers: core.sandbox.containers.size }, 'CPUs online; no container cgroups to update');
}

/**
 * MemHotplugByProbe (Kata rpc.rs do_mem_hotplug_by_probe): each address written as 0x%X to the
 * memory probe file. At most {@link MAX_PROBE_ADDRESSES}; an address that is not an integer ≥ 0
 * → INVALID_ARGUMENT; no probe interface → FAILED_PRECONDITION.
 */
export async function memHotplugByProbe(core: AgentCore, req: pb.MemHotplugByProbeRequest): Promise<Empty> {
  const addrs = (req.memHotplugProbeAddr ?? []).map(num);
  if (addrs.length > MAX_PROBE_ADDRESSES) throw invalid(`${addrs.length} memory probe addresses, more than ${MAX_PROBE_ADDRESSES}`);
  for (const a of addrs) if (!Number.isSafeInteger(a) || a < 0) throw invalid(`invalid memory probe address ${a}`);
  if (addrs.length === 0) return {};
  await core.callNoFds('memHotplugProbe', { addresses: addrs.map((a) => `0x${a.toString(16)}`) });
  return {};
}

/**
 * ReseedRandomDev (Kata random.rs reseed_rng): mix `data` into the kernel pool (RNDADDENTROPY,
 * credited) and reseed the CRNG. Empty → INVALID_ARGUMENT "missing entropy data" (upstream
 * INTERNAL); more than {@link MAX_RESEED_BYTES} → INVALID_ARGUMENT.
 */
export async function reseedRandomDev(core: AgentCore, req: pb.ReseedRandomDevRequest): Promise<Empty> {
  const data = req.data ?? new Uint8Array();
  if (data.length === 0) throw invalid('missing entropy data');
  if (data.length > MAX_RESEED_BYTES) throw invalid(`${data.length} bytes of entropy data, more than ${MAX_RESEED_BYTES}`);
  for (let off = 0; off < data.length; off += MAX_ENTROPY_BYTES) {
    await core.callNoFds('addEntropy', { data: Buffer.from(data.subarray(off, off + MAX_ENTROPY_BYTES)) });
  }
  return {};
}

/**
 * SetGuestDateTime (Kata rpc.rs do_set_guest_date_time): set the realtime clock to Sec + Usec.
 * Sec < 0 or Usec outside 0..999999 → INVALID_ARGUMENT (upstream: settimeofday's EINVAL).
 */
export async function setGuestDateTime(core: AgentCore, req: pb.SetGuestDateTimeRequest): Promise<Empty> {
  const sec = num(req.Sec);
  const usec = num(req.Usec);
  if (!Number.isSafeInteger(sec) || sec < 0) throw invalid(`invalid Sec ${sec} (seconds since the epoch, ≥ 0)`);
  if (!Number.isSafeInteger(usec) || usec < 0 || usec > 999_999) throw invalid(`invalid Usec ${usec} (0..999999)`);
  await core.callNoFds('setTime', { sec, usec });
  return {};
}

/**
 * AddSwapRequest.PCIPath (one slot per bus level, 1..8 of them, each 0..31) as the helper's PCI
 * path text "SS/SS" (Kata pci.rs Path). Anything else → INVALID_ARGUMENT naming the value.
 */
export function pciPathText(slots: readonly number[]): string {
  if (slots.length === 0 || slots.length > 8) throw invalid(`PCI path of ${slots.length} slots (want 1 to 8)`);
  for (const s of slots) if (!Number.isInteger(s) || s < 0 || s > PCI_SLOT_MAX) throw invalid(`PCI slot ${s} out of range 0..${PCI_SLOT_MAX}`);
  return slots.map((s) => s.toString(16).padStart(2, '0')).join('/');
}

/**
 * AddSwap (Kata rpc.rs do_add_swap, device.rs get_virtio_blk_pci_device_name): the helper waits
 * for the virtio-blk disk at the PCI path (uevents, at most the hotplug timeout: a disk
 * hot-plugged after the request is found; DEADLINE_EXCEEDED "Timeout after Nms waiting for
 * uevent PCI path SS/SS" otherwise; NOT_FOUND when a bridge on the path is missing) and swapons
 * it (no mkswap: the host formats the swap image). Bad slots → INVALID_ARGUMENT.
 */
export async function addSwap(core: AgentCore, req: pb.AddSwapRequest): Promise<Empty> {
  await core.callNoFds('addSwap', { pciPath: pciPathText(req.PCIPath ?? []) });
  return {};
}

/**
 * GetVolumeStats (Kata rpc.rs get_volume_stats, csi.proto VolumeUsage): usage[0] BYTES
 * {total = blocks × bsize, available = bfree × bsize (upstream uses the free, not the available
 * count), used = total − available}, usage[1] INODES {total = files, available = ffree, used},
 * volume_condition {abnormal false, message "OK"}. The path must be below the volume roots
 * (INVALID_ARGUMENT otherwise); a missing one → NOT_FOUND.
 */
export async function getVolumeStats(core: AgentCore, g: GuestContext, req: pb.VolumeStatsRequest): Promise<pb.VolumeStatsResponse.$Properties> {
  const p = req.volume_guest_path ?? '';
  confinedPath(p, 'volume_guest_path', g.volumeRoots);
  const st = await core.callNoFds('volumeStats', { path: p });
  const total = st.blocks * st.bsize;
  const available = st.bfree * st.bsize;
  return {
    usage: [
      { total, available, used: total - available, unit: 1 },
      { total: st.files, available: st.ffree, used: st.files - st.ffree, unit: 2 },
    ],
    volume_condition: { abnormal: false, message: 'OK' },
  };
}

/**
 * ResizeVolume (not in upstream at 6e4d4c329a): grow the ext2/3/4 or xfs filesystem mounted at
 * volume_guest_path to its (already grown) block device, with resize2fs / xfs_growfs. Path
 * below the volume roots (INVALID_ARGUMENT); not a mount point or tool missing →
 * FAILED_PRECONDITION.
 */
export async function resizeVolume(core: AgentCore, g: GuestContext, req: pb.ResizeVolumeRequest): Promise<Empty> {
  const p = req.volume_guest_path ?? '';
  confinedPath(p, 'volume_guest_path', g.volumeRoots);
  const size = num(req.size);
  if (!Number.isSafeInteger(size) || size < 0) throw invalid(`invalid size ${size}`);
  await core.callNoFds('resizeVolume', { path: p, size }, RESIZE_TIMEOUT_MS);
  return {};
}

/**
 * CopyFile (Kata rpc.rs do_copy_file; HEAD's confinement): one chunk of a regular file, a
 * directory (S_IFDIR in file_mode) or a symlink (S_IFLNK; data = the target), written below the
 * copy roots by the helper (helper/ops/copy-file.ts). Refused with INVALID_ARGUMENT, before
 * anything is written: a path outside the roots, not absolute or not normalised ("..", "."),
 * through a symlink (helper), negative or oversized sizes, a chunk past file_size, other file
 * types. The runtime's 1 MiB chunks go to the helper in {@link COPY_FILE_HELPER_CHUNK} pieces.
 */
export async function copyFile(core: AgentCore, g: GuestContext, req: pb.CopyFileRequest): Promise<Empty> {
  const p = req.path ?? '';
  confinedPath(p, 'CopyFile path', g.copyRoots);
  const fileSize = num(req.file_size);
  const offset = num(req.offset);
  const fileMode = req.file_mode ?? 0;
  const data = req.data ?? new Uint8Array();
  if (!Number.isSafeInteger(fileSize) || fileSize < 0 || fileSize > COPY_FILE_MAX_SIZE) {
    throw invalid(`CopyFile ${JSON.stringify(p)}: file_size ${fileSize} outside 0..${COPY_FILE_MAX_SIZE}`);
  }
  if (!Number.isSafeInteger(offset) || offset < 0) throw invalid(`CopyFile ${JSON.stringify(p)}: offset ${offset} is negative`);
  const type = fileMode & S_IFMT;
  const base = { path: p, fileSize, fileMode, dirMode: req.dir_mode ?? 0, uid: (req.uid ?? 0) >>> 0, gid: (req.gid ?? 0) >>> 0 };
  if (type === S_IFLNK || type === S_IFDIR) {
    if (type === S_IFLNK && (data.length === 0 || data.length > MAX_SYMLINK_TARGET)) {
      throw invalid(`CopyFile ${JSON.stringify(p)}: a symlink target must be 1..${MAX_SYMLINK_TARGET} bytes, got ${data.length}`);
    }
    await core.callNoFds('copyFile', { ...base, offset: 0, data: Buffer.from(data) });
    return {};
  }
  if (offset + data.length > fileSize) {
    throw invalid(`CopyFile ${JSON.stringify(p)}: chunk at offset ${offset} of ${data.length} bytes goes past file_size ${fileSize}`);
  }
  let off = 0;
  do {
    const piece = Buffer.from(data.subarray(off, off + COPY_FILE_HELPER_CHUNK));
    await core.callNoFds('copyFile', { ...base, offset: offset + off, data: piece });
    off += piece.length;
  } while (off < data.length);
  return {};
}

/**
 * SetPolicy (Kata policy.rs; Rego there, this agent's JSON policy here, docs/POLICY.md): parse
 * and install the policy. Whether SetPolicy itself is allowed was decided by the interceptor
 * under the policy in force. An invalid document → INVALID_ARGUMENT, the old policy stays. The
 * helper keeps the document before it takes effect (keepPolicy: a restarted control plane
 * enforces it again); a failing helper call → its status, the old policy stays.
 */
export async function setPolicy(core: AgentCore, g: GuestContext, req: pb.SetPolicyRequest): Promise<Empty> {
  const text = req.policy ?? '';
  const policy = parsePolicy(text);
  // The helper keeps it first (a restarted control plane enforces it again: policy-keep.ts);
  // one SetPolicy at a time, so that two uploads never interleave and the last one wins in both.
  const turn = g.policyTurn.then(() => keepPolicyInHelper(core, text));
  g.policyTurn = turn.catch(() => undefined);
  await turn;
  g.policy.set(policy);
  core.log.info({ rpcs: policy.rpcs.size, default: policy.defaultAllow ? 'allow' : 'deny' }, 'policy set');
  return {};
}
