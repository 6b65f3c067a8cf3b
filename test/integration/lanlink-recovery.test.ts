// macvlan networks and a daemon SIGKILLed at instants of a busy workload
// (networks with isolated parents and host-access shims made and removed,
// sandboxes joined and left): after each restart no isolated parent, shim or
// child link is left that no network or endpoint claims, and nothing is missing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventually, lab, lanParent, runIn } from '../lib/fixture';
import { RunningDaemon, restartDaemon, startDaemon } from '../lib/daemon';
import { ping } from '../lib/probe';

async function ok(d: RunningDaemon, method: string, p: string, body?: unknown): Promise<any> {
  const r = await d.request(method, p, body);
  assert.ok(r.status < 300, `${method} ${p} -> ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** Kernel objects vs the API's view, one to one. */
async function consistent(d: RunningDaemon) {
  const networks: any[] = (await ok(d, 'GET', '/networks')).filter((n: any) => n.Driver === 'macvlan');
  const sandboxes: any[] = await ok(d, 'GET', '/sandboxes');
  const marked = d.host
    .ipj('-d', 'link', 'show')
    .filter((x: any) => x.ifalias?.startsWith('cnmd:lan:'))
    .map((x: any) => x.ifname)
    .sort();
  const want = networks
    .flatMap((n) => [
      ...(n.Options.parent ? [] : [`dm-${n.Id.slice(0, 12)}`]),
      ...(n.Options['cnmd.macvlan.host_access'] ? [`cnh-${n.Id.slice(0, 11)}`] : []),
    ])
    .sort();
  assert.deepEqual(
    marked,
    want,
    'one isolated parent per parentless network, one shim per host-access network',
  );
  const temp = d.host.ipj('link', 'show').filter((x: any) => x.ifname.startsWith('cnt-'));
  assert.deepEqual(temp, [], 'no link left under its temporary name');
  // Host-side children of lan0: the shims only (endpoints' children live in their sandboxes).
  const children = d.host
    .ipj('-d', 'link', 'show', 'type', 'macvlan')
    .map((x: any) => x.ifname)
    .sort();
  assert.deepEqual(
    children,
    want.filter((n) => n.startsWith('cnh-')),
  );
  for (const s of sandboxes) {
    const links = JSON.parse(runIn(s.SandboxKey, 'ip', ['-j', 'link', 'show']))
      .map((x: any) => x.ifname)
      .filter((n: string) => n !== 'lo')
      .sort();
    assert.equal(
      links.length,
      Object.keys(s.Networks).length,
      `sandbox ${s.Name}: ${links} vs ${Object.keys(s.Networks)}`,
    );
  }
  const ips = sandboxes.flatMap((s) => Object.values(s.Networks).map((e: any) => e.IPAddress));
  assert.equal(new Set(ips).size, ips.length, `no address twice: ${ips}`);
  return { networks, sandboxes };
}

test('SIGKILL at instants of macvlan create/attach/remove: restart leaves no orphan parent, shim or child', async (t) => {
  const l = await lab(t);
  let d = await startDaemon(t, l);
  lanParent(d.host);
  await ok(d, 'POST', '/networks/create', {
    Name: 'base',
    Driver: 'macvlan',
    Options: { parent: 'lan0' },
    IPAM: { Config: [{ Subnet: '10.60.0.0/24' }] },
  });
  await ok(d, 'POST', '/sandboxes', { Name: 'keeper', Networks: [{ Network: 'base' }] });
  const delays = [4, 13, 22, 31, 45, 60, 80, 110, 140, 170, 200, 230];
  for (const [round, delay] of delays.entries()) {
    const work = (async () => {
      for (let i = 0; ; i++) {
        const sn = `10.61.${(round * 16 + i) % 256}.0/24`;
        const iso = `i${round}-${i}`;
        const shim = `h${round}-${i}`;
        await d.request('POST', '/networks/create', {
          Name: iso,
          Driver: 'macvlan',
          IPAM: { Config: [{ Subnet: sn }] },
        });
        await d.request('POST', '/networks/create', {
          Name: shim,
          Driver: 'macvlan',
          Options: { parent: 'lan0', 'cnmd.macvlan.host_access': 'true' },
          IPAM: {
            Config: [
              {
                Subnet: `10.62.${(round * 16 + i) % 256}.0/24`,
                AuxiliaryAddresses: { host: `10.62.${(round * 16 + i) % 256}.250` },
              },
            ],
          },
        });
        await d.request('POST', '/sandboxes', {
          Name: `s${round}-${i}`,
          Networks: [{ Network: 'base' }, { Network: iso }],
        });
        if (i % 2 === 0) await d.request('DELETE', `/sandboxes/s${round}-${i}`);
        // Connect and disconnect a sandbox that lives on: a kill here leaves the sandbox with a half-joined link.
        await d.request('POST', `/networks/${iso}/connect`, { Container: 'keeper' });
        await d.request('POST', `/networks/${iso}/disconnect`, { Container: 'keeper' });
        await d.request('DELETE', `/networks/${shim}`);
        if (i % 2 === 0) await d.request('DELETE', `/networks/${iso}`);
      }
    })().catch(() => undefined);
    await new Promise((r) => setTimeout(r, delay));
    await d.kill();
    await work;
    d = await restartDaemon(t, l, d);
    await eventually(() => consistent(d), 5000);
  }
  const { sandboxes } = await consistent(d);
  const keeper = sandboxes.find((s) => s.Name === 'keeper');
  const other = sandboxes.find((s) => s.Name !== 'keeper');
  if (other)
    assert.ok(ping(keeper.SandboxKey, other.Networks.base.IPAddress), 'survivors talk after the kills');
  for (const s of sandboxes) await ok(d, 'DELETE', `/sandboxes/${s.Id}`);
  await ok(d, 'POST', '/networks/prune');
  await eventually(() =>
    assert.deepEqual(
      d.host.ipj('-d', 'link', 'show').filter((x: any) => x.ifalias?.startsWith('cnmd:lan:')),
      [],
    ),
  );
});
