#!/usr/bin/env node
// Generates static protobufjs codecs for protos/*.proto (build output, not committed):
//   dist/shared/generated/protos.js   CommonJS static module (no reflection at call time)
//   shared/generated/protos.d.ts      its TypeScript declarations, for tsc
// Field names are kept as written in the .proto files (--keep-case), as upstream serde does.
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const bin = (name) => path.join(root, 'node_modules', '.bin', name);
const protoDir = path.join(root, 'protos');
const files = fs
  .readdirSync(protoDir)
  .filter((f) => f.endsWith('.proto'))
  .sort()
  .map((f) => path.join(protoDir, f));

const outJs = path.join(root, 'dist', 'shared', 'generated', 'protos.js');
const outDts = path.join(root, 'shared', 'generated', 'protos.d.ts');
fs.mkdirSync(path.dirname(outJs), { recursive: true });
fs.mkdirSync(path.dirname(outDts), { recursive: true });

execFileSync(
  bin('pbjs'),
  ['-t', 'static-module', '-w', 'commonjs', '--keep-case', '--no-beautify', '--no-delimited',
   '--no-service', '-p', protoDir, '-o', outJs, ...files],
  { stdio: 'inherit' },
);
execFileSync(bin('pbts'), ['-o', outDts, outJs], { stdio: 'inherit' });
console.log(`generated ${path.relative(root, outJs)} and ${path.relative(root, outDts)} from ${files.length} protos`);
