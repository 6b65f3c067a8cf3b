// Addresses, routes, neighbours and the bridge FDB through our handle,
// read back with `ip -j` and `bridge -j`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lab } from '../lib/fixture';

test('IPv4 and IPv6 addresses: add (broadcast, nodad), list, delete', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  await a.handle.linkAdd({ kind: 'bridge', name: 'br0', up: true });
  await a.handle.addrAdd('br0', '10.7.0.1/24');
  await a.handle.addrAdd('br0', '10.7.1.1/31');
  await a.handle.addrAdd('br0', 'fd07::1/64', { nodad: true });
  const [br] = a.ipj('addr', 'show', 'br0');
  const v4 = br.addr_info.find((x: any) => x.local === '10.7.0.1');
  assert.equal(v4.prefixlen, 24);
  assert.equal(v4.broadcast, '10.7.0.255');
  assert.equal(br.addr_info.find((x: any) => x.local === '10.7.1.1').broadcast, undefined, 'no broadcast on a /31');
  const v6 = br.addr_info.find((x: any) => x.local === 'fd07::1');
  assert.equal(v6.prefixlen, 64);
  assert.equal(v6.nodad, true);
  const ours = (await a.handle.addrList({ link: 'br0' })).map((x) => x.cidr);
  for (const c of ['10.7.0.1/24', '10.7.1.1/31', 'fd07::1/64']) assert.ok(ours.includes(c), c);
  const only6 = await a.handle.addrList({ link: 'br0', family: 6 });
  assert.ok(only6.every((x) => x.family === 6));
  await a.handle.addrDel('br0', '10.7.0.1/24');
  assert.ok(!a.ipj('addr', 'show', 'br0')[0].addr_info.some((x: any) => x.local === '10.7.0.1'));
  await assert.rejects(a.handle.addrAdd('br0', '10.7.1.1/31'), { code: 'ALREADY_EXISTS', errno: 'EEXIST' });
});

test('routes: default via gateway, connected with dev, per table (100 and 1000), replace, IPv6, delete', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  await a.handle.linkAdd({ kind: 'bridge', name: 'br0', up: true });
  await a.handle.addrAdd('br0', '10.8.0.1/24');
  await a.handle.addrAdd('br0', 'fd08::1/64', { nodad: true });
  await a.handle.routeAdd({ gateway: '10.8.0.254' });
  await a.handle.routeAdd({ dst: '10.9.0.0/16', dev: 'br0' });
  await a.handle.routeAdd({ dst: '10.10.0.0/16', gateway: '10.8.0.253', table: 100 });
  await a.handle.routeAdd({ dst: '10.11.0.0/16', dev: 'br0', table: 1000, priority: 7 });
  await a.handle.routeAdd({ family: 6, gateway: 'fd08::fe', dev: 'br0' });
  const all = a.ipj('route', 'show', 'table', 'all');
  const find = (dst: string, table?: string) => all.find((r: any) => r.dst === dst && (table ? r.table === table : !r.table || r.table === 'main'));
  assert.equal(find('default').gateway, '10.8.0.254');
  assert.equal(find('10.9.0.0/16').dev, 'br0');
  assert.equal(find('10.9.0.0/16').scope, 'link');
  assert.equal(find('10.10.0.0/16', '100').gateway, '10.8.0.253');
  assert.equal(find('10.11.0.0/16', '1000').metric, 7);
  const v6 = a.ipj('-6', 'route').find((r: any) => r.dst === 'default');
  assert.equal(v6.gateway, 'fd08::fe');
  // Our list agrees with ip's, per table.
  const main = await a.handle.routeList({ family: 4 });
  assert.deepEqual(main.map((r) => r.dst).sort(), a.ipj('-4', 'route').map((r: any) => (r.dst === 'default' ? 'default' : r.dst.includes('/') ? r.dst : `${r.dst}/32`)).sort());
  const t100 = await a.handle.routeList({ table: 100 });
  assert.deepEqual(t100.map((r) => [r.dst, r.gateway]), [['10.10.0.0/16', '10.8.0.253']]);
  // replace and delete
  await a.handle.routeReplace({ gateway: '10.8.0.250' });
  assert.equal(a.ipj('route').find((r: any) => r.dst === 'default').gateway, '10.8.0.250');
  await assert.rejects(a.handle.routeAdd({ gateway: '10.8.0.251' }), { code: 'ALREADY_EXISTS' });
  await a.handle.routeDel({ dst: '10.9.0.0/16', dev: 'br0' });
  assert.equal(a.ipj('route').find((r: any) => r.dst === '10.9.0.0/16'), undefined);
  await assert.rejects(a.handle.routeDel({ dst: '10.9.0.0/16' }), { code: 'NOT_FOUND' });
  await assert.rejects(a.handle.routeAdd({ gateway: '172.31.0.1' }), { code: 'INVALID_ARGUMENT', message: /not reachable/ });
});

