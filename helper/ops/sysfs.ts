/**
 * The sysfs family of guest ops: memory facts for GetGuestDetails, onlining hot-added CPUs and
 * memory blocks (OnlineCPUMem), and the memory probe (MemHotplugByProbe). Paths follow Kata
 * linux_abi.rs (SYSFS_CPU_PATH, SYSFS_MEMORY_*); the sysfs root is configurable so tests run
 * against a fake tree in a temp directory. The same class serves the real helper (root: /sys)
 * and the mock (root: a fake tree it creates, helper/mock/guest.ts).
 *
 * Every op re-validates its args (INVALID_ARGUMENT naming the bad value).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  Code,
  MAX_NB_CPUS,
  MAX_PROBE_ADDRESSES,
  StatusError,
  type EmptyResult,
  type MemHotplugProbeArgs,
  type MemoryInfoArgs,
  type MemoryInfoResult,
  type OnlineCpuMemArgs,
  type OnlineCpuMemResult,
} from '../../shared/protocol';
import { silentLogger, type Logger } from '../../shared/log';
import type { BackendReply } from '../api';
import { boolArg, checkArgs, errnoStatus, intArg } from './guest-args';

/** Retries of the CPU onlining loop and the pause between them (Kata sandbox.rs: 100 × 50 ms). */
export const ONLINE_CPU_RETRIES = 100;
export const ONLINE_CPU_WAIT_MS = 50;

const CPU_DIR_RE = /^cpu[0-9]+$/;
const MEMORY_DIR_RE = /^memory[0-9]+$/;
const HEX_ADDR_RE = /^0x[0-9a-fA-F]{1,16}$/;

/** Options of {@link SysfsOps}. */
export interface SysfsOptions {
  /** The sysfs mount point (default /sys). */
  root?: string;
  logger?: Logger;
  /** Pause between CPU onlining rounds, in ms (default {@link ONLINE_CPU_WAIT_MS}). */
  retryWaitMs?: number;
}

/** Read a small sysfs file; undefined when it does not exist. Other errors throw. */
function readOptional(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Entries of `dir` whose name matches `re`, sorted by their number (cpu2 before cpu10). */
function numberedEntries(dir: string, re: RegExp): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  return names.filter((n) => re.test(n)).sort((a, b) => Number(a.replace(/\D/g, '')) - Number(b.replace(/\D/g, '')));
}

/** The sysfs guest ops over a sysfs root. */
export class SysfsOps {
  readonly root: string;
  private readonly log: Logger;
  private readonly retryWaitMs: number;
  /** OnlineCPUMem calls are serialised (two concurrent rounds would double-count). */
  private onlining: Promise<unknown> = Promise.resolve();

  constructor(opts: SysfsOptions = {}) {
    this.root = path.resolve(opts.root ?? '/sys');
    this.log = (opts.logger ?? silentLogger()).child({ component: 'sysfs' });
    this.retryWaitMs = opts.retryWaitMs ?? ONLINE_CPU_WAIT_MS;
  }

  private get cpuDir(): string {
    return path.join(this.root, 'devices/system/cpu');
  }
  private get memoryDir(): string {
    return path.join(this.root, 'devices/system/memory');
  }

  /**
   * GetGuestDetails' memory facts (Kata rpc.rs get_memory_info): block_size_bytes parsed as hex
   * (missing file → 0; empty or unparsable → INTERNAL "invalid memory block size ..."), and
   * whether the probe file exists.
   */
  async memoryInfo(rawArgs: MemoryInfoArgs): Promise<BackendReply<MemoryInfoResult>> {
    const args = checkArgs(rawArgs, 'memoryInfo');
    const blockSize = boolArg(args.blockSize, 'memoryInfo.blockSize');
    const hotplugProbe = boolArg(args.hotplugProbe, 'memoryInfo.hotplugProbe');
    let blockSizeBytes = 0;
    if (blockSize) {
      const file = path.join(this.memoryDir, 'block_size_bytes');
      const text = readOptional(file);
      if (text !== undefined) {
        const t = text.trim();
        if (!/^(0x)?[0-9a-fA-F]{1,13}$/.test(t)) {
          throw new StatusError(Code.INTERNAL, `invalid memory block size ${JSON.stringify(t)} in ${file}`);
        }
        blockSizeBytes = parseInt(t.replace(/^0x/, ''), 16);
      }
    }
    const probe = hotplugProbe ? fs.existsSync(path.join(this.memoryDir, 'probe')) : false;
    return { result: { blockSizeBytes, hotplugProbe: probe } };
  }

