/**
 * watchable-bind storages (Kata agent watcher.rs at 6e4d4c329a): virtio-fs and 9p do not deliver
 * inotify events for host-side changes, so small volumes (Kubernetes configMaps and secrets) are
 * copied into a tmpfs mounted on <kata dir>/shared/containers/watchable and re-synced every
 * 2 s: new or changed (mtime, size) files and symlinks are copied with their mode and owner,
 * directories created, removed entries deleted. A volume of more than 16 entries or 1 MiB is
 * bind-mounted instead and no longer watched, as upstream.
 *
 * Writes never follow a symlink planted in a target: files are written to a temporary name and
 * renamed into place, and every parent directory is checked to be a real directory.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Code, StatusError } from '../../shared/protocol';
import { silentLogger, type Logger } from '../../shared/log';
import { MS, type Mounter } from './mount';

/** Upstream limits: entries per watched volume and total bytes. */
export const WATCH_MAX_ENTRIES = 16;
export const WATCH_MAX_BYTES = 1024 * 1024;
/** Upstream's polling interval, in ms. */
export const WATCH_INTERVAL_MS = 2000;

interface Watched {
  source: string;
  target: string;
  /** path relative to source → "mtimeMs:size" last copied. */
  seen: Map<string, string>;
  /** Bind-mounted (too large): no more syncing. */
  bound: boolean;
}

export interface BindWatcherOptions {
  mounter: Mounter;
  /** <kata dir>/shared/containers/watchable. */
  watchableDir: string;
  intervalMs?: number;
  logger?: Logger;
}

/** The sandbox's watcher; one entry list per container. */
export class BindWatcher {
  private readonly byOwner = new Map<string, Watched[]>();
  private timer: NodeJS.Timeout | undefined;
  private mounted = false;
  private readonly log: Logger;
  private readonly intervalMs: number;

  constructor(private readonly opts: BindWatcherOptions) {
    this.log = (opts.logger ?? silentLogger()).child({ component: 'watcher' });
    this.intervalMs = opts.intervalMs ?? WATCH_INTERVAL_MS;
  }

  /**
   * Start watching `source` into `target` for container `owner`. The first use mounts the
   * watchable tmpfs (FAILED_PRECONDITION "watchable mount source not found" when its directory
   * is missing, as upstream). The first sync happens before this returns.
   */
  add(owner: string, source: string, target: string): void {
    if (!target.startsWith(this.opts.watchableDir + '/')) {
      throw new StatusError(Code.INVALID_ARGUMENT, `watchable-bind mount point ${target} is not below ${this.opts.watchableDir}`);
    }
    if (!this.mounted) {
      if (!fs.existsSync(this.opts.watchableDir)) throw new StatusError(Code.FAILED_PRECONDITION, `watchable mount source not found: ${this.opts.watchableDir}`);
      this.opts.mounter.mount('tmpfs', this.opts.watchableDir, 'tmpfs', MS.NOSUID | MS.NODEV, 'mode=755');
      this.mounted = true;
    }
    const w: Watched = { source, target, seen: new Map(), bound: false };
    this.sync(w);
    const list = this.byOwner.get(owner) ?? [];
    list.push(w);
    this.byOwner.set(owner, list);
    if (!this.timer) {
      this.timer = setInterval(() => this.tick(), this.intervalMs);
      this.timer.unref();
    }
  }