test('neighbours: permanent and proxy entries', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  await a.handle.linkAdd({ kind: 'bridge', name: 'br0', up: true });
  await a.handle.addrAdd('br0', '10.12.0.1/24');
  await a.handle.neighAdd({ dev: 'br0', ip: '10.12.0.9', mac: '02:00:0a:0c:00:09' });
  await a.handle.neighAdd({ dev: 'br0', ip: 'fd12::9', mac: '02:00:0a:0c:00:19' });
  await a.handle.neighAdd({ dev: 'br0', ip: '10.12.0.77', proxy: true });
  const n = a.ipj('neigh', 'show', 'dev', 'br0');
  const e4 = n.find((x: any) => x.dst === '10.12.0.9');
  assert.equal(e4.lladdr, '02:00:0a:0c:00:09');
  assert.deepEqual(e4.state, ['PERMANENT']);
  assert.equal(n.find((x: any) => x.dst === 'fd12::9').lladdr, '02:00:0a:0c:00:19');
  const proxies = a.ipj('neigh', 'show', 'proxy');
  assert.ok(proxies.some((x: any) => x.dst === '10.12.0.77' && x.dev === 'br0'));
  const ours = await a.handle.neighList({ dev: 'br0' });
  assert.ok(ours.some((x) => x.ip === '10.12.0.9' && x.mac === '02:00:0a:0c:00:09' && x.permanent));
  const ourProxies = await a.handle.neighList({ proxy: true });
  assert.deepEqual(ourProxies.map((x) => x.ip), ['10.12.0.77']);
  await a.handle.neighDel({ dev: 'br0', ip: '10.12.0.9' });
  await a.handle.neighDel({ dev: 'br0', ip: '10.12.0.77', proxy: true });
  assert.equal(a.ipj('neigh', 'show', 'dev', 'br0').find((x: any) => x.dst === '10.12.0.9'), undefined);
  assert.deepEqual(a.ipj('neigh', 'show', 'proxy'), []);
  await assert.rejects(a.handle.neighAdd({ dev: 'br0', ip: '10.12.0.5' }), { code: 'INVALID_ARGUMENT', message: /needs a MAC/ });
});

test('bridge FDB on a vxlan device: add with dst, append a second VTEP, delete', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  await a.handle.linkAdd({ kind: 'vxlan', name: 'vx0', vni: 42, learning: false });
  await a.handle.fdbAdd({ dev: 'vx0', mac: '02:42:0a:00:00:02', dst: '192.0.2.2' });
  await a.handle.fdbAppend({ dev: 'vx0', mac: '00:00:00:00:00:00', dst: '192.0.2.3' });
  await a.handle.fdbAppend({ dev: 'vx0', mac: '00:00:00:00:00:00', dst: '192.0.2.4' });
  const fdb = JSON.parse(a.run('bridge', ['-j', 'fdb', 'show', 'dev', 'vx0']));
  const entry = fdb.find((x: any) => x.mac === '02:42:0a:00:00:02');
  assert.equal(entry.dst, '192.0.2.2');
  assert.ok(entry.flags.includes('self'));
  assert.equal(entry.state, 'permanent');
  const flood = fdb.filter((x: any) => x.mac === '00:00:00:00:00:00').map((x: any) => x.dst).sort();
  assert.deepEqual(flood, ['192.0.2.3', '192.0.2.4']);
  const ours = await a.handle.fdbList({ dev: 'vx0' });
  assert.ok(ours.some((x) => x.mac === '02:42:0a:00:00:02' && x.dst === '192.0.2.2'));
  await a.handle.fdbDel({ dev: 'vx0', mac: '02:42:0a:00:00:02', dst: '192.0.2.2' });
  const after = JSON.parse(a.run('bridge', ['-j', 'fdb', 'show', 'dev', 'vx0']));
  assert.equal(after.find((x: any) => x.mac === '02:42:0a:00:00:02'), undefined);
  await assert.rejects(a.handle.fdbAdd({ dev: 'vx0', mac: '02:42:0a:00:00:09', dst: 'not-an-ip' }), { code: 'INVALID_ARGUMENT' });
});
