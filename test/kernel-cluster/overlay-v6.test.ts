// Runs inside Debian's kernel under qemu (the kernel lane's cluster VM): two
// host netns whose VTEPs are IPv6 (--cluster-advertise on a dual-stack
// underlay; etcd stays on IPv4), one cnmd each with the cluster secret. An
// encrypted overlay and a plain one side by side over the IPv6 underlay:
// VXLAN over IPv6 inside ESP (esp6) for the encrypted one, in clear for the
// plain one; the SAs the ring says, between the IPv6 VTEPs; forged cleartext
// VXLAN for the encrypted VNI, also hidden behind an IPv6 extension header,
// never delivered. Observers: ping and TCP, tcpdump on the underlay,
// `ip xfrm state`, ip6tables' counters, a sink in a sandbox.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { eventually, runIn } from '../lib/fixture';
import { ping, roundTrip, serve } from '../lib/probe';
import { hostAddr6 } from '../lib/cluster';
import { meshOf, network, OverlayNet, Sb } from '../lib/overlay-cluster';
import { capture, forgedVxlan, sendUdp, sendUdp6, udpSink } from '../lib/wire';
import { encryption, expectedStates, states } from './encrypted-scenarios';
import { mark, vmCluster, VM_WAIT_MS } from './vm';

const re = (s: string) => s.replace(/[.:]/g, (c) => `\\${c}`);
const cluster = () =>
  vmCluster({ hosts: 2, underlay6: true }, (i) => ['--cluster-advertise', hostAddr6(i + 1)]);

let sec: OverlayNet;
let plain: OverlayNet;
let sbs: Sb[] = [];
let psbs: Sb[] = [];

test('VM cluster, IPv6 underlay: an encrypted overlay beside a plain one: ping and TCP across; only ESP over IPv6 on the wire for it, VXLAN over IPv6 for the plain one; the kernel holds exactly the ring’s SAs between the IPv6 VTEPs', async (t) => {
  const c = await cluster();
  // Until the ring agent has read the ring the daemon answers "try again".
  sec = await eventually(() => network(c.daemons[0], 'sec6', '10.37.0.0/24', { encrypted: '' }), VM_WAIT_MS);
  plain = await network(c.daemons[1], 'plain6', '10.38.0.0/24');
  sbs = await meshOf(c, sec, 'sec6', { hosts: 2, ms: VM_WAIT_MS, vtep: hostAddr6 });
  psbs = await meshOf(c, plain, 'plain6', { hosts: 2, ms: VM_WAIT_MS, vtep: hostAddr6 });
  for (const i of [0, 1])
    await eventually(async () => {
      const e = await encryption(c.daemons[i], 'sec6');
      assert.deepEqual(
        e.Peers.map((p) => [p.IP, p.State]),
        [[hostAddr6(2 - i), 'encrypted']],
      );
    }, VM_WAIT_MS);
  mark('IPv6 underlay: meshes up');

  const cap = await capture(t, c.underlay.path, 'br0', 'udp port 4789 or esp');
  await serve(t, sbs[1].key, 'tcp', 8080);
  for (const [a, b] of [
    [0, 1],
    [1, 0],
  ]) {
    await eventually(
      () => assert.ok(ping(sbs[a].key, sbs[b].ip, 3), `sec6 ${a + 1} -> ${b + 1}`),
      VM_WAIT_MS,
    );
    await eventually(
      () => assert.ok(ping(psbs[a].key, psbs[b].ip), `plain6 ${a + 1} -> ${b + 1}`),
      VM_WAIT_MS,
    );
  }
  const rt = roundTrip(sbs[0].key, 'tcp', sbs[1].ip, 8080, 20_000);
  assert.ok(rt.ok, 'TCP echo over the encrypted network');
  assert.equal(rt.seenFrom, sbs[0].ip);
  for (const [x, y] of [
    [hostAddr6(1), hostAddr6(2)],
    [hostAddr6(2), hostAddr6(1)],
  ])
    await eventually(() => {
      const txt = cap.text();
      assert.match(txt, new RegExp(`${re(x)} > ${re(y)}: ESP\\(spi=0x`));
      assert.match(
        txt,
        new RegExp(
          `${re(x)}\\.\\d+ > ${re(y)}\\.4789: (?:\\[bad udp cksum [^\\]]*\\] )?VXLAN[^\\n]*vni ${plain.vni}\\b`,
        ),
      );
    }, VM_WAIT_MS);
  const seen = await cap.stop();
  assert.doesNotMatch(seen, new RegExp(`vni ${sec.vni}\\b`), 'no cleartext VXLAN of the encrypted network');
  assert.doesNotMatch(seen, /10\.37\.0\./, 'no address of the encrypted network on the wire');
  assert.doesNotMatch(seen, /192\.0\.2\.\d+ > 192\.0\.2\.\d+: ESP/, 'ESP went over IPv6, not IPv4');
  // MTU: 1500 - 70 (VXLAN over IPv6) - 26 (ESP), down to a multiple of 4.
  const mtu = JSON.parse(runIn(sbs[0].key, 'ip', ['-j', 'link', 'show', 'eth0']))[0].mtu;
  assert.equal(mtu, 1404);
  // Exactly the ring's SAs on both hosts (a rotation may be under way: read the ring each time).
  for (const i of [0, 1])
    await eventually(async () => {
      const e = await encryption(c.daemons[i], 'sec6');
      assert.deepEqual(states(c, i).ids, expectedStates(i, [1 - i], e, hostAddr6), `host ${i + 1}`);
    }, VM_WAIT_MS);
  assert.match(c.hosts[0].run('ip', ['xfrm', 'state']), /flag esn/);
});

