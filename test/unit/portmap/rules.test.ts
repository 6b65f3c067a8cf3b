// The iptables rules of published ports (src/portmap/rules.ts): the exact text per
// binding (libnetwork-reference.md §3 under cnmd's chains, as iptables-save prints it),
// ranges as single rules, the raw-table protections, the removal batch, and the restore
// input the backend would write. Pure functions: no root, no iptables.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CnmdError } from '../../../src/errors';
import {
  baseRules,
  canonicalRule,
  networkRules,
  TABLES,
  mergeBatches,
  type LayoutRule,
  type RuleBatch,
  type RuleOp,
} from '../../../src/firewall';
import { _internal } from '../../../src/firewall/iptables';
import {
  parsePortSpecs,
  portRuleList,
  portRules,
  probeShiftedRangeDnat,
  removePortRules,
  routeLocalnetSysctl,
  type PortRulesOptions,
  type PortRulesSpec,
} from '../../../src/portmap';

const BR = 'br-0123456789ab';

function rules(specs: string[], extra: Partial<PortRulesSpec> = {}, opts: PortRulesOptions = {}): string[] {
  const spec: PortRulesSpec = {
    bridge: BR,
    containerIPv4: '10.1.0.2',
    bindings: parsePortSpecs(specs),
    ...extra,
  };
  return render(portRuleList(spec, opts));
}

function render(list: LayoutRule[]): string[] {
  return list.map((r) => `${r.family} -t ${r.table} -A ${r.chain} ${r.rule}`);
}

function opsOf(batch: RuleBatch): string[] {
  const out: string[] = [];
  for (const family of ['ipv4', 'ipv6'] as const) {
    for (const table of TABLES) {
      for (const op of (batch[family]?.[table] ?? []) as RuleOp[])
        out.push(`${family} ${table} ${op.kind} ${op.chain} ${'rule' in op ? op.rule : ''}`);
    }
  }
  return out;
}

test('one port: DNAT, forward ACCEPT, hairpin MASQUERADE — as the reference writes them, under CNMD', () => {
  assert.deepEqual(rules(['8080:80']), [
    `ipv4 -t nat -A CNMD ! -i ${BR} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.1.0.2:80`,
    `ipv4 -t filter -A CNMD -d 10.1.0.2/32 ! -i ${BR} -o ${BR} -p tcp -m tcp --dport 80 -j ACCEPT`,
    `ipv4 -t nat -A POSTROUTING -s 10.1.0.2/32 -d 10.1.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE`,
  ]);
  assert.deepEqual(rules(['5353:53/udp']), [
    `ipv4 -t nat -A CNMD ! -i ${BR} -p udp -m udp --dport 5353 -j DNAT --to-destination 10.1.0.2:53`,
    `ipv4 -t filter -A CNMD -d 10.1.0.2/32 ! -i ${BR} -o ${BR} -p udp -m udp --dport 53 -j ACCEPT`,
    `ipv4 -t nat -A POSTROUTING -s 10.1.0.2/32 -d 10.1.0.2/32 -p udp -m udp --dport 53 -j MASQUERADE`,
  ]);
});

test('without the userland proxy the DNAT has no `! -i br` (hairpin by NAT), as Docker', () => {
  assert.deepEqual(
    rules(['8080:80'], {}, { userlandProxy: false })[0],
    'ipv4 -t nat -A CNMD -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.1.0.2:80',
  );
});

test('SCTP adds the CHECKSUM fill, per container address', () => {
  assert.deepEqual(rules(['9:9/sctp']), [
    `ipv4 -t nat -A CNMD ! -i ${BR} -p sctp -m sctp --dport 9 -j DNAT --to-destination 10.1.0.2:9`,
    `ipv4 -t filter -A CNMD -d 10.1.0.2/32 ! -i ${BR} -o ${BR} -p sctp -m sctp --dport 9 -j ACCEPT`,
    `ipv4 -t nat -A POSTROUTING -s 10.1.0.2/32 -d 10.1.0.2/32 -p sctp -m sctp --dport 9 -j MASQUERADE`,
    `ipv4 -t mangle -A POSTROUTING -s 10.1.0.2/32 -p sctp -m sctp --sport 9 -j CHECKSUM --checksum-fill`,
  ]);
});

