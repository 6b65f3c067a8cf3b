// The engine removes containers and a network while cnmd is stopped: its calls
// fail, it retries, gives up on its side and never sends them again. cnmd
// started with --engine-host asks it, and removes what it no longer knows: the
// network whole (record, bridge, veths, rules, cnmd-ipam pool), and in a
// network it still knows, the endpoint of the removed container (veth, port
// rules, address). What the engine still holds stays and works.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lab } from '../lib/fixture';
import { restartDaemon, startDaemon } from '../lib/daemon';
import { startEngine } from '../lib/engine';

// Every plugin call of these retries for about 30 s with cnmd down (dockerd's plugin client).
const GIVE_UP_MS = 420_000;

test(
  'cnmd --engine-host after the engine removed a container and a network while cnmd was down: nothing of them left',
  { timeout: 600_000 },
  async (t) => {
    const l = await lab(t);
    const d = await startDaemon(t, l);
    const e = await startEngine(t, l, { hostNs: d.host, pluginDir: d.pluginDir, tag: 'gone' });
    const net = (name: string, subnet: string, bridge: string) =>
      e.docker([
        'network',
        'create',
        '-d',
        'cnmd-bridge',
        '--ipam-driver',
        'cnmd-ipam',
        '--subnet',
        subnet,
        '-o',
        `com.docker.network.bridge.name=${bridge}`,
        name,
      ]);
    await net('gone', '10.97.0.0/24', 'br-gone0');
    await net('kept', '10.98.0.0/24', 'br-kept0');
    const goneId = (await e.inspect('gone')).Id as string;
    const keptId = (await e.inspect('kept')).Id as string;
    await e.runDetached('g1', { network: 'gone', args: ['-p', '8181:80'] });
    await e.runDetached('k1', { network: 'kept' });
    await e.runDetached('k2', { network: 'kept', args: ['-p', '8282:80'] });
    const k1Ip = await e.ip('k1', 'kept');
    const k2Ip = await e.ip('k2', 'kept');
    const nat0 = d.host.run('iptables-save', ['-t', 'nat']);
    assert.match(nat0, /--dport 8181 -j DNAT --to-destination 10\.97\.0\.\d+:80/);
    assert.match(nat0, /--dport 8282 -j DNAT --to-destination 10\.98\.0\.\d+:80/);
    assert.equal(d.host.ipj('link', 'show', 'type', 'veth').length, 3);

    // cnmd stops; the engine removes g1, k2 and the network "gone" (each plugin call fails after its retries).
    assert.equal(await d.stop(), 0);
    await e.docker(['rm', '-f', 'g1', 'k2'], { timeoutMs: GIVE_UP_MS });
    await e.docker(['network', 'rm', 'gone'], { timeoutMs: GIVE_UP_MS });
    assert.equal((await e.docker(['network', 'inspect', goneId], { allowFail: true })).status, 1);
    // What the engine could not tell cnmd is still there while cnmd is down.
    assert.ok(d.host.ipj('link', 'show').some((x: any) => x.ifname === 'br-gone0'));

    const d2 = await restartDaemon(t, l, d, ['--engine-host', e.host]);
    // The network: no record, no bridge, no rule, no veth; the pool is free for cnmd's own networks.
    assert.equal((await d2.request('GET', `/networks/${goneId}`)).status, 404);
    assert.equal((await d2.request('GET', `/networks/${keptId}`)).status, 200);
    const links = d2.host.ipj('link', 'show');
    assert.ok(!links.some((x: any) => x.ifname === 'br-gone0'), 'bridge br-gone0 removed');
    assert.ok(
      !d2.host.ipj('addr', 'show').some((x: any) => x.addr_info?.some((a: any) => a.local === '10.97.0.1')),
      'no 10.97.0.1 left on any link',
    );
    // One veth left: k1's, on the kept bridge.
    const veths = d2.host.ipj('link', 'show', 'type', 'veth');
    assert.equal(veths.length, 1, `veths: ${veths.map((x: any) => x.ifname).join(' ')}`);
    assert.equal(veths[0].master, 'br-kept0');
    const rules = d2.host.run('iptables-save', []);
    assert.doesNotMatch(rules, /br-gone0|10\.97\.0\.|8181/, 'no rule of the removed network');
    assert.doesNotMatch(rules, /8282/, "no rule of k2's published port");
    assert.match(rules, /br-kept0/, 'the kept network keeps its rules');
    assert.match(d2.logs(), /engine network removed: the engine does not know it/);
    const created = await d2.request('POST', '/networks/create', {
      Name: 'reuse',
      IPAM: { Config: [{ Subnet: '10.97.0.0/24' }] },
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    // The kept network works, and k2's address is back in cnmd-ipam: a new container can have it.
    await e.exec('k1', ['ping', '-c1', '-W2', '10.98.0.1']);
    await e.runDetached('k3', { network: 'kept', args: ['--ip', k2Ip] });
    assert.equal(await e.ip('k3', 'kept'), k2Ip);
    await e.exec('k3', ['ping', '-c1', '-W2', k1Ip]);
    await e.docker(['rm', '-f', 'k1', 'k3']);
    await e.docker(['network', 'rm', 'kept']);
    await e.stop();
  },
);
