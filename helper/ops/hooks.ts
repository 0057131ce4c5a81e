/**
 * OCI hooks run by the helper: the guest hooks of CreateSandboxRequest.guest_hook_path (Kata
 * agent sandbox.rs add_hooks / find_hooks, rpc.rs append_guest_hooks, rustjail container.rs, at
 * 6e4d4c329a) and the hooks of a container's own OCI spec (ContainerPlan.hooks; same {@link Hook} shape, same
 * runner).
 *
 * A hook runs in the helper's (the agent's) namespaces, as root, in its own session, with an
 * empty environment unless the hook lists one, `argv` = the hook's args (a guest hook gets
 * `[<file name>, <kind>]`, as upstream), the OCI state JSON (runtime-spec runtime.md#state) on
 * stdin, stdout/stderr captured (the first {@link HOOK_OUTPUT_MAX} bytes of each are logged and
 * stderr is quoted in the error), and a timeout (default {@link DEFAULT_HOOK_TIMEOUT_SEC} s, as
 * kata-sys-util hooks.rs; then SIGKILL). Children are started with the native spawn and reaped
 * by the process-wide reaper (node:child_process cannot be used next to waitpid(-1)).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Code, StatusError } from '../../shared/protocol';
import type { OciState } from '../../shared/oci-state';
import { loadNative, type NativeAddon } from '../../shared/native';
import { silentLogger, type Logger } from '../../shared/log';
import type { ChildReaper } from './reaper';
import { runProgram, type RunResult } from './run';

/** Hook kinds a guest hook directory may hold (upstream reads exactly these three). */
export const GUEST_HOOK_KINDS = ['prestart', 'poststart', 'poststop'] as const;
export type GuestHookKind = (typeof GUEST_HOOK_KINDS)[number];

/** Default hook timeout, in seconds (kata-sys-util hooks.rs DEFAULT_HOOK_TIMEOUT_SEC). */
export const DEFAULT_HOOK_TIMEOUT_SEC = 10;
/** Bytes of a hook's stdout / stderr kept for the log and the error message. */
export const HOOK_OUTPUT_MAX = 4096;
/** Most hooks of one kind taken from a guest hook directory (more are skipped with a warning). */
export const MAX_HOOKS_PER_KIND = 64;
/** Longest guest_hook_path, in bytes (PATH_MAX). */
export const HOOK_PATH_MAX = 4096;

/** One OCI hook (runtime-spec config.md#posix-platform-hooks). */
export interface Hook {
  /** Absolute path of the executable. */
  path: string;
  /** argv, argv[0] included; empty = `[path]`. */
  args: string[];
  /** "KEY=VALUE" strings; the whole environment. */
  env: string[];
  /** Seconds; absent or 0 = {@link DEFAULT_HOOK_TIMEOUT_SEC}. */
  timeoutSec?: number;
}

/** The hooks found in a guest hook directory. */
export type GuestHooks = Record<GuestHookKind, Hook[]>;

export type { OciState };

/** No hooks. */
export function emptyGuestHooks(): GuestHooks {
  return { prestart: [], poststart: [], poststop: [] };
}

/**
 * Check a guest hook directory path: a string, absolute, no NUL, at most {@link HOOK_PATH_MAX}
 * bytes, no ".." component. INVALID_ARGUMENT naming `field` and the value otherwise.
 */
export function validateGuestHookPath(p: unknown, field = 'guestHookPath'): string {
  if (typeof p !== 'string' || p === '' || !p.startsWith('/') || p.includes('\0') || Buffer.byteLength(p) > HOOK_PATH_MAX || p.split('/').includes('..')) {
    throw new StatusError(Code.INVALID_ARGUMENT, `${field} ${JSON.stringify(p)} must be an absolute path without NUL or ".." of at most ${HOOK_PATH_MAX} bytes`);
  }
  return path.normalize(p);
}

/**
 * Read the guest hooks under `dir` (already validated): every regular, executable file
 * directly in `dir/prestart`, `dir/poststart`, `dir/poststop`, in name order, each as
 * `{path, args: [name, kind]}` (upstream find_hooks). Symlinks, directories and files without
 * an execute bit are skipped as upstream; in addition (a departure) files writable by group or
 * others are skipped with a warning, since the helper runs them as root. A missing directory
 * gives no hooks of that kind (upstream ignores the error too). Never throws.
 */
