/**
 * AgentClient: a typed programmatic client of the Kata agent (both `grpc.AgentService` and
 * `grpc.Health`) over one ttRPC connection, for kata-agent-ctl, the demo and tests.
 *
 *   const agent = await AgentClient.connect('unix:///run/kata-agent.sock');
 *   await agent.call('CreateSandbox', { sandbox_id: 'sb1' });
 *   const { status } = await agent.call('WaitProcess', { container_id: 'c1', exec_id: 'c1' });
 *   await agent.close();
 *
 * Upstream agent-ctl opens one connection per service (client.rs); one connection serves both
 * here, which the agent allows (one socket serves both services, inventory §2.1).
 */
import * as net from 'node:net';
import type { Logger } from 'pino';
import type { IConversionOptions } from 'protobufjs';
import { TtrpcClient, type CallOptions, type TtrpcClientOptions } from '../ttrpc/client';
import { formatAddress, netPath, toAddress, type TtrpcAddress } from '../ttrpc/address';
import { Code, StatusError } from '../../shared/protocol';
import { METHODS, type MethodName, type RequestOf, type ResponseOf } from './methods';

/** Options of {@link AgentClient.connect}. */
export interface AgentClientOptions {
  /** Default deadline of every call in ns (0 = none); a call's own timeoutNs overrides it. */
  timeoutNs?: number;
  /** Metadata sent with every call (merged under a call's own metadata). */
  metadata?: Record<string, string | readonly string[]>;
  /** pino logger for the connection (default silent). */
  logger?: Logger;
  /** Give up connecting to a unix address after this many ms (default 10000). */
  connectTimeoutMs?: number;
  /**
   * Hybrid vsock (Cloud Hypervisor, Firecracker): `address` is the hypervisor's unix socket and
   * this is the agent's vsock port; the client sends `CONNECT <port>\n` and expects a line
   * starting with `OK` before ttRPC starts (upstream agent-ctl client.rs setup_hybrid_vsock).
   */
  hybridVsockPort?: number;
}

/**
 * Conversion used by {@link AgentClient.callObject} and kata-agent-ctl's output: proto field
 * names, 64-bit integers as numbers, enums by name, every field present with its default
 * (so `{"status": 0}` shows), bytes left as Buffers (see control/ctl/output.ts for printing).
 */
export const RESPONSE_OBJECT_OPTIONS: IConversionOptions = {
  longs: Number,
  enums: String,
  defaults: true,
  arrays: true,
  objects: true,
};

/** A typed client of the agent's ttRPC services; see the module comment. */
export class AgentClient {
  private constructor(
    /** The underlying ttRPC connection. */
    readonly ttrpc: TtrpcClient,
    private readonly defaults: AgentClientOptions,
  ) {}

  /**
   * Connect to an agent at `address` (`unix:///abs/path`, `unix://@name`, `vsock://<cid>:<port>`).
   * Rejects with StatusError INVALID_ARGUMENT for a bad address, UNAVAILABLE when the
   * connection fails.
   */
  static async connect(address: string | TtrpcAddress, options: AgentClientOptions = {}): Promise<AgentClient> {
    const ttrpcOptions: TtrpcClientOptions = {};
    if (options.logger) ttrpcOptions.logger = options.logger;
    if (options.connectTimeoutMs !== undefined) ttrpcOptions.connectTimeoutMs = options.connectTimeoutMs;
    if (options.hybridVsockPort !== undefined) {
      const socket = await hybridVsockConnect(toAddress(address), options.hybridVsockPort, options.connectTimeoutMs ?? 10_000);
      const client = new AgentClient(TtrpcClient.fromStream(socket, ttrpcOptions), options);
      socket.resume();
      return client;
    }
    return new AgentClient(await TtrpcClient.connect(address, ttrpcOptions), options);
  }

  /** Wrap an existing ttRPC client (it stays owned by the caller until {@link close}). */
  static fromTtrpc(client: TtrpcClient, options: AgentClientOptions = {}): AgentClient {
    return new AgentClient(client, options);
  }