test('a host address: -d on the DNAT; the raw-table protections (127.0.0.1, direct access)', () => {
  assert.deepEqual(rules(['192.168.1.5:8080:80']), [
    `ipv4 -t nat -A CNMD -d 192.168.1.5/32 ! -i ${BR} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.1.0.2:80`,
    `ipv4 -t filter -A CNMD -d 10.1.0.2/32 ! -i ${BR} -o ${BR} -p tcp -m tcp --dport 80 -j ACCEPT`,
    `ipv4 -t nat -A POSTROUTING -s 10.1.0.2/32 -d 10.1.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE`,
    `ipv4 -t raw -A PREROUTING -d 10.1.0.2/32 ! -i ${BR} -j DROP`,
  ]);
  assert.deepEqual(rules(['127.0.0.1:8080:80', '127.0.0.1:9000-9009:9000-9009/udp']), [
    `ipv4 -t nat -A CNMD -d 127.0.0.1/32 ! -i ${BR} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.1.0.2:80`,
    `ipv4 -t filter -A CNMD -d 10.1.0.2/32 ! -i ${BR} -o ${BR} -p tcp -m tcp --dport 80 -j ACCEPT`,
    `ipv4 -t nat -A POSTROUTING -s 10.1.0.2/32 -d 10.1.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE`,
    'ipv4 -t raw -A PREROUTING -d 127.0.0.1/32 ! -i lo -p tcp -m tcp --dport 8080 -j DROP',
    `ipv4 -t nat -A CNMD -d 127.0.0.1/32 ! -i ${BR} -p udp -m udp --dport 9000:9009 -j DNAT --to-destination 10.1.0.2`,
    `ipv4 -t filter -A CNMD -d 10.1.0.2/32 ! -i ${BR} -o ${BR} -p udp -m udp --dport 9000:9009 -j ACCEPT`,
    `ipv4 -t nat -A POSTROUTING -s 10.1.0.2/32 -d 10.1.0.2/32 -p udp -m udp --dport 9000:9009 -j MASQUERADE`,
    'ipv4 -t raw -A PREROUTING -d 127.0.0.1/32 ! -i lo -p udp -m udp --dport 9000:9009 -j DROP',
    `ipv4 -t raw -A PREROUTING -d 10.1.0.2/32 ! -i ${BR} -j DROP`,
  ]);
  // directAccessFilter: 'auto' only with a named host address; 'always'; 'never'.
  const raw = (specs: string[], mode?: PortRulesOptions['directAccessFilter']) =>
    rules(specs, {}, { directAccessFilter: mode }).filter((r) =>
      r.includes(`-d 10.1.0.2/32 ! -i ${BR} -j DROP`),
    );
  assert.equal(raw(['8080:80']).length, 0);
  assert.equal(raw(['0.0.0.0:8080:80']).length, 0);
  assert.equal(raw(['8080:80'], 'always').length, 1);
  assert.equal(raw(['127.0.0.1:8080:80', '10.0.0.1:8080:80'], 'never').length, 0);
  assert.equal(raw(['127.0.0.1:8080:80', '10.0.0.1:8080:80', '8081:81']).length, 1, 'once per sandbox');
});

test('host_binding_ipv4 is the IPv4 address of bindings on every address', () => {
  const r = rules(['8080:80', '10.0.0.1:9090:90'], { hostBindingIPv4: '192.168.1.5' });
  assert.equal(
    r[0],
    `ipv4 -t nat -A CNMD -d 192.168.1.5/32 ! -i ${BR} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.1.0.2:80`,
  );
  assert.equal(
    r[3],
    `ipv4 -t nat -A CNMD -d 10.0.0.1/32 ! -i ${BR} -p tcp -m tcp --dport 9090 -j DNAT --to-destination 10.1.0.2:90`,
  );
  // 0.0.0.0 explicitly is every IPv4 address: no -d.
  assert.equal(
    rules(['0.0.0.0:8080:80'], { hostBindingIPv4: '192.168.1.5' })[0],
    `ipv4 -t nat -A CNMD ! -i ${BR} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.1.0.2:80`,
  );
  assert.throws(
    () => rules(['8080:80'], { hostBindingIPv4: 'x' }),
    /host_binding_ipv4 "x" is not an IPv4 address/,
  );
});

