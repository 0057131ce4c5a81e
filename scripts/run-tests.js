#!/usr/bin/env node
// The README's test command (`npm test`): runs the compiled tap suites, printing one line per
// test file as tap finishes it (assertions passed/failed, time; the failing assertions under
// it; the whole TAP stream in .cache/test-<suite>.tap), then the failing files, whether the
// integration tests were skipped, and last the line "N passed, N failed" (tap's assertion
// counts over every suite run; .ci/run parses it).
//
//   node scripts/run-tests.js [unit|integration|runtime|vm]...   default: unit and integration
//
// runtime (`npm run test:runtime`) is opt-in only, never part of the default: test/runtime drives
// the real Kata shim through containerd (kata-runtime-lane; root, the lane built) and skips
// itself with the reason when it cannot run.
// vm is the VM lane (scripts/vm/, `npm run test:vm`): root and qemu-system-x86_64 needed, one
// QEMU guest per file, files one at a time with a 600 s timeout each.
//
// test/unit runs as any user. test/integration needs root (real helper, namespaces, mounts);
// without root it is skipped with the reason printed. The integration suites get the busybox
// rootfs from scripts/make-rootfs in KATA_TEST_ROOTFS.
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const readline = require('node:readline');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const wanted = process.argv.slice(2);
const suites = wanted.length ? wanted : ['unit', 'integration'];
const totals = { pass: 0, fail: 0 };
const failed = [];
const notes = [];

function testFiles(suite) {
  const dir = path.join(root, 'dist', 'test', suite);
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.test.js'))
    .sort()
    .map((f) => path.relative(root, path.join(dir, f)));
}

/**
 * Follow tap's TAP stream (-R tap) line by line: one progress line per test file as soon as
 * tap reports it (pass/fail counts of its assertions and its time), the failing assertions
 * under it; the whole stream goes to `logFile`. Resolves with tap's final summary line (or
 * undefined), its exit status and the failing files.
 */
function runTap(files, jobs, env, logFile, extra = []) {
  return new Promise((resolve) => {
    const tap = path.join(root, 'node_modules', '.bin', 'tap');
    const child = spawn(tap, ['-R', 'tap', '--jobs', String(jobs), ...extra, ...files], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const log = fs.createWriteStream(logFile);
    const failedFiles = [];
    let summary;
    // Open subtests (indent, name); the outermost is the file.
    let stack = [];
    let counts = { pass: 0, fail: 0 };
    let failures = [];
    const onLine = (line) => {
      log.write(`${line}\n`);
      const indent = line.length - line.trimStart().length;
      const text = line.trimStart();
      const sub = /^# Subtest: (.*)$/.exec(text);
      if (sub) {
        if (indent === 0) {
          stack = [];
          counts = { pass: 0, fail: 0 };
          failures = [];
        }
        stack.push({ indent, name: sub[1] });
        return;
      }
      if (indent === 0 && /^# \{ total: \d+/.test(text)) summary = text;
      const skipAll = /^1\.\.0 # (.*)$/.exec(text);
      if (skipAll && stack.length === 1 && indent === stack[0].indent + 4) {
        // A whole file skipped (e.g. "1..0 # runtime tests SKIPPED: the lane is not built"): say why.
        console.log(`skip ${stack[0].name}  ${skipAll[1]}`);
        return;
      }
      const res = /^(not )?ok \d+ - (.*?)(?: # (.*))?$/.exec(text);
      if (!res) return;
      const top = stack[stack.length - 1];
      if (top && top.indent === indent && res[2] === top.name) {
        stack.pop();
        if (indent !== 0) return;
        const time = /time=([\d.]+)ms/.exec(res[3] || '');
        const ms = time ? Number(time[1]) : NaN;
        const secs = Number.isNaN(ms) ? "" : ms < 1000 ? `${Math.round(ms)}ms` : `${(ms / 1000).toFixed(1)}s`;
        const bad = res[1] !== undefined || counts.fail > 0;
        if (bad) failedFiles.push(res[2]);
        const crashed = res[1] !== undefined && counts.fail === 0 ? ' (the file failed without a failing assertion: crash, timeout or exit code)' : '';
        console.log(`${bad ? 'FAIL' : 'ok  '} ${res[2]}  ${counts.pass} passed, ${counts.fail} failed  ${secs}${crashed}`);
        for (const f of failures.slice(0, 10)) console.log(`       not ok: ${f}`);
        if (failures.length > 10) console.log(`       ... ${failures.length - 10} more in ${path.relative(root, logFile)}`);
        return;
      }
      if (res[1]) {
        counts.fail++;
        failures.push(`${stack.slice(1).map((s) => s.name).join(' > ')}${stack.length > 1 ? ' > ' : ''}${res[2]}`);
      } else {
        counts.pass++;
      }
    };
    const rl = readline.createInterface({ input: child.stdout });
    rl.on('line', onLine);
    child.stderr.on('data', (chunk) => log.write(chunk));
    child.on('close', (status, signal) => {
      log.end();
      resolve({ summary, status, signal, failedFiles });
    });
  });
}

async function runSuite(suite) {
  const files = testFiles(suite);
  if (files.length === 0) {
    console.log(`# ${suite}: no compiled tests in dist/test/${suite} (run "npm install" or "npm run build" first)`);
    return;
  }
  const env = { ...process.env };
  if (suite === 'integration') {
    if (process.getuid && process.getuid() !== 0) {
      const why = 'integration tests SKIPPED: they need root (the real helper, namespaces, mounts); run "npm test" as root to include them';
      console.log(`# ${why}`);
      notes.push(why);
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
  if (suite === 'vm') {
    // The VM lane (scripts/vm/): each file boots a QEMU guest with the agent as PID 1.
    const why = process.getuid && process.getuid() !== 0 ? 'VM tests SKIPPED: they need root (QEMU, 9p of /)'
      : spawnSync('sh', ['-c', 'command -v qemu-system-x86_64'], { stdio: 'ignore' }).status !== 0 ? 'VM tests SKIPPED: no qemu-system-x86_64 (apt-get install qemu-system-x86 busybox-static)' : '';
    if (why) {
      console.log(`# ${why}`);
      notes.push(why);
      return;
    }
    env.KATA_VM_LANE = path.join(root, 'dist', 'scripts', 'vm', 'lane.js');
  }
  fs.mkdirSync(path.join(root, '.cache'), { recursive: true });
  const logFile = path.join(root, '.cache', `test-${suite}.tap`);
  console.log(`# ${suite}: ${files.length} files (full TAP output: ${path.relative(root, logFile)})`);
  const res = await runTap(files, suite === 'unit' ? 2 : 1, env, logFile, suite === 'vm' ? ['-t', '600'] : []);
  failed.push(...res.failedFiles);
  // tap ends with a summary line like "# { total: 12, pass: 11, fail: 1 }".
  if (!res.summary) {
    console.log(`# ${suite}: tap printed no summary (exit ${res.status}, signal ${res.signal})`);
    totals.fail += 1;
    return;
  }
  const num = (key) => {
    const m = new RegExp(`${key}: (\\d+)`).exec(res.summary);
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

(async () => {
  for (const s of suites) await runSuite(s);
  if (failed.length) console.log(`# failing files:\n${failed.map((f) => `#   ${f}`).join('\n')}`);
  for (const n of notes) console.log(`# ${n}`);
  console.log(`${totals.pass} passed, ${totals.fail} failed`);
  // exitCode, not process.exit(): stdout may be a non-blocking pipe (npm test | tee) whose queued
  // output process.exit() would drop, summary line included.
  process.exitCode = totals.fail === 0 ? 0 : 1;
})();