  /** Stop watching for `owner`; unmount its binds and delete its targets. */
  remove(owner: string): void {
    for (const w of this.byOwner.get(owner) ?? []) {
      try {
        if (w.bound) this.opts.mounter.umount(w.target);
        fs.rmSync(w.target, { recursive: true, force: true });
      } catch (err) {
        this.log.warn({ err, target: w.target }, 'removing a watched target failed');
      }
    }
    this.byOwner.delete(owner);
    if (this.byOwner.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  /** Stop everything and unmount the watchable tmpfs. */
  close(): void {
    for (const owner of [...this.byOwner.keys()]) this.remove(owner);
    if (this.mounted) {
      try {
        this.opts.mounter.umount(this.opts.watchableDir);
      } catch (err) {
        this.log.warn({ err }, 'unmounting the watchable tmpfs failed');
      }
      this.mounted = false;
    }
  }

  private tick(): void {
    for (const list of this.byOwner.values()) {
      for (const w of list) {
        if (w.bound) continue;
        try {
          this.sync(w);
        } catch (err) {
          this.log.warn({ err, source: w.source }, 'watchable sync failed');
        }
      }
    }
  }

  /** Entries of `source` (relative paths, lstat'ed), or undefined once over the limits. */
  private scan(source: string): Map<string, fs.Stats> | undefined {
    const out = new Map<string, fs.Stats>();
    let bytes = 0;
    const walk = (rel: string): boolean => {
      const st = fs.lstatSync(path.join(source, rel));
      if (rel !== '') {
        out.set(rel, st);
        if (out.size > WATCH_MAX_ENTRIES) return false;
      }
      if (st.isFile()) bytes += st.size;
      if (bytes > WATCH_MAX_BYTES) return false;
      if (st.isDirectory()) {
        for (const name of fs.readdirSync(path.join(source, rel)).sort()) if (!walk(rel === '' ? name : `${rel}/${name}`)) return false;
      }
      return true;
    };
    return walk('') ? out : undefined;
  }

  private sync(w: Watched): void {
    const rootSt = fs.lstatSync(w.source);
    const entries = this.scan(w.source);
    if (!entries) {
      this.log.info({ source: w.source }, 'watchable volume over the limits: bind-mounting it instead');
      fs.rmSync(w.target, { recursive: true, force: true });
      if (rootSt.isDirectory()) fs.mkdirSync(w.target, { recursive: true });
      else fs.writeFileSync(w.target, '');
      this.opts.mounter.mount(w.source, w.target, '', MS.BIND | MS.REC, '');
      w.bound = true;
      return;
    }
    if (rootSt.isFile()) {
      this.copyEntry(w, '', rootSt, w.source, w.target);
      return;
    }
    this.ensureDir(w.target, rootSt);
    for (const [rel, st] of entries) {
      this.copyEntry(w, rel, st, path.join(w.source, rel), path.join(w.target, rel));
    }
    for (const rel of [...w.seen.keys()]) {
      if (rel !== '' && !entries.has(rel)) {
        fs.rmSync(path.join(w.target, rel), { recursive: true, force: true });
        w.seen.delete(rel);
      }
    }
  }

  private ensureDir(dir: string, st: fs.Stats): void {
    const cur = lstatOrUndefined(dir);
    if (cur && !cur.isDirectory()) fs.rmSync(dir, { force: true });
    if (!cur || !cur.isDirectory()) fs.mkdirSync(dir, { mode: st.mode & 0o7777 });
    fs.chmodSync(dir, st.mode & 0o7777);
    fs.lchownSync(dir, st.uid, st.gid);
  }

  private copyEntry(w: Watched, rel: string, st: fs.Stats, from: string, to: string): void {
    const parent = path.dirname(to);
    if (fs.realpathSync(parent) !== parent) throw new StatusError(Code.FAILED_PRECONDITION, `watchable target ${parent} is not a plain directory`);
    const stamp = `${st.mtimeMs}:${st.size}:${st.mode}`;
    if (st.isDirectory()) {
      this.ensureDir(to, st);
      w.seen.set(rel, stamp);
      return;
    }
    if (w.seen.get(rel) === stamp && lstatOrUndefined(to)) return;
    const tmp = path.join(parent, `.kata-watch-${process.pid}-${path.basename(to)}`);
    fs.rmSync(tmp, { force: true, recursive: true });
    if (st.isSymbolicLink()) {
      fs.symlinkSync(fs.readlinkSync(from), tmp);
    } else if (st.isFile()) {
      fs.copyFileSync(from, tmp);
      fs.chmodSync(tmp, st.mode & 0o7777);
    } else {
      return; // devices, fifos and sockets are not copied
    }
    fs.lchownSync(tmp, st.uid, st.gid);
    const cur = lstatOrUndefined(to);
    if (cur?.isDirectory()) fs.rmSync(to, { recursive: true, force: true });
    fs.renameSync(tmp, to);
    w.seen.set(rel, stamp);
  }
}

function lstatOrUndefined(p: string): fs.Stats | undefined {
  try {
    return fs.lstatSync(p);
  } catch {
    return undefined;
  }
}
