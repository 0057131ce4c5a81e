// The guest's Kata directory as the storage tests lay it out in a temp dir: the share the
// runtime pre-mounts (a bind of a host directory, as virtio-fs would export it), the sandbox
// shm, a resolv.conf for CreateSandbox's dns, the helper flags that point there, and the
// clean-up of every mount made under it.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { leftoverMounts } from './agent-harness';

/** A temporary Kata directory (`<tmp>/kata`) and the mounts a test makes in it. */
export class KataDirFixture {
  readonly kata: string;
  /** kataGuestSharedDir(): `<kata>/shared/containers`. */
  readonly share: string;
  /** What virtio-fs would export: bound over {@link share} by {@link prepare}. */
  readonly hostShare: string;
  readonly shm: string;
  /** The file CreateSandbox's dns is bound over (instead of the machine's /etc/resolv.conf). */
  readonly resolv: string;
  /** Bind mounts made by {@link bind}, newest first (undone by {@link cleanup}). */
  readonly binds: string[] = [];

  constructor(tmp: string) {
    this.kata = path.join(tmp, 'kata');
    this.share = path.join(this.kata, 'shared', 'containers');
    this.hostShare = path.join(tmp, 'host-share');
    this.shm = path.join(this.kata, 'sandbox', 'shm');
    this.resolv = path.join(tmp, 'etc-resolv.conf');
  }

  /** Mount points under the Kata directory now (mountinfo order). */
  mountsUnderKata(): string[] {
    return leftoverMounts([this.kata]).map((l) => l.split(' ')[1]);
  }

  /** Bind `src` over `dst` (created), remembered for {@link cleanup}. */
  bind(src: string, dst: string): void {
    fs.mkdirSync(dst, { recursive: true });
    execFileSync('mount', ['--bind', src, dst]);
    this.binds.unshift(dst);
  }

  /** The share as the guest has it before CreateSandbox (pre-mounted), and a resolv.conf. */
  prepare(): void {
    fs.mkdirSync(path.join(this.hostShare, 'watchable'), { recursive: true });
    fs.writeFileSync(this.resolv, 'nameserver 127.0.0.53\n');
    this.bind(this.hostShare, this.share);
  }

  /** The helper flags for this directory, then `extra`. */
  helperArgs(extra: string[] = []): string[] {
    return ['--kata-dir', this.kata, '--resolv-conf', this.resolv, ...extra];
  }

  /** Unmount everything under the Kata directory (deepest last-mounted first), then the binds. */
  cleanup(): void {
    for (const m of this.mountsUnderKata().reverse()) spawnSync('umount', ['-l', m]);
    for (const b of this.binds) spawnSync('umount', ['-l', b]);
  }
}
