/**
 * The helper's protocol server: accepts control-plane connections on a SOCK_SEQPACKET unix
 * socket, authenticates them (SO_PEERCRED), requires the `hello` handshake, dispatches requests
 * to a {@link HelperBackend} and broadcasts the backend's events. Protocol: shared/protocol.ts.
 *
 * Requests are handled concurrently; each gets exactly one response with the request's id. A
 * bad request never takes the server down: malformed → INVALID_ARGUMENT, unknown op →
 * UNIMPLEMENTED, request before `hello` → FAILED_PRECONDITION, backend bug → INTERNAL.
 * `hello` and `ping` (the liveness probe) are answered by the server itself, so the mock helper
 * (helper/mock/, same server) answers them the same way.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SeqpacketChannel } from '../shared/channel';
import { isErrno, loadNative, type NativeAddon, type Poller } from '../shared/native';
import { silentLogger, type Logger } from '../shared/log';
import { foreignPidNamespace } from '../shared/peer-pidns';
import {
  Code,
  HELPER_PROTOCOL_VERSION,
  StatusError,
  type ErrorResponse,
  type HelperEvent,
  type OkResponse,
} from '../shared/protocol';
import { BACKEND_OPS, type BackendOpName, type BackendReply, type HelperBackend } from './api';

export type { HelperBackend, BackendReply, NamedFd } from './api';

export interface HelperServerOptions {
  backend: HelperBackend;
  /** The only non-root uid allowed to connect (the control plane's). uid 0 is always allowed. */
  controlUid: number;
  logger?: Logger;
}

/** Listen backlog of the helper socket. */
const BACKLOG = 16;

const BACKEND_OP_SET = new Set<string>(BACKEND_OPS);

class Connection {
  helloDone = false;
  readonly channel: SeqpacketChannel;

  constructor(
    fd: number,
    readonly label: string,
    readonly log: Logger,
    readonly peerPid: number,
  ) {
    this.channel = new SeqpacketChannel(fd, { logger: log, label });
  }
}

/**
 * Protocol server over a {@link HelperBackend}. Use {@link listen} for the unix socket, or
 * {@link addConnection} for an already connected socket (in-process helper over seqpacketPair).
 * {@link close} stops accepting and drops the connections; it does not shut the backend down.
 */
export class HelperServer {
  private readonly native: NativeAddon;
  private readonly backend: HelperBackend;
  private readonly controlUid: number;
  private readonly log: Logger;
  private readonly connections = new Set<Connection>();
  private readonly unsubscribe: () => void;
  private listenFd = -1;
  private listenPoller: Poller | undefined;
  private socketPath: string | undefined;
  private connectionCount = 0;
  private isClosed = false;

  constructor(options: HelperServerOptions) {
    this.native = loadNative();
    this.backend = options.backend;
    this.controlUid = options.controlUid;
    this.log = (options.logger ?? silentLogger()).child({ component: 'helper-server' });
    this.unsubscribe = this.backend.subscribe((event) => this.broadcast(event));
  }

  /**
   * Listen on the unix socket `socketPath` ("@name" = abstract). The parent directory is
   * created (mode 0755) when missing and its own parent exists (else an error naming both); the socket file is made mode 0600 and owned by the
   * control uid. A socket file already at the path is probed: when something accepts a
   * connection on it (another helper is serving it) this throws "another helper is serving
   * <path>" and leaves it alone; only a stale one (ECONNREFUSED: nobody listens) is removed.
   * A non-socket file at the path is an error too. Throws the underlying errno error when any
   * of this fails.
   */
  listen(socketPath: string): void {
    if (this.isClosed) throw new Error('server is closed');
    if (this.listenFd >= 0) throw new Error('server is already listening');
    const abstract = socketPath.startsWith('@');
    if (!abstract) {
      const dir = path.dirname(socketPath);
      if (!fs.existsSync(dir)) {
        // Only the socket's own directory is created (e.g. /run/kata-agent): a path whose parent
        // is missing too is more likely a typo, and is named in the error.
        try {
          fs.mkdirSync(dir, { mode: 0o755 });
          fs.chmodSync(dir, 0o755);
        } catch (err) {
          const why = isErrno(err, 'ENOENT') ? `its parent ${path.dirname(dir)} does not exist` : (err as Error).message;
          throw new Error(`the socket directory ${dir} does not exist and cannot be created: ${why}`);
        }
      }
      let stat: fs.Stats | undefined;
      try {
        stat = fs.lstatSync(socketPath);
      } catch {
        stat = undefined;
      }
      if (stat) {
        if (!stat.isSocket()) throw new Error(`${socketPath} exists and is not a socket; refusing to replace it`);
        this.removeStaleSocket(socketPath);
      }
    }
    const fd = this.native.seqpacketListen(socketPath, BACKLOG);
    if (!abstract) {
      try {
        fs.chmodSync(socketPath, 0o600);
        const st = fs.statSync(socketPath);
        fs.chownSync(socketPath, this.controlUid, st.gid);
      } catch (err) {
        this.native.close(fd);
        throw err;
      }
    }
    this.listenFd = fd;
    this.socketPath = abstract ? undefined : socketPath;
    this.listenPoller = new this.native.Poller(fd, (status) => this.onAcceptable(status));
    this.listenPoller.start(true, false);
    this.log.info({ socket: socketPath, controlUid: this.controlUid }, 'helper listening');
  }

