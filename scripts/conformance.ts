/**
 * `npm run conformance [TEST...]`: the OCI runtime-tools validation suite, built from source,
 * run against Debian's runc and against kata-agent-oci (the OCI CLI over a stand-alone agent) on
 * this machine, printed side by side (test, runc, ours) with pass counts.
 *
 * A development-time check, not part of `npm test` or CI: it needs root, Debian's Go
 * (golang-go), git, runc (installed with apt-get when missing) and the runtime-tools source as a
 * git directory (RUNTIME_TOOLS_GIT, default .cache/runtime-tools.git or the mirror the project's
 * fetch tool makes; `git clone --mirror https://github.com/opencontainers/runtime-tools
 * .cache/runtime-tools.git`). When something is missing it prints `conformance: SKIP: <why>` and
 * exits 0.
 *
 * Steps: scripts/oci-conformance/build.sh (once per revision, into .cache/runtime-tools),
 * startStandaloneAgent (scripts/lib/standalone.ts) in host-namespace mode (control and helper
 * both get --allow-host-namespaces: runc semantics for specs without namespaces or with
 * namespace paths, which linux_ns_itype and linux_ns_path test; docs/ARCHITECTURE.md "Host
 * namespaces"), a wrapper that runs bin/kata-agent-oci with
 * that agent's address and a private --root, then scripts/oci-conformance/run-validation.sh for
 * runc and for the wrapper (one TSV each under .cache/conformance/; CONFORMANCE_REUSE_RUNC=1 reuses
 * the last runc.tsv instead of running runc again). Exit 0 unless the suite
 * could not run at all (the table is the result; failures are expected, see docs/ARCHITECTURE.md).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PROJECT_ROOT, startStandaloneAgent } from './lib/standalone';

/** runtime-tools revision the shims and the baseline are for. */
const RT_REV = '5e63903';
const SCRIPTS = path.join(PROJECT_ROOT, 'scripts', 'oci-conformance');
const CACHE = path.join(PROJECT_ROOT, '.cache');

function skip(why: string): never {
  process.stdout.write(`conformance: SKIP: ${why}\n`);
  process.exit(0);
}

function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** The runtime-tools git directory: RUNTIME_TOOLS_GIT when set (and only it), else the first known place holding RT_REV. */
function sourceGit(): string | null {
  const candidates = process.env.RUNTIME_TOOLS_GIT
    ? [process.env.RUNTIME_TOOLS_GIT]
    : [path.join(CACHE, 'runtime-tools.git'), '/work/.mirror/opencontainers+runtime-tools/repo'];
  for (const c of candidates) {
    if (spawnSync('git', ['--git-dir', c, 'cat-file', '-e', `${RT_REV}^{commit}`], { stdio: 'ignore' }).status === 0) return c;
  }
  return null;
}

