// shared/launch.ts: the processes start from their one-file bundle when it is fresh, from the
// dist/ modules otherwise (missing, stale, disabled or broken bundle), and a V8 code cache is
// used or refused without changing what runs. The real bundles (scripts/bundle.js) export what
// the dist/ entry modules export.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { bundleFiles, bundleIsFresh, compileBundle, entryKind, loadEntry, type BundleManifest } from '../../shared/launch';

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
  fs.writeFileSync(bundleFiles('kata-agent', fourth.dir).cache, compileBundle(bundleFiles('kata-agent', fourth.dir).js).script.createCachedData());
  t.same(loadEntry('kata-agent', fallback, fourth.dir), { v: 8 });
  t.equal(entryKind(), 'bundle', 'a matching cache: bundle');
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
