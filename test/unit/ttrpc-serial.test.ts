// The serial ttRPC transport (control/ttrpc/serial.ts) against a scripted virtio-serial port:
// read(2) gives EOF while no host is connected, EAGAIN while connected and idle, bytes when sent.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { NativeAddon, PollEvents } from '../../shared/native';
import { formatAddress, parseAddress } from '../../control/ttrpc/address';
import { resolveSerialPort, SerialPortListener, type SerialSession } from '../../control/ttrpc/serial';
import { mountPoints } from '../../control/init';

/** A fake port: `host` says whether a host client is connected; `inbox` is what it sent. */
class FakePort {
  host = false;
  inbox: Buffer[] = [];
  outbox: Buffer[] = [];
  closed = 0;
  pollCb: ((status: number, events: PollEvents) => void) | undefined;
  watching: [boolean, boolean] = [false, false];

  native(): NativeAddon {
    const port = this;
    class Poller {
      constructor(_fd: number, cb: (status: number, events: PollEvents) => void) {
        port.pollCb = cb;
      }
      start(r: boolean, w: boolean): void {
        port.watching = [r, w];
      }
      stop(): void {
        port.watching = [false, false];
      }
      close(): void {
        port.watching = [false, false];
      }
    }
    return {
      Poller,
      setCloexec: () => undefined,
      close: () => void port.closed++,
      read: (_fd: number, buf: Buffer, off: number) => {
        const chunk = port.inbox.shift();
        if (chunk) return chunk.copy(buf, off);
        return port.host ? -1 : 0;
      },
      write: (_fd: number, buf: Buffer, off: number, len: number) => {
        port.outbox.push(Buffer.from(buf.subarray(off, off + len)));
        return len;
      },
    } as unknown as NativeAddon;
  }

  /** The kernel says the fd is readable (data, or a hang-up). */
  poll(): void {
    if (this.watching[0] || this.watching[1]) this.pollCb?.(0, { readable: true, writable: true, disconnect: false } as PollEvents);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.test('serial addresses: path or port name; formatted back', async (t) => {
  t.same(parseAddress('serial:///dev/virtio-ports/agent.channel.0'), { kind: 'serial', path: '/dev/virtio-ports/agent.channel.0' });
  t.same(parseAddress('SERIAL://agent.channel.0'), { kind: 'serial', path: 'agent.channel.0' });
  t.equal(formatAddress(parseAddress('serial://agent.channel.0')), 'serial://agent.channel.0');
  t.throws(() => parseAddress('serial://'), /empty serial port/);
  t.throws(() => parseAddress('serial://../dev/x'), /absolute path or a port name/);
  t.throws(() => parseAddress('serial://a/b'), /absolute path or a port name/);
});

t.test('a port name is found in sysfs; an unknown one is NOT_FOUND', async (t) => {
  const sysfs = fs.mkdtempSync(path.join(os.tmpdir(), 'vports-'));
  t.teardown(() => fs.rmSync(sysfs, { recursive: true, force: true }));
  for (const [dev, name] of [['vport1p1', 'agent.channel.0'], ['vport1p2', 'agent.debug.0']]) {
    fs.mkdirSync(path.join(sysfs, dev));
    fs.writeFileSync(path.join(sysfs, dev, 'name'), `${name}\n`);
  }
  t.equal(resolveSerialPort('agent.debug.0', sysfs), '/dev/vport1p2');
  t.equal(resolveSerialPort('/dev/hvc0', sysfs), '/dev/hvc0', 'a path is taken as is');
  t.throws(() => resolveSerialPort('nope', sysfs), { code: 5, message: /no virtio-serial port named "nope"/ });
});

t.test('sessions: none while no host; one per host connection; bytes both ways', async (t) => {
  const port = new FakePort();
  const dev = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'serial-')), 'port');
  fs.writeFileSync(dev, '');
  const sessions: SerialSession[] = [];
  const listener = new SerialPortListener(dev, { native: port.native(), probeMs: 5, onSession: (s) => sessions.push(s) });
  await sleep(40);
  t.equal(sessions.length, 0, 'EOF while no host client: no session');

  port.host = true;
  port.inbox.push(Buffer.from('hello'));
  await sleep(40);
  t.equal(sessions.length, 1, 'a session once the host connected');
  const s1 = sessions[0];
  const got: string[] = [];
  s1.on('data', (d: Buffer) => got.push(d.toString()));
  let ended = false;
  s1.on('end', () => (ended = true));
  await sleep(5);
  port.inbox.push(Buffer.from(' world'));
  port.poll();
  await sleep(5);
  t.equal(got.join(''), 'hello world', 'the host bytes, the first ones included');
  await new Promise<void>((r) => s1.write('answer', () => r()));
  t.equal(Buffer.concat(port.outbox).toString(), 'answer', 'the guest bytes reached the port');

  port.host = false;
  port.poll();
  await sleep(20);
  t.ok(ended, 'the session ended when the host went away');
  t.equal(sessions.length, 1, 'no new session while the host is away');
  t.equal(port.closed, 0, 'the port stays open (bytes sent meanwhile are not discarded)');

  port.host = true;
  port.inbox.push(Buffer.from('again'));
  await sleep(40);
  t.equal(sessions.length, 2, 'a new session for the reconnected host');
  const second: string[] = [];
  sessions[1].on('data', (d: Buffer) => second.push(d.toString()));
  await sleep(5);
  t.equal(second.join(''), 'again');

  listener.close();
  listener.close();
  t.equal(port.closed, 1, 'close() closes the port once');
  t.ok(sessions[1].destroyed, 'and ends the session');
});

t.test('a host already connected when the listener starts (a restarted control plane): the session starts after construction', async (t) => {
  const port = new FakePort();
  const dev = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'serial-')), 'port');
  fs.writeFileSync(dev, '');
  port.host = true;
  port.inbox.push(Buffer.from('first bytes'));
  let fdSeen: number | undefined;
  // onSession reads the listener (as TtrpcServer.listenSerial does: `port.fd`): it must not run
  // inside the constructor, where `listener` is not assigned yet.
  const listener: SerialPortListener = new SerialPortListener(dev, { native: port.native(), probeMs: 5, onSession: () => (fdSeen = listener.fd) });
  t.equal(fdSeen, undefined, 'no session inside the constructor');
  await sleep(20);
  t.equal(fdSeen, listener.fd, 'the session started once the listener existed');
  listener.close();
});

t.test('mountPoints reads mountinfo targets', async (t) => {
  const info = '22 1 0:21 / /proc rw - proc proc rw\n23 1 0:5 / /dev rw - devtmpfs dev rw\n24 1 0:6 / /with\\040space rw - tmpfs t rw\n';
  t.same([...mountPoints(info)], ['/proc', '/dev', '/with space']);
});