  /**
   * Online hot-added CPUs then memory (Kata sandbox.rs online_cpu_memory):
   * - nbCpus > 0: while fewer than nbCpus CPUs are online, write "1" to the `online` file of
   *   offline cpuN entries (at most the missing number per round), re-count, and retry up to
   *   {@link ONLINE_CPU_RETRIES} rounds {@link ONLINE_CPU_WAIT_MS} apart; still short →
   *   DEADLINE_EXCEEDED "failed to online N CPU(s) after 100 retries" (upstream INTERNAL).
   * - unless cpuOnly: write "1" to every memoryN/online that reads "0" (one pass).
   * Online CPUs are counted from the cpuN entries (no `online` file = always online, as cpu0),
   * which equals the kernel's cpu/online mask; upstream parses cpu/online, a fake tree cannot
   * update it. Nothing offline → no write at all (the runtime sends {} after every container
   * create/start/update). Never touches cgroups: control fixes cpusets (a hook, none yet).
   */
  async onlineCpuMem(rawArgs: OnlineCpuMemArgs): Promise<BackendReply<OnlineCpuMemResult>> {
    const args = checkArgs(rawArgs, 'onlineCpuMem');
    const nbCpus = intArg(args.nbCpus, 'onlineCpuMem.nbCpus', 0, MAX_NB_CPUS);
    const cpuOnly = boolArg(args.cpuOnly, 'onlineCpuMem.cpuOnly');
    const run = this.onlining.then(() => this.online(nbCpus, cpuOnly));
    this.onlining = run.catch(() => undefined);
    return { result: await run };
  }

  private async online(nbCpus: number, cpuOnly: boolean): Promise<OnlineCpuMemResult> {
    let cpusOnlined = 0;
    let onlineCpus = this.countOnlineCpus();
    if (nbCpus > 0 && onlineCpus < nbCpus) {
      for (let round = 0; ; round++) {
        cpusOnlined += this.onlineEntries(this.cpuDir, CPU_DIR_RE, nbCpus - onlineCpus);
        onlineCpus = this.countOnlineCpus();
        if (onlineCpus >= nbCpus) {
          this.log.info({ onlineCpus, round }, 'CPUs onlined');
          break;
        }
        if (round + 1 >= ONLINE_CPU_RETRIES) {
          throw new StatusError(
            Code.DEADLINE_EXCEEDED,
            `failed to online ${nbCpus} CPU(s) after ${ONLINE_CPU_RETRIES} retries (${onlineCpus} online)`,
          );
        }
        await new Promise((r) => setTimeout(r, this.retryWaitMs));
      }
    }
    const memoryOnlined = cpuOnly ? 0 : this.onlineEntries(this.memoryDir, MEMORY_DIR_RE, -1);
    if (memoryOnlined > 0) this.log.info({ memoryOnlined }, 'memory blocks onlined');
    return { cpusOnlined, memoryOnlined, onlineCpus };
  }

  /** Online CPUs: cpuN entries whose `online` reads 1 or that have no `online` file. */
  private countOnlineCpus(): number {
    let n = 0;
    for (const name of numberedEntries(this.cpuDir, CPU_DIR_RE)) {
      const text = readOptional(path.join(this.cpuDir, name, 'online'));
      if (text === undefined || text.trim() === '1') n++;
    }
    return n;
  }

  /**
   * Write "1" to the `online` file of entries of `dir` matching `re` whose file reads "0", at
   * most `max` of them (-1 = all); failed writes are logged and skipped, as upstream. Returns
   * how many were switched.
   */
  private onlineEntries(dir: string, re: RegExp, max: number): number {
    let count = 0;
    for (const name of numberedEntries(dir, re)) {
      if (max >= 0 && count >= max) break;
      const file = path.join(dir, name, 'online');
      const text = readOptional(file);
      if (text === undefined || text.trim() !== '0') continue;
      try {
        fs.writeFileSync(file, '1');
        count++;
      } catch (err) {
        this.log.warn({ file, err: (err as Error).message }, 'could not online');
      }
    }
    return count;
  }

  /**
   * Write each address as "0x%X" to <sysfs>/devices/system/memory/probe, in order (Kata rpc.rs
   * do_mem_hotplug_by_probe). Addresses: "0x" + 1..16 hex digits, at most
   * {@link MAX_PROBE_ADDRESSES}. No probe file → FAILED_PRECONDITION (the kernel lacks
   * CONFIG_ARCH_MEMORY_PROBE); a refused write → INVALID_ARGUMENT naming the address.
   */
  async memHotplugProbe(rawArgs: MemHotplugProbeArgs): Promise<BackendReply<EmptyResult>> {
    const args = checkArgs(rawArgs, 'memHotplugProbe');
    const addrs = args.addresses;
    if (!Array.isArray(addrs) || addrs.length > MAX_PROBE_ADDRESSES) {
      throw new StatusError(Code.INVALID_ARGUMENT, `memHotplugProbe.addresses must be a list of at most ${MAX_PROBE_ADDRESSES} hex strings`);
    }
    for (const a of addrs) {
      if (typeof a !== 'string' || !HEX_ADDR_RE.test(a)) {
        throw new StatusError(Code.INVALID_ARGUMENT, `invalid memory probe address ${JSON.stringify(a)} (want 0x and 1 to 16 hex digits)`);
      }
    }
    const probe = path.join(this.memoryDir, 'probe');
    if (addrs.length > 0 && !fs.existsSync(probe)) {
      throw new StatusError(Code.FAILED_PRECONDITION, `${probe} does not exist: this guest kernel has no memory probe interface`);
    }
    for (const a of addrs as string[]) {
      const text = `0x${BigInt(a).toString(16).toUpperCase()}`;
      try {
        fs.writeFileSync(probe, text);
      } catch (err) {
        throw errnoStatus(err, `write ${text} to ${probe}`);
      }
    }
    return { result: {} };
  }
}
