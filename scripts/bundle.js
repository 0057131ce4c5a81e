#!/usr/bin/env node
// Build step after tsc (npm run build, scripts/install.js): one CommonJS file per process and its
// V8 code cache, for a faster start (shared/launch.ts loads them, docs/ARCHITECTURE.md
// "Performance"):
//   dist/bundle/kata-agent.js         dist/control/main.js and what it requires at start-up
//   dist/bundle/kata-agent-helper.js  dist/helper/main.js likewise
//   dist/bundle/kata-agent-init.js    dist/control/init.js, for bin/kata-agent as PID 1
//   dist/bundle/<name>.json           the dist/ inputs and npm's hidden lockfile (size, mtime): a
//                                     later tsc or npm install makes it stale
//   dist/bundle/<name>.cache          V8 code cache, made after running the module initialisation
// Packages only required on demand (prom-client for metrics, OpenTelemetry for tracing) stay
// outside and load from node_modules; fastify (the debug endpoint, lazily required) is inside.
// Without esbuild (npm install --omit=dev) this says so and removes any old bundle: the
// processes then start from the dist/ modules as before.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const root = path.resolve(__dirname, '..');
const outDir = path.join(root, 'dist', 'bundle');
const ENTRIES = {
  'kata-agent': 'dist/control/main.js',
  'kata-agent-helper': 'dist/helper/main.js',
  // PID 1 in a guest (control/init.ts): spawns the two processes without loading the control plane first.
  'kata-agent-init': 'dist/control/init.js',
};
// fastify is in (not initialised at start: the debug endpoint loads it on its first connection,
// control/debug/lazy.ts): resolving its ~260 modules one by one is slow over a VM's 9p root.
const EXTERNAL = ['prom-client', '@opentelemetry/*', '*.node'];

/**
 * Each module keeps its own __dirname/__filename (the directory it was compiled to, not
 * dist/bundle): code finds the project root, the addon and package.json relative to them.
 */
const ownDirname = {
  name: 'own-dirname',
  setup(build) {
    build.onLoad({ filter: /\.(c?js)$/ }, (args) => {
      const contents = fs.readFileSync(args.path, 'utf8');
      if (!/\b__(dirname|filename)\b/.test(contents)) return undefined;
      const rel = (p) => JSON.stringify(path.relative(outDir, p));
      const prologue =
        `var __dirname = require("node:path").join(__kataBundleDir, ${rel(path.dirname(args.path))}), ` +
        `__filename = require("node:path").join(__kataBundleDir, ${rel(args.path)});`;
      return { contents: `${prologue}${contents}`, loader: 'js' };
    });
  },
};

/** Child mode: load bundle `name` as the launcher does, run its initialisation, write its code cache. */
function makeCache(name) {
  const { compileBundle, bundleFiles, cacheDigest } = require(path.join(root, 'dist', 'shared', 'launch.js'));
  const files = bundleFiles(name);
  const compiled = compileBundle(files.js);
  compiled.run();
  const cache = compiled.script.createCachedData();
  fs.writeFileSync(files.cache, cache);
  // The launcher uses only the cache whose hash its manifest names (shared/launch.ts).
  const manifest = JSON.parse(fs.readFileSync(files.manifest, 'utf8'));
  fs.writeFileSync(files.manifest, `${JSON.stringify({ ...manifest, cacheSha256: cacheDigest(cache) })}\n`);
}

/**
 * The prebuilt binary msgpackr-extract's loader (node-gyp-build-optional-packages, detect-libc)
 * picks on this machine, found by loading it once here; undefined when it does not load.
 */
function msgpackrExtractBinary() {
  try {
    require(require.resolve('msgpackr-extract', { paths: [root] }));
  } catch {
    return undefined;
  }
  return Object.keys(require.cache).find((f) => f.endsWith('.node') && f.includes(`${path.sep}@msgpackr-extract${path.sep}`));
}

