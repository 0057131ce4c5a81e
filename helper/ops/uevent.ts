/**
 * The helper's one kernel uevent listener (Kata agent uevent.rs at 6e4d4c329a): a
 * NETLINK_KOBJECT_UEVENT socket (addon uevent.cc) polled by libuv; messages not sent by the
 * kernel are dropped; each message is parsed into ACTION, DEVPATH, DEVNAME, SUBSYSTEM, SEQNUM
 * and handed to the subscribers (device waits, helper/ops/device.ts).
 */
import { loadNative, type NativeAddon, type Poller } from '../../shared/native';
import { silentLogger, type Logger } from '../../shared/log';

/** One kernel uevent. `devpath` is sysfs-relative ("/devices/virtual/block/loop5"). */
export interface Uevent {
  action: string;
  devpath: string;
  devname: string;
  subsystem: string;
  seqnum: string;
}

/** Where device waits get uevents from: the kernel listener, or a test double. */
export interface UeventSource {
  /** Call `listener` for every uevent from now on; returns the unsubscribe function. */
  subscribe(listener: (ev: Uevent) => void): () => void;
}

/**
 * Parse "ACTION@DEVPATH\0KEY=VALUE\0..." (the kernel's format). Returns undefined for a message
 * without ACTION or DEVPATH (e.g. udev's "libudev" re-broadcasts, which are binary).
 */
export function parseUevent(buf: Buffer): Uevent | undefined {
  const fields = buf.toString('utf8').split('\0');
  const kv = new Map<string, string>();
  for (const f of fields.slice(1)) {
    const eq = f.indexOf('=');
    if (eq > 0) kv.set(f.slice(0, eq), f.slice(eq + 1));
  }
  const action = kv.get('ACTION');
  const devpath = kv.get('DEVPATH');
  if (!action || !devpath) return undefined;
  return {
    action,
    devpath,
    devname: kv.get('DEVNAME') ?? '',
    subsystem: kv.get('SUBSYSTEM') ?? '',
    seqnum: kv.get('SEQNUM') ?? '',
  };
}

/** A simple fan-out {@link UeventSource} (the listener's core, and the mock's). */
export class UeventHub implements UeventSource {
  private readonly listeners = new Set<(ev: Uevent) => void>();

  subscribe(listener: (ev: Uevent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Deliver `ev` to every subscriber (a throwing subscriber does not stop the others). */
  publish(ev: Uevent): void {
    for (const l of [...this.listeners]) {
      try {
        l(ev);
      } catch {
        // a waiter's own bug must not stop the others
      }
    }
  }
}

/**
 * The kernel listener. {@link start} opens the socket (throws the errno error when the kernel
 * refuses it); {@link close} stops it. Subscribing works before start (nothing arrives).
 */
export class KernelUeventListener extends UeventHub {
  private readonly native: NativeAddon;
  private readonly log: Logger;
  private fd = -1;
  private poller: Poller | undefined;

  constructor(logger?: Logger) {
    super();
    this.native = loadNative();
    this.log = (logger ?? silentLogger()).child({ component: 'uevent' });
  }

  start(): void {
    if (this.fd >= 0) return;
    this.fd = this.native.ueventOpen();
    this.poller = new this.native.Poller(this.fd, (status) => {
      if (status < 0) {
        this.log.error({ status }, 'uevent socket poll failed');
        return;
      }
      this.drain();
    });
    this.poller.start(true, false);
  }

  private drain(): void {
    for (let i = 0; i < 256; i++) {
      let msg;
      try {
        msg = this.native.ueventRecv(this.fd);
      } catch (err) {
        // ENOBUFS: the queue overflowed; waits re-scan sysfs on their timeout path.
        this.log.warn({ err }, 'uevent receive failed');
        return;
      }
      if (msg === null) return;
      if (!msg.kernel) continue;
      const ev = parseUevent(msg.data);
      if (ev) {
        this.log.debug({ uevent: ev }, 'uevent');
        this.publish(ev);
      }
    }
  }

  close(): void {
    this.poller?.close();
    this.poller = undefined;
    if (this.fd >= 0) {
      try {
        this.native.close(this.fd);
      } catch {
        // already closed
      }
      this.fd = -1;
    }
  }
}
