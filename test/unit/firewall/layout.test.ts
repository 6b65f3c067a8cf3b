// cnmd's iptables layout (libnetwork 20.10 with the CNMD prefix): the generated rule
// text against libnetwork's strings (drivers/bridge/setup_ip_tables.go of Docker 20.10), and the
// restore input the backend writes for it. No root, no iptables: pure functions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CnmdError } from '../../../src/errors';
import {
  baseRuleList,
  baseRules,
  chainNames,
  networkRuleList,
  networkRules,
  removeBaseRules,
  removeNetworkRules,
  type BridgeNetworkSpec,
  type LayoutRule,
  type RuleBatch,
  type RuleOp,
  TABLES,
} from '../../../src/firewall';
import { _internal } from '../../../src/firewall/iptables';

/** `ipv4 -t nat -A POSTROUTING -s ...` lines, the way the reference and `iptables -S` read. */
function render(rules: LayoutRule[]): string[] {
  return rules.map((r) => `${r.family} -t ${r.table} -A ${r.chain} ${r.rule}`);
}

/** Every op of a batch as `family table kind chain [rule]`. */
function opsOf(batch: RuleBatch): string[] {
  const out: string[] = [];
  for (const family of ['ipv4', 'ipv6'] as const) {
    for (const table of TABLES) {
      for (const op of (batch[family]?.[table] ?? []) as RuleOp[]) {
        const extra = 'rule' in op ? ` ${op.rule}` : '';
        const pos =
          op.kind === 'ensureRule' && op.position !== undefined
            ? `@${op.position}${op.pinned ? '!' : ''}`
            : '';
        out.push(`${family} ${table} ${op.kind}${pos} ${op.chain}${extra}`);
      }
    }
  }
  return out;
}

const web: BridgeNetworkSpec = {
  bridge: 'br-0123456789ab',
  subnets: { v4: '10.1.0.0/24' },
  icc: true,
  masquerade: true,
  internal: false,
};

test('chain names carry the CNMD prefix (or another one)', () => {
  assert.deepEqual(chainNames(), {
    nat: 'CNMD',
    filter: 'CNMD',
    user: 'CNMD-USER',
    isolation1: 'CNMD-ISOLATION-STAGE-1',
    isolation2: 'CNMD-ISOLATION-STAGE-2',
    forward: 'CNMD-FORWARD',
  });
  assert.equal(chainNames('CNMD2').isolation2, 'CNMD2-ISOLATION-STAGE-2');
});

test('base layout: the reference strings with DOCKER -> CNMD', () => {
  assert.deepEqual(render(baseRuleList()), [
    'ipv4 -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j CNMD',
    'ipv4 -t nat -A OUTPUT -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j CNMD',
    'ipv4 -t filter -A CNMD-USER -j RETURN',
    'ipv4 -t filter -A CNMD-ISOLATION-STAGE-1 -j RETURN',
    'ipv4 -t filter -A CNMD-ISOLATION-STAGE-2 -j RETURN',
    'ipv4 -t filter -A FORWARD -j CNMD-USER',
    'ipv4 -t filter -A FORWARD -j CNMD-ISOLATION-STAGE-1',
    'ipv4 -t filter -A FORWARD -j CNMD-FORWARD',
  ]);
  // FORWARD's jumps are pinned at the top, CNMD-USER first, as Docker keeps them; the networks' accepts come after isolation.
  const fwd = baseRuleList().filter((r) => r.chain === 'FORWARD');
  assert.deepEqual(
    fwd.map((r) => [r.position, r.pinned]),
    [
      [1, true],
      [2, true],
      [3, true],
    ],
  );
  // Without the userland proxy the OUTPUT jump also catches loopback (hairpin mode).
  assert.equal(baseRuleList({ userlandProxy: false })[1].rule, '-m addrtype --dst-type LOCAL -j CNMD');
  // IPv6 mirrors it with ::1/128.
  const v6 = render(baseRuleList({ ipv6: true })).filter((l) => l.startsWith('ipv6'));
  assert.equal(v6.length, 8);
  assert.ok(v6.includes('ipv6 -t nat -A OUTPUT -m addrtype --dst-type LOCAL ! -d ::1/128 -j CNMD'));
});

