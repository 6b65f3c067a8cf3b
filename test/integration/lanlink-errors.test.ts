// macvlan/ipvlan networks refused: every option value wrong in turn, parents
// that cannot carry the network, kernel types this kernel lacks (IPVLAN,
// VLAN_8021Q). Each refusal names what to fix, and leaves the host's links and
// the daemon's networks as they were.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lab, lanParent, runIn } from '../lib/fixture';
import { RunningDaemon, startDaemon } from '../lib/daemon';
import { ping } from '../lib/probe';

async function ok(d: RunningDaemon, method: string, p: string, body?: unknown): Promise<any> {
  const r = await d.request(method, p, body);
  assert.ok(r.status < 300, `${method} ${p} -> ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** What a refusal must leave untouched: the host's links (with their kinds and aliases) and the networks. */
async function snapshot(d: RunningDaemon) {
  const links = d.host
    .ipj('-d', 'link', 'show')
    .map((x: any) => `${x.ifname}:${x.linkinfo?.info_kind ?? ''}:${x.ifalias ?? ''}`)
    .sort();
  const nets = (await ok(d, 'GET', '/networks')).map((n: any) => n.Name).sort();
  return { links, nets };
}

async function refused(
  d: RunningDaemon,
  body: Record<string, unknown>,
  status: number,
  message: RegExp,
): Promise<void> {
  const before = await snapshot(d);
  const r = await d.request('POST', '/networks/create', { Name: 'n', ...body });
  assert.equal(r.status, status, `${JSON.stringify(body)} -> ${r.status} ${JSON.stringify(r.body)}`);
  assert.match(r.body.message, message);
  assert.deepEqual(await snapshot(d), before, `${JSON.stringify(body)} left something behind`);
}

const subnet = { IPAM: { Config: [{ Subnet: '192.168.60.0/24' }] } };

test('every option value wrong in turn is refused naming the option; nothing is made', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  lanParent(d.host);
  const mv = (o: Record<string, string>) => ({
    Driver: 'macvlan',
    Options: { parent: 'lan0', ...o },
    ...subnet,
  });
  const iv = (o: Record<string, string>) => ({
    Driver: 'ipvlan',
    Options: { parent: 'lan0', ...o },
    ...subnet,
  });
  const cases: [Record<string, unknown>, number, RegExp][] = [
    [
      mv({ macvlan_mode: 'bridged' }),
      400,
      /option macvlan_mode: "bridged" is not a macvlan mode \(use bridge, private, vepa, passthru\)/,
    ],
    [mv({ macvlan_mode: 'BRIDGE' }), 400, /option macvlan_mode/],
    [iv({ ipvlan_mode: 'l4' }), 400, /option ipvlan_mode: "l4" is not an ipvlan mode \(use l2, l3, l3s\)/],
    [
      iv({ ipvlan_flag: 'public' }),
      400,
      /option ipvlan_flag: "public" is not an ipvlan flag \(use bridge, private, vepa\)/,
    ],
    [mv({ parent: 'no/slash' }), 400, /no\/slash/],
    [mv({ parent: 'averyveryverylongname' }), 400, /averyveryverylongname/],
    [mv({ parent: 'lan0.0' }), 400, /option parent: "lan0.0" names VLAN 0; an 802.1Q id is 1-4094/],
    [mv({ parent: 'lan0.4095' }), 400, /option parent: "lan0.4095" names VLAN 4095/],
    [mv({ parent: 'lan0.010' }), 400, /option parent: "lan0.010" names VLAN 010/],
    [
      mv({ 'com.docker.network.driver.mtu': 'big' }),
      400,
      /option com.docker.network.driver.mtu: "big" is not an MTU/,
    ],
    [mv({ 'com.docker.network.driver.mtu': '67' }), 400, /option com.docker.network.driver.mtu: "67"/],
    [
      mv({ 'com.docker.network.driver.mtu': '9000' }),
      400,
      /option com.docker.network.driver.mtu: 9000 is above the MTU of parent lan0 \(1500\); give at most 1500/,
    ],
    [
      mv({ 'cnmd.macvlan.host_access': 'yes' }),
      400,
      /option cnmd.macvlan.host_access: "yes" is not a boolean/,
    ],
    [
      mv({ 'cnmd.macvlan.host_access': 'true' }),
      400,
      /option cnmd.macvlan.host_access: give the host's address on the network with --aux-address host=/,
    ],
    [
      mv({ 'cnmd.macvlan.hostaccess': 'true' }),
      400,
      /option cnmd.macvlan.hostaccess is not a macvlan option/,
    ],
    [
      mv({ macvlan_mode: 'private', 'cnmd.macvlan.host_access': 'true' }),
      400,
      /option cnmd.macvlan.host_access: private mode/,
    ],
    [
      mv({ 'cnmd.network.ipam_gateway': 'maybe' }),
      400,
      /option cnmd.network.ipam_gateway: "maybe" is not a boolean/,
    ],
    [
      {
        ...iv({ ipvlan_mode: 'l3' }),
        IPAM: { Config: [{ Subnet: '192.168.60.0/24', Gateway: '192.168.60.1' }] },
      },
      400,
      /--gateway 192.168.60.1: ipvlan_mode l3 routes through the device without a gateway; remove it/,
    ],
    [mv({ parent: 'eth9' }), 404, /parent eth9 does not exist: give an existing interface with -o parent=/],
    [
      mv({ parent: 'eth9.10' }),
      404,
      /parent eth9.10 does not exist, and neither does eth9 to make it on as VLAN 10/,
    ],
  ];
  for (const [body, status, message] of cases) await refused(d, body, status, message);
  // A good network after all that: nothing stale blocks it.
  await ok(d, 'POST', '/networks/create', { Name: 'good', ...mv({}) });
});

test('parents that cannot carry a network: down, not Ethernet (lo, tun), a bridge port, the other kind, passthru', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  for (const p of ['down0', 'port0', 'shared0'])
    d.host.run('ip', ['link', 'add', p, 'type', 'veth', 'peer', 'name', `${p}p`]);
  d.host.run('ip', ['link', 'add', 'br9', 'type', 'bridge']);
  d.host.run('ip', ['link', 'set', 'port0', 'master', 'br9', 'up']);
  d.host.run('ip', ['link', 'set', 'shared0', 'up']);
  const mv = (parent: string, o: Record<string, string> = {}) => ({
    Driver: 'macvlan',
    Options: { parent, ...o },
    ...subnet,
  });
  await refused(d, mv('down0'), 409, /parent down0 is down: bring it up \(ip link set down0 up\)/);
  // Not Ethernet: the kernel refuses children at every join (EINVAL), so the network is refused at create.
  await refused(
    d,
    mv('lo'),
    400,
    /parent lo is the loopback device: macvlan children need an Ethernet device/,
  );
  d.host.run('ip', ['tuntap', 'add', 'tun9', 'mode', 'tun']);
  d.host.run('ip', ['link', 'set', 'tun9', 'up']);
  await refused(
    d,
    { ...mv('tun9'), Driver: 'ipvlan' },
    400,
    /parent tun9 is a tun device without an Ethernet address: ipvlan children need an Ethernet device/,
  );
  // cnmd's own links: an isolated network's parent and its veth peer, the default bridge.
  const iso = await ok(d, 'POST', '/networks/create', {
    Name: 'iso',
    Driver: 'macvlan',
    IPAM: { Config: [{ Subnet: '192.168.59.0/24' }] },
  });
  // The peer exists where the kernel lacks dummy links (the isolated parent is then a veth pair).
  const peer = `dp-${iso.Id.slice(0, 12)}`;
  const hasPeer = d.host.ipj('link', 'show').some((x: any) => x.ifname === peer);
  for (const p of [`dm-${iso.Id.slice(0, 12)}`, 'cnm0', ...(hasPeer ? [peer] : [])])
    await refused(d, mv(p), 409, new RegExp(`parent ${p} is a link cnmd made for another network \\(cnmd:`));
  await ok(d, 'DELETE', '/networks/iso');
  await refused(
    d,
    mv('port0'),
    409,
    /parent port0 is a port of bridge br9, which takes all its traffic: use br9 as the parent/,
  );
  // A link of the other kind made by someone else on the parent.
  d.host.run('ip', ['link', 'add', 'usermv', 'link', 'shared0', 'type', 'macvlan']);
  await refused(
    d,
    { ...mv('shared0'), Driver: 'ipvlan' },
    409,
    /parent shared0 carries the macvlan link usermv; macvlan and ipvlan cannot share a parent/,
  );
  d.host.run('ip', ['link', 'del', 'usermv']);
  // cnmd's own macvlan network on the parent: an ipvlan network there is refused.
  await ok(d, 'POST', '/networks/create', { Name: 'mv', ...mv('shared0') });
  await refused(
    d,
    { ...mv('shared0'), Driver: 'ipvlan', IPAM: { Config: [{ Subnet: '192.168.61.0/24' }] } },
    409,
    /parent shared0 carries macvlan network [0-9a-f]{12}; macvlan and ipvlan networks cannot share a parent/,
  );
  await refused(
    d,
    { ...mv('shared0', { macvlan_mode: 'passthru' }), IPAM: { Config: [{ Subnet: '192.168.62.0/24' }] } },
    409,
    /passthru mode takes the whole parent, and shared0 already carries network/,
  );
});

test('several networks on one parent; the same subnet on two parents; the endpoint joins with the parent down', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  for (const p of ['lan0', 'lan1']) {
    d.host.run('ip', ['link', 'add', p, 'type', 'veth', 'peer', 'name', `${p}p`]);
    d.host.run('ip', ['link', 'set', p, 'up']);
    d.host.run('ip', ['link', 'set', `${p}p`, 'up']);
  }
  const net = (name: string, parent: string, sn: string) =>
    ok(d, 'POST', '/networks/create', {
      Name: name,
      Driver: 'macvlan',
      Options: { parent },
      IPAM: { Config: [{ Subnet: sn }] },
    });
  await net('a', 'lan0', '192.168.70.0/24');
  await net('b', 'lan0', '192.168.71.0/24');
  // The same subnet on another parent (moby#46438), not on the same one.
  await net('c', 'lan1', '192.168.70.0/24');
  const clash = await d.request('POST', '/networks/create', {
    Name: 'd',
    Driver: 'macvlan',
    Options: { parent: 'lan0' },
    IPAM: { Config: [{ Subnet: '192.168.70.0/25' }] },
  });
  assert.equal(clash.status, 403, JSON.stringify(clash.body));
  assert.match(clash.body.message, /overlaps/);
  // moby#49630: the parent down does not stop a sandbox from joining.
  d.host.run('ip', ['link', 'set', 'lan0', 'down']);
  await ok(d, 'POST', '/sandboxes', { Name: 's1', Networks: [{ Network: 'a' }] });
  await ok(d, 'POST', '/sandboxes', { Name: 's2', Networks: [{ Network: 'b' }] });
  const s1 = await ok(d, 'GET', '/sandboxes/s1');
  const eth0 = JSON.parse(runIn(s1.SandboxKey, 'ip', ['-j', '-d', 'link', 'show', 'eth0']))[0];
  assert.equal(eth0.linkinfo.info_kind, 'macvlan');
  assert.ok(eth0.flags.includes('UP'), 'the child is up, waiting for its parent');
  d.host.run('ip', ['link', 'set', 'lan0', 'up']);
  await ok(d, 'POST', '/sandboxes', { Name: 's3', Networks: [{ Network: 'a' }] });
  const s3 = await ok(d, 'GET', '/sandboxes/s3');
  assert.ok(ping(s3.SandboxKey, s1.Networks.a.IPAddress), 's3 -> s1 once the parent is up');
});

test('this kernel lacks IPVLAN and VLAN_8021Q: KERNEL_FEATURE_MISSING naming the option, nothing made', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  d.host.run('ip', ['link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'lan0p']);
  d.host.run('ip', ['link', 'set', 'lan0', 'up']);
  const probe = (kind: string) =>
    runIn(d.host.path, 'sh', [
      '-c',
      `ip link add t0 link lan0 type ${kind} ${kind === 'vlan' ? 'id 5' : ''} 2>&1; ip link del t0 2>/dev/null; true`,
    ]);
  if (
    !/Unknown device type|not supported/i.test(probe('ipvlan')) ||
    !/Unknown device type|not supported/i.test(probe('vlan'))
  )
    assert.fail(
      'this kernel has ipvlan or vlan: this test is for kernels without them (the kernel lane covers them)',
    );
  await refused(
    d,
    { Driver: 'ipvlan', Options: { parent: 'lan0' }, ...subnet },
    400,
    /this kernel lacks the "ipvlan" link type \(CONFIG_IPVLAN\)/,
  );
  await refused(d, { Driver: 'ipvlan', ...subnet }, 400, /CONFIG_IPVLAN/);
  await refused(
    d,
    { Driver: 'macvlan', Options: { parent: 'lan0.10' }, ...subnet },
    400,
    /this kernel lacks the "vlan" link type \(CONFIG_VLAN_8021Q\)/,
  );
});
