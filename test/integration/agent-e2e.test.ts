// End-to-end acceptance tests of the agent through its real ttRPC API: one stand-alone agent
// (helper as root, control plane unprivileged; scripts/lib/standalone.ts) for this file, busybox
// containers on a real rootfs. Covers Health, the 4 MiB frame limit, stdio (separation, stdin,
// exact bytes), exit statuses, exec into the container's namespaces, removal of a running
// container, status codes for bad ids, and that the init waits for StartContainer. Every
// subtest removes its containers on teardown; the last one destroys the sandbox, stops the
// agent and checks that no mount or container process was left behind.
import t from 'tap';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { FrameParser, FrameType, MESSAGE_LENGTH_MAX, encodeFrame, type ParsedFrame } from '../../control/ttrpc/frame';
import { grpc, ttrpc } from '../../shared/proto';
import {
  AgentHarness,
  Code,
  eventually,
  expectCode,
  pidAlive,
  rejection,
  skipReason,
  sleep,
  within,
} from './lib/agent-harness';

const HOSTNAME = 'kata-e2e';

/** A raw ttRPC connection: frames written and parsed by hand (no client-side size check). */
class RawConnection {
  private readonly parser = new FrameParser();
  private readonly waiters = new Map<number, (f: ParsedFrame) => void>();
  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      for (const f of this.parser.push(chunk)) this.waiters.get(f.header.streamId)?.(f);
    });
  }

  static connect(address: string): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection({ path: address.replace(/^unix:\/\//, '') });
      s.once('error', reject);
      s.once('connect', () => resolve(new RawConnection(s)));
    });
  }

  /** Send `body` (an encoded ttrpc.Request) on `streamId`; resolves with the decoded Response. */
  request(streamId: number, body: Uint8Array): Promise<{ code: number; message: string; payload: Uint8Array }> {
    return within(
      new Promise((resolve, reject) => {
        this.waiters.set(streamId, (f) => {
          this.waiters.delete(streamId);
          if (f.kind !== 'frame' || f.header.type !== FrameType.RESPONSE) {
            reject(new Error(`stream ${streamId}: unexpected ${f.kind} frame of type ${f.header.type}`));
            return;
          }
          const res = ttrpc.Response.decode(f.payload);
          resolve({ code: res.status?.code ?? 0, message: res.status?.message ?? '', payload: res.payload ?? new Uint8Array() });
        });
        this.socket.write(encodeFrame(streamId, FrameType.REQUEST, 0, body));
      }),
      15_000,
      `raw request on stream ${streamId}`,
    );
  }

  close(): void {
    this.socket.destroy();
  }
}

/** An encoded WriteStdin request envelope of exactly `size` bytes. */
function writeStdinEnvelope(size: number, containerId: string): Buffer {
  let dataLen = size;
  for (let i = 0; i < 8; i++) {
    const payload = grpc.WriteStreamRequest.encode({ container_id: containerId, exec_id: containerId, data: Buffer.alloc(dataLen, 0x61) }).finish();
    const body = Buffer.from(ttrpc.Request.encode({ service: 'grpc.AgentService', method: 'WriteStdin', payload }).finish());
    if (body.length === size) return body;
    dataLen += size - body.length;
  }
  throw new Error(`cannot build an envelope of exactly ${size} bytes`);
}

function checkEnvelope(): Buffer {
  return Buffer.from(
    ttrpc.Request.encode({ service: 'grpc.Health', method: 'Check', payload: grpc.CheckRequest.encode({ service: '' }).finish() }).finish(),
  );
}

