// Port rules are reconciled at start like every other kernel object: a daemon
// killed while it removes sandboxes with published ports leaves DNAT, ACCEPT
// and hairpin MASQUERADE rules for endpoints that are gone; the next start
// removes every such rule, so no later sandbox inherits traffic for a host
// port it never published and the allocator's free ports have no rule. A
// restart with --userland-proxy switched drops the other mode's rules and
// sysctls.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import type { TestContext } from 'node:test';
import { lab, Lab } from '../lib/fixture';
import { RunningDaemon, startDaemon } from '../lib/daemon';
import { assertInvariants } from '../lib/invariants';
import { chaosRng } from '../lib/seed';
import { ok } from '../lib/api';

function save(d: RunningDaemon): string {
  return ['iptables-save', 'ip6tables-save'].map((c) => d.host.run(c, [])).join('\n');
}

/** The port rules in the saved tables, with the container address each names. */
function portRules(text: string): { line: string; ip: string }[] {
  const out: { line: string; ip: string }[] = [];
  for (const line of text.split('\n')) {
    const m =
      /^-A CNMD .* -j DNAT --to-destination \[?([0-9a-f.:]+?)\]?(?::[\d\-/]+)?$/.exec(line) ??
      /^-A CNMD -d (\S+)\/(?:32|128) .* -j ACCEPT$/.exec(line) ??
      /^-A POSTROUTING -s (\S+)\/(?:32|128) -d \1\/(?:32|128) .* -j MASQUERADE$/.exec(line);
    if (m) out.push({ line, ip: m[1] });
  }
  return out;
}

/** Every port rule names the address of a live sandbox that published ports, and each of those has its rules. */
async function onlyLivePortRules(d: RunningDaemon): Promise<void> {
  const sandboxes = (await ok(d, 'GET', '/sandboxes')) as any[];
  const live = new Set<string>();
  for (const s of sandboxes)
    for (const n of Object.values(s.Networks) as any[])
      if (Object.keys(s.Ports ?? {}).length)
        for (const ip of [n.IPAddress, n.GlobalIPv6Address]) if (ip) live.add(ip);
  const rules = portRules(save(d));
  const stale = rules.filter((r) => !live.has(r.ip));
  assert.deepEqual(stale, [], 'port rules of no live binding');
  for (const ip of live)
    assert.equal(
      rules.filter((r) => r.ip === ip).length >= 3,
      true,
      `${ip} has its DNAT, ACCEPT, MASQUERADE`,
    );
}

function setState(d: RunningDaemon, kind: string, id: string, state: string): void {
  const db = new Database(path.join(d.dataRoot, 'cnmd.db'));
  try {
    const row = db.prepare('SELECT value FROM objects WHERE kind = ? AND id = ?').get(kind, id) as {
      value: string;
    };
    const rec = JSON.parse(row.value);
    rec.state = state;
    db.prepare('UPDATE objects SET value = ? WHERE kind = ? AND id = ?').run(JSON.stringify(rec), kind, id);
  } finally {
    db.close();
  }
}

async function daemonWithNetwork(t: TestContext, args: string[] = []) {
  const l: Lab = await lab(t);
  const d = await startDaemon(t, l, { args });
  await ok(d, 'POST', '/networks/create', { Name: 'pa', IPAM: { Config: [{ Subnet: '10.150.0.0/24' }] } });
  return { l, d };
}

const restart = (t: TestContext, l: Lab, d: RunningDaemon, args: string[] = []) =>
  startDaemon(t, l, { hostNs: d.host, base: d.base, args });

