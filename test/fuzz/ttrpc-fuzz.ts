/**
 * `npm run fuzz`: the control plane's ttRPC server under random frames and resource exhaustion
 * (security issue items 3, 6, 7). Reports figures; exits 1 only when the control plane died or
 * stopped answering Health.Check.
 *
 * Environment: FUZZ_FRAMES (default 1000000), FUZZ_SEED (default 1), FUZZ_PARALLEL (default 8),
 * FUZZ_SCENARIOS (comma list of fuzz,nonreading,idle,slowloris; default all).
 *
 * Scenarios, each against a fresh kata-agent with the mock helper:
 *  - fuzz: FUZZ_FRAMES generated frames (harness.ts), then Health.Check;
 *  - nonreading: 8 clients writing Health.Check requests for 10 s without reading;
 *  - idle: 2000 connections that send nothing, with the agent at RLIMIT_NOFILE 1024 as in the
 *    reported attack (connection cap 256 by default), held 4 s (default frame timeout 10 s);
 *  - slowloris: 2000 connections sending half a header each, same limit, frame timeout 2 s.
 */
import { fuzzFrames, healthCheck, idleConnections, nonReadingClients, startControl, type ControlUnderTest } from './harness';

const MiB = (kib: number): string => `${(kib / 1024).toFixed(1)} MiB`;

async function withControl<T>(args: Parameters<typeof startControl>[0], fn: (c: ControlUnderTest) => Promise<T>): Promise<{ result: T; alive: boolean; health: boolean }> {
  const control = await startControl(args);
  try {
    const result = await fn(control);
    const health = control.alive() && (await healthCheck(control.address).catch(() => false));
    return { result, alive: control.alive(), health };
  } finally {
    if (!control.alive()) process.stderr.write(`control died; its last log lines:\n${control.stderr()}\n`);
    await control.stop();
  }
}

async function main(): Promise<number> {
  const frames = Number(process.env.FUZZ_FRAMES ?? 1_000_000);
  const seed = Number(process.env.FUZZ_SEED ?? 1);
  const parallel = Number(process.env.FUZZ_PARALLEL ?? 8);
  const scenarios = new Set((process.env.FUZZ_SCENARIOS ?? 'fuzz,nonreading,idle,slowloris').split(','));
  const report: Record<string, unknown> = { seed };
  let ok = true;

  if (scenarios.has('fuzz')) {
    const t0 = Date.now();
    const r = await withControl({ args: ['--frame-timeout-ms', '1000'] }, (c) =>
      fuzzFrames(c.address, c.pid, { frames, seed, parallel, onProgress: (n) => process.stdout.write(`  fuzz: ${n} frames\n`) }),
    );
    const seconds = (Date.now() - t0) / 1000;
    console.log(
      `fuzz: ${r.result.frames} frames (${(r.result.bytes / 1048576).toFixed(1)} MiB) on ${r.result.connections} connections in ${seconds.toFixed(1)} s; ` +
        `server closed ${r.result.closedByServer}; control RSS peak ${MiB(r.result.peakRssKiB)}; alive ${r.alive}; Health.Check ${r.health ? 'SERVING' : 'FAILED'}`,
    );
    report.fuzz = { ...r.result, seconds, alive: r.alive, health: r.health };
    ok &&= r.alive && r.health;
  }
  if (scenarios.has('nonreading')) {
    const r = await withControl({}, (c) => nonReadingClients(c.address, c.pid, { clients: 8, durationMs: 10_000, settleMs: 3000 }));
    console.log(
      `non-reading: 8 clients wrote ${r.result.sent} requests in 10 s; control RSS before ${MiB(r.result.beforeKiB)}, peak ${MiB(r.result.peakKiB)}, ` +
        `after ${MiB(r.result.afterKiB)}; Health.Check during load ${r.result.healthDuringLoad}; alive ${r.alive}; Health.Check after ${r.health}`,
    );
    report.nonReading = { ...r.result, alive: r.alive, health: r.health };
    ok &&= r.alive && r.health;
  }
  for (const [name, partial] of [['idle', false], ['slowloris', true]] as const) {
    if (!scenarios.has(name)) continue;
    // idle: the default frame timeout (10 s) outlasts the hold, so the connection cap is what
    // protects; slowloris: a 2 s frame timeout closes the half-header connections too.
    const r = await withControl({ nofile: 1024, args: partial ? ['--frame-timeout-ms', '2000'] : [] }, (c) => idleConnections(c.address, c.pid, { count: 2000, holdMs: 4000, partial }));
    console.log(
      `${name}: 2000 connections${partial ? ' with half a header' : ''} against RLIMIT_NOFILE 1024; closed/refused by control ${r.result.closedByServer}; ` +
        `control fds ${r.result.controlFds}; RSS before ${MiB(r.result.beforeKiB)}, peak ${MiB(r.result.peakKiB)}, after ${MiB(r.result.afterKiB)}; ` +
        `Health.Check during load ${r.result.healthDuringLoad}; alive ${r.alive}; Health.Check after ${r.health}`,
    );
    report[name] = { ...r.result, alive: r.alive, health: r.health };
    ok &&= r.alive && r.health && r.result.healthDuringLoad;
  }
  console.log(JSON.stringify(report));
  return ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
