/**
 * State of the OCI CLI's containers: a small record per container id kept by the CLI under
 * `--root` (`<root>/<id>/state.json`, as runc keeps /run/runc/<id>/state.json), the agent's view
 * of the container read from its debug endpoint (`GET /v1/containers/:id`: status and the init's
 * pid as the helper sees it), and the state JSON of OCI runtime-spec runtime.md#state built from
 * both. Why this split: the agent protocol has no rpc that reports a container's status or pid
 * (upstream dropped ListProcesses), and the bundle path and annotations are host-side facts the
 * agent never receives (the CLI sends no annotations; oci-json.ts). See docs/ARCHITECTURE.md
 * "OCI runtime CLI".
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import type { OciState } from '../../shared/oci-state';

export type { OciState };

/**
 * What `kata-agent-oci state` prints: the runtime-spec state (runtime.md#state; its fields
 * exactly as the spec has them: pid only while created or running) plus the extra fields of
 * runc's `state` output (runc list.go containerState): `rootfs` (absolute rootfs path of the
 * bundle's config.json), `created` (RFC 3339 UTC time of create) and `owner` (the user owning
 * the container's state directory, as runc's `list` fills it; runc's `state` leaves it "").
 * Keys in runc's order.
 */
export interface OciCliState extends OciState {
  rootfs: string;
  created: string;
  owner: string;
}

/** The record the CLI keeps per container (JSON in `<root>/<id>/state.json`). */
export interface OciRecord {
  id: string;
  /** Absolute bundle directory. */
  bundle: string;
  /** config.json's annotations. */
  annotations: Record<string, string>;
  /** config.json's ociVersion. */
  ociVersion: string;
  /** Absolute rootfs path (config.json root.path resolved against the bundle); absent in records of older versions. */
  rootfs?: string;
  /** ISO time of create. */
  created: string;
  /** pid of the monitor process (output pump, exit record), 0 when none. */
  monitorPid: number;
}

/** What the monitor writes when the init process has exited (`<root>/<id>/exit.json`). */
export interface OciExitRecord {
  /** WaitProcess status: exit code, or 128 + signal. */
  status: number;
  /** ISO time. */
  exited: string;
}

/** The agent's view of one container (debug endpoint /v1/containers/:id; control/debug/views.ts). */
export interface AgentContainerView {
  id: string;
  status: 'created' | 'running' | 'stopped';
  pid: number;
  processes: { execId: string; pid: number; init: boolean; exited: boolean }[];
}

/** Version of the state JSON we write when config.json has none. */
export const OCI_STATE_VERSION = '1.1.0';

/** An error of the OCI CLI: printed on stderr, exit status 1. */
export class OciError extends Error {}

/** The per-container state directories under `root`. */
export class OciStore {
  private rootChecked = false;

  constructor(readonly root: string) {}

  /** `<root>/<id>`. Throws OciError for a root another user could change ({@link checkRoot}). */
  dir(id: string): string {
    this.checkRoot();
    return path.join(this.root, id);
  }

  /**
   * The CLI runs as root and writes, reads and removes below `--root`, so the directory must be
   * one only we (or root) can change: owned by our euid or root, a directory, not writable by
   * group or others. Otherwise another user could swap `<root>/<id>` for a symlink between our
   * mkdir and our writes (state.json written as root anywhere) or forge records (a monitor pid
   * to kill). A root that does not exist yet is fine (claim creates it 0711). Checked once.
   * Throws OciError naming the directory and what is wrong.
   */
  checkRoot(): void {
    if (this.rootChecked) return;
    let st: fs.Stats;
    try {
      st = fs.statSync(this.root);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw new OciError(`--root ${this.root}: ${(err as Error).message}`);
    }
    const euid = process.geteuid?.() ?? 0;
    if (!st.isDirectory()) throw new OciError(`--root ${this.root} is not a directory`);
    if (st.uid !== euid && st.uid !== 0) throw new OciError(`--root ${this.root} is owned by uid ${st.uid}, not by us (uid ${euid}) or root: another user could change the records`);
    if ((st.mode & 0o022) !== 0) {
      throw new OciError(`--root ${this.root} has mode ${(st.mode & 0o7777).toString(8)}: writable by group or others, who could change the records`);
    }
    this.rootChecked = true;
  }

