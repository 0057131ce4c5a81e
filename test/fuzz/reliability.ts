/**
 * `npm run fuzz:reliability`: the long runs of the helper packet fuzz and the per-method payload
 * fuzz (the ttRPC frame fuzz is `npm run fuzz`). Prints the figures as JSON; exits 1 when a sync
 * was lost, a call went unanswered, an INTERNAL/UNKNOWN answer came back or the agent died.
 *
 * Environment: FUZZ_PACKETS (default 1000000 helper packets), FUZZ_PER_METHOD (default 2000
 * requests per rpc), FUZZ_SEED (default 1).
 */
import { healthCheck, startControl } from './harness';
import { fuzzHelperPackets } from './helper-packets';
import { fuzzPayloads } from './payloads';

async function main(): Promise<number> {
  const packets = Number(process.env.FUZZ_PACKETS ?? 1_000_000);
  const perMethod = Number(process.env.FUZZ_PER_METHOD ?? 2000);
  const seed = Number(process.env.FUZZ_SEED ?? 1);
  let ok = true;

  let t0 = Date.now();
  const h = await fuzzHelperPackets({ packets, seed, onProgress: (n) => process.stdout.write(`  helper packets: ${n}\n`) });
  console.log(JSON.stringify({ helperPackets: { ...h, seconds: (Date.now() - t0) / 1000 } }));
  ok &&= h.lostSyncs === 0 && h.internalCount === 0;

  t0 = Date.now();
  const control = await startControl();
  try {
    const p = await fuzzPayloads(control.address, { perMethod, seed, skip: ['DestroySandbox'] });
    const alive = control.alive();
    const health = alive && (await healthCheck(control.address));
    console.log(JSON.stringify({ payloads: { ...p, seconds: (Date.now() - t0) / 1000, alive, health } }));
    ok &&= p.bugCount === 0 && p.timeouts === 0 && alive && health;
  } finally {
    await control.stop();
  }
  return ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
