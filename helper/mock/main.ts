/**
 * Starting the mock helper in-process (control-plane tests). The out-of-process mock is
 * `kata-agent-helper --mock` (helper/main.ts).
 *
 * Reaping in-process: the mock reaps every child of the process it runs in (waitpid(-1)), so a
 * test that runs it must not rely on node:child_process 'exit' events meanwhile.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { HelperClient } from '../../shared/helper-client';
import { loadNative } from '../../shared/native';
import { silentLogger, type Logger } from '../../shared/log';
import { HelperServer } from '../server';
import type { ContainerBackend } from '../ops/container';
import { createMockHelperBackend } from './backend';
import type { GuestPaths } from '../ops/guest';
import type { MockGuest } from './guest';

export { createMockBackend, createMockHelperBackend, MockLauncher, resolveExecutable } from './backend';
export { addFakeBlockDevice, addFakeNetDevice, createMockGuest, makeFakeSysfs, MockGuestSystem, type MockGuest } from './guest';
import { MockNetlink } from './network';
export { MockNetlink } from './network';

export interface MockHelperOptions {
  /** Socket path (default: a fresh directory under os.tmpdir()). */
  socketPath?: string;
  /** Uid allowed to connect besides root (default: this process's uid). */
  controlUid?: number;
  logger?: Logger;
  /** Where the mock guest ops act (default: fresh temp trees). */
  guest?: GuestPaths;
}

/** A running in-process mock helper. */
export interface MockHelper {
  socketPath: string;
  server: HelperServer;
  backend: ContainerBackend;
  /** The mock guest ops (fake sysfs, copy root, recorded clock/entropy/swap). */
  guest: MockGuest;
  /** The mock's in-memory network namespace. */
  netlink: MockNetlink;
  /** Stop accepting, kill every process of the mock, remove the socket (and its temp dir). */
  close(): Promise<void>;
}

/**
 * Start a mock helper listening on a unix socket in this process. Connect with
 * `HelperClient.connect(socketPath)`.
 */
export async function startMockHelper(opts: MockHelperOptions = {}): Promise<MockHelper> {
  const logger = opts.logger ?? silentLogger();
  let tempDir: string | undefined;
  let socketPath = opts.socketPath;
  if (socketPath === undefined) {
    tempDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-mock-helper-'));
    socketPath = path.join(tempDir, 'helper.sock');
  }
  const netlink = new MockNetlink();
  const { backend: composed, containers: backend, guest } = createMockHelperBackend({ logger, guest: opts.guest, netlink });
  const server = new HelperServer({ backend: composed, controlUid: opts.controlUid ?? process.getuid?.() ?? 0, logger });
  try {
    server.listen(socketPath);
  } catch (err) {
    await composed.shutdown();
    if (tempDir) fs.rmSync(tempDir, { recursive: true, force: true });
    throw err;
  }
  let closing: Promise<void> | undefined;
  return {
    socketPath,
    server,
    backend,
    guest,
    netlink,
    close: () =>
      (closing ??= (async () => {
        server.close();
        await composed.shutdown();
        if (tempDir) fs.rmSync(tempDir, { recursive: true, force: true });
      })()),
  };
}

/** A mock helper served over a socketpair, with its client. */
export interface MockHelperPair {
  client: HelperClient;
  server: HelperServer;
  backend: ContainerBackend;
  guest: MockGuest;
  /** The mock's in-memory network namespace. */
  netlink: MockNetlink;
  /** Close the client and the server and kill every process of the mock. */
  close(): Promise<void>;
}

/** Like {@link createMockHelperPair} but also returns the server and backend. */
export async function startMockPair(opts: { logger?: Logger; guest?: GuestPaths; kataDir?: string } = {}): Promise<MockHelperPair> {
  const logger = opts.logger ?? silentLogger();
  const netlink = new MockNetlink();
  const { backend: composed, containers: backend, guest } = createMockHelperBackend({ logger, guest: opts.guest, kataDir: opts.kataDir, netlink });
  const server = new HelperServer({ backend: composed, controlUid: process.getuid?.() ?? 0, logger });
  const [controlEnd, helperEnd] = loadNative().seqpacketPair();
  server.addConnection(helperEnd);
  let client: HelperClient;
  try {
    client = await HelperClient.fromFd(controlEnd, { logger });
  } catch (err) {
    server.close();
    await composed.shutdown();
    throw err;
  }
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      client.close();
      server.close();
      await composed.shutdown();
    })());
  client.once('close', () => void close());
  return { client, server, backend, guest, netlink, close };
}

/**
 * A HelperClient connected over seqpacketPair to an in-process mock helper (fast control-plane
 * unit tests). `client.close()` also stops the mock: it kills the mock's processes and stops its
 * reaper (asynchronously; use {@link startMockPair} to await that).
 */
export async function createMockHelperPair(opts: { logger?: Logger } = {}): Promise<HelperClient> {
  const pair = await startMockPair(opts);
  return pair.client;
}
