// --ipam-driver dhcp against a hostile DHCP server on the parent's LAN
// (test/lib/hostile-dhcp.ts): junk before every answer (truncated packets,
// options past the end, wrong xid/chaddr/client id, loopback, multicast and
// broadcast offers, a flood of OFFERs, a ~30 KB reply), then an answer whose
// fields are garbage: routers outside the subnet or its broadcast address,
// DNS servers nobody may use, a domain and host name with newlines, a lease
// of 0 s, a mask that is not contiguous; then NAKs during renewal. The
// kernel's state (ip -j), the sandbox's files and the server's own log of
// requests are the observers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { eventually, lab, runIn } from '../lib/fixture';
import { startDaemon } from '../lib/daemon';
import { ok } from '../lib/api';
import { hostileDhcp } from '../lib/hostile-dhcp';

const SUBNET = '192.168.63';

test('dhcp against a hostile server: junk ignored, garbage fields dropped, a 0 s lease renewed at a bounded pace, NAK answered with a new address', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const ext = await l.ns('ext');
  d.host.run('ip', ['link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'up-lan0']);
  d.host.run('ip', ['link', 'set', 'up-lan0', 'netns', ext.path]);
  d.host.run('ip', ['link', 'set', 'lan0', 'up']);
  ext.run('ip', ['link', 'set', 'lo', 'up']);
  ext.run('ip', ['addr', 'add', `${SUBNET}.1/24`, 'dev', 'up-lan0']);
  ext.run('ip', ['link', 'set', 'up-lan0', 'up']);
  const server = await hostileDhcp(t, l, ext, 'up-lan0', {
    server: `${SUBNET}.1`,
    pool: [`${SUBNET}.100`, `${SUBNET}.101`, `${SUBNET}.102`],
    mask: '255.255.255.0',
    routers: ['8.8.8.8', `${SUBNET}.255`, `${SUBNET}.0`, `${SUBNET}.100`, `${SUBNET}.1`],
    dns: ['0.0.0.0', '127.0.0.1', '255.255.255.255', '224.0.0.251', `${SUBNET}.1`],
    domain: 'evil.test\nnameserver 6.6.6.6',
    hostname: 'x\n6.6.6.6 evil',
    lease: 0,
    junk: true,
  });
  await ok(d, 'POST', '/networks/create', {
    Name: 'lan',
    Driver: 'macvlan',
    Options: { parent: 'lan0' },
    IPAM: { Driver: 'dhcp' },
  });
  await ok(d, 'POST', '/sandboxes', { Name: 'a', Networks: [{ Network: 'lan' }] });
  const a = await ok(d, 'GET', '/sandboxes/a');
  const addrs = () =>
    (JSON.parse(runIn(a.SandboxKey, 'ip', ['-j', '-4', 'addr', 'show', 'eth0']))[0]?.addr_info ?? []).map(
      (x: any) => `${x.local}/${x.prefixlen}`,
    );
  const dhcpLog = () =>
    d
      .logs()
      .split('\n')
      .filter((x) => /dhcp/.test(x))
      .slice(-6)
      .join('\n');
  const defaultVia = () =>
    JSON.parse(runIn(a.SandboxKey, 'ip', ['-j', '-4', 'route', 'show', 'default'])).map(
      (r: any) => r.gateway,
    );
  assert.deepEqual(addrs(), [`${SUBNET}.100/24`]);
  // Of the routers, the first that can be one: not off-link, not the subnet's broadcast or network address, not ours.
  assert.deepEqual(defaultVia(), [`${SUBNET}.1`]);
  assert.equal(a.Networks.lan.Gateway, `${SUBNET}.1`);
  const files = path.join(d.execRoot, 'sandboxes', a.Id);
  for (const f of ['resolv.conf', 'hosts', 'hostname']) {
    const text = fs.readFileSync(path.join(files, f), 'utf8');
    assert.doesNotMatch(text, /6\.6\.6\.6|evil/, `${f}:\n${text}`);
  }

  // A lease of 0 s is kept as 10 s (renewed at 5 s): renewals come, at a bounded pace.
  const renewals = () => server.requests().filter((r) => r.type === 3 && r.ciaddr === `${SUBNET}.100`);
  await eventually(() => assert.ok(renewals().length >= 2, JSON.stringify(renewals())), 20_000);
  const [r1, r2] = renewals();
  assert.ok(r2.at - r1.at >= 4, `renewals ${r2.at - r1.at} s apart`);

  // NAKs during renewal: the endpoint asks the LAN again, and its new address replaces the old one.
  server.set({ renew: 'nak' });
  await eventually(() => assert.deepEqual(addrs(), [`${SUBNET}.101/24`], dhcpLog()), 30_000);
  server.set({ renew: 'ack' });
  // The same router list: .100 is no longer the endpoint's own address, so it is the first that can be a router.
  await eventually(() => assert.deepEqual(defaultVia(), [`${SUBNET}.100`]));
  const b = await ok(d, 'GET', '/sandboxes/a');
  assert.equal(b.Networks.lan.IPAddress, `${SUBNET}.101`);
  assert.match(fs.readFileSync(path.join(files, 'hosts'), 'utf8'), new RegExp(`${SUBNET}\\.101`));
  assert.equal((await d.request('GET', '/_ping')).status, 200);
  assert.equal((await d.request('DELETE', '/sandboxes/a')).status, 204);
  await eventually(() => assert.ok(server.requests().some((r) => r.type === 7)), 5000);
});
