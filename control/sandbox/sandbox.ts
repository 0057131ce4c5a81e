/**
 * The sandbox as control tracks it: identity, the persistent namespaces containers join, the
 * shared pid namespace and the containers.
 *
 * Source: Kata agent sandbox.rs (Sandbox: id, hostname, shared ipc/uts namespaces,
 * sandbox_pidns, containers) and rpc.rs update_shared_pidns.
 */
import { Code, StatusError, type NamespacePlan } from '../../shared/protocol';
import type { SandboxNamespaceInfo } from '../oci';
import type { Container } from './container';

/** One sandbox (one per agent). */
export class Sandbox {
  /** CreateSandboxRequest.sandbox_id ("" until set). */
  id = '';
  hostname = '';
  /** True between CreateSandbox and DestroySandbox. */
  created = false;
  /** True after DestroySandbox: the agent is going away. */
  destroyed = false;
  /** Persistent namespaces of the sandbox (helper createSandbox result), e.g. ipc and uts. */
  namespaces: NamespacePlan[] = [];
  /** `/proc/<pid>/ns/pid` of the first container's init, or null (upstream update_shared_pidns). */
  pidns: string | null = null;
  readonly containers = new Map<string, Container>();
  /** Container ids reserved by a CreateContainer in flight. */
  readonly pendingContainerIds = new Set<string>();

  /** What containers get from the sandbox when their namespaces are planned. */
  namespaceInfo(): SandboxNamespaceInfo {
    return { namespaces: this.namespaces, pidns: this.pidns };
  }

  /** The container `id`; throws StatusError NOT_FOUND when there is none. */
  getContainer(id: string): Container {
    const c = this.containers.get(id);
    if (!c) throw new StatusError(Code.NOT_FOUND, `container ${JSON.stringify(id)} not found`);
    return c;
  }

  /**
   * Insert a newly created container. The first container's init pid namespace becomes the
   * sandbox pid namespace when none is set yet (upstream update_shared_pidns).
   */
  addContainer(container: Container): void {
    if (this.pidns === null && this.containers.size === 0) {
      this.pidns = `/proc/${container.init.pid}/ns/pid`;
    }
    this.containers.set(container.id, container);
  }
}
