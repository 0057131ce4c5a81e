/**
 * Container cgroups (cgroupfs manager), as upstream rustjail's cgroups/fs/mod.rs does without
 * systemd: detection of the hierarchies (v1, v2 unified, or hybrid: v1 controllers plus a v2
 * mount at /sys/fs/cgroup/unified), creation of a container's cgroup in every hierarchy,
 * resources (OCI config-linux.md#control-groups; v2 conversions as runc), joining processes,
 * kill-all + removal, raw stats.
 *
 * The same class drives the mock (helper/mock/backend.ts): `simulate` makes it write into an
 * ordinary directory tree (files created on write, membership appended, nothing killed) so the
 * control tests run without root.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { blkioToIoWeight, sharesToWeight } from '../../shared/cgroup';
import { Code, StatusError, type CgroupDeviceRule, type CgroupPlan, type CgroupResourcesPlan } from '../../shared/protocol';
import { silentLogger, type Logger } from '../../shared/log';
import type { DeviceProgramDriver } from './bpf-devices';

/** The cgroup hierarchies of the guest. */
export interface CgroupLayout {
  /** "none" when no cgroup filesystem is mounted. */
  mode: 'v1' | 'v2' | 'hybrid' | 'none';
  /** v1 controller → mount point (co-mounted controllers share one). */
  v1: Record<string, string>;
  /** The cgroup2 mount point, if any. */
  v2?: string;
  /** Controllers the v2 root offers (its cgroup.controllers). */
  v2Controllers: string[];
}

/** v1 controllers the manager uses. */
const V1_CONTROLLERS = ['cpu', 'cpuacct', 'cpuset', 'memory', 'devices', 'freezer', 'blkio', 'pids', 'hugetlb', 'net_cls', 'net_prio'];

/**
 * Parse /proc/self/mountinfo text into a {@link CgroupLayout}. `unified` (agent option
 * unified_cgroup_hierarchy) ignores every v1 hierarchy. `v2Controllers` is filled by the caller.
 */
export function parseCgroupMounts(mountinfo: string, unified = false): CgroupLayout {
  const v1: Record<string, string> = {};
  let v2: string | undefined;
  for (const line of mountinfo.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const pre = line.slice(0, sep).split(' ');
    const post = line.slice(sep + 3).split(' ');
    const mountPoint = (pre[4] ?? '').replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (post[0] === 'cgroup2') {
      if (v2 === undefined) v2 = mountPoint;
    } else if (post[0] === 'cgroup' && !unified) {
      for (const opt of (post[2] ?? '').split(',')) {
        if (V1_CONTROLLERS.includes(opt) && v1[opt] === undefined) v1[opt] = mountPoint;
      }
    }
  }
  const hasV1 = Object.keys(v1).length > 0;
  const mode = hasV1 ? (v2 ? 'hybrid' : 'v1') : v2 ? 'v2' : 'none';
  return { mode, v1, v2, v2Controllers: [] };
}

/** Read the guest's layout (mountinfo + the v2 root's cgroup.controllers). Never throws. */
export function detectCgroupLayout(unified = false, mountinfoPath = '/proc/self/mountinfo'): CgroupLayout {
  let text = '';
  try {
    text = fs.readFileSync(mountinfoPath, 'utf8');
  } catch {
    // no /proc: no cgroups
  }
  const layout = parseCgroupMounts(text, unified);
  if (layout.v2) {
    try {
      layout.v2Controllers = fs.readFileSync(path.join(layout.v2, 'cgroup.controllers'), 'utf8').trim().split(/\s+/).filter(Boolean);
    } catch {
      // unreadable: none
    }
  }
  return layout;
}

/** A container's cgroup: its directory in every hierarchy. */
export interface ContainerCgroup {
  path: string;
  /** Directories of the container's cgroup (one per distinct hierarchy), the v2 one last. */
  dirs: string[];
  /** v1 controller → directory. */
  v1: Record<string, string>;
  v2?: string;
  /** Directories this manager created (removed at the end), deepest last. */
  created: string[];
  /** Handle of the device program attached to the v2 dir (DeviceProgramDriver), if any. */
  deviceProgram?: number;
}

