#!/usr/bin/env node
// The README's test command (`npm test`): runs the compiled tap suites and ends with the line
// "N passed, N failed" (assertion counts over every suite run).
//
//   node scripts/run-tests.js [unit|integration]...   default: both
//
// test/unit runs as any user. test/integration needs root (real helper, namespaces, mounts);
// without root it is skipped with the reason printed. The integration suites get the busybox
// rootfs from scripts/make-rootfs in KATA_TEST_ROOTFS.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const wanted = process.argv.slice(2);
const suites = wanted.length ? wanted : ['unit', 'integration'];
const totals = { pass: 0, fail: 0 };

function testFiles(suite) {
  const dir = path.join(root, 'dist', 'test', suite);
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.test.js'))
    .sort()
    .map((f) => path.relative(root, path.join(dir, f)));
}

function runSuite(suite) {
  const files = testFiles(suite);
  if (files.length === 0) {
    console.log(`# ${suite}: no compiled tests in dist/test/${suite} (run "npm run build" first)`);
    return;
  }
  const env = { ...process.env };
  if (suite === 'integration') {
    if (process.getuid && process.getuid() !== 0) {
      console.log('# integration: SKIPPED: needs root (real helper, namespaces, mounts)');
      return;
    }
    const rootfs = env.KATA_TEST_ROOTFS || path.join(root, '.cache', 'rootfs');
    const made = spawnSync(path.join(root, 'scripts', 'make-rootfs'), [rootfs], { stdio: 'inherit' });
    if (made.status !== 0) {
      console.log('# integration: cannot build the busybox rootfs (scripts/make-rootfs failed)');
      totals.fail += 1;
      return;
    }
    env.KATA_TEST_ROOTFS = rootfs;
  }
  console.log(`# ${suite}: ${files.length} files`);
  const tap = path.join(root, 'node_modules', '.bin', 'tap');
  const res = spawnSync(tap, ['-R', 'tap', '--jobs', suite === 'integration' ? '1' : '2', ...files], {
    cwd: root,
    env,
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
  });
  process.stdout.write(res.stdout || '');
  process.stderr.write(res.stderr || '');
  // tap ends with a summary line like "# { total: 12, pass: 11, fail: 1 }".
  const lines = (res.stdout || '').split('\n').filter((l) => /^# \{ total: \d+/.test(l));
  const last = lines[lines.length - 1];
  if (!last) {
    console.log(`# ${suite}: tap printed no summary (exit ${res.status}, signal ${res.signal})`);
    totals.fail += 1;
    return;
  }
  const num = (key) => {
    const m = new RegExp(`${key}: (\\d+)`).exec(last);
    return m ? Number(m[1]) : 0;
  };
  totals.pass += num('pass');
  totals.fail += num('fail');
  if (res.status !== 0 && num('fail') === 0) totals.fail += 1; // a crashed file or timeout
}

// tap compiles its plugin set into node_modules on `tap build`; a fresh `npm ci` holds the
// default set, whose TypeScript loader fails on TypeScript 7. .taprc removes that plugin;
// rebuilding makes the installed tap follow .taprc.
const built = spawnSync(path.join(root, 'node_modules', '.bin', 'tap'), ['build'], { cwd: root, encoding: 'utf8' });
if (built.status !== 0) {
  process.stderr.write(built.stdout || '');
  process.stderr.write(built.stderr || '');
  console.log('# tap build failed');
  totals.fail += 1;
}

for (const s of suites) runSuite(s);
console.log(`${totals.pass} passed, ${totals.fail} failed`);
// exitCode, not process.exit(): stdout may be a non-blocking pipe (npm test | tee) whose queued
// output process.exit() would drop, summary line included.
process.exitCode = totals.fail === 0 ? 0 : 1;