/**
 * msgpackr's optional native string extractor, required straight from the binary found at build
 * time (~10 ms of CPU less per process than its loader's search); the loader when that fails
 * (another Node ABI). The binary is one of the bundle's inputs, so a reinstall makes it stale.
 */
function directMsgpackrExtract(binary) {
  return {
    name: 'direct-msgpackr-extract',
    setup(build) {
      build.onResolve({ filter: /^msgpackr-extract$/ }, (args) =>
        args.namespace === 'direct-msgpackr-extract' || !binary
          ? { path: 'msgpackr-extract', external: true }
          : { path: 'msgpackr-extract', namespace: 'direct-msgpackr-extract' },
      );
      build.onLoad({ filter: /.*/, namespace: 'direct-msgpackr-extract' }, () => ({
        contents:
          `try { module.exports = require(require("node:path").join(__kataBundleDir, ${JSON.stringify(path.relative(outDir, binary))})); }\n` +
          `catch { module.exports = require("msgpackr-extract"); }\n`,
        loader: 'js',
        resolveDir: root,
      }));
    },
  };
}

/**
 * What the manifest records (size, mtime) for the launcher to compare at every start: each dist/
 * input (tsc rewrites them), and for the packages npm's hidden lockfile
 * node_modules/.package-lock.json, which every npm install that changes node_modules rewrites
 * (one stat instead of ~300 with fastify inside). Without that file, every package input.
 */
function freshnessInputs(files) {
  const own = files.filter((f) => !f.includes(':'));
  const lock = path.join('node_modules', '.package-lock.json');
  const hasLock = fs.existsSync(path.join(root, lock));
  const kept = own.filter((f) => !(hasLock && f.split(path.sep).includes('node_modules')));
  return [...kept, ...(hasLock ? [lock] : [])].sort();
}

async function main() {
  if (process.argv[2] === '--cache') return makeCache(process.argv[3]);
  let esbuild;
  try {
    esbuild = require('esbuild');
  } catch {
    fs.rmSync(outDir, { recursive: true, force: true });
    process.stderr.write('bundle: esbuild is not installed (dev dependency); the agent starts from the dist/ modules\n');
    return;
  }
  fs.rmSync(outDir, { recursive: true, force: true });
  fs.mkdirSync(outDir, { recursive: true });
  const extractBinary = msgpackrExtractBinary();
  for (const [name, entry] of Object.entries(ENTRIES)) {
    const outfile = path.join(outDir, `${name}.js`);
    const result = await esbuild.build({
      absWorkingDir: root,
      entryPoints: [entry],
      outfile,
      bundle: true,
      platform: 'node',
      format: 'cjs',
      target: `node${process.versions.node.split('.')[0]}`,
      external: EXTERNAL,
      metafile: true,
      minifyWhitespace: true,
      minifySyntax: true,
      logLevel: 'error',
      banner: { js: 'var __kataBundleDir = __dirname;' },
      plugins: [ownDirname, directMsgpackrExtract(extractBinary)],
    });
    const inputs = freshnessInputs([...Object.keys(result.metafile.inputs), ...(extractBinary ? [path.relative(root, extractBinary)] : [])])
      .map((f) => {
        const st = fs.statSync(path.join(root, f));
        return [f, st.size, st.mtimeMs];
      });
    fs.writeFileSync(path.join(outDir, `${name}.json`), `${JSON.stringify({ node: process.version, inputs })}\n`);
    const cache = spawnSync(process.execPath, [__filename, '--cache', name], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
    if (cache.status !== 0) {
      // The bundle still works without its cache (compiled at start as before).
      process.stderr.write(`bundle: no code cache for ${name} (exit ${cache.status}, signal ${cache.signal})\n`);
    }
    process.stderr.write(`bundle: ${path.relative(root, outfile)} (${inputs.length} inputs, ${fs.statSync(outfile).size} bytes)\n`);
  }
}

main().catch((err) => {
  process.stderr.write(`bundle: ${(err && err.stack) || String(err)}\n`);
  process.exit(1);
});
