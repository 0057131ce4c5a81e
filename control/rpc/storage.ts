/**
 * Storage and device rpcs and helpers (Kata agent rpc.rs update_ephemeral_mounts,
 * remove_stale_virtiofs_share_mounts, storage/*, device.rs update_spec_devices at 6e4d4c329a):
 * control checks the shape of every Storage and Device (INVALID_ARGUMENT naming the field);
 * the helper confines paths to its Kata directory and carries them out.
 */
import * as path from 'node:path';
import type { google as gpb, grpc as pb } from '../../shared/generated/protos';
import {
  Code,
  DEVICE_TYPES,
  STORAGE_DRIVERS,
  StatusError,
  type DevicePlan,
  type DeviceType,
  type GuestDevice,
  type StorageDriver,
  type StoragePlan,
} from '../../shared/protocol';
import { invalidArgument as invalid } from '../../shared/protocol';
import type { AgentCore } from './core';

type Empty = gpb.protobuf.Empty.$Properties;

/** Filesystem types a storage may name (the helper checks them per driver again). */
const FSTYPES = new Set(['', 'tmpfs', 'hugetlbfs', '9p', 'virtiofs', 'overlay', 'ext2', 'ext3', 'ext4', 'xfs', 'btrfs', 'vfat', 'erofs', 'squashfs', 'iso9660', 'local', 'bind']);

function checkPath(p: string, field: string): void {
  if (!p.startsWith('/')) throw invalid(`${field} ${JSON.stringify(p)} is not an absolute path`);
  if (p.includes('\0')) throw invalid(`${field} ${JSON.stringify(p)} contains a NUL byte`);
  if (p.split('/').some((c) => c === '..' || c === '.')) throw invalid(`${field} ${JSON.stringify(p)} contains a "." or ".." component`);
  if (path.posix.normalize(p) === '/') throw invalid(`${field} must not be "/"`);
}

/**
 * agent.proto Storage list → helper StoragePlans. INVALID_ARGUMENT for an unknown driver (upstream:
 * INTERNAL "Failed to find the storage handler"), a mount point that is not absolute or has "." /
 * "..", an fstype outside the allow list, or a NUL anywhere.
 */
export function storagePlansFrom(storages: pb.IStorage[], field: string): StoragePlan[] {
  if (storages.length > 256) throw invalid(`${field} has ${storages.length} entries (at most 256)`);
  return storages.map((s, i) => {
    const f = `${field}[${i}]`;
    const driver = s.driver ?? '';
    if (!(STORAGE_DRIVERS as readonly string[]).includes(driver)) {
      throw invalid(`${f}.driver ${JSON.stringify(driver)}: Failed to find the storage handler`);
    }
    const mountPoint = s.mount_point ?? '';
    checkPath(mountPoint, `${f}.mount_point`);
    const fstype = s.fstype ?? '';
    if (!FSTYPES.has(fstype)) throw invalid(`${f}.fstype ${JSON.stringify(fstype)} is not an allowed filesystem type`);
    const strings = [s.source ?? '', ...(s.options ?? []), ...(s.driver_options ?? [])];
    if (strings.some((x) => x.includes('\0'))) throw invalid(`${f}: a NUL byte in source or options`);
    const plan: StoragePlan = {
      driver: driver as StorageDriver,
      driverOptions: [...(s.driver_options ?? [])],
      source: s.source ?? '',
      fstype,
      options: [...(s.options ?? [])],
      mountPoint,
    };
    if (s.fs_group) {
      plan.fsGroup = { gid: s.fs_group.group_id ?? 0, onRootMismatch: (s.fs_group.group_change_policy ?? 0) === 1 };
    }
    return plan;
  });
}