  /** The record of `id`, or null when there is none. Throws OciError for an unreadable record. */
  read(id: string): OciRecord | null {
    let text: string;
    try {
      text = fs.readFileSync(path.join(this.dir(id), 'state.json'), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new OciError(`cannot read the state of container ${id}: ${(err as Error).message}`);
    }
    try {
      return JSON.parse(text) as OciRecord;
    } catch (err) {
      throw new OciError(`state record of container ${id} is corrupt: ${(err as Error).message}`);
    }
  }

  /** The record of `id`; OciError `container "<id>" does not exist` (runc's words) when none. */
  get(id: string): OciRecord {
    const r = this.read(id);
    if (!r) throw new OciError(`container ${JSON.stringify(id)} does not exist`);
    return r;
  }

  /**
   * Claim `id` by creating its directory (mkdir is the lock: a second create of the same id
   * fails). OciError `container with id exists` when it is taken.
   */
  claim(id: string): void {
    fs.mkdirSync(this.root, { recursive: true, mode: 0o711 });
    this.checkRoot();
    try {
      fs.mkdirSync(this.dir(id), { mode: 0o711 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new OciError(`container with id exists: ${id}`);
      throw err;
    }
  }

  /** Write the record atomically (temporary file + rename). */
  write(record: OciRecord): void {
    writeAtomic(path.join(this.dir(record.id), 'state.json'), JSON.stringify(record));
  }

  readExit(id: string): OciExitRecord | null {
    try {
      return JSON.parse(fs.readFileSync(path.join(this.dir(id), 'exit.json'), 'utf8')) as OciExitRecord;
    } catch {
      return null;
    }
  }

  /** Record the init's exit, if the container's directory still exists (delete may have won). */
  writeExit(id: string, status: number): void {
    if (!fs.existsSync(this.dir(id))) return;
    writeAtomic(path.join(this.dir(id), 'exit.json'), JSON.stringify({ status, exited: new Date().toISOString() } satisfies OciExitRecord));
  }

  remove(id: string): void {
    fs.rmSync(this.dir(id), { recursive: true, force: true });
  }

  /**
   * The owner of `<root>/<id>` as runc's `list` names it: the user name of its uid from
   * /etc/passwd, else `#<uid>`; "" when the directory cannot be read.
   */
  owner(id: string): string {
    let uid: number;
    try {
      uid = fs.statSync(this.dir(id)).uid;
    } catch {
      return '';
    }
    return userName(uid) ?? `#${uid}`;
  }
}

/** The name of `uid` in `passwdFile` (passwd(5) lines `name:password:uid:...`), or undefined. */
export function userName(uid: number, passwdFile = '/etc/passwd'): string | undefined {
  let text: string;
  try {
    text = fs.readFileSync(passwdFile, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const [name, , id] = line.split(':');
    if (name && id !== undefined && id !== '' && Number(id) === uid) return name;
  }
  return undefined;
}

/**
 * Write `text` to `file` through a temporary file and rename (readers never see half a file).
 * The temporary name is unpredictable and created O_EXCL (flag "wx": never through a symlink):
 * a --pid-file in a world-writable directory such as /tmp must not let another user plant a
 * symlink at the temporary name and make root write through it (was `<file>.<pid>.tmp`).
 */
export function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.${crypto.randomBytes(6).toString('hex')}.tmp`;
  try {
    fs.writeFileSync(tmp, text, { mode: 0o644, flag: 'wx' });
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

/** Whether process `pid` exists (kill 0; EPERM counts as alive). */
export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Build the state JSON from the CLI's record, the agent's view (null: the agent does not know
 * the container, e.g. it was restarted), the monitor's exit record and the owner name
 * ({@link OciStore.owner}):
 *   agent created/running → that status, pid = the agent's init pid;
 *   agent stopped, or unknown to the agent, or an exit record → stopped, no pid.
 */
export function buildState(record: OciRecord, view: AgentContainerView | null, exit: OciExitRecord | null, owner = ''): OciCliState {
  const live = view !== null && exit === null && (view.status === 'created' || view.status === 'running');
  return {
    ociVersion: record.ociVersion || OCI_STATE_VERSION,
    id: record.id,
    ...(live ? { pid: view.pid } : {}),
    status: live ? view.status : 'stopped',
    bundle: record.bundle,
    rootfs: record.rootfs ?? '',
    created: record.created,
    ...(Object.keys(record.annotations).length > 0 ? { annotations: record.annotations } : {}),
    owner,
  };
}

/**
 * GET `urlPath` from the debug endpoint at `address` (`unix:///path` or `host:port`) and resolve
 * with {status, body parsed as JSON}. Rejects with OciError naming the address when it cannot be
 * reached or the body is not JSON.
 */
export function debugGet(address: string, urlPath: string, timeoutMs = 10_000): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const where: http.RequestOptions = address.startsWith('unix://')
      ? { socketPath: address.slice('unix://'.length) }
      : { host: address.slice(0, address.lastIndexOf(':')), port: Number(address.slice(address.lastIndexOf(':') + 1)) };
    const req = http.request({ ...where, path: urlPath, method: 'GET', timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) });
        } catch (err) {
          reject(new OciError(`debug endpoint ${address}${urlPath}: not JSON: ${(err as Error).message}`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer in ${timeoutMs} ms`)));
    req.on('error', (err) => reject(new OciError(`cannot reach the agent's debug endpoint ${address} (status and pids come from it; --debug-address): ${err.message}`)));
    req.end();
  });
}

/**
 * The agent's view of container `id` from the debug endpoint at `address`; null when the agent
 * does not know it (404). OciError when no debug endpoint is known or it cannot be reached.
 */
export async function agentView(address: string, id: string): Promise<AgentContainerView | null> {
  if (address === '') throw new OciError('no debug endpoint known for this agent address: give --debug-address (status and pids come from it)');
  const { status, body } = await debugGet(address, `/v1/containers/${encodeURIComponent(id)}`);
  if (status === 404) return null;
  if (status !== 200) throw new OciError(`debug endpoint ${address}: /v1/containers/${id} answered ${status}`);
  return body as AgentContainerView;
}
