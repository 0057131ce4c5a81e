/**
 * Network rpcs end to end over ttRPC against the mock helper's in-memory kernel
 * (helper/mock/network.ts): validation in control, the helper's update logic (ordering,
 * replace semantics, rollback), and the proto shapes the runtime reads back.
 */
import t, { type Test } from 'tap';
import { parseHelperArgs } from '../../helper/main';
import { addFakeNetDevice, startMockPair } from '../../helper/mock/main';
import { Code, StatusError } from '../../shared/protocol';
import { startMockAgent, type MockAgent } from '../lib/mock-agent';

type H = MockAgent;

/**
 * A mock agent whose fake sysfs has NICs at the PCI paths the tests send (UpdateInterface waits
 * for a net device behind a given pciPath): 02/00 and 01/02 (goInterface).
 */
async function harness(t: Test): Promise<H> {
  const h = await startMockAgent(t, { prefix: 'kata-agent-net-' });
  addFakeNetDevice(h.pair.guest, '/devices/pci0000:00/0000:00:02.0/0000:01:00.0/virtio1/net/eth0');
  addFakeNetDevice(h.pair.guest, '/devices/pci0000:00/0000:00:01.0/0000:02:02.0/virtio2/net/eth0b');
  return h;
}

async function expectCode(t: Test, p: Promise<unknown>, code: number, re: RegExp): Promise<void> {
  try {
    await p;
    t.fail(`expected status ${code}, the call succeeded`);
  } catch (err) {
    t.ok(err instanceof StatusError, 'a status error');
    t.equal((err as StatusError).code, code, `code ${code}: ${(err as Error).message}`);
    t.match((err as Error).message, re);
  }
}

const MAC = '02:42:ac:11:00:02';

/** What the Go runtime sends for a veth endpoint (kata_agent.go / network.go generateVCNetworkStructures). */
const goInterface = {
  device: 'eth0',
  name: 'eth0',
  IPAddresses: [{ family: 0, address: '172.17.0.2', mask: '16' }],
  mtu: 1450,
  hwAddr: MAC.toUpperCase(),
  pciPath: '01/02',
  raw_flags: 0,
};

t.test('UpdateInterface renames, sets MTU and addresses (replace), answers the link as it now is', async (t) => {
  const h = await harness(t);
  const nl = h.pair.netlink;
  const idx = nl.linkTable.find((l) => l.name === 'eth0')!.index;
  nl.addr('add', { index: idx, address: '10.0.0.9', prefixLen: 8 }); // to be removed
  const got = await h.call('UpdateInterface', {
    interface: {
      name: 'net1',
      hwAddr: MAC,
      mtu: 1400,
      IPAddresses: [
        { family: 0, address: '192.168.5.2', mask: '24' },
        { family: 1, address: 'fd00::2', mask: '64' },
      ],
      raw_flags: 0x80,
      pciPath: '02/00',
    },
  });
  t.equal(got.name, 'net1');
  t.equal(Number(got.mtu), 1400);
  t.equal(got.hwAddr, MAC);
  t.equal(got.pciPath, '02/00', 'pciPath of the request kept');
  t.equal(got.type, 'veth');
  t.ok(got.raw_flags & 0x80, 'IFF_NOARP set');
  t.ok(got.raw_flags & 0x1, 'up');
  t.same(
    got.IPAddresses.map((a) => [a.family, a.address, a.mask]),
    [
      [0, '192.168.5.2', '24'],
      [1, 'fd00::2', '64'],
    ],
    'exactly the requested addresses, IPv6 with family v6',
  );
  const list = await h.call('ListInterfaces', {});
  const net1 = list.Interfaces.find((i) => i.name === 'net1');
  t.same(net1?.IPAddresses, got.IPAddresses, 'listed back identically');
  t.equal(Number(net1?.mtu), 1400);
});

t.test('UpdateInterface: a link already holding the name gets the old name', async (t) => {
  const h = await harness(t);
  h.pair.netlink.addLink('eth1', '02:00:00:00:00:09', 'veth', 1);
  await h.call('UpdateInterface', { interface: { name: 'eth1', hwAddr: MAC, mtu: 0, IPAddresses: [] } });
  const names = Object.fromEntries(h.pair.netlink.linkTable.map((l) => [l.hwAddr, l.name]));
  t.equal(names[MAC], 'eth1');
  t.equal(names['02:00:00:00:00:09'], 'eth0');
});

