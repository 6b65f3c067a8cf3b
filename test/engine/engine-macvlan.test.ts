// The real Docker engine with cnmd's macvlan driver (cnmd-macvlan plugin
// socket): containers on a LAN made of a veth whose peer is an "outside"
// netns reach each other and the outside at their own addresses (no NAT: the
// server outside sees the container's address), the outside reaches them,
// and removing everything leaves no link behind. (ipvlan would be the same
// through cnmd-ipvlan; this kernel lacks IPVLAN, the kernel lane covers it.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventually, lab, runIn } from '../lib/fixture';
import { startDaemon } from '../lib/daemon';
import { startEngine } from '../lib/engine';
import { ping, serve } from '../lib/probe';

test(
  'docker with cnmd-macvlan: containers on the LAN reach each other and the outside, no NAT',
  { timeout: 600_000 },
  async (t) => {
    const l = await lab(t);
    const d = await startDaemon(t, l);
    const e = await startEngine(t, l, { hostNs: d.host, pluginDir: d.pluginDir, tag: 'cnmd' });
    const outside = await l.ns('outside');
    await d.host.handle.linkAdd({
      kind: 'veth',
      name: 'lan0',
      up: true,
      peer: { name: 'wan', netns: outside.path },
    });
    await outside.handle.linkSet('wan', { up: true });
    await outside.handle.addrAdd('wan', '192.168.77.200/24');
    await e.docker([
      'network',
      'create',
      '-d',
      'cnmd-macvlan',
      '--subnet',
      '192.168.77.0/24',
      '--gateway',
      '192.168.77.200',
      '-o',
      'parent=lan0',
      '-o',
      'macvlan_mode=bridge',
      'lan',
    ]);
    const net = await e.inspect('lan');
    assert.equal(net.Driver, 'cnmd-macvlan');
    assert.equal(net.Options.parent, 'lan0');
    await e.runDetached('c1', { network: 'lan' });
    await e.runDetached('c2', { network: 'lan' });
    const ip1 = await e.ip('c1', 'lan');
    const ip2 = await e.ip('c2', 'lan');
    // The container's interface is a macvlan child of lan0, alone (no docker_gwbridge).
    const pid = await e.containerPid('c1');
    const [link] = JSON.parse(runIn(`/proc/${pid}/ns/net`, 'ip', ['-j', '-d', 'link', 'show', 'eth0']));
    assert.equal(link.linkinfo.info_kind, 'macvlan');
    assert.equal(link.linkinfo.info_data.mode, 'bridge');
    assert.doesNotMatch((await e.exec('c1', ['ip', '-o', 'link', 'show'])).stdout, /eth1/);
    assert.match((await e.exec('c1', ['ip', 'route'])).stdout, /default via 192\.168\.77\.200 dev eth0/);
    await e.exec('c1', ['ping', '-c1', '-W2', ip2]);
    await e.exec('c1', ['ping', '-c1', '-W2', '192.168.77.200']);
    assert.ok(ping(outside.path, ip1), 'outside -> c1 at its own address');
    // A server outside sees the container's own address.
    await serve(t, outside.path, 'tcp', 7100);
    const seen = (await e.exec('c2', ['sh', '-c', 'echo hi | nc -w 2 192.168.77.200 7100'])).stdout;
    assert.equal(seen.trim(), `${ip2}|hi`);
    await e.docker(['rm', '-f', 'c1', 'c2']);
    await e.docker(['network', 'rm', 'lan']);
    await eventually(() =>
      assert.deepEqual(
        d.host.ipj('-d', 'link', 'show').filter((x: any) => x.linkinfo?.info_kind === 'macvlan'),
        [],
      ),
    );
  },
);
