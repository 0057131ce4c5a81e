// Connect to a ttRPC unix address from a child process running as another uid, send one
// request frame and report what happened (used by the peer-credential regression tests).
import { spawn } from 'node:child_process';

/** What the child saw: connected, got any bytes back, and the socket error code if any. */
export interface PeerAttempt {
  connected: boolean;
  answered: boolean;
  error?: string;
}

/**
 * As `uid`/`gid` (needs root), connect to `address` (`unix:///path` or `unix://@name`), write
 * `frame` and wait up to 3 s for a reply or the close.
 */
export function connectAsUid(address: string, frame: Buffer, uid = 65534, gid = 65534, newPidNamespace = false): Promise<PeerAttempt> {
  const p = address.slice('unix://'.length);
  const target = p.startsWith('@') ? `\0${p.slice(1)}` : p;
  const script = `
    const net = require('node:net');
    const out = { connected: false, answered: false };
    const s = net.createConnection({ path: ${JSON.stringify(target)} }, () => {
      out.connected = true;
      s.write(Buffer.from(${JSON.stringify(frame.toString('hex'))}, 'hex'));
    });
    s.on('data', () => { out.answered = true; s.destroy(); });
    s.on('error', (e) => { out.error = e.code || e.message; });
    s.on('close', () => { process.stdout.write(JSON.stringify(out)); });
    setTimeout(() => s.destroy(), 3000).unref();`;
  return new Promise((resolve, reject) => {
    // `env -i`: tap adds its process-info hooks to children's environment; another uid cannot write them.
    // newPidNamespace: as a container's root would (uid 0, own pid namespace; needs root).
    const argv = ['env', '-i', process.execPath, '-e', script];
    const [cmd, ...args] = newPidNamespace ? ['unshare', '--pid', '--fork', '--kill-child', ...argv] : argv;
    const child = spawn(cmd, args, { uid, gid, stdio: ['ignore', 'pipe', 'inherit'] });
    let text = '';
    child.stdout!.on('data', (d: Buffer) => (text += d.toString()));
    child.on('error', reject);
    child.on('exit', () => {
      try {
        resolve(JSON.parse(text) as PeerAttempt);
      } catch {
        reject(new Error(`child printed ${JSON.stringify(text)}`));
      }
    });
  });
}
