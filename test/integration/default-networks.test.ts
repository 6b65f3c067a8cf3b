// The default networks: bridge (device cnm0), host and none, made on first
// start, not removable, one instance each; sandboxes on each behave as Docker's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { lab, runIn } from '../lib/fixture';
import { startDaemon } from '../lib/daemon';
import { ping } from '../lib/probe';

test('first start makes bridge (cnm0), host and none; they cannot be removed or duplicated', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const nets = (await d.request('GET', '/networks')).body as any[];
  assert.deepEqual(nets.map((n) => [n.Name, n.Driver]).sort(), [
    ['bridge', 'bridge'],
    ['host', 'host'],
    ['none', 'null'],
  ]);
  const bridge = nets.find((n) => n.Name === 'bridge');
  assert.equal(bridge.IPAM.Config[0].Subnet, '172.17.0.0/16', 'first free predefined pool');
  assert.equal(bridge.IPAM.Config[0].Gateway, '172.17.0.1');
  const [cnm0] = d.host.ipj('-d', 'addr', 'show', 'cnm0');
  assert.equal(cnm0.linkinfo.info_kind, 'bridge');
  assert.ok(cnm0.addr_info.some((a: any) => a.local === '172.17.0.1' && a.prefixlen === 16));
  for (const name of ['bridge', 'host', 'none']) {
    const r = await d.request('DELETE', `/networks/${name}`);
    assert.equal(r.status, 403, name);
    assert.match(r.body.message, new RegExp(`${name} is a pre-defined network and cannot be removed`));
  }
  for (const driver of ['host', 'null']) {
    const r = await d.request('POST', '/networks/create', { Name: `another-${driver}`, Driver: driver });
    assert.equal(r.status, 403, driver);
    assert.match(r.body.message, new RegExp(`only one instance of "${driver}" network is allowed`));
  }
});

test('a sandbox on the default bridge reaches its gateway; on none it has only loopback; on host it shares the daemon netns', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  for (const [name, net] of [
    ['b', 'bridge'],
    ['n', 'none'],
    ['h', 'host'],
  ]) {
    const r = await d.request('POST', '/sandboxes', { Name: name, Networks: [{ Network: net }] });
    assert.equal(r.status, 201, JSON.stringify(r.body));
  }
  const b = (await d.request('GET', '/sandboxes/b')).body;
  assert.equal(b.Networks.bridge.IPAddress, '172.17.0.2');
  assert.ok(ping(b.SandboxKey, '172.17.0.1'));
  const n = (await d.request('GET', '/sandboxes/n')).body;
  const links = JSON.parse(runIn(n.SandboxKey, 'ip', ['-j', 'link'])).map((x: any) => x.ifname);
  assert.deepEqual(links, ['lo']);
  const h = (await d.request('GET', '/sandboxes/h')).body;
  assert.equal(h.HostNetwork, true);
  // The host sandbox's key is the daemon's own netns: same inode as the host netns.
  assert.equal(fs.statSync(h.SandboxKey).ino, fs.statSync(d.host.path).ino);
  assert.ok(JSON.parse(runIn(h.SandboxKey, 'ip', ['-j', 'link'])).some((x: any) => x.ifname === 'cnm0'));
  // A host-network sandbox cannot join another network, and others cannot join host (400, as Docker).
  const r1 = await d.request('POST', '/networks/bridge/connect', { Container: 'h' });
  assert.equal(r1.status, 400, JSON.stringify(r1.body));
  const r2 = await d.request('POST', '/networks/host/connect', { Container: 'b' });
  assert.equal(r2.status, 400, JSON.stringify(r2.body));
  for (const s of ['b', 'n', 'h']) assert.equal((await d.request('DELETE', `/sandboxes/${s}`)).status, 204);
  // Removing the host sandbox leaves the daemon's netns alone.
  assert.ok(d.host.ipj('link').some((x: any) => x.ifname === 'cnm0'));
});

test('predefined pools that overlap routes in the host netns are skipped', async (t) => {
  const l = await lab(t);
  const host = await l.ns('host');
  // The "LAN" already uses 172.17.0.0/16 and 172.18.0.0/16 (a VPN route).
  await host.handle.linkAdd({ kind: 'bridge', name: 'lan0', up: true });
  await host.handle.addrAdd('lan0', '172.17.5.1/16');
  await host.handle.routeAdd({ dst: '172.18.0.0/16', gateway: '172.17.5.254' });
  const d = await startDaemon(t, l, { hostNs: host });
  const bridge = (await d.request('GET', '/networks/bridge')).body;
  assert.equal(bridge.IPAM.Config[0].Subnet, '172.19.0.0/16');
  const r = await d.request('POST', '/networks/create', { Name: 'auto' });
  assert.equal(r.status, 201);
  assert.equal((await d.request('GET', '/networks/auto')).body.IPAM.Config[0].Subnet, '172.20.0.0/16');
});
