// drivers/remote and ipam/remote in a real daemon: cnmd using a Docker plugin
// by name for its own networks, found by discovery in its plugin dir. The
// plugins are cnmd's own sockets (so the plugin side is a real bridge driver)
// and a deliberately broken one served by the test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { eventually, lab } from '../lib/fixture';
import { CNMCTL, restartDaemon, startDaemon } from '../lib/daemon';
import { ping } from '../lib/probe';

test('a network on remote plugins by name (cnmd-bridge, cnmd-ipam through their sockets): sandboxes talk, survive a SIGKILL, and all of it is removed', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const created = await d.request('POST', '/networks/create', {
    Name: 'viaplugin',
    Driver: 'cnmd-bridge',
    IPAM: { Driver: 'cnmd-ipam', Config: [{ Subnet: '10.85.0.0/24' }] },
  });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const id: string = created.body.Id;
  // The plugin side made a real bridge for this id, with the gateway cnmd-ipam gave.
  const br = d.host.ipj('addr', 'show', `br-${id.slice(0, 12)}`)[0];
  assert.ok(
    br.addr_info.some((a: any) => a.local === '10.85.0.1' && a.prefixlen === 24),
    JSON.stringify(br.addr_info),
  );
  const inspect = (await d.request('GET', '/networks/viaplugin')).body;
  assert.equal(inspect.Driver, 'cnmd-bridge');
  assert.equal(inspect.IPAM.Driver, 'cnmd-ipam');
  assert.equal(inspect.IPAM.Config[0].Gateway, '10.85.0.1');

  const boxes: any[] = [];
  for (const name of ['alpha', 'bravo']) {
    const r = await d.request('POST', '/sandboxes', { Name: name, Networks: [{ Network: 'viaplugin' }] });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    boxes.push((await d.request('GET', `/sandboxes/${name}`)).body);
  }
  const ipB = boxes[1].Networks.viaplugin.IPAddress;
  assert.match(ipB, /^10\.85\.0\.\d+$/);
  // The engine-side move was done by drivers/remote: eth0 in the sandbox with the plugin's MAC and the address.
  const eth0 = JSON.parse(
    execFileSync('nsenter', [`--net=${boxes[0].SandboxKey}`, 'ip', '-j', 'addr', 'show', 'eth0'], {
      encoding: 'utf8',
    }),
  )[0];
  assert.equal(eth0.address, boxes[0].Networks.viaplugin.MacAddress);
  assert.ok(eth0.addr_info.some((a: any) => a.local === boxes[0].Networks.viaplugin.IPAddress));
  assert.ok(ping(boxes[0].SandboxKey, ipB), 'alpha reaches bravo over the plugin-made bridge');
  assert.ok(ping(boxes[0].SandboxKey, '10.85.0.1'), 'and the gateway (default route from Join)');

  const ls = execFileSync(process.execPath, [CNMCTL, '-H', d.hostUri, 'network', 'ls'], { encoding: 'utf8' });
  assert.match(ls, /viaplugin\s+cnmd-bridge\s+local/);

  await d.kill();
  const d2 = await restartDaemon(t, l, d);
  assert.ok(
    ping(boxes[1].SandboxKey, boxes[0].Networks.viaplugin.IPAddress),
    'still talking after a SIGKILL and restart',
  );
  const third = await d2.request('POST', '/sandboxes', {
    Name: 'charlie',
    Networks: [{ Network: 'viaplugin' }],
  });
  assert.equal(
    third.status,
    201,
    `the restored remote driver and IPAM still serve new endpoints: ${JSON.stringify(third.body)}`,
  );
  const ipC = (await d2.request('GET', '/sandboxes/charlie')).body.Networks.viaplugin.IPAddress;
  assert.ok(
    ![boxes[0].Networks.viaplugin.IPAddress, ipB].includes(ipC),
    'no address handed out twice after the restart',
  );

  for (const name of ['alpha', 'bravo', 'charlie'])
    assert.equal((await d2.request('DELETE', `/sandboxes/${name}`)).status, 204);
  assert.equal((await d2.request('DELETE', '/networks/viaplugin')).status, 204);
  await eventually(() =>
    assert.equal(
      d2.host
        .ipj('link', 'show')
        .filter(
          (x: any) =>
            x.ifname.startsWith('br-') || x.ifname.startsWith('veth') || x.ifname.startsWith('cnmd'),
        ).length,
      0,
    ),
  );
  // Neither the plugin side nor the IPAM leases keep anything.
  assert.deepEqual((await d2.request('GET', '/networks')).body.map((n: any) => n.Name).sort(), [
    'bridge',
    'host',
    'none',
  ]);
  const again = await d2.request('POST', '/networks/create', {
    Name: 'reuse',
    IPAM: { Config: [{ Subnet: '10.85.0.0/24' }] },
  });
  assert.equal(again.status, 201, `the pool went back: ${JSON.stringify(again.body)}`);
});