test('a range is one rule of each kind: identical ranges keep the port, shifted ranges map with /base', () => {
  assert.deepEqual(rules(['20000-20999:20000-20999']), [
    `ipv4 -t nat -A CNMD ! -i ${BR} -p tcp -m tcp --dport 20000:20999 -j DNAT --to-destination 10.1.0.2`,
    `ipv4 -t filter -A CNMD -d 10.1.0.2/32 ! -i ${BR} -o ${BR} -p tcp -m tcp --dport 20000:20999 -j ACCEPT`,
    `ipv4 -t nat -A POSTROUTING -s 10.1.0.2/32 -d 10.1.0.2/32 -p tcp -m tcp --dport 20000:20999 -j MASQUERADE`,
  ]);
  assert.deepEqual(rules(['8000-8099:80-179']), [
    `ipv4 -t nat -A CNMD ! -i ${BR} -p tcp -m tcp --dport 8000:8099 -j DNAT --to-destination 10.1.0.2:80-179/8000`,
    `ipv4 -t filter -A CNMD -d 10.1.0.2/32 ! -i ${BR} -o ${BR} -p tcp -m tcp --dport 80:179 -j ACCEPT`,
    `ipv4 -t nat -A POSTROUTING -s 10.1.0.2/32 -d 10.1.0.2/32 -p tcp -m tcp --dport 80:179 -j MASQUERADE`,
  ]);
  // 10,000 ports: still three rules.
  assert.equal(rules(['30000-39999:20000-29999']).length, 3);
});

test('without shifted-range DNAT: one DNAT per port, the other kinds stay one range rule', () => {
  const r = rules(['8000-8099:80-179'], {}, { shiftedRangeDnat: false });
  const dnat = r.filter((x) => x.includes('DNAT'));
  assert.equal(dnat.length, 100);
  assert.equal(
    dnat[0],
    `ipv4 -t nat -A CNMD ! -i ${BR} -p tcp -m tcp --dport 8000 -j DNAT --to-destination 10.1.0.2:80`,
  );
  assert.equal(
    dnat[99],
    `ipv4 -t nat -A CNMD ! -i ${BR} -p tcp -m tcp --dport 8099 -j DNAT --to-destination 10.1.0.2:179`,
  );
  assert.equal(r.length, 102);
  // Identical ranges need no shift: one rule either way.
  assert.equal(rules(['20000-20999:20000-20999'], {}, { shiftedRangeDnat: false }).length, 3);
});

test('IPv6: ip6tables rules with /128 and [CIP]:CP; every-address bindings only where the sandbox has the family', () => {
  const both = { containerIPv6: 'fd00:0:0:0::2' };
  assert.deepEqual(rules(['8080:80'], both), [
    `ipv4 -t nat -A CNMD ! -i ${BR} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.1.0.2:80`,
    `ipv4 -t filter -A CNMD -d 10.1.0.2/32 ! -i ${BR} -o ${BR} -p tcp -m tcp --dport 80 -j ACCEPT`,
    `ipv4 -t nat -A POSTROUTING -s 10.1.0.2/32 -d 10.1.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE`,
    `ipv6 -t nat -A CNMD ! -i ${BR} -p tcp -m tcp --dport 8080 -j DNAT --to-destination [fd00::2]:80`,
    `ipv6 -t filter -A CNMD -d fd00::2/128 ! -i ${BR} -o ${BR} -p tcp -m tcp --dport 80 -j ACCEPT`,
    `ipv6 -t nat -A POSTROUTING -s fd00::2/128 -d fd00::2/128 -p tcp -m tcp --dport 80 -j MASQUERADE`,
  ]);
  assert.deepEqual(rules(['[::1]:8000-8001:80-81/sctp', '[fd00::1]:20000-20001:20000-20001'], both), [
    `ipv6 -t nat -A CNMD -d ::1/128 ! -i ${BR} -p sctp -m sctp --dport 8000:8001 -j DNAT --to-destination [fd00::2]:80-81/8000`,
    `ipv6 -t filter -A CNMD -d fd00::2/128 ! -i ${BR} -o ${BR} -p sctp -m sctp --dport 80:81 -j ACCEPT`,
    `ipv6 -t nat -A POSTROUTING -s fd00::2/128 -d fd00::2/128 -p sctp -m sctp --dport 80:81 -j MASQUERADE`,
    `ipv6 -t mangle -A POSTROUTING -s fd00::2/128 -p sctp -m sctp --sport 80:81 -j CHECKSUM --checksum-fill`,
    `ipv6 -t nat -A CNMD -d fd00::1/128 ! -i ${BR} -p tcp -m tcp --dport 20000:20001 -j DNAT --to-destination fd00::2`,
    `ipv6 -t filter -A CNMD -d fd00::2/128 ! -i ${BR} -o ${BR} -p tcp -m tcp --dport 20000:20001 -j ACCEPT`,
    `ipv6 -t nat -A POSTROUTING -s fd00::2/128 -d fd00::2/128 -p tcp -m tcp --dport 20000:20001 -j MASQUERADE`,
    `ipv6 -t raw -A PREROUTING -d fd00::2/128 ! -i ${BR} -j DROP`,
  ]);
  // An IPv6-only sandbox: '' gives IPv6 rules only.
  const v6only = render(
    portRuleList({ bridge: BR, containerIPv6: 'fd00::2', bindings: parsePortSpecs(['8080:80']) }),
  );
  assert.ok(v6only.every((r) => r.startsWith('ipv6 ')) && v6only.length === 3);
});

