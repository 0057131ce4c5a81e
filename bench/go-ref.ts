/**
 * The benchmark's Go side (bench/go/main.go): built with scripts/lib/go-build.ts (containerd's
 * Go ttrpc, stubs generated from protos/), run as a reference server and as the one client
 * used against both servers.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { ensureGoProgram, goToolsMissing } from '../scripts/lib/go-build';
import { PROJECT_ROOT } from '../scripts/lib/standalone';

/** What one client run reports: calls made, bytes moved, ms of the timed part. */
export interface GoResult {
  ops: number;
  bytes: number;
  ms: number;
}

/** The built bench-go binary, or the reason it cannot be built here. */
export async function buildGoBench(): Promise<{ bin: string } | { reason: string }> {
  const missing = goToolsMissing();
  if (missing) return { reason: missing };
  try {
    const prog = await ensureGoProgram('bench', path.join(PROJECT_ROOT, 'protos'), path.join(PROJECT_ROOT, 'bench', 'go', 'main.go'));
    return { bin: prog.bin };
  } catch (err) {
    return { reason: `building bench/go/main.go failed: ${(err as Error).message}` };
  }
}

/** Start `bin serve socket`; resolves once it printed "serving". Kill the child to stop it. */
export function startGoServer(bin: string, socket: string): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, ['serve', socket], { stdio: ['ignore', 'pipe', 'inherit'] });
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`bench-go serve exited (${code}) before serving`)));
    child.stdout.once('data', () => resolve(child));
  });
}

/** Run one bench-go client mode; its JSON line. Rejects with its stderr when it exits non-zero. */
export function goClient(bin: string, args: string[]): Promise<GoResult> {
  return new Promise((resolve, reject) => {
    execFile(bin, args, { timeout: 300_000, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) {
        reject(new Error(`bench-go ${args.join(' ')}: ${stderr.trim() || err.message}`));
        return;
      }
      try {
        resolve(JSON.parse(stdout.trim().split('\n').pop() ?? '') as GoResult);
      } catch {
        reject(new Error(`bench-go ${args.join(' ')} printed ${JSON.stringify(stdout)}`));
      }
    });
  });
}