export function scanGuestHooks(dir: string, log: Logger = silentLogger()): GuestHooks {
  const hooks = emptyGuestHooks();
  for (const kind of GUEST_HOOK_KINDS) {
    const kindDir = path.join(dir, kind);
    let names: string[];
    try {
      names = fs.readdirSync(kindDir).sort();
    } catch (err) {
      log.info({ dir: kindDir, err: (err as Error).message }, 'no guest hooks of this kind');
      continue;
    }
    for (const name of names) {
      const file = path.join(kindDir, name);
      let st: fs.Stats;
      try {
        st = fs.lstatSync(file);
      } catch {
        continue;
      }
      if (!st.isFile() || (st.mode & 0o111) === 0) continue;
      if ((st.mode & 0o022) !== 0) {
        log.warn({ hook: file, mode: (st.mode & 0o7777).toString(8) }, 'guest hook skipped: writable by group or others');
        continue;
      }
      if (hooks[kind].length >= MAX_HOOKS_PER_KIND) {
        log.warn({ hook: file }, `guest hook skipped: more than ${MAX_HOOKS_PER_KIND} ${kind} hooks`);
        continue;
      }
      hooks[kind].push({ path: file, args: [name, kind], env: [] });
      log.info({ hook: file, kind, mode: (st.mode & 0o7777).toString(8) }, 'found guest hook');
    }
  }
  return hooks;
}

/** What {@link HookRunner} needs: the native spawn and the process-wide reaper. */
export interface HookRunnerDeps {
  reaper: ChildReaper;
  native?: NativeAddon;
  logger?: Logger;
}

/** Runs hooks; one instance per helper backend. */
export class HookRunner {
  private readonly native: NativeAddon;
  private readonly log: Logger;
  private readonly reaper: ChildReaper;

  constructor(deps: HookRunnerDeps) {
    this.native = deps.native ?? loadNative();
    this.reaper = deps.reaper;
    this.log = (deps.logger ?? silentLogger()).child({ component: 'hooks' });
  }

  /**
   * Run `hooks` of `kind` one after the other with `state` on stdin. With `failFast` (prestart,
   * runtime-spec: an error stops the container) the first failure is thrown as
   * FAILED_PRECONDITION "<kind> hook <path> ...: <reason>"; without it (poststart, poststop:
   * runtime-spec says log a warning and continue, and upstream logs every failure) failures are
   * logged and the promise resolves.
   */
  async runAll(kind: string, hooks: readonly Hook[], state: OciState, failFast: boolean): Promise<void> {
    for (const hook of hooks) {
      try {
        await this.run(kind, hook, state);
      } catch (err) {
        if (failFast) throw err;
        this.log.warn({ err: (err as Error).message, hook: hook.path, kind, containerId: state.id }, 'hook failed (ignored)');
      }
    }
  }

  /**
   * Run one hook to completion. Resolves when it exits 0; rejects with FAILED_PRECONDITION
   * naming the hook when it cannot be started, exits non-zero, is killed by a signal, or
   * outlives its timeout (it is then SIGKILLed).
   */
  async run(kind: string, hook: Hook, state: OciState): Promise<void> {
    const name = `${kind} hook ${hook.path}`;
    const fail = (why: string): StatusError => new StatusError(Code.FAILED_PRECONDITION, `${name} failed: ${why}`);
    const timeoutSec = hook.timeoutSec && hook.timeoutSec > 0 ? hook.timeoutSec : DEFAULT_HOOK_TIMEOUT_SEC;
    this.log.info({ hook: hook.path, kind, containerId: state.id }, 'running hook');
    let r: RunResult;
    try {
      r = await runProgram(
        { native: this.native, reaper: this.reaper },
        {
          file: hook.path,
          argv: hook.args.length > 0 ? hook.args : [hook.path],
          envp: hook.env,
          stdin: JSON.stringify(state),
          timeoutMs: timeoutSec * 1000,
          maxOutput: HOOK_OUTPUT_MAX,
        },
      );
    } catch (err) {
      throw fail(`cannot start it: ${(err as Error).message}`);
    }
    const out = r.stdout.toString('utf8');
    if (out) this.log.info({ hook: hook.path, stdout: out }, 'hook stdout');
    if (r.stderr) this.log.info({ hook: hook.path, stderr: r.stderr }, 'hook stderr');
    const tail = r.stderr ? `; stderr: ${r.stderr.trim()}` : '';
    if (r.timedOut) throw fail(`timed out after ${timeoutSec} s (killed)${tail}`);
    if (r.signal !== null) throw fail(`killed by signal ${r.signal}${tail}`);
    if (r.exitCode !== 0) throw fail(`exit status ${r.exitCode}${tail}`);
  }
}
