// One harness for the unit tests that drive the whole control plane without privileges: an
// Agent with its ttRPC server on a temporary unix socket, the in-process mock helper, and a
// typed client call (generated codecs). Everything is torn down with the test.
import type { Test } from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Agent, type AgentOptions } from '../../control/agent';
import { defaultConfig } from '../../control/config';
import { METHODS, type MethodName, type MethodSpec, type RequestOf, type ResponseOf } from '../../control/ctl/methods';
import { TtrpcClient, type CallOptions } from '../../control/ttrpc';
import { startMockPair, type MockHelperPair } from '../../helper/mock/main';

/** What {@link startMockAgent} gives a test. */
export interface MockAgent {
  agent: Agent;
  client: TtrpcClient;
  /** The in-process mock helper (its backend's ops may be wrapped to widen race windows). */
  pair: MockHelperPair;
  /** The agent's address, `unix://<dir>/agent.sock`. */
  address: string;
  /** The temporary directory of the socket (removed at teardown). */
  dir: string;
  /** Call rpc `name` with `req` over the harness's client; rejects with the ttRPC StatusError. */
  call<K extends MethodName>(name: K, req: RequestOf<K>, opts?: CallOptions): Promise<ResponseOf<K>>;
  /** As `call`, over another client connection. */
  callOn<K extends MethodName>(client: TtrpcClient, name: K, req: RequestOf<K>, opts?: CallOptions): Promise<ResponseOf<K>>;
}

/** Options of {@link startMockAgent}. */
export interface MockAgentOptions {
  /** Options of the mock helper pair (e.g. kataDir). */
  pair?: Parameters<typeof startMockPair>[0];
  /** Agent options beyond config and helper (limits, guest, defaultRemoveTimeoutMs ...). */
  agent?: (pair: MockHelperPair) => Partial<Omit<AgentOptions, 'config' | 'helper'>>;
  /** Prefix of the temporary directory. */
  prefix?: string;
}

/** Start an Agent over the in-process mock helper, torn down when `t` ends. */
export async function startMockAgent(t: Test, opts: MockAgentOptions = {}): Promise<MockAgent> {
  const pair = await startMockPair(opts.pair);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), opts.prefix ?? 'kata-agent-unit-'));
  const address = `unix://${path.join(dir, 'agent.sock')}`;
  const agent = new Agent({
    ...(opts.agent?.(pair) ?? {}),
    config: { ...defaultConfig(), serverAddr: address, debugAddr: '' },
    helper: pair.client,
  });
  await agent.start();
  const client = await TtrpcClient.connect(address);
  t.teardown(async () => {
    await client.close();
    await agent.stop();
    await pair.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const callOn = async <K extends MethodName>(c: TtrpcClient, name: K, req: RequestOf<K>, o?: CallOptions): Promise<ResponseOf<K>> => {
    const spec = METHODS[name] as unknown as MethodSpec<object, object, object, object>;
    const reply = await c.call(spec.service, spec.method, spec.request.encode(req).finish(), o);
    return spec.response.decode(reply) as ResponseOf<K>;
  };
  const call = <K extends MethodName>(name: K, req: RequestOf<K>, o?: CallOptions): Promise<ResponseOf<K>> => callOn(client, name, req, o);
  return { agent, client, pair, address, dir, call, callOn };
}
