// The real Docker engine (Debian's docker.io) with cnmd's plugins: a
// cnmd-bridge network with cnmd-ipam addresses, containers that reach each
// other by IP and by the engine's DNS, -p ports from outside and from the host,
// connect/disconnect of running containers, network rm, and both daemons
// restarted under running containers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { eventually, lab } from '../lib/fixture';
import { CNMCTL, restartDaemon, startDaemon } from '../lib/daemon';
import { HOST_IP, uplink } from '../lib/uplink';
import { startEngine } from '../lib/engine';
import { spawnSync } from 'node:child_process';

/** GET url from inside a netns with curl; the body, or undefined when nothing answered. */
function httpGet(nsPath: string, url: string): string | undefined {
  const r = spawnSync('nsenter', [`--net=${nsPath}`, 'curl', '-sf', '--max-time', '3', url], {
    encoding: 'utf8',
  });
  return r.status === 0 ? r.stdout : undefined;
}

// web serves its own /etc: GET /hostname answers with its container id, proving who answered.
const HTTPD = ['sh', '-c', "trap 'exit 0' TERM; httpd -f -p 80 -h /etc & wait"];

test(
  'docker with cnmd-bridge and cnmd-ipam: networks, names, ports, connect/disconnect, rm, cnmd and dockerd restarts',
  { timeout: 600_000 },
  async (t) => {
    const l = await lab(t);
    const d = await startDaemon(t, l);
    const e = await startEngine(t, l, { hostNs: d.host, pluginDir: d.pluginDir, tag: 'cnmd' });
    const outside = await l.ns('outside');
    await uplink(d.host, outside);
    const cnmctl = (...args: string[]) =>
      execFileSync(process.execPath, [CNMCTL, '-H', d.hostUri, ...args], { encoding: 'utf8' });

    await e.docker([
      'network',
      'create',
      '-d',
      'cnmd-bridge',
      '--ipam-driver',
      'cnmd-ipam',
      '--subnet',
      '10.93.0.0/24',
      '-o',
      'com.docker.network.bridge.name=br-eng0',
      'eng',
    ]);
    const net = await e.inspect('eng');
    assert.equal(net.Driver, 'cnmd-bridge');
    assert.equal(net.IPAM.Driver, 'cnmd-ipam');
    // cnmd made the bridge (the -o option reached it) and holds the engine's network, named by its id.
    assert.ok(
      d.host.ipj('addr', 'show', 'br-eng0')[0].addr_info.some((a: any) => a.local === '10.93.0.1'),
      'gateway on the cnmd bridge',
    );
    assert.match(
      cnmctl('network', 'ls'),
      new RegExp(`^${net.Id.slice(0, 12)}\\s+${net.Id.slice(0, 12)}\\s+bridge\\s+local$`, 'm'),
    );

    await e.runDetached('c1', { network: 'eng' });
    const webId = await e.runDetached('web', { network: 'eng', args: ['-p', '8080:80'], cmd: HTTPD });
    const fromWeb = (body: string | undefined) => body?.trim() === webId.slice(0, 12);
    const ip1 = await e.ip('c1', 'eng');
    const ipWeb = await e.ip('web', 'eng');
    assert.match(ip1, /^10\.93\.0\.\d+$/);
    // One interface: Join gave the gateway, so the engine added no docker_gwbridge.
    const links = (await e.exec('c1', ['ip', '-o', 'link', 'show'])).stdout;
    assert.doesNotMatch(links, /eth1/);
    assert.equal(
      d.host.ipj('link', 'show').filter((x: any) => x.ifname === 'docker_gwbridge').length,
      0,
      'no docker_gwbridge',
    );
    assert.match((await e.exec('c1', ['ip', 'route'])).stdout, /default via 10\.93\.0\.1 dev eth0/);
    await e.exec('c1', ['ping', '-c1', '-W2', ipWeb]);
    await e.exec('c1', ['ping', '-c1', '-W2', 'web']); // the engine's embedded DNS
    const mac = (await e.inspect('c1')).NetworkSettings.Networks.eng.MacAddress;
    assert.match(mac, /^02:42:0a:5d:00:/, 'the MAC cnmd chose, derived from the address');

    // -p: from the outside through the host address, and from the host itself.
    await eventually(
      () =>
        assert.ok(
          fromWeb(httpGet(outside.path, `http://${HOST_IP}:8080/hostname`)),
          'outside -> host:8080 -> web:80',
        ),
      10_000,
    );
    assert.ok(
      fromWeb(httpGet(d.host.path, 'http://127.0.0.1:8080/hostname')),
      'host loopback -> web:80 (cnmd proxy)',
    );
    assert.ok(fromWeb(httpGet(d.host.path, `http://${HOST_IP}:8080/hostname`)), 'host address -> web:80');
    assert.match(
      d.host.run('iptables-save', ['-t', 'nat']),
      /-A CNMD .*--dport 8080 -j DNAT --to-destination 10\.93\.0\.\d+:80/,
    );

    // connect / disconnect of a running container.
    await e.docker([
      'network',
      'create',
      '-d',
      'cnmd-bridge',
      '--ipam-driver',
      'cnmd-ipam',
      '--subnet',
      '10.94.0.0/24',
      'side',
    ]);
    await e.runDetached('s1', { network: 'side' });
    await e.docker(['network', 'connect', 'side', 'c1']);
    assert.match((await e.exec('c1', ['ip', '-o', 'addr', 'show'])).stdout, /eth1\s+inet 10\.94\.0\.\d+\/24/);
    await e.exec('c1', ['ping', '-c1', '-W2', 's1']);
    await e.docker(['network', 'disconnect', 'side', 'c1']);
    assert.doesNotMatch((await e.exec('c1', ['ip', '-o', 'addr', 'show'])).stdout, /10\.94\.0\./);
    assert.equal(
      (await e.exec('c1', ['ping', '-c1', '-W1', await e.ip('s1', 'side')], { allowFail: true })).status !==
        0,
      true,
      'disconnected: s1 unreachable',
    );
    await e.docker(['rm', '-f', 's1']);
    await e.docker(['network', 'rm', 'side']);
    await eventually(() =>
      assert.equal(
        d.host.ipj('addr', 'show').filter((x: any) => x.addr_info?.some((a: any) => a.local === '10.94.0.1'))
          .length,
        0,
        'side bridge removed',
      ),
    );
    assert.doesNotMatch(cnmctl('network', 'ls'), /side/);

    // cnmd killed and restarted under running containers: connectivity and ports stay.
    await d.kill();
    const d2 = await restartDaemon(t, l, d);
    await e.exec('c1', ['ping', '-c1', '-W2', ipWeb]);
    assert.ok(
      fromWeb(httpGet(outside.path, `http://${HOST_IP}:8080/hostname`)),
      'the port survives the cnmd restart',
    );
    assert.ok(
      fromWeb(httpGet(d2.host.path, 'http://127.0.0.1:8080/hostname')),
      'loopback too (the proxy is back)',
    );
    await e.run(['ping', '-c1', '-W2', 'web'], { network: 'eng' }); // new containers after the restart

    // dockerd restarted: its containers stop; started again, they work on the same network.
    await e.restart();
    await e.docker(['start', 'c1', 'web']);
    await e.exec('c1', ['ping', '-c1', '-W2', 'web']);
    await eventually(
      () =>
        assert.ok(
          fromWeb(httpGet(outside.path, `http://${HOST_IP}:8080/hostname`)),
          'the port is back after dockerd restarted',
        ),
      10_000,
    );

    // Dual stack and internal networks through the plugin.
    await e.docker([
      'network',
      'create',
      '-d',
      'cnmd-bridge',
      '--ipam-driver',
      'cnmd-ipam',
      '--ipv6',
      '--subnet',
      '10.95.0.0/24',
      '--subnet',
      'fd00:95::/64',
      'dual',
    ]);
    await e.runDetached('d1', { network: 'dual' });
    const addrs = (await e.exec('d1', ['ip', '-o', 'addr', 'show', 'eth0'])).stdout;
    assert.match(addrs, /inet 10\.95\.0\.\d+\/24/);
    assert.match(addrs, /inet6 fd00:95::[0-9a-f]+\/64/);
    assert.match((await e.exec('d1', ['ip', '-6', 'route'])).stdout, /default via fd00:95::1 dev eth0/);
    await e.exec('d1', ['ping', '-6', '-c1', '-W2', 'fd00:95::1']);
    await e.docker([
      'network',
      'create',
      '-d',
      'cnmd-bridge',
      '--ipam-driver',
      'cnmd-ipam',
      '--internal',
      '--subnet',
      '10.96.0.0/24',
      'closed',
    ]);
    await e.runDetached('i1', { network: 'closed' });
    await e.runDetached('i2', { network: 'closed' });
    await e.exec('i1', ['ping', '-c1', '-W2', 'i2']);
    assert.doesNotMatch(
      (await e.exec('i1', ['ip', 'route'])).stdout,
      /default/,
      'an internal network gives no default route',
    );
    assert.notEqual(
      (await e.exec('i1', ['ping', '-c1', '-W1', HOST_IP], { allowFail: true })).status,
      0,
      'nor a way out',
    );
    await e.docker(['rm', '-f', 'd1', 'i1', 'i2']);
    await e.docker(['network', 'rm', 'dual', 'closed']);

    // Removal through the engine leaves cnmd with nothing of it.
    await e.docker(['rm', '-f', 'c1', 'web']);
    await e.docker(['network', 'rm', 'eng']);
    await eventually(() =>
      assert.equal(
        d2.host
          .ipj('link', 'show')
          .filter(
            (x: any) => x.ifname === 'br-eng0' || x.ifname.startsWith('veth') || x.ifname.startsWith('cnmd'),
          ).length,
        0,
      ),
    );
    assert.doesNotMatch(d2.host.run('iptables-save', ['-t', 'nat']), /8080/);
    const nets = (await d2.request('GET', '/networks')).body.map((n: any) => n.Name).sort();
    assert.deepEqual(nets, ['bridge', 'host', 'none']);
    // The pool is back in cnmd's IPAM.
    assert.equal(
      (
        await d2.request('POST', '/networks/create', {
          Name: 'after',
          IPAM: { Config: [{ Subnet: '10.93.0.0/24' }] },
        })
      ).status,
      201,
    );
    await e.stop();
  },
);
