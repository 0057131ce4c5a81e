// shared/launch.ts: the processes start from their one-file bundle when it is fresh, from the
// dist/ modules otherwise (missing, stale, disabled or broken bundle), and a V8 code cache is
// used or refused without changing what runs. The real bundles (scripts/bundle.js) export what
// the dist/ entry modules export.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { bundleFiles, bundleIsFresh, cacheDigest, compileBundle, entryKind, loadEntry, type BundleManifest } from '../../shared/launch';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'launch-test-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A project tree `root` with src/input.js and dist/bundle/kata-agent.{js,json} made from it. */
function project(root: string, body: string): { dir: string; input: string } {
  const dir = path.join(root, 'dist', 'bundle');
  fs.mkdirSync(dir, { recursive: true });
  fs.mkdirSync(path.join(root, 'src'), { recursive: true });
  const input = path.join(root, 'src', 'input.js');
  fs.writeFileSync(input, 'module.exports = 1;\n');
  fs.writeFileSync(bundleFiles('kata-agent', dir).js, body);
  const st = fs.statSync(input);
  const manifest: BundleManifest = { node: process.version, inputs: [['src/input.js', st.size, st.mtimeMs]] };
  fs.writeFileSync(bundleFiles('kata-agent', dir).manifest, JSON.stringify(manifest));
  return { dir, input };
}

const fallback = (): { from: string } => ({ from: 'modules' });

t.test('a fresh bundle is loaded as a CommonJS module; a stale one is not', async (t) => {
  const { dir, input } = project(path.join(tmp, 'fresh'), 'exports.from = "bundle"; exports.dir = __dirname; exports.req = typeof require("node:path").join;');
  t.ok(bundleIsFresh('kata-agent', dir), 'fresh');
  t.same(loadEntry('kata-agent', fallback, dir), { from: 'bundle', dir, req: 'function' }, 'bundle exports, its own __dirname and require');
  t.equal(entryKind(), 'bundle-uncached', 'no code cache file');
  fs.appendFileSync(input, '// edited\n');
  t.notOk(bundleIsFresh('kata-agent', dir), 'an input changed size: stale');
  t.same(loadEntry('kata-agent', fallback, dir), { from: 'modules' }, 'stale: the dist/ modules');
  t.equal(entryKind(), 'modules');
});

t.test('an input with a new mtime, a missing input, manifest or bundle: the dist/ modules', async (t) => {
  let p = project(path.join(tmp, 'mtime'), 'exports.from = "bundle";');
  fs.utimesSync(p.input, new Date(), new Date(Date.now() + 5000));
  t.same(loadEntry('kata-agent', fallback, p.dir), { from: 'modules' }, 'same size, other mtime');
  p = project(path.join(tmp, 'gone'), 'exports.from = "bundle";');
  fs.rmSync(p.input);
  t.same(loadEntry('kata-agent', fallback, p.dir), { from: 'modules' }, 'input removed');
  p = project(path.join(tmp, 'nomanifest'), 'exports.from = "bundle";');
  fs.rmSync(bundleFiles('kata-agent', p.dir).manifest);
  t.same(loadEntry('kata-agent', fallback, p.dir), { from: 'modules' }, 'no manifest');
  p = project(path.join(tmp, 'nobundle'), 'exports.from = "bundle";');
  fs.rmSync(bundleFiles('kata-agent', p.dir).js);
  t.same(loadEntry('kata-agent', fallback, p.dir), { from: 'modules' }, 'no bundle file');
  fs.writeFileSync(bundleFiles('kata-agent', p.dir).manifest, '{"node":"v20","inputs":[]}');
  t.notOk(bundleIsFresh('kata-agent', p.dir), 'a manifest without inputs is never fresh');
});

t.test('KATA_AGENT_BUNDLE=0 forces the dist/ modules', async (t) => {
  const { dir } = project(path.join(tmp, 'off'), 'exports.from = "bundle";');
  process.env.KATA_AGENT_BUNDLE = '0';
  t.teardown(() => delete process.env.KATA_AGENT_BUNDLE);
  t.same(loadEntry('kata-agent', fallback, dir), { from: 'modules' });
});