const skip = skipReason();
if (skip) {
  t.plan(0, skip);
} else {
  const h = new AgentHarness('agent-e2e');
  t.before(async () => {
    await h.start(HOSTNAME);
  });
  t.teardown(() => h.dispose());
  t.afterEach(async (tt) => {
    if (!tt.passing()) tt.comment(h.logs());
  });

  t.test('Health.Check answers SERVING and Version the agent and API versions', async (t) => {
    const check = await h.client.callObject('Check', { service: '' });
    t.equal(check.status, 'SERVING');
    const version = await h.client.callObject('Version', { service: '' });
    const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', '..', 'package.json'), 'utf8')) as { version: string };
    t.equal(version.agent_version, pkg.version, 'agent_version is the package version');
    t.equal(version.grpc_version, '0.0.1', 'grpc_version is the upstream API version');
  });

  t.test('100 concurrent Health.Check calls on one connection all answer SERVING', async (t) => {
    const replies = await Promise.all(Array.from({ length: 100 }, () => h.client.callObject('Check', { service: '' })));
    t.equal(replies.length, 100);
    t.same(
      replies.filter((r) => r.status !== 'SERVING'),
      [],
      'every reply is SERVING',
    );
  });

  t.test('a request of 4 MiB + 1 byte is RESOURCE_EXHAUSTED and the connection keeps working', async (t) => {
    const raw = await RawConnection.connect(h.agent.address);
    t.teardown(() => raw.close());
    const unknown = h.id('nosuch');

    // At the limit: the request is read and handled (the container is unknown).
    const atLimit = writeStdinEnvelope(MESSAGE_LENGTH_MAX, unknown);
    t.equal(atLimit.length, 4 * 1024 * 1024);
    const r1 = await raw.request(1, atLimit);
    t.equal(r1.code, Code.NOT_FOUND, `exactly 4 MiB is accepted and handled (${r1.message})`);

    // One byte over: refused without being handled.
    const over = writeStdinEnvelope(MESSAGE_LENGTH_MAX + 1, unknown);
    t.equal(over.length, 4 * 1024 * 1024 + 1);
    const r2 = await raw.request(3, over);
    t.equal(r2.code, Code.RESOURCE_EXHAUSTED, `4 MiB + 1 is refused (${r2.message})`);
    t.match(r2.message, /4194305/, 'the message names the length');

    // The same connection still serves requests.
    const r3 = await raw.request(5, checkEnvelope());
    t.equal(r3.code, Code.OK);
    t.equal(grpc.HealthCheckResponse.decode(r3.payload).status, 1, 'Check on the same connection → SERVING');
    const r4 = await raw.request(7, writeStdinEnvelope(1024, unknown));
    t.equal(r4.code, Code.NOT_FOUND, 'a normal WriteStdin on the same connection is handled');
  });

  t.test('stdout and stderr are kept apart, byte for byte', async (t) => {
    const cid = await h.run(t, ['sh', '-c', 'echo out; echo err >&2; printf "no newline"; printf "\\000\\377" >&2']);
    const [out, err] = await Promise.all([h.readAll('ReadStdout', cid, cid), h.readAll('ReadStderr', cid, cid)]);
    t.same(out, Buffer.from('out\nno newline'), 'stdout');
    t.same(err, Buffer.from([...Buffer.from('err\n'), 0x00, 0xff]), 'stderr');
    t.equal(await h.wait(cid, cid), 0, 'exit status 0');
  });

  t.test('stdin piped to cat comes back exactly, then EOF and exit 0', async (t) => {
    const cid = await h.run(t, ['cat']);
    const input = crypto.randomBytes(300 * 1024 + 17);
    const reading = h.readAll('ReadStdout', cid, cid);
    let written = 0;
    for (let off = 0; off < input.length; off += 64 * 1024) {
      const chunk = input.subarray(off, off + 64 * 1024);
      const { len } = await h.client.call('WriteStdin', { container_id: cid, exec_id: cid, data: chunk });
      written += len;
    }
    t.equal(written, input.length, 'WriteStdin reported every byte written');
    await h.client.call('CloseStdin', { container_id: cid, exec_id: cid });
    const out = await within(reading, 15_000, 'reading cat output to EOF');
    t.equal(out.length, input.length, 'as many bytes out as in');
    t.ok(out.equals(input), 'the same bytes');
    t.equal(await h.wait(cid, cid), 0, 'cat exits 0 on EOF');

    // An exec's stdin works the same way.
    const box = await h.run(t, ['sleep', '1000']);
    await h.exec(box, 'cat-exec', ['cat']);
    await h.client.call('WriteStdin', { container_id: box, exec_id: 'cat-exec', data: Buffer.from('hello exec\n') });
    await h.client.call('CloseStdin', { container_id: box, exec_id: 'cat-exec' });
    t.equal((await h.readAll('ReadStdout', box, 'cat-exec')).toString(), 'hello exec\n', 'exec cat echoes its stdin');
    t.equal(await h.wait(box, 'cat-exec'), 0);
  });

  t.test('exit statuses: 0, 3, and 137 after SIGKILL', async (t) => {
    const ok = await h.run(t, ['true']);
    t.equal(await h.wait(ok, ok), 0, 'true → 0');
    const three = await h.run(t, ['sh', '-c', 'exit 3']);
    t.equal(await h.wait(three, three), 3, 'exit 3 → 3');
    const killed = await h.run(t, ['sleep', '1000']);
    await h.client.call('SignalProcess', { container_id: killed, exec_id: killed, signal: 9 });
    t.equal(await within(h.wait(killed, killed), 10_000, 'WaitProcess after SIGKILL'), 137, 'SIGKILL → 137');
    // An exec killed the same way.
    const box = await h.run(t, ['sleep', '1000']);
    await h.exec(box, 'victim', ['sleep', '1000']);
    await h.client.call('SignalProcess', { container_id: box, exec_id: 'victim', signal: 9 });
    t.equal(await within(h.wait(box, 'victim'), 10_000, 'WaitProcess of the killed exec'), 137, 'killed exec → 137');
  });

  t.test("ExecProcess sees the container's hostname and pid namespace", async (t) => {
    const cid = await h.run(t, ['sleep', '1000']);
    const execId = 'inspect';
    await h.exec(cid, execId, ['sh', '-c', 'hostname; echo $$; tr "\\0" " " < /proc/1/cmdline; echo; exec ps -o pid,comm']);
    const [out, err] = await Promise.all([h.readAll('ReadStdout', cid, execId), h.readAll('ReadStderr', cid, execId)]);
    t.equal(await h.wait(cid, execId), 0, 'exec exits 0');
    t.equal(err.toString(), '', 'nothing on stderr');
    const lines = out.toString().split('\n');
    t.equal(lines[0], HOSTNAME, 'hostname is the sandbox hostname');
    const innerPid = Number(lines[1]);
    t.equal(lines[2], 'sleep 1000 ', 'pid 1 is the container init (sleep 1000)');
    const ps = lines
      .slice(4)
      .filter((l) => l.trim() !== '')
      .map((l) => l.trim().split(/\s+/));
    t.same(
      ps.sort((a, b) => Number(a[0]) - Number(b[0])),
      [
        ['1', 'sleep'],
        [String(innerPid), 'ps'],
      ],
      'only the init and the exec are in the pid namespace',
    );
    const hostPid = await h.hostPid(cid, execId);
    const initHostPid = await h.hostPid(cid);
    t.not(innerPid, hostPid, `the exec's pid in the container (${innerPid}) is not its host pid (${hostPid})`);
    t.equal(fs.readlinkSync(`/proc/${initHostPid}/ns/pid`) === fs.readlinkSync('/proc/self/ns/pid'), false, 'the init has its own pid namespace');
  });

  t.test('RemoveContainer of a running container kills its processes and frees the id', async (t) => {
    const cid = h.id('rm');
    await h.run(t, ['sleep', '1000'], { id: cid });
    await h.exec(cid, 'extra', ['sleep', '1000']);
    const initPid = await h.hostPid(cid);
    const execPid = await h.hostPid(cid, 'extra');
    t.ok(pidAlive(initPid) && pidAlive(execPid), 'both processes run before the removal');
    // Calls pending on the container when it is removed must end, not hang.
    const pendingRead = h.client.call('ReadStdout', { container_id: cid, exec_id: 'extra', len: 1024 }).then(
      () => 'data',
      (err: Error & { code?: number }) => err.code,
    );
    const pendingWait = h.client.call('WaitProcess', { container_id: cid, exec_id: cid }).then(
      (r) => r.status,
      (err: Error & { code?: number }) => `error ${err.code}`,
    );
    await sleep(100);
    await h.client.call('RemoveContainer', { container_id: cid, timeout: 10 });
    t.notOk(pidAlive(initPid), `init host pid ${initPid} is gone (ESRCH) when RemoveContainer returns`);
    t.notOk(pidAlive(execPid), `exec host pid ${execPid} is gone (ESRCH) when RemoveContainer returns`);
    t.equal(await within(pendingRead, 5000, 'the pending ReadStdout'), Code.OUT_OF_RANGE, 'a pending ReadStdout ends with EOF');
    t.ok([137, 143, `error ${Code.NOT_FOUND}`].includes(await within(pendingWait, 5000, 'the pending WaitProcess')), 'a pending WaitProcess ends (killed status or NOT_FOUND)');
    t.equal((await h.debug(`/v1/containers/${cid}`)).status, 404, 'the debug endpoint no longer knows it');
    await expectCode(t, h.client.call('WaitProcess', { container_id: cid, exec_id: cid }), Code.NOT_FOUND, 'WaitProcess after removal');

    // The id is free at once.
    await h.client.call('CreateContainer', { container_id: cid, exec_id: cid, OCI: h.spec(['echo', 'reused']) });
    await h.client.call('StartContainer', { container_id: cid });
    t.equal((await h.readAll('ReadStdout', cid, cid)).toString(), 'reused\n', 'a new container with the same id runs');
    t.equal(await h.wait(cid, cid), 0);
  });

  t.test('status codes: NOT_FOUND for unknown ids, ALREADY_EXISTS for duplicates, INVALID_ARGUMENT for bad ids', async (t) => {
    const nosuch = h.id('nosuch');
    const c = h.client;
    await expectCode(t, c.call('StartContainer', { container_id: nosuch }), Code.NOT_FOUND, 'StartContainer unknown');
    await expectCode(t, c.call('WaitProcess', { container_id: nosuch, exec_id: nosuch }), Code.NOT_FOUND, 'WaitProcess unknown');
    await expectCode(t, c.call('ReadStdout', { container_id: nosuch, exec_id: nosuch, len: 1024 }), Code.NOT_FOUND, 'ReadStdout unknown');
    await expectCode(t, c.call('SignalProcess', { container_id: nosuch, exec_id: nosuch, signal: 9 }), Code.NOT_FOUND, 'SignalProcess unknown');
    await expectCode(t, c.call('RemoveContainer', { container_id: nosuch, timeout: 1 }), Code.NOT_FOUND, 'RemoveContainer unknown');

    // Unknown exec id in a known container.
    const cid = await h.run(t, ['sleep', '1000']);
    await expectCode(t, c.call('WaitProcess', { container_id: cid, exec_id: 'nope' }), Code.NOT_FOUND, 'WaitProcess unknown exec');
    await expectCode(t, c.call('ReadStdout', { container_id: cid, exec_id: 'nope', len: 1024 }), Code.NOT_FOUND, 'ReadStdout unknown exec');
    await expectCode(t, c.call('SignalProcess', { container_id: cid, exec_id: 'nope', signal: 9 }), Code.NOT_FOUND, 'SignalProcess unknown exec');

    // Duplicate id: refused, and the existing container is untouched.
    await expectCode(
      t,
      c.call('CreateContainer', { container_id: cid, exec_id: cid, OCI: h.spec(['true']) }),
      Code.ALREADY_EXISTS,
      'CreateContainer with a used id',
    );
    await h.exec(cid, 'dup', ['sleep', '1000']);
    await expectCode(t, h.exec(cid, 'dup', ['true']), Code.ALREADY_EXISTS, 'ExecProcess with a live exec id');
    const alive = await h.execCollect(cid, ['echo', 'still here']);
    t.equal(alive.stdout.toString(), 'still here\n', 'the first container still runs');

    for (const bad of ['-bad', 'a', '../x', 'a/b', '']) {
      await expectCode(
        t,
        c.call('CreateContainer', { container_id: bad, exec_id: bad, OCI: h.spec(['true']) }),
        Code.INVALID_ARGUMENT,
        `CreateContainer id ${JSON.stringify(bad)}`,
      );
    }
    t.equal((await c.callObject('Check', { service: '' })).status, 'SERVING', 'the agent is alive');
  });

  t.test('the init does not run before StartContainer', async (t) => {
    const shared = fs.mkdtempSync(path.join(h.tmp, 'shared-'));
    const marker = path.join(shared, 'started');
    const cid = await h.create(t, ['sh', '-c', 'touch /tmp/started; echo started'], {
      mounts: [{ destination: '/tmp', type: 'bind', source: shared, options: ['rbind', 'rw'] }],
    });
    await sleep(500);
    t.notOk(fs.existsSync(marker), 'no file 0.5 s after CreateContainer');
    const early = await rejection(h.client.call('ReadStdout', { container_id: cid, exec_id: cid, len: 1024 }, { timeoutNs: 300e6 }));
    t.equal(early.code, Code.DEADLINE_EXCEEDED, 'no stdout before StartContainer (the read times out)');
    const initPid = await h.hostPid(cid);
    t.not(fs.readFileSync(`/proc/${initPid}/comm`, 'utf8').trim(), 'sh', 'the init has not exec\'d the workload yet');
    t.equal((await h.debug(`/v1/containers/${cid}`)).body.status, 'created', 'the container is "created"');

    await h.client.call('StartContainer', { container_id: cid });
    t.equal((await h.readAll('ReadStdout', cid, cid)).toString(), 'started\n', 'all of stdout after StartContainer (nothing lost to the timed-out read)');
    t.equal(await h.wait(cid, cid), 0);
    t.ok(fs.existsSync(marker), 'the file exists after StartContainer');
    await expectCode(t, h.client.call('StartContainer', { container_id: cid }), Code.FAILED_PRECONDITION, 'a second StartContainer');

    // Removed without ever being started: the workload never runs, and the init's status is
    // not reported as a success (regression: the init read EOF on its start fd and exited 0
    // before the SIGKILL landed, so WaitProcess answered 0 — about one run in six; repeated).
    const never = fs.mkdtempSync(path.join(h.tmp, 'never-'));
    const statuses: (number | string)[] = [];
    for (let i = 0; i < 12; i++) {
      const unstarted = await h.create(t, ['sh', '-c', 'touch /tmp/started; echo started'], {
        mounts: [{ destination: '/tmp', type: 'bind', source: never, options: ['rbind', 'rw'] }],
      });
      const unstartedPid = await h.hostPid(unstarted);
      const waiting = h.client.call('WaitProcess', { container_id: unstarted, exec_id: unstarted }).then(
        (r) => r.status,
        (err: Error & { code?: number }) => `error ${err.code}`,
      );
      await sleep(20);
      await h.client.call('RemoveContainer', { container_id: unstarted, timeout: 10 });
      if (pidAlive(unstartedPid)) statuses.push(`pid ${unstartedPid} alive after RemoveContainer`);
      statuses.push(await within(waiting, 5000, 'WaitProcess of a container removed before start'));
    }
    t.same(
      statuses.filter((s) => s !== 137 && s !== `error ${Code.NOT_FOUND}`),
      [],
      `WaitProcess of a never-started, removed container: 137 or NOT_FOUND, never success (${statuses.join(', ')})`,
    );
    t.notOk(fs.existsSync(path.join(never, 'started')), 'the workload never ran');
  });

  t.test('debug endpoint: every route answers with a container running', async (t) => {
    const cid = await h.run(t, ['sleep', '1000']);
    await h.execCollect(cid, ['true']);
    const get = async (p: string): Promise<{ status: number; type: string; text: string }> => {
      const res = await fetch(`${h.agent.debugUrl}${p}`);
      return { status: res.status, type: res.headers.get('content-type') ?? '', text: await res.text() };
    };
    t.match(JSON.parse((await get('/healthz')).text), { status: 'ok' });
    t.match(JSON.parse((await get('/readyz')).text), { status: 'ready' });
    const metrics = await get('/metrics');
    t.equal(metrics.status, 200);
    t.match(metrics.text, /kata_agent_/, 'metrics text');
    const sandbox = JSON.parse((await get('/v1/sandbox')).text) as { containers: { id: string; processes: number }[] };
    t.match(sandbox.containers.find((c) => c.id === cid), { id: cid, processes: 1 }, 'the finished exec is not counted');
    t.match(JSON.parse((await get('/v1/containers')).text), [{ id: cid, status: 'running' }]);
    const one = JSON.parse((await get(`/v1/containers/${cid}`)).text) as { processes: { exited: boolean }[] };
    t.equal(one.processes.length, 2, 'init and the exited exec listed');
    const procs = JSON.parse((await get('/v1/processes')).text) as { containerId: string }[];
    t.ok(procs.some((p) => p.containerId === cid));
    t.equal((await get('/v1/config')).status, 200);
    const logs = await get('/v1/logs?lines=5');
    t.equal(logs.status, 200);
    t.match(logs.type, 'application/x-ndjson');
    t.ok(logs.text.trim().split('\n').every((l) => typeof JSON.parse(l) === 'object'), 'log lines are JSON');
    t.equal((await get('/v1/containers/nope')).status, 404);
  });

  t.test('shutdown: DestroySandbox, agent exits, nothing left behind', async (t) => {
    const ids = ((await h.debug('/v1/sandbox')).body.containers as { id: string }[]).map((c) => c.id);
    t.same(ids, [], 'every subtest removed its containers');
    const res = await h.shutdown(true);
    t.equal(res.destroyError, null, 'DestroySandbox succeeded');
    t.same(res.exits, { control: 0, helper: 0 }, 'both processes exit 0');
    t.same(res.mounts, [], 'no mount left under the run dir or the rootfs');
    t.ok(await eventually(() => res.processes().length === 0, 2000), 'no container process left');
    t.same(res.processes(), [], 'container processes alive after the agent stopped');
  });

}
