// Network rpcs through the real agent (helper as root, libnl) on network namespaces this test
// creates: the helper runs with `--netns /run/netns/<guest>`, the other end of a veth pair lives
// in a second namespace `<peer>`. Nothing here touches the machine's own network: the host's
// links, addresses and routes are compared before and after.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { AgentClient } from '../../control/ctl/client';
import { startStandaloneAgent, type StandaloneAgent } from '../../scripts/lib/standalone';
import { findIptables } from '../../helper/ops/netlink';
import { Code, expectCode } from './lib/agent-harness';

const skip =
  process.getuid?.() !== 0
    ? 'needs root (network namespaces)'
    : spawnSync('ip', ['-V']).status !== 0
      ? 'iproute2 (ip) is not installed'
      : undefined;

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8' });
}
function hostNetwork(): string {
  return [ip('-o', 'link'), ip('-o', 'addr'), ip('route'), ip('-6', 'route')].join('\n').replace(/\\.*$/gm, '');
}

if (skip) {
  t.plan(0, skip);
} else {
  const guest = `ktnet-g${process.pid}`;
  const peer = `ktnet-p${process.pid}`;
  let agent: StandaloneAgent;
  let client: AgentClient;
  let mac = '';
  const hostBefore = hostNetwork();

  t.before(async () => {
    ip('netns', 'add', guest);
    ip('netns', 'add', peer);
    ip('-n', guest, 'link', 'add', 'kv0', 'type', 'veth', 'peer', 'name', 'kv1');
    ip('-n', guest, 'link', 'set', 'kv1', 'netns', peer);
    ip('-n', peer, 'addr', 'add', '10.77.0.1/24', 'dev', 'kv1');
    ip('-n', peer, 'addr', 'add', 'fd77::1/64', 'dev', 'kv1', 'nodad');
    ip('-n', peer, 'link', 'set', 'kv1', 'address', '02:77:00:00:00:01');
    ip('-n', peer, 'link', 'set', 'kv1', 'up');
    ip('-n', peer, 'link', 'set', 'lo', 'up');
    mac = JSON.parse(ip('-n', guest, '-j', 'link', 'show', 'kv0'))[0].address as string;
    const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-net-'));
    agent = await startStandaloneAgent({ runDir, debug: false, helperArgs: ['--netns', `/run/netns/${guest}`] });
    client = await AgentClient.connect(agent.address);
  });
  t.teardown(async () => {
    await client?.close();
    await agent?.stop();
    spawnSync('ip', ['netns', 'delete', guest]);
    spawnSync('ip', ['netns', 'delete', peer]);
  });

  t.test('UpdateInterface: renamed, MTU, two addresses; listed back identically', async (t) => {
    const requested = [
      { family: 0, address: '10.77.0.2', mask: '24' },
      { family: 1, address: 'fd77::2', mask: '64' },
    ];
    const got = await client.call('UpdateInterface', { interface: { name: 'eth0', hwAddr: mac.toUpperCase(), mtu: 1400, IPAddresses: requested, device: 'eth0' } });
    t.equal(got.name, 'eth0');
    t.equal(Number(got.mtu), 1400);
    t.equal(got.hwAddr, mac);
    t.equal(got.type, 'veth');
    const listed = (await client.call('ListInterfaces', {})).Interfaces.find((i) => i.name === 'eth0');
    t.ok(listed, 'eth0 listed');
    const global = (l: typeof requested | undefined): string[] =>
      (l ?? []).filter((a) => !a.address.startsWith('fe80')).map((a) => `${a.family} ${a.address}/${a.mask}`).sort();
    t.same(global(listed?.IPAddresses as typeof requested), global(requested), 'addresses listed back identically');
    t.equal(Number(listed?.mtu), 1400);
    t.equal(listed?.hwAddr, mac);
    const kernel = JSON.parse(ip('-n', guest, '-j', 'addr', 'show', 'eth0'))[0];
    t.equal(kernel.mtu, 1400, 'the kernel agrees on the MTU');
    t.same(
      kernel.addr_info.filter((a: { scope: string }) => a.scope === 'global').map((a: { local: string; prefixlen: number }) => `${a.local}/${a.prefixlen}`).sort(),
      ['10.77.0.2/24', 'fd77::2/64'],
      'the kernel has exactly the two addresses',
    );
    t.ok(kernel.flags.includes('UP'), 'up');
  });

  t.test('UpdateRoutes: replaced, listed back; a failed update leaves the table', async (t) => {
    const routes = [
      { dest: '', gateway: '10.77.0.1', device: 'eth0', scope: 0, family: 0 },
      { dest: '10.77.0.0/24', device: 'eth0', source: '10.77.0.2', scope: 253, family: 0 },
      { dest: '10.88.0.0/16', gateway: '10.77.0.1', device: 'eth0', scope: 0, family: 0 },
      { dest: '192.0.2.0/24', device: 'eth0', scope: 253, family: 0 },
      { dest: 'fd88::/64', gateway: 'fd77::1', device: 'eth0', scope: 0, family: 1 },
    ];
    const answer = await client.call('UpdateRoutes', { routes: { Routes: routes } });
    const key = (r: { dest?: string | null; gateway?: string | null; device?: string | null; scope?: number | null }): string => `${r.dest ?? ''}|${r.gateway ?? ''}|${r.device}|${r.scope ?? 0}`;
    for (const r of routes) t.ok(answer.Routes.some((a) => key(a) === key(r)), `route ${key(r)} in the answer`);
    const listed = await client.call('ListRoutes', {});
    for (const r of routes) t.ok(listed.Routes.some((a) => key(a) === key(r)), `route ${key(r)} listed`);
    const v4 = ip('-n', guest, 'route');
    t.match(v4, /default via 10\.77\.0\.1 dev eth0/);
    t.match(v4, /10\.88\.0\.0\/16 via 10\.77\.0\.1 dev eth0/);
    t.match(v4, /192\.0\.2\.0\/24 dev eth0 .*scope link/);
    t.match(ip('-n', guest, '-6', 'route'), /fd88::\/64 via fd77::1 dev eth0/);

    // replace: a second update drops what it does not name (kernel routes stay)
    await client.call('UpdateRoutes', { routes: { Routes: [routes[0]] } });
    const after = ip('-n', guest, 'route');
    t.notMatch(after, /10\.88\.0\.0/, 'old route removed');
    t.match(after, /10\.77\.0\.0\/24 dev eth0 proto kernel/, 'kernel link route kept');

    const before = ip('-n', guest, 'route') + ip('-n', guest, '-6', 'route');
    await expectCode(t, client.call('UpdateRoutes', { routes: { Routes: [{ dest: '10.99.0.0/16', device: 'eth0' }, { dest: '', gateway: '198.51.100.1', device: 'eth0' }] } }), Code.INVALID_ARGUMENT, 'unreachable gateway');
    t.equal(ip('-n', guest, 'route') + ip('-n', guest, '-6', 'route'), before, 'the previous table is in place');
    await expectCode(t, client.call('UpdateRoutes', { routes: { Routes: [{ dest: '10.0.0.0/8', device: 'nosuch0' }] } }), Code.NOT_FOUND, 'unknown device');
    await expectCode(t, client.call('UpdateRoutes', { routes: { Routes: [{ dest: '10.0.0.0/33', device: 'eth0' }] } }), Code.INVALID_ARGUMENT, 'invalid CIDR');
  });

  t.test('AddARPNeighbors: a permanent entry in the kernel table', async (t) => {
    await client.call('AddARPNeighbors', {
      neighbors: { ARPNeighbors: [{ toIPAddress: { family: 0, address: '10.77.0.9' }, device: 'eth0', lladdr: '02:77:00:00:00:09', state: 0, flags: 0 }] },
    });
    t.match(ip('-n', guest, 'neigh', 'show', 'dev', 'eth0'), /10\.77\.0\.9 lladdr 02:77:00:00:00:09 PERMANENT/);
    await expectCode(t, client.call('AddARPNeighbors', { neighbors: { ARPNeighbors: [{ toIPAddress: { address: '10.77.0.10' }, device: 'nosuch0' }] } }), Code.NOT_FOUND, 'unknown device');
  });

  t.test('ping across the veth pair, inside the test namespaces only', async (t) => {
    const r = spawnSync('ip', ['netns', 'exec', guest, 'busybox', 'ping', '-c', '1', '-W', '3', '10.77.0.1'], { encoding: 'utf8' });
    t.equal(r.status, 0, `ping 10.77.0.1 from the guest namespace: ${r.stdout}${r.stderr}`);
  });

  t.test('bad input: unknown MAC, long name', async (t) => {
    await expectCode(t, client.call('UpdateInterface', { interface: { name: 'eth0', hwAddr: '02:00:00:de:ad:00', mtu: 1400 } }), Code.NOT_FOUND, 'unknown MAC');
    await expectCode(t, client.call('UpdateInterface', { interface: { name: 'x'.repeat(16), hwAddr: mac, mtu: 1400 } }), Code.INVALID_ARGUMENT, 'name over IFNAMSIZ');
    const kernel = JSON.parse(ip('-n', guest, '-j', 'link', 'show', 'eth0'))[0];
    t.equal(kernel.mtu, 1400, 'unchanged');
  });

  const iptablesMissing = findIptables('iptables-restore') ? undefined : 'iptables is not installed (scripts/install-deps installs it)';
  t.test('iptables rules round trip through SetIPTables / GetIPTables', { skip: iptablesMissing }, async (t) => {
    const rules = '*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -s 10.77.0.99/32 -j DROP\nCOMMIT\n';
    await client.call('SetIPTables', { is_ipv6: false, data: Buffer.from(rules) });
    const got = Buffer.from((await client.call('GetIPTables', { is_ipv6: false })).data).toString();
    t.match(got, /-A INPUT -s 10\.77\.0\.99\/32 -j DROP/);
    const host = spawnSync('iptables-save', { encoding: 'utf8' }).stdout ?? '';
    t.notMatch(host, /10\.77\.0\.99/, 'not in the host tables');
    const v6 = '*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s fd77::99/128 -j DROP\nCOMMIT\n';
    await client.call('SetIPTables', { is_ipv6: true, data: Buffer.from(v6) });
    t.match(Buffer.from((await client.call('GetIPTables', { is_ipv6: true })).data).toString(), /fd77::99/);
    await expectCode(t, client.call('SetIPTables', { is_ipv6: false, data: Buffer.from('*filter\n-A NOPE -j DROP\nCOMMIT\n') }), Code.INVALID_ARGUMENT, 'bad rules');
  });

  t.test("the Go runtime's veth endpoint sequence replays cleanly", async (t) => {
    // Shapes as network.go generateVCNetworkStructures builds them (Device = Name, PciPath,
    // RawFlags & IFF_NOARP, Dst nil for the default route, Src as a plain address).
    const ifc = await client.call('UpdateInterface', {
      interface: { device: 'eth0', name: 'eth0', IPAddresses: [{ family: 0, address: '10.77.0.2', mask: '24' }], mtu: 1500, raw_flags: 0, hwAddr: mac, pciPath: '' },
    });
    t.equal(ifc.name, 'eth0');
    await client.call('UpdateRoutes', {
      routes: {
        Routes: [
          { dest: '', gateway: '10.77.0.1', device: 'eth0', source: '', scope: 0, family: 0 },
          { dest: '10.77.0.0/24', gateway: '', device: 'eth0', source: '10.77.0.2', scope: 253, family: 0 },
        ],
      },
    });
    await client.call('AddARPNeighbors', {
      neighbors: { ARPNeighbors: [{ toIPAddress: { family: 0, address: '10.77.0.1' }, device: 'eth0', lladdr: '02:77:00:00:00:01', state: 128, flags: 0 }] },
    });
    const r = spawnSync('ip', ['netns', 'exec', guest, 'busybox', 'ping', '-c', '1', '-W', '3', '10.77.0.1'], { encoding: 'utf8' });
    t.equal(r.status, 0, `ping after the replay: ${r.stdout}${r.stderr}`);
  });

  t.test('the machine network is untouched', async (t) => {
    t.equal(hostNetwork(), hostBefore);
  });
}