test('a sandbox killed mid-delete leaves no port rule after the restart; its port and address serve the next ones only', async (t) => {
  const { l, d: d0 } = await daemonWithNetwork(t);
  let d = d0;
  const victim = await ok(d, 'POST', '/sandboxes', {
    Name: 'victim',
    Networks: [{ Network: 'pa' }],
    Ports: ['32125:80', '32126:81/udp'],
  });
  const ip = (await ok(d, 'GET', '/sandboxes/victim')).Networks.pa.IPAddress;
  assert.ok(save(d).includes(`--dport 32125 -j DNAT --to-destination ${ip}:80`));
  // Killed right after the delete's first commit (state 'deleting'), before any rule went.
  await d.kill();
  setState(d, 'sandbox', victim.Id, 'deleting');
  d = await restart(t, l, d);
  assert.equal((await d.request('GET', '/sandboxes/victim')).status, 404, 'the delete was finished');
  assert.doesNotMatch(save(d), /--dport 3212[56] /, 'no rule for the dead host ports');
  await onlyLivePortRules(d);
  // Its address goes to a sandbox that publishes nothing: no traffic of 32125 reaches it.
  await ok(d, 'POST', '/sandboxes', { Name: 'innocent', Networks: [{ Network: 'pa', IPv4Address: ip }] });
  assert.equal((await ok(d, 'GET', '/sandboxes/innocent')).Networks.pa.IPAddress, ip);
  assert.doesNotMatch(save(d), new RegExp(`--to-destination ${ip.replace(/\./g, '\\.')}:`));
  // The allocator has the port free, and the only rule for it is the new owner's.
  await ok(d, 'POST', '/sandboxes', { Name: 'owner', Networks: [{ Network: 'pa' }], Ports: ['32125:80'] });
  const owner = (await ok(d, 'GET', '/sandboxes/owner')).Networks.pa.IPAddress;
  const dnats = save(d)
    .split('\n')
    .filter((x) => / --dport 32125 -j DNAT /.test(x));
  assert.deepEqual(dnats, [`-A CNMD -p tcp -m tcp --dport 32125 -j DNAT --to-destination ${owner}:80`]);
  await assertInvariants(d);
});

test('SIGKILL at varied instants of parallel deletes of sandboxes with ports: after each restart only live bindings have rules', async (t) => {
  const rng = chaosRng(t);
  const { l, d: d0 } = await daemonWithNetwork(t);
  let d = d0;
  let port = 33000;
  for (let round = 0; round < 4; round++) {
    const names = Array.from({ length: 5 }, (_, i) => `r${round}s${i}`);
    for (const n of names)
      await ok(d, 'POST', '/sandboxes', {
        Name: n,
        Networks: [{ Network: 'pa' }],
        Ports: [`${port++}:80`, `${port++}:53/udp`],
      });
    // Deletes, plus creates with ports, in flight when the kill comes.
    const inflight = [
      ...names.map((n) => d.request('DELETE', `/sandboxes/${n}`).catch(() => undefined)),
      d
        .request('POST', '/sandboxes', {
          Name: `r${round}new`,
          Networks: [{ Network: 'pa' }],
          Ports: [`${port++}:80`],
        })
        .catch(() => undefined),
    ];
    await new Promise((r) => setTimeout(r, rng.int(40)));
    await d.kill();
    await Promise.all(inflight);
    d = await restart(t, l, d);
    await onlyLivePortRules(d);
    await assertInvariants(d);
  }
  // Everything removed: no port rule at all is left.
  for (const s of (await ok(d, 'GET', '/sandboxes')) as any[]) await ok(d, 'DELETE', `/sandboxes/${s.Id}`);
  assert.deepEqual(portRules(save(d)), []);
});

function sysctl(d: RunningDaemon, p: string): string {
  return d.host.run('cat', [`/proc/sys/${p}`]).trim();
}