test('base batch: chains ensured (never flushed), then rules ensured', () => {
  assert.deepEqual(opsOf(baseRules()), [
    'ipv4 nat ensureChain CNMD',
    'ipv4 nat ensureRule PREROUTING -m addrtype --dst-type LOCAL -j CNMD',
    'ipv4 nat ensureRule OUTPUT -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j CNMD',
    'ipv4 filter ensureChain CNMD',
    'ipv4 filter ensureChain CNMD-USER',
    'ipv4 filter ensureChain CNMD-ISOLATION-STAGE-1',
    'ipv4 filter ensureChain CNMD-ISOLATION-STAGE-2',
    'ipv4 filter ensureChain CNMD-FORWARD',
    'ipv4 filter ensureRule CNMD-USER -j RETURN',
    'ipv4 filter ensureRule CNMD-ISOLATION-STAGE-1 -j RETURN',
    'ipv4 filter ensureRule CNMD-ISOLATION-STAGE-2 -j RETURN',
    'ipv4 filter ensureRule@1! FORWARD -j CNMD-USER',
    'ipv4 filter ensureRule@2! FORWARD -j CNMD-ISOLATION-STAGE-1',
    'ipv4 filter ensureRule@3! FORWARD -j CNMD-FORWARD',
  ]);
  assert.deepEqual(opsOf(removeBaseRules()), [
    'ipv4 nat deleteIfPresent OUTPUT -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j CNMD',
    'ipv4 nat deleteIfPresent PREROUTING -m addrtype --dst-type LOCAL -j CNMD',
    'ipv4 nat flushChain CNMD',
    'ipv4 nat deleteChain CNMD',
    'ipv4 filter deleteIfPresent FORWARD -j CNMD-FORWARD',
    'ipv4 filter deleteIfPresent FORWARD -j CNMD-ISOLATION-STAGE-1',
    'ipv4 filter deleteIfPresent FORWARD -j CNMD-USER',
    'ipv4 filter flushChain CNMD',
    'ipv4 filter flushChain CNMD-USER',
    'ipv4 filter flushChain CNMD-ISOLATION-STAGE-1',
    'ipv4 filter flushChain CNMD-ISOLATION-STAGE-2',
    'ipv4 filter flushChain CNMD-FORWARD',
    'ipv4 filter deleteChain CNMD',
    'ipv4 filter deleteChain CNMD-USER',
    'ipv4 filter deleteChain CNMD-ISOLATION-STAGE-1',
    'ipv4 filter deleteChain CNMD-ISOLATION-STAGE-2',
    'ipv4 filter deleteChain CNMD-FORWARD',
  ]);
});

