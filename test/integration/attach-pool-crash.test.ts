// A sandbox create commits its 'creating' records and addresses, then gives a
// pooled netns the sandbox's path (NetnsPool.take's bind), then wires it. A
// daemon SIGKILLed between the commit and the bind leaves the records and a
// netns mounted at its pool path only; one killed while a join is under way in
// it leaves interfaces in it too. The bind is a fraction of a millisecond, so
// the test plants the worse of the two from real sandboxes (their netns, with
// their interfaces, moved from the sandbox's path to a pool path, their records
// set back to 'creating') and checks what the restart does with it: the netns
// gone (no mounted netns holds the marker link planted in it, the bridge veth's
// host side gone with it), no record, no file, and the addresses free again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import Database from 'better-sqlite3';
import { eventually, lab, lanParent, mountsUnder, runIn } from '../lib/fixture';
import { RunningDaemon, restartDaemon, startDaemon } from '../lib/daemon';
import { ok } from '../lib/api';

/**
 * Mount points of the netns with inode ino (a netns bind mount's root in mountinfo reads net:[inode]). Another
 * netns made since may have the inode again (the pool's refill): callers look inside.
 */
function mountsOfNetns(ino: number): string[] {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[3] === `net:[${ino}]`)
    .map((f) => f[4].replace(/\\040/g, ' '));
}

/** The names of the links in the netns mounted at p; none if it went meanwhile. */
function linksAt(p: string): string[] {
  try {
    return JSON.parse(runIn(p, 'ip', ['-j', 'link', 'show'])).map((x: { ifname: string }) => x.ifname);
  } catch (e) {
    if (!fs.existsSync(p)) return [];
    throw e;
  }
}

/** Sets the records of sandbox id and its endpoints back to 'creating', as the first commit left them. */
function backToCreating(d: RunningDaemon, id: string): void {
  const db = new Database(path.join(d.dataRoot, 'cnmd.db'));
  try {
    const get = db.prepare('SELECT value FROM objects WHERE kind = ? AND id = ?');
    const put = db.prepare('UPDATE objects SET value = ? WHERE kind = ? AND id = ?');
    const sb = JSON.parse((get.get('sandbox', id) as { value: string }).value);
    for (const [kind, rec] of [
      ['sandbox', sb],
      ...sb.endpoints.map((e: string) => [
        'endpoint',
        JSON.parse((get.get('endpoint', e) as { value: string }).value),
      ]),
    ]) {
      rec.state = 'creating';
      put.run(JSON.stringify(rec), kind, rec.id);
    }
  } finally {
    db.close();
  }
}

/** Moves sandbox id's netns from its path to a pool path, as a pooled netns taken but not yet bound. */
function unbind(d: RunningDaemon, id: string, poolId: string): void {
  const nsPath = path.join(d.execRoot, 'netns', id);
  const poolDir = path.join(d.execRoot, 'pool', 'netns');
  fs.mkdirSync(poolDir, { recursive: true });
  const poolPath = path.join(poolDir, poolId);
  fs.writeFileSync(poolPath, '', { mode: 0o444 });
  execFileSync('mount', ['--bind', nsPath, poolPath]);
  execFileSync('umount', [nsPath]);
  fs.unlinkSync(nsPath);
}

test('SIGKILL between the creating commit and the netns bind, interfaces in the pooled netns: the restart leaves no netns, link, record, file or address', async (t) => {
  const l = await lab(t);
  let d = await startDaemon(t, l);
  lanParent(d.host);
  await ok(d, 'POST', '/networks/create', {
    Name: 'lan',
    Driver: 'macvlan',
    Options: { parent: 'lan0' },
    IPAM: { Config: [{ Subnet: '10.72.0.0/24', Gateway: '10.72.0.1' }] },
  });
  await ok(d, 'POST', '/networks/create', { Name: 'web', IPAM: { Config: [{ Subnet: '10.73.0.0/24' }] } });
  const made: { id: string; name: string; ino: number; ips: Record<string, string>; veths: string[] }[] = [];
  for (const [name, nets] of [
    ['m', ['lan']],
    ['b', ['web']],
    ['mb', ['lan', 'web']],
  ] as const) {
    const { Id } = await ok(d, 'POST', '/sandboxes', {
      Name: name,
      Networks: nets.map((n) => ({ Network: n })),
    });
    const sb = await ok(d, 'GET', `/sandboxes/${Id}`);
    const ips: Record<string, string> = {};
    for (const n of nets) ips[n] = sb.Networks[n].IPAddress;
    const veths = nets.includes('web' as never) ? [`veth${sb.Networks.web.EndpointID.slice(0, 11)}`] : [];
    // A marker that only this netns holds: found in a mounted netns after the restart, this one leaked.
    runIn(sb.SandboxKey, 'ip', [
      'link',
      'add',
      `plant-${name}`,
      'type',
      'veth',
      'peer',
      'name',
      `plantp-${name}`,
    ]);
    made.push({ id: Id, name, ino: fs.statSync(sb.SandboxKey).ino, ips, veths });
  }
  const hostVeths = () => d.host.ipj('link', 'show', 'type', 'veth').map((x: any) => x.ifname as string);
  for (const m of made)
    for (const v of m.veths) assert.ok(hostVeths().includes(v), `${v} is there before the kill`);
  await d.kill();
  for (const [i, m] of made.entries()) {
    unbind(d, m.id, `00planted${i}`);
    backToCreating(d, m.id);
  }
  d = await restartDaemon(t, l, d);
  const poolDir = path.join(d.execRoot, 'pool', 'netns');
  await eventually(() => {
    for (const m of made)
      for (const mp of mountsOfNetns(m.ino))
        assert.ok(
          !linksAt(mp).includes(`plant-${m.name}`),
          `sandbox ${m.name}'s netns still mounted at ${mp}`,
        );
    const left = hostVeths();
    for (const m of made) for (const v of m.veths) assert.ok(!left.includes(v), `${v} went with its netns`);
    assert.deepEqual(
      fs.readdirSync(poolDir).filter((f) => f.startsWith('00planted')),
      [],
      'no planted pool entry left',
    );
  }, 10_000);
  assert.deepEqual(await ok(d, 'GET', '/sandboxes'), [], 'no sandbox record');
  assert.deepEqual(
    fs.readdirSync(path.join(d.execRoot, 'netns')).filter((f) => f !== 'default'),
    [],
    'no sandbox netns path',
  );
  assert.deepEqual(mountsUnder(path.join(d.execRoot, 'netns')), [], 'no mount under netns/');
  const filesDir = path.join(d.execRoot, 'sandboxes');
  const files = fs.existsSync(filesDir) ? fs.readdirSync(filesDir) : [];
  for (const m of made) assert.ok(!files.includes(m.id), `sandbox ${m.id.slice(0, 12)}'s files removed`);
  // The addresses are free: new sandboxes get them again, in the order they were handed out.
  for (const [i, m] of made.entries()) {
    const nets = Object.keys(m.ips);
    const { Id } = await ok(d, 'POST', '/sandboxes', {
      Name: `again${i}`,
      Networks: nets.map((n) => ({ Network: n })),
    });
    const sb = await ok(d, 'GET', `/sandboxes/${Id}`);
    for (const n of nets) assert.equal(sb.Networks[n].IPAddress, m.ips[n], `${n} address handed out again`);
  }
});
