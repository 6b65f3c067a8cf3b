// The real Docker engine with cnmd-macvlan and cnmd-ipam's dhcp mode
// (--ipam-opt cnmd.ipam.mode=dhcp) against a real DHCP server: Debian's
// dnsmasq in an "external" netns on the parent's LAN. dnsmasq's lease file and
// log are the independent account: which MAC and client id hold which
// address, renewals (from the container's netns), releases on docker rm, the
// same address across a cnmd SIGKILL and restart; a silent server is a clear
// error at docker run and a warning at renewal, with nothing left behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { eventually, lab, runIn } from '../lib/fixture';
import { restartDaemon, startDaemon } from '../lib/daemon';
import { startEngine } from '../lib/engine';
import { dhcpLan, DhcpServer } from '../lib/dhcp-server';
import { ping } from '../lib/probe';

const SUBNET = '192.168.61';
/** dnsmasq's lease file writes a client id as colon-separated hex: type 0, then "cnmd:". */
const CNMD_CLIENT_ID = /^00:63:6e:6d:64:3a(:[0-9a-f]{2}){16}$/;

const acksFor = (server: DhcpServer, mac: string) =>
  server
    .log()
    .split('\n')
    .filter((x) => x.includes('DHCPACK') && x.includes(mac)).length;

