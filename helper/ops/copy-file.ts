/**
 * CopyFile (Kata rpc.rs do_copy_file; at HEAD confined to the shared directory with pathrs,
 * GHSA-q49m-57vm-c8cc): write one chunk of a file, a directory or a symlink pushed by the
 * runtime, strictly below one of the copy roots (default /run/kata-containers/shared/containers).
 *
 * Confinement without races: the path is validated (absolute, normalised, below a root), then
 * walked from an fd of the root one component at a time with O_DIRECTORY|O_NOFOLLOW through
 * /proc/self/fd/<dirfd>/<name> (equivalent to openat(dirfd, name)): a symlink anywhere on the
 * way fails (ELOOP/ENOTDIR → INVALID_ARGUMENT) before anything is created below it, and the last
 * component is created or opened relative to its parent's fd, never through a path a container
 * could swap. Missing parents are created (mode dirMode & 0777), the immediate parent is chowned
 * to uid:gid (as HEAD).
 *
 * - fileMode & S_IFMT = S_IFDIR: mkdir (an existing directory is kept), chmod fileMode & 07777,
 *   chown uid:gid.
 * - S_IFLNK: `data` is the target; an existing symlink at the path is replaced (the k8s `..data`
 *   refresh), anything else there → ALREADY_EXISTS; lchown.
 * - S_IFREG or 0: pwrite `data` at `offset` into `.<name>.kata-copy` next to the path (emptied
 *   first when offset is 0; upstream keeps a stale one); once its
 *   size equals fileSize, fchmod, fchown and rename it over the path. (Upstream's temp name is
 *   the path with its extension replaced by "tmp", so a.json and a.yaml collide.)
 * - other types → INVALID_ARGUMENT.
 * `chown: false` (the unprivileged mock) skips chown/lchown.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  Code,
  COPY_FILE_HELPER_CHUNK,
  COPY_FILE_MAX_SIZE,
  GUEST_PATHS,
  StatusError,
  type CopyFileArgs,
  type CopyFileResult,
} from '../../shared/protocol';
import type { BackendReply } from '../api';
import { bytesArg, checkArgs, confinedPath, errnoStatus, intArg } from './guest-args';

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const S_IFREG = 0o100000;
const { O_RDONLY, O_WRONLY, O_CREAT, O_DIRECTORY, O_NOFOLLOW, O_NONBLOCK } = fs.constants;
const UID_MAX = 0xfffffffe;
/** Longest final component that leaves room for the temp name (NAME_MAX 255). */
const MAX_FILE_NAME = 255 - '.'.length - '.kata-copy'.length;

/** Options of {@link CopyFileOps}. */
export interface CopyFileOptions {
  /** Directories CopyFile may write below (default [GUEST_PATHS.copyRoot]). */
  roots?: string[];
  /** chown/lchown written entries (false in the unprivileged mock). Default true. */
  chown?: boolean;
}

function fdPath(dirFd: number, name: string): string {
  return `/proc/self/fd/${dirFd}/${name}`;
}

function closeQuiet(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // already closed
  }
}

function refused(p: string, detail: string): StatusError {
  return new StatusError(Code.INVALID_ARGUMENT, `CopyFile path ${JSON.stringify(p)}: ${detail}`);
}

/** The CopyFile op over a set of roots. */
export class CopyFileOps {
  readonly roots: string[];
  private readonly chown: boolean;

  constructor(opts: CopyFileOptions = {}) {
    this.roots = (opts.roots ?? [GUEST_PATHS.copyRoot]).map((r) => path.resolve(r));
    this.chown = opts.chown ?? true;
  }

  /** See the module comment. Errors: INVALID_ARGUMENT (bad args, path outside or through a symlink), ALREADY_EXISTS, errno statuses. */
  async copyFile(rawArgs: CopyFileArgs): Promise<BackendReply<CopyFileResult>> {
    const args = checkArgs(rawArgs, 'copyFile');
    const { root, parts } = confinedPath(args.path, 'CopyFile path', this.roots);
    const p = args.path as string;
    const fileMode = intArg(args.fileMode, 'copyFile.fileMode', 0, 0xffffffff);
    const dirMode = intArg(args.dirMode, 'copyFile.dirMode', 0, 0xffffffff);
    const uid = intArg(args.uid, 'copyFile.uid', 0, UID_MAX);
    const gid = intArg(args.gid, 'copyFile.gid', 0, UID_MAX);
    const fileSize = intArg(args.fileSize, 'copyFile.fileSize', 0, COPY_FILE_MAX_SIZE);
    const offset = intArg(args.offset, 'copyFile.offset', 0, COPY_FILE_MAX_SIZE);
    const data = bytesArg(args.data ?? Buffer.alloc(0), 'copyFile.data', COPY_FILE_HELPER_CHUNK);
    const type = fileMode & S_IFMT;
    if (type !== 0 && type !== S_IFREG && type !== S_IFDIR && type !== S_IFLNK) {
      throw new StatusError(Code.INVALID_ARGUMENT, `CopyFile file_mode 0${fileMode.toString(8)}: only regular files, directories and symlinks can be copied`);
    }
    const name = parts[parts.length - 1];
    if (type === S_IFLNK && (data.length === 0 || data.includes(0))) {
      throw new StatusError(Code.INVALID_ARGUMENT, `CopyFile ${JSON.stringify(p)}: a symlink needs its target (non-empty, no NUL) as data`);
    }
    if ((type === 0 || type === S_IFREG) && (offset + data.length > fileSize || Buffer.byteLength(name) > MAX_FILE_NAME)) {
      throw new StatusError(
        Code.INVALID_ARGUMENT,
        Buffer.byteLength(name) > MAX_FILE_NAME
          ? `CopyFile ${JSON.stringify(p)}: file name longer than ${MAX_FILE_NAME} bytes`
          : `CopyFile ${JSON.stringify(p)}: chunk at offset ${offset} of ${data.length} bytes goes past file_size ${fileSize}`,
      );
    }

    fs.mkdirSync(root, { recursive: true, mode: 0o755 });
    let dirFd = this.openDir(root, root, p);
    try {
      // Walk (and create) the parents.
      for (let i = 0; i < parts.length - 1; i++) {
        const next = this.stepDir(dirFd, parts[i], p, dirMode & 0o777);
        closeQuiet(dirFd);
        dirFd = next;
      }
      if (parts.length > 1 && this.chown) fs.fchownSync(dirFd, uid, gid);
      if (type === S_IFDIR) return { result: { written: this.writeDir(dirFd, name, p, fileMode, uid, gid) } };
      if (type === S_IFLNK) return { result: { written: this.writeSymlink(dirFd, name, p, data.toString('utf8'), uid, gid) } };
      return { result: { written: this.writeChunk(dirFd, name, p, { fileMode, uid, gid, fileSize, offset, data }) } };
    } catch (err) {
      throw errnoStatus(err, `CopyFile ${JSON.stringify(p)}`);
    } finally {
      closeQuiet(dirFd);
    }
  }

