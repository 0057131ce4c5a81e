/**
 * Fast start of the agent's two processes: load the entry module from its one-file bundle
 * (dist/bundle/<name>.js, made by scripts/bundle.js at `npm run build` / `npm install`) with the
 * V8 code cache made for it at build time, or from the plain dist/ modules when there is no
 * bundle or it is stale.
 *
 * Why: most of a process's start-up after Node's own boot was resolving, reading and compiling
 * ~100 modules (docs/ARCHITECTURE.md "Performance", start-up). One file skips the resolution
 * (stat/package.json walks) and the code cache skips the compilation of what module
 * initialisation runs.
 *
 * Stale: the manifest (dist/bundle/<name>.json) lists every dist/ input of the bundle, and npm's
 * hidden lockfile node_modules/.package-lock.json for the packages, with size and mtime; any
 * difference (a later `tsc` without the bundle step, an `npm install` that changed packages)
 * means the plain modules are used. A file edited by hand inside node_modules is not noticed. A code cache V8 rejects (another Node build
 * or V8 flags) only costs the compilation. KATA_AGENT_BUNDLE=0 forces the plain modules.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import Module, { createRequire } from 'node:module';
import * as path from 'node:path';
import * as vm from 'node:vm';

/**
 * The entries that have a bundle: the control plane (control/main.ts), the helper
 * (helper/main.ts) and init mode (control/init.ts, bin/kata-agent as PID 1).
 */
export type EntryName = 'kata-agent' | 'kata-agent-helper' | 'kata-agent-init';

/** dist/bundle (this file is dist/shared/launch.js once compiled). */
export const BUNDLE_DIR = path.resolve(__dirname, '..', 'bundle');

/** dist/bundle/<name>.json: what a bundle was made from. */
export interface BundleManifest {
  /** process.version of the Node that made the bundle and its code cache. */
  node: string;
  /** [path relative to the project root, size in bytes, mtime in ms] of every input file. */
  inputs: [string, number, number][];
  /**
   * sha256 (hex) of the code cache file, written with it. V8 checks a cache's header (version,
   * flags, source length) but a release build does not check its payload: a cache damaged past
   * the header was accepted and crashed the process (SIGSEGV / "unreachable code"), the root
   * helper included. A cache whose hash differs (or without one) is not used.
   */
  cacheSha256?: string;
}

/** sha256 (hex) of a code cache's bytes, as the manifest's `cacheSha256`. */
export function cacheDigest(cache: Buffer): string {
  return createHash('sha256').update(cache).digest('hex');
}

/** Paths of a bundle's files in `dir` (default {@link BUNDLE_DIR}). */
export function bundleFiles(name: EntryName, dir = BUNDLE_DIR): { js: string; manifest: string; cache: string } {
  return {
    js: path.join(dir, `${name}.js`),
    manifest: path.join(dir, `${name}.json`),
    cache: path.join(dir, `${name}.cache`),
  };
}

/**
 * How this process's entry was loaded: 'bundle' (with its code cache), 'bundle-uncached' (no
 * cache file, or V8 refused it: another Node or other V8 flags), 'modules' (dist/).
 */
export type EntryKind = 'bundle' | 'bundle-uncached' | 'modules';
const ENTRY_KIND = Symbol.for('kata-agent-ts.entry-kind');

/**
 * How {@link loadEntry} loaded this process ({@link EntryKind}), undefined when the process
 * did not start through it (e.g. `node dist/control/main.js`). The announce record carries it.
 */
export function entryKind(): EntryKind | undefined {
  return (globalThis as Record<symbol, EntryKind | undefined>)[ENTRY_KIND];
}

function setEntryKind(kind: EntryKind): void {
  (globalThis as Record<symbol, EntryKind | undefined>)[ENTRY_KIND] = kind;
}

/**
 * Whether the bundle `name` exists and every input listed in its manifest still has the
 * recorded size and mtime. Never throws (a missing or unreadable file is "not fresh").
 */