test('remote plugins that do not exist or misbehave: a clear error, nothing half-made, the daemon keeps serving', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  const missing = await d.request('POST', '/networks/create', { Name: 'n1', Driver: 'nosuch' });
  assert.equal(missing.status, 404);
  assert.match(missing.body.message, /nosuch/);
  const missingIpam = await d.request('POST', '/networks/create', {
    Name: 'n1',
    IPAM: { Driver: 'nosuchipam' },
  });
  assert.equal(missingIpam.status, 404);
  assert.match(missingIpam.body.message, /nosuchipam/);

  // A plugin that activates, then fails CreateNetwork with Err, and answers garbage to the IPAM.
  const sock = path.join(d.pluginDir, 'broken.sock');
  const calls: string[] = [];
  const server = http.createServer((req, res) => {
    calls.push(req.url!);
    req.resume();
    req.on('end', () => {
      res.setHeader('Content-Type', 'application/vnd.docker.plugins.v1.1+json');
      if (req.url === '/Plugin.Activate')
        return res.end(JSON.stringify({ Implements: ['NetworkDriver', 'IpamDriver'] }));
      if (req.url === '/NetworkDriver.GetCapabilities') return res.end(JSON.stringify({ Scope: 'local' }));
      if (req.url === '/NetworkDriver.CreateNetwork')
        return res.end(JSON.stringify({ Err: 'broken: no networks today' }));
      if (req.url === '/IpamDriver.GetDefaultAddressSpaces')
        return res.end(JSON.stringify({ LocalDefaultAddressSpace: 'L', GlobalDefaultAddressSpace: 'G' }));
      if (req.url === '/IpamDriver.GetCapabilities') return res.end('{}');
      res.end('{not json');
    });
  });
  await new Promise<void>((r) => server.listen(sock, r));
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  const refused = await d.request('POST', '/networks/create', {
    Name: 'n2',
    Driver: 'broken',
    IPAM: { Config: [{ Subnet: '10.86.0.0/24' }] },
  });
  assert.equal(refused.status, 500);
  assert.match(refused.body.message, /broken/);
  assert.match(refused.body.message, /no networks today/);
  assert.ok(calls.includes('/NetworkDriver.CreateNetwork'));
  const garbage = await d.request('POST', '/networks/create', { Name: 'n3', IPAM: { Driver: 'broken' } });
  assert.ok(garbage.status >= 400);
  assert.match(garbage.body.message, /broken/);
  // Nothing half-made: no records, the subnet still free, no bridge left.
  assert.deepEqual((await d.request('GET', '/networks')).body.map((n: any) => n.Name).sort(), [
    'bridge',
    'host',
    'none',
  ]);
  assert.equal(
    (
      await d.request('POST', '/networks/create', {
        Name: 'ok',
        IPAM: { Config: [{ Subnet: '10.86.0.0/24' }] },
      })
    ).status,
    201,
  );
  assert.equal(d.host.ipj('link', 'show').filter((x: any) => x.ifname.startsWith('br-')).length, 1);
  assert.ok(fs.existsSync(path.join(d.pluginDir, 'cnmd-bridge.sock')));
});