test('a restart with --userland-proxy switched keeps only the new mode: rules, jumps, route_localnet', async (t) => {
  const { l, d: d0 } = await daemonWithNetwork(t);
  let d = d0;
  await ok(d, 'POST', '/sandboxes', { Name: 'web', Networks: [{ Network: 'pa' }], Ports: ['8080:80'] });
  // Served by the proxy alone (the sandbox has no IPv6): kept without it, but said to be unserved.
  await ok(d, 'POST', '/sandboxes', { Name: 'web6', Networks: [{ Network: 'pa' }], Ports: ['[::]:8085:80'] });
  const br = `br-${(await ok(d, 'GET', '/networks/pa')).Id.slice(0, 12)}`;
  const localMasq = new RegExp(`^-A POSTROUTING -o ${br} -m addrtype --src-type LOCAL -j MASQUERADE$`, 'm');
  const proxyMode = (text: string) => {
    assert.match(text, /^-A OUTPUT -d 127\.0\.0\.0\/8 -j CNMD-PROXY$/m);
    assert.match(text, /^-A CNMD-PROXY -d 127\.0\.0\.1\/32 -p tcp -m tcp --dport 8080 -j REDIRECT/m);
    assert.match(text, /^-A OUTPUT ! -d 127\.0\.0\.0\/8 -m addrtype --dst-type LOCAL -j CNMD$/m);
    assert.doesNotMatch(text, /^-A OUTPUT -m addrtype --dst-type LOCAL -j CNMD$/m);
    assert.doesNotMatch(text, localMasq);
    assert.equal(sysctl(d, `net/ipv4/conf/${br}/route_localnet`), '0');
  };
  proxyMode(d.host.run('iptables-save', ['-t', 'nat']));

  const nat6 = () => d.host.run('ip6tables-save', ['-t', 'nat']);
  const v6jumps = /^-A (OUTPUT|PREROUTING) -m addrtype --dst-type LOCAL -j CNMD-PROXY$/gm;
  assert.equal(nat6().match(v6jumps)?.length, 2, 'IPv6: every local destination goes to the proxy chain');
  // Without the proxy: no proxy chain or jump, the OUTPUT jump covers loopback, route_localnet on.
  await d.stop();
  // The IPv6 OUTPUT jump of earlier versions (::1 only) goes too.
  d.host.run('ip6tables', ['-t', 'nat', '-I', 'OUTPUT', '-d', '::1/128', '-j', 'CNMD-PROXY']);
  d = await restart(t, l, d, ['--userland-proxy', 'false']);
  assert.doesNotMatch(nat6(), /CNMD-PROXY/, 'no IPv6 proxy chain or jump');
  assert.match(
    d.logs(),
    /port not served: host address :: cannot be served: the sandbox has no IPv6 address/,
  );
  await ok(d, 'DELETE', '/sandboxes/web6'); // (no NAT rule of its own for onlyLivePortRules to find)
  // A network made in this mode, removed after the next switch: none of its rules may stay.
  const other = await ok(d, 'POST', '/networks/create', {
    Name: 'pb',
    IPAM: { Config: [{ Subnet: '10.151.0.0/24' }] },
  });
  const brB = `br-${other.Id.slice(0, 12)}`;
  let nat = d.host.run('iptables-save', ['-t', 'nat']);
  assert.doesNotMatch(nat, /CNMD-PROXY/);
  assert.match(nat, /^-A OUTPUT -m addrtype --dst-type LOCAL -j CNMD$/m);
  assert.doesNotMatch(nat, /^-A OUTPUT ! -d 127\.0\.0\.0\/8 -m addrtype --dst-type LOCAL -j CNMD$/m);
  assert.match(nat, localMasq);
  assert.match(nat, new RegExp(`^-A POSTROUTING -o ${brB} -m addrtype --src-type LOCAL -j MASQUERADE$`, 'm'));
  assert.equal(sysctl(d, `net/ipv4/conf/${br}/route_localnet`), '1');
  assert.doesNotMatch(save(d), /^-A CNMD-PROXY/m);
  await assertInvariants(d);

  // And back: the proxy's rules return, the other mode's are gone.
  await d.stop();
  d = await restart(t, l, d);
  proxyMode(d.host.run('iptables-save', ['-t', 'nat']));
  await ok(d, 'DELETE', '/networks/pb');
  assert.doesNotMatch(save(d), new RegExp(brB), `no rule names the removed bridge ${brB}`);
  await onlyLivePortRules(d);
  await assertInvariants(d);
  // An upgrade with the proxy on: the earlier IPv6 OUTPUT jump is replaced, not kept beside the new one.
  await d.stop();
  d.host.run('ip6tables', ['-t', 'nat', '-I', 'OUTPUT', '-d', '::1/128', '-j', 'CNMD-PROXY']);
  d = await restart(t, l, d);
  assert.doesNotMatch(nat6(), /^-A OUTPUT -d ::1\/128 -j CNMD-PROXY$/m);
  assert.equal(nat6().match(v6jumps)?.length, 2);
});

/** Every port rule of either family (prefixed 4/6), the proxy's per-start port masked: DNAT, ACCEPT, hairpin, REDIRECT. */
function allPortRules(d: RunningDaemon): string[] {
  return (['iptables-save', 'ip6tables-save'] as const)
    .flatMap((cmd, i) =>
      d.host
        .run(cmd, [])
        .split('\n')
        .filter(
          (l) =>
            / -j (DNAT|REDIRECT) /.test(l) ||
            /^-A CNMD -d .* -j ACCEPT$/.test(l) ||
            /^-A POSTROUTING -s (\S+) -d \1 .* -j MASQUERADE$/.test(l),
        )
        .map((l) => `${i ? 6 : 4} ${l.replace(/--to-ports \d+/, '--to-ports PROXY')}`),
    )
    .sort();
}

