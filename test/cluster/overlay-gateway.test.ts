// An overlay sandbox's way out through cnmd_gwbridge, run through the daemon
// with its cluster store (one host, one etcd): egress masqueraded to the host's
// address, a published port reached from the underlay, and a SIGKILLed daemon
// that restarts with traffic kept and no leaks. (Moved from the integration
// lane's overlay tests when overlay networks came to need --cluster-store.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { eventually, runIn } from '../lib/fixture';
import { roundTrip, serve } from '../lib/probe';
import { clusterLab, hostAddr, UNDERLAY_GW } from '../lib/cluster';
import { assertInvariants } from '../lib/invariants';
import { OPT } from '../../drivers/overlay/options';
import { NetnsManager } from '../../src/netns/netns';

test('through the daemon: an overlay sandbox routes out via cnmd_gwbridge (masqueraded), publishes a port there, and a SIGKILLed daemon restarts with traffic kept and no leaks', async (t) => {
  const c = await clusterLab(t, { hosts: 1, ttl: 10 });
  const h1 = c.hosts[0];
  const d = await c.startDaemon(0);
  const ok = async (method: string, p: string, body?: unknown) => {
    const r = await c.daemons[0].request(method, p, body);
    assert.ok(r.status < 300, `${method} ${p} -> ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  };
  await serve(t, c.underlay.path, 'tcp', 7100);
  const net = await ok('POST', '/networks/create', {
    Name: 'ov',
    Driver: 'overlay',
    Options: { [OPT.vni]: '4600' },
    IPAM: { Config: [{ Subnet: '10.60.0.0/24' }] },
  });
  const inspect = await ok('GET', `/networks/${net.Id}`);
  assert.equal(inspect.Scope, 'global');
  await ok('POST', '/sandboxes', { Name: 'a', Networks: [{ Network: 'ov' }], Ports: ['8080:7000/tcp'] });
  const a = await ok('GET', '/sandboxes/a');
  const key = a.SandboxKey;
  assert.match(a.Networks.ov.IPAddress, /^10\.60\.0\.\d+$/);
  const routes = JSON.parse(runIn(key, 'ip', ['-j', 'route']));
  const def = routes.find((r: any) => r.dst === 'default');
  assert.equal(def?.dev, 'gwbridge', JSON.stringify(routes));
  assert.match(def.gateway, /^172\.\d+\.0\.1$/);
  const [eth0] = JSON.parse(runIn(key, 'ip', ['-j', 'link', 'show', 'eth0']));
  assert.equal(eth0.mtu, 1450);
  // Out: masqueraded to the host's address. In: the published port, from outside the host.
  await serve(t, key, 'tcp', 7000);
  const out = roundTrip(key, 'tcp', UNDERLAY_GW, 7100);
  assert.ok(out.ok && out.seenFrom === hostAddr(1), JSON.stringify(out));
  assert.ok(roundTrip(c.underlay.path, 'tcp', hostAddr(1), 8080).ok, 'published port through cnmd_gwbridge');

  // SIGKILL: the sandbox keeps its way out; the restart adopts everything and leaks nothing.
  await d.kill();
  assert.ok(roundTrip(key, 'tcp', UNDERLAY_GW, 7100).ok, 'egress while the daemon is down');
  const d2 = await c.restart(0);
  const ovNetns = () => new NetnsManager(path.join(d2.execRoot, 'overlay')).list();
  assert.deepEqual(ovNetns(), [`ov-${net.Id}`]);
  assert.equal(h1.ipj('link', 'show', 'master', 'cnmd_gwbridge').length, 1);
  // Store, kernel and iptables agree (the host's underlay eth0 is not cnmd's).
  await assertInvariants(d2, { foreignLinks: (n) => n === 'eth0' });
  assert.ok(roundTrip(c.underlay.path, 'tcp', hostAddr(1), 8080).ok, 'published port after the restart');
  assert.ok(roundTrip(key, 'tcp', UNDERLAY_GW, 7100).ok);
  // Removal: nothing of the overlay is left on the host.
  assert.equal((await d2.request('DELETE', '/sandboxes/a')).status < 300, true);
  assert.equal((await d2.request('DELETE', `/networks/${net.Id}`)).status < 300, true);
  await eventually(() => assert.equal(h1.ipj('link', 'show', 'master', 'cnmd_gwbridge').length, 0));
  assert.deepEqual(ovNetns(), []);
  assert.equal(h1.ipj('-d', 'link', 'show', 'type', 'vxlan').length, 0);
  await assertInvariants(d2, { foreignLinks: (n) => n === 'eth0' });
  assert.doesNotMatch(runIn(h1.path, 'iptables-save', ['-t', 'nat']), /DNAT.*:7000/);
});
