// The iptables backend against real iptables (nf_tables) inside lab namespaces: the
// backend runs iptables-restore/-save through `nsenter --net=<path>`; the machine's own
// firewall is never touched. State is read back independently with iptables-save.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { CnmdError } from '../../src/errors';
import {
  BatchBuilder,
  IptablesBackend,
  baseRuleList,
  baseRules,
  canonicalRule,
  defaultExec,
  mergeBatches,
  networkRuleList,
  networkRules,
  removeBaseRules,
  removeNetworkRules,
  type BridgeNetworkSpec,
  type Exec,
  type Family,
} from '../../src/firewall';
import { lab, type Ns } from '../lib/fixture';
import { ping, reach, serve } from '../lib/probe';
import { guardHostFirewall } from '../lib/host-firewall';

guardHostFirewall();

/** iptables-save / ip6tables-save of a netns, without the dated comments and with zeroed counters. */
function saved(ns: Ns, family: Family = 'ipv4'): string {
  return ns
    .run(family === 'ipv4' ? 'iptables-save' : 'ip6tables-save', [])
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/, '[0:0]'))
    .join('\n');
}

/** `-A CHAIN rule` lines per table of a save, as a multiset-friendly list. */
function ruleLines(save: string): string[] {
  const out: string[] = [];
  let table = '';
  for (const l of save.split('\n')) {
    if (l.startsWith('*')) table = l.slice(1);
    else if (l.startsWith('-A ')) out.push(`${table} ${l}`);
  }
  return out;
}

function counting(): { exec: Exec; calls: string[] } {
  const inner = defaultExec();
  const calls: string[] = [];
  return {
    calls,
    exec: (file, args, input, opts) => {
      calls.push([file, ...args].join(' '));
      return inner(file, args, input, opts);
    },
  };
}

async function host(t: TestContext): Promise<Ns> {
  const l = await lab(t);
  return l.ns('host');
}

const netA: BridgeNetworkSpec = {
  bridge: 'br-aaaaaaaaaaaa',
  subnets: { v4: '10.61.0.0/24', v6: 'fd00:61::/64' },
  icc: true,
  masquerade: true,
  internal: false,
};
const netB: BridgeNetworkSpec = {
  bridge: 'br-bbbbbbbbbbbb',
  subnets: { v4: '10.62.0.0/24' },
  icc: false,
  masquerade: true,
  internal: false,
};
const netI: BridgeNetworkSpec = {
  bridge: 'br-iiiiiiiiiiii',
  subnets: { v4: '10.63.0.0/24' },
  icc: true,
  masquerade: true,
  internal: true,
};

test('base layout applied twice is idempotent; a fresh backend finds every rule as iptables-save prints it', async (t) => {
  const ns = await host(t);
  const c = counting();
  const fw = new IptablesBackend({ verify: true, netns: ns.path, exec: c.exec });
  await fw.apply(baseRules({ ipv6: true }));
  const v4 = saved(ns, 'ipv4');
  const v6 = saved(ns, 'ipv6');
  await fw.apply(baseRules({ ipv6: true }));
  assert.equal(saved(ns, 'ipv4'), v4);
  assert.equal(saved(ns, 'ipv6'), v6);
  // No rule twice.
  const lines = ruleLines(v4);
  assert.equal(new Set(lines).size, lines.length);
  // Every layout rule is there under the text canonicalRule predicts.
  for (const r of baseRuleList({ ipv6: true })) {
    const save = r.family === 'ipv4' ? v4 : v6;
    assert.ok(
      ruleLines(save).includes(`${r.table} -A ${r.chain} ${canonicalRule(r.rule, r.family)}`),
      `${r.family} ${r.table} ${r.chain} ${r.rule}`,
    );
  }
  assert.deepEqual(await fw.chainRules('filter', 'FORWARD'), [
    '-j CNMD-USER',
    '-j CNMD-ISOLATION-STAGE-1',
    '-j CNMD-FORWARD',
  ]);
  // A new backend (empty cache, e.g. after a daemon restart) reads the tables and writes nothing.
  const fresh = new IptablesBackend({ verify: true, netns: ns.path, exec: c.exec });
  await fresh.apply(baseRules({ ipv6: true }));
  assert.equal(fresh.stats.restores, 0);
  assert.equal(fresh.stats.saves, 2);
  assert.equal(saved(ns, 'ipv4'), v4);
  t.diagnostic(`processes: ${c.calls.map((x) => x.split(' ')[2]).join(', ')}`);
});