t.test('UpdateInterface with a pciPath waits for a NIC hot-plugged after the request; bad paths; timeout', async (t) => {
  const h = await harness(t);
  const mac = '02:00:00:00:00:42';
  const pending = h.call('UpdateInterface', {
    interface: { name: 'eth7', hwAddr: mac.toUpperCase(), mtu: 1400, IPAddresses: [{ family: 0, address: '10.9.0.2', mask: '24' }], pciPath: '02/05' },
  });
  let settled = false;
  void pending.then(() => (settled = true), () => (settled = true));
  await new Promise((r) => setTimeout(r, 100));
  t.notOk(settled, 'still waiting while no NIC is behind 02/05');
  // The NIC arrives: the kernel registers the link, then sends the net "add" uevent.
  h.pair.netlink.addLink('eth1', mac, '', 0, 1500);
  h.pair.guest.uevents.publish(addFakeNetDevice(h.pair.guest, '/devices/pci0000:00/0000:00:02.0/0000:01:05.0/virtio4/net/eth1'));
  const got = await pending;
  t.equal(got.name, 'eth7', 'configured once it appeared');
  t.equal(Number(got.mtu), 1400);
  t.same(got.IPAddresses.map((a) => a.address), ['10.9.0.2']);
  // A net uevent behind another slot does not end the wait: DEADLINE_EXCEEDED (mock timeout 500 ms).
  const other = h.call('UpdateInterface', { interface: { name: 'eth8', hwAddr: '02:00:00:00:00:43', mtu: 0, IPAddresses: [], pciPath: '02/06' } });
  h.pair.guest.uevents.publish(addFakeNetDevice(h.pair.guest, '/devices/pci0000:00/0000:00:02.0/0000:01:07.0/virtio5/net/eth2'));
  await expectCode(t, other, Code.DEADLINE_EXCEEDED, /Timeout after 500ms waiting for uevent net interface at PCI path 02\/06/);
  await expectCode(t, h.call('UpdateInterface', { interface: { ...goInterface, pciPath: '02/../x' } }), Code.INVALID_ARGUMENT, /Interface\.pciPath "02\/\.\.\/x"/);
  await expectCode(t, h.call('UpdateInterface', { interface: { ...goInterface, pciPath: '07/01' } }), Code.NOT_FOUND, /no bridge/);
  // The helper checks again what control never sends.
  const iface = { hwAddr: '', name: 'eth0', mtu: 0, addresses: [], noarp: false, promisc: false, allmulti: false, pciPath: '1/2' };
  await expectCode(t, h.pair.client.call('updateInterface', { iface }), Code.INVALID_ARGUMENT, /iface\.pciPath "1\/2"/);
});

t.test('UpdateInterface bad input', async (t) => {
  const h = await harness(t);
  await expectCode(t, h.call('UpdateInterface', {}), Code.INVALID_ARGUMENT, /empty update interface request/);
  await expectCode(t, h.call('UpdateInterface', { interface: { ...goInterface, hwAddr: '02:00:00:00:00:77' } }), Code.NOT_FOUND, /02:00:00:00:00:77/);
  await expectCode(t, h.call('UpdateInterface', { interface: { ...goInterface, hwAddr: 'zz' } }), Code.INVALID_ARGUMENT, /hwAddr "zz"/);
  await expectCode(t, h.call('UpdateInterface', { interface: { ...goInterface, name: 'a-very-long-name0' } }), Code.INVALID_ARGUMENT, /a-very-long-name0.*IFNAMSIZ/);
  await expectCode(
    t,
    h.call('UpdateInterface', { interface: { ...goInterface, IPAddresses: [{ family: 0, address: '10.0.0.300', mask: '24' }] } }),
    Code.INVALID_ARGUMENT,
    /10\.0\.0\.300/,
  );
  await expectCode(
    t,
    h.call('UpdateInterface', { interface: { ...goInterface, IPAddresses: [{ family: 0, address: '10.0.0.3', mask: '33' }] } }),
    Code.INVALID_ARGUMENT,
    /mask "33"/,
  );
  await expectCode(
    t,
    h.call('UpdateInterface', { interface: { ...goInterface, IPAddresses: [{ family: 0, address: 'fd00::1', mask: '64' }] } }),
    Code.INVALID_ARGUMENT,
    /family v4 does not match/,
  );
  await expectCode(t, h.call('UpdateInterface', { interface: { name: 'nope0', mtu: 0, IPAddresses: [] } }), Code.NOT_FOUND, /nope0/);
});

