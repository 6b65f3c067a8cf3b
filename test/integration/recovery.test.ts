// Restarts: a clean stop, a SIGKILL at random instants of a busy workload, and
// kernel state lost while the daemon was down. After each restart: nothing
// leaked (links, namespaces, rules, addresses), nothing allocated twice, and
// the sandboxes that survived still talk.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { eventually, lab, runIn } from '../lib/fixture';
import { RunningDaemon, restartDaemon, startDaemon } from '../lib/daemon';
import { ping, reach, serve } from '../lib/probe';
import { ok } from '../lib/api';

function rules(d: RunningDaemon): string {
  return ['iptables-save', 'ip6tables-save']
    .map((cmd) =>
      d.host
        .run(cmd, [])
        .replace(/^[#:].*$/gm, '')
        .replace(/\[\d+:\d+\]/g, '')
        // The proxy's own listening port changes at every start (its guard and REDIRECT targets).
        .replace(/(-A CNMD-PROXY -p tcp -m tcp --dport )\d+( -m conntrack)/g, '$1PROXY$2')
        .replace(/--to-ports \d+/g, '--to-ports PROXY'),
    )
    .join('\n')
    .split('\n')
    .filter((l) => l.trim())
    .sort()
    .join('\n');
}

/** What the kernel and the exec-root hold that cnmd made, as a comparable summary. */
function kernelState(d: RunningDaemon) {
  const links = d.host
    .ipj('-d', 'link')
    .filter((x: any) => /^(veth[0-9a-f]{11}|br-[0-9a-f]{12}|cnm0)$/.test(x.ifname));
  return {
    bridges: links
      .filter((x: any) => x.linkinfo?.info_kind === 'bridge')
      .map((x: any) => x.ifname)
      .sort(),
    veths: links
      .filter((x: any) => x.linkinfo?.info_kind === 'veth')
      .map((x: any) => x.ifname)
      .sort(),
    netns: fs
      .readdirSync(`${d.execRoot}/netns`)
      .filter((f) => f !== 'default')
      .sort(),
  };
}

/** Invariants after any restart: kernel objects match the API's view one to one; no address is used twice. */
async function assertConsistent(d: RunningDaemon) {
  return eventually(() => consistent(d));
}

async function consistent(d: RunningDaemon) {
  const sandboxes: any[] = await ok(d, 'GET', '/sandboxes');
  const networks: any[] = await ok(d, 'GET', '/networks');
  const k = kernelState(d);
  const endpoints = sandboxes.flatMap((s) => Object.values(s.Networks) as any[]).filter((e) => e.IPAddress);
  assert.deepEqual(k.netns, sandboxes.map((s) => s.Id).sort(), 'one netns per sandbox, no more');
  assert.deepEqual(
    k.veths,
    endpoints.map((e) => `veth${e.EndpointID.slice(0, 11)}`).sort(),
    'one veth per endpoint, no more',
  );
  const bridgeNets = networks.filter((n) => n.Driver === 'bridge');
  assert.equal(
    k.bridges.length,
    bridgeNets.length,
    `one bridge per bridge network: ${JSON.stringify(d.host.ipj('-d', 'link', 'show', 'type', 'bridge').map((x: any) => [x.ifname, x.ifalias]))} vs ${JSON.stringify(bridgeNets.map((n) => n.Id.slice(0, 12)))}`,
  );
  const ips = endpoints.map((e) => e.IPAddress);
  assert.equal(new Set(ips).size, ips.length, `no address twice: ${ips.join(' ')}`);
  for (const n of bridgeNets) {
    const gw = n.IPAM.Config[0]?.Gateway;
    assert.ok(!ips.includes(gw), `gateway ${gw} not handed to an endpoint`);
  }
  return { sandboxes, networks };
}

test('clean restart keeps networks, sandboxes, rules and connectivity, and adds nothing', async (t) => {
  const l = await lab(t);
  let d = await startDaemon(t, l);
  await ok(d, 'POST', '/networks/create', { Name: 'web', IPAM: { Config: [{ Subnet: '10.41.0.0/24' }] } });
  await ok(d, 'POST', '/sandboxes', { Name: 'a', Networks: [{ Network: 'web' }] });
  await ok(d, 'POST', '/sandboxes', { Name: 'b', Networks: [{ Network: 'web' }] });
  const b = await ok(d, 'GET', '/sandboxes/b');
  const a = await ok(d, 'GET', '/sandboxes/a');
  const before = { kernel: kernelState(d), rules: rules(d) };
  assert.equal(await d.stop(), 0);
  d = await restartDaemon(t, l, d);
  await eventually(() => assert.deepEqual(kernelState(d), before.kernel));
  assert.equal(rules(d), before.rules, 'rules identical after restart (no duplicates)');
  await serve(t, b.SandboxKey, 'tcp', 7000);
  assert.ok(reach(a.SandboxKey, 'tcp', b.Networks.web.IPAddress, 7000));
  // The embedded DNS is back too.
  const dig = runIn(a.SandboxKey, 'dig', ['@127.0.0.11', '+short', '+time=2', '+tries=1', 'b']).trim();
  assert.equal(dig, b.Networks.web.IPAddress);
  const c = await ok(d, 'POST', '/sandboxes', { Name: 'c', Networks: [{ Network: 'web' }] });
  assert.equal(
    (await ok(d, 'GET', `/sandboxes/${c.Id}`)).Networks.web.IPAddress,
    '10.41.0.4',
    'allocation continues after the restart',
  );
  await assertConsistent(d);
  // The defaults were made once, not again.
  const names = (await ok(d, 'GET', '/networks')).map((n: any) => n.Name).sort();
  assert.deepEqual(names, ['bridge', 'host', 'none', 'web']);
});

test('SIGKILL at random instants of a busy workload: restart leaves no leak and no double allocation', async (t) => {
  const l = await lab(t);
  let d = await startDaemon(t, l);
  await ok(d, 'POST', '/networks/create', { Name: 'busy', IPAM: { Config: [{ Subnet: '10.42.0.0/24' }] } });
  await ok(d, 'POST', '/sandboxes', { Name: 'keeper', Networks: [{ Network: 'busy' }] });
  // Deterministic "random" delays so a failure can be replayed.
  const delays = [3, 11, 19, 27, 41, 57, 73, 97];
  for (const [round, delay] of delays.entries()) {
    // A stream of creates, deletes and network churn, killed mid-flight.
    const work = (async () => {
      for (let i = 0; ; i++) {
        const name = `r${round}-${i}`;
        await d.request('POST', '/sandboxes', { Name: name, Networks: [{ Network: 'busy' }] });
        await d.request('POST', '/networks/create', {
          Name: `n${round}-${i}`,
          IPAM: { Config: [{ Subnet: `10.43.${(round * 16 + i) % 256}.0/24` }] },
        });
        if (i % 2 === 0) await d.request('DELETE', `/sandboxes/${name}`);
        await d.request('DELETE', `/networks/n${round}-${i}`);
      }
    })().catch(() => undefined);
    await new Promise((r) => setTimeout(r, delay));
    await d.kill();
    await work;
    d = await restartDaemon(t, l, d);
    await assertConsistent(d);
  }
  const { sandboxes } = await assertConsistent(d);
  // The survivors still talk to each other.
  const keeper = sandboxes.find((s) => s.Name === 'keeper');
  const other = sandboxes.find((s) => s.Name !== 'keeper' && s.Networks.busy);
  if (other) {
    await serve(t, other.SandboxKey, 'tcp', 7000);
    assert.ok(
      reach(keeper.SandboxKey, 'tcp', other.Networks.busy.IPAddress, 7000),
      'survivors talk after the kills',
    );
  }
  // Every leftover can be removed, and removing everything leaves nothing behind.
  for (const s of sandboxes) await ok(d, 'DELETE', `/sandboxes/${s.Id}`);
  await ok(d, 'POST', '/networks/prune');
  await eventually(() => {
    const k = kernelState(d);
    assert.deepEqual(k.veths, []);
    assert.deepEqual(k.netns, []);
    assert.deepEqual(k.bridges, ['cnm0']);
  });
  assert.doesNotMatch(
    d.host.run('iptables-save', []),
    /br-[0-9a-f]{12}/,
    'no rule of a removed network remains',
  );
});

test('kernel state lost while cnmd was down (a bridge and a sandbox netns deleted) is rebuilt at start', async (t) => {
  const l = await lab(t);
  let d = await startDaemon(t, l);
  const net = await ok(d, 'POST', '/networks/create', {
    Name: 'web',
    IPAM: { Config: [{ Subnet: '10.44.0.0/24' }] },
  });
  await ok(d, 'POST', '/sandboxes', { Name: 'a', Networks: [{ Network: 'web' }] });
  await ok(d, 'POST', '/sandboxes', { Name: 'b', Networks: [{ Network: 'web' }] });
  const a0 = await ok(d, 'GET', '/sandboxes/a');
  await d.stop();
  // Someone removes the bridge, and sandbox a's namespace disappears (as after a reboot).
  const bridge = `br-${net.Id.slice(0, 12)}`;
  d.host.run('ip', ['link', 'del', bridge]);
  require('../../native').native.netnsDelete(a0.SandboxKey);
  d = await restartDaemon(t, l, d);
  await assertConsistent(d);
  const a = await ok(d, 'GET', '/sandboxes/a');
  const b = await ok(d, 'GET', '/sandboxes/b');
  assert.equal(a.Networks.web.IPAddress, a0.Networks.web.IPAddress, 'a keeps its address');
  assert.equal(
    d.host.ipj('link', 'show', 'master', bridge).length,
    2,
    'both veths are ports of the rebuilt bridge',
  );
  await serve(t, b.SandboxKey, 'tcp', 7000);
  assert.ok(reach(a.SandboxKey, 'tcp', b.Networks.web.IPAddress, 7000), 'a talks to b again');
});

test('a veth named as an older cnmd named it (veth<7 hex>) is found by its alias at start: put back on its rebuilt bridge, removed with its sandbox', async (t) => {
  const l = await lab(t);
  let d = await startDaemon(t, l);
  const net = await ok(d, 'POST', '/networks/create', {
    Name: 'web',
    IPAM: { Config: [{ Subnet: '10.45.0.0/24' }] },
  });
  await ok(d, 'POST', '/sandboxes', { Name: 'a', Networks: [{ Network: 'web' }] });
  const a0 = await ok(d, 'GET', '/sandboxes/a');
  const epId: string = a0.Networks.web.EndpointID;
  await d.stop();
  const current = `veth${epId.slice(0, 11)}`;
  const older = `veth${epId.slice(0, 7)}`;
  d.host.run('ip', ['link', 'set', current, 'down']);
  d.host.run('ip', ['link', 'set', current, 'name', older]);
  d.host.run('ip', ['link', 'set', older, 'up']);
  // And the bridge goes too: only a veth found by its alias is put back on the new one.
  const bridge = `br-${net.Id.slice(0, 12)}`;
  d.host.run('ip', ['link', 'del', bridge]);
  d = await restartDaemon(t, l, d);
  await eventually(() =>
    assert.deepEqual(
      d.host.ipj('link', 'show', 'master', bridge).map((x: any) => x.ifname),
      [older],
    ),
  );
  assert.equal(d.host.ipj('link', 'show', 'type', 'veth').length, 1, 'no second veth made for the endpoint');
  const a = await ok(d, 'GET', '/sandboxes/a');
  assert.ok(
    ping(a.SandboxKey, a.Networks.web.Gateway),
    'the sandbox reaches its gateway through the old veth',
  );
  const r = await d.request('DELETE', `/sandboxes/${a.Id}`);
  assert.equal(r.status, 204);
  await eventually(() => assert.equal(d.host.ipj('link', 'show', 'type', 'veth').length, 0));
});
