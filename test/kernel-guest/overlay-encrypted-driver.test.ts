// Runs inside Debian's kernel under qemu (the kernel lane): the overlay
// driver with `-o encrypted` on three "hosts" (netns on one underlay bridge),
// the test playing the control plane (setPeers, setKeyRing). Read back with
// independent tools: `ip xfrm state/policy` (iproute2 6.1 prints xfrm as text
// only, even with -j), iptables-save and its counters, tcpdump on the
// underlay, ping between sandboxes, a forged cleartext VXLAN packet.
import { test, TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { warmGcm } from '../lib/kernel';
import { eventually, lab, Lab, Ns, runIn } from '../lib/fixture';
import { ping } from '../lib/probe';
import { underlay, UnderlayHost, UNDERLAY_BRIDGE } from '../lib/underlay';
import { OverlayDriver, OverlayPeer } from '../../drivers/overlay/overlay';
import { OPT } from '../../drivers/overlay/options';
import { ENC_MARK, ENC_REQID, RingKeys } from '../../drivers/overlay/encryption';
import type { NetworkSpec } from '../../drivers/driver';
import { IptablesBackend } from '../../src/firewall/iptables';
import { clusterSecret } from '../../src/cluster/keys';
import { createLogger } from '../../src/log';
import { stripPrefix } from '../../src/net/addr';

const log = createLogger('silent');
const id = () => randomBytes(32).toString('hex');
const secret = clusterSecret(Buffer.alloc(32, 7));
const hex = (n: number) => `0x${n.toString(16).padStart(8, '0')}`;

interface Host extends UnderlayHost<Ns> {
  driver: OverlayDriver;
}

/** Host h's driver (a second one on the same roots is the daemon restarted). */
function driverFor(l: Lab, h: UnderlayHost<Ns>): OverlayDriver {
  return new OverlayDriver({
    host: h.handle,
    vtep: () => h.ip,
    execRoot: path.join(l.root, h.name),
    firewall: new IptablesBackend({ netns: h.path, log, verify: true }),
    clusterSecret: secret,
    onSendStateLost: (peers) => lost.push(peers),
    log,
  });
}

async function hosts(t: TestContext, l: Lab, count: number): Promise<{ sw: Ns; hosts: Host[] }> {
  const { sw, hosts } = await underlay((n) => l.ns(n), count);
  const out: Host[] = hosts.map((h) => {
    h.run('sysctl', ['-qw', 'net.ipv6.conf.all.disable_ipv6=1']);
    return { ...h, driver: driverFor(l, h) };
  });
  l.beforeCleanup(() => out.forEach((h) => h.driver.close()));
  return { sw, hosts: out };
}

function spec(vni: number, subnet: string, encrypted: boolean): NetworkSpec {
  return {
    id: id(),
    name: `ov${vni}`,
    options: { [OPT.vni]: String(vni), ...(encrypted ? { [OPT.encrypted]: '' } : {}) },
    ipv4: [{ pool: subnet, gateway: subnet.replace(/\.0\/24$/, '.1/24') }],
    ipv6: [],
    enableIPv6: false,
    internal: true,
  };
}

/** What the drivers reported as lost send SAs. */
const lost: string[][] = [];

let sbCount = 0;
async function sandbox(l: Lab, h: Host, networkId: string, address: string) {
  const ns = await l.ns(`sb${++sbCount}`);
  ns.run('sysctl', ['-qw', 'net.ipv6.conf.all.disable_ipv6=1']);
  const endpointId = id();
  const { mac } = await h.driver.createEndpoint({ networkId, endpointId, address, options: {} });
  await h.driver.join(networkId, endpointId, { id: ns.id, key: ns.path, handle: ns.handle, ifname: 'eth0' });
  const peer: OverlayPeer = { endpointId, address, mac: mac!, vtep: h.ip };
  return { path: ns.path, peer, ip: stripPrefix(address)! };
}

/** `ip xfrm state` of a host, one entry per SA: "src>dst spi reqid". */
function states(h: { path: string }): string[] {
  const text = runIn(h.path, 'ip', ['xfrm', 'state']);
  return [
    ...text.matchAll(/^src (\S+) dst (\S+)\n\s+proto esp spi (0x[0-9a-f]+) reqid (\d+) mode transport/gm),
  ]
    .map((m) => `${m[1]}>${m[2]} ${m[3]} ${hex(Number(m[4]))}`)
    .sort();
}

/** `ip xfrm policy` of a host's outbound policies on UDP: "src>dst :port action priority mark". */
function policies(h: { path: string }): string[] {
  const text = runIn(h.path, 'ip', ['xfrm', 'policy']);
  return (
    [
      ...text.matchAll(
        /^src (\S+) dst (\S+) proto udp dport (\d+)\s*\n\s+dir out (?:action (\w+) )?priority (\d+)[^\n]*\n\s+mark (\S+)/gm,
      ),
    ]
      // iproute2 prints the action only when it is not allow.
      .map((m) => `${m[1]}>${m[2]} :${m[3]} ${m[4] ?? 'allow'} ${m[5]} ${m[6]}`)
      .sort()
  );
}

/** Packets counted by the rule of CNMD-ENCRYPTED (filter) that drops cleartext VXLAN. */
function dropCount(h: { path: string }): number {
  const out = runIn(h.path, 'iptables', ['-t', 'filter', '-L', 'CNMD-ENCRYPTED', '-v', '-x', '-n']);
  const line = out.split('\n').find((l) => /DROP/.test(l) && /policy match dir in pol none/.test(l));
  assert.ok(line, `no drop rule in\n${out}`);
  return Number(line.trim().split(/\s+/)[0]);
}

/** A VXLAN packet in clear from `from` to `to`:4789 with VNI `vni`, carrying an ICMP echo to (mac, ip). */
function forge(
  from: { path: string },
  to: string,
  vni: number,
  mac: string,
  ip: string,
  count: number,
): void {
  const script = `
const dgram = require('dgram');
const vni = ${vni};
const dst = Buffer.from('${mac}'.split(':').map((x) => parseInt(x, 16)));
const ip = '${ip}'.split('.').map(Number);
const vx = Buffer.from([0x08, 0, 0, 0, (vni >> 16) & 255, (vni >> 8) & 255, vni & 255, 0]);
const eth = Buffer.concat([dst, Buffer.from([2, 0x42, 1, 2, 3, 4, 8, 0])]);
const icmp = Buffer.from([8, 0, 0, 0, 0, 1, 0, 1]);
let s = 0; for (let i = 0; i < icmp.length; i += 2) s += icmp.readUInt16BE(i);
s = (s & 0xffff) + (s >> 16); icmp.writeUInt16BE(~s & 0xffff, 2);
const iph = Buffer.from([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 10, 99, 99, 99, ...ip]);
s = 0; for (let i = 0; i < 20; i += 2) s += iph.readUInt16BE(i);
s = (s & 0xffff) + (s >> 16); iph.writeUInt16BE(~s & 0xffff, 10);
const pkt = Buffer.concat([vx, eth, iph, icmp]);
const sock = dgram.createSocket('udp4');
let n = 0;
const next = () => (n++ < ${count} ? sock.send(pkt, 4789, '${to}', next) : sock.close());
next();`;
  runIn(from.path, process.execPath, ['-e', script]);
}

/** The rx packet count of a vxlan device in a network's netns. */
function vxlanRx(h: Host, networkId: string): number {
  const d = h.driver.describe(networkId)!;
  const [l] = JSON.parse(runIn(d.netns, 'ip', ['-j', '-s', 'link', 'show', d.vxlan]));
  return l.stats64.rx.packets;
}

test('-o encrypted: per-peer ESP SAs with cnmd reqid/mark, guard and drop rules before the vxlan device, ESP only on the wire, forged cleartext dropped, plain network unaffected, removal leaves nothing', async (t) => {
  const l = await lab(t);
  const {
    sw,
    hosts: [h1, h2, h3],
  } = await hosts(t, l, 3);
  warmGcm(h1, h1.ip, h2.ip);

  // Without a ring, an encrypted network is refused (never made in clear).
  const enc = spec(4200, '10.42.0.0/24', true);
  await assert.rejects(h1.driver.checkNetwork(enc.name, enc.options), /key ring has not been read/);

  const ring: RingKeys = { keys: new Map([[7, randomBytes(32)]]), primary: 7 };
  for (const h of [h1, h2]) await h.driver.setKeyRing(ring);
  const plain = spec(4201, '10.43.0.0/24', false);
  for (const h of [h1, h2]) {
    await h.driver.createNetwork(enc);
    await h.driver.createNetwork(plain);
  }
  // The guard and the VNI's rules exist as soon as the network does (before any peer).
  const mark = `0x${ENC_MARK.value.toString(16)}/0xffffffff`;
  assert.deepEqual(policies(h1), [`${h1.ip}/32>0.0.0.0/0 :4789 block 65536 ${mark}`]);
  const save = h1.run('iptables-save', []);
  assert.match(save, /-A INPUT -j CNMD-ENCRYPTED/);
  assert.match(
    save,
    /-A CNMD-ENCRYPTED -p udp -m udp --dport 4789 -m u32 --u32 "0x0>>0x16&0x3c@0xc>>0x8=0x1068" -m policy --dir in --pol none -j DROP/,
  );
  assert.match(
    save,
    /-A CNMD-ENCRYPTED -p udp -m udp --dport 4789 -m u32 --u32 "0x0>>0x16&0x3c@0xc>>0x8=0x1068" -j MARK --set-xmark 0xc4d0e5c\/0xffffffff/,
  );
  assert.doesNotMatch(save, /=0x1069/, 'the plain VNI has no rule');
  // ESP's overhead comes off the encrypted network's MTU only (1500 - 50 - 26, down to a multiple of 4).
  assert.equal(h1.driver.describe(enc.id)!.mtu, 1424);
  assert.equal(h1.driver.describe(plain.id)!.mtu, 1450);

  const a = await sandbox(l, h1, enc.id, '10.42.0.2/24');
  const b = await sandbox(l, h2, enc.id, '10.42.0.3/24');
  const pa = await sandbox(l, h1, plain.id, '10.43.0.2/24');
  const pb = await sandbox(l, h2, plain.id, '10.43.0.3/24');
  for (const h of [h1, h2]) {
    await h.driver.setPeers(enc.id, [a.peer, b.peer]);
    await h.driver.setPeers(plain.id, [pa.peer, pb.peer]);
  }
  // One SA per direction per peer with cnmd's reqid; the policy to the peer and the guard, both marked.
  const reqid = hex(ENC_REQID);
  const sa = (s: string, d: string) =>
    new RegExp(`^${s.replace(/\./g, '\\.')}>${d.replace(/\./g, '\\.')} 0x[0-9a-f]+ ${reqid}$`);
  const st1 = states(h1);
  assert.equal(st1.length, 2, st1.join('\n'));
  assert.match(
    st1.find((x) => x.startsWith(`${h1.ip}>`))!,
    sa(h1.ip, h2.ip),
  );
  assert.match(
    st1.find((x) => x.startsWith(`${h2.ip}>`))!,
    sa(h2.ip, h1.ip),
  );
  assert.deepEqual(
    policies(h1),
    [
      `${h1.ip}/32>${h2.ip}/32 :4789 allow 0 ${mark}`,
      `${h1.ip}/32>0.0.0.0/0 :4789 block 65536 ${mark}`,
    ].sort(),
  );
  assert.match(
    runIn(h1.path, 'ip', ['xfrm', 'state']),
    /aead rfc4106\(gcm\(aes\)\) 0x[0-9a-f]{72} 128[\s\S]*flag esn|flag esn[\s\S]*aead rfc4106/,
  );

  // On the wire (the underlay switch): ESP for the encrypted network, plain VXLAN only for VNI 4201.
  const dump = spawn(
    'nsenter',
    [
      `--net=${sw.path}`,
      'tcpdump',
      '-i',
      UNDERLAY_BRIDGE,
      '-nn',
      '-l',
      '-v',
      '--immediate-mode',
      'esp or udp port 4789',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  t.after(() => void (dump.exitCode === null && dump.kill('SIGKILL')));
  let seen = '';
  dump.stdout!.on('data', (x) => (seen += x));
  await new Promise<void>((resolve, reject) => {
    dump.stderr!.on('data', (x) => /listening on/.test(String(x)) && resolve());
    dump.once('exit', (code) => reject(new Error(`tcpdump exited ${code}`)));
  });
  assert.ok(ping(a.path, b.ip, 3), 'encrypted network: a -> b');
  assert.ok(ping(pa.path, pb.ip, 3), 'plain network: pa -> pb');
  await eventually(() => {
    assert.match(seen, /ESP\(spi=0x[0-9a-f]+,seq=0x\d+\)/);
    assert.match(seen, /VXLAN.*vni 4201/);
  });
  assert.doesNotMatch(seen, /vni 4200/, 'no cleartext VXLAN of the encrypted network on the wire');

  // A forged cleartext VXLAN packet for the encrypted VNI (from h3, which has no SA) is dropped before
  // the vxlan device; the same for the plain VNI reaches its device (the drop is per VNI).
  const drops = dropCount(h2);
  const rxEnc = vxlanRx(h2, enc.id);
  const rxPlain = vxlanRx(h2, plain.id);
  const bMac = b.peer.mac;
  forge(h3, h2.ip, 4200, bMac, b.ip, 5);
  forge(h3, h2.ip, 4201, pb.peer.mac, pb.ip, 5);
  await eventually(() => assert.equal(dropCount(h2), drops + 5));
  await eventually(() => assert.ok(vxlanRx(h2, plain.id) >= rxPlain + 5, 'the plain VNI got them'));
  assert.equal(vxlanRx(h2, enc.id), rxEnc, 'the encrypted VNI got none of them');

  // A state deleted by hand comes back with the next reconcile (as the FDB does); meanwhile the
  // policy has no SA: packets are dropped, never sent in clear.
  const tx = st1.find((x) => x.startsWith(`${h1.ip}>`))!.split(' ')[1];
  h1.run('ip', [
    'xfrm',
    'state',
    'delete',
    'src',
    h1.ip,
    'dst',
    h2.ip,
    'proto',
    'esp',
    'spi',
    tx,
    'mark',
    String(ENC_MARK.value),
    'mask',
    '0xffffffff',
  ]);
  assert.equal(states(h1).length, 1);
  assert.ok(!ping(a.path, b.ip, 1), 'no send SA: no way to b');
  await h1.driver.reconcile(enc.id);
  assert.deepEqual(states(h1), st1);
  // The same SPI and key with its sequence restarted: b's anti-replay window drops it (counted), and the
  // driver asks for a rotation, which gives new SPIs. Played here as the ring agent would: key 8 for
  // receive on both, then the send key on both, then 7 dropped.
  assert.deepEqual(lost, [[h2.ip]]);
  ping(a.path, b.ip, 1);
  const rxB = await h2.handle.xfrmStateGet({ dst: h2.ip, spi: Number(tx), proto: 'esp' });
  assert.ok(
    rxB.stats.replay + rxB.stats.outOfWindow > 0,
    `b counted replays: ${JSON.stringify(rxB.stats, (_k, v) => (typeof v === 'bigint' ? String(v) : v))}`,
  );
  // b sees it too (its receive SA counts replays) and asks for the rotation as well.
  await h2.driver.reconcile(enc.id);
  assert.deepEqual(lost.at(-1), [h1.ip]);
  ring.keys.set(8, randomBytes(32));
  for (const h of [h1, h2]) await h.driver.setKeyRing(ring);
  ring.primary = 8;
  for (const h of [h1, h2]) await h.driver.setKeyRing(ring);
  assert.ok(ping(a.path, b.ip, 2), 'back after the rotation');
  ring.keys.delete(7);
  for (const h of [h1, h2]) await h.driver.setKeyRing(ring);
  assert.equal(states(h1).length, 2);
  assert.ok(ping(a.path, b.ip, 2), 'after the old key went');
  // (h3's forged packets are on the wire, in clear: from .3; nothing between h1 and h2.)
  assert.doesNotMatch(seen, /192\.168\.77\.[12]\.\d+ > 192\.168\.77\.[12]\.4789: VXLAN.*vni 4200/);
  assert.match(seen, /192\.168\.77\.3\.\d+ > 192\.168\.77\.2\.4789: VXLAN.*vni 4200/);

  // Inspect's view: tags and peers, never a key.
  const status = h1.driver.encryptionStatus(enc.id)!;
  assert.deepEqual(status, {
    KeyTags: [8],
    PrimaryKeyTag: 8,
    Peers: [{ IP: h2.ip, State: 'encrypted', RxKeyTags: [8], TxKeyTag: 8 }],
  });
  assert.equal(h1.driver.encryptionStatus(plain.id), undefined);

  // Removal: the encrypted network's rules, SAs and policies go (the guard last); the plain one still works.
  dump.kill('SIGKILL');
  for (const h of [h1, h2]) await h.driver.deleteNetwork(enc.id);
  for (const h of [h1, h2]) {
    assert.deepEqual(states(h), []);
    assert.deepEqual(policies(h), []);
    assert.doesNotMatch(h.run('iptables-save', []), /CNMD-ENCRYPTED/);
  }
  assert.ok(ping(pa.path, pb.ip, 2), 'plain network after the removal');
});

test('restart: an encrypted network is adopted with its SAs kept until its peers are heard (no packet lost); one removed while the daemon was down is swept (rules, SAs, policies, guard)', async (t) => {
  const l = await lab(t);
  const {
    hosts: [h1, h2],
  } = await hosts(t, l, 2);
  warmGcm(h1, h1.ip, h2.ip);
  const ring: RingKeys = { keys: new Map([[3, randomBytes(32)]]), primary: 3 };
  for (const h of [h1, h2]) await h.driver.setKeyRing(ring);
  const enc = spec(4400, '10.44.0.0/24', true);
  for (const h of [h1, h2]) await h.driver.createNetwork(enc);
  const a = await sandbox(l, h1, enc.id, '10.44.0.2/24');
  const b = await sandbox(l, h2, enc.id, '10.44.0.3/24');
  for (const h of [h1, h2]) await h.driver.setPeers(enc.id, [a.peer, b.peer]);
  assert.ok(ping(a.path, b.ip, 2));
  const st = states(h1);
  const pol = policies(h1);
  assert.equal(st.length, 2);
  assert.equal(pol.length, 2);

  // h1's daemon killed (its driver dropped, nothing torn down) and started again on the same roots,
  // under a continuous ping from a to b.
  const pinger = spawn('nsenter', [`--net=${a.path}`, 'ping', '-i', '0.2', '-c', '25', '-W', '2', b.ip], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  let out = '';
  pinger.stdout!.on('data', (x) => (out += x));
  const done = new Promise((r) => pinger.once('exit', r));
  h1.driver.close();
  h1.driver = driverFor(l, h1);
  await h1.driver.restore(
    [enc],
    [{ networkId: enc.id, endpointId: a.peer.endpointId, address: a.peer.address, options: {} }],
  );
  await h1.driver.sweepLeaks();
  assert.deepEqual(states(h1), st, 'kept through restore and sweep');
  // The ring is back before the network's peers: nothing is removed, and the ring is not acked yet.
  assert.equal(await h1.driver.setKeyRing(ring), false);
  assert.deepEqual(states(h1), st);
  assert.deepEqual(policies(h1), pol);
  await h1.driver.setPeers(enc.id, [a.peer, b.peer]);
  assert.equal(await h1.driver.setKeyRing(ring), true);
  assert.deepEqual(states(h1), st);
  await done;
  assert.match(out, /25 packets transmitted, 25 received/);

  // The network removed from the cluster while h1's daemon was down: the next start knows nothing of it.
  h1.driver.close();
  h1.driver = driverFor(l, h1);
  await h1.driver.restore([], []);
  const removed = await h1.driver.sweepLeaks();
  assert.ok(
    removed.some((r) => r.startsWith('xfrm state')),
    removed.join('\n'),
  );
  assert.ok(
    removed.some((r) => /CNMD-ENCRYPTED .*0x1130/.test(r)),
    removed.join('\n'),
  );
  assert.deepEqual(states(h1), []);
  assert.deepEqual(policies(h1), []);
  assert.doesNotMatch(h1.run('iptables-save', []), /CNMD-ENCRYPTED/);
});