  /** Unlink the socket file at `socketPath` unless a live server accepts connections on it. */
  private removeStaleSocket(socketPath: string): void {
    let fd = -1;
    try {
      fd = this.native.seqpacketConnect(socketPath);
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return; // gone meanwhile
      if (!isErrno(err, 'ECONNREFUSED')) {
        throw new Error(`${socketPath} exists and cannot be probed (${(err as Error).message}); refusing to replace it`);
      }
      fs.unlinkSync(socketPath); // stale: left by a helper that died
      this.log.info({ socket: socketPath }, 'removed a stale helper socket');
      return;
    }
    this.native.close(fd);
    throw new Error(`another helper is serving ${socketPath}; refusing to start (stop it first)`);
  }

  /**
   * Serve an already connected SOCK_SEQPACKET socket `fd` (owned by the server from now on).
   * The peer's uid is checked as for accepted connections.
   */
  addConnection(fd: number): void {
    if (this.isClosed) {
      this.native.close(fd);
      throw new Error('server is closed');
    }
    this.admit(fd);
  }

  /** Number of open connections (for the debug endpoint and tests). */
  get connectionsOpen(): number {
    return this.connections.size;
  }

  /** Stop accepting, close every connection, remove the socket file. Idempotent. */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.unsubscribe();
    if (this.listenPoller) this.listenPoller.close();
    if (this.listenFd >= 0) {
      try {
        this.native.close(this.listenFd);
      } catch {
        // already closed
      }
      this.listenFd = -1;
    }
    if (this.socketPath) {
      try {
        fs.unlinkSync(this.socketPath);
      } catch {
        // already gone
      }
    }
    for (const conn of [...this.connections]) conn.channel.close();
  }

  /** Send `event` to every connection that completed `hello`. */
  broadcast(event: HelperEvent): void {
    for (const conn of this.connections) {
      if (!conn.helloDone || conn.channel.closed) continue;
      try {
        conn.channel.send(event);
      } catch (err) {
        conn.log.warn({ err, event }, 'could not send event');
      }
    }
  }

  private onAcceptable(status: number): void {
    if (this.isClosed) return;
    if (status < 0) {
      this.log.error({ status }, 'poll error on the listening socket');
      return;
    }
    for (;;) {
      let fd: number;
      try {
        fd = this.native.accept(this.listenFd);
      } catch (err) {
        // EMFILE and friends: log and try again on the next readiness.
        this.log.error({ err }, 'accept failed');
        return;
      }
      if (fd < 0) return;
      this.admit(fd);
    }
  }

  private admit(fd: number): void {
    const label = `conn${++this.connectionCount}`;
    let cred;
    try {
      cred = this.native.peerCred(fd);
    } catch (err) {
      this.log.warn({ err, conn: label }, 'cannot read peer credentials, closing connection');
      this.native.close(fd);
      return;
    }
    if (cred.uid !== this.controlUid && cred.uid !== 0) {
      this.log.warn(
        { conn: label, peerUid: cred.uid, peerPid: cred.pid, controlUid: this.controlUid },
        'connection from a uid that is neither the control uid nor root, closed',
      );
      this.native.close(fd);
      return;
    }
    // A container's root is uid 0 too: its pid namespace tells it apart (shared/peer-pidns.ts).
    const foreign = foreignPidNamespace(cred.pid);
    if (foreign) {
      this.log.warn({ conn: label, peerUid: cred.uid, peerPid: cred.pid, reason: foreign }, 'connection from another pid namespace, closed');
      this.native.close(fd);
      return;
    }
    const log = this.log.child({ conn: label, peerPid: cred.pid, peerUid: cred.uid });
    const conn = new Connection(fd, label, log, cred.pid);
    this.connections.add(conn);
    conn.channel.on('message', (message, fds) => this.onMessage(conn, message, fds));
    conn.channel.on('close', () => {
      this.connections.delete(conn);
      log.info('control connection closed');
    });
    log.info('control connection accepted');
  }

  private onMessage(conn: Connection, message: unknown, fds: number[]): void {
    // Requests never carry fds: close any that came.
    for (const fd of fds) {
      try {
        this.native.close(fd);
      } catch {
        // ignore
      }
    }
    if (typeof message !== 'object' || message === null || Array.isArray(message)) {
      this.sendError(conn, 0, new StatusError(Code.INVALID_ARGUMENT, 'request is not a msgpack map'));
      return;
    }
    const req = message as Record<string, unknown>;
    const id = req.id;
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) {
      this.sendError(conn, 0, new StatusError(Code.INVALID_ARGUMENT, `request id ${JSON.stringify(String(id))} is not a non-negative integer`));
      return;
    }
    const op = req.op;
    if (typeof op !== 'string') {
      this.sendError(conn, id, new StatusError(Code.INVALID_ARGUMENT, 'request has no op'));
      return;
    }
    const args = req.args;
    if (typeof args !== 'object' || args === null || Array.isArray(args)) {
      this.sendError(conn, id, new StatusError(Code.INVALID_ARGUMENT, `${op}: args must be a map`));
      return;
    }
    if (op === 'hello') {
      this.onHello(conn, id, args as Record<string, unknown>);
      return;
    }
    if (op === 'ping') {
      // Liveness probe: answered here, without the backend (see shared/protocol.ts PingArgs).
      if (!conn.helloDone) {
        this.sendError(conn, id, new StatusError(Code.FAILED_PRECONDITION, 'ping before hello: the handshake must come first'));
        return;
      }
      const pong: OkResponse<'ping'> = { id, ok: true, result: { pid: process.pid } };
      this.sendRaw(conn, pong);
      return;
    }
    if (!BACKEND_OP_SET.has(op)) {
      this.sendError(conn, id, new StatusError(Code.UNIMPLEMENTED, `unknown helper op ${JSON.stringify(op)}`));
      return;
    }
    if (!conn.helloDone) {
      this.sendError(conn, id, new StatusError(Code.FAILED_PRECONDITION, `${op} before hello: the handshake must come first`));
      return;
    }
    void this.dispatch(conn, id, op as BackendOpName, args);
  }

  private onHello(conn: Connection, id: number, args: Record<string, unknown>): void {
    if (args.version !== HELPER_PROTOCOL_VERSION) {
      this.sendError(
        conn,
        id,
        new StatusError(
          Code.FAILED_PRECONDITION,
          `helper protocol version mismatch: helper speaks ${HELPER_PROTOCOL_VERSION}, control sent ${JSON.stringify(args.version)}`,
        ),
      );
      return;
    }
    // One control plane at a time: two would both read every process's stdio (each gets the
    // helper's copies through `state`) and both write the spools' delivered offsets. A control
    // plane that died may not have been noticed yet: its connection is read first.
    for (const other of this.connections) {
      if (other === conn || !other.helloDone || !other.channel.drainNow()) continue;
      conn.log.warn({ otherPid: other.peerPid }, 'hello refused: another control plane is connected');
      this.sendError(conn, id, new StatusError(Code.FAILED_PRECONDITION, `another control plane (pid ${other.peerPid}) is connected to this helper; one at a time`));
      return;
    }
    conn.helloDone = true;
    const response: OkResponse<'hello'> = { id, ok: true, result: { version: HELPER_PROTOCOL_VERSION, pid: process.pid } };
    this.sendRaw(conn, response);
  }

  private async dispatch(conn: Connection, id: number, op: BackendOpName, args: object): Promise<void> {
    const started = process.hrtime.bigint();
    let reply: BackendReply<unknown>;
    try {
      const method = this.backend[op] as (a: unknown) => Promise<BackendReply<unknown>>;
      reply = await method.call(this.backend, args);
    } catch (err) {
      if (err instanceof StatusError) {
        conn.log.debug({ op, id, code: err.code, error: err.message }, 'helper op failed');
        this.sendError(conn, id, err);
      } else {
        conn.log.error({ op, id, err }, 'helper op threw an unexpected error');
        this.sendError(conn, id, new StatusError(Code.INTERNAL, `${op}: ${(err as Error)?.message ?? String(err)}`));
      }
      return;
    }
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    conn.log.debug({ op, id, ms }, 'helper op done');
    const fds = reply.fds ?? [];
    const response: OkResponse = { id, ok: true, result: reply.result as OkResponse['result'] };
    if (fds.length > 0) response.fds = fds.map((f) => f.name);
    if (conn.channel.closed) {
      reply.onSent?.();
      return;
    }
    try {
      conn.channel.send(
        response,
        fds.map((f) => f.fd),
        () => reply.onSent?.(),
      );
    } catch (err) {
      reply.onSent?.();
      const status =
        err instanceof StatusError ? err : new StatusError(Code.INTERNAL, `${op}: cannot send response: ${(err as Error).message}`);
      conn.log.error({ op, id, err }, 'cannot send response');
      this.sendError(conn, id, new StatusError(status.code, `${op}: response not sendable: ${status.message}`));
    }
  }

  private sendError(conn: Connection, id: number, err: StatusError): void {
    const response: ErrorResponse = { id, ok: false, error: { code: err.code, message: err.message } };
    this.sendRaw(conn, response);
  }

  private sendRaw(conn: Connection, response: unknown): void {
    if (conn.channel.closed) return;
    try {
      conn.channel.send(response);
    } catch (err) {
      conn.log.warn({ err }, 'cannot send response');
    }
  }
}
