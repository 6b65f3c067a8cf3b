// The embedded DNS with real clients: dig and glibc's getent inside sandboxes,
// a real upstream server in an "outside" netns for forwarding.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import type { TestContext } from 'node:test';
import { lab, runIn } from '../lib/fixture';
import { CNMCTL, RunningDaemon, startDaemon } from '../lib/daemon';
import { dnsUpstream } from '../lib/dns-upstream';
import { ok } from '../lib/api';
import { uplink } from '../lib/uplink';

function dig(nsPath: string, ...args: string[]): string {
  return runIn(nsPath, 'dig', ['@127.0.0.11', '+time=2', '+tries=1', ...args]);
}

function short(nsPath: string, ...args: string[]): string[] {
  return dig(nsPath, '+short', ...args)
    .trim()
    .split('\n')
    .filter(Boolean)
    .sort();
}

async function sb(
  d: RunningDaemon,
  name: string,
  networks: { Network: string; Aliases?: string[] }[],
  extra: Record<string, unknown> = {},
) {
  await ok(d, 'POST', '/sandboxes', { Name: name, Networks: networks, ...extra });
  return ok(d, 'GET', `/sandboxes/${name}`);
}

/** A daemon whose host resolv.conf points at upstream servers in an "outside" netns. */
async function setup(t: TestContext, upstreams: string[] = ['192.0.2.53']) {
  const l = await lab(t);
  const host = await l.ns('host');
  const outside = await l.ns('outside');
  await uplink(host, outside, { outsideIPs: upstreams });
  const resolv = path.join(l.root, 'resolv.conf');
  fs.writeFileSync(
    resolv,
    `${upstreams.map((u) => `nameserver ${u}`).join('\n')}\nsearch corp.example\noptions timeout:2\n`,
  );
  const d = await startDaemon(t, l, { hostNs: host, args: ['--resolv-conf', resolv] });
  return { l, d, outside };
}

test('names, hostnames, aliases and name.network resolve on shared networks only; AAAA of an IPv4-only name is empty; PTR; TTL 600', async (t) => {
  const { d, outside } = await setup(t);
  await dnsUpstream(t, outside.path, '192.0.2.53');
  await ok(d, 'POST', '/networks/create', {
    Name: 'front',
    EnableIPv6: true,
    IPAM: { Config: [{ Subnet: '10.61.0.0/24' }, { Subnet: 'fd61::/64' }] },
  });
  await ok(d, 'POST', '/networks/create', { Name: 'back', IPAM: { Config: [{ Subnet: '10.62.0.0/24' }] } });
  const a = await sb(d, 'alpha', [{ Network: 'front' }], { Hostname: 'alpha-host' });
  const b = await sb(d, 'beta', [{ Network: 'front', Aliases: ['api', 'web'] }]);
  const c = await sb(d, 'gamma', [{ Network: 'back' }]);
  const resolv = fs.readFileSync(a.ResolvConfPath, 'utf8');
  assert.match(resolv, /^nameserver 127\.0\.0\.11$/m);
  assert.match(resolv, /^search corp\.example$/m);
  assert.match(resolv, /^options .*ndots:0/m);
  const bIP = b.Networks.front.IPAddress;
  assert.deepEqual(short(a.SandboxKey, 'beta'), [bIP]);
  assert.deepEqual(short(a.SandboxKey, 'BETA'), [bIP], 'case-insensitive');
  assert.deepEqual(short(a.SandboxKey, 'api'), [bIP], 'alias');
  assert.deepEqual(short(a.SandboxKey, 'beta.front'), [bIP], 'name.network');
  assert.deepEqual(short(b.SandboxKey, 'alpha-host'), [a.Networks.front.IPAddress], 'hostname');
  assert.deepEqual(
    short(a.SandboxKey, 'AAAA', 'beta'),
    [b.Networks.front.GlobalIPv6Address],
    'AAAA of a dual-stack endpoint',
  );
  // gamma is on another network: not visible (forwarded, the upstream says NXDOMAIN).
  assert.match(dig(c.SandboxKey, 'beta'), /status: NXDOMAIN/);
  assert.match(dig(a.SandboxKey, 'gamma'), /status: NXDOMAIN/);
  const full = dig(a.SandboxKey, 'beta');
  assert.match(full, /status: NOERROR/);
  assert.match(full, /flags: qr aa rd ra/);
  assert.match(full, new RegExp(`beta\\.\\s+600\\s+IN\\s+A\\s+${bIP.replace(/\./g, '\\.')}`));
  // PTR of an endpoint address: name.network.
  assert.deepEqual(short(a.SandboxKey, '-x', bIP), ['beta.front.']);
  // An IPv4-only name asked for AAAA: NOERROR, no answer, not forwarded.
  await ok(d, 'POST', '/networks/create', { Name: 'v4only', IPAM: { Config: [{ Subnet: '10.63.0.0/24' }] } });
  const e = await sb(d, 'delta', [{ Network: 'v4only' }]);
  const f = await sb(d, 'epsilon', [{ Network: 'v4only' }]);
  const aaaa = dig(e.SandboxKey, 'AAAA', 'epsilon');
  assert.match(aaaa, /status: NOERROR/);
  assert.match(aaaa, /ANSWER: 0/);
  assert.deepEqual(short(e.SandboxKey, 'epsilon'), [f.Networks.v4only.IPAddress]);
  // glibc through the sandbox's resolv.conf (cnmctl sandbox exec mounts it at /etc/resolv.conf).
  const getent = execFileSync(
    process.execPath,
    [CNMCTL, '-H', d.hostUri, 'sandbox', 'exec', 'alpha', '--', 'getent', 'hosts', 'api'],
    { encoding: 'utf8' },
  );
  // glibc asks AAAA first for `getent hosts`: beta has both families on front.
  assert.match(
    getent,
    new RegExp(`^(${bIP.replace(/\./g, '\\.')}|${b.Networks.front.GlobalIPv6Address})\\s+api`, 'm'),
  );
});

