// Interoperability with an independent ttRPC client: containerd's Go ttrpc
// (github.com/containerd/ttrpc 1.1, Debian's golang-github-containerd-ttrpc-dev) with message
// types and client stubs generated here, at test time, by protoc + ttrpc's protoc-gen-gogottrpc
// (gogo/protobuf with the ttrpc plugin, what the Kata runtime's Go code was generated with) from
// the agent's .proto files. The client, test/interop/go-client/main.go, checks grpc.Health/Check
// (SERVING) and Version and drives grpc.AgentService through a container's life against a
// stand-alone agent (scripts/lib/standalone.ts): CreateSandbox, CreateContainer, StartContainer,
// ReadStdout/ReadStderr until the stream ends, WaitProcess (status 5), RemoveContainer,
// DestroySandbox.
//
// Two runs:
//  1. code generated from protos/*.proto (always, when the tools are installed);
//  2. code generated from upstream's protos (kata-containers src/libs/protocols/protos at
//     6e4d4c329a), read from a local git mirror when there is one ($KATA_UPSTREAM_REPO, default
//     /work/.mirror/kata-containers+kata-containers/repo); skipped with the reason otherwise.
//     Nothing from upstream is kept in this repository. This run also checks that protoc
//     compiles both sets of files to byte-identical descriptors (no source info, so comments
//     aside).
//
// Needs root (the agent's helper) and the packages of scripts/install-go-interop (go, protoc,
// Debian's Go sources under /usr/share/gocode); skips with the reason printed otherwise. Builds
// are offline, in GOPATH mode against /usr/share/gocode. The built clients are cached in
// .cache/go-interop, keyed by a hash of every input (protos, main.go, toolchain and package
// versions); KATA_GO_INTEROP_REBUILD=1 ignores the cache.
//
// Rootfs: $KATA_TEST_ROOTFS (scripts/run-tests.js builds it with scripts/make-rootfs), else one
// built here into a temp dir with scripts/make-rootfs.
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PROJECT_ROOT, startStandaloneAgent, tail } from '../../scripts/lib/standalone';
import { PROTO_FILES, WKT_INCLUDE, ensureGoProgram, goToolsMissing, have, mustRun, run, toolchainFingerprint, type GoProgram, type Run } from '../../scripts/lib/go-build';

const ROOT = PROJECT_ROOT;
const MAIN_GO = path.join(ROOT, 'test', 'interop', 'go-client', 'main.go');
const UPSTREAM_REPO = process.env.KATA_UPSTREAM_REPO ?? '/work/.mirror/kata-containers+kata-containers/repo';
const UPSTREAM_COMMIT = '6e4d4c329a';
const UPSTREAM_DIR = 'src/libs/protocols/protos';

/** The lines go-client prints, by step name, in order (stdout may repeat). */
const STEPS = ['connect', 'health', 'version', 'create-sandbox', 'create-container', 'start-container', 'stdout', 'read-stdout',
  'read-stderr', 'wait-process', 'remove-container', 'start-removed', 'destroy-sandbox', 'go-client'];

const skipReason =
  process.getuid?.() !== 0 ? 'needs root (the agent\'s helper creates namespaces and mounts)' : goToolsMissing();

const ensureClient = (label: string, protoDir: string, fingerprint: string): Promise<GoProgram> =>
  ensureGoProgram(label, protoDir, MAIN_GO, fingerprint);

/** Upstream's five .proto files in a temp dir, or the reason they cannot be had. */
function upstreamProtos(): { dir: string } | { reason: string } {
  if (!fs.existsSync(UPSTREAM_REPO)) return { reason: `no upstream mirror at ${UPSTREAM_REPO} (set KATA_UPSTREAM_REPO to a kata-containers git dir)` };
  if (!have('git')) return { reason: 'git not installed' };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'go-interop-upstream-'));
  for (const f of PROTO_FILES) {
    const r = spawnSync('git', ['-C', UPSTREAM_REPO, 'show', `${UPSTREAM_COMMIT}:${UPSTREAM_DIR}/${f}`], { maxBuffer: 16 * 1024 * 1024 });
    if (r.status !== 0) {
      fs.rmSync(dir, { recursive: true, force: true });
      return { reason: `git show ${UPSTREAM_COMMIT}:${UPSTREAM_DIR}/${f} failed in ${UPSTREAM_REPO}: ${String(r.stderr).trim()}` };
    }
    fs.writeFileSync(path.join(dir, f), r.stdout);
  }
  return { dir };
}

