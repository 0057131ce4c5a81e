#!/usr/bin/env node
// npm's install step for this checkout (package.json "install"; `npm install` / `npm ci` run it):
// builds the native addon and kata-init (node-gyp rebuild), generates the protobuf codecs and
// compiles the TypeScript into dist/ and bundles each process with its V8 code cache
// (scripts/bundle.js; npm run build).
//
// `npx kata-agent-ctl` (npm exec) installs the checkout itself into npx's cache as a link and
// runs this script again: there it does nothing (npm_command is "exec"), so running a command
// never rebuilds the checkout under a test run going on at the same time. Building is
// `npm install`'s job only.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
if (process.env.npm_command === 'exec') {
  process.exit(0);
}
function run(what, cmd, args) {
  process.stderr.write(`kata-agent-ts install: ${what}\n`);
  const res = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (res.status !== 0) {
    process.stderr.write(`kata-agent-ts install: ${what} failed (exit ${res.status}, signal ${res.signal})\n`);
    process.exit(res.status || 1);
  }
}
run('native addon and kata-init (node-gyp rebuild)', 'node-gyp', ['rebuild']);
run('protobuf codecs', process.execPath, [path.join(root, 'scripts', 'gen-protos.js')]);
run('TypeScript (tsc)', process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json']);
run('one-file bundles and code caches (scripts/bundle.js)', process.execPath, [path.join(root, 'scripts', 'bundle.js')]);
