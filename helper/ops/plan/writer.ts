/** Serialisation of validated plans into kata-init's plan format (KATA-INIT.md "Plan format"). */
import { Code, StatusError } from '../../../shared/protocol';
import { DEFAULT_HOOK_TIMEOUT_SEC } from '../hooks';
import { MAX_PLAN_BYTES } from './limits';
import type { ValidProcessPlan, ValidNamespace, ValidContainerPlan } from './types';

// ---------------------------------------------------------------------------------------------
// Serialisation (KATA-INIT.md "Plan format")

/** Builds a kata-init plan: NUL-terminated fields, each record a tag and its fields. */
export class PlanWriter {
  private readonly parts: string[] = [];

  record(tag: string, ...fields: (string | number)[]): this {
    this.parts.push(tag, ...fields.map(String));
    return this;
  }

  /** The plan bytes; RESOURCE_EXHAUSTED when larger than kata-init accepts. */
  toBuffer(): Buffer {
    const buf = Buffer.from(this.parts.join('\0') + '\0');
    if (buf.length > MAX_PLAN_BYTES) {
      throw new StatusError(Code.RESOURCE_EXHAUSTED, `plan of ${buf.length} bytes exceeds kata-init's ${MAX_PLAN_BYTES}-byte limit`);
    }
    return buf;
  }
}

/**
 * A compiled seccomp filter as kata-init loads it (KATA-INIT.md `seccomp`): the BPF program
 * (struct sock_filter array, 8 bytes per instruction) and the SECCOMP_FILTER_FLAG_* bits for
 * seccomp(2). Made by helper/ops/seccomp.ts compileSeccomp.
 */
export interface SeccompFilter {
  bpf: Buffer;
  flags: number;
}

function writeSeccomp(w: PlanWriter, filter: SeccompFilter | undefined): void {
  if (!filter) return;
  w.record('seccomp', filter.bpf.toString('hex'));
  if (filter.flags !== 0) w.record('seccompflags', filter.flags);
}

function writeProcess(w: PlanWriter, p: ValidProcessPlan): void {
  if (p.oomScoreAdj !== undefined) w.record('oomscoreadj', p.oomScoreAdj);
  for (const r of p.rlimits) w.record('rlimit', r.resource, r.soft, r.hard);
  const c = p.capabilities;
  w.record('caps', c.bounding.toString(), c.effective.toString(), c.permitted.toString(), c.inheritable.toString(), c.ambient.toString());
  w.record('gid', p.gid);
  for (const g of p.additionalGids) w.record('group', g);
  w.record('uid', p.uid);
  w.record('cwd', p.cwd);
  w.record('nonewprivs', p.noNewPrivileges ? 1 : 0);
  for (const a of p.args) w.record('arg', a);
  for (const e of p.env) w.record('env', e);
  w.record('tty', p.terminal ? 1 : 0);
  if (p.selinuxLabel) w.record('selinux', p.selinuxLabel);
}

/**
 * kata-init `create` plan for a validated container, with its compiled seccomp filter if any;
 * kata-init moves itself into each of `cgroupDirs` (cgroup v1 directories, `cgroupjoin`) first.
 */
export function serializeCreatePlan(plan: ValidContainerPlan, seccomp?: SeccompFilter, cgroupDirs: readonly string[] = []): Buffer {
  const w = new PlanWriter();
  for (const d of cgroupDirs) w.record('cgroupjoin', d);
  w.record('rootfs', plan.rootfs);
  w.record('readonly', plan.readonly ? 1 : 0);
  w.record('nodev', plan.nodev ? 1 : 0);
  w.record('propagation', plan.rootfsPropagation);
  if (plan.hostns) w.record('hostns', 1);
  for (const ns of plan.namespaces) w.record('ns', ns.type, ns.path);
  const uts = plan.namespaces.find((n) => n.type === 'uts');
  if (plan.hostname !== '' && uts && uts.path === '') w.record('hostname', plan.hostname);
  for (const m of plan.mounts) w.record('mount', m.source, m.destination, m.fstype, m.flags, m.data);
  for (const m of plan.mounts) for (const p of m.propagation) w.record('mountprop', m.destination, p);
  for (const p of plan.maskedPaths) w.record('masked', p);
  for (const p of plan.readonlyPaths) w.record('readonlypath', p);
  for (const [k, v] of plan.sysctl) w.record('sysctl', k, v);
  for (const d of plan.devices) w.record('device', d.path, d.type === 'u' ? 'c' : d.type, d.major, d.minor, d.fileMode, d.uid, d.gid);
  writeProcess(w, plan.process);
  writeSeccomp(w, seccomp);
  writeInContainerHooks(w, plan);
  if (plan.runtimeHooksBeforePivot) w.record('runtimehooks', 1);
  return w.toBuffer();
}

/**
 * `hook`/`hookarg`/`hookenv` records of the createContainer and startContainer hooks and their
 * `hookstate` (KATA-INIT.md). Env entries without "=" are skipped (Kata valid_env), as the
 * helper's own hook runner does.
 */
function writeInContainerHooks(w: PlanWriter, plan: ValidContainerPlan): void {
  for (const kind of ['createContainer', 'startContainer'] as const) {
    const hooks = plan.hooks[kind];
    if (hooks.length === 0) continue;
    const state = plan.hookStates?.[kind];
    if (state) w.record('hookstate', kind, state[0], state[1]);
    for (const h of hooks) {
      w.record('hook', kind, h.path, h.timeoutSec ?? DEFAULT_HOOK_TIMEOUT_SEC);
      for (const a of h.args) w.record('hookarg', a);
      for (const e of h.env) if (e.indexOf('=') > 0) w.record('hookenv', e);
    }
  }
}

/**
 * kata-init `exec` plan: join `cgroupDirs` (cgroup v1 directories) and `namespaces` (all with
 * paths), chroot into `root` when given (a container sharing the helper's mount namespace:
 * /proc/<init>/root), and run `proc` under the container's `seccomp` filter.
 */
export function serializeExecPlan(namespaces: ValidNamespace[], proc: ValidProcessPlan, seccomp?: SeccompFilter, cgroupDirs: readonly string[] = [], root?: string): Buffer {
  const w = new PlanWriter();
  for (const d of cgroupDirs) w.record('cgroupjoin', d);
  for (const ns of namespaces) w.record('ns', ns.type, ns.path);
  if (root !== undefined) w.record('root', root);
  writeProcess(w, proc);
  writeSeccomp(w, seccomp);
  return w.toBuffer();
}

/** kata-init `sandbox` plan: persistent ipc/uts namespaces bound onto `files`. */
export function serializeSandboxPlan(hostname: string, files: { type: 'ipc' | 'uts'; path: string }[]): Buffer {
  const w = new PlanWriter();
  if (hostname !== '') w.record('hostname', hostname);
  for (const f of files) w.record('nsfile', f.type, f.path);
  return w.toBuffer();
}
