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
import { execFile, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startStandaloneAgent, tail } from '../../scripts/lib/standalone';

function repoRoot(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'binding.gyp'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no binding.gyp above ${__dirname}`);
  }
}

const ROOT = repoRoot();
const MAIN_GO = path.join(ROOT, 'test', 'interop', 'go-client', 'main.go');
const CACHE = path.join(ROOT, '.cache', 'go-interop');
const GOCODE = '/usr/share/gocode';
const PLUGIN_PKG = 'github.com/containerd/ttrpc/cmd/protoc-gen-gogottrpc';
const WKT_INCLUDE = '/usr/include';
/** The files of the agent protocol, as upstream names them (ttrpc.proto is ours: the framing). */
const PROTO_FILES = ['agent.proto', 'oci.proto', 'csi.proto', 'health.proto', 'types.proto'];
const UPSTREAM_REPO = process.env.KATA_UPSTREAM_REPO ?? '/work/.mirror/kata-containers+kata-containers/repo';
const UPSTREAM_COMMIT = '6e4d4c329a';
const UPSTREAM_DIR = 'src/libs/protocols/protos';
/** Bump when the way the client is generated or built changes (part of the cache key). */
const RECIPE = 'go-interop v1: protoc-gen-gogottrpc plugins=ttrpc, GOPATH mode, CGO_ENABLED=0';
const REBUILD = process.env.KATA_GO_INTEROP_REBUILD === '1';

/** The lines go-client prints, by step name, in order (stdout may repeat). */
const STEPS = ['connect', 'health', 'version', 'create-sandbox', 'create-container', 'start-container', 'stdout', 'read-stdout',
  'read-stderr', 'wait-process', 'remove-container', 'start-removed', 'destroy-sandbox', 'go-client'];

function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

function output(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : '';
}

const skipReason =
  process.getuid?.() !== 0
    ? 'needs root (the agent\'s helper creates namespaces and mounts)'
    : !have('go')
      ? 'go not installed (scripts/install-go-interop installs golang-go)'
      : !have('protoc')
        ? 'protoc not installed (scripts/install-go-interop installs protobuf-compiler)'
        : !fs.existsSync(path.join(GOCODE, 'src', PLUGIN_PKG))
          ? `${GOCODE}/src/${PLUGIN_PKG} missing (scripts/install-go-interop installs golang-github-containerd-ttrpc-dev)`
          : !fs.existsSync(path.join(WKT_INCLUDE, 'google', 'protobuf', 'empty.proto'))
            ? `${WKT_INCLUDE}/google/protobuf/empty.proto missing (scripts/install-go-interop installs libprotobuf-dev)`
            : undefined;

const sha256 = (...parts: (string | Buffer)[]): string => {
  const h = crypto.createHash('sha256');
  for (const p of parts) h.update(p).update('\0');
  return h.digest('hex');
};

interface Run {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd: opts.cwd, env: opts.env, timeout: opts.timeoutMs ?? 300_000, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const e = err as (NodeJS.ErrnoException & { code?: number | string; signal?: string }) | null;
        resolve({
          code: e ? (typeof e.code === 'number' ? e.code : null) : 0,
          signal: e?.signal ?? null,
          stdout: stdout ?? '',
          stderr: (stderr ?? '') + (e && typeof e.code !== 'number' && !e.signal ? String(e.message) : ''),
        });
      });
  });
}

async function mustRun(what: string, cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<void> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(`${what} failed (${r.code ?? r.signal}): ${cmd} ${args.join(' ')}\n${r.stdout}${r.stderr}`);
  }
}

/** Versions of everything that goes into a build, for the cache keys. */
function toolchainFingerprint(): string {
  const dpkg = output('dpkg-query', ['-W', '-f=${Package} ${Version}\n', 'golang-github-containerd-ttrpc-dev',
    'golang-github-gogo-protobuf-dev', 'golang-google-grpc-dev', 'golang-google-genproto-dev', 'libprotobuf-dev']);
  return [RECIPE, output('go', ['version']), output('protoc', ['--version']), dpkg].join('\n');
}

/** Environment of an offline GOPATH-mode build against Debian's Go sources. */
function goEnv(gopath: string, home: string): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: home,
    GO111MODULE: 'off',
    GOPATH: `${gopath}:${GOCODE}`,
    GOCACHE: path.join(CACHE, 'gocache'),
    GOENV: 'off',
    GOFLAGS: '',
    GOPROXY: 'off',
    GOTOOLCHAIN: 'local',
    CGO_ENABLED: '0',
  };
}

/** Move `from` to `to` unless another run got there first. */
function publish(from: string, to: string): void {
  fs.mkdirSync(path.dirname(to), { recursive: true });
  try {
    fs.renameSync(from, to);
  } catch (err) {
    if (!fs.existsSync(to)) throw err;
  }
}

/** Remove cache entries named `${prefix}*` other than `keep`. */
function prune(prefix: string, keep: string): void {
  if (!fs.existsSync(CACHE)) return;
  for (const name of fs.readdirSync(CACHE)) {
    if (name.startsWith(prefix) && name !== keep) fs.rmSync(path.join(CACHE, name), { recursive: true, force: true });
  }
}

/** protoc-gen-gogottrpc built from Debian's ttrpc source (cached). */
async function ensurePlugin(fingerprint: string): Promise<string> {
  const name = `plugin-${sha256(fingerprint).slice(0, 16)}`;
  const bin = path.join(CACHE, name, 'protoc-gen-gogottrpc');
  if (!REBUILD && fs.existsSync(bin)) return bin;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'go-interop-plugin-'));
  try {
    fs.mkdirSync(path.join(tmp, 'out'));
    await mustRun('go build protoc-gen-gogottrpc', 'go', ['build', '-o', path.join(tmp, 'out', 'protoc-gen-gogottrpc'), PLUGIN_PKG], {
      cwd: tmp,
      env: goEnv(path.join(tmp, 'gopath'), tmp),
    });
    fs.rmSync(path.join(CACHE, name), { recursive: true, force: true });
    publish(path.join(tmp, 'out'), path.join(CACHE, name));
    prune('plugin-', name);
    return bin;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** The files of one protoc run per Go package (protoc-gen-gogo wants one package per run). */
function groupByGoPackage(protoDir: string): string[][] {
  const groups = new Map<string, string[]>();
  for (const f of PROTO_FILES) {
    const m = /^\s*option\s+go_package\s*=\s*"([^"]+)"/m.exec(fs.readFileSync(path.join(protoDir, f), 'utf8'));
    const pkg = m ? m[1] : `(none: ${f})`;
    groups.set(pkg, [...(groups.get(pkg) ?? []), f]);
  }
  return [...groups.values()];
}

interface Client {
  bin: string;
  cached: boolean;
  ms: number;
}

/**
 * Generate Go code from the five .proto files in `protoDir` into a temp GOPATH (under their own
 * go_package paths, google.protobuf.Empty from gogo's types) and build go-client against it.
 * The binary is cached under a key of all inputs.
 */
async function ensureClient(label: string, protoDir: string, fingerprint: string): Promise<Client> {
  const started = Date.now();
  const inputs = PROTO_FILES.flatMap((f) => [f, fs.readFileSync(path.join(protoDir, f))]);
  const name = `client-${label}-${sha256(fingerprint, fs.readFileSync(MAIN_GO), ...inputs).slice(0, 16)}`;
  const bin = path.join(CACHE, name, 'go-client');
  if (!REBUILD && fs.existsSync(bin)) return { bin, cached: true, ms: Date.now() - started };

  const plugin = await ensurePlugin(fingerprint);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `go-interop-${label}-`));
  try {
    const src = path.join(tmp, 'gopath', 'src');
    fs.mkdirSync(src, { recursive: true });
    for (const files of groupByGoPackage(protoDir)) {
      await mustRun(`protoc ${files.join(' ')}`, 'protoc', [
        `-I${protoDir}`,
        `-I${WKT_INCLUDE}`,
        `--plugin=protoc-gen-gogottrpc=${plugin}`,
        `--gogottrpc_out=plugins=ttrpc,Mgoogle/protobuf/empty.proto=github.com/gogo/protobuf/types:${src}`,
        ...files,
      ], { cwd: protoDir });
    }
    fs.mkdirSync(path.join(tmp, 'out'));
    await mustRun('go build go-client', 'go', ['build', '-o', path.join(tmp, 'out', 'go-client'), MAIN_GO], {
      cwd: tmp,
      env: goEnv(path.join(tmp, 'gopath'), tmp),
    });
    fs.rmSync(path.join(CACHE, name), { recursive: true, force: true });
    publish(path.join(tmp, 'out'), path.join(CACHE, name));
    prune(`client-${label}-`, name);
    return { bin, cached: false, ms: Date.now() - started };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

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