t.test('a bundle that does not compile: the dist/ modules, one line on stderr', async (t) => {
  const { dir } = project(path.join(tmp, 'broken'), 'exports.from = ;');
  const written: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((s: string) => (written.push(String(s)), true)) as typeof process.stderr.write;
  try {
    t.same(loadEntry('kata-agent', fallback, dir), { from: 'modules' });
  } finally {
    process.stderr.write = write;
  }
  t.match(written.join(''), /kata-agent: cannot load .*kata-agent\.js \(SyntaxError/);
});

t.test('the code cache is used when it matches and refused (still running) when it does not', async (t) => {
  const { dir } = project(path.join(tmp, 'cache'), 'function f(x) { return x * 2; } exports.v = f(21);');
  const file = bundleFiles('kata-agent', dir).js;
  const first = compileBundle(file);
  t.equal(first.cacheRejected, undefined, 'no cache given');
  t.same(first.run(), { v: 42 });
  fs.writeFileSync(bundleFiles('kata-agent', dir).cache, first.script.createCachedData());
  const cached = compileBundle(file, fs.readFileSync(bundleFiles('kata-agent', dir).cache));
  t.equal(cached.cacheRejected, false, 'accepted');
  t.same(cached.run(), { v: 42 });
  // Another source (V8 answers an identical one from its in-process compilation cache and never
  // looks at the code cache given).
  const other = project(path.join(tmp, 'cache2'), 'function g(x) { return x + 1; } exports.v = g(41);');
  const junk = compileBundle(bundleFiles('kata-agent', other.dir).js, Buffer.from('not a code cache'));
  t.equal(junk.cacheRejected, true, 'refused');
  t.same(junk.run(), { v: 42 }, 'and compiled instead');
  const third = project(path.join(tmp, 'cache3'), 'exports.v = 7;');
  fs.writeFileSync(bundleFiles('kata-agent', third.dir).cache, 'junk');
  t.same(loadEntry('kata-agent', fallback, third.dir), { v: 7 }, 'loadEntry with a junk cache still loads the bundle');
  t.equal(entryKind(), 'bundle-uncached', 'and says the cache was not used');
  const fourth = project(path.join(tmp, 'cache4'), 'exports.v = 8;');
  writeCache(fourth.dir, compileBundle(bundleFiles('kata-agent', fourth.dir).js).script.createCachedData());
  t.same(loadEntry('kata-agent', fallback, fourth.dir), { v: 8 });
  t.equal(entryKind(), 'bundle', 'a matching cache: bundle');
});

/** Write `cache` as bundle kata-agent's code cache in `dir` and name its hash in the manifest, as scripts/bundle.js does. */
function writeCache(dir: string, cache: Buffer): void {
  const files = bundleFiles('kata-agent', dir);
  fs.writeFileSync(files.cache, cache);
  const manifest = JSON.parse(fs.readFileSync(files.manifest, 'utf8')) as BundleManifest;
  fs.writeFileSync(files.manifest, JSON.stringify({ ...manifest, cacheSha256: cacheDigest(cache) }));
}

// Adversarial review 8: V8 checks a code cache's header (V8 version, flags, source length), not
// its payload, in a release build. A cache damaged past its header (a bad disk block, a partial
// copy onto the guest image) was used and the process (the root helper included) died of
// SIGSEGV before it started. Fails on the code before the manifest's cacheSha256.
t.test('a code cache damaged past its header is not used (the process starts, uncached)', async (t) => {
  const { dir } = project(
    path.join(tmp, 'damaged'),
    "function f(x) { let s = 0; for (let i = 0; i < x; i++) s += i * 2; return s; }\n" +
      "function g(o) { return Object.keys(o).map((k) => k + '=' + o[k]).join(','); }\n" +
      'exports.v = f(10) + g({ a: 1, b: 2 }).length;\n',
  );
  const cache = compileBundle(bundleFiles('kata-agent', dir).js).script.createCachedData();
  writeCache(dir, cache);
  const damaged = Buffer.from(cache);
  for (let i = 64; i < damaged.length; i++) damaged[i] ^= 0x5a;
  fs.writeFileSync(bundleFiles('kata-agent', dir).cache, damaged);
  // A process of its own: this one has the source in V8's compilation cache and would not look at the code cache.
  const launch = path.resolve(__dirname, '..', '..', 'shared', 'launch.js');
  const script = `const L = require(${JSON.stringify(launch)}); const v = L.loadEntry('kata-agent', () => ({}), ${JSON.stringify(dir)}); console.log(JSON.stringify(v), L.entryKind());`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 });
  t.equal(r.signal, null, `not killed by a signal (${r.signal})`);
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stdout.trim(), '{"v":97} bundle-uncached', 'the bundle ran, compiled without the damaged cache');
});

t.test('the built bundles export what the dist/ entry modules export', async (t) => {
  const entries = [['kata-agent', '../../control/main', 'main'], ['kata-agent-helper', '../../helper/main', 'main'], ['kata-agent-init', '../../control/init', 'runInit']] as const;
  for (const [name, mod, fn] of entries) {
    if (!bundleIsFresh(name)) {
      t.test(name, { skip: `no fresh dist/bundle (npm run build makes it; esbuild is a dev dependency)` }, async () => undefined);
      continue;
    }
    const exported = Object.keys(loadEntry(name, () => ({})) as object).sort();
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    t.same(exported, Object.keys(require(mod) as object).sort(), `${name}: same exports`);
    t.ok(exported.includes(fn), `${name} exports ${fn}`);
  }
});