test('rules shared by two bindings are listed once', () => {
  const r = rules(['8080:80', '9090:80', '127.0.0.1:7070:80']);
  assert.equal(r.filter((x) => x.includes('-j ACCEPT')).length, 1);
  assert.equal(r.filter((x) => x.includes('MASQUERADE')).length, 1);
  assert.equal(r.filter((x) => x.includes('DNAT')).length, 3);
});

test('every rule is already in iptables-save form (so ensure/delete find it again)', () => {
  const spec: PortRulesSpec = {
    bridge: BR,
    containerIPv4: '10.1.0.2',
    containerIPv6: 'fd00::2',
    bindings: parsePortSpecs([
      '8080:80',
      '127.0.0.1:9090:90/udp',
      '8000-8099:80-179/sctp',
      '[::1]:7000-7001:7000-7001',
      '192.168.1.5::53',
      '20000-20999:20000-20999',
    ]).map((b) => (b.hostPort === 0 ? { ...b, hostPort: 40000 } : b)),
  };
  for (const opts of [
    {},
    { userlandProxy: false },
    { shiftedRangeDnat: false },
    { directAccessFilter: 'always' as const },
  ]) {
    for (const r of portRuleList(spec, opts)) assert.equal(canonicalRule(r.rule, r.family), r.rule, r.rule);
  }
});

test('portRules ensures, removePortRules deletes the same rules in reverse order', () => {
  const spec: PortRulesSpec = {
    bridge: BR,
    containerIPv4: '10.1.0.2',
    containerIPv6: 'fd00::2',
    bindings: parsePortSpecs(['127.0.0.1:8080:80', '9:9/sctp', '[fd00::1]:53:53/udp']),
  };
  const list = portRuleList(spec);
  const add = opsOf(portRules(spec));
  const rm = opsOf(removePortRules(spec));
  assert.equal(add.length, list.length);
  assert.ok(add.every((o) => / ensureRule /.test(o)));
  assert.ok(rm.every((o) => / deleteIfPresent /.test(o)));
  // Per family and table, the removal is the addition reversed.
  for (const family of ['ipv4', 'ipv6']) {
    for (const table of TABLES) {
      const a = add
        .filter((o) => o.startsWith(`${family} ${table} `))
        .map((o) => o.replace(' ensureRule ', ' '));
      const r = rm
        .filter((o) => o.startsWith(`${family} ${table} `))
        .map((o) => o.replace(' deleteIfPresent ', ' '));
      assert.deepEqual(r, a.slice().reverse(), `${family} ${table}`);
    }
  }
});

/** The base rules and one bridge network's, planned on an empty ruleset (IPv4). */
function bridgeNetworkPlan() {
  const net = { bridge: BR, subnets: { v4: '10.1.0.0/24' }, icc: true, masquerade: true, internal: false };
  return _internal.planFamily('ipv4', mergeBatches(baseRules(), networkRules(net)).ipv4!, new Map());
}

