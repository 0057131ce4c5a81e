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
import * as crypto from 'node:crypto';
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
        this.removeTarget(w);
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
      this.removeTarget(w);
      if (rootSt.isDirectory()) fs.mkdirSync(w.target, { recursive: true });
      else fs.writeFileSync(w.target, '');
      this.opts.mounter.mount(w.source, w.target, '', MS.BIND | MS.REC, '');
      w.bound = true;
      return;
    }
    // The target's own entry lives in the helper's watchable tmpfs; everything below it may be
    // the container's (a rw mount), so it is only ever reached through directory fds opened
    // without following symlinks, and written by name relative to them.
    const top = openNoFollow(this.opts.watchableDir, path.dirname(w.target));
    try {
      if (rootSt.isFile()) {
        this.copyEntry(w, '', rootSt, w.source, top, path.basename(w.target));
        return;
      }
      this.ensureDir(top, path.basename(w.target), rootSt);
    } finally {
      fs.closeSync(top);
    }
    for (const [rel, st] of entries) {
      this.inParent(w, rel, (dirFd, name) => this.copyEntry(w, rel, st, path.join(w.source, rel), dirFd, name));
    }
    for (const rel of [...w.seen.keys()]) {
      if (rel !== '' && !entries.has(rel)) {
        try {
          this.inParent(w, rel, removeTreeAt);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err; // its parent went first
        }
        w.seen.delete(rel);
      }
    }
  }

  /** Delete the target's own entry and everything below it (never following a symlink). */
  private removeTarget(w: Watched): void {
    const top = openNoFollow(this.opts.watchableDir, path.dirname(w.target));
    try {
      removeTreeAt(top, path.basename(w.target));
    } finally {
      fs.closeSync(top);
    }
  }

  /** Run `fn` with an fd of the directory holding target entry `rel` (opened without following symlinks) and its name. */
  private inParent(w: Watched, rel: string, fn: (dirFd: number, name: string) => void): void {
    let fd = openNoFollow(w.target, w.target);
    try {
      const parts = rel.split('/');
      for (const [i, part] of parts.slice(0, -1).entries()) {
        const next = openNoFollow(path.join(w.target, ...parts.slice(0, i + 1)), fdPath(fd, part), rel);
        fs.closeSync(fd);
        fd = next;
      }
      fn(fd, parts[parts.length - 1]);
    } finally {
      fs.closeSync(fd);
    }
  }

  private ensureDir(dirFd: number, name: string, st: fs.Stats): void {
    const p = fdPath(dirFd, name);
    const cur = lstatOrUndefined(p);
    if (cur && !cur.isDirectory()) fs.rmSync(p, { force: true });
    if (!cur || !cur.isDirectory()) fs.mkdirSync(p, { mode: st.mode & 0o7777 });
    const fd = openNoFollow(name, p);
    try {
      fs.fchmodSync(fd, st.mode & 0o7777);
      fs.fchownSync(fd, st.uid, st.gid);
    } finally {
      fs.closeSync(fd);
    }
  }

  private copyEntry(w: Watched, rel: string, st: fs.Stats, from: string, dirFd: number, name: string): void {
    const stamp = `${st.mtimeMs}:${st.size}:${st.mode}`;
    if (st.isDirectory()) {
      this.ensureDir(dirFd, name, st);
      w.seen.set(rel, stamp);
      return;
    }
    const to = fdPath(dirFd, name);
    if (w.seen.get(rel) === stamp && lstatOrUndefined(to)) return;
    // A fresh random name created exclusively: nothing the container planted is followed.
    const tmp = fdPath(dirFd, `.kata-watch-${crypto.randomBytes(8).toString('hex')}`);
    if (st.isSymbolicLink()) {
      fs.symlinkSync(fs.readlinkSync(from), tmp);
      fs.lchownSync(tmp, st.uid, st.gid);
    } else if (st.isFile()) {
      const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
      try {
        fs.writeFileSync(fd, fs.readFileSync(from));
        fs.fchownSync(fd, st.uid, st.gid);
        fs.fchmodSync(fd, st.mode & 0o7777);
      } finally {
        fs.closeSync(fd);
      }
    } else {
      return; // devices, fifos and sockets are not copied
    }
    const cur = lstatOrUndefined(to);
    if (cur?.isDirectory()) removeTreeAt(dirFd, name);
    fs.renameSync(tmp, to);
    w.seen.set(rel, stamp);
  }
}

/** /proc/self/fd/<dirFd>/<name>: `name` looked up relative to the open directory, like openat. */
function fdPath(dirFd: number, name: string): string {
  return `/proc/self/fd/${dirFd}/${name}`;
}

/**
 * Remove entry `name` of the open directory `dirFd` and, when it is a directory, everything
 * below it, descending only through directory fds opened with O_NOFOLLOW: a container renaming
 * or swapping entries for symlinks during the walk can at worst make it skip or remove entries
 * below `dirFd`, never anything a symlink points to (fs.rmSync's recursion walks by path and
 * would follow a directory swapped for a symlink between its lstat and its readdir). A missing
 * entry is not an error; others (EBUSY of a mount point) throw.
 */
export function removeTreeAt(dirFd: number, name: string): void {
  const p = fdPath(dirFd, name);
  let fd: number;
  try {
    fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return;
    if (code !== 'ENOTDIR' && code !== 'ELOOP') throw err;
    unlinkIfPresent(p); // a file, symlink, fifo or device node: unlink never follows
    return;
  }
  try {
    for (const child of fs.readdirSync(fdPath(fd, '.'))) removeTreeAt(fd, child);
  } finally {
    fs.closeSync(fd);
  }
  try {
    fs.rmdirSync(p);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTDIR') unlinkIfPresent(p); // swapped for a file after the walk
    else if (code !== 'ENOENT') throw err;
  }
}

function unlinkIfPresent(p: string): void {
  try {
    fs.unlinkSync(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/** Open directory `p` with O_NOFOLLOW; a symlink or non-directory → FAILED_PRECONDITION naming `shown`. */
function openNoFollow(shown: string, p: string, rel?: string): number {
  try {
    return fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ELOOP' || code === 'ENOTDIR') {
      throw new StatusError(Code.FAILED_PRECONDITION, `watchable target ${shown}${rel ? ` (for ${rel})` : ''} is not a plain directory`);
    }
    throw err;
  }
}

function lstatOrUndefined(p: string): fs.Stats | undefined {
  try {
    return fs.lstatSync(p);
  } catch {
    return undefined;
  }
}
