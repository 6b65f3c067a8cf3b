// The overlay driver's data plane across "hosts": host netns on one underlay
// bridge, a driver instance per host (no cluster store: the test plays the
// control plane and calls setPeers), sandboxes on different hosts exchanging
// real packets over VXLAN; kernel state read back with ip -j and bridge -j,
// the underlay watched with tcpdump.
import { test, TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { eventually, lab, Lab, runIn } from '../lib/fixture';
import { ping, roundTrip, serve } from '../lib/probe';
import { startDaemon } from '../lib/daemon';
import { IptablesBackend } from '../../src/firewall/iptables';
import { IptablesBridgeFirewall } from '../../drivers/bridge/iptables';
import { underlay, UnderlayHost, UNDERLAY_BRIDGE } from '../lib/underlay';
import { OverlayDriver, OverlayPeer } from '../../drivers/overlay/overlay';
import { OPT } from '../../drivers/overlay/options';
import type { NetworkSpec } from '../../drivers/driver';
import { CnmdError } from '../../src/errors';
import { createLogger } from '../../src/log';
import { NetnsManager } from '../../src/netns/netns';
import { Handle } from '../../src/netlink/handle';
import { stripPrefix } from '../../src/net/addr';

const log = createLogger('silent');
const id = () => randomBytes(32).toString('hex');

interface Host extends UnderlayHost {
  driver: OverlayDriver;
}

async function hosts(t: TestContext, l: Lab, count: number, opts: { v6?: boolean; mtu?: number } = {}) {
  const { sw, hosts } = await underlay((n) => l.ns(n), count, opts);
  const out: Host[] = hosts.map((h) => ({
    ...h,
    driver: new OverlayDriver({ host: h.handle, vtep: () => h.ip, execRoot: path.join(l.root, h.name), log }),
  }));
  l.beforeCleanup(() => out.forEach((h) => h.driver.close()));
  return { sw, hosts: out };
}

function spec(vni: number | string, subnet = '10.77.0.0/24', extra: Partial<NetworkSpec> = {}): NetworkSpec {
  const gw = subnet.replace(/\.0\/(\d+)$/, '.1/$1');
  return {
    id: id(),
    name: `ov${vni}`,
    options: { [OPT.vni]: String(vni) },
    ipv4: [{ pool: subnet, gateway: gw }],
    ipv6: [],
    enableIPv6: false,
    internal: true,
    ...extra,
  };
}

interface Sandbox {
  path: string;
  peer: OverlayPeer;
}

let sbCount = 0;
/** A sandbox on host h joined to the network with `address`; its peer record as the control plane would publish it. */
async function sandbox(l: Lab, h: Host, networkId: string, address: string): Promise<Sandbox> {
  const ns = await l.ns(`sb${++sbCount}`);
  const endpointId = id();
  const { mac } = await h.driver.createEndpoint({ networkId, endpointId, address, options: {} });
  await h.driver.join(networkId, endpointId, { id: ns.id, key: ns.path, handle: ns.handle, ifname: 'eth0' });
  return { path: ns.path, peer: { endpointId, address, mac: mac!, vtep: h.ip } };
}

const ipj = (h: UnderlayHost, ...args: string[]) => JSON.parse(runIn(h.path, 'ip', ['-j', ...args]) || '[]');
const ipOf = (s: Sandbox) => stripPrefix(s.peer.address);

function inNetns(h: Host, networkId: string, cmd: string, args: string[]): any {
  return JSON.parse(runIn(h.driver.describe(networkId)!.netns, cmd, args) || '[]');
}

test('sandboxes on three hosts reach each other over VXLAN through static neighbour and FDB entries', async (t) => {
  const l = await lab(t);
  const {
    sw,
    hosts: [h1, h2, h3],
  } = await hosts(t, l, 3);
  const net = spec(4242);
  for (const h of [h1, h2, h3]) await h.driver.createNetwork(net);
  const a = await sandbox(l, h1, net.id, '10.77.0.2/24');
  const b = await sandbox(l, h2, net.id, '10.77.0.3/24');
  const c = await sandbox(l, h3, net.id, '10.77.0.4/24');
  const peers = [a.peer, b.peer, c.peer];
  for (const h of [h1, h2, h3]) await h.driver.setPeers(net.id, peers);

  // Kernel state on h1, read back independently: one permanent neighbour and FDB entry per remote endpoint.
  const d = h1.driver.describe(net.id)!;
  assert.equal(d.vxlan, 'vx-001092');
  const [vx] = inNetns(h1, net.id, 'ip', ['-j', '-d', 'link', 'show', d.vxlan]);
  assert.equal(vx.linkinfo.info_kind, 'vxlan');
  assert.equal(vx.linkinfo.info_data.id, 4242);
  assert.equal(vx.linkinfo.info_data.port, 4789);
  assert.equal(vx.linkinfo.info_data.local, h1.ip);
  assert.equal(vx.linkinfo.info_data.learning, false);
  assert.equal(vx.linkinfo.info_data.proxy, true);
  assert.equal(vx.master, d.bridge);
  const neigh = inNetns(h1, net.id, 'ip', ['-j', 'neigh', 'show', 'dev', d.vxlan]);
  assert.deepEqual(
    neigh.map((n: any) => [n.dst, n.lladdr, n.state]).sort(),
    [
      [ipOf(b), b.peer.mac, ['PERMANENT']],
      [ipOf(c), c.peer.mac, ['PERMANENT']],
    ].sort(),
  );
  const fdb = inNetns(h1, net.id, 'bridge', ['-j', 'fdb', 'show', 'dev', d.vxlan]).filter((f: any) => f.dst);
  assert.deepEqual(
    fdb.map((f: any) => [f.mac, f.dst, f.state]).sort(),
    [
      [b.peer.mac, h2.ip, 'permanent'],
      [c.peer.mac, h3.ip, 'permanent'],
    ].sort(),
  );
  // The host netns keeps no vxlan device: it is in the network's netns.
  assert.equal(ipj(h1, '-d', 'link', 'show', 'type', 'vxlan').length, 0);

  // Real packets, full mesh, watched on the underlay: UDP 4789 carrying VNI 4242.
  const dump = spawn(
    'nsenter',
    [`--net=${sw.path}`, 'tcpdump', '-i', UNDERLAY_BRIDGE, '-nn', '-l', '-v', 'udp port 4789'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  t.after(() => void (dump.exitCode === null && dump.kill('SIGKILL')));
  let seen = '';
  dump.stdout!.on('data', (x) => (seen += x));
  await new Promise<void>((resolve, reject) => {
    dump.stderr!.on('data', (x) => /listening on/.test(String(x)) && resolve());
    dump.once('exit', (code) => reject(new Error(`tcpdump exited ${code}`)));
  });
  for (const [x, y] of [
    [a, b],
    [a, c],
    [b, c],
    [c, a],
  ])
    assert.ok(ping(x.path, ipOf(y)), `${ipOf(x)} -> ${ipOf(y)}`);
  await eventually(() =>
    assert.match(
      seen,
      new RegExp(
        `${h1.ip.replace(/\./g, '\\.')}\\.\\d+ > ${h2.ip.replace(/\./g, '\\.')}\\.4789: VXLAN.*vni 4242`,
      ),
    ),
  );
  // ARP never crossed the underlay: the vxlan device answered from its neighbour table.
  assert.doesNotMatch(seen, /ARP/);

  // The sandbox's interface: MTU of the IPv4 underlay (1500) minus 50; Docker's MAC convention.
  const [eth0] = JSON.parse(runIn(a.path, 'ip', ['-j', 'link', 'show', 'eth0']));
  assert.equal(eth0.mtu, 1450);
  assert.equal(eth0.address, '02:42:0a:4d:00:02');
  assert.equal(d.mtu, 1450);
});

test('setPeers reconciles: a vanished peer goes, a hand-deleted or altered entry comes back, nothing changes when nothing differs', async (t) => {
  const l = await lab(t);
  const {
    hosts: [h1, h2, h3],
  } = await hosts(t, l, 3);
  const net = spec(4300);
  for (const h of [h1, h2, h3]) await h.driver.createNetwork(net);
  const a = await sandbox(l, h1, net.id, '10.77.0.2/24');
  const b = await sandbox(l, h2, net.id, '10.77.0.3/24');
  const c = await sandbox(l, h3, net.id, '10.77.0.4/24');
  const all = [a.peer, b.peer, c.peer];
  for (const h of [h1, h2, h3]) await h.driver.setPeers(net.id, all);
  const vx = h1.driver.describe(net.id)!.vxlan;
  const fdbOf = () =>
    inNetns(h1, net.id, 'bridge', ['-j', 'fdb', 'show', 'dev', vx]).filter((f: any) => f.dst);
  const neighOf = () => inNetns(h1, net.id, 'ip', ['-j', 'neigh', 'show', 'dev', vx]);
  assert.equal(fdbOf().length, 2);
  assert.deepEqual(await h1.driver.reconcile(net.id), {
    neighAdded: 0,
    neighRemoved: 0,
    fdbAdded: 0,
    fdbRemoved: 0,
  });

  // Deleted by hand (and a neighbour altered by hand): back after the next call.
  runIn(h1.driver.describe(net.id)!.netns, 'bridge', ['fdb', 'del', b.peer.mac, 'dev', vx, 'dst', h2.ip]);
  runIn(h1.driver.describe(net.id)!.netns, 'ip', [
    'neigh',
    'replace',
    ipOf(c),
    'lladdr',
    '02:00:00:00:00:99',
    'dev',
    vx,
    'nud',
    'permanent',
  ]);
  assert.equal(fdbOf().length, 1);
  assert.ok(!ping(a.path, ipOf(b)), 'no FDB entry: no way to b');
  await h1.driver.setPeers(net.id, all);
  assert.deepEqual(
    fdbOf()
      .map((f: any) => [f.mac, f.dst])
      .sort(),
    [
      [b.peer.mac, h2.ip],
      [c.peer.mac, h3.ip],
    ].sort(),
  );
  assert.ok(neighOf().some((n: any) => n.dst === ipOf(c) && n.lladdr === c.peer.mac));
  assert.ok(ping(a.path, ipOf(b)) && ping(a.path, ipOf(c)));

  // c's host vanished from the store: its entries are gone, b's stay.
  await h1.driver.setPeers(net.id, [a.peer, b.peer]);
  assert.deepEqual(
    fdbOf().map((f: any) => f.mac),
    [b.peer.mac],
  );
  assert.deepEqual(
    neighOf().map((n: any) => n.dst),
    [ipOf(b)],
  );
  assert.ok(!ping(a.path, ipOf(c)));
  assert.ok(ping(a.path, ipOf(b)));

  // c moved to another host (its record now names h2's VTEP): the FDB entry follows.
  await h1.driver.setPeers(net.id, [a.peer, b.peer, { ...c.peer, vtep: h2.ip }]);
  assert.ok(fdbOf().some((f: any) => f.mac === c.peer.mac && f.dst === h2.ip));

  // Bad records are refused whole; the kernel is left as it was.
  const before = fdbOf();
  for (const bad of [
    { ...b.peer, mac: 'ff:ff:ff:ff:ff:ff' },
    { ...b.peer, vtep: 'h2' },
    { ...b.peer, address: '10.77.0.300' },
  ]) {
    await assert.rejects(
      h1.driver.setPeers(net.id, [bad]),
      (e: unknown) => e instanceof CnmdError && e.code === 'INVALID_ARGUMENT',
    );
  }
  assert.deepEqual(fdbOf(), before);
});

test('updatePeers writes one change without reading the kernel back; the next setPeers heals what it did not see', async (t) => {
  const l = await lab(t);
  const {
    hosts: [h1, h2, h3],
  } = await hosts(t, l, 3);
  const net = spec(4301);
  for (const h of [h1, h2, h3]) await h.driver.createNetwork(net);
  const a = await sandbox(l, h1, net.id, '10.77.0.2/24');
  const b = await sandbox(l, h2, net.id, '10.77.0.3/24');
  const c = await sandbox(l, h3, net.id, '10.77.0.4/24');
  for (const h of [h2, h3]) await h.driver.setPeers(net.id, [a.peer, b.peer, c.peer]);
  await h1.driver.setPeers(net.id, [a.peer, b.peer]);
  const vx = h1.driver.describe(net.id)!.vxlan;
  const fdbOf = () =>
    inNetns(h1, net.id, 'bridge', ['-j', 'fdb', 'show', 'dev', vx])
      .filter((f: any) => f.dst)
      .map((f: any) => [f.mac, f.dst])
      .sort();
  const neighOf = () =>
    inNetns(h1, net.id, 'ip', ['-j', 'neigh', 'show', 'dev', vx])
      .map((n: any) => [n.dst, n.lladdr, n.state.join()])
      .sort();
  // Dumps of neighbours or FDB entries through any handle while a change is written.
  const dumps = { n: 0 };
  const proto = Handle.prototype as any;
  const orig = { neighList: proto.neighList, fdbList: proto.fdbList };
  for (const m of ['neighList', 'fdbList'] as const)
    proto[m] = function (this: Handle, ...args: unknown[]) {
      dumps.n++;
      return orig[m].apply(this, args);
    };
  t.after(() => Object.assign(proto, orig));

  // Added: its two entries, permanent; c answers.
  await h1.driver.updatePeers(net.id, { put: [c.peer], remove: [] });
  assert.equal(dumps.n, 0, 'no dump for a change');
  assert.deepEqual(
    fdbOf(),
    [
      [b.peer.mac, h2.ip],
      [c.peer.mac, h3.ip],
    ].sort(),
  );
  assert.deepEqual(neighOf(), [
    [ipOf(b), b.peer.mac, 'PERMANENT'],
    [ipOf(c), c.peer.mac, 'PERMANENT'],
  ]);
  assert.ok(ping(a.path, ipOf(c)));

  // Moved to another host's VTEP: the FDB entry follows (one destination, not two).
  await h1.driver.updatePeers(net.id, { put: [{ ...c.peer, vtep: h2.ip }], remove: [] });
  assert.deepEqual(
    fdbOf(),
    [
      [b.peer.mac, h2.ip],
      [c.peer.mac, h2.ip],
    ].sort(),
  );
  await h1.driver.updatePeers(net.id, { put: [c.peer], remove: [] });

  // An entry deleted by hand: a change of another peer does not see it (no dump)...
  runIn(h1.driver.describe(net.id)!.netns, 'bridge', ['fdb', 'del', b.peer.mac, 'dev', vx, 'dst', h2.ip]);
  await h1.driver.updatePeers(net.id, { put: [], remove: [c.peer.endpointId] });
  assert.equal(dumps.n, 0, 'no dump for a change');
  assert.deepEqual(fdbOf(), []);
  assert.deepEqual(neighOf(), [[ipOf(b), b.peer.mac, 'PERMANENT']]);
  assert.ok(!ping(a.path, ipOf(c)));
  // ...the next whole set (the control plane's reconcile loop) puts it back.
  await h1.driver.setPeers(net.id, [a.peer, b.peer]);
  assert.equal(dumps.n, 2, 'a whole set reads the kernel: one neighbour and one FDB dump');
  assert.deepEqual(fdbOf(), [[b.peer.mac, h2.ip]]);
  assert.ok(ping(a.path, ipOf(b)));

  // A bad record refuses the change; the kernel stays as it was.
  await assert.rejects(
    h1.driver.updatePeers(net.id, {
      put: [{ ...c.peer, mac: 'ff:ff:ff:ff:ff:ff' }],
      remove: [b.peer.endpointId],
    }),
    (e: unknown) => e instanceof CnmdError && e.code === 'INVALID_ARGUMENT',
  );
  assert.deepEqual(fdbOf(), [[b.peer.mac, h2.ip]]);
});

test('two overlay networks with the same subnet on the same hosts do not collide', async (t) => {
  const l = await lab(t);
  const {
    hosts: [h1, h2],
  } = await hosts(t, l, 2);
  const red = spec(5001, '10.88.0.0/24');
  const blue = spec(5002, '10.88.0.0/24');
  for (const h of [h1, h2]) for (const n of [red, blue]) await h.driver.createNetwork(n);
  const r1 = await sandbox(l, h1, red.id, '10.88.0.2/24');
  const r2 = await sandbox(l, h2, red.id, '10.88.0.3/24');
  const b1 = await sandbox(l, h1, blue.id, '10.88.0.2/24');
  const b2 = await sandbox(l, h2, blue.id, '10.88.0.3/24');
  for (const h of [h1, h2]) {
    await h.driver.setPeers(red.id, [r1.peer, r2.peer]);
    await h.driver.setPeers(blue.id, [b1.peer, b2.peer]);
  }
  assert.ok(ping(r1.path, '10.88.0.3'));
  assert.ok(ping(b1.path, '10.88.0.3'));
  // Each reached its own network's peer: echo requests counted by each sandbox's kernel (/proc/net/snmp is per netns).
  const echoes = (p: string) => {
    const [head, vals] = runIn(p, 'cat', ['/proc/net/snmp'])
      .split('\n')
      .filter((x) => x.startsWith('Icmp:'));
    return Number(vals.split(/\s+/)[head.split(/\s+/).indexOf('InEchos')]);
  };
  const [red0, blue0] = [echoes(r2.path), echoes(b2.path)];
  assert.ok(ping(r1.path, '10.88.0.3', 3));
  assert.equal(echoes(r2.path), red0 + 3);
  assert.equal(echoes(b2.path), blue0);
  // Separate namespaces, separate devices.
  assert.notEqual(h1.driver.describe(red.id)!.netns, h1.driver.describe(blue.id)!.netns);
  // The same VNI twice on one host is refused, and leaves nothing behind.
  const dup = spec(5001, '10.99.0.0/24');
  await assert.rejects(
    h1.driver.createNetwork(dup),
    (e: unknown) => e instanceof CnmdError && e.code === 'CONFLICT',
  );
  assert.deepEqual(h1.driver.netns.list().length, 2);
});

test('an IPv6 underlay: MTU is the underlay minus 70, packets still cross', async (t) => {
  const l = await lab(t);
  const {
    hosts: [h1, h2],
  } = await hosts(t, l, 2, { v6: true, mtu: 9000 });
  const net = spec(6001);
  for (const h of [h1, h2]) await h.driver.createNetwork(net);
  const a = await sandbox(l, h1, net.id, '10.77.0.2/24');
  const b = await sandbox(l, h2, net.id, '10.77.0.3/24');
  for (const h of [h1, h2]) await h.driver.setPeers(net.id, [a.peer, b.peer]);
  assert.equal(h1.driver.describe(net.id)!.mtu, 8930);
  assert.equal(JSON.parse(runIn(a.path, 'ip', ['-j', 'link', 'show', 'eth0']))[0].mtu, 8930);
  assert.ok(ping(a.path, ipOf(b)));
  // A full-size packet crosses unfragmented (DF set): the MTU is right, not just small enough.
  const r = runIn(a.path, 'ping', ['-c', '1', '-W', '2', '-M', 'do', '-s', String(8930 - 28), ipOf(b)]);
  assert.match(r, /1 received/);
  // The MTU option is the underlay's, as Docker reads it.
  const small = spec(6002, '10.78.0.0/24', { options: { [OPT.vni]: '6002', [OPT.mtu]: '1400' } });
  await h1.driver.createNetwork(small);
  assert.equal(h1.driver.describe(small.id)!.mtu, 1330);
});

test('bad input is refused with what to fix, and leaves no kernel state', async (t) => {
  const l = await lab(t);
  const {
    hosts: [h1],
  } = await hosts(t, l, 1);
  const refused = async (s: NetworkSpec, code: string, msg: RegExp, d = h1.driver) =>
    assert.rejects(
      d.createNetwork(s),
      (e: unknown) => e instanceof CnmdError && e.code === code && msg.test(e.message),
    );
  await refused(spec(0), 'INVALID_ARGUMENT', /VNI 0 is outside 1\.\.16777215/);
  await refused(spec(16777216), 'INVALID_ARGUMENT', /VNI 16777216 is outside 1\.\.16777215/);
  await refused(spec('12,13'), 'INVALID_ARGUMENT', /is not one VNI/);
  await refused({ ...spec(1), options: {} }, 'INVALID_ARGUMENT', /--cluster-store/);
  const noCluster = new OverlayDriver({
    host: h1.handle,
    vtep: () => undefined,
    execRoot: path.join(l.root, 'x'),
    log,
  });
  await refused(spec(7), 'FORBIDDEN', /--cluster-store/, noCluster);
  const wrongVtep = new OverlayDriver({
    host: h1.handle,
    vtep: () => '192.0.2.9',
    execRoot: path.join(l.root, 'y'),
    log,
  });
  await refused(
    spec(8),
    'INVALID_ARGUMENT',
    /192\.0\.2\.9 \(--cluster-advertise\) is not an address of this host/,
    wrongVtep,
  );
  assert.deepEqual(h1.driver.netns.list(), []);
  assert.equal(ipj(h1, '-d', 'link', 'show', 'type', 'vxlan').length, 0);
});

test('restart: a driver restored from the store adopts the kernel state (traffic kept flowing), and sweeps what the store no longer has', async (t) => {
  const l = await lab(t);
  const {
    hosts: [h1, h2],
  } = await hosts(t, l, 2);
  const keep = spec(7001);
  const gone = spec(7002, '10.79.0.0/24');
  for (const n of [keep, gone]) for (const h of [h1, h2]) await h.driver.createNetwork(n);
  const a = await sandbox(l, h1, keep.id, '10.77.0.2/24');
  const b = await sandbox(l, h2, keep.id, '10.77.0.3/24');
  const stale = await sandbox(l, h1, keep.id, '10.77.0.9/24');
  await sandbox(l, h1, gone.id, '10.79.0.2/24');
  for (const h of [h1, h2]) await h.driver.setPeers(keep.id, [a.peer, b.peer]);
  // A crash mid-create left a vxlan device in the host netns.
  await h1.handle.linkAdd({ kind: 'vxlan', name: 'vx-00ffff', vni: 65535, alias: `cnmd:ovnet:${id()}` });
  // h1's daemon dies (its driver is dropped without teardown): traffic keeps flowing on kernel state alone.
  const netnsBefore = h1.driver.describe(keep.id)!.netns;
  h1.driver.close();
  assert.ok(ping(a.path, ipOf(b)));
  const again = new OverlayDriver({
    host: h1.handle,
    vtep: () => h1.ip,
    execRoot: path.join(l.root, h1.name),
    log,
  });
  l.beforeCleanup(() => again.close());
  const ep = (s: Sandbox) => ({
    networkId: keep.id,
    endpointId: s.peer.endpointId,
    address: s.peer.address,
    options: {},
  });
  await again.restore([keep], [ep(a)]);
  const removed = await again.sweepLeaks();
  assert.ok(removed.includes(`netns ov-${gone.id}`), removed.join(','));
  assert.ok(removed.includes('vx-00ffff'));
  assert.deepEqual(again.netns.list(), [`ov-${keep.id}`]);
  assert.equal(again.describe(keep.id)!.netns, netnsBefore);
  assert.equal(ipj(h1, '-d', 'link', 'show', 'type', 'vxlan').length, 0);
  // The endpoint the store no longer has lost its veth; the kept one still works, entries untouched.
  const ports = inNetns({ ...h1, driver: again }, keep.id, 'ip', ['-j', 'link', 'show', 'type', 'veth']);
  assert.equal(ports.length, 1);
  await eventually(() =>
    assert.equal(JSON.parse(runIn(stale.path, 'ip', ['-j', 'link', 'show', 'type', 'veth'])).length, 0),
  );
  assert.deepEqual(await again.reconcile(keep.id), undefined); // no peer set since the restart
  await again.setPeers(keep.id, [a.peer, b.peer]);
  assert.deepEqual(await again.reconcile(keep.id), {
    neighAdded: 0,
    neighRemoved: 0,
    fdbAdded: 0,
    fdbRemoved: 0,
  });
  assert.ok(ping(a.path, ipOf(b)));
  // Nothing known at all: everything goes.
  const empty = new OverlayDriver({
    host: h1.handle,
    vtep: () => h1.ip,
    execRoot: path.join(l.root, h1.name),
    log,
  });
  again.close();
  await empty.restore([], []);
  await empty.sweepLeaks();
  assert.deepEqual(empty.netns.list(), []);
});

// A process that makes and removes overlay networks with endpoints in a loop, printing a line per step.
const CHURN = `
const [dist, hostPath, vtep, execRoot, round] = process.argv.slice(1);
const { OverlayDriver } = require(dist + '/drivers/overlay/overlay.js');
const { Handle } = require(dist + '/src/netlink/handle.js');
const { NetnsManager } = require(dist + '/src/netns/netns.js');
const { createLogger } = require(dist + '/src/log.js');
const host = Handle.at(hostPath);
const d = new OverlayDriver({ host, vtep: () => vtep, execRoot, log: createLogger('silent') });
const sbs = new NetnsManager(execRoot + '/sb');
const hex = (i, n) => i.toString(16).padStart(n, '0');
(async () => {
  for (let i = 0; ; i++) {
    const id = hex(i, 64);
    await d.createNetwork({ id, name: 'n' + i, options: { 'com.docker.network.driver.overlay.vxlanid_list': String(100 + (i % 50)) },
      ipv4: [{ pool: '10.66.0.0/24', gateway: '10.66.0.1/24' }], ipv6: [], enableIPv6: false, internal: true });
    console.log('net');
    const sb = await sbs.create('s' + round + '-' + i);
    await d.createEndpoint({ networkId: id, endpointId: hex(i + 1, 64), address: '10.66.0.2/24', options: {} });
    await d.join(id, hex(i + 1, 64), { id: 's' + round + '-' + i, key: sb.path, handle: sb.handle, ifname: 'eth0' });
    console.log('join');
    await d.setPeers(id, [{ endpointId: 'x', address: '10.66.0.3', mac: '02:42:0a:42:00:03', vtep: '192.168.77.2' }]);
    await d.leave(id, hex(i + 1, 64));
    sb.handle.close();
    await sbs.remove('s' + round + '-' + i);
    await d.deleteNetwork(id);
    console.log('deleted');
  }
})();
`;

test('SIGKILL at any moment of network and endpoint setup or teardown: the next start leaves no netns, vxlan or veth behind', async (t) => {
  const l = await lab(t);
  const {
    hosts: [h1],
  } = await hosts(t, l, 1);
  const dist = path.resolve(__dirname, '..', '..');
  const execRoot = path.join(l.root, 'churn');
  for (let round = 0; round < 4; round++) {
    const child = spawn(process.execPath, ['-e', CHURN, dist, h1.path, h1.ip, execRoot, String(round)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    t.after(() => void (child.exitCode === null && child.kill('SIGKILL')));
    let lines = 0;
    let err = '';
    child.stderr!.on('data', (x) => (err += x));
    // Killed after a varying number of steps, mid-way through the next one.
    const target = 2 + round * 2 + Math.floor(Math.random() * 3);
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (x) => {
        lines += String(x).split('\n').filter(Boolean).length;
        if (lines >= target) setTimeout(() => resolve(), Math.random() * 3);
      });
      child.once('exit', (code) => reject(new Error(`churn exited ${code}: ${err}`)));
    });
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const next = new OverlayDriver({ host: h1.handle, vtep: () => h1.ip, execRoot, log });
    await next.restore([], []);
    await next.sweepLeaks();
    next.close();
    assert.deepEqual(next.netns.list(), [], `round ${round}`);
    await eventually(() => {
      const links = ipj(h1, '-d', 'link', 'show');
      assert.deepEqual(
        links
          .filter((x: any) => x.linkinfo?.info_kind === 'vxlan' || x.ifalias?.startsWith('cnmd:'))
          .map((x: any) => x.ifname),
        [],
      );
      // A sandbox the kill left behind (the controller's to remove) holds no half of a veth either.
      for (const sb of new NetnsManager(path.join(execRoot, 'sb')).list())
        assert.deepEqual(
          JSON.parse(
            runIn(path.join(execRoot, 'sb', 'netns', sb), 'ip', ['-j', 'link', 'show', 'type', 'veth']),
          ),
          [],
        );
    });
  }
});

test('egress through cnmd_gwbridge: a second interface in the sandbox, masqueraded out of the host; internal networks get none', async (t) => {
  const l = await lab(t);
  const {
    sw,
    hosts: [h1],
  } = await underlay((n) => l.ns(n), 1);
  const backend = new IptablesBackend({ netns: h1.path, log });
  const firewall = new IptablesBridgeFirewall(log, { backend, userlandProxy: false });
  const driver = new OverlayDriver({
    host: h1.handle,
    vtep: () => h1.ip,
    execRoot: path.join(l.root, 'h1'),
    gateway: { firewall },
    log,
  });
  l.beforeCleanup(() => {
    driver.close();
    backend.close();
  });
  runIn(h1.path, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  // "The internet": an address on the underlay switch, which knows no overlay or gwbridge subnet.
  await sw.handle.addrAdd(UNDERLAY_BRIDGE, '192.168.77.254/24');
  await serve(t, sw.path, 'tcp', 7100);
  const net = spec(8001, '10.77.0.0/24', { internal: false });
  const internal = spec(8002, '10.78.0.0/24');
  await driver.createNetwork(net);
  await driver.createNetwork(internal);
  const ns = await l.ns('sbgw');
  const join = async (n: NetworkSpec, address: string) => {
    const endpointId = id();
    await driver.createEndpoint({ networkId: n.id, endpointId, address, options: {} });
    return {
      endpointId,
      info: await driver.join(n.id, endpointId, {
        id: ns.id,
        key: ns.path,
        handle: ns.handle,
        ifname: n === net ? 'eth0' : 'eth1',
      }),
    };
  };
  const a = await join(net, '10.77.0.2/24');
  const subnet = driver.gatewaySubnet()!;
  // The first local predefined /16 no route of the host overlaps.
  assert.equal(subnet, '172.17.0.0/16');
  assert.equal(a.info.gatewayInterface, 'gwbridge');
  assert.equal(a.info.gateway, subnet.replace(/\.0\/\d+$/, '.1'));
  assert.equal(a.info.disableGatewayService, false);
  // As the controller does with that answer.
  await ns.handle.routeReplace({ gateway: a.info.gateway!, dev: 'gwbridge' });
  const seen = roundTrip(ns.path, 'tcp', '192.168.77.254', 7100);
  assert.ok(seen.ok, 'sandbox -> outside');
  assert.equal(seen.seenFrom, h1.ip, 'masqueraded to the host address');
  const nat = runIn(h1.path, 'iptables-save', ['-t', 'nat']);
  assert.match(nat, new RegExp(`-s ${subnet.replace(/\./g, '\\.')} ! -o cnmd_gwbridge -j MASQUERADE`));
  // A second overlay network (internal) in the same sandbox: no second gwbridge interface, no gateway.
  const b = await join(internal, '10.78.0.2/24');
  assert.equal(b.info.gateway, undefined);
  assert.equal(b.info.disableGatewayService, true);
  const ports = ipj(h1, 'link', 'show', 'master', 'cnmd_gwbridge');
  assert.equal(ports.length, 1);
  // The interface goes with the sandbox's last overlay endpoint that used it.
  await driver.leave(net.id, a.endpointId);
  assert.equal(ipj(h1, 'link', 'show', 'master', 'cnmd_gwbridge').length, 0);
  assert.equal(JSON.parse(runIn(ns.path, 'ip', ['-j', 'link', 'show', 'type', 'veth'])).length, 1);
});

test('the daemon knows the overlay driver, and without a cluster store refuses an overlay network naming --cluster-store', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const r = await d.request('POST', '/networks/create', { Name: 'web', Driver: 'overlay' });
  assert.equal(r.status, 403, JSON.stringify(r.body));
  assert.match(r.body.message, /overlay networks need a cluster store; start cnmd with --cluster-store/);
  const list = await d.request('GET', '/networks');
  assert.ok(!list.body.some((n: any) => n.Name === 'web'));
  assert.equal(d.host.ipj('-d', 'link', 'show', 'type', 'vxlan').length, 0);
});

test('dual stack: IPv6 endpoints reach each other across hosts through their static neighbour entries', async (t) => {
  const l = await lab(t);
  const {
    hosts: [h1, h2],
  } = await hosts(t, l, 2);
  const net = spec(9001, '10.77.0.0/24', {
    enableIPv6: true,
    ipv6: [{ pool: 'fd00:9001::/64', gateway: 'fd00:9001::1/64' }],
  });
  for (const h of [h1, h2]) await h.driver.createNetwork(net);
  const join = async (h: Host, v4: string, v6: string) => {
    const ns = await l.ns(`six${v4.split('.')[3].split('/')[0]}`);
    const endpointId = id();
    const { mac } = await h.driver.createEndpoint({
      networkId: net.id,
      endpointId,
      address: v4,
      addressIPv6: v6,
      options: {},
    });
    await h.driver.join(net.id, endpointId, { id: ns.id, key: ns.path, handle: ns.handle, ifname: 'eth0' });
    return { path: ns.path, peer: { endpointId, address: v4, address6: v6, mac: mac!, vtep: h.ip } };
  };
  const a = await join(h1, '10.77.0.2/24', 'fd00:9001::2/64');
  const b = await join(h2, '10.77.0.3/24', 'fd00:9001::3/64');
  for (const h of [h1, h2]) await h.driver.setPeers(net.id, [a.peer, b.peer]);
  const neigh = inNetns(h1, net.id, 'ip', [
    '-j',
    '-6',
    'neigh',
    'show',
    'dev',
    h1.driver.describe(net.id)!.vxlan,
  ]);
  assert.deepEqual(
    neigh.map((n: any) => [n.dst, n.lladdr]),
    [['fd00:9001::3', b.peer.mac]],
  );
  // Bounded wait: in one lane run under load (load average ~18) the first IPv6 echo timed out; the next went through.
  await eventually(() => assert.ok(ping(a.path, 'fd00:9001::3'), 'IPv6 across hosts'), 5000);
  assert.ok(ping(b.path, '10.77.0.2'), 'IPv4 the other way');
});
