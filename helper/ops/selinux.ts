/**
 * SELinux labels of a container (OCI process.selinuxLabel, linux.mountLabel). Upstream rustjail
 * (container.rs do_init_child) sets the exec label when the guest kernel has SELinux enabled;
 * we do the same through kata-init (`selinux` record → /proc/thread-self/attr/exec before
 * execve) and give the mount label to the container's own tmpfs, devpts and mqueue mounts as
 * `context="<label>"` (runc's label.FormatMountLabel). Without SELinux in the guest, where
 * upstream fails the container, the labels are dropped with a warning: the Kata runtime sends
 * them only when guest SELinux is configured, and an agent without it cannot do better.
 */
import * as fs from 'node:fs';
import type { Logger } from '../../shared/log';
import type { ValidContainerPlan, ValidProcessPlan } from './plan';

/** Where selinuxfs is mounted when SELinux is enabled. */
export const SELINUXFS = '/sys/fs/selinux';

/** Whether the guest runs SELinux (selinuxfs mounted: its `enforce` file exists). */
export function guestHasSelinux(root = SELINUXFS): boolean {
  return fs.existsSync(`${root}/enforce`);
}

/** Mount types that take the mount label (their contents are the container's own). */
const LABELLED_FS = new Set(['tmpfs', 'devpts', 'mqueue']);

/**
 * Apply or drop the labels of a validated container plan in place: with SELinux, the mount
 * label goes into the data of the labelled mounts (unless they already name a context); without
 * it, the process and mount labels are removed and one warning names the fields. Never throws.
 */
export function applySelinuxLabels(plan: ValidContainerPlan, enabled: boolean, log: Logger, containerId: string): void {
  dropProcessLabel(plan.process, enabled, log, { containerId, field: 'OCI.Process.SelinuxLabel' });
  if (!plan.mountLabel) return;
  if (!enabled) {
    log.warn({ containerId, field: 'OCI.Linux.MountLabel', value: plan.mountLabel }, 'SELinux mount label ignored: the guest has no SELinux');
    delete plan.mountLabel;
    return;
  }
  for (const m of plan.mounts) {
    if (m.bind || !LABELLED_FS.has(m.fstype) || /(^|,)context=/.test(m.data)) continue;
    m.data = m.data === '' ? `context="${plan.mountLabel}"` : `${m.data},context="${plan.mountLabel}"`;
  }
}

/** An exec's (or the init's) process label: kept with SELinux, else removed with a warning. */
export function dropProcessLabel(proc: ValidProcessPlan, enabled: boolean, log: Logger, where: Record<string, string>): void {
  if (!proc.selinuxLabel || enabled) return;
  log.warn({ ...where, value: proc.selinuxLabel }, 'SELinux process label ignored: the guest has no SELinux');
  delete proc.selinuxLabel;
}