/** One write of a resource. */
interface CgroupWrite {
  /** v1 controller name, or "" for the v2 directory. */
  ctrl: string;
  file: string;
  value: string;
  /** OCI field, for errors. */
  field: string;
  /** Skip (with a warning) when the file does not exist (kernel without the feature). */
  optional?: boolean;
}

export interface CgroupManagerOptions {
  layout: CgroupLayout;
  logger?: Logger;
  /** Mock: write into an ordinary directory tree (files created on write), never kill. */
  simulate?: boolean;
  /** Bound of kill-all in ms (default 5000). */
  killTimeoutMs?: number;
  /** cgroup v2 device programs (helper/ops/bpf-devices.ts); absent: device rules need a v1 devices hierarchy. */
  devicePrograms?: DeviceProgramDriver;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Creates, configures, fills, empties and removes container cgroups in the hierarchies of a
 * {@link CgroupLayout}. Errors are StatusError: INVALID_ARGUMENT for a resource the kernel
 * refuses or lacks (naming the OCI field), ALREADY_EXISTS for a cgroup already holding
 * processes, FAILED_PRECONDITION without any cgroup filesystem.
 */
export class CgroupManager {
  readonly layout: CgroupLayout;
  private readonly log: Logger;
  private readonly simulate: boolean;
  private readonly killTimeoutMs: number;
  private readonly devicePrograms: DeviceProgramDriver | undefined;

  constructor(opts: CgroupManagerOptions) {
    this.layout = opts.layout;
    this.devicePrograms = opts.devicePrograms;
    this.log = (opts.logger ?? silentLogger()).child({ component: 'cgroup' });
    this.simulate = opts.simulate === true;
    this.killTimeoutMs = opts.killTimeoutMs ?? 5000;
  }

  /**
   * Create the container's cgroup at `plan.path` in every hierarchy and apply its resources
   * (upstream fs/mod.rs Manager::new + set). The cgroup must not hold processes already; the
   * helper's own cgroup must not be at or below it. On error, what was created is removed.
   */
  create(containerId: string, plan: CgroupPlan): ContainerCgroup {
    if (this.layout.mode === 'none') throw new StatusError(Code.FAILED_PRECONDITION, 'no cgroup filesystem is mounted in the guest');
    const rel = plan.path.replace(/^\/+/, '');
    const cg: ContainerCgroup = { path: plan.path, dirs: [], v1: {}, created: [] };
    try {
      const mounts = new Map<string, string>();
      for (const [ctrl, mp] of Object.entries(this.layout.v1)) {
        const dir = path.join(mp, rel);
        cg.v1[ctrl] = dir;
        mounts.set(dir, mp);
      }
      if (this.layout.v2) {
        cg.v2 = path.join(this.layout.v2, rel);
        mounts.set(cg.v2, this.layout.v2);
      }
      const own = this.ownCgroups();
      for (const [dir, mp] of mounts) {
        this.refuseOwnCgroup(own, mp, rel, plan.path);
        this.mkdirs(mp, rel, cg, mp === this.layout.v1.cpuset);
        // a directory made just now holds nobody: only one that was there needs the look
        if (!cg.created.includes(dir) && this.procs(dir).length > 0) {
          throw new StatusError(Code.ALREADY_EXISTS, `OCI.Linux.CgroupsPath ${JSON.stringify(plan.path)}: cgroup ${dir} already holds processes`);
        }
        cg.dirs.push(dir);
      }
      this.apply(cg, plan.resources);
      this.log.info({ containerId, path: plan.path, dirs: cg.dirs }, 'container cgroup created');
      return cg;
    } catch (err) {
      this.removeDirs(cg);
      throw err;
    }
  }

  /**
   * Whether device rules (CgroupResourcesPlan.devices) can be enforced: a v1 devices hierarchy,
   * or a cgroup2 mount and a kernel that loads device programs. On hybrid both apply.
   */
  enforcesDevices(): boolean {
    return this.layout.v1.devices !== undefined || this.v2DevicePrograms();
  }

  /** A cgroup2 mount and a kernel accepting device programs. */
  private v2DevicePrograms(): boolean {
    return this.layout.v2 !== undefined && this.devicePrograms !== undefined && this.devicePrograms.available();
  }