test('bridge network: masquerade, skip-DNAT, FORWARD accepts, ICC, two-stage isolation', () => {
  const br = web.bridge;
  assert.deepEqual(render(networkRuleList(web)), [
    `ipv4 -t nat -A POSTROUTING -s 10.1.0.0/24 ! -o ${br} -j MASQUERADE`,
    `ipv4 -t nat -A CNMD -i ${br} -j RETURN`,
    `ipv4 -t filter -A CNMD-FORWARD -o ${br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
    `ipv4 -t filter -A CNMD-FORWARD -o ${br} -j CNMD`,
    `ipv4 -t filter -A CNMD-FORWARD -i ${br} ! -o ${br} -j ACCEPT`,
    `ipv4 -t filter -A CNMD-FORWARD -i ${br} -o ${br} -j ACCEPT`,
    `ipv4 -t filter -A CNMD-ISOLATION-STAGE-1 -i ${br} ! -o ${br} -m conntrack ! --ctstate DNAT -j CNMD-ISOLATION-STAGE-2`,
    `ipv4 -t filter -A CNMD-ISOLATION-STAGE-2 -o ${br} -j DROP`,
    `ipv4 -t filter -A CNMD ! -i ${br} -o ${br} -j DROP`,
  ]);
  // Positions: every rule goes first in its chain (Docker's -I), a network's CNMD-FORWARD block in its order;
  // the default DROP of what comes from outside is appended (the published ports' ACCEPTs go above it).
  assert.deepEqual(
    networkRuleList(web).map((r) => r.position),
    [1, 1, 1, 2, 3, 4, 1, 1, undefined],
  );
});

test('bridge network variants: icc=false, no masquerade, host_ipv4, hairpin, subnet host bits', () => {
  const br = web.bridge;
  const noIcc = render(networkRuleList({ ...web, icc: false }));
  assert.ok(noIcc.includes(`ipv4 -t filter -A CNMD-FORWARD -i ${br} -o ${br} -j DROP`));
  assert.ok(!noIcc.some((l) => l.endsWith(`-i ${br} -o ${br} -j ACCEPT`)));

  const noMasq = render(networkRuleList({ ...web, masquerade: false }));
  assert.ok(!noMasq.some((l) => l.includes('-t nat')), 'no nat rules without masquerade');

  const snat = render(networkRuleList({ ...web, hostIPv4: '192.0.2.10' }));
  assert.equal(
    snat[0],
    `ipv4 -t nat -A POSTROUTING -s 10.1.0.0/24 ! -o ${br} -j SNAT --to-source 192.0.2.10`,
  );

  const hairpin = render(networkRuleList(web, { userlandProxy: false }));
  assert.ok(
    hairpin.includes(`ipv4 -t nat -A POSTROUTING -m addrtype --src-type LOCAL -o ${br} -j MASQUERADE`),
  );
  assert.ok(!hairpin.includes(`ipv4 -t nat -A CNMD -i ${br} -j RETURN`));

  // The subnet is written as its network address, as Docker's maskedAddr.
  assert.equal(
    render(networkRuleList({ ...web, subnets: { v4: '10.1.0.1/24' } }))[0],
    `ipv4 -t nat -A POSTROUTING -s 10.1.0.0/24 ! -o ${br} -j MASQUERADE`,
  );
});

test('internal network: STAGE-1 drops and ICC only, no masquerade', () => {
  const net: BridgeNetworkSpec = {
    bridge: 'br-int',
    subnets: { v4: '10.9.0.0/24', v6: 'fd00:9::/64' },
    icc: true,
    masquerade: true,
    internal: true,
  };
  assert.deepEqual(render(networkRuleList(net)), [
    'ipv4 -t filter -A CNMD-ISOLATION-STAGE-1 -i br-int ! -d 10.9.0.0/24 -j DROP',
    'ipv4 -t filter -A CNMD-ISOLATION-STAGE-1 -o br-int ! -s 10.9.0.0/24 -j DROP',
    'ipv4 -t filter -A CNMD-FORWARD -i br-int -o br-int -j ACCEPT',
    'ipv6 -t filter -A CNMD-ISOLATION-STAGE-1 -i br-int ! -o br-int ! -d fd00:9::/64 -j DROP',
    'ipv6 -t filter -A CNMD-ISOLATION-STAGE-1 ! -i br-int -o br-int ! -s fd00:9::/64 -j DROP',
    'ipv6 -t filter -A CNMD-FORWARD -i br-int -o br-int -j ACCEPT',
  ]);
});

test('dual stack: IPv6 equivalents in ip6tables', () => {
  const net = { ...web, subnets: { v4: '10.1.0.0/24', v6: 'FD00:1:0::/64' } };
  const v6 = render(networkRuleList(net)).filter((l) => l.startsWith('ipv6'));
  assert.deepEqual(v6, [
    `ipv6 -t nat -A POSTROUTING -s fd00:1::/64 ! -o ${web.bridge} -j MASQUERADE`,
    `ipv6 -t nat -A CNMD -i ${web.bridge} -j RETURN`,
    `ipv6 -t filter -A CNMD-FORWARD -o ${web.bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
    `ipv6 -t filter -A CNMD-FORWARD -o ${web.bridge} -j CNMD`,
    `ipv6 -t filter -A CNMD-FORWARD -i ${web.bridge} ! -o ${web.bridge} -j ACCEPT`,
    `ipv6 -t filter -A CNMD-FORWARD -i ${web.bridge} -o ${web.bridge} -j ACCEPT`,
    `ipv6 -t filter -A CNMD-ISOLATION-STAGE-1 -i ${web.bridge} ! -o ${web.bridge} -m conntrack ! --ctstate DNAT -j CNMD-ISOLATION-STAGE-2`,
    `ipv6 -t filter -A CNMD-ISOLATION-STAGE-2 -o ${web.bridge} -j DROP`,
    `ipv6 -t filter -A CNMD ! -i ${web.bridge} -o ${web.bridge} -j DROP`,
  ]);
  // host_ipv4 applies to IPv4 only.
  const snat = render(networkRuleList({ ...net, hostIPv4: '192.0.2.10' }));
  assert.ok(snat.includes(`ipv6 -t nat -A POSTROUTING -s fd00:1::/64 ! -o ${web.bridge} -j MASQUERADE`));
  // An IPv6-only spec has no IPv4 rules.
  assert.ok(
    render(networkRuleList({ ...web, subnets: { v6: 'fd00:1::/64' } })).every((l) => l.startsWith('ipv6')),
  );
});

test('gateway modes per family: nat-unprotected accepts, routed has no MASQUERADE, ICMP and no STAGE-2 DROP', () => {
  const br = web.bridge;
  const net = { ...web, subnets: { v4: '10.1.0.0/24', v6: 'fd00:1::/64' } };
  const nat = render(networkRuleList(net));
  // nat-unprotected (moby setDefaultForwardRule: ACCEPT instead of DROP), IPv4 only; IPv6 stays nat.
  const unprot = render(networkRuleList({ ...net, gatewayModes: { ipv4: 'nat-unprotected' } }));
  assert.deepEqual(
    unprot.filter((l) => !nat.includes(l)),
    [`ipv4 -t filter -A CNMD ! -i ${br} -o ${br} -j ACCEPT`],
  );
  assert.deepEqual(
    nat.filter((l) => !unprot.includes(l)),
    [`ipv4 -t filter -A CNMD ! -i ${br} -o ${br} -j DROP`],
  );
  // routed IPv6: no MASQUERADE, no skip-DNAT RETURN, STAGE-2 to the port filter instead of DROP, its
  // answers accepted in STAGE-1;
  // ICMPv6 accepted before the DROP.
  const routed = render(networkRuleList({ ...net, gatewayModes: { ipv6: 'routed' } }));
  assert.deepEqual(
    nat.filter((l) => !routed.includes(l)),
    [
      `ipv6 -t nat -A POSTROUTING -s fd00:1::/64 ! -o ${br} -j MASQUERADE`,
      `ipv6 -t nat -A CNMD -i ${br} -j RETURN`,
      `ipv6 -t filter -A CNMD-ISOLATION-STAGE-2 -o ${br} -j DROP`,
    ],
  );
  assert.ok(routed.includes(`ipv6 -t filter -A CNMD-ISOLATION-STAGE-2 -o ${br} -j CNMD`));
  assert.ok(
    routed.includes(
      `ipv6 -t filter -A CNMD-ISOLATION-STAGE-1 -i ${br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
    ),
  );
  assert.deepEqual(routed.slice(-2), [
    `ipv6 -t filter -A CNMD -o ${br} -p ipv6-icmp -j ACCEPT`,
    `ipv6 -t filter -A CNMD ! -i ${br} -o ${br} -j DROP`,
  ]);
  assert.ok(routed.includes(`ipv4 -t nat -A POSTROUTING -s 10.1.0.0/24 ! -o ${br} -j MASQUERADE`));
  const routed4 = render(networkRuleList({ ...web, gatewayModes: { ipv4: 'routed' } }));
  assert.ok(routed4.includes(`ipv4 -t filter -A CNMD -o ${br} -p icmp -j ACCEPT`));
  // isolated is an internal network's rules (the mode only takes the bridge's address away).
  const internal = { ...net, internal: true };
  assert.deepEqual(
    networkRuleList({ ...internal, gatewayModes: { ipv4: 'isolated', ipv6: 'isolated' } }),
    networkRuleList(internal),
  );
});

test('removal is the exact inverse: the same rules, deleted if present, in reverse order', () => {
  for (const net of [
    web,
    { ...web, icc: false, internal: true },
    { ...web, subnets: { v4: '10.1.0.0/24', v6: 'fd00:1::/64' } },
  ]) {
    const add = opsOf(networkRules(net)).map((l) => l.replace(/ ensureRule(@\d+!?)? /, ' X '));
    const del = opsOf(removeNetworkRules(net)).map((l) => l.replace(' deleteIfPresent ', ' X '));
    assert.ok(opsOf(removeNetworkRules(net)).every((l) => l.includes(' deleteIfPresent ')));
    assert.deepEqual([...del].sort(), [...add].sort());
    // Per table, reverse order.
    const addFilter = add.filter((l) => l.startsWith('ipv4 filter'));
    assert.deepEqual(
      del.filter((l) => l.startsWith('ipv4 filter')),
      [...addFilter].reverse(),
    );
  }
});

test('bad specs are refused with INVALID_ARGUMENT', () => {
  const bad: BridgeNetworkSpec[] = [
    { ...web, bridge: 'br with space' },
    { ...web, bridge: 'a-very-long-bridge-name' },
    { ...web, subnets: { v4: '10.1.0.0/33' } },
    { ...web, subnets: { v4: 'fd00::/64' } },
    { ...web, subnets: { v6: '10.0.0.0/8' } },
    { ...web, hostIPv4: '10.0.0.0/8' },
  ];
  for (const net of bad) {
    assert.throws(
      () => networkRuleList(net),
      (e: unknown) => e instanceof CnmdError && e.code === 'INVALID_ARGUMENT',
      JSON.stringify(net),
    );
  }
});

test('restore input for the base layout on empty tables: one block per table, chains declared once', () => {
  const plan = _internal.planFamily('ipv4', baseRules().ipv4!, new Map());
  assert.deepEqual(plan.lines, [
    '*nat',
    ':CNMD - [0:0]',
    '-A PREROUTING -m addrtype --dst-type LOCAL -j CNMD',
    '-A OUTPUT -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j CNMD',
    'COMMIT',
    '*filter',
    ':CNMD - [0:0]',
    ':CNMD-USER - [0:0]',
    ':CNMD-ISOLATION-STAGE-1 - [0:0]',
    ':CNMD-ISOLATION-STAGE-2 - [0:0]',
    ':CNMD-FORWARD - [0:0]',
    '-A CNMD-USER -j RETURN',
    '-A CNMD-ISOLATION-STAGE-1 -j RETURN',
    '-A CNMD-ISOLATION-STAGE-2 -j RETURN',
    '-A FORWARD -j CNMD-USER',
    '-A FORWARD -j CNMD-ISOLATION-STAGE-1',
    '-A FORWARD -j CNMD-FORWARD',
    'COMMIT',
  ]);
  // Applied on top of its own result, it writes nothing at all.
  const again = _internal.planFamily('ipv4', baseRules().ipv4!, plan.next);
  assert.deepEqual(again.lines, []);
  // And a network on top goes where Docker puts it.
  const net = _internal.planFamily('ipv4', networkRules(web).ipv4!, plan.next);
  assert.deepEqual(
    [...net.next.get('filter')!.get('FORWARD')!.rules].map((r) => r.text),
    ['-j CNMD-USER', '-j CNMD-ISOLATION-STAGE-1', '-j CNMD-FORWARD'],
  );
  const fwd = [...net.next.get('filter')!.get('CNMD-FORWARD')!.rules].map((r) => r.text);
  assert.deepEqual(fwd, [
    `-o ${web.bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
    `-o ${web.bridge} -j CNMD`,
    `-i ${web.bridge} ! -o ${web.bridge} -j ACCEPT`,
    `-i ${web.bridge} -o ${web.bridge} -j ACCEPT`,
  ]);
  const iso1 = net.next
    .get('filter')!
    .get('CNMD-ISOLATION-STAGE-1')!
    .rules.map((r) => r.text);
  assert.deepEqual(iso1, [
    `-i ${web.bridge} ! -o ${web.bridge} -m conntrack ! --ctstate DNAT -j CNMD-ISOLATION-STAGE-2`,
    '-j RETURN',
  ]);
  // Removing it leaves the base layout exactly.
  const rm = _internal.planFamily('ipv4', removeNetworkRules(web).ipv4!, net.next);
  for (const table of ['nat', 'filter'] as const) {
    const a = [...rm.next.get(table)!].map(([c, s]) => [c, s.rules.map((r) => r.key)]);
    const b = [...plan.next.get(table)!].map(([c, s]) => [c, s.rules.map((r) => r.key)]);
    assert.deepEqual(a, b, table);
  }
});