test('VM cluster, IPv6 underlay: forged cleartext VXLAN with the encrypted VNI, plain or behind a destination options header, never reaches a sandbox (the plain network’s does)', async (t) => {
  const c = await cluster();
  const x = await c.attach('x6', '192.0.2.68');
  x.run('ip', ['-6', 'addr', 'add', '2001:db8:2::68/64', 'dev', 'eth0', 'nodad']);
  const sink = await udpSink(t, sbs[0].key, 7777);
  const psink = await udpSink(t, psbs[0].key, 7777);
  const tok = (s: string) => `${s}-${randomBytes(4).toString('hex')}`;
  const forged = tok('forged6');
  const hidden = tok('forged6-dstopts');
  const control = tok('forged6-plain');
  const legit = tok('legit6');
  const frame = (net: OverlayNet, sb: Sb, payload: string) =>
    forgedVxlan({
      vni: net.vni,
      dstMac: sb.mac,
      src: net === sec ? '10.37.0.250' : '10.38.0.250',
      dst: sb.ip,
      port: 7777,
      payload: Buffer.from(payload),
    });
  const dropped = () =>
    c.hosts[0]
      .run('ip6tables', ['-L', 'CNMD-ENCRYPTED', '-v', '-x', '-n'])
      .split('\n')
      .filter((l) => l.includes('DROP'))
      .map((l) => ({ n: Number(l.trim().split(/\s+/)[0]), ext: l.includes('u32 !') }));
  await eventually(() => {
    // The encrypted VNI's first, on the same path as the control that must arrive.
    sendUdp6(x.path, hostAddr6(1), 4789, frame(sec, sbs[0], forged));
    sendUdp6(x.path, hostAddr6(1), 4789, frame(sec, sbs[0], hidden), true);
    sendUdp6(x.path, hostAddr6(1), 4789, frame(plain, psbs[0], control));
    sendUdp(sbs[1].key, sbs[0].ip, 7777, Buffer.from(legit));
    assert.ok(psink.received().includes(control), 'the plain network’s forged datagram arrived');
    assert.ok(sink.received().includes(legit), 'a real datagram over the encrypted network arrived');
  }, VM_WAIT_MS);
  for (const f of [forged, hidden])
    assert.ok(!sink.received().includes(f), `${f} reached the sandbox: ${sink.received()}`);
  // The firewall counted both kinds: the VNI rule and the extension header rule.
  const d = dropped();
  assert.ok(d.some((r) => !r.ext && r.n >= 1) && d.some((r) => r.ext && r.n >= 1), JSON.stringify(d));
});