test("a bridge sandbox's port batch is written nat first, raw before filter, adding and removing", () => {
  // nat's rules load the extensions iptables probes while parsing; a probe after an earlier table's
  // commit deleted rules waits out its grace period (firewall/README.md). raw's DROP commits before
  // the filter ACCEPT it guards.
  const base = bridgeNetworkPlan();
  const spec: PortRulesSpec = {
    bridge: BR,
    containerIPv4: '10.1.0.2',
    bindings: parsePortSpecs(['8080:80']),
    directAccessFilter: 'always',
  };
  const tablesOf = (lines: string[]) => lines.filter((l) => l.startsWith('*'));
  const add = _internal.planFamily('ipv4', portRules(spec).ipv4!, base.next);
  assert.deepEqual(tablesOf(add.lines), ['*nat', '*raw', '*filter']);
  const rm = _internal.planFamily('ipv4', removePortRules(spec).ipv4!, add.next);
  assert.deepEqual(tablesOf(rm.lines), ['*nat', '*raw', '*filter']);
  assert.ok(
    rm.lines.some((l) => l.startsWith('-D PREROUTING -d 10.1.0.2/32')),
    rm.lines.join('\n'),
  );
});

test('the backend plans a 1000-port range as a handful of lines in one restore, and removes exactly them', () => {
  const base = bridgeNetworkPlan();
  const spec: PortRulesSpec = {
    bridge: BR,
    containerIPv4: '10.1.0.2',
    bindings: parsePortSpecs(['20000-20999:20000-20999', '31000-31999:21000-21999/udp', '8080:80']),
  };
  const plan = _internal.planFamily('ipv4', portRules(spec).ipv4!, base.next);
  assert.deepEqual(plan.lines, [
    '*nat',
    `-A CNMD ! -i ${BR} -p tcp -m tcp --dport 20000:20999 -j DNAT --to-destination 10.1.0.2`,
    `-A POSTROUTING -s 10.1.0.2/32 -d 10.1.0.2/32 -p tcp -m tcp --dport 20000:20999 -j MASQUERADE`,
    `-A CNMD ! -i ${BR} -p udp -m udp --dport 31000:31999 -j DNAT --to-destination 10.1.0.2:21000-21999/31000`,
    `-A POSTROUTING -s 10.1.0.2/32 -d 10.1.0.2/32 -p udp -m udp --dport 21000:21999 -j MASQUERADE`,
    `-A CNMD ! -i ${BR} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.1.0.2:80`,
    `-A POSTROUTING -s 10.1.0.2/32 -d 10.1.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE`,
    'COMMIT',
    '*filter',
    // Above the network's default DROP (appended to CNMD by the layout).
    `-I CNMD 1 -d 10.1.0.2/32 ! -i ${BR} -o ${BR} -p tcp -m tcp --dport 20000:20999 -j ACCEPT`,
    `-I CNMD 1 -d 10.1.0.2/32 ! -i ${BR} -o ${BR} -p udp -m udp --dport 21000:21999 -j ACCEPT`,
    `-I CNMD 1 -d 10.1.0.2/32 ! -i ${BR} -o ${BR} -p tcp -m tcp --dport 80 -j ACCEPT`,
    'COMMIT',
  ]);
  const chain = [
    ...plan.next
      .get('filter')!
      .get('CNMD')!
      .rules.map((r) => r.key),
  ];
  assert.match(
    chain[chain.length - 1],
    /! -i br-0123456789ab -o br-0123456789ab -j DROP$/,
    'the DROP stays last',
  );
  // Ensured again: nothing to write.
  assert.deepEqual(_internal.planFamily('ipv4', portRules(spec).ipv4!, plan.next).lines, []);
  // Removed: the tables are as before.
  const rm = _internal.planFamily('ipv4', removePortRules(spec).ipv4!, plan.next);
  for (const table of ['nat', 'filter'] as const) {
    const a = [...rm.next.get(table)!].map(([c, s]) => [c, s.rules.map((r) => r.key)]);
    const b = [...base.next.get(table)!].map(([c, s]) => [c, s.rules.map((r) => r.key)]);
    assert.deepEqual(a, b, table);
  }
  // Removing again writes nothing.
  assert.deepEqual(_internal.planFamily('ipv4', removePortRules(spec).ipv4!, rm.next).lines, []);
});

