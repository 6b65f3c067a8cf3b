// Encrypted overlay networks made and used through Docker's clients (issue 17),
// on the VM cluster (vm.ts), registered by overlay.test.ts after the other
// scenarios: the stock docker CLI on cnmd's API socket (`docker network create
// -d overlay -o encrypted`, inspect, connect), and the engine's cnmd-overlay
// binding spoken to over cnmd's plugin sockets with curl, call by call as
// dockerd makes them, engine endpoints beside a cnmd sandbox on a third host
// (the real dockerd runs in encrypted-engine.ts). Each network's traffic
// between hosts is proven ESP-only on the underlay with tcpdump.
import { test, TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { eventually } from '../lib/fixture';
import { ping, roundTrip, serve } from '../lib/probe';
import { ClusterLab, hostAddr } from '../lib/cluster';
import type { RunningDaemon } from '../lib/daemon';
import { docker, dockerOk } from '../lib/docker-cli';
import { unixRequest } from '../lib/curl';
import { mirrored, sandbox, VXLANID } from '../lib/overlay-cluster';
import { capture } from '../lib/wire';
import { ENC_REQID } from '../../drivers/overlay/encryption';
import { mark, vmCluster, VM_WAIT_MS } from './vm';

/** A docker CLI command's bound in the VM (a Go binary under TCG, tens of times slower than here). */
const DOCKER_MS = 120_000;
const re = (s: string) => s.replace(/\./g, '\\.');

/**
 * Pings a -> b `count` times while tcpdump watches the underlay: returns what it saw. The caller
 * asserts what the wire carried (ESP between the hosts, never the network's VNI or addresses).
 */
async function onTheWire(
  t: TestContext,
  c: ClusterLab,
  pairs: { from: string; to: string; hosts: [number, number] }[],
): Promise<string> {
  const cap = await capture(t, c.underlay.path, 'br0', 'udp port 4789 or esp');
  for (const p of pairs) {
    assert.ok(ping(p.from, p.to, 5), `${p.from} -> ${p.to}`);
    // Every echo and reply crossed the two hosts inside ESP (5 each way at least).
    await eventually(() => assertEspEachWay(cap.text(), p.hosts, 5), VM_WAIT_MS);
  }
  return cap.stop();
}

/** Waits until hosts 1 and 2 each hold the other as an encrypted peer of net (its SAs in place), before anything is sent. */
export async function pairEncrypted(c: ClusterLab, net: string): Promise<void> {
  for (const [i, d] of c.daemons.slice(0, 2).entries())
    await eventually(async () => {
      const e = (await d.request('GET', `/networks/${net}`)).body.Encryption;
      assert.deepEqual(
        e.Peers.map((p: any) => [p.IP, p.State]),
        [[hostAddr(2 - i), 'encrypted']],
        `host ${i + 1}'s peers on ${net}`,
      );
    }, VM_WAIT_MS);
}

/** tcpdump's text shows at least `min` ESP packets each way between hosts i and j (0-based). */
export function assertEspEachWay(seen: string, [i, j]: [number, number], min: number): void {
  const [a, b] = [hostAddr(i + 1), hostAddr(j + 1)];
  for (const [x, y] of [
    [a, b],
    [b, a],
  ]) {
    const n = seen.match(new RegExp(`${re(x)} > ${re(y)}: ESP\\(spi=0x`, 'g'))?.length ?? 0;
    assert.ok(n >= min, `${n} ESP packets ${x} > ${y} (at least ${min} expected)`);
  }
}

export function assertNoCleartext(seen: string, vni: number, subnetPrefix: string): void {
  assert.doesNotMatch(seen, new RegExp(`vni ${vni}\\b`), 'no cleartext VXLAN of the encrypted network');
  assert.doesNotMatch(seen, new RegExp(re(subnetPrefix)), 'no address of the encrypted network on the wire');
}

/** cnmd's SAs (its reqid) from host i to host j in host i's netns, as `ip xfrm state` lists them. */
function sendStates(c: ClusterLab, i: number, j: number): number {
  const text = c.hosts[i].run('ip', ['xfrm', 'state']);
  return text
    .split(/\n(?=src )/)
    .filter((b) => b.startsWith(`src ${hostAddr(i + 1)} dst ${hostAddr(j + 1)}\n`))
    .filter((b) => new RegExp(`reqid ${ENC_REQID}\\b`).test(b)).length;
}

/** A plugin call as dockerd makes it (POST /Method, JSON), with curl on the plugin's socket. */
async function plugin(d: RunningDaemon, sock: string, method: string, body: unknown) {
  return unixRequest(path.join(d.pluginDir, `${sock}.sock`), 'POST', `/${method}`, {
    body,
    maxTime: 120,
  });
}

async function pluginOk(d: RunningDaemon, sock: string, method: string, body: unknown): Promise<any> {
  const r = await plugin(d, sock, method, body);
  assert.equal(r.status, 200, `${sock} ${method}: ${r.status} ${r.text}`);
  assert.ok(!r.body?.Err, `${sock} ${method}: ${r.text}`);
  return r.body;
}

const GENERIC = 'com.docker.network.generic';

export function encryptedClientScenarios(): void {
  test('VM cluster, encrypted overlay through the stock docker CLI on cnmd’s socket: create -o encrypted, inspect on another host, connect sandboxes on two hosts, ping and TCP across inside ESP only', async (t) => {
    const c = await vmCluster();
    const [d1, d2] = c.daemons;
    // Until this host's ring agent has read the ring, the daemon answers "try again" (503): as a user would.
    const id = await eventually(
      () =>
        dockerOk(
          d1,
          ['network', 'create', '-d', 'overlay', '-o', 'encrypted', '--subnet', '10.35.0.0/24', 'dsec'],
          DOCKER_MS,
        ).trim(),
      VM_WAIT_MS,
    );
    assert.match(id, /^[0-9a-f]{64}$/);
    // Host 2 has it from the cluster; docker network inspect there shows it as made, encrypted.
    const net = await eventually(() => {
      const r = docker(d2, ['network', 'inspect', 'dsec'], DOCKER_MS);
      assert.equal(r.code, 0, r.err);
      return JSON.parse(r.out)[0];
    }, VM_WAIT_MS);
    assert.equal(net.Id, id);
    assert.equal(net.Driver, 'overlay');
    assert.equal(net.Options.encrypted, '');
    assert.deepEqual(
      net.IPAM.Config.map((x: any) => x.Subnet),
      ['10.35.0.0/24'],
    );
    const vni = Number(net.Options[VXLANID]);
    assert.ok(vni >= 4096, `VNI ${vni}`);
    assert.deepEqual(net.Encryption.Peers, [], 'no peer before any endpoint');
    mark(`docker CLI: dsec made, VNI ${vni}`);

    // Two sandboxes (a runtime's containers), connected by the docker CLI on their hosts.
    for (const [i, d] of [d1, d2].entries()) {
      const r = await d.request('POST', '/sandboxes', { Name: `dk${i + 1}` });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      assert.equal(dockerOk(d, ['network', 'connect', 'dsec', `dk${i + 1}`], DOCKER_MS), '');
    }
    const sb = async (d: RunningDaemon, name: string) => {
      const s = (await d.request('GET', `/sandboxes/${name}`)).body;
      return { key: s.SandboxKey as string, ip: s.Networks.dsec.IPAddress as string };
    };
    const [s1, s2] = [await sb(d1, 'dk1'), await sb(d2, 'dk2')];
    const [insp] = JSON.parse(dockerOk(d1, ['network', 'inspect', 'dsec'], DOCKER_MS));
    assert.deepEqual(
      Object.values(insp.Containers).map((x: any) => [x.Name, x.IPv4Address]),
      [['dk1', `${s1.ip}/24`]],
      'inspect lists the local sandbox',
    );
    await pairEncrypted(c, 'dsec');
    assert.ok(sendStates(c, 0, 1) >= 1 && sendStates(c, 1, 0) >= 1, 'send SAs each way');

    await serve(t, s2.key, 'tcp', 8181);
    const seen = await onTheWire(t, c, [{ from: s1.key, to: s2.ip, hosts: [0, 1] }]);
    const rt = roundTrip(s1.key, 'tcp', s2.ip, 8181, 20_000);
    assert.ok(rt.ok, 'TCP echo over the encrypted network');
    assert.equal(rt.seenFrom, s1.ip);
    assertNoCleartext(seen, vni, '10.35.0.');
    mark('docker CLI: dk1 <-> dk2 inside ESP');

    // Disconnect and rm through the CLI: gone from both hosts.
    for (const [i, d] of [d1, d2].entries())
      assert.equal(dockerOk(d, ['network', 'disconnect', 'dsec', `dk${i + 1}`], DOCKER_MS), '');
    assert.equal(dockerOk(d1, ['network', 'rm', 'dsec'], DOCKER_MS).trim(), 'dsec');
    await eventually(() => {
      const r = docker(d2, ['network', 'inspect', 'dsec'], DOCKER_MS);
      assert.equal(r.code, 1);
      assert.match(r.err, /network dsec not found/);
    }, VM_WAIT_MS);
    for (const [i, d] of [d1, d2].entries())
      assert.equal((await d.request('DELETE', `/sandboxes/dk${i + 1}`)).status, 204);
  });

  test('VM cluster, encrypted overlay through the engine’s cnmd-overlay binding (its plugin calls with curl, as dockerd makes them): engine endpoints on two hosts and a cnmd sandbox on a third talk inside ESP only; a binding that contradicts -o encrypted is refused', async (t) => {
    const c = await vmCluster();
    await eventually(async () => {
      const r0 = await c.daemons[0].request('POST', '/networks/create', {
        Name: 'esec',
        Driver: 'overlay',
        Options: { encrypted: '' },
        IPAM: { Config: [{ Subnet: '10.36.0.0/24' }] },
      });
      assert.equal(r0.status, 201, JSON.stringify(r0.body));
    }, VM_WAIT_MS);
    const esec = (await c.daemons[0].request('GET', '/networks/esec')).body;
    const vni = Number(esec.Options[VXLANID]);
    for (const d of c.daemons) await mirrored(d, 'esec', VM_WAIT_MS);

    // `docker network create -d cnmd-overlay --ipam-driver cnmd-ipam --subnet 10.36.0.0/24 -o cnmd.network=esec
    // -o encrypted NAME` then `docker run --network NAME`, on hosts 1 and 2: what dockerd sends.
    const boxes: {
      key: string;
      ip: string;
      netId: string;
      epId: string;
      poolId: string;
      gw: string;
      addr: string;
    }[] = [];
    for (const i of [0, 1]) {
      const d = c.daemons[i];
      const netId = `${i + 1}e`.repeat(32);
      const epId = `${i + 1}f`.repeat(32);
      const pool = await pluginOk(d, 'cnmd-ipam', 'IpamDriver.RequestPool', {
        AddressSpace: 'LocalDefault',
        Pool: '10.36.0.0/24',
        SubPool: '',
        Options: {},
        V6: false,
      });
      const gw = await pluginOk(d, 'cnmd-ipam', 'IpamDriver.RequestAddress', {
        PoolID: pool.PoolID,
        Address: '',
        Options: { RequestAddressType: 'com.docker.network.gateway' },
      });
      const create = (generic: Record<string, string>) =>
        plugin(d, 'cnmd-overlay', 'NetworkDriver.CreateNetwork', {
          NetworkID: netId,
          Options: { 'com.docker.network.enable_ipv6': false, [GENERIC]: generic },
          IPv4Data: [
            { AddressSpace: 'LocalDefault', Pool: pool.Pool, Gateway: gw.Address, AuxAddresses: {} },
          ],
          IPv6Data: [],
        });
      if (i === 0) {
        // -o encrypted=false on an encrypted network: refused, naming the fix; nothing recorded.
        const no = await create({ 'cnmd.network': 'esec', encrypted: 'false' });
        assert.match(
          no.body.Err,
          /-o encrypted=false asks for no encryption, but cnmd overlay network esec is encrypted/,
        );
      }
      const ok = await create({ 'cnmd.network': 'esec', encrypted: '' });
      assert.equal(ok.status, 200, ok.text);
      assert.ok(!ok.body.Err, ok.text);
      const a = await pluginOk(d, 'cnmd-ipam', 'IpamDriver.RequestAddress', {
        PoolID: pool.PoolID,
        Address: '',
        Options: {},
      });
      const ep = await pluginOk(d, 'cnmd-overlay', 'NetworkDriver.CreateEndpoint', {
        NetworkID: netId,
        EndpointID: epId,
        Interface: { Address: a.Address, AddressIPv6: '', MacAddress: '' },
        Options: {},
      });
      assert.match(ep.Interface.MacAddress, /^02:42:/);
      const box = await c.lab.ns(`ebox${i + 1}`);
      const join = await pluginOk(d, 'cnmd-overlay', 'NetworkDriver.Join', {
        NetworkID: netId,
        EndpointID: epId,
        SandboxKey: box.path,
        Options: {},
      });
      // The engine's part: SrcName into the container's netns, renamed, addressed, up.
      const src = join.InterfaceName.SrcName as string;
      c.hosts[i].run('ip', ['link', 'set', src, 'netns', box.path]);
      box.run('ip', ['link', 'set', src, 'name', `${join.InterfaceName.DstPrefix}0`]);
      box.run('ip', ['addr', 'add', a.Address, 'dev', `${join.InterfaceName.DstPrefix}0`]);
      box.run('ip', ['link', 'set', `${join.InterfaceName.DstPrefix}0`, 'up']);
      boxes.push({
        key: box.path,
        ip: a.Address.split('/')[0],
        netId,
        epId,
        poolId: pool.PoolID,
        gw: gw.Address,
        addr: a.Address,
      });
    }
    const s3 = await sandbox(c.daemons[2], 'esec-s3', 'esec');
    assert.equal(new Set([boxes[0].ip, boxes[1].ip, s3.ip]).size, 3, 'addresses unique across hosts');
    mark(`engine binding: endpoints ${boxes.map((b) => b.ip)} and sandbox ${s3.ip}`);
    // Every host sees the other two as encrypted peers of esec.
    for (const i of [0, 1, 2])
      await eventually(async () => {
        const e = (await c.daemons[i].request('GET', '/networks/esec')).body.Encryption;
        assert.deepEqual(
          e.Peers.map((p: any) => [p.IP, p.State]),
          [0, 1, 2].filter((j) => j !== i).map((j) => [hostAddr(j + 1), 'encrypted']),
        );
      }, VM_WAIT_MS);

    const seen = await onTheWire(t, c, [
      { from: boxes[0].key, to: boxes[1].ip, hosts: [0, 1] },
      { from: boxes[1].key, to: s3.ip, hosts: [1, 2] },
      { from: s3.key, to: boxes[0].ip, hosts: [2, 0] },
    ]);
    assertNoCleartext(seen, vni, '10.36.0.');
    mark('engine binding: engine <-> engine <-> cnmd inside ESP');

    // docker rm, docker network rm: Leave, DeleteEndpoint, the addresses, DeleteNetwork, the pool.
    for (const [i, b] of boxes.entries()) {
      const d = c.daemons[i];
      await pluginOk(d, 'cnmd-overlay', 'NetworkDriver.Leave', { NetworkID: b.netId, EndpointID: b.epId });
      await pluginOk(d, 'cnmd-overlay', 'NetworkDriver.DeleteEndpoint', {
        NetworkID: b.netId,
        EndpointID: b.epId,
      });
      await pluginOk(d, 'cnmd-ipam', 'IpamDriver.ReleaseAddress', { PoolID: b.poolId, Address: b.addr });
      await pluginOk(d, 'cnmd-overlay', 'NetworkDriver.DeleteNetwork', { NetworkID: b.netId });
      await pluginOk(d, 'cnmd-ipam', 'IpamDriver.ReleaseAddress', { PoolID: b.poolId, Address: b.gw });
      await pluginOk(d, 'cnmd-ipam', 'IpamDriver.ReleasePool', { PoolID: b.poolId });
    }
    assert.equal((await c.daemons[2].request('DELETE', '/sandboxes/esec-s3')).status, 204);
    await eventually(
      async () => assert.equal((await c.daemons[0].request('DELETE', '/networks/esec')).status, 204),
      VM_WAIT_MS,
    );
  });
}