/** protoc's FileDescriptorSet of the five files (no source info, so no comments). */
async function descriptorSet(protoDir: string, out: string): Promise<Buffer> {
  await mustRun('protoc --descriptor_set_out', 'protoc', [`-I${protoDir}`, `-I${WKT_INCLUDE}`, `--descriptor_set_out=${out}`, ...PROTO_FILES], { cwd: protoDir });
  return fs.readFileSync(out);
}

/** Start a stand-alone agent, run go-client against it, stop the agent. */
async function runClient(t: Test, bin: string, rootfs: string): Promise<Run> {
  const agent = await startStandaloneAgent({ logLevel: 'debug', debug: false });
  try {
    t.comment(`agent on ${agent.address} (control plane ${agent.controlUser})`);
    const r = await run(bin, [agent.address, rootfs], { timeoutMs: 120_000 });
    if (r.code !== 0) {
      t.comment(`--- control log ---\n${tail(agent.controlLog, 40)}`);
      t.comment(`--- helper log ---\n${tail(agent.helperLog, 40)}`);
    }
    return r;
  } finally {
    const codes = await agent.stop(5000);
    t.comment(`agent stopped: control exit ${codes.control}, helper exit ${codes.helper}`);
  }
}

function checkOutput(t: Test, r: Run): void {
  for (const line of r.stdout.trimEnd().split('\n')) t.comment(`go-client | ${line}`);
  if (r.stderr.trim()) t.comment(`go-client stderr | ${r.stderr.trim()}`);
  t.equal(r.code, 0, `go-client exits 0 (got ${r.code ?? r.signal})`);
  const lines = r.stdout.trimEnd().split('\n');
  t.ok(lines.includes('health: SERVING'), 'grpc.Health/Check: SERVING');
  t.ok(lines.some((l) => /^version: agent "[^"]+" api "[^"]+"$/.test(l)), 'grpc.Health/Version answered');
  t.ok(lines.includes('stdout: hello-from-go'), 'ReadStdout: hello-from-go');
  t.ok(lines.some((l) => /^read-stdout: ended with \w+/.test(l)), 'ReadStdout ends with an error status');
  t.ok(lines.includes('wait-process: status 5'), 'WaitProcess: status 5');
  t.ok(lines.includes('remove-container: ok'), 'RemoveContainer');
  t.ok(lines.includes('destroy-sandbox: ok'), 'DestroySandbox');
  const steps = lines.map((l) => l.split(':')[0]).filter((s, i, a) => i === 0 || s !== a[i - 1]);
  t.same(steps, STEPS, 'every step, in order');
  t.equal(lines[lines.length - 1], 'go-client: PASS', 'go-client: PASS');
}

if (skipReason) {
  t.plan(0, skipReason);
} else {
  const fingerprint = toolchainFingerprint();
  let rootfs = process.env.KATA_TEST_ROOTFS ?? '';
  if (!rootfs) {
    rootfs = fs.mkdtempSync(path.join(os.tmpdir(), 'go-interop-rootfs-'));
    spawnSync(path.join(ROOT, 'scripts', 'make-rootfs'), [rootfs], { stdio: 'ignore' });
    t.teardown(() => fs.rmSync(rootfs, { recursive: true, force: true }));
  }

  t.test('Go ttrpc client, code generated from protos/', async (t) => {
    const client = await ensureClient('ours', path.join(ROOT, 'protos'), fingerprint);
    t.comment(client.cached ? `go-client from cache ${client.bin}` : `generated and built go-client in ${client.ms} ms (${client.bin})`);
    checkOutput(t, await runClient(t, client.bin, rootfs));
  });

  const upstream = upstreamProtos();
  t.test(
    `Go ttrpc client, code generated from upstream protos at ${UPSTREAM_COMMIT}`,
    'reason' in upstream ? { skip: upstream.reason } : {},
    async (t) => {
      if ('reason' in upstream) return;
      t.teardown(() => fs.rmSync(upstream.dir, { recursive: true, force: true }));
      const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'go-interop-fds-'));
      t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
      const ours = await descriptorSet(path.join(ROOT, 'protos'), path.join(tmp, 'ours.pb'));
      const theirs = await descriptorSet(upstream.dir, path.join(tmp, 'upstream.pb'));
      t.ok(ours.equals(theirs), `protoc compiles protos/ and upstream's files to identical descriptors (${ours.length} / ${theirs.length} bytes)`);

      const client = await ensureClient('upstream', upstream.dir, fingerprint);
      t.comment(client.cached ? `go-client from cache ${client.bin}` : `generated and built go-client in ${client.ms} ms (${client.bin})`);
      checkOutput(t, await runClient(t, client.bin, rootfs));
    },
  );
}