test('fast path with real clients: EDNS0 OPT echoed (DO kept, none without EDNS0), names in any case, RD echoed, PTR of IPv6 addresses, TCP', async (t) => {
  const { d, outside } = await setup(t);
  await dnsUpstream(t, outside.path, '192.0.2.53');
  await ok(d, 'POST', '/networks/create', {
    Name: 'Fast',
    EnableIPv6: true,
    IPAM: { Config: [{ Subnet: '10.68.0.0/24' }, { Subnet: 'fd68::/64' }] },
  });
  const a = await sb(d, 'alpha', [{ Network: 'Fast' }]);
  const b = await sb(d, 'beta', [{ Network: 'Fast', Aliases: ['Svc'] }]);
  const bIP = b.Networks.Fast.IPAddress;
  const b6 = b.Networks.Fast.GlobalIPv6Address;
  // dig sends EDNS0 with a cookie by default; +dnssec sets DO.
  const edns = dig(a.SandboxKey, '+dnssec', 'beta');
  assert.match(edns, /status: NOERROR/);
  assert.match(edns, /; EDNS: version: 0, flags: do; udp: 4096/);
  assert.match(edns, new RegExp(`beta\\.\\s+600\\s+IN\\s+A\\s+${bIP.replace(/\./g, '\\.')}`));
  assert.match(dig(a.SandboxKey, 'beta'), /; EDNS: version: 0, flags:; udp: 4096/);
  const plain = dig(a.SandboxKey, '+noedns', 'beta');
  assert.match(plain, /status: NOERROR/);
  assert.doesNotMatch(plain, /OPT PSEUDOSECTION/);
  assert.match(dig(a.SandboxKey, '+norec', 'beta'), /flags: qr aa ra;/, 'RD not asked: not echoed');
  assert.deepEqual(short(a.SandboxKey, 'BeTa.fAsT'), [bIP], 'name.network in any case');
  assert.deepEqual(short(a.SandboxKey, 'svc'), [bIP], 'an alias given in upper case');
  assert.match(dig(a.SandboxKey, 'BETA'), /^BETA\.\s+600\s+IN\s+A\s/m, 'the name as asked');
  assert.deepEqual(short(a.SandboxKey, '-x', b6), ['beta.Fast.']);
  assert.deepEqual(short(a.SandboxKey, '+tcp', 'AAAA', 'beta'), [b6]);
  assert.deepEqual(short(a.SandboxKey, '+tcp', '+noedns', 'beta'), [bIP]);
});

test('records change the moment an endpoint joins or leaves; several addresses for one alias, shuffled; truncation and TCP', async (t) => {
  const { d, outside } = await setup(t);
  await dnsUpstream(t, outside.path, '192.0.2.53');
  await ok(d, 'POST', '/networks/create', { Name: 'svc', IPAM: { Config: [{ Subnet: '10.64.0.0/22' }] } });
  const client = await sb(d, 'client', [{ Network: 'svc' }]);
  assert.match(dig(client.SandboxKey, 'late'), /status: NXDOMAIN/);
  await sb(d, 'late', [{ Network: 'svc' }]);
  assert.equal(short(client.SandboxKey, 'late').length, 1, 'visible at once after joining');
  await ok(d, 'DELETE', '/sandboxes/late');
  assert.match(dig(client.SandboxKey, 'late'), /status: NXDOMAIN/, 'gone at once after leaving');
  // 40 replicas behind one alias: more than fits in 512 bytes.
  for (let i = 0; i < 40; i++) await sb(d, `rep${i}`, [{ Network: 'svc', Aliases: ['pool'] }]);
  const udp = dig(client.SandboxKey, '+ignore', '+noedns', 'pool');
  assert.match(udp, /flags: qr aa tc rd ra|flags: qr tc aa rd ra/, 'truncated over UDP');
  const tcp = short(client.SandboxKey, '+tcp', 'pool');
  assert.equal(tcp.length, 40, 'the whole answer over TCP');
  const edns = short(client.SandboxKey, '+bufsize=4096', 'pool');
  assert.equal(edns.length, 40, 'the whole answer within the EDNS0 size');
  const orders = new Set<string>();
  for (let i = 0; i < 5; i++) orders.add(dig(client.SandboxKey, '+short', '+tcp', 'pool'));
  assert.ok(orders.size > 1, 'round robin: the order changes');
});

