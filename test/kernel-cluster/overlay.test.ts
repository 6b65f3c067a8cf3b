// Runs inside Debian's kernel under qemu (the kernel lane's cluster VM): three
// host netns on one underlay bridge, etcd-server on it, one cnmd per host,
// shared by the file's tests (vm.ts). A plain overlay across them, proved by real packets: sandboxes on different
// hosts ping by address and by the name their embedded DNS answers, the
// underlay carries UDP 4789 with the network's VNI (tcpdump), and a cleartext
// VXLAN datagram forged by an extra netns on the underlay reaches a sandbox
// (a plain overlay trusts its underlay; the encrypted tests need this control).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventually } from '../lib/fixture';
import { ping } from '../lib/probe';
import { hostAddr } from '../lib/cluster';
import { dig, meshOf, network } from '../lib/overlay-cluster';
import { capture, forgedVxlan, sendUdp, udpSink } from '../lib/wire';
import { mark, vmCluster, VM_WAIT_MS } from './vm';
import { encryptedScenarios } from './encrypted-scenarios';
import { encryptedClientScenarios } from './encrypted-clients';
import { encryptedEngineScenario } from './encrypted-engine';

const re = (s: string) => s.replace(/\./g, '\\.');

test('VM cluster, plain overlay: three hosts ping by address and name, UDP 4789 with the VNI on the underlay, a forged VXLAN datagram is delivered', async (t) => {
  const c = await vmCluster();
  const net = await network(c.daemons[0], 'plain', '10.31.0.0/24');
  assert.ok(net.vni >= 4096, `VNI ${net.vni}`);
  const sbs = await meshOf(c, net, 'plain', { ms: VM_WAIT_MS });
  mark('mesh up');

  const cap = await capture(t, c.underlay.path, 'br0', 'udp port 4789 or esp');
  for (const a of sbs)
    for (const b of sbs) {
      if (a === b) continue;
      await eventually(() => assert.ok(ping(a.key, b.ip), `${a.name} -> ${b.name} (${b.ip})`), VM_WAIT_MS);
      const byName = await eventually(() => {
        const ip = dig(a, b.name);
        assert.equal(ip, b.ip, `${a.name} resolves ${b.name}`);
        return ip;
      }, VM_WAIT_MS);
      assert.ok(ping(a.key, byName), `${a.name} -> ${b.name} by name`);
    }
  // Every pair's VXLAN on the wire, in clear, the sandboxes' ICMP visible inside.
  for (let i = 0; i < 3; i++)
    for (let j = 0; j < 3; j++) {
      if (i === j) continue;
      const outer = new RegExp(
        `${re(hostAddr(i + 1))}\\.\\d+ > ${re(hostAddr(j + 1))}\\.4789: VXLAN[^\\n]*vni ${net.vni}\\b`,
      );
      const inner = new RegExp(`${re(sbs[i].ip)} > ${re(sbs[j].ip)}: ICMP echo request`);
      await eventually(() => {
        assert.match(cap.text(), outer);
        assert.match(cap.text(), inner);
      }, VM_WAIT_MS);
    }
  mark('pings and names checked');
  const seen = await cap.stop();
  assert.doesNotMatch(seen, /ESP\(/, 'no ESP for a plain overlay');

  // An attacker on the underlay forges cleartext VXLAN for the network's VNI: delivered.
  mark('capture checked');
  const x = await c.attach('x', '192.0.2.66');
  const sink = await udpSink(t, sbs[0].key, 7777);
  const token = `forged-${Date.now()}`;
  const frame = forgedVxlan({
    vni: net.vni,
    dstMac: sbs[0].mac,
    src: '10.31.0.250',
    dst: sbs[0].ip,
    port: 7777,
    payload: Buffer.from(token),
  });
  await eventually(() => {
    sendUdp(x.path, hostAddr(1), 4789, frame);
    assert.ok(sink.received().includes(token), `the sink got ${JSON.stringify(sink.received())}`);
  }, VM_WAIT_MS);
  mark('forged datagram delivered');
});

// Encrypted networks through the real Docker engine, first: it checks that nothing of cnmd's
// encryption is left once its network goes, which holds only while no other encrypted network exists.
encryptedEngineScenario();
// Encrypted networks beside it on the same cluster (issue 17).
encryptedScenarios();
// Encrypted networks through the docker CLI and the engine's cnmd-overlay binding.
encryptedClientScenarios();