/** Build the suite into `out` unless it is there for RT_REV already. */
function build(git: string, out: string): void {
  const stamp = path.join(out, '.built-rev');
  if (fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8').trim() === RT_REV) return;
  process.stderr.write(`conformance: building runtime-tools ${RT_REV} into ${out} (about 2 min)\n`);
  const r = spawnSync(path.join(SCRIPTS, 'build.sh'), [git, out, RT_REV], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) throw new Error(`build.sh failed (exit ${r.status})`);
  fs.writeFileSync(stamp, `${RT_REV}\n`);
}

type Row = { result: string; ok: string; notOk: string; plan: string };

/** Run run-validation.sh against `runtime`; the rows by test name (TSV also saved to `tsv`). */
function validate(rtDir: string, runtime: string, tsv: string, tests: string[]): Map<string, Row> {
  process.stderr.write(`conformance: running the suite against ${runtime}\n`);
  const r = spawnSync(path.join(SCRIPTS, 'run-validation.sh'), [runtime, ...tests], {
    env: { ...process.env, RT_DIR: rtDir, TEST_TIMEOUT: process.env.TEST_TIMEOUT ?? '120' },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 16 << 20,
  });
  fs.writeFileSync(tsv, r.stdout);
  return readTsv(r.stdout);
}

/** Rows of a run-validation.sh TSV by test name. */
function readTsv(text: string): Map<string, Row> {
  const rows = new Map<string, Row>();
  for (const line of text.split('\n').slice(1)) {
    const [test, result, , , ok, notOk, , , plan] = line.split('\t');
    if (test) rows.set(test, { result, ok, notOk, plan });
  }
  return rows;
}

const passes = (r: Row | undefined): boolean => r !== undefined && (r.result === 'PASS' || r.result === 'PASS_NO_ASSERTS');

function cell(r: Row | undefined): string {
  if (!r) return '-';
  return r.plan && r.plan !== '0' ? `${r.result} ${r.ok}/${r.plan}` : r.result;
}

/** The side-by-side table and the pass counts. */
export function table(tests: string[], runc: Map<string, Row> | null, ours: Map<string, Row>): string {
  const w = Math.max(4, ...tests.map((t) => t.length));
  const lines = [`${'test'.padEnd(w)}  ${'runc'.padEnd(24)}  ours`];
  for (const t of tests) {
    const mark = runc && passes(runc.get(t)) && !passes(ours.get(t)) ? '   <- runc passes, ours not' : '';
    lines.push(`${t.padEnd(w)}  ${(runc ? cell(runc.get(t)) : 'n/a').padEnd(24)}  ${cell(ours.get(t))}${mark}`);
  }
  const count = (m: Map<string, Row>): number => tests.filter((t) => passes(m.get(t))).length;
  lines.push('', `pass: runc ${runc ? count(runc) : 'n/a'}/${tests.length}, ours ${count(ours)}/${tests.length}`);
  return lines.join('\n');
}

async function main(): Promise<void> {
  const tests = process.argv.slice(2);
  if (process.getuid && process.getuid() !== 0) skip('needs root (containers, cgroups)');
  if (!have('go')) skip('Go is missing (apt-get install golang-go)');
  if (!have('git')) skip('git is missing (apt-get install git)');
  const git = sourceGit();
  if (!git) {
    skip(`the runtime-tools source (revision ${RT_REV}) is missing: set RUNTIME_TOOLS_GIT to a git directory of ` +
      'github.com/opencontainers/runtime-tools (git clone --mirror https://github.com/opencontainers/runtime-tools .cache/runtime-tools.git)');
  }
  if (!have('runc')) {
    process.stderr.write('conformance: runc is missing; apt-get install -y runc\n');
    spawnSync('apt-get', ['install', '-y', 'runc'], { stdio: 'inherit' });
  }
  const rtDir = path.join(CACHE, 'runtime-tools');
  build(git, rtDir);
  const all = tests.length > 0 ? tests : fs.readdirSync(path.join(rtDir, 'validation')).filter((d) => fs.existsSync(path.join(rtDir, 'validation', d, `${d}.t`))).sort();
  const outDir = path.join(CACHE, 'conformance');
  fs.mkdirSync(outDir, { recursive: true });

  // CONFORMANCE_REUSE_RUNC=1: take runc's column from the last run's runc.tsv (iterating on ours).
  const runcTsv = path.join(outDir, 'runc.tsv');
  const runc = process.env.CONFORMANCE_REUSE_RUNC === '1' && fs.existsSync(runcTsv)
    ? readTsv(fs.readFileSync(runcTsv, 'utf8'))
    : have('runc') ? validate(rtDir, 'runc', runcTsv, tests) : null;

  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-oci-conformance-'));
  fs.chmodSync(work, 0o755); // the control plane (uid 65534) must reach its socket directory
  // The layout of `kata-agent --standalone` (debug.sock next to agent.sock), where kata-agent-oci looks.
  const runDir = path.join(work, 'agent');
  // Host-namespace mode, in both processes (each has its own switch): as runc, a spec without a
  // namespace shares the runtime's and a namespace path is joined.
  const agent = await startStandaloneAgent({
    runDir,
    debugAddr: `unix://${path.join(runDir, 'control', 'debug.sock')}`,
    helperArgs: ['--allow-host-namespaces'],
    controlArgs: ['--allow-host-namespaces'],
  });
  process.stdout.write('conformance: kata-agent-oci runs over an agent in host-namespace mode (--allow-host-namespaces: runc semantics for missing namespaces and namespace paths)\n');
  let ours: Map<string, Row>;
  try {
    const wrapper = path.join(work, 'kata-agent-oci');
    fs.writeFileSync(wrapper, `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(path.join(PROJECT_ROOT, 'bin', 'kata-agent-oci'))} ` +
      `--address ${JSON.stringify(agent.address)} --root ${JSON.stringify(path.join(work, 'root'))} "$@"\n`, { mode: 0o755 });
    ours = validate(rtDir, wrapper, path.join(outDir, 'ours.tsv'), tests);
  } finally {
    await agent.stop();
    process.stderr.write(`conformance: agent logs kept in ${agent.runDir}\n`);
  }
  const text = table(all, runc, ours);
  fs.writeFileSync(path.join(outDir, 'table.txt'), `${text}\n`);
  process.stdout.write(`${text}\n(TSVs and this table in ${outDir})\n`);
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`conformance: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