t.test('UpdateInterface rolls back what it applied when a step fails', async (t) => {
  const h = await harness(t);
  const nl = h.pair.netlink;
  const eth0 = nl.linkTable.find((l) => l.name === 'eth0')!;
  nl.linkSet(eth0.index, { up: true });
  nl.addr('add', { index: eth0.index, address: '10.1.0.2', prefixLen: 24 });
  // An MTU the device refuses (the mock kernel: 68..65535) fails after the addresses changed.
  await expectCode(
    t,
    h.call('UpdateInterface', { interface: { name: 'eth9', hwAddr: MAC, mtu: 20, IPAddresses: [{ family: 0, address: '10.2.0.2', mask: '24' }] } }),
    Code.INVALID_ARGUMENT,
    /eth0/,
  );
  const now = nl.linkTable.find((l) => l.index === eth0.index)!;
  t.equal(now.name, 'eth0', 'name restored');
  t.equal(now.mtu, 1500, 'mtu unchanged');
  t.equal(now.flags & 1, 1, 'up again');
  t.same(nl.addrTable.filter((a) => a.index === eth0.index).map((a) => a.address), ['10.1.0.2'], 'previous addresses back');
});

t.test('the Go runtime sequence for a veth endpoint replays: UpdateInterface, UpdateRoutes, AddARPNeighbors', async (t) => {
  const h = await harness(t);
  const iface = await h.call('UpdateInterface', { interface: goInterface });
  t.equal(iface.name, 'eth0');
  const routes = await h.call('UpdateRoutes', {
    routes: {
      Routes: [
        // gateway first in the request: the agent adds link routes before gateway routes
        { dest: '', gateway: '172.17.0.1', device: 'eth0', source: '', scope: 0, family: 0 },
        { dest: '172.17.0.0/16', gateway: '', device: 'eth0', source: '172.17.0.2', scope: 253, family: 0 },
        { dest: '10.10.0.0/24', gateway: '172.17.0.1', device: 'eth0', source: '', scope: 0, family: 0 },
      ],
    },
  });
  const shown = routes.Routes.map((r) => `${r.dest}|${r.gateway}|${r.device}|${r.source}|${r.scope}|${r.family}`).sort();
  t.same(shown, ['10.10.0.0/24|172.17.0.1|eth0||0|0', '172.17.0.0/16||eth0|172.17.0.2|253|0', '|172.17.0.1|eth0||0|0'], 'the table as sent');
  await h.call('AddARPNeighbors', {
    neighbors: { ARPNeighbors: [{ toIPAddress: { family: 0, address: '172.17.0.1' }, device: 'eth0', lladdr: '02:42:7f:00:00:01', state: 0, flags: 0 }] },
  });
  const n = h.pair.netlink.neighTable;
  t.same(n.map((x) => [x.address, x.lladdr, x.state]), [['172.17.0.1', '02:42:7f:00:00:01', 0x80]], 'state 0 became NUD_PERMANENT');
  const listed = await h.call('ListRoutes', {});
  t.same(listed.Routes.map((r) => `${r.dest}|${r.gateway}`).sort(), shown.map((s) => s.split('|').slice(0, 2).join('|')), 'ListRoutes agrees');
});