test('refusals: unallocated bindings, a family the sandbox lacks, bad names and addresses', () => {
  const bad: [Partial<PortRulesSpec> & { specs?: string[] }, RegExp][] = [
    [
      { specs: ['80'] },
      /binding 80\/tcp has no exact host port yet; reserve it with the PortAllocator first/,
    ],
    [{ specs: ['8000-8010:80'] }, /no exact host port yet/],
    [
      { specs: ['[::1]:8080:80'] },
      /binding \[::1\]:8080:80\/tcp is on an IPv6 host address but the sandbox has no IPv6 address/,
    ],
    [
      { specs: ['8080:80'], containerIPv4: undefined },
      /the sandbox has no address on br-0123456789ab to forward to/,
    ],
    [{ specs: ['8080:80'], bridge: 'bad name' }, /invalid bridge name/],
    [{ specs: ['8080:80'], bridge: 'much-too-long-bridge-name' }, /invalid bridge name/],
    [
      { specs: ['8080:80'], containerIPv4: 'fd00::2' },
      /container IPv4 address "fd00::2" is not one address of that family/,
    ],
    [{ specs: ['8080:80'], containerIPv4: '10.1.0.2/24' }, /container IPv4 address/],
    [{ specs: ['8080:80'], containerIPv6: '10.1.0.3' }, /container IPv6 address/],
  ];
  for (const [over, re] of bad) {
    const { specs = [], ...rest } = over;
    const spec: PortRulesSpec = {
      bridge: BR,
      containerIPv4: '10.1.0.2',
      bindings: parsePortSpecs(specs),
      ...rest,
    };
    assert.throws(
      () => portRuleList(spec),
      (e: unknown) => e instanceof CnmdError && e.code === 'INVALID_ARGUMENT' && re.test(e.message),
      `${JSON.stringify(over)} ${re}`,
    );
  }
});

test("routeLocalnetSysctl names the bridge's route_localnet", () => {
  assert.deepEqual(routeLocalnetSysctl(BR), {
    path: `/proc/sys/net/ipv4/conf/${BR}/route_localnet`,
    value: '1',
  });
  assert.throws(() => routeLocalnetSysctl('../x'), /invalid bridge name/);
});

test('probeShiftedRangeDnat runs one process in a throwaway netns and reads its exit status', async () => {
  const calls: string[][] = [];
  const ok = await probeShiftedRangeDnat({
    exec: async (file, args) => {
      calls.push([file, ...args]);
      return { code: 0, signal: null, stdout: '', stderr: '' };
    },
  });
  assert.equal(ok, true);
  assert.equal(calls.length, 1);
  assert.deepEqual(calls[0].slice(0, 3), ['unshare', '--net', 'iptables']);
  assert.ok(calls[0].join(' ').includes('--to-destination 192.0.2.1:30000-30001/20000'));
  assert.equal(
    await probeShiftedRangeDnat({ exec: async () => ({ code: 2, signal: null, stdout: '', stderr: 'Bad' }) }),
    false,
  );
  // unshare missing (spawn's ENOENT): the form cannot be used.
  const enoent = Object.assign(new Error('posix_spawn: No such file or directory (ENOENT)'), {
    code: 'ENOENT',
  });
  assert.equal(
    await probeShiftedRangeDnat({
      exec: async () => {
        throw enoent;
      },
    }),
    false,
  );
  // Any other failure (EPERM, a bug) is not a "no": it reaches the caller.
  const eperm = Object.assign(new Error('posix_spawn: Operation not permitted (EPERM)'), { code: 'EPERM' });
  await assert.rejects(
    probeShiftedRangeDnat({
      exec: async () => {
        throw eperm;
      },
    }),
    /EPERM/,
  );
  await assert.rejects(
    probeShiftedRangeDnat({
      exec: async () => {
        throw new TypeError('a bug');
      },
    }),
    TypeError,
  );
});