/** agent.proto Device list → helper DevicePlans (upstream device.rs checks). INVALID_ARGUMENT naming the field. */
export function devicePlansFrom(devices: pb.IDevice[]): DevicePlan[] {
  return devices.map((d, i) => {
    const f = `CreateContainerRequest.devices[${i}]`;
    const type = d.type ?? '';
    if (type === '') throw invalid(`${f}.type is empty`);
    if (!(DEVICE_TYPES as readonly string[]).includes(type)) throw invalid(`${f}.type ${JSON.stringify(type)}: Unknown device type`);
    if (type.startsWith('vfio')) throw new StatusError(Code.UNIMPLEMENTED, `${f}.type ${type} (VFIO) is not supported yet`);
    if (!d.id && !d.vm_path) throw invalid(`${f}: id and vm_path are both empty`);
    if (!d.container_path) throw invalid(`${f}.container_path is empty`);
    return { type: type as DeviceType, id: d.id ?? '', vmPath: d.vm_path ?? '', containerPath: d.container_path, options: [...(d.options ?? [])] };
  });
}

/**
 * Give the spec the guest's numbers of each device (upstream update_spec_devices): the
 * `Linux.Devices` entry whose path is the device's container_path gets the guest major/minor
 * (INVALID_ARGUMENT when none matches), `Linux.Resources.Devices` rules naming the old
 * (type, major, minor) are updated, and an allow "rwm" rule is added for each device.
 * Mutates `spec`.
 */
export function rewriteSpecDevices(spec: pb.ISpec, devices: GuestDevice[]): void {
  const linux = spec.Linux;
  if (devices.length === 0) return;
  if (!linux) throw invalid('CreateContainerRequest.OCI.Linux is missing but devices were given');
  const specDevices = linux.Devices ?? [];
  const rules = linux.Resources?.Devices ?? [];
  const updated = new Set<pb.ILinuxDeviceCgroup>();
  for (const d of devices) {
    const entry = specDevices.find((e) => e.Path === d.containerPath);
    if (!entry) throw invalid(`device ${d.containerPath} (${d.vmPath}) is not in OCI.Linux.Devices`);
    const oldMajor = Number(entry.Major ?? 0);
    const oldMinor = Number(entry.Minor ?? 0);
    const kind = entry.Type || d.kind;
    for (const r of rules) {
      if (updated.has(r)) continue;
      if (r.Type === kind && Number(r.Major) === oldMajor && Number(r.Minor) === oldMinor) {
        r.Major = d.major;
        r.Minor = d.minor;
        updated.add(r);
      }
    }
    entry.Major = d.major;
    entry.Minor = d.minor;
    // Upstream insert_devices_cgroup_rule creates the resources when absent: with the device
    // cgroup enforced, the device would otherwise be denied.
    linux.Resources ??= {};
    linux.Resources.Devices = [...(linux.Resources.Devices ?? []), { Allow: true, Type: d.kind, Major: d.major, Minor: d.minor, Access: 'rwm' }];
  }
}

/** UpdateEphemeralMounts: the helper remounts (or mounts) each ephemeral storage. INVALID_ARGUMENT for another driver. */
export async function updateEphemeralMounts(core: AgentCore, req: pb.UpdateEphemeralMountsRequest): Promise<Empty> {
  core.checkNotDestroyed();
  const storages = storagePlansFrom(req.storages, 'UpdateEphemeralMountsRequest.storages');
  for (const [i, s] of storages.entries()) {
    if (s.driver !== 'ephemeral') {
      throw invalid(`UpdateEphemeralMountsRequest.storages[${i}].driver ${s.driver}: Only ephemeral storage update is supported`);
    }
  }
  if (storages.length > 0) await core.callNoFds('updateEphemeralMounts', { storages });
  return {};
}

/** RemoveStaleVirtiofsShareMounts: the helper stats each mount under the shared directory (virtiofsd then drops stale entries). */
export async function removeStaleVirtiofsShareMounts(core: AgentCore, _req: pb.RemoveStaleVirtiofsShareMountsRequest): Promise<Empty> {
  await core.callNoFds('statShareMounts', {});
  return {};
}
