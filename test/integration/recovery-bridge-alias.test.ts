// A daemon killed between a bridge's creation and its alias (the kernel takes
// IFLA_IFALIAS only in a second message) leaves a bridge no alias marks as
// cnmd's. The restart that undoes the interrupted network create must remove
// it all the same, and must still leave alone a user's bridge that a network
// borrowed by name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { lab, runIn } from '../lib/fixture';
import { RunningDaemon, restartDaemon, startDaemon } from '../lib/daemon';
import { ok } from '../lib/api';

/** Puts a network record back in the state a killed create leaves: 'creating', no pools yet. */
function markCreating(d: RunningDaemon, net: any, id: string, options: Record<string, string> = {}): void {
  const db = new Database(path.join(d.dataRoot, 'cnmd.db'));
  try {
    const rec = { ...net, id, name: `${net.name}-${id.slice(0, 4)}`, options, pools: [], state: 'creating' };
    db.prepare('INSERT INTO objects (kind, id, value) VALUES (?, ?, ?)').run(
      'network',
      id,
      JSON.stringify(rec),
    );
  } finally {
    db.close();
  }
}

test("restart after a kill between a bridge and its alias: the unaliased bridge of cnmd's naming goes, a borrowed one stays", async (t) => {
  const l = await lab(t);
  let d = await startDaemon(t, l);
  const web = await ok(d, 'POST', '/networks/create', {
    Name: 'web',
    IPAM: { Config: [{ Subnet: '10.71.0.0/24' }] },
  });
  const stored = (await ok(d, 'GET', `/networks/${web.Id}`)) as any;
  assert.equal(await d.stop(), 0);
  const db = new Database(path.join(d.dataRoot, 'cnmd.db'));
  const rec = JSON.parse(
    (
      db.prepare('SELECT value FROM objects WHERE kind = ? AND id = ?').get('network', stored.Id) as {
        value: string;
      }
    ).value,
  );
  db.close();
  const killedId = 'ab'.repeat(32);
  const borrowedId = 'cd'.repeat(32);
  markCreating(d, rec, killedId);
  markCreating(d, rec, borrowedId, { 'com.docker.network.bridge.name': 'userbr0' });
  d.host.run('ip', ['link', 'add', `br-${killedId.slice(0, 12)}`, 'type', 'bridge']);
  d.host.run('ip', ['link', 'add', 'userbr0', 'type', 'bridge']);
  d = await restartDaemon(t, l, d);
  const names = d.host.ipj('link', 'show', 'type', 'bridge').map((x: any) => x.ifname);
  assert.ok(
    !names.includes(`br-${killedId.slice(0, 12)}`),
    `the half-made bridge is gone: ${names.join(' ')}`,
  );
  assert.ok(names.includes('userbr0'), "the user's bridge stays");
  assert.ok(names.includes(`br-${web.Id.slice(0, 12)}`), 'the ready network keeps its bridge');
  const left = (await ok(d, 'GET', '/networks')).map((n: any) => n.Name).sort();
  assert.deepEqual(left, ['bridge', 'host', 'none', 'web'], 'the interrupted creates are undone');
});

test("restart after a kill between an endpoint's veth and its alias: the unaliased veth (and its peer in a live sandbox) goes, a user's veth stays", async (t) => {
  const l = await lab(t);
  let d = await startDaemon(t, l);
  const web = await ok(d, 'POST', '/networks/create', {
    Name: 'web',
    IPAM: { Config: [{ Subnet: '10.72.0.0/24' }] },
  });
  const sb = await ok(d, 'POST', '/sandboxes', { Name: 'live', Networks: [{ Network: 'web' }] });
  const info = await ok(d, 'GET', `/sandboxes/${sb.Id}`);
  const keep = info.Networks.web;
  await d.kill();
  // What a connect killed after its veth was made, before the alias, leaves: cnmd's veth name on the
  // network's bridge, its peer inside the (surviving) sandbox; its 'creating' record is gone at restart.
  const br = `br-${web.Id.slice(0, 12)}`;
  d.host.run('ip', [
    'link',
    'add',
    'veth0123456789a',
    'type',
    'veth',
    'peer',
    'name',
    'eth1',
    'netns',
    info.SandboxKey,
  ]);
  d.host.run('ip', ['link', 'set', 'veth0123456789a', 'master', br]);
  d.host.run('ip', ['link', 'add', 'vethuser', 'type', 'veth', 'peer', 'name', 'vethuser1']);
  d = await restartDaemon(t, l, d);
  const veths = d.host.ipj('link', 'show', 'type', 'veth').map((x: any) => x.ifname);
  assert.ok(!veths.includes('veth0123456789a'), `the half-made veth is gone: ${veths.join(' ')}`);
  assert.ok(veths.includes('vethuser'), "the user's veth stays");
  const inside = JSON.parse(runIn(info.SandboxKey, 'ip', ['-j', 'link'])).map((x: any) => x.ifname);
  assert.ok(!inside.includes('eth1'), `its peer left the sandbox: ${inside.join(' ')}`);
  assert.ok(veths.includes(`veth${keep.EndpointID.slice(0, 11)}`), "the live endpoint's veth stays");
});