test(
  'docker with cnmd-macvlan and cnmd-ipam dhcp mode: leases from the LAN server, renewed, kept across a cnmd restart, released on rm',
  { timeout: 600_000 },
  async (t) => {
    const l = await lab(t);
    const d = await startDaemon(t, l);
    // SandboxKey paths reachable from cnmd: it renews leases from the containers' netns.
    const e = await startEngine(t, l, {
      hostNs: d.host,
      pluginDir: d.pluginDir,
      tag: 'cnmd',
      shareNetns: true,
    });
    // The LAN: lan0 in the host netns (the engine's and cnmd's), its peer in ext where dnsmasq serves .100-.150.
    const server = await dhcpLan(t, l, d.host, SUBNET, { dns: [`${SUBNET}.1`], t1: 3 });
    const ext = server.ns;
    const probeNetns = () =>
      fs.readdirSync(path.join(d.execRoot, 'netns')).filter((x) => x.startsWith('dhcp-'));
    const hostMacvlans = () =>
      d.host.ipj('-d', 'link', 'show').filter((x: any) => x.linkinfo?.info_kind === 'macvlan');

    // Refused with a message naming what to fix.
    const refused = async (args: string, message: RegExp) => {
      const r = await e.docker(`network create ${args} bad`.split(' '), { allowFail: true });
      assert.notEqual(r.status, 0, args);
      assert.match(r.stderr, message);
    };
    const dhcp = '--ipam-driver cnmd-ipam --ipam-opt cnmd.ipam.mode=dhcp';
    await refused(
      `-d cnmd-macvlan -o parent=lan0 ${dhcp}v6`,
      /cnmd\.ipam\.mode=dhcpv6: cnmd-ipam knows the mode dhcp/,
    );
    await refused(`-d cnmd-bridge ${dhcp}`, /mode=dhcp: .*cnmd-macvlan networks and cnmd-ipvlan l2 networks/);
    await refused(
      `-d cnmd-macvlan ${dhcp}`,
      /mode=dhcp: a macvlan network without -o parent= .* is on no LAN/,
    );
    await refused(`-d cnmd-macvlan -o parent=lan0 ${dhcp} --ipv6`, /gives IPv4 addresses only \(no DHCPv6\)/);
    await refused(
      `-d cnmd-macvlan -o parent=lan0 ${dhcp} --ipam-opt cnmd.dhcp.timeout=0`,
      /cnmd\.dhcp\.timeout: "0"/,
    );
    // dnsmasq pings an address before it offers it (up to 3 s): the attach timeout is above that.
    await e.docker(
      `network create -d cnmd-macvlan -o parent=lan0 ${dhcp} --ipam-opt cnmd.dhcp.timeout=6 lan`.split(' '),
    );
    // No --subnet: the pool is 0.0.0.0/0, and its own address the stand-in gateway the engine insists on.
    const net = await e.inspect('lan');
    assert.equal(net.IPAM.Driver, 'cnmd-ipam');
    assert.deepEqual(
      net.IPAM.Config.map((c: any) => [c.Subnet, c.Gateway]),
      [['0.0.0.0/0', '0.0.0.0']],
    );
    await e.runDetached('c1', { network: 'lan' });
    await e.runDetached('c2', { network: 'lan' });
    const ip1 = await e.ip('c1', 'lan');
    const ip2 = await e.ip('c2', 'lan');
    const mac1 = (await e.inspect('c1')).NetworkSettings.Networks.lan.MacAddress;
    const mac2 = (await e.inspect('c2')).NetworkSettings.Networks.lan.MacAddress;
    // The server's account: each container's address is leased to its own MAC, under a cnmd client id.
    for (const [ip, mac] of [
      [ip1, mac1],
      [ip2, mac2],
    ]) {
      const lease = server.leases().find((x) => x.ip === ip);
      assert.ok(lease, `dnsmasq leased ${ip}: ${JSON.stringify(server.leases())}`);
      assert.equal(lease.mac, mac);
      assert.match(lease.clientId, CNMD_CLIENT_ID);
    }
    assert.notEqual(ip1, ip2);
    // The container's interface has that MAC and address, and the lease's router as its default route.
    const pid1 = await e.containerPid('c1');
    const [eth0] = JSON.parse(runIn(`/proc/${pid1}/ns/net`, 'ip', ['-j', '-d', 'addr', 'show', 'eth0']));
    assert.equal(eth0.address, mac1);
    assert.equal(eth0.linkinfo.info_kind, 'macvlan');
    assert.deepEqual(
      eth0.addr_info.filter((a: any) => a.family === 'inet').map((a: any) => `${a.local}/${a.prefixlen}`),
      [`${ip1}/24`],
    );
    assert.match(
      (await e.exec('c1', ['ip', 'route'])).stdout,
      new RegExp(`default via ${SUBNET}\\.1 dev eth0`),
    );
    await e.exec('c1', ['ping', '-c1', '-W2', `${SUBNET}.1`]);
    await e.exec('c1', ['ping', '-c1', '-W2', ip2]);
    assert.ok(ping(ext.path, ip1), 'ext -> c1 at its leased address');
    // Nothing of the probes is left: no netns, no macvlan in the host netns.
    assert.deepEqual(probeNetns(), []);
    assert.deepEqual(hostMacvlans(), []);

    // Renewed at T1 (3 s) from the container's netns: more ACKs for its MAC, the expiry moved.
    const expiry1 = server.leases().find((x) => x.ip === ip1)!.expiry;
    const acks1 = acksFor(server, mac1);
    await eventually(() => assert.ok(acksFor(server, mac1) > acks1, 'a renewal'), 20_000);
    await eventually(
      () => assert.ok(server.leases().find((x) => x.ip === ip1)!.expiry > expiry1, 'expiry moved'),
      20_000,
    );

    // cnmd SIGKILLed and restarted under the running containers: the lease is renewed at once, the same address.
    await d.kill();
    const acksBefore = acksFor(server, mac1);
    const d2 = await restartDaemon(t, l, d);
    await eventually(
      () => assert.ok(acksFor(server, mac1) > acksBefore, 'a renewal after the restart'),
      15_000,
    );
    assert.equal(await e.ip('c1', 'lan'), ip1);
    assert.ok(server.leases().some((x) => x.ip === ip1 && x.mac === mac1));
    await e.exec('c1', ['ping', '-c1', '-W2', `${SUBNET}.1`]);

    // docker rm: the address goes back to the server (gone from its lease file), through the restarted daemon.
    await e.docker(['rm', '-f', 'c1']);
    await eventually(
      () => assert.ok(!server.leases().some((x) => x.ip === ip1), JSON.stringify(server.leases())),
      10_000,
    );
    // Its link, moved back to the host netns by the engine, is removed though it was joined before the restart.
    await eventually(() => assert.deepEqual(hostMacvlans(), []));
    assert.match(server.log(), new RegExp(`DHCPRELEASE\\(up-lan0\\) ${ip1.replace(/\./g, '\\.')} ${mac1}`));

    // A server that stops answering: renewals warn, c2 keeps its address; a new container is refused clearly.
    await server.stop();
    await eventually(
      () => assert.match(d2.logs(), /dhcp renewal: no DHCP server answered on parent lan0/),
      20_000,
    );
    const r = await e.docker(['run', '-d', '--name', 'c3', '--network', 'lan', e.image, 'sleep', '60'], {
      allowFail: true,
    });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /dhcp on parent lan0: no DHCP server answered in 6 s/);
    await e.docker(['rm', '-f', 'c3'], { allowFail: true });
    assert.deepEqual(probeNetns(), []);
    assert.deepEqual(hostMacvlans(), []);
    assert.equal(await e.ip('c2', 'lan'), ip2);

    // The server back (renewals retry on their own backoff, up to a minute: not waited for here): rm releases,
    // the network goes whole.
    await server.start();
    await e.docker(['rm', '-f', 'c2']);
    await eventually(() => assert.ok(!server.leases().some((x) => x.ip === ip2)), 10_000);
    await e.docker(['network', 'rm', 'lan']);
    await eventually(() => assert.deepEqual(hostMacvlans(), []));
    assert.deepEqual(probeNetns(), []);
  },
);
