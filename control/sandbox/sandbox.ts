/**
 * The sandbox as control tracks it: identity, the persistent namespaces containers join, the
 * shared pid namespace and the containers.
 *
 * Source: Kata agent sandbox.rs (Sandbox: id, hostname, shared ipc/uts namespaces,
 * sandbox_pidns, containers) and rpc.rs update_shared_pidns.
 */
import { Code, StatusError, type NamespacePlan, type StoragePlan } from '../../shared/protocol';
import type { SandboxNamespaceInfo } from '../oci';
import type { Container } from './container';

/** One sandbox (one per agent). */
export class Sandbox {
  /** CreateSandboxRequest.sandbox_id ("" until set). */
  id = '';
  hostname = '';
  /** True between CreateSandbox and DestroySandbox. */
  created = false;
  /** The helper enforces device cgroup rules (CreateSandboxResult.deviceCgroup); false before CreateSandbox. */
  deviceCgroup = false;
  /** True after DestroySandbox: the agent is going away. */
  destroyed = false;
  /** Persistent namespaces of the sandbox (helper createSandbox result), e.g. ipc and uts. */
  namespaces: NamespacePlan[] = [];
  /** `/proc/<pid>/ns/pid` of the first container's init, or null (upstream update_shared_pidns). */
  pidns: string | null = null;
  /** The container whose init's pid namespace {@link pidns} is, or null. */
  pidnsOwner: string | null = null;
  /**
   * True once the sandbox pid namespace's owner was removed: the namespace died with its init.
   * (Upstream keeps the dangling path; we refuse sandbox_pidns with FAILED_PRECONDITION.)
   */
  pidnsGone = false;
  readonly containers = new Map<string, Container>();
  /** The sandbox's storages (CreateSandboxRequest.storages as planned), for the debug endpoint. */
  storages: StoragePlan[] = [];
  /** Container ids reserved by a CreateContainer in flight. */
  readonly pendingContainerIds = new Set<string>();

  /**
   * Calls waiting on the model right now: WaitProcess waits, ReadStdout/ReadStderr reads and
   * WriteStdin writes not answered yet. Each leaves when its call ends (answered, deadline,
   * connection dropped), so after the callers are gone these return to 0 (tests check it).
   */
  pendingCalls(): { waits: number; reads: number; writes: number } {
    let waits = 0;
    let reads = 0;
    let writes = 0;
    for (const c of this.containers.values()) {
      for (const p of c.processes()) {
        waits += p.pendingWaiters;
        reads += p.stdio.pendingReads;
        writes += p.stdio.stdin.pendingWrites;
      }
    }
    return { waits, reads, writes };
  }

  /** What containers get from the sandbox when their namespaces are planned. */
  namespaceInfo(): SandboxNamespaceInfo {
    return { namespaces: this.namespaces, pidns: this.pidns, hostname: this.hostname };
  }

  /** The container `id`; throws StatusError NOT_FOUND when there is none. */
  getContainer(id: string): Container {
    const c = this.containers.get(id);
    if (!c) throw new StatusError(Code.NOT_FOUND, `container ${JSON.stringify(id)} not found`);
    return c;
  }

  /**
   * Insert a newly created container. The first container's init pid namespace becomes the
   * sandbox pid namespace when none is set yet (upstream update_shared_pidns); once that
   * namespace is gone no other container takes its place (as upstream, which keeps the path).
   */
  addContainer(container: Container): void {
    if (this.pidns === null && !this.pidnsGone && this.containers.size === 0) {
      this.pidns = `/proc/${container.init.pid}/ns/pid`;
      this.pidnsOwner = container.id;
    }
    this.containers.set(container.id, container);
  }

  /** Drop container `id`; when it owned the sandbox pid namespace, that namespace is gone. */
  removeContainer(id: string): void {
    this.containers.delete(id);
    if (this.pidnsOwner === id) {
      this.pidns = null;
      this.pidnsOwner = null;
      this.pidnsGone = true;
    }
  }

  /**
   * For a container asking for sandbox_pidns: throws StatusError FAILED_PRECONDITION "the
   * sandbox pid namespace is gone" when the container that owned it was removed or its init
   * has exited (a pid namespace dies with its init). Without any sandbox pid namespace yet it
   * returns (control/oci.ts refuses that case).
   */
  checkPidnsAlive(): void {
    if (this.pidnsGone) {
      throw new StatusError(Code.FAILED_PRECONDITION, 'the sandbox pid namespace is gone: the container that owned it was removed');
    }
    const owner = this.pidnsOwner === null ? undefined : this.containers.get(this.pidnsOwner);
    if (owner && (owner.init.exited || owner.removing)) {
      const why = owner.removing ? 'is being removed' : 'has exited';
      throw new StatusError(Code.FAILED_PRECONDITION, `the sandbox pid namespace is gone: the init of container ${owner.id}, its owner, ${why}`);
    }
  }
}
