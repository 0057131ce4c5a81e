/**
 * Density: sleeping containers (`sleep 86400`) created one after the other on one agent up to
 * 1, 100 and 500; at each step, after 1 s settle, the PSS of the helper and the control plane
 * and the time each container of the step took (CreateContainer + StartContainer, ms). Then
 * every container is removed (RemoveContainer, ms each). Memory per container is the slope of
 * helper + control PSS between the first and the last step; "linear" means the per-container
 * time at 500 stays near the one at 100 (the ratio is reported).
 */
import type { AgentClient } from '../control/ctl/client';
import type { ociJsonToSpec } from '../control/ctl/oci-json';
import { median, now, progress, progressDone, pssBytes, since, type Target } from './lib';

type GrpcSpec = ReturnType<typeof ociJsonToSpec>;

export interface DensityStep {
  containers: number;
  /** Median ms of CreateContainer + StartContainer over the containers added in this step. */
  createStartMedianMs: number;
  helperPss: number;
  controlPss: number;
}

export interface DensityResult {
  steps: DensityStep[];
  removeMedianMs: number;
  /** Bytes of helper + control PSS per container between the first and the last step. */
  bytesPerContainer: number;
  targets: Target[];
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Run the sweep up to each of `steps` (ascending) on `client`; removes what it created, also on failure. */
export async function density(client: AgentClient, spec: GrpcSpec, pids: { helper: number; control: number }, steps: number[], tag: string): Promise<DensityResult> {
  const ids: string[] = [];
  const result: DensityResult = { steps: [], removeMedianMs: NaN, bytesPerContainer: NaN, targets: [] };
  const removeMs: number[] = [];
  try {
    for (const target of steps) {
      const times: number[] = [];
      while (ids.length < target) {
        progress(`density: ${ids.length + 1}/${target}`);
        const cid = `dens-${tag}-${ids.length}`;
        const t0 = now();
        await client.call('CreateContainer', { container_id: cid, exec_id: cid, OCI: spec });
        ids.push(cid);
        await client.call('StartContainer', { container_id: cid });
        times.push(since(t0));
      }
      await sleep(1000);
      result.steps.push({ containers: target, createStartMedianMs: median(times), helperPss: pssBytes(pids.helper), controlPss: pssBytes(pids.control) });
    }
  } finally {
    progressDone();
    for (const cid of ids.reverse()) {
      const t0 = now();
      await client.call('RemoveContainer', { container_id: cid, timeout: 10 }).catch(() => undefined);
      removeMs.push(since(t0));
    }
  }
  result.removeMedianMs = median(removeMs);
  const first = result.steps[0];
  const last = result.steps[result.steps.length - 1];
  if (first && last && last.containers > first.containers) {
    result.bytesPerContainer = (last.helperPss + last.controlPss - first.helperPss - first.controlPss) / (last.containers - first.containers);
  }
  const mid = result.steps.find((s) => s.containers >= 100);
  const linear = mid && last ? last.createStartMedianMs / mid.createStartMedianMs : NaN;
  result.targets.push({
    target: `agent memory per sleeping container (${first?.containers ?? '-'} → ${last?.containers ?? '-'})`,
    ours: `${(result.bytesPerContainer / 1024).toFixed(0)} KiB`,
    reference: '',
    figure: `${(result.bytesPerContainer / 1024).toFixed(0)} KiB`,
    goal: '≤ 200 KB',
    met: result.bytesPerContainer <= 200e3,
  });
  result.targets.push({
    target: `create+start time per container at ${last?.containers ?? '-'} vs ${mid?.containers ?? '-'}`,
    ours: `${last?.createStartMedianMs.toFixed(1) ?? '-'} ms`,
    reference: `${mid?.createStartMedianMs.toFixed(1) ?? '-'} ms at ${mid?.containers ?? '-'}`,
    figure: `${linear.toFixed(2)}×`,
    goal: 'linear (≈ 1×; ≤ 1.5× here)',
    met: linear <= 1.5,
  });
  return result;
}
