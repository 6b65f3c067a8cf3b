// The iptables backend with spare processes (the daemon's setting): a batch fed to an
// iptables-restore / ip6tables-restore started before it, in a lab netns. What a spare
// must get right: a ruleset changed by someone else while it waited, a failing batch
// (rolled back as with a process of its own), both families, and nothing left behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { CnmdError } from '../../src/errors';
import {
  BatchBuilder,
  IptablesBackend,
  baseRules,
  networkRules,
  type BridgeNetworkSpec,
} from '../../src/firewall';
import { eventually, lab, type Ns } from '../lib/fixture';
import { childPids } from '../lib/procs';
import { guardHostFirewall } from '../lib/host-firewall';

guardHostFirewall();

const net: BridgeNetworkSpec = {
  bridge: 'br-spare0000000',
  subnets: { v4: '10.64.0.0/24', v6: 'fd00:64::/64' },
  icc: true,
  masquerade: true,
  internal: false,
};

/** iptables-restore processes started by this test process (its children: nsenter execs the restore). */
const restoresWaiting = () => childPids(/tables-restore/);
/** Waits for the count rather than a fixed time: a spare starts later on a loaded machine. */
const spares = (n: number, what: string) =>
  eventually(() => assert.equal(restoresWaiting().length, n, what), 5000);

function rules(ns: Ns, table: string, family: 'ipv4' | 'ipv6' = 'ipv4'): string[] {
  return ns
    .run(family === 'ipv4' ? 'iptables-save' : 'ip6tables-save', ['-t', table])
    .split('\n')
    .filter((l) => l.startsWith('-A '));
}

test('spare processes: batches after the first are fed to a waiting iptables-restore, for both families, with the same result', async (t) => {
  const ns = await (await lab(t)).ns('host');
  const fw = new IptablesBackend({ netns: ns.path, spareProcesses: true, verify: true });
  t.after(() => fw.close());
  await fw.apply(baseRules({ ipv6: true }));
  assert.deepEqual(
    fw.spareStats,
    { spare: 0, cold: 2 },
    'the first batch of each family: a process of its own',
  );
  await spares(2, 'one spare per family waits');
  await fw.apply(networkRules(net));
  assert.deepEqual(fw.spareStats, { spare: 2, cold: 2 });
  // Independent observer: the network's rules are there in both families.
  assert.ok(
    rules(ns, 'nat').includes('-A POSTROUTING -s 10.64.0.0/24 ! -o br-spare0000000 -j MASQUERADE'),
    rules(ns, 'nat').join('\n'),
  );
  assert.ok(
    rules(ns, 'nat', 'ipv6').includes('-A POSTROUTING -s fd00:64::/64 ! -o br-spare0000000 -j MASQUERADE'),
    rules(ns, 'nat', 'ipv6').join('\n'),
  );
  fw.close();
  await spares(0, 'close() ends the spares, and they are reaped');
});

test('spare processes: a spare sees what another writer changed while it waited', async (t) => {
  const ns = await (await lab(t)).ns('host');
  const fw = new IptablesBackend({ netns: ns.path, spareProcesses: true });
  t.after(() => fw.close());
  const first = new BatchBuilder();
  first.in('filter').ensureChain('CNMD-T1');
  await fw.apply(first.build());
  await spares(1, 'the spare is up, has read nothing yet');
  // Someone else adds a chain and a rule meanwhile.
  execFileSync('nsenter', [`--net=${ns.path}`, 'iptables-restore', '--noflush'], {
    input: '*filter\n:OTHER - [0:0]\n-A FORWARD -j OTHER\nCOMMIT\n',
  });
  fw.invalidate();
  const second = new BatchBuilder();
  second.in('filter').append('OTHER', '-s 10.65.0.0/16 -j ACCEPT').insert('FORWARD', 1, '-j CNMD-T1');
  await fw.apply(second.build());
  assert.equal(fw.spareStats!.spare, 1);
  assert.deepEqual(rules(ns, 'filter'), [
    '-A FORWARD -j CNMD-T1',
    '-A FORWARD -j OTHER',
    '-A OTHER -s 10.65.0.0/16 -j ACCEPT',
  ]);
});

test('spare processes: a batch the kernel refuses fails and is rolled back as before; the next one still runs', async (t) => {
  const ns = await (await lab(t)).ns('host');
  const fw = new IptablesBackend({ netns: ns.path, spareProcesses: true });
  t.after(() => fw.close());
  const setup = new BatchBuilder();
  setup.in('nat').ensureChain('CNMD-T2').append('CNMD-T2', '-j RETURN');
  await fw.apply(setup.build());
  await spares(1, 'a spare waits');
  const before = rules(ns, 'nat');
  // MASQUERADE is refused in the filter table at COMMIT; the nat part before it must not stay.
  const bad = new BatchBuilder();
  bad.in('nat').append('CNMD-T2', '-s 10.66.0.0/16 -j ACCEPT');
  bad.in('filter').append('FORWARD', '-j MASQUERADE');
  await assert.rejects(
    fw.apply(bad.build()),
    (e: unknown) => e instanceof CnmdError && /MASQUERADE/.test(e.message),
  );
  assert.equal(fw.spareStats!.spare >= 1, true, 'the failing batch went to a spare');
  assert.deepEqual(rules(ns, 'nat'), before);
  assert.deepEqual(rules(ns, 'filter'), []);
  await spares(1, 'a spare waits again after the failure');
  const after = new BatchBuilder();
  after.in('nat').append('CNMD-T2', '-s 10.67.0.0/16 -j ACCEPT');
  await fw.apply(after.build());
  assert.ok(rules(ns, 'nat').includes('-A CNMD-T2 -s 10.67.0.0/16 -j ACCEPT'));
});

