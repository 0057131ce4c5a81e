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
import { createMockBackend, createMockHelperBackend } from './backend';
import { MockNetlink } from './network';

export { createMockBackend, createMockHelperBackend, MockLauncher, resolveExecutable } from './backend';
export { MockNetlink } from './network';

export interface MockHelperOptions {
  /** Socket path (default: a fresh directory under os.tmpdir()). */
  socketPath?: string;
  /** Uid allowed to connect besides root (default: this process's uid). */
  controlUid?: number;
  logger?: Logger;
}

/** A running in-process mock helper. */
export interface MockHelper {
  socketPath: string;
  server: HelperServer;
  backend: ContainerBackend;
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
  const backend = createMockBackend({ logger });
  const netlink = new MockNetlink();
  const server = new HelperServer({
    backend: createMockHelperBackend({ logger, containers: backend, netlink }),
    controlUid: opts.controlUid ?? process.getuid?.() ?? 0,
    logger,
  });
  try {
    server.listen(socketPath);
  } catch (err) {
    await backend.shutdown();
    if (tempDir) fs.rmSync(tempDir, { recursive: true, force: true });
    throw err;
  }
  let closing: Promise<void> | undefined;
  return {
    socketPath,
    server,
    backend,
    netlink,
    close: () =>
      (closing ??= (async () => {
        server.close();
        await backend.shutdown();
        if (tempDir) fs.rmSync(tempDir, { recursive: true, force: true });
      })()),
  };
}

/** A mock helper served over a socketpair, with its client. */
export interface MockHelperPair {
  client: HelperClient;
  server: HelperServer;
  backend: ContainerBackend;
  /** The mock's in-memory network namespace. */
  netlink: MockNetlink;
  /** Close the client and the server and kill every process of the mock. */
  close(): Promise<void>;
}

/** Like {@link createMockHelperPair} but also returns the server and backend. */
export async function startMockPair(opts: { logger?: Logger } = {}): Promise<MockHelperPair> {
  const logger = opts.logger ?? silentLogger();
  const backend = createMockBackend({ logger });
  const netlink = new MockNetlink();
  const server = new HelperServer({ backend: createMockHelperBackend({ logger, containers: backend, netlink }), controlUid: process.getuid?.() ?? 0, logger });
  const [controlEnd, helperEnd] = loadNative().seqpacketPair();
  server.addConnection(helperEnd);
  let client: HelperClient;
  try {
    client = await HelperClient.fromFd(controlEnd, { logger });
  } catch (err) {
    server.close();
    await backend.shutdown();
    throw err;
  }
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      client.close();
      server.close();
      await backend.shutdown();
    })());
  client.once('close', () => void close());
  return { client, server, backend, netlink, close };
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