export function bundleIsFresh(name: EntryName, dir = BUNDLE_DIR): boolean {
  return freshManifest(name, dir) !== undefined;
}

/** The manifest of bundle `name` when the bundle is fresh ({@link bundleIsFresh}), else undefined. */
function freshManifest(name: EntryName, dir: string): BundleManifest | undefined {
  const root = path.resolve(dir, '..', '..');
  try {
    const manifest = JSON.parse(fs.readFileSync(bundleFiles(name, dir).manifest, 'utf8')) as BundleManifest;
    if (!Array.isArray(manifest.inputs) || manifest.inputs.length === 0) return undefined;
    for (const [file, size, mtimeMs] of manifest.inputs) {
      const st = fs.statSync(path.join(root, file), { throwIfNoEntry: false });
      if (!st || st.size !== size || st.mtimeMs !== mtimeMs) return undefined;
    }
    return fs.existsSync(bundleFiles(name, dir).js) ? manifest : undefined;
  } catch {
    return undefined;
  }
}

/** A compiled bundle: its script (for createCachedData) and the CommonJS wrapper function. */
export interface CompiledBundle {
  script: vm.Script;
  /** Whether V8 refused the code cache given (undefined: none given). */
  cacheRejected: boolean | undefined;
  /** Run the bundle as a CommonJS module and return its exports. */
  run(): unknown;
}

/**
 * Compile the bundle file `file` (a CommonJS module) with `cachedData` (a V8 code cache, or
 * undefined). The same wrapper and filename are used when the cache is made (scripts/bundle.js)
 * and when it is used, as V8 requires. Throws what fs/vm throw (missing file, syntax error).
 */
export function compileBundle(file: string, cachedData?: Buffer): CompiledBundle {
  const source = fs.readFileSync(file, 'utf8');
  const wrapped = `(function (exports, require, module, __filename, __dirname) { ${source}\n})`;
  const script = new vm.Script(wrapped, { filename: file, cachedData });
  return {
    script,
    cacheRejected: cachedData === undefined ? undefined : script.cachedDataRejected === true,
    run() {
      const fn = script.runInThisContext() as (e: unknown, r: NodeJS.Require, m: Module, f: string, d: string) => void;
      const mod = new Module(file, undefined);
      mod.filename = file;
      mod.paths = (Module as unknown as { _nodeModulePaths(dir: string): string[] })._nodeModulePaths(path.dirname(file));
      fn.call(mod.exports, mod.exports, createRequire(file), mod, file, path.dirname(file));
      mod.loaded = true;
      return mod.exports;
    },
  };
}

/**
 * The exports of entry `name`: from its fresh bundle (with its code cache when readable), else
 * `fallback()` (the plain dist/ module, e.g. `() => require('../control/main')`). A bundle that
 * fails to compile (a broken file) also falls back, with one line on stderr. `dir`: where the
 * bundle is (default {@link BUNDLE_DIR}; its manifest's paths are relative to `dir`/../..).
 */
export function loadEntry<T>(name: EntryName, fallback: () => T, dir = BUNDLE_DIR): T {
  const modules = (): T => {
    setEntryKind('modules');
    return fallback();
  };
  const manifest = process.env.KATA_AGENT_BUNDLE === '0' ? undefined : freshManifest(name, dir);
  if (!manifest) return modules();
  const files = bundleFiles(name, dir);
  let cache: Buffer | undefined;
  try {
    cache = fs.readFileSync(files.cache);
  } catch {
    cache = undefined;
  }
  // Only the cache the manifest names (see BundleManifest.cacheSha256): V8 would run a damaged one.
  if (cache && cacheDigest(cache) !== manifest.cacheSha256) cache = undefined;
  let compiled: CompiledBundle;
  try {
    compiled = compileBundle(files.js, cache);
  } catch (err) {
    process.stderr.write(`${name}: cannot load ${files.js} (${String(err)}); using the dist/ modules\n`);
    return modules();
  }
  setEntryKind(compiled.cacheRejected === false ? 'bundle' : 'bundle-uncached');
  return compiled.run() as T;
}