test('ensureChain never flushes an existing chain (a :CHAIN declaration would)', async (t) => {
  const ns = await host(t);
  const fw = new IptablesBackend({ verify: true, netns: ns.path });
  await fw.apply(baseRules());
  // An operator's rule in CNMD-USER, added behind cnmd's back.
  ns.run('iptables', ['-I', 'CNMD-USER', '-s', '192.0.2.0/24', '-j', 'DROP']);
  const before = saved(ns);
  await new IptablesBackend({ verify: true, netns: ns.path }).apply(baseRules());
  assert.equal(saved(ns), before);
  assert.deepEqual(await fw.chainRules('filter', 'CNMD-USER'), ['-s 192.0.2.0/24 -j DROP', '-j RETURN']);
});

test('two networks added, one removed: exactly its rules go, and removal is idempotent', async (t) => {
  const ns = await host(t);
  const fw = new IptablesBackend({ verify: true, netns: ns.path });
  await fw.apply(baseRules({ ipv6: true }));
  await fw.apply(networkRules(netB));
  await fw.apply(networkRules(netI));
  const onlyB = { v4: saved(ns, 'ipv4'), v6: saved(ns, 'ipv6') };
  await fw.apply(networkRules(netA));
  const both = { v4: saved(ns, 'ipv4'), v6: saved(ns, 'ipv6') };
  // What A added is exactly A's rules (in iptables-save's spelling).
  for (const family of ['ipv4', 'ipv6'] as const) {
    const key = family === 'ipv4' ? 'v4' : 'v6';
    const added = ruleLines(both[key]).filter((l) => !ruleLines(onlyB[key]).includes(l));
    const expected = networkRuleList(netA)
      .filter((r) => r.family === family)
      .map((r) => `${r.table} -A ${r.chain} ${canonicalRule(r.rule, family)}`);
    assert.deepEqual([...added].sort(), [...expected].sort(), family);
    assert.equal(ruleLines(both[key]).length, ruleLines(onlyB[key]).length + expected.length);
  }
  // FORWARD holds only the jumps; the newest network's accepts come first in CNMD-FORWARD.
  assert.deepEqual(await fw.chainRules('filter', 'FORWARD'), [
    '-j CNMD-USER',
    '-j CNMD-ISOLATION-STAGE-1',
    '-j CNMD-FORWARD',
  ]);
  assert.deepEqual(
    (await fw.chainRules('filter', 'CNMD-FORWARD'))[0],
    `-o ${netA.bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
  );
  assert.deepEqual((await fw.chainRules('filter', 'CNMD-ISOLATION-STAGE-1')).slice(-1), ['-j RETURN']);
  // Remove A with a fresh backend (state read from the kernel, not from the cache that added it).
  const other = new IptablesBackend({ verify: true, netns: ns.path });
  await other.apply(removeNetworkRules(netA));
  assert.equal(saved(ns, 'ipv4'), onlyB.v4);
  assert.equal(saved(ns, 'ipv6'), onlyB.v6);
  const restores = other.stats.restores;
  await other.apply(removeNetworkRules(netA));
  assert.equal(other.stats.restores, restores, 'nothing left to remove: no process');
  // Everything off: base removal takes the remaining network rules' chains too, only FORWARD etc. remain.
  await other.apply(
    mergeBatches(removeNetworkRules(netB), removeNetworkRules(netI), removeBaseRules({ ipv6: true })),
  );
  assert.deepEqual(ruleLines(saved(ns, 'ipv4')), []);
  assert.deepEqual(ruleLines(saved(ns, 'ipv6')), []);
  assert.doesNotMatch(saved(ns, 'ipv4'), /CNMD/);
});

test('a rule iptables rejects gives a typed error and leaves the tables exactly as before', async (t) => {
  const ns = await host(t);
  const fw = new IptablesBackend({ verify: true, netns: ns.path });
  await fw.apply(baseRules({ ipv6: true }));
  await fw.apply(networkRules(netB));
  const before = { v4: saved(ns, 'ipv4'), v6: saved(ns, 'ipv6') };
  const unchanged = (why: string) => {
    assert.equal(saved(ns, 'ipv4'), before.v4, why);
    assert.equal(saved(ns, 'ipv6'), before.v6, why);
  };

  // 1. Kernel refusal (MASQUERADE is a nat target) in filter, after nat changes that
  //    iptables-restore commits first: they are rolled back.
  const k = new BatchBuilder();
  k.in('nat')
    .ensureChain('CNMD-EXTRA')
    .append('CNMD-EXTRA', '-j RETURN')
    .ensureRule('POSTROUTING', '-s 10.99.0.0/24 -j MASQUERADE', { position: 1 });
  k.in('filter')
    .deleteIfPresent('CNMD-FORWARD', `-o ${netB.bridge} -j CNMD`)
    .append('CNMD', '-o br-x -j MASQUERADE');
  await assert.rejects(fw.apply(k.build()), (e: unknown) => {
    assert.ok(e instanceof CnmdError);
    assert.equal(e.code, 'KERNEL_ERROR');
    assert.equal(e.op, 'firewall apply');
    assert.equal(e.object, '-t filter -A CNMD -o br-x -j MASQUERADE');
    assert.equal(e.errno, 'EINVAL');
    assert.match(e.message, /rolled back/);
    t.diagnostic(e.message);
    return true;
  });
  unchanged('kernel refusal');
  assert.ok(fw.stats.rollbacks >= 1, 'the committed nat table was rolled back');

  // 2. Parse error (unknown match): INVALID_ARGUMENT, named rule.
  const p = new BatchBuilder();
  p.in('nat').ensureRule('POSTROUTING', '-s 10.98.0.0/24 -j MASQUERADE', { position: 1 });
  p.in('filter').ensureChain('CNMD-TMP').append('CNMD-TMP', '-m nosuchmatch --foo -j ACCEPT');
  await assert.rejects(fw.apply(p.build()), (e: unknown) => {
    assert.ok(e instanceof CnmdError);
    assert.equal(e.code, 'INVALID_ARGUMENT');
    assert.equal(e.object, '-t filter -A CNMD-TMP -m nosuchmatch --foo -j ACCEPT');
    t.diagnostic(e.message);
    return true;
  });
  unchanged('parse error');

  // 3. IPv4 applies cleanly, IPv6 fails: the IPv4 commit is undone too.
  const f = new BatchBuilder();
  f.in('filter', 'ipv4').ensureRule('CNMD-USER', '-s 192.0.2.0/24 -j DROP', { position: 1 });
  f.in('filter', 'ipv6')
    .ensureRule('CNMD-USER', '-s 2001:db8::/32 -j DROP', { position: 1 })
    .append('CNMD-USER', '-j SNAT --to-source 2001:db8::1');
  await assert.rejects(
    fw.apply(f.build()),
    (e: unknown) => e instanceof CnmdError && e.details.family === 'ipv6' && /ipv4/.test(e.message),
  );
  unchanged('cross-family');

  // 4. A refusal decided before running anything (delete of an absent rule).
  const d = new BatchBuilder();
  d.in('filter').append('CNMD-USER', '-j ACCEPT').delete('FORWARD', '-j NOTHERE-CHAIN');
  await assert.rejects(fw.apply(d.build()), (e: unknown) => e instanceof CnmdError && e.code === 'NOT_FOUND');
  unchanged('pre-validation');

  // After failures the backend still works (its cache was dropped and is re-read).
  await fw.apply(networkRules(netA));
  assert.ok(
    ruleLines(saved(ns)).includes(`nat -A POSTROUTING -s 10.61.0.0/24 ! -o ${netA.bridge} -j MASQUERADE`),
  );
});

test('a 1000-rule batch applies in one iptables-restore process', async (t) => {
  const ns = await host(t);
  const c = counting();
  const fw = new IptablesBackend({ netns: ns.path, exec: c.exec });
  const b = new BatchBuilder();
  const f = b.in('filter').ensureChain('CNMD-BULK');
  for (let i = 0; i < 1000; i++)
    f.ensureRule('CNMD-BULK', `-s 10.${(i >> 8) & 255}.${i & 255}.0/24 -p tcp --dport ${1000 + i} -j ACCEPT`);
  const started = process.hrtime.bigint();
  await fw.apply(b.build());
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  const restores = c.calls.filter((x) => x.includes('iptables-restore'));
  assert.equal(restores.length, 1);
  assert.equal(fw.stats.restores, 1);
  const rules = await fw.chainRules('filter', 'CNMD-BULK');
  assert.equal(rules.length, 1000);
  assert.equal(rules[0], '-s 10.0.0.0/24 -p tcp -m tcp --dport 1000 -j ACCEPT');
  // Re-applying: all 1000 found under their canonical text (the implicit -m tcp included): no process.
  const again = process.hrtime.bigint();
  await new IptablesBackend({ netns: ns.path, exec: c.exec }).apply(b.build());
  const msAgain = Number(process.hrtime.bigint() - again) / 1e6;
  assert.equal(c.calls.filter((x) => x.includes('iptables-restore')).length, 1);
  assert.equal((await fw.chainRules('filter', 'CNMD-BULK')).length, 1000);
  // For scale, what one process per rule costs (100 rules, `iptables -A` each; printed, not asserted).
  ns.run('iptables', ['-N', 'PER-RULE']);
  const perRule = process.hrtime.bigint();
  for (let i = 0; i < 100; i++)
    ns.run('iptables', ['-A', 'PER-RULE', '-s', `10.0.${i}.0/24`, '-j', 'ACCEPT']);
  const msPerRule = Number(process.hrtime.bigint() - perRule) / 1e6;
  t.diagnostic(
    `1000 rules: ${ms.toFixed(1)} ms with 1 iptables-restore (+1 iptables-save); no-op re-apply with a cold cache: ${msAgain.toFixed(1)} ms; ` +
      `processes in all: ${c.calls.length}; one iptables process per rule: ${msPerRule.toFixed(1)} ms for 100 rules (~${(msPerRule * 10).toFixed(0)} ms per 1000)`,
  );
});

test('IPv6 rules land in ip6tables-save, not in iptables-save', async (t) => {
  const ns = await host(t);
  const fw = new IptablesBackend({ verify: true, netns: ns.path });
  await fw.apply(mergeBatches(baseRules({ ipv6: true }), networkRules(netA)));
  const v6 = ruleLines(saved(ns, 'ipv6'));
  const v4 = ruleLines(saved(ns, 'ipv4'));
  assert.ok(v6.includes(`nat -A POSTROUTING -s fd00:61::/64 ! -o ${netA.bridge} -j MASQUERADE`));
  assert.ok(v6.includes('nat -A OUTPUT ! -d ::1/128 -m addrtype --dst-type LOCAL -j CNMD'));
  assert.ok(v6.includes(`filter -A CNMD-ISOLATION-STAGE-2 -o ${netA.bridge} -j DROP`));
  assert.ok(!v4.some((l) => l.includes('fd00:61::')));
  assert.ok(v4.includes(`nat -A POSTROUTING -s 10.61.0.0/24 ! -o ${netA.bridge} -j MASQUERADE`));
  assert.equal(v6.length, v4.length, 'the same layout in both families');
  assert.deepEqual(await fw.chainRules('nat', 'POSTROUTING', 'ipv6'), [
    `-s fd00:61::/64 ! -o ${netA.bridge} -j MASQUERADE`,
  ]);
});

test('masquerade lets a namespace behind a bridge reach an outside namespace', async (t) => {
  const l = await lab(t);
  const hostNs = await l.ns('host');
  const ctr = await l.ns('ctr');
  const out = await l.ns('out');
  const br = 'br-masq0000001';
  // host: bridge 10.64.0.1/24 with ctr behind it; uplink 192.0.2.1/24 to out.
  hostNs.run('ip', ['link', 'add', br, 'type', 'bridge']);
  hostNs.run('ip', ['addr', 'add', '10.64.0.1/24', 'dev', br]);
  hostNs.run('ip', ['link', 'set', br, 'up']);
  await hostNs.handle.linkAdd({ kind: 'veth', name: 'vethctr', peer: { name: 'eth0', netns: ctr.path } });
  hostNs.run('ip', ['link', 'set', 'vethctr', 'master', br, 'up']);
  await hostNs.handle.linkAdd({ kind: 'veth', name: 'uplink', peer: { name: 'eth0', netns: out.path } });
  hostNs.run('ip', ['addr', 'add', '192.0.2.1/24', 'dev', 'uplink']);
  hostNs.run('ip', ['link', 'set', 'uplink', 'up']);
  hostNs.run('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  ctr.run('ip', ['addr', 'add', '10.64.0.2/24', 'dev', 'eth0']);
  ctr.run('ip', ['link', 'set', 'eth0', 'up']);
  ctr.run('ip', ['route', 'add', 'default', 'via', '10.64.0.1']);
  // out knows nothing about 10.64.0.0/24: only a masqueraded packet gets an answer.
  out.run('ip', ['addr', 'add', '192.0.2.2/24', 'dev', 'eth0']);
  out.run('ip', ['link', 'set', 'eth0', 'up']);
  await serve(t, out.path, 'tcp', 7100);
  assert.ok(ping(hostNs.path, '192.0.2.2', 3), 'host reaches out directly');
  assert.ok(
    !reach(ctr.path, 'tcp', '192.0.2.2', 7100, 1000),
    'without masquerade the reply has no route back',
  );

  const fw = new IptablesBackend({ verify: true, netns: hostNs.path });
  const net: BridgeNetworkSpec = {
    bridge: br,
    subnets: { v4: '10.64.0.0/24' },
    icc: true,
    masquerade: true,
    internal: false,
  };
  await fw.apply(mergeBatches(baseRules(), networkRules(net)));
  assert.ok(reach(ctr.path, 'tcp', '192.0.2.2', 7100), 'TCP through MASQUERADE');
  assert.ok(ping(ctr.path, '192.0.2.2', 2), 'ICMP through MASQUERADE');
  const post = hostNs.run('iptables', ['-t', 'nat', '-L', 'POSTROUTING', '-v', '-n', '-x']);
  assert.match(post, /^\s*[1-9]\d*\s+\d+\s+MASQUERADE/m, 'the MASQUERADE rule counted packets');

  // An internal network stops it again (the STAGE-1 drops), and removing that restores it.
  await fw.apply(removeNetworkRules(net));
  const internal = { ...net, internal: true };
  await fw.apply(networkRules(internal));
  assert.ok(!reach(ctr.path, 'tcp', '192.0.2.2', 7100, 1000), 'internal network: no way out');
  await fw.apply(mergeBatches(removeNetworkRules(internal), networkRules(net)));
  assert.ok(reach(ctr.path, 'tcp', '192.0.2.2', 7100), 'back to masquerade');
});

test('the same guarantees with iptables-legacy (commands overridden)', async (t) => {
  const ns = await host(t);
  const legacy = { restore: 'iptables-legacy-restore', save: 'iptables-legacy-save' };
  const fw = new IptablesBackend({ verify: true, netns: ns.path, commands: { ipv4: legacy } });
  const save = () =>
    ns
      .run('iptables-legacy-save', [])
      .split('\n')
      .filter((l) => !l.startsWith('#'))
      .join('\n');
  await fw.apply(mergeBatches(baseRules(), networkRules(netB)));
  const before = save();
  assert.match(
    before,
    /-A FORWARD -j CNMD-USER\n-A FORWARD -j CNMD-ISOLATION-STAGE-1\n-A FORWARD -j CNMD-FORWARD\n/,
  );
  await new IptablesBackend({ netns: ns.path, commands: { ipv4: legacy } }).apply(
    mergeBatches(baseRules(), networkRules(netB)),
  );
  assert.equal(save(), before);
  const k = new BatchBuilder();
  k.in('nat').ensureRule('POSTROUTING', '-s 10.99.0.0/24 -j MASQUERADE', { position: 1 });
  k.in('filter').append('CNMD', '-o br-x -j MASQUERADE');
  await assert.rejects(fw.apply(k.build()), (e: unknown) => {
    assert.ok(e instanceof CnmdError && e.code === 'KERNEL_ERROR');
    assert.match(String(e.object), /^-t filter COMMIT/, 'legacy names the COMMIT line, not the rule');
    t.diagnostic(e.message);
    return true;
  });
  assert.equal(save(), before);
});
