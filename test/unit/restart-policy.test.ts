// Adversarial review (restart): a policy set by SetPolicy must survive a control-plane restart.
// Before the fix the policy lived only in control's memory: a control plane restarted by PID 1
// (or systemd, or --standalone) next to the same helper served every rpc the policy denied — a
// policy bypass for whoever can make control restart. Now SetPolicy hands the document to the
// helper (keepPolicy) and a starting control plane enforces the kept one (restoreKeptPolicy).
import t, { type Test } from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Agent } from '../../control/agent';
import { defaultConfig } from '../../control/config';
import { METHODS, type MethodName, type MethodSpec, type RequestOf, type ResponseOf } from '../../control/ctl/methods';
import { TtrpcClient } from '../../control/ttrpc';
import { HelperClient } from '../../shared/helper-client';
import { HelperServer } from '../../helper/server';
import { createMockHelperBackend } from '../../helper/mock/main';
import { loadNative } from '../../shared/native';
import { Code, KEPT_POLICY_CHUNK_BYTES, KEPT_POLICY_MAX_BYTES, StatusError } from '../../shared/protocol';
import { rejectsStatus } from '../lib/helper-fixtures';

const parts = createMockHelperBackend();
const server = new HelperServer({ backend: parts.backend, controlUid: process.getuid?.() ?? 0 });
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-restart-policy-'));
t.teardown(async () => {
  server.close();
  await parts.backend.shutdown();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A new helper connection (what a restarted control plane opens). */
async function connect(): Promise<HelperClient> {
  const [controlEnd, helperEnd] = loadNative().seqpacketPair();
  server.addConnection(helperEnd);
  return HelperClient.fromFd(controlEnd);
}

let generation = 0;
/** One control plane: an Agent on a fresh helper connection and a ttRPC client to it. */
async function startControl(t: Test, policy?: string) {
  const helper = await connect();
  const address = `unix://${path.join(dir, `agent${++generation}.sock`)}`;
  const agent = new Agent({ config: { ...defaultConfig(), serverAddr: address, debugAddr: '' }, helper, guest: { policy } });
  await agent.start();
  const client = await TtrpcClient.connect(address);
  const call = async <K extends MethodName>(name: K, req: RequestOf<K>): Promise<ResponseOf<K>> => {
    const spec = METHODS[name] as unknown as MethodSpec<object, object, object, object>;
    return spec.response.decode(await client.call(spec.service, spec.method, spec.request.encode(req).finish())) as ResponseOf<K>;
  };
  const stop = async (): Promise<void> => {
    await client.close();
    await agent.stop();
  };
  t.teardown(stop);
  return { agent, call, stop, helper };
}

async function denied(t: Test, p: Promise<unknown>, re: RegExp): Promise<void> {
  const err = await p.then(() => null, (e: unknown) => e);
  t.ok(err instanceof StatusError && err.code === Code.PERMISSION_DENIED && re.test(err.message), `PERMISSION_DENIED ${re} (got ${String(err)})`);
}

t.test('a SetPolicy (larger than one chunk) is enforced by the next control plane', async (t) => {
  // 200 command regexes of 1000 characters: ~200 KB, more than one packet / chunk
  const commands = Array.from({ length: 200 }, (_, i) => `/bin/echo ${i}${'x'.repeat(990)}`);
  const policy = JSON.stringify({ rpcs: { GetGuestDetails: 'deny' }, ExecProcess: { commands } });
  t.ok(Buffer.byteLength(policy) > KEPT_POLICY_CHUNK_BYTES, `${Buffer.byteLength(policy)} bytes: several chunks`);
  const a = await startControl(t);
  await a.call('GetGuestDetails', {});
  await a.call('SetPolicy', { policy });
  await denied(t, a.call('GetGuestDetails', {}), /rpcs.GetGuestDetails is "deny"/);
  await a.stop(); // control dies; the helper lives on

  const b = await startControl(t);
  await denied(t, b.call('GetGuestDetails', {}), /rpcs.GetGuestDetails is "deny"/);
  await denied(t, b.call('ExecProcess', { container_id: 'c', exec_id: 'e', process: { Args: ['/bin/sh'], Cwd: '/' } }), /ExecProcess.commands does not allow "\/bin\/sh"/);
  await rejectsStatus(t, b.call('ExecProcess', { container_id: 'c', exec_id: 'e', process: { Args: ['/bin/echo', `7${'x'.repeat(990)}`], Cwd: '/' } }), Code.NOT_FOUND, /c/);

  // A kept policy also beats the one the configuration gives at start (it came later).
  await b.call('SetPolicy', { policy: '{"rpcs": {"OnlineCPUMem": "deny"}}' });
  await b.stop();
  const c = await startControl(t, '{"default": "allow"}');
  await denied(t, c.call('OnlineCPUMem', {}), /rpcs.OnlineCPUMem is "deny"/);
  await c.call('GetGuestDetails', {});
  await c.stop();
});

t.test('a kept document that does not parse: the next control plane denies everything', async (t) => {
  const raw = await connect();
  await raw.call('keepPolicy', { offset: 0, data: Buffer.from('package agent_policy'), last: true });
  raw.close();
  const d = await startControl(t);
  await denied(t, d.call('GetGuestDetails', {}), /default is "deny"/);
  await denied(t, d.call('SetPolicy', { policy: '{}' }), /default is "deny"/);
  await d.stop();
});

t.test('keepPolicy: the helper checks sizes and chunk order; the kept document stays', async (t) => {
  const h = await connect();
  t.teardown(() => h.close());
  await h.call('keepPolicy', { offset: 0, data: Buffer.from('{"a":'), last: false });
  await rejectsStatus(t, h.call('keepPolicy', { offset: 3, data: Buffer.from('1}'), last: true }), Code.INVALID_ARGUMENT, /offset 3, expected 5/);
  await rejectsStatus(t, h.call('keepPolicy', { offset: 0, data: Buffer.alloc(KEPT_POLICY_CHUNK_BYTES + 1), last: true }), Code.INVALID_ARGUMENT, /at most/);
  await rejectsStatus(t, h.call('keepPolicy', { offset: 0, data: 'text' as unknown as Buffer, last: true }), Code.INVALID_ARGUMENT, /bytes/);
  await rejectsStatus(t, h.call('keptPolicy', { offset: -1 }), Code.INVALID_ARGUMENT, /offset/);
  let offset = 0;
  const chunk = Buffer.alloc(KEPT_POLICY_CHUNK_BYTES, 0x20);
  for (; offset + chunk.length <= KEPT_POLICY_MAX_BYTES; offset += chunk.length) await h.call('keepPolicy', { offset, data: chunk, last: false });
  await rejectsStatus(t, h.call('keepPolicy', { offset, data: Buffer.from('x'), last: true }), Code.INVALID_ARGUMENT, /larger than/);
  await h.call('keepPolicy', { offset: 0, data: Buffer.from('{}'), last: true });
  const kept = await h.call('keptPolicy', { offset: 0 });
  t.same([kept.result.total, Buffer.from(kept.result.data).toString()], [2, '{}'], 'the last complete upload is kept');
});

// The sandbox's device cgroup state (CreateSandboxResult.deviceCgroup) was forgotten too: the
// next control plane planned containers as if the helper could not enforce device rules (no
// rules in the cgroup; the interim's CAP_MKNOD removal and nodev mounts instead).
t.test('the device cgroup state of the sandbox survives a restart: device rules still go to the cgroup', async (t) => {
  const raw = await connect(); // allow everything (the tests above left other policies kept)
  await raw.call('keepPolicy', { offset: 0, data: Buffer.from('{}'), last: true });
  raw.close();
  const a = await startControl(t);
  await a.call('CreateSandbox', { hostname: 'sb', sandbox_id: 'sb-devices' });
  t.equal(a.agent.sandbox.deviceCgroup, true, 'the mock helper enforces device rules');
  await a.stop();
  const b = await startControl(t);
  t.equal(b.agent.sandbox.deviceCgroup, true, 'the restarted control plane knows it');
  const plans: unknown[] = [];
  const original = parts.containers.createContainer.bind(parts.containers);
  parts.containers.createContainer = async (args) => {
    plans.push(args.plan);
    return original(args);
  };
  t.teardown(() => {
    parts.containers.createContainer = original;
  });
  await b.call('CreateContainer', {
    container_id: 'dev-after-restart',
    OCI: {
      Version: '1.0.2',
      Root: { Path: '/run/kata-test/rootfs' },
      Process: { Args: ['true'], Env: ['PATH=/usr/bin:/bin'], Cwd: '/', Capabilities: { Bounding: ['CAP_MKNOD'], Effective: ['CAP_MKNOD'], Permitted: ['CAP_MKNOD'] } },
      Linux: { Namespaces: [{ Type: 'mount' }, { Type: 'pid' }], CgroupsPath: '/kata/dev-after-restart' },
    },
  });
  const plan = plans[0] as { cgroup?: { resources: { devices?: unknown[] } } } | undefined;
  t.ok(Array.isArray(plan?.cgroup?.resources.devices), 'the container\'s device rules are in its cgroup plan (not the interim)');
  await b.call('RemoveContainer', { container_id: 'dev-after-restart', timeout: 5 });
  await b.stop();
});