  /**
   * Call rpc `method` (wire name, e.g. 'CreateContainer', 'Check') with `request` (a plain
   * object of proto field names, or a message) and resolve with the decoded response message.
   *
   * Rejections are StatusError: the agent's status (code as sent, e.g. NOT_FOUND), or from the
   * ttRPC layer DEADLINE_EXCEEDED (`timeoutNs` elapsed), UNAVAILABLE (connection lost),
   * CANCELLED; INVALID_ARGUMENT when `method` is not in the method table or the request does
   * not verify against its message type; INTERNAL when the reply does not decode.
   */
  async call<K extends MethodName>(method: K, request: RequestOf<K>, options: CallOptions = {}): Promise<ResponseOf<K>> {
    const spec = METHODS[method];
    if (!spec) throw new StatusError(Code.INVALID_ARGUMENT, `unknown agent method ${JSON.stringify(method)}`);
    const codec = spec.request as unknown as {
      verify(m: object): string | null;
      encode(m: object): { finish(): Uint8Array };
    };
    const problem = codec.verify(request as object);
    if (problem !== null) throw new StatusError(Code.INVALID_ARGUMENT, `invalid ${method} request: ${problem}`);
    const payload = codec.encode(request as object).finish();
    const callOptions: CallOptions = { ...options };
    if (callOptions.timeoutNs === undefined && this.defaults.timeoutNs !== undefined) callOptions.timeoutNs = this.defaults.timeoutNs;
    if (this.defaults.metadata) callOptions.metadata = { ...this.defaults.metadata, ...(options.metadata ?? {}) };
    const reply = await this.ttrpc.call(spec.service, spec.method, payload, callOptions);
    try {
      return (spec.response as unknown as { decode(b: Uint8Array): ResponseOf<K> }).decode(reply);
    } catch (err) {
      throw new StatusError(Code.INTERNAL, `cannot decode ${spec.service}/${spec.method} response: ${(err as Error).message}`);
    }
  }

  /**
   * As {@link call}, but resolve with the response as a plain object converted with
   * {@link RESPONSE_OBJECT_OPTIONS} (e.g. `{status: 'SERVING'}` for Check).
   */
  async callObject<K extends MethodName>(method: K, request: RequestOf<K>, options: CallOptions = {}): Promise<{ [k: string]: unknown }> {
    const reply = await this.call(method, request, options);
    return responseToObject(method, reply);
  }

  /** Close the connection; pending calls reject with CANCELLED. Idempotent. */
  async close(): Promise<void> {
    await this.ttrpc.close();
  }
}

/**
 * Open a hybrid-vsock connection: connect to the hypervisor's unix socket, send
 * `CONNECT <port>\n`, read one line that must start with `OK` (the rest is the host-side
 * port). Rejects with StatusError INVALID_ARGUMENT for a non-unix address or a bad port,
 * UNAVAILABLE when the connection fails, times out or the answer is not OK.
 */
async function hybridVsockConnect(address: TtrpcAddress, port: number, timeoutMs: number): Promise<net.Socket> {
  if (address.kind === 'vsock') {
    throw new StatusError(Code.INVALID_ARGUMENT, `hybrid vsock needs a unix:// address (the hypervisor's socket), got ${formatAddress(address)}`);
  }
  if (!Number.isInteger(port) || port < 0 || port > 0xffffffff) {
    throw new StatusError(Code.INVALID_ARGUMENT, `invalid hybrid vsock port ${port}`);
  }
  const description = formatAddress(address);
  return new Promise<net.Socket>((resolve, reject) => {
    const socket = net.createConnection({ path: netPath(address) });
    let received = Buffer.alloc(0);
    let settled = false;
    const done = (err: StatusError | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.off('data', onData);
      if (err) {
        socket.destroy();
        reject(err);
      } else {
        resolve(socket);
      }
    };
    const timer = setTimeout(() => done(new StatusError(Code.UNAVAILABLE, `hybrid vsock ${description}: no answer after ${timeoutMs} ms`)), timeoutMs);
    const onData = (chunk: Buffer): void => {
      received = Buffer.concat([received, chunk]);
      const nl = received.indexOf(0x0a);
      if (nl < 0) {
        if (received.length > 1024) done(new StatusError(Code.UNAVAILABLE, `hybrid vsock ${description}: answer line too long`));
        return;
      }
      const line = received.subarray(0, nl).toString('utf8');
      const extra = received.subarray(nl + 1);
      if (!line.startsWith('OK')) {
        done(new StatusError(Code.UNAVAILABLE, `failed to set up hybrid vsock connection to ${description} port ${port}: response was ${JSON.stringify(line)}`));
        return;
      }
      socket.pause();
      if (extra.length > 0) socket.unshift(extra);
      done(null);
    };
    socket.once('error', (err) => done(new StatusError(Code.UNAVAILABLE, `cannot connect to ${description}: ${err.message}`)));
    socket.once('connect', () => socket.write(`CONNECT ${port}\n`));
    socket.on('data', onData);
  });
}

/** The decoded response of `method` as a plain object ({@link RESPONSE_OBJECT_OPTIONS}). */
export function responseToObject<K extends MethodName>(method: K, reply: ResponseOf<K>): { [k: string]: unknown } {
  const codec = METHODS[method].response as unknown as { toObject(m: unknown, o: IConversionOptions): { [k: string]: unknown } };
  return codec.toObject(reply, RESPONSE_OBJECT_OPTIONS);
}