test('forwarding: upstreams from the host, failover on REFUSED/timeout, NXDOMAIN final, --dns per sandbox; no embedded DNS on the default bridge', async (t) => {
  const { d, outside } = await setup(t, ['192.0.2.60', '192.0.2.61', '192.0.2.53']);
  await dnsUpstream(t, outside.path, '192.0.2.60', 'refuse');
  await dnsUpstream(t, outside.path, '192.0.2.61', 'mute');
  await dnsUpstream(t, outside.path, '192.0.2.53');
  await ok(d, 'POST', '/networks/create', { Name: 'app', IPAM: { Config: [{ Subnet: '10.65.0.0/24' }] } });
  const a = await sb(d, 'a', [{ Network: 'app' }]);
  // REFUSED from the first, silence from the second (4 s), an answer from the third.
  assert.deepEqual(short(a.SandboxKey, '+time=8', 'example.test'), ['203.0.113.7']);
  assert.match(dig(a.SandboxKey, '+time=8', 'missing.test'), /status: NXDOMAIN/);
  const own = await sb(d, 'own', [{ Network: 'app' }], {
    DNS: { Servers: ['192.0.2.53'], Search: ['x.test'], Options: ['attempts:2'] },
  });
  assert.deepEqual(short(own.SandboxKey, 'example.test'), ['203.0.113.7']);
  const ownResolv = fs.readFileSync(own.ResolvConfPath, 'utf8');
  assert.match(ownResolv, /^nameserver 127\.0\.0\.11$/m);
  assert.match(ownResolv, /^search x\.test$/m);
  assert.match(ownResolv, /^options attempts:2 ndots:0$/m);
  const def = await sb(d, 'plain', [{ Network: 'bridge' }]);
  const defResolv = fs.readFileSync(def.ResolvConfPath, 'utf8');
  assert.doesNotMatch(defResolv, /127\.0\.0\.11/);
  assert.match(defResolv, /^nameserver 192\.0\.2\.60$/m);
  const r = spawnSync(
    'nsenter',
    [`--net=${def.SandboxKey}`, 'dig', '@127.0.0.11', '+time=1', '+tries=1', 'a'],
    { encoding: 'utf8' },
  );
  assert.match(
    r.stdout,
    /connection refused|timed out|no servers could be reached/i,
    'nothing listens at 127.0.0.11 on the default bridge',
  );
});

test('robustness: malformed, truncated, zero-length and oversized packets and a flood do not stop the resolver; it never listens on a host interface; it can be turned off per network', async (t) => {
  const { d, outside } = await setup(t);
  await dnsUpstream(t, outside.path, '192.0.2.53');
  await ok(d, 'POST', '/networks/create', { Name: 'net', IPAM: { Config: [{ Subnet: '10.66.0.0/24' }] } });
  const a = await sb(d, 'one', [{ Network: 'net' }]);
  const b = await sb(d, 'two', [{ Network: 'net' }]);
  const junk = `
    const s = require('dgram').createSocket('udp4');
    const pkts = [Buffer.alloc(0), Buffer.from([1]), Buffer.alloc(12, 0xff), require('crypto').randomBytes(300), Buffer.alloc(9000, 7),
      Buffer.from('0001010000010000000000000376657200', 'hex')];
    let n = 0;
    for (let i = 0; i < 5000; i++) s.send(pkts[i % pkts.length], 53, '127.0.0.11', () => { if (++n === 5000) s.close(); });`;
  runIn(a.SandboxKey, process.execPath, ['-e', junk]);
  // The junk (some 9000-byte packets) may still fill the socket's receive queue when the
  // query goes out, and the kernel drops what does not fit: the query is retried, as any
  // stub resolver does (resolv.conf attempts). A dead or stuck resolver fails all three.
  assert.deepEqual(
    short(a.SandboxKey, '+tries=3', 'two'),
    [b.Networks.net.IPAddress],
    'the flooding sandbox is still answered after the junk',
  );
  assert.deepEqual(short(b.SandboxKey, 'one'), [a.Networks.net.IPAddress], 'another sandbox is unaffected');
  // Nothing of the resolver listens in the daemon's own netns.
  const listening = d.host.run('ss', ['-Hlnu']) + d.host.run('ss', ['-Hlnt']);
  assert.doesNotMatch(listening, /:53\s/);
  // Turned off for a network: plain resolv.conf, nothing at 127.0.0.11.
  await ok(d, 'POST', '/networks/create', {
    Name: 'nodns',
    Options: { 'cnmd.network.embedded_dns': 'false' },
    IPAM: { Config: [{ Subnet: '10.67.0.0/24' }] },
  });
  const c = await sb(d, 'three', [{ Network: 'nodns' }]);
  assert.doesNotMatch(fs.readFileSync(c.ResolvConfPath, 'utf8'), /127\.0\.0\.11/);
});
