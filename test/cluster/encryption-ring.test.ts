// The encrypted overlays' key ring in etcd (issue 17), on this machine's
// kernel (no ESP: no encrypted network is made here, the ring and its
// rotation are): four daemons, three with the cluster secret and one with a
// wrong one, rotating every 3 s. Observed from outside with etcdctl: the
// ring's whole history (etcd keeps every revision), replayed to check the
// safe order; the leader key; the acks; every value searched for key material.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as crypto from 'node:crypto';
import { clusterLab, etcdAddr, hostAddr } from '../lib/cluster';
import { eventually } from '../lib/fixture';
import { clusterSecret, openRingKey, pairKey } from '../../src/cluster/keys';
import type { AckRecord, RingRecord } from '../../src/cluster/ring-agent';

interface Event {
  rev: number;
  key: string;
  value?: any;
  raw: Buffer;
}

test('key ring in etcd: sealed, one leader, rotation in the safe order, hosts down catch up, a wrong or missing secret is refused and disturbs nothing', async (t) => {
  const good = crypto.randomBytes(64);
  const dir = fs.mkdtempSync('/tmp/cnmd-ring-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'good'), good, { mode: 0o600 });
  fs.writeFileSync(path.join(dir, 'bad'), crypto.randomBytes(64), { mode: 0o600 });
  const secretOf = (i: number) => (i === 2 ? 'bad' : i === 3 ? undefined : 'good');
  const c = await clusterLab(t, {
    hosts: 4,
    args: ['--encryption-key-rotation', '3s'],
  });
  const hostArgs = (i: number) =>
    secretOf(i) ? ['--cluster-secret-file', path.join(dir, secretOf(i)!)] : [];
  const etcdctl = (...args: string[]) =>
    c.etcd[0].ns.run('etcdctl', [`--endpoints=http://${etcdAddr(1)}:2379`, ...args]);
  const get = (key: string) => {
    const out = JSON.parse(etcdctl('get', `/cnmd/v1/${key}`, '-w', 'json'));
    return out.kvs?.[0] ? JSON.parse(Buffer.from(out.kvs[0].value, 'base64').toString()) : undefined;
  };
  const ring = (): RingRecord | undefined => get('enc/ring');
  const acks = (): AckRecord[] => {
    const out = JSON.parse(etcdctl('get', '--prefix', '/cnmd/v1/enc/acks/', '-w', 'json'));
    return (out.kvs ?? []).map((kv: any) => JSON.parse(Buffer.from(kv.value, 'base64').toString()));
  };

  for (const i of [0, 1, 2, 3]) await c.startDaemon(i, hostArgs(i));
  const hostIds: string[] = [];
  for (const i of [0, 1, 2, 3]) {
    const recs = JSON.parse(etcdctl('get', '--prefix', '/cnmd/v1/hosts/', '-w', 'json')).kvs.map((kv: any) =>
      JSON.parse(Buffer.from(kv.value, 'base64').toString()),
    );
    hostIds[i] = recs.find((h: any) => h.vtep === hostAddr(i + 1)).id;
  }
  const secret = clusterSecret(good);
  const first = ring()!;
  assert.equal(first.fingerprint, secret.fingerprint, 'the ring is sealed under the good secret');

  // Refusals, each saying what to fix; the good hosts get as far as the kernel (which lacks ESP here).
  const create = (i: number) =>
    c.daemons[i].request('POST', '/networks/create', {
      Name: `enc${i}`,
      Driver: 'overlay',
      Options: { encrypted: '' },
    });
  const bad = await create(2);
  assert.equal(bad.status, 403, JSON.stringify(bad.body));
  assert.match(
    bad.body.message,
    /network create enc2: the cluster's encryption key ring \(sealed under secret [0-9a-f]{16}\) does not open with this host's --cluster-secret-file \(fingerprint [0-9a-f]{16}\)/,
  );
  const none = await create(3);
  assert.equal(none.status, 403, JSON.stringify(none.body));
  assert.match(none.body.message, /need the cluster secret; start cnmd with --cluster-secret-file/);
  const goodHost = await create(0);
  assert.equal(goodHost.status, 400, JSON.stringify(goodHost.body));
  assert.match(goodHost.body.message, /need IPsec ESP with AES-GCM/);

  // Rotations go on; the bad host never acks (nor is waited for), the host without a secret has no agent.
  await eventually(
    () => assert.ok(ring()!.tags[ring()!.tags.length - 1] >= first.tags[0] + 3, 'three rotations'),
    40_000,
  );
  assert.deepEqual(
    acks()
      .map((a) => a.host)
      .sort(),
    [hostIds[0], hostIds[1]].sort(),
  );

  // The leader: one good host. Killed (SIGKILL), the other good host takes over after its lease; rotation
  // goes on without waiting for the dead one; back, it catches up with the ring as it is then.
  const leader = get('enc/leader').host as string;
  const li = hostIds.indexOf(leader);
  assert.ok(li === 0 || li === 1, `leader ${leader} is a host with the good secret`);
  const other = 1 - li;
  await c.daemons[li].kill();
  const killedAt = ring()!.tags[ring()!.tags.length - 1];
  await eventually(() => assert.equal(get('enc/leader')?.host, hostIds[other]), 20_000);
  await eventually(
    () => assert.ok(ring()!.tags[ring()!.tags.length - 1] >= killedAt + 2, 'two rotations while down'),
    40_000,
  );
  assert.deepEqual(
    acks().map((a) => a.host),
    [hostIds[other]],
  );
  await c.restart(li);
  await eventually(() => {
    const r = ring()!;
    const mine = acks().find((a) => a.host === hostIds[li]);
    assert.ok(mine, 'the restarted host acks');
    assert.ok(
      mine.rx.includes(r.primary) || r.phase === 'installing',
      `caught up: ${JSON.stringify(mine)} ring ${JSON.stringify(r)}`,
    );
  }, 20_000);

  // A host that lost a send SA asks for a rotation (enc/rotate): the next rotation takes the request.
  const asked = ring()!.tags.at(-1)!;
  etcdctl('put', '/cnmd/v1/enc/rotate', JSON.stringify({ host: hostIds[other] }));
  await eventually(() => {
    assert.equal(get('enc/rotate'), undefined, 'the request is taken');
    assert.ok(ring()!.tags.at(-1)! > asked);
  }, 20_000);

  // The whole history of enc/ (etcd keeps every revision): the safe order held at every step.
  const history: Event[] = [];
  const w = JSON.parse(
    `[${c.etcd[0].ns
      .run('sh', [
        '-c',
        `timeout 3 etcdctl --endpoints=http://${etcdAddr(1)}:2379 watch --rev=1 --prefix /cnmd/v1/enc/ -w json || true`,
      ])
      .trim()
      .split('\n')
      .filter(Boolean)
      .join(',')}]`,
  );
  for (const resp of w)
    for (const ev of resp.Events ?? resp.events ?? []) {
      const raw = Buffer.from(ev.kv.value ?? '', 'base64');
      history.push({
        rev: Number(ev.kv.mod_revision),
        key: Buffer.from(ev.kv.key, 'base64').toString(),
        value: raw.length ? JSON.parse(raw.toString()) : undefined,
        raw,
      });
    }
  const ackNow = new Map<string, AckRecord>();
  let switches = 0;
  let prev: RingRecord | undefined;
  for (const e of history) {
    if (e.key.startsWith('/cnmd/v1/enc/acks/')) {
      const host = e.key.slice('/cnmd/v1/enc/acks/'.length);
      if (e.value) ackNow.set(host, e.value);
      else ackNow.delete(host);
      assert.notEqual(host, hostIds[2], 'the host with the wrong secret never acks');
    }
    if (e.key !== '/cnmd/v1/enc/ring' || !e.value) continue;
    const r = e.value as RingRecord;
    if (prev && r.phase === 'switching' && prev.phase === 'installing') {
      switches++;
      // Every live host that acked receives with the new send key before anyone sends with it.
      for (const [h, a] of ackNow)
        assert.ok(a.rx.includes(r.primary), `${h} lacked ${r.primary} at the switch (rev ${e.rev})`);
    }
    if (prev && r.phase === 'steady' && prev.phase === 'switching') {
      for (const [h, a] of ackNow)
        assert.equal(
          a.tx,
          prev.primary,
          `${h} did not send with ${prev.primary} when the oldest went (rev ${e.rev})`,
        );
      assert.ok(r.tags.length <= 2);
    }
    assert.ok(r.tags.length <= 3);
    prev = r;
  }
  assert.ok(switches >= 5, `${switches} switches in the history`);

  // No key material in clear anywhere in etcd, in any revision: every ring key ever made, opened with
  // the secret, and the pair keys derived from it, are absent from every value (raw, hex, base64).
  const secrets: Buffer[] = [];
  for (const e of history)
    if (e.key === '/cnmd/v1/enc/ring' && e.value)
      for (const k of (e.value as RingRecord).keys) {
        const key = openRingKey(secret, k);
        secrets.push(
          key,
          pairKey(key, k.tag, hostAddr(1), hostAddr(2)),
          pairKey(key, k.tag, hostAddr(2), hostAddr(1)),
        );
      }
  const everything = JSON.parse(etcdctl('get', '--prefix', '/cnmd/', '-w', 'json')).kvs.map((kv: any) =>
    Buffer.from(kv.value, 'base64'),
  );
  for (const v of [...everything, ...history.map((e) => e.raw)]) {
    const text = v.toString('latin1');
    for (const s of secrets) {
      assert.equal(v.indexOf(s), -1, 'a key in raw bytes');
      assert.ok(
        !text.includes(s.toString('hex')) && !text.includes(s.toString('base64')),
        'a key in hex or base64',
      );
    }
    assert.ok(!text.includes(good.toString('hex')) && !text.includes(good.toString('base64')), 'the secret');
  }
  assert.ok(secrets.length >= 15);
});