  /**
   * Move `pid` into the container's cgroup in every hierarchy (`only: 'v2'`: the cgroup2 one
   * only) through cgroup.procs. Throws INTERNAL on failure.
   */
  join(cg: ContainerCgroup, pid: number, only?: 'v2'): void {
    for (const dir of cg.dirs) {
      if (only === 'v2' && dir !== cg.v2) continue;
      try {
        if (this.simulate) fs.appendFileSync(path.join(dir, 'cgroup.procs'), `${pid}\n`);
        else fs.writeFileSync(path.join(dir, 'cgroup.procs'), `${pid}`, { flag: 'r+' });
      } catch (err) {
        throw new StatusError(Code.INTERNAL, `cannot move pid ${pid} into cgroup ${dir}: ${(err as Error).message}`);
      }
    }
  }

  /** Pids listed in a cgroup dir's cgroup.procs ([] when unreadable). */
  procs(dir: string): number[] {
    try {
      return fs
        .readFileSync(path.join(dir, 'cgroup.procs'), 'utf8')
        .split('\n')
        .filter(Boolean)
        .map(Number);
    } catch {
      return [];
    }
  }

  /** Every pid in any of the container's cgroup dirs. */
  allProcs(cg: ContainerCgroup): number[] {
    return [...new Set(cg.dirs.flatMap((d) => this.procs(d)))];
  }