/** The ports the daemon's proxy holds open for UDP bindings (an independent observer: ss). */
function udpListeners(d: RunningDaemon): string[] {
  return d.host
    .run('ss', ['-Huln'])
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[3])
    .filter((a) => a && /:18\d\d\d$/.test(a))
    .sort();
}

test('IPv6 port rules recover as IPv4 ones: a clean restart keeps them exactly, sandboxes killed mid-delete leave no ip6tables rule or proxy socket, and nothing is left once all are removed', async (t) => {
  const { l, d: d0 } = await daemonWithNetwork(t);
  let d = d0;
  await ok(d, 'POST', '/networks/create', {
    Name: 'p6',
    EnableIPv6: true,
    IPAM: { Config: [{ Subnet: '10.152.0.0/24' }, { Subnet: 'fd15::/64' }] },
  });
  const make = (Name: string, Network: string, Ports: string[]) =>
    ok(d, 'POST', '/sandboxes', { Name, Networks: [{ Network }], Ports });
  await make('keep6', 'p6', ['18080:80', '18053:53/udp']);
  const victim6 = await make('victim6', 'p6', ['18081:80', '[::]:18082:81']);
  const victim4 = await make('victim4', 'pa', ['18083:80', '[::]:18084:80', '18085:53/udp']);
  await make('keep4', 'pa', ['18086:80', '18087:53/udp']);
  const rules = allPortRules(d);
  const v6 = rules.filter((r) => r.startsWith('6 '));
  assert.ok(
    v6.some((r) => /--dport 18080 -j DNAT --to-destination \[fd15::/.test(r)) &&
      v6.some((r) => /--dport 18084 -j REDIRECT/.test(r)),
    `ip6tables DNAT for dual-stack, REDIRECT for IPv4-only:\n${rules.join('\n')}`,
  );
  const sockets = udpListeners(d);
  assert.ok(sockets.includes('[::]:18085') && sockets.includes('[::]:18087'), sockets.join(' '));

  assert.equal(await d.stop(), 0);
  d = await restart(t, l, d);
  assert.deepEqual(allPortRules(d), rules, 'a clean restart: the same rules in both families, no more');
  assert.deepEqual(udpListeners(d), sockets, 'and the same proxy sockets');

  // Killed right after both deletes' first commit (state 'deleting'), before any rule went.
  const dead: string[] = [];
  for (const name of ['victim6', 'victim4']) {
    const n = Object.values((await ok(d, 'GET', `/sandboxes/${name}`)).Networks)[0] as any;
    dead.push(n.IPAddress, ...(n.GlobalIPv6Address ? [n.GlobalIPv6Address] : []));
  }
  assert.equal(dead.length, 3, `victim6 has both families: ${dead.join(' ')}`);
  const named = (r: string) =>
    dead.some((ip) => new RegExp(`[ \\[]${ip.replace(/\./g, '\\.')}[/\\]:]`).test(r));
  await d.kill();
  setState(d, 'sandbox', victim6.Id, 'deleting');
  setState(d, 'sandbox', victim4.Id, 'deleting');
  d = await restart(t, l, d);
  assert.equal((await d.request('GET', '/sandboxes/victim6')).status, 404);
  assert.equal((await d.request('GET', '/sandboxes/victim4')).status, 404);
  assert.deepEqual(
    allPortRules(d),
    rules.filter((r) => !/--dport 1808[1-5] /.test(r) && !named(r)),
    'only the live sandboxes keep rules',
  );
  assert.deepEqual(
    udpListeners(d),
    sockets.filter((a) => !a.endsWith(':18085')),
    'no proxy socket for the dead sandbox',
  );
  await onlyLivePortRules(d);
  await assertInvariants(d);
  for (const s of (await ok(d, 'GET', '/sandboxes')) as any[]) await ok(d, 'DELETE', `/sandboxes/${s.Id}`);
  assert.deepEqual(allPortRules(d), [], 'no port rule in either family');
  assert.deepEqual(udpListeners(d), [], 'no proxy socket');
});