t.test('UpdateRoutes replaces the table, keeps kernel routes, and rolls back on failure', async (t) => {
  const h = await harness(t);
  await h.call('UpdateInterface', { interface: goInterface });
  await h.call('UpdateRoutes', { routes: { Routes: [{ dest: '', gateway: '172.17.0.1', device: 'eth0' }] } });
  const before = (await h.call('ListRoutes', {})).Routes.map((r) => `${r.dest}|${r.gateway}`).sort();
  t.same(before, ['172.17.0.0/16|', '|172.17.0.1'], 'kernel link route kept, default added');
  // unreachable gateway: the whole update fails, the previous table stays
  await expectCode(
    t,
    h.call('UpdateRoutes', { routes: { Routes: [{ dest: '10.9.0.0/16', device: 'eth0' }, { dest: '', gateway: '192.0.2.1', device: 'eth0' }] } }),
    Code.INVALID_ARGUMENT,
    /192\.0\.2\.1/,
  );
  const after = (await h.call('ListRoutes', {})).Routes.map((r) => `${r.dest}|${r.gateway}`).sort();
  t.same(after, before, 'previous table restored');
  await expectCode(t, h.call('UpdateRoutes', { routes: { Routes: [{ dest: '10.0.0.0/8', device: 'ghost0' }] } }), Code.NOT_FOUND, /ghost0/);
  await expectCode(t, h.call('UpdateRoutes', { routes: { Routes: [{ dest: '10.0.0.0/40', device: 'eth0' }] } }), Code.INVALID_ARGUMENT, /10\.0\.0\.0\/40/);
  await expectCode(t, h.call('UpdateRoutes', { routes: { Routes: [{ dest: '10.0.0.0/8', gateway: 'fd00::1', device: 'eth0' }] } }), Code.INVALID_ARGUMENT, /fd00::1/);
  await expectCode(t, h.call('UpdateRoutes', {}), Code.INVALID_ARGUMENT, /empty update routes request/);
  t.same((await h.call('ListRoutes', {})).Routes.map((r) => `${r.dest}|${r.gateway}`).sort(), before, 'refusals changed nothing');
  // an empty list removes every non-kernel route
  const emptied = await h.call('UpdateRoutes', { routes: { Routes: [] } });
  t.same(emptied.Routes.map((r) => r.dest), ['172.17.0.0/16']);
});

t.test('AddARPNeighbors bad input and rollback', async (t) => {
  const h = await harness(t);
  await expectCode(t, h.call('AddARPNeighbors', {}), Code.INVALID_ARGUMENT, /empty add arp neighbours request/);
  await expectCode(t, h.call('AddARPNeighbors', { neighbors: { ARPNeighbors: [{ device: 'eth0', toIPAddress: { address: '' } }] } }), Code.INVALID_ARGUMENT, /toIPAddress/);
  await expectCode(
    t,
    h.call('AddARPNeighbors', { neighbors: { ARPNeighbors: [{ device: 'eth0', toIPAddress: { address: '10.0.0.1' }, lladdr: '1:2:3' }] } }),
    Code.INVALID_ARGUMENT,
    /lladdr "1:2:3"/,
  );
  await expectCode(
    t,
    h.call('AddARPNeighbors', {
      neighbors: { ARPNeighbors: [{ device: 'eth0', toIPAddress: { address: '10.0.0.1' } }, { device: 'wlan9', toIPAddress: { address: '10.0.0.2' } }] },
    }),
    Code.NOT_FOUND,
    /wlan9/,
  );
  t.same(h.pair.netlink.neighTable, [], 'nothing added when a device is unknown');
});

t.test('GetIPTables / SetIPTables round trip; refused rules are INVALID_ARGUMENT', async (t) => {
  const h = await harness(t);
  const rules = '*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 10.0.0.1/32 -j DROP\nCOMMIT\n';
  await h.call('SetIPTables', { is_ipv6: false, data: Buffer.from(rules) });
  t.equal(Buffer.from((await h.call('GetIPTables', { is_ipv6: false })).data).toString(), rules);
  t.equal(Buffer.from((await h.call('GetIPTables', { is_ipv6: true })).data).toString(), '', 'v6 is separate');
  await expectCode(t, h.call('SetIPTables', { is_ipv6: false, data: Buffer.from('BAD\n') }), Code.INVALID_ARGUMENT, /iptables-restore failed/);
  await expectCode(t, h.call('SetIPTables', { is_ipv6: false, data: Buffer.alloc(300 * 1024, 0x41) }), Code.RESOURCE_EXHAUSTED, /307200/);
});

t.test('interface counters for StatsContainer come from the helper', async (t) => {
  const pair = await startMockPair();
  t.teardown(() => pair.close());
  const stats = await pair.client.call('interfaceStats', {});
  t.same(stats.result.interfaces.map((i) => i.name), ['lo', 'eth0']);
  t.equal(typeof stats.result.interfaces[0].rxBytes, 'number');
});

t.test('kata-agent-helper --netns: an absolute namespace path, default the helper own', async (t) => {
  t.equal(parseHelperArgs(['--mock']).netns, '', 'default: the helper own namespace');
  t.equal(parseHelperArgs(['--mock', '--netns', '/run/netns/x']).netns, '/run/netns/x');
  t.throws(() => parseHelperArgs(['--mock', '--netns', 'x']), /--netns must be an absolute path/);
});
