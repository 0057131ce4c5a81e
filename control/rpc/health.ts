/**
 * `grpc.Health`: Check always answers SERVING; Version answers the agent version (package.json)
 * and the agent API version "0.0.1" (upstream Makefile API_VERSION). Both take a CheckRequest
 * whose `service` is ignored, as upstream (inventory §1.3).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { grpc as pb } from '../../shared/generated/protos';

/** Upstream's agent API version (src/agent/Makefile API_VERSION). */
export const API_VERSION = '0.0.1';

/** HealthCheckResponse.ServingStatus.SERVING. */
export const SERVING = 1;

let cachedVersion: string | undefined;

/** The agent version: `version` of the project's package.json ("0.0.0" if unreadable). */
export function agentVersion(): string {
  if (cachedVersion !== undefined) return cachedVersion;
  // Compiled to dist/control/rpc/: the project root is three levels up; from the sources, two.
  for (const candidate of [path.resolve(__dirname, '..', '..', '..', 'package.json'), path.resolve(__dirname, '..', '..', 'package.json')]) {
    try {
      const pkg = JSON.parse(fs.readFileSync(candidate, 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'kata-agent-ts' && typeof pkg.version === 'string') {
        cachedVersion = pkg.version;
        return cachedVersion;
      }
    } catch {
      // try the next candidate
    }
  }
  cachedVersion = '0.0.0';
  return cachedVersion;
}

/** The Health rpcs. */
export class HealthService {
  /** Check: always SERVING (upstream does no check at all). */
  async check(_req: pb.CheckRequest): Promise<pb.HealthCheckResponse.$Properties> {
    return { status: SERVING };
  }

  /** Version: {grpc_version: "0.0.1", agent_version: package.json version}. */
  async version(_req: pb.CheckRequest): Promise<pb.VersionCheckResponse.$Properties> {
    return { grpc_version: API_VERSION, agent_version: agentVersion() };
  }
}