  /**
   * Kill every process of the cgroup (upstream: the container's destroy kills cgroup.procs):
   * v2 cgroup.kill where the kernel has it; otherwise freeze (v1 freezer / v2 cgroup.freeze),
   * SIGKILL every listed pid, thaw, until empty. Resolves true when the cgroup is seen empty
   * within the bound. Never throws.
   */
  async killAll(cg: ContainerCgroup): Promise<boolean> {
    if (this.simulate) return true;
    const deadline = Date.now() + this.killTimeoutMs;
    const killFile = cg.v2 ? path.join(cg.v2, 'cgroup.kill') : '';
    for (let round = 0; ; round++) {
      const pids = this.allProcs(cg);
      if (pids.length === 0) return true;
      if (Date.now() > deadline) {
        this.log.warn({ path: cg.path, pids }, 'cgroup not empty after kill');
        return false;
      }
      if (killFile && this.tryWrite(killFile, '1')) {
        // the kernel kills every member, including ones forking meanwhile; a task frozen by
        // the v1 freezer (a paused container, hybrid layout) only dies once thawed
        if (cg.v1.freezer) this.tryWrite(path.join(cg.v1.freezer, 'freezer.state'), 'THAWED');
      } else {
        const freezer = cg.v1.freezer ? path.join(cg.v1.freezer, 'freezer.state') : cg.v2 ? path.join(cg.v2, 'cgroup.freeze') : '';
        const frozen = freezer !== '' && this.tryWrite(freezer, freezer.endsWith('freezer.state') ? 'FROZEN' : '1');
        for (const pid of this.allProcs(cg)) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // gone
          }
        }
        if (frozen) this.tryWrite(freezer, freezer.endsWith('freezer.state') ? 'THAWED' : '0');
      }
      await sleep(Math.min(5 + round * 5, 50));
    }
  }

  /** Remove the directories this manager created (deepest first). Never throws; returns the ones left. */
  remove(cg: ContainerCgroup): string[] {
    return this.removeDirs(cg);
  }

  /**
   * Raw values of the container's memory, cpu, pids, blkio/io and hugetlb files (cgroupStats
   * op; upstream rustjail cgroups/fs/mod.rs get_stats reads the same files): v1 names from the
   * v1 hierarchies, v2 names from the v2 dir (a name is read from the first place that has it).
   */
  stats(cg: ContainerCgroup): Record<string, string> {
    const files: [string, string][] = [];
    const v1 = (ctrl: string, names: string[]): void => {
      const dir = cg.v1[ctrl];
      if (dir) for (const n of names) files.push([n, path.join(dir, n)]);
    };
    const mem = ['usage_in_bytes', 'max_usage_in_bytes', 'limit_in_bytes', 'failcnt'];
    v1('memory', [...mem.map((m) => `memory.${m}`), ...mem.map((m) => `memory.memsw.${m}`), ...mem.map((m) => `memory.kmem.${m}`), 'memory.stat', 'memory.use_hierarchy', 'memory.oom_control']);
    v1('cpuacct', ['cpuacct.usage', 'cpuacct.stat', 'cpuacct.usage_percpu', 'cpuacct.usage_user', 'cpuacct.usage_sys']);
    v1('cpu', ['cpu.stat']);
    v1('pids', ['pids.current', 'pids.max']);
    v1('blkio', [
      'blkio.io_service_bytes_recursive', 'blkio.io_serviced_recursive', 'blkio.io_queued_recursive', 'blkio.io_service_time_recursive',
      'blkio.io_wait_time_recursive', 'blkio.io_merged_recursive', 'blkio.time_recursive', 'blkio.sectors_recursive',
      'blkio.throttle.io_service_bytes_recursive', 'blkio.throttle.io_serviced_recursive',
    ]);
    const hugeSizes = this.hugepageSizes();
    v1('hugetlb', hugeSizes.flatMap((h) => [`hugetlb.${h}.usage_in_bytes`, `hugetlb.${h}.max_usage_in_bytes`, `hugetlb.${h}.failcnt`]));
    if (cg.v2) {
      const v2names = [
        'memory.current', 'memory.max', 'memory.peak', 'memory.stat', 'memory.events', 'memory.swap.current', 'memory.swap.max',
        'cpu.stat', 'pids.current', 'pids.max', 'io.stat',
        ...hugeSizes.flatMap((h) => [`hugetlb.${h}.current`, `hugetlb.${h}.max`, `hugetlb.${h}.events`]),
      ];
      for (const n of v2names) {
        if (!files.some(([k]) => k === n)) files.push([n, path.join(cg.v2, n)]);
      }
    }
    const out: Record<string, string> = {};
    for (const [name, file] of files) {
      try {
        out[name] = fs.readFileSync(file, 'utf8').trim();
      } catch {
        // absent on this kernel
      }
    }
    return out;
  }

  /**
   * Apply new resources to an existing cgroup (UpdateContainer; upstream rpc.rs
   * do_update_container → cgroups/fs/mod.rs set). Same writes and errors as at create
   * (INVALID_ARGUMENT naming the OCI field and file); what was written before a failing write stays.
   */
  update(cg: ContainerCgroup, res: CgroupResourcesPlan): void {
    this.apply(cg, res);
  }

  /**
   * Freeze (`frozen` true) or thaw the cgroup and wait until the kernel reports the state
   * (upstream fs/mod.rs freeze: v1 freezer.state FROZEN/THAWED, re-written while FREEZING; v2
   * cgroup.freeze, waiting for `frozen 1`/`frozen 0` in cgroup.events). The v1 freezer is used
   * when mounted, else v2. Bounded by `timeoutMs`: a freeze not reached is undone and
   * DEADLINE_EXCEEDED naming the state seen; FAILED_PRECONDITION when there is no freezer.
   */
  async freeze(cg: ContainerCgroup, frozen: boolean, timeoutMs = 5000): Promise<void> {
    const v1 = cg.v1.freezer;
    const file = v1 ? path.join(v1, 'freezer.state') : cg.v2 ? path.join(cg.v2, 'cgroup.freeze') : '';
    if (file === '') throw new StatusError(Code.FAILED_PRECONDITION, `cgroup ${cg.path}: no freezer (neither v1 freezer nor cgroup v2)`);
    const want = v1 ? (frozen ? 'FROZEN' : 'THAWED') : frozen ? '1' : '0';
    const reached = (): string => {
      if (v1) return this.read(file);
      const m = /^frozen ([01])$/m.exec(this.read(path.join(cg.v2 ?? '', 'cgroup.events')));
      return m ? m[1] : '';
    };
    const write = (value: string): void => {
      try {
        if (this.simulate) {
          fs.writeFileSync(file, value);
          if (!v1 && cg.v2) fs.writeFileSync(path.join(cg.v2, 'cgroup.events'), `populated 1\nfrozen ${value}\n`);
        } else fs.writeFileSync(file, value, { flag: 'r+' });
      } catch (err) {
        throw new StatusError(Code.INTERNAL, `cannot write ${value} to ${file}: ${(err as Error).message}`);
      }
    };
    write(want);
    const deadline = Date.now() + timeoutMs;
    for (let round = 0; ; round++) {
      const state = reached();
      if (state === want) return;
      if (Date.now() > deadline) {
        if (frozen) this.tryWrite(file, v1 ? 'THAWED' : '0');
        throw new StatusError(Code.DEADLINE_EXCEEDED, `cgroup ${cg.path}: ${file} is ${JSON.stringify(state)}, not ${want} after ${timeoutMs} ms`);
      }
      await sleep(Math.min(1 + round * 2, 20));
      // v1: a FREEZING cgroup may need the write again (a task was forking), as runc does
      if (v1 && frozen) write(want);
    }
  }

  /**
   * OOM kills counted by the kernel for the cgroup: v1 memory.oom_control `oom_kill` (Linux ≥
   * 4.13) where memory is a v1 hierarchy, else v2 memory.events `oom_kill`. -1 when unreadable.
   */
  oomKills(cg: ContainerCgroup): number {
    const file = cg.v1.memory ? path.join(cg.v1.memory, 'memory.oom_control') : cg.v2 ? path.join(cg.v2, 'memory.events') : '';
    if (file === '') return -1;
    const m = /^oom_kill ([0-9]+)$/m.exec(this.read(file));
    return m ? Number(m[1]) : -1;
  }

  /** Huge page sizes of the guest as cgroup file names use them ("2MB", "1GB"); [] when none. */
  private hugepageSizes(): string[] {
    try {
      return fs
        .readdirSync('/sys/kernel/mm/hugepages')
        .map((d) => /^hugepages-([0-9]+)kB$/.exec(d))
        .filter((m): m is RegExpExecArray => m !== null)
        .map((m) => {
          const kb = Number(m[1]);
          return kb >= 1048576 ? `${kb / 1048576}GB` : kb >= 1024 ? `${kb / 1024}MB` : `${kb}KB`;
        });
    } catch {
      return [];
    }
  }

  // -------------------------------------------------------------------------------------------

  /** Lines of /proc/self/cgroup ([] in simulation or when unreadable). */
  private ownCgroups(): string[] {
    if (this.simulate) return [];
    try {
      return fs.readFileSync('/proc/self/cgroup', 'utf8').split('\n');
    } catch {
      return [];
    }
  }

  /** The helper's own cgroup (`own`: {@link ownCgroups}) must not be at or below the container's (kill-all would hit it). */
  private refuseOwnCgroup(own: readonly string[], mp: string, rel: string, p: string): void {
    const isV2 = mp === this.layout.v2;
    const ctrls = Object.entries(this.layout.v1)
      .filter(([, m]) => m === mp)
      .map(([c]) => c);
    for (const line of own) {
      const [, list = '', cpath = ''] = line.split(':');
      const match = isV2 ? list === '' && line.startsWith('0::') : list.split(',').some((c) => ctrls.includes(c));
      if (!match) continue;
      const mine = cpath.replace(/^\/+/, '');
      if (mine === rel || mine.startsWith(rel + '/')) {
        throw new StatusError(Code.INVALID_ARGUMENT, `OCI.Linux.CgroupsPath ${JSON.stringify(p)}: the agent's own cgroup is at or below it`);
      }
    }
  }

  /** mkdir -p below `mp`, recording what was created; cpuset dirs get their parent's cpus/mems (v1). */
  private mkdirs(mp: string, rel: string, cg: ContainerCgroup, cpuset: boolean): void {
    let dir = mp;
    for (const c of rel.split('/')) {
      const parent = dir;
      dir = path.join(dir, c);
      try {
        fs.mkdirSync(dir, { mode: 0o755 });
        cg.created.push(dir);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
          throw new StatusError(Code.INTERNAL, `cannot create cgroup ${dir}: ${(err as Error).message}`);
        }
      }
      if (cpuset && !this.simulate) {
        for (const f of ['cpuset.cpus', 'cpuset.mems']) {
          const cur = this.read(path.join(dir, f));
          if (cur === '') this.tryWrite(path.join(dir, f), this.read(path.join(parent, f)));
        }
      }
    }
  }

  private removeDirs(cg: ContainerCgroup): string[] {
    // removing the cgroup detaches its program; a cgroup dir we did not create stays, so the
    // program is detached from it (the next container there must not inherit our rules)
    if (cg.deviceProgram !== undefined && this.devicePrograms) {
      if (cg.v2 && !cg.created.includes(cg.v2)) {
        try {
          this.devicePrograms.detach(cg.v2, cg.deviceProgram);
        } catch (err) {
          this.log.warn({ err, dir: cg.v2 }, 'cannot detach the device program');
        }
      } else this.devicePrograms.release(cg.deviceProgram);
    }
    cg.deviceProgram = undefined;
    const left: string[] = [];
    for (const dir of [...cg.created].reverse()) {
      try {
        if (this.simulate) fs.rmSync(dir, { recursive: true, force: true });
        else fs.rmdirSync(dir);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') continue;
        // a parent shared with another container is busy: not ours to remove now
        if (code === 'EBUSY' && !cg.dirs.includes(dir)) continue;
        left.push(dir);
        this.log.warn({ err, dir }, 'cannot remove cgroup dir');
      }
    }
    return left;
  }

  private read(file: string): string {
    try {
      return fs.readFileSync(file, 'utf8').trim();
    } catch {
      return '';
    }
  }

  private tryWrite(file: string, value: string): boolean {
    try {
      fs.writeFileSync(file, value, { flag: 'r+' });
      return true;
    } catch {
      return false;
    }
  }

  /** Write the resources (v1 files where the controller is a v1 hierarchy, else v2 files). */
  private apply(cg: ContainerCgroup, res: CgroupResourcesPlan): void {
    if (cg.v2 && !this.simulate) this.enableV2Controllers(cg, res);
    for (const w of this.writes(cg, res)) {
      const dir = w.ctrl === '' ? cg.v2 : cg.v1[w.ctrl];
      if (!dir) {
        if (w.optional) {
          this.log.warn({ field: w.field, controller: w.ctrl }, 'cgroup controller not mounted: resource ignored');
          continue;
        }
        throw new StatusError(Code.INVALID_ARGUMENT, `${w.field}: the guest has no ${w.ctrl || 'cgroup v2'} hierarchy to apply it`);
      }
      const file = path.join(dir, w.file);
      try {
        if (this.simulate) fs.writeFileSync(file, w.value);
        else fs.writeFileSync(file, w.value, { flag: 'r+' });
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' && w.optional) {
          this.log.warn({ field: w.field, file }, 'cgroup file absent on this kernel: resource ignored');
          continue;
        }
        const why = code === 'ENOENT' ? 'this kernel has no such cgroup file' : (err as Error).message;
        throw new StatusError(Code.INVALID_ARGUMENT, `${w.field}: writing ${JSON.stringify(w.value)} to ${file} failed: ${why}`);
      }
    }
    if (res.devices !== undefined && cg.v2 && this.v2DevicePrograms()) this.attachDeviceProgram(cg, cg.v2, res.devices);
  }

  /**
   * cgroup v2 device rules: attach the program of `rules` to `dir`, then detach the one attached
   * before (UpdateContainer), so there is no moment without a program. FAILED_PRECONDITION
   * naming the field when the kernel refuses it.
   */
  private attachDeviceProgram(cg: ContainerCgroup, dir: string, rules: readonly CgroupDeviceRule[]): void {
    const driver = this.devicePrograms;
    if (!driver) return;
    let handle: number;
    try {
      handle = driver.attach(dir, rules);
    } catch (err) {
      throw new StatusError(Code.FAILED_PRECONDITION, `OCI.Linux.Resources.Devices: cannot attach the cgroup v2 device program to ${dir}: ${(err as Error).message}`);
    }
    const old = cg.deviceProgram;
    cg.deviceProgram = handle;
    if (old !== undefined) {
      try {
        driver.detach(dir, old);
      } catch (err) {
        this.log.warn({ err, dir }, 'cannot detach the previous device program (the new one applies too)');
      }
    }
  }

  /** v2: enable, from the root down to the container's parent, the controllers the resources need. */
  private enableV2Controllers(cg: ContainerCgroup, res: CgroupResourcesPlan): void {
    const v2 = this.layout.v2;
    if (!v2 || !cg.v2) return;
    const want = new Set<string>();
    for (const w of this.writes(cg, res)) if (w.ctrl === '') want.add(w.file.split('.')[0]);
    const enable = [...want].filter((c) => this.layout.v2Controllers.includes(c));
    if (enable.length === 0) return;
    let dir = v2;
    for (const c of path.relative(v2, cg.v2).split('/')) {
      this.tryWrite(path.join(dir, 'cgroup.subtree_control'), enable.map((e) => `+${e}`).join(' '));
      dir = path.join(dir, c);
    }
  }

  /** Where a controller's files live: "" = the v2 dir, else the v1 controller; undefined = nowhere. */
  private owner(ctrl: string): string | undefined {
    if (this.layout.v1[ctrl]) return ctrl;
    if (this.layout.v2 && (this.simulate || this.layout.v2Controllers.includes(ctrl))) return '';
    return undefined;
  }

  /** The file writes for `res`, in order (period before quota, limit before memsw). */
  private writes(cg: ContainerCgroup, res: CgroupResourcesPlan): CgroupWrite[] {
    const R = 'OCI.Linux.Resources';
    const out: CgroupWrite[] = [];
    const add = (ctrl: string, v1: [string, string] | undefined, v2: [string, string] | undefined, field: string, optional = false): void => {
      const o = this.owner(ctrl);
      if (o === undefined) {
        out.push({ ctrl, file: (v1 ?? v2 ?? ['', ''])[0], value: '', field, optional });
        return;
      }
      const pick = o === '' ? v2 : v1;
      if (!pick) {
        this.log.warn({ field }, `not applicable to cgroup ${o === '' ? 'v2' : 'v1'}: ignored`);
        return;
      }
      out.push({ ctrl: o, file: pick[0], value: pick[1], field, optional });
    };
    const max = (v: number): string => (v < 0 ? 'max' : String(v));
    const m = res.memory;
    if (m) {
      if (m.limit) add('memory', ['memory.limit_in_bytes', String(m.limit)], ['memory.max', max(m.limit)], `${R}.Memory.Limit`);
      if (m.reservation) add('memory', ['memory.soft_limit_in_bytes', String(m.reservation)], ['memory.low', max(m.reservation)], `${R}.Memory.Reservation`);
      if (m.swap) {
        const v2swap = m.swap < 0 ? 'max' : String(Math.max(0, m.swap - (m.limit && m.limit > 0 ? m.limit : 0)));
        add('memory', ['memory.memsw.limit_in_bytes', String(m.swap)], ['memory.swap.max', v2swap], `${R}.Memory.Swap`, true);
      }
      if (m.kernel) add('memory', ['memory.kmem.limit_in_bytes', String(m.kernel)], undefined, `${R}.Memory.Kernel`, true);
      if (m.kernelTcp) add('memory', ['memory.kmem.tcp.limit_in_bytes', String(m.kernelTcp)], undefined, `${R}.Memory.KernelTCP`, true);
      if (m.swappiness !== undefined) add('memory', ['memory.swappiness', String(m.swappiness)], undefined, `${R}.Memory.Swappiness`);
      if (m.disableOomKiller) add('memory', ['memory.oom_control', '1'], undefined, `${R}.Memory.DisableOOMKiller`);
    }
    const c = res.cpu;
    if (c) {
      if (c.shares) add('cpu', ['cpu.shares', String(c.shares)], ['cpu.weight', String(sharesToWeight(c.shares))], `${R}.CPU.Shares`);
      if (c.period) add('cpu', ['cpu.cfs_period_us', String(c.period)], undefined, `${R}.CPU.Period`);
      if (c.quota || (c.period && this.owner('cpu') === '')) {
        const quota = c.quota ?? 0;
        add('cpu', c.quota ? ['cpu.cfs_quota_us', String(quota)] : undefined, [`cpu.max`, `${quota > 0 ? quota : 'max'} ${c.period ?? 100000}`], `${R}.CPU.Quota`);
      }
      if (c.realtimePeriod) add('cpu', ['cpu.rt_period_us', String(c.realtimePeriod)], undefined, `${R}.CPU.RealtimePeriod`);
      if (c.realtimeRuntime) add('cpu', ['cpu.rt_runtime_us', String(c.realtimeRuntime)], undefined, `${R}.CPU.RealtimeRuntime`);
      if (c.cpus) add('cpuset', ['cpuset.cpus', c.cpus], ['cpuset.cpus', c.cpus], `${R}.CPU.Cpus`);
      if (c.mems) add('cpuset', ['cpuset.mems', c.mems], ['cpuset.mems', c.mems], `${R}.CPU.Mems`);
    }
    if (res.pids && res.pids.limit !== 0) add('pids', ['pids.max', max(res.pids.limit)], ['pids.max', max(res.pids.limit)], `${R}.Pids.Limit`);
    const b = res.blockIo;
    if (b) {
      if (b.weight) add('blkio', ['blkio.weight', String(b.weight)], ['io.weight', `default ${blkioToIoWeight(b.weight)}`], `${R}.BlockIO.Weight`);
      if (b.leafWeight) add('blkio', ['blkio.leaf_weight', String(b.leafWeight)], undefined, `${R}.BlockIO.LeafWeight`);
      for (const d of b.weightDevice ?? []) {
        add('blkio', ['blkio.weight_device', `${d.major}:${d.minor} ${d.value}`], ['io.weight', `${d.major}:${d.minor} ${blkioToIoWeight(d.value)}`], `${R}.BlockIO.WeightDevice`);
      }
      for (const [list, v1, key, f] of [
        [b.throttleReadBps, 'blkio.throttle.read_bps_device', 'rbps', 'ThrottleReadBpsDevice'],
        [b.throttleWriteBps, 'blkio.throttle.write_bps_device', 'wbps', 'ThrottleWriteBpsDevice'],
        [b.throttleReadIops, 'blkio.throttle.read_iops_device', 'riops', 'ThrottleReadIOPSDevice'],
        [b.throttleWriteIops, 'blkio.throttle.write_iops_device', 'wiops', 'ThrottleWriteIOPSDevice'],
      ] as const) {
        for (const d of list ?? []) add('blkio', [v1, `${d.major}:${d.minor} ${d.value}`], ['io.max', `${d.major}:${d.minor} ${key}=${d.value}`], `${R}.BlockIO.${f}`);
      }
    }
    for (const [i, h] of (res.hugepageLimits ?? []).entries()) {
      add('hugetlb', [`hugetlb.${h.pageSize}.limit_in_bytes`, String(h.limit)], [`hugetlb.${h.pageSize}.max`, String(h.limit)], `${R}.HugepageLimits[${i}]`);
    }
    const n = res.network;
    if (n) {
      if (n.classId) add('net_cls', ['net_cls.classid', String(n.classId)], undefined, `${R}.Network.ClassID`, true);
      for (const p of n.priorities ?? []) add('net_prio', ['net_prio.ifpriomap', `${p.name} ${p.priority}`], undefined, `${R}.Network.Priorities`, true);
    }
    if (res.devices !== undefined) {
      // Upstream rustjail setup_devcg_whitelist: deny everything, then the rules in order. On
      // cgroup v2 (and on hybrid in addition) a device program is attached by apply().
      if (!this.enforcesDevices() || (!cg.v1.devices && !cg.v2)) {
        throw new StatusError(Code.FAILED_PRECONDITION, `${R}.Devices: the guest has neither a v1 devices cgroup hierarchy nor cgroup v2 device programs (BPF_PROG_TYPE_CGROUP_DEVICE) to enforce device rules`);
      }
    }
    if (res.devices !== undefined && cg.v1.devices) {
      out.push({ ctrl: 'devices', file: 'devices.deny', value: 'a', field: `${R}.Devices` });
      for (const [i, d] of res.devices.entries()) {
        const id = (v: number): string => (v < 0 ? '*' : String(v));
        const value = d.type === 'a' ? 'a' : `${d.type} ${id(d.major)}:${id(d.minor)} ${d.access}`;
        out.push({ ctrl: 'devices', file: d.allow ? 'devices.allow' : 'devices.deny', value, field: `${R}.Devices[${i}]` });
      }
    }
    for (const [k, v] of Object.entries(res.unified ?? {})) {
      if (!cg.v2) throw new StatusError(Code.INVALID_ARGUMENT, `${R}.Unified.${k}: the guest has no cgroup v2 hierarchy`);
      out.push({ ctrl: '', file: k, value: v, field: `${R}.Unified.${k}` });
    }
    return out;
  }
}