test('a batch that deletes rules resolves once each restore says it committed, not at its exit; the rules are gone then and the process is reaped after', async (t) => {
  const ns = await (await lab(t)).ns('host');
  const fw = new IptablesBackend({ netns: ns.path });
  const add = new BatchBuilder();
  const del = new BatchBuilder();
  for (const [family, addr] of [
    ['ipv4', '10.68.0.2'],
    ['ipv6', 'fd00:68::2'],
  ] as const) {
    add.in('nat', family).ensureChain('CNMD-T3');
    for (const port of [80, 443, 8080]) {
      const rule = `-p tcp -m tcp --dport ${port} -j DNAT --to-destination ${family === 'ipv4' ? addr : `[${addr}]`}:${port}`;
      add.in('nat', family).ensureRule('CNMD-T3', rule);
      del.in('nat', family).deleteIfPresent('CNMD-T3', rule);
    }
  }
  await fw.apply(add.build());
  assert.equal(rules(ns, 'nat').length + rules(ns, 'nat', 'ipv6').length, 6);
  // The exit of a restore that deleted rules waits for the kernel's RCU grace period (nf_tables
  // frees the old rules after it); apply does not wait for that exit, only for the done line.
  const before = fw.stats.doneBeforeExit;
  await fw.apply(del.build());
  assert.equal(fw.stats.doneBeforeExit - before, 2, 'both restores said their batch was committed');
  // Committed at that moment: an independent reader sees the rules gone.
  assert.deepEqual(rules(ns, 'nat'), []);
  assert.deepEqual(rules(ns, 'nat', 'ipv6'), []);
  await eventually(
    () => assert.deepEqual(restoresWaiting(), [], 'the restores exited and were reaped'),
    5000,
  );
});

test('two families: each restore parses its first table before either commits; one refused there leaves the other uncommitted; a later line is named right', async (t) => {
  const ns = await (await lab(t)).ns('host');
  const fw = new IptablesBackend({ netns: ns.path, spareProcesses: true });
  t.after(() => fw.close());
  const setup = new BatchBuilder();
  for (const family of ['ipv4', 'ipv6'] as const) setup.in('nat', family).ensureChain('CNMD-T4');
  for (const family of ['ipv4', 'ipv6'] as const) setup.in('filter', family).ensureChain('CNMD-T4');
  // The first two-family batch shows the restores echo at once; the gate is used from then on.
  await fw.apply(setup.build());
  assert.equal(fw.stats.doneBeforeExit, 2);

  // IPv6 refused while parsing its first table (a port iptables does not take): IPv4 never commits.
  const early = new BatchBuilder();
  early.in('nat', 'ipv4').append('CNMD-T4', '-p tcp -m tcp --dport 80 -j DNAT --to-destination 10.69.0.2');
  early.in('nat', 'ipv6').append('CNMD-T4', '-p tcp -m tcp --dport 99999 -j RETURN');
  await assert.rejects(fw.apply(early.build()), (e: unknown) => {
    assert.ok(e instanceof CnmdError, String(e));
    assert.equal(e.details.family, 'ipv6', e.message);
    assert.match(e.message, /--dport 99999/);
    assert.match(e.message, /nothing was changed/);
    return true;
  });
  assert.equal(fw.stats.rollbacks, 0, 'nothing to roll back: IPv4 stopped before its COMMIT');
  assert.deepEqual(rules(ns, 'nat'), []);
  assert.deepEqual(rules(ns, 'nat', 'ipv6'), []);

  // IPv4 refused in its second table, after the gate comment: the line named is the batch's own.
  const late = new BatchBuilder();
  late.in('nat', 'ipv4').append('CNMD-T4', '-p tcp -m tcp --dport 81 -j DNAT --to-destination 10.69.0.2');
  late.in('filter', 'ipv4').append('CNMD-T4', '-p tcp -m tcp --dport 99999 -j RETURN');
  late.in('nat', 'ipv6').append('CNMD-T4', '-p tcp -m tcp --dport 81 -j DNAT --to-destination [fd00:69::2]');
  await assert.rejects(fw.apply(late.build()), (e: unknown) => {
    assert.ok(e instanceof CnmdError, String(e));
    assert.equal(e.object, '-t filter -A CNMD-T4 -p tcp -m tcp --dport 99999 -j RETURN', e.message);
    assert.equal(e.details.line, 5, e.message);
    assert.match(e.message, /rolled back/);
    return true;
  });
  // Both nat tables committed before the refusal and were rolled back.
  assert.deepEqual(rules(ns, 'nat'), []);
  assert.deepEqual(rules(ns, 'nat', 'ipv6'), []);
  assert.deepEqual(rules(ns, 'filter'), []);
});