test('gateway modes: routed opens the container port only (no host port needed), nat-unprotected has no ACCEPT', () => {
  const dual = { containerIPv6: 'fd00::2' };
  // Routed both families: one ACCEPT per family, nothing else; the binding needs no host port.
  const routed = rules(['80', '8080:81/udp'], { ...dual, gatewayModes: { ipv4: 'routed', ipv6: 'routed' } });
  assert.deepEqual(routed, [
    `ipv4 -t filter -A CNMD -d 10.1.0.2/32 ! -i ${BR} -o ${BR} -p tcp -m tcp --dport 80 -j ACCEPT`,
    `ipv6 -t filter -A CNMD -d fd00::2/128 ! -i ${BR} -o ${BR} -p tcp -m tcp --dport 80 -j ACCEPT`,
    `ipv4 -t filter -A CNMD -d 10.1.0.2/32 ! -i ${BR} -o ${BR} -p udp -m udp --dport 81 -j ACCEPT`,
    `ipv6 -t filter -A CNMD -d fd00::2/128 ! -i ${BR} -o ${BR} -p udp -m udp --dport 81 -j ACCEPT`,
  ]);
  // A named host address picks the family only: no raw DROP of direct access, no loopback DROP.
  assert.deepEqual(rules(['127.0.0.1:8080:80'], { gatewayModes: { ipv4: 'routed' } }), [
    `ipv4 -t filter -A CNMD -d 10.1.0.2/32 ! -i ${BR} -o ${BR} -p tcp -m tcp --dport 80 -j ACCEPT`,
  ]);
  // nat-unprotected: DNAT and hairpin as nat, no per-port ACCEPT, no direct-access DROP (the loopback DROP stays).
  const unprot = rules(['127.0.0.1:8080:80'], { gatewayModes: { ipv4: 'nat-unprotected' } });
  assert.deepEqual(unprot, [
    `ipv4 -t nat -A CNMD -d 127.0.0.1/32 ! -i ${BR} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.1.0.2:80`,
    `ipv4 -t nat -A POSTROUTING -s 10.1.0.2/32 -d 10.1.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE`,
    `ipv4 -t raw -A PREROUTING -d 127.0.0.1/32 ! -i lo -p tcp -m tcp --dport 8080 -j DROP`,
  ]);
  // A nat binding still needs its host port.
  assert.throws(
    () => rules(['80'], { gatewayModes: { ipv4: 'nat' } }),
    (e: unknown) => e instanceof CnmdError && /has no exact host port yet/.test(e.message),
  );
});

test('trusted_host_interfaces: an ACCEPT per interface before the direct-access DROP, only where that DROP is', () => {
  const raw = (specs: string[], extra: Partial<PortRulesSpec>) =>
    rules(specs, { trustedHostInterfaces: ['vxlan.1', 'eth3'], ...extra }).filter((r) =>
      r.includes('-t raw'),
    );
  assert.deepEqual(raw(['127.0.0.1:8080:80'], {}), [
    'ipv4 -t raw -A PREROUTING -d 127.0.0.1/32 ! -i lo -p tcp -m tcp --dport 8080 -j DROP',
    'ipv4 -t raw -A PREROUTING -d 10.1.0.2/32 -i vxlan.1 -j ACCEPT',
    'ipv4 -t raw -A PREROUTING -d 10.1.0.2/32 -i eth3 -j ACCEPT',
    `ipv4 -t raw -A PREROUTING -d 10.1.0.2/32 ! -i ${BR} -j DROP`,
  ]);
  assert.deepEqual(raw(['8080:80'], {}), [], 'no DROP (every host address), so nothing to let through');
  assert.deepEqual(raw(['127.0.0.1:8080:80'], { gatewayModes: { ipv4: 'nat-unprotected' } }).length, 1);
  assert.throws(
    () => rules(['127.0.0.1:8080:80'], { trustedHostInterfaces: ['eth+'] }),
    (e: unknown) => e instanceof CnmdError && /invalid trusted interface "eth\+"/.test(e.message),
  );
});

test("a spec's own directAccessFilter overrides the options' (the bridge driver asks 'always', as Docker 28.2)", () => {
  const raw = (extra: Partial<PortRulesSpec>, opts: PortRulesOptions = {}) =>
    rules(['8080:80'], extra, opts).filter((r) => r.includes('-t raw'));
  assert.deepEqual(raw({}), []);
  assert.deepEqual(raw({ directAccessFilter: 'always' }), [
    `ipv4 -t raw -A PREROUTING -d 10.1.0.2/32 ! -i ${BR} -j DROP`,
  ]);
  assert.deepEqual(raw({ directAccessFilter: 'never' }, { directAccessFilter: 'always' }), []);
  // Not for nat-unprotected or routed families (moby filterDirectAccess is a no-op there).
  assert.deepEqual(raw({ directAccessFilter: 'always', gatewayModes: { ipv4: 'nat-unprotected' } }), []);
});