  private openDir(file: string, shown: string, p: string): number {
    try {
      return fs.openSync(file, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ELOOP' || code === 'ENOTDIR') throw refused(p, `${shown} is a symlink or not a directory`);
      throw errnoStatus(err, `CopyFile ${JSON.stringify(p)}: open ${shown}`);
    }
  }

  /** Open (creating when missing) directory `name` below `dirFd`, refusing symlinks. */
  private stepDir(dirFd: number, name: string, p: string, mode: number): number {
    const file = fdPath(dirFd, name);
    try {
      return fs.openSync(file, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ELOOP' || code === 'ENOTDIR') throw refused(p, `component ${JSON.stringify(name)} is a symlink or not a directory`);
      if (code !== 'ENOENT') throw err;
    }
    let created = false;
    try {
      fs.mkdirSync(file, { mode });
      created = true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    // chmod through the fd opened with O_NOFOLLOW: a path chmod would follow a symlink swapped
    // in after the mkdir (a container writing into the volume).
    const fd = this.openDir(file, name, p);
    try {
      if (created) fs.fchmodSync(fd, mode);
    } catch (err) {
      closeQuiet(fd);
      throw err;
    }
    return fd;
  }

  private writeDir(dirFd: number, name: string, p: string, fileMode: number, uid: number, gid: number): 'dir' {
    const file = fdPath(dirFd, name);
    try {
      fs.mkdirSync(file, { mode: fileMode & 0o777 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const fd = this.openDir(file, name, p);
    try {
      // chown first: chown clears setuid/setgid bits the mode may carry.
      if (this.chown) fs.fchownSync(fd, uid, gid);
      fs.fchmodSync(fd, fileMode & 0o7777);
    } finally {
      closeQuiet(fd);
    }
    return 'dir';
  }

  private writeSymlink(dirFd: number, name: string, p: string, target: string, uid: number, gid: number): 'symlink' {
    const file = fdPath(dirFd, name);
    let st: fs.Stats | undefined;
    try {
      st = fs.lstatSync(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (st && !st.isSymbolicLink()) throw new StatusError(Code.ALREADY_EXISTS, `CopyFile ${JSON.stringify(p)}: exists and is not a symlink`);
    if (st) fs.unlinkSync(file);
    fs.symlinkSync(target, file);
    if (this.chown) fs.lchownSync(file, uid, gid);
    return 'symlink';
  }

  private writeChunk(
    dirFd: number,
    name: string,
    p: string,
    c: { fileMode: number; uid: number; gid: number; fileSize: number; offset: number; data: Buffer },
  ): 'partial' | 'file' {
    const tmpName = `.${name}.kata-copy`;
    let fd: number;
    try {
      // offset 0 starts the file afresh (a stale temp file of an aborted copy must not complete it).
      fd = fs.openSync(fdPath(dirFd, tmpName), O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK, 0o600);
      if (c.offset === 0) fs.ftruncateSync(fd, 0);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ELOOP' || code === 'ENXIO' || code === 'EISDIR') throw refused(p, `its temporary file ${tmpName} is not a regular file`);
      throw err;
    }
    try {
      if (!fs.fstatSync(fd).isFile()) throw refused(p, `its temporary file ${tmpName} is not a regular file`);
      let done = 0;
      while (done < c.data.length) done += fs.writeSync(fd, c.data, done, c.data.length - done, c.offset + done);
      const size = fs.fstatSync(fd).size;
      if (size !== c.fileSize) return 'partial';
      if (this.chown) fs.fchownSync(fd, c.uid, c.gid);
      fs.fchmodSync(fd, c.fileMode & 0o7777);
    } finally {
      closeQuiet(fd);
    }
    fs.renameSync(fdPath(dirFd, tmpName), fdPath(dirFd, name));
    return 'file';
  }
}
