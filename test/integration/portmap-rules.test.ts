// Published-port rules (src/portmap/rules.ts) through the IptablesBackend in lab
// namespaces, never in the machine's own: iptables-save shows exactly the generated
// lines, removal leaves the tables as before, and real packets from an "outside" netns
// reach a server in a "container" netns behind a bridge through the host's address and
// published ports, with the client's source address preserved. Also: shifted-range DNAT
// support of this kernel/iptables, the raw-table protection of moby/moby#45610, the
// proxy-less (route_localnet) mode, and host-listener detection in a lab netns.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { CnmdError } from '../../src/errors';
import {
  IptablesBackend,
  baseRules,
  defaultExec,
  mergeBatches,
  networkRules,
  type BridgeNetworkSpec,
  type Exec,
  type Family,
} from '../../src/firewall';
import {
  PortAllocator,
  parsePortSpecs,
  portRuleList,
  portRules,
  probeShiftedRangeDnat,
  removePortRules,
  routeLocalnetSysctl,
  type PortRulesOptions,
  type PortRulesSpec,
} from '../../src/portmap';
import { eventually, lab, type Ns } from '../lib/fixture';
import { ping, serve } from '../lib/probe';
import { guardHostFirewall } from '../lib/host-firewall';

guardHostFirewall();

/**
 * iptables-save / ip6tables-save of a netns, without the dated comments, with zeroed
 * counters, and without tables that hold nothing (no rule, no user chain, ACCEPT
 * policies): with nf_tables a table used once stays listed, empty, after its last rule
 * is deleted, which is no difference in what the firewall does.
 */
function saved(ns: Ns, family: Family = 'ipv4'): string {
  const lines = ns
    .run(family === 'ipv4' ? 'iptables-save' : 'ip6tables-save', [])
    .split('\n')
    .filter((l) => !l.startsWith('#') && l !== '')
    .map((l) => l.replace(/\[\d+:\d+\]/, '[0:0]'));
  const out: string[] = [];
  let block: string[] = [];
  for (const l of lines) {
    block.push(l);
    if (l !== 'COMMIT') continue;
    const empty = block.every(
      (x) => x.startsWith('*') || x === 'COMMIT' || /^:[A-Z]+ ACCEPT \[0:0\]$/.test(x),
    );
    if (!empty) out.push(...block);
    block = [];
  }
  return out.join('\n');
}

/** `table -A CHAIN rule` lines of a save. */
function ruleLines(save: string): string[] {
  const out: string[] = [];
  let table = '';
  for (const l of save.split('\n')) {
    if (l.startsWith('*')) table = l.slice(1);
    else if (l.startsWith('-A ')) out.push(`${table} ${l}`);
  }
  return out;
}

/** Lines of `after` not in `before` (multiset difference). */
function added(before: string[], after: string[]): string[] {
  const left = [...before];
  const out: string[] = [];
  for (const l of after) {
    const i = left.indexOf(l);
    if (i >= 0) left.splice(i, 1);
    else out.push(l);
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

const BR = 'br-portmap0001';
const NET: BridgeNetworkSpec = {
  bridge: BR,
  subnets: { v4: '10.88.0.0/24', v6: 'fd00:88::/64' },
  icc: true,
  masquerade: true,
  internal: false,
};

// ---- rule text -------------------------------------------------------------------------------

test('a 1000-port range and single ports: iptables-save shows exactly the generated lines; removal restores the tables', async (t) => {
  const l = await lab(t);
  const host = await l.ns('host');
  const c = counting();
  const fw = new IptablesBackend({ verify: true, netns: host.path, exec: c.exec });
  await fw.apply(mergeBatches(baseRules({ ipv6: true }), networkRules(NET)));
  const before = { ipv4: saved(host, 'ipv4'), ipv6: saved(host, 'ipv6') };

  const spec: PortRulesSpec = {
    bridge: BR,
    containerIPv4: '10.88.0.2',
    containerIPv6: 'fd00:88::2',
    bindings: parsePortSpecs([
      '20000-20999:20000-20999',
      '30000-30999:20000-20999/udp',
      '8080:80',
      '127.0.0.1:8081:81',
      '192.0.2.1:5353:53/udp',
      '9:9/sctp',
      '[::1]:7000:70',
    ]),
  };
  for (const opts of [{}, { shiftedRangeDnat: false }, { userlandProxy: false }] as PortRulesOptions[]) {
    const list = portRuleList(spec, opts);
    c.calls.length = 0;
    await fw.apply(portRules(spec, opts));
    assert.deepEqual(
      c.calls.filter((x) => x.includes('-restore')).length,
      2,
      'one iptables-restore and one ip6tables-restore for the whole batch',
    );
    for (const family of ['ipv4', 'ipv6'] as const) {
      const want = list.filter((r) => r.family === family).map((r) => `${r.table} -A ${r.chain} ${r.rule}`);
      const got = added(ruleLines(before[family]), ruleLines(saved(host, family)));
      assert.deepEqual(
        got.slice().sort(),
        want.slice().sort(),
        `${family} ${JSON.stringify(opts)}: exactly the generated rules`,
      );
    }
    if (opts.shiftedRangeDnat === false) {
      const dnat = ruleLines(saved(host, 'ipv4')).filter(
        (x) => x.includes('--dport 3') && x.includes('DNAT'),
      );
      assert.equal(dnat.length, 1000, 'one DNAT per port of the shifted range');
      assert.ok(
        dnat.includes(
          'nat -A CNMD ! -i br-portmap0001 -p udp -m udp --dport 30999 -j DNAT --to-destination 10.88.0.2:20999',
        ),
      );
    } else {
      assert.ok(
        ruleLines(saved(host, 'ipv4')).includes(
          `nat -A CNMD ${opts.userlandProxy === false ? '' : '! -i br-portmap0001 '}-p tcp -m tcp --dport 20000:20999 -j DNAT --to-destination 10.88.0.2`,
        ),
        'the identical range is one rule',
      );
    }
    // Ensured again: no process, nothing changes.
    const snap = { ipv4: saved(host, 'ipv4'), ipv6: saved(host, 'ipv6') };
    c.calls.length = 0;
    await fw.apply(portRules(spec, opts));
    assert.deepEqual(c.calls, [], 'a satisfied batch runs no process');
    // A fresh backend (fresh cache read from iptables-save) also finds every rule.
    await new IptablesBackend({ verify: true, netns: host.path }).apply(portRules(spec, opts));
    assert.equal(saved(host, 'ipv4'), snap.ipv4);
    assert.equal(saved(host, 'ipv6'), snap.ipv6);
    // Removal: the tables exactly as before; removing again is a no-op.
    await fw.apply(removePortRules(spec, opts));
    assert.equal(saved(host, 'ipv4'), before.ipv4);
    assert.equal(saved(host, 'ipv6'), before.ipv6);
    await fw.apply(removePortRules(spec, opts));
    assert.equal(saved(host, 'ipv4'), before.ipv4);
  }
});

test("removing one sandbox's rules leaves another sandbox's rules alone", async (t) => {
  const l = await lab(t);
  const host = await l.ns('host');
  const fw = new IptablesBackend({ verify: true, netns: host.path });
  await fw.apply(mergeBatches(baseRules(), networkRules({ ...NET, subnets: { v4: NET.subnets.v4 } })));
  const a: PortRulesSpec = {
    bridge: BR,
    containerIPv4: '10.88.0.2',
    bindings: parsePortSpecs(['8080:80', '9:9/sctp', '127.0.0.1:8081:81']),
  };
  const b: PortRulesSpec = {
    bridge: BR,
    containerIPv4: '10.88.0.3',
    bindings: parsePortSpecs(['9080:80', '10:9/sctp', '127.0.0.1:9081:81']),
  };
  await fw.apply(portRules(a));
  const onlyA = ruleLines(saved(host));
  await fw.apply(portRules(b));
  await fw.apply(removePortRules(b));
  assert.deepEqual(ruleLines(saved(host)), onlyA);
  await fw.apply(portRules(b));
  await fw.apply(removePortRules(a));
  const left = ruleLines(saved(host));
  for (const r of portRuleList(b)) assert.ok(left.includes(`${r.table} -A ${r.chain} ${r.rule}`), r.rule);
  assert.ok(!left.some((x) => x.includes('10.88.0.2')));
});

test('shifted port-range DNAT: this iptables and kernel accept it (probe in a throwaway netns)', async () => {
  assert.equal(await probeShiftedRangeDnat(), true);
});

// ---- real packets ----------------------------------------------------------------------------------

/** A server in the container: TCP answers "<client address> <local port>" and closes; UDP echoes the same. */
const SERVER = `
const net = require('net'), dgram = require('dgram');
const [tcp, udp] = JSON.parse(process.argv[1]);
const addr = (a) => a.replace(/^::ffff:/, '');
let pending = 0;
const ready = () => { if (--pending === 0) console.log('ready'); };
for (const [a, b] of tcp) for (let p = a; p <= b; p++) {
  pending++;
  net.createServer((c) => c.end(addr(c.remoteAddress) + ' ' + p)).listen({ port: p, host: '::' }, ready);
}
for (const [a, b] of udp) for (let p = a; p <= b; p++) {
  pending++;
  const s = dgram.createSocket('udp6');
  s.on('message', (m, r) => s.send(addr(r.address) + ' ' + p, r.port, r.address));
  s.bind(p, '::', ready);
}`;

/** A client: one attempt per target, 64 at a time; prints the answers as JSON. */
const CLIENT = `
const net = require('net'), dgram = require('dgram');
const targets = JSON.parse(process.argv[1]);
const ms = Number(process.argv[2]);
function one(t) {
  return new Promise((res) => {
    if (t.proto === 'tcp') {
      const c = net.connect({ host: t.host, port: t.port, localAddress: t.from });
      let d = '';
      const timer = setTimeout(() => { c.destroy(); res('timeout'); }, ms);
      c.on('data', (x) => (d += x));
      c.on('end', () => { clearTimeout(timer); res(d); });
      c.on('error', (e) => { clearTimeout(timer); res('error ' + e.code); });
    } else {
      const s = dgram.createSocket(t.host.includes(':') ? 'udp6' : 'udp4');
      const send = () => s.send('x', t.port, t.host);
      const iv = setInterval(send, 250);
      const timer = setTimeout(() => { clearInterval(iv); s.close(); res('timeout'); }, ms);
      s.on('message', (m) => { clearTimeout(timer); clearInterval(iv); s.close(); res(m.toString()); });
      send();
    }
  });
}
(async () => {
  const out = new Array(targets.length);
  let i = 0;
  await Promise.all(Array.from({ length: 64 }, async () => { while (i < targets.length) { const k = i++; out[k] = await one(targets[k]); } }));
  console.log(JSON.stringify(out));
})();`;

interface Target {
  proto: 'tcp' | 'udp';
  host: string;
  port: number;
  /** The client's source address (TCP). */
  from?: string;
}

function ask(ns: Ns, targets: Target[], ms = 2000): string[] {
  const r = spawnSync(
    'nsenter',
    [`--net=${ns.path}`, process.execPath, '-e', CLIENT, JSON.stringify(targets), String(ms)],
    { encoding: 'utf8', timeout: 120_000, maxBuffer: 64 << 20 },
  );
  if (r.status !== 0) throw new Error(`client failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as string[];
}

async function startServer(
  t: TestContext,
  ns: Ns,
  tcp: [number, number][],
  udp: [number, number][],
): Promise<void> {
  const proc = spawn(
    'nsenter',
    [`--net=${ns.path}`, process.execPath, '-e', SERVER, JSON.stringify([tcp, udp])],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  t.after(() => {
    if (proc.exitCode === null) proc.kill('SIGKILL');
  });
  await new Promise<void>((resolve, reject) => {
    let err = '';
    proc.stderr!.on('data', (d) => (err += d));
    proc.stdout!.once('data', () => resolve());
    proc.once('exit', (code) => reject(new Error(`server exited ${code}: ${err}`)));
  });
}

interface Topology {
  host: Ns;
  ctr: Ns;
  out: Ns;
  fw: IptablesBackend;
}

/**
 * host: bridge 10.88.0.1/24 + fd00:88::1/64 with ctr (10.88.0.2, fd00:88::2) behind it;
 * uplink 192.0.2.1/24 + 2001:db8::1/64 to out (192.0.2.2, 2001:db8::2). out has no
 * route to the container subnets. Forwarding on, FORWARD policy DROP (as Docker's hosts),
 * so the published ports' ACCEPT rules are what lets packets through.
 */
async function topology(t: TestContext, opts: { userlandProxy?: boolean } = {}): Promise<Topology> {
  const l = await lab(t);
  const host = await l.ns('host');
  const ctr = await l.ns('ctr');
  const out = await l.ns('out');
  // No duplicate address detection: IPv6 addresses (link-local ones too) usable at once.
  for (const ns of [host, ctr, out])
    ns.run('sysctl', ['-qw', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0']);
  host.run('ip', ['link', 'add', BR, 'type', 'bridge']);
  host.run('ip', ['addr', 'add', '10.88.0.1/24', 'dev', BR]);
  host.run('ip', ['addr', 'add', 'fd00:88::1/64', 'dev', BR, 'nodad']);
  host.run('ip', ['link', 'set', BR, 'up']);
  await host.handle.linkAdd({ kind: 'veth', name: 'vethctr', peer: { name: 'eth0', netns: ctr.path } });
  host.run('ip', ['link', 'set', 'vethctr', 'master', BR, 'up']);
  // Docker sets hairpin mode on the bridge port without the userland proxy: with
  // br_netfilter (on here) a DNATed hairpin packet is bridged back out its ingress port.
  if (opts.userlandProxy === false)
    host.run('ip', ['link', 'set', 'vethctr', 'type', 'bridge_slave', 'hairpin', 'on']);
  await host.handle.linkAdd({ kind: 'veth', name: 'uplink', peer: { name: 'eth0', netns: out.path } });
  host.run('ip', ['addr', 'add', '192.0.2.1/24', 'dev', 'uplink']);
  host.run('ip', ['addr', 'add', '2001:db8::1/64', 'dev', 'uplink', 'nodad']);
  host.run('ip', ['link', 'set', 'uplink', 'up']);
  host.run('ip', ['link', 'set', 'lo', 'up']);
  host.run('sysctl', ['-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
  ctr.run('ip', ['addr', 'add', '10.88.0.2/24', 'dev', 'eth0']);
  ctr.run('ip', ['addr', 'add', 'fd00:88::2/64', 'dev', 'eth0', 'nodad']);
  ctr.run('ip', ['link', 'set', 'eth0', 'up']);
  ctr.run('ip', ['link', 'set', 'lo', 'up']);
  ctr.run('ip', ['route', 'add', 'default', 'via', '10.88.0.1']);
  ctr.run('ip', ['-6', 'route', 'add', 'default', 'via', 'fd00:88::1']);
  out.run('ip', ['addr', 'add', '192.0.2.2/24', 'dev', 'eth0']);
  out.run('ip', ['addr', 'add', '2001:db8::2/64', 'dev', 'eth0', 'nodad']);
  out.run('ip', ['link', 'set', 'eth0', 'up']);
  const fw = new IptablesBackend({ verify: true, netns: host.path });
  host.run('iptables', ['-P', 'FORWARD', 'DROP']);
  host.run('ip6tables', ['-P', 'FORWARD', 'DROP']);
  await fw.apply(
    mergeBatches(
      baseRules({ ipv6: true, userlandProxy: opts.userlandProxy }),
      networkRules(NET, { userlandProxy: opts.userlandProxy }),
    ),
  );
  // Neighbours resolved both ways before any assertion (IPv6 included).
  await eventually(
    () =>
      assert.ok(
        ping(out.path, '192.0.2.1') &&
          ping(out.path, '2001:db8::1') &&
          ping(ctr.path, '10.88.0.1') &&
          ping(ctr.path, 'fd00:88::1'),
      ),
    10_000,
  );
  return { host, ctr, out, fw };
}

const tcp = (host: string, port: number): Target => ({ proto: 'tcp', host, port });
const udp = (host: string, port: number): Target => ({ proto: 'udp', host, port });

test('real packets: an outside client reaches the container through the host address and published ports, its address preserved', async (t) => {
  const { host, ctr, out, fw } = await topology(t);
  await startServer(
    t,
    ctr,
    [
      [80, 81],
      [20000, 20999],
    ],
    [[53, 53]],
  );
  const before = { ipv4: saved(host, 'ipv4'), ipv6: saved(host, 'ipv6') };
  assert.deepEqual(ask(out, [tcp('192.0.2.1', 8080)], 1000), ['error ECONNREFUSED'], 'nothing published yet');

  const spec: PortRulesSpec = {
    bridge: BR,
    containerIPv4: '10.88.0.2',
    containerIPv6: 'fd00:88::2',
    bindings: parsePortSpecs([
      '8080:80',
      '127.0.0.1:8081:81',
      '20000-20999:20000-20999',
      '30000-30999:20000-20999',
      '5353:53/udp',
    ]),
  };
  await fw.apply(portRules(spec));

  // Single ports, both families, TCP and UDP: the server sees the outside client's own address.
  assert.deepEqual(
    ask(out, [
      tcp('192.0.2.1', 8080),
      tcp('2001:db8::1', 8080),
      udp('192.0.2.1', 5353),
      udp('2001:db8::1', 5353),
    ]),
    ['192.0.2.2 80', '2001:db8::2 80', '192.0.2.2 53', '2001:db8::2 53'],
  );
  // Every port of the identical range and of the shifted range (30000+i -> 20000+i).
  const targets: Target[] = [];
  // The shifted range is asked from a second client address: one client address and
  // port connected to host ports 20000+i and 30000+i at once maps both onto container
  // port 20000+i, and the kernel resolves that clash by moving the shifted one to
  // another port of its range (docs/design-notes.md, "Shifted port ranges").
  out.run('ip', ['addr', 'add', '192.0.2.3/24', 'dev', 'eth0']);
  for (let i = 0; i < 1000; i++)
    targets.push(tcp('192.0.2.1', 20000 + i), { ...tcp('192.0.2.1', 30000 + i), from: '192.0.2.3' });
  const answers = ask(out, targets);
  const wrong = answers
    .map((a, k) => [targets[k].port, a] as const)
    .filter(
      ([port, a]) => a !== `${port >= 30000 ? '192.0.2.3' : '192.0.2.2'} ${20000 + ((port - 20000) % 10000)}`,
    );
  assert.deepEqual(wrong, [], 'every port of both ranges answers from the right container port');
  // A few IPv6 ports of the shifted range too.
  assert.deepEqual(ask(out, [tcp('2001:db8::1', 30000), tcp('2001:db8::1', 30999)]), [
    '2001:db8::2 20000',
    '2001:db8::2 20999',
  ]);
  // 127.0.0.1:8081 is not published on the host's other addresses.
  assert.notEqual(ask(out, [tcp('192.0.2.1', 8081)], 1000)[0], '192.0.2.2 81');

  // Removal: the tables as before, and the ports are gone.
  await fw.apply(removePortRules(spec));
  assert.equal(saved(host, 'ipv4'), before.ipv4);
  assert.equal(saved(host, 'ipv6'), before.ipv6);
  assert.deepEqual(ask(out, [tcp('192.0.2.1', 8080), tcp('192.0.2.1', 30000)], 1000), [
    'error ECONNREFUSED',
    'error ECONNREFUSED',
  ]);
});

test('moby/moby#45610: a port published on 127.0.0.1 is not reachable by routing to the container address', async (t) => {
  const { ctr, out, fw } = await topology(t);
  await startServer(t, ctr, [[80, 81]], []);
  // A LAN neighbour that routes the container subnet through the host.
  out.run('ip', ['route', 'add', '10.88.0.0/24', 'via', '192.0.2.1']);
  const spec: PortRulesSpec = {
    bridge: BR,
    containerIPv4: '10.88.0.2',
    bindings: parsePortSpecs(['127.0.0.1:8081:81', '8080:80']),
  };

  // Without the raw-table rule the forward ACCEPT for 10.88.0.2:81 lets it through: the hole.
  await fw.apply(portRules(spec, { directAccessFilter: 'never' }));
  assert.deepEqual(
    ask(out, [tcp('10.88.0.2', 81)]),
    ['192.0.2.2 81'],
    'the hole exists without the protection',
  );
  // With it (the default when a binding names a host address): dropped; the host address still works.
  await fw.apply(mergeBatches(removePortRules(spec, { directAccessFilter: 'never' }), portRules(spec)));
  assert.deepEqual(ask(out, [tcp('10.88.0.2', 81), tcp('10.88.0.2', 80), tcp('192.0.2.1', 8080)], 1000), [
    'timeout',
    'timeout',
    '192.0.2.2 80',
  ]);
});

test("proxy-less mode: the host's 127.0.0.1 and the container itself (hairpin) reach the published port by NAT", async (t) => {
  const { host, ctr, out, fw } = await topology(t, { userlandProxy: false });
  await startServer(t, ctr, [[80, 80]], []);
  const sysctl = routeLocalnetSysctl(BR);
  host.run('sh', ['-c', `echo ${sysctl.value} > ${sysctl.path}`]);
  const spec: PortRulesSpec = {
    bridge: BR,
    containerIPv4: '10.88.0.2',
    bindings: parsePortSpecs(['8080:80']),
  };
  await fw.apply(portRules(spec, { userlandProxy: false }));
  assert.deepEqual(ask(out, [tcp('192.0.2.1', 8080)]), ['192.0.2.2 80'], 'outside: source preserved');
  // From the host's loopback (nat OUTPUT, route_localnet, MASQUERADE --src-type LOCAL).
  assert.deepEqual(ask(host, [tcp('127.0.0.1', 8080), tcp('192.0.2.1', 8080)]), [
    '10.88.0.1 80',
    '10.88.0.1 80',
  ]);
  // The container through the host's address: the hairpin MASQUERADE makes the answer come back.
  assert.deepEqual(ask(ctr, [tcp('192.0.2.1', 8080)]), ['10.88.0.1 80']);
});

// ---- host listeners in a lab netns ----------------------------------------------------------------

test('the allocator sees listeners of the netns whose /proc/<pid>/net it reads', async (t) => {
  const l = await lab(t);
  const host = await l.ns('host');
  host.run('ip', ['link', 'set', 'lo', 'up']);
  const tcpServer = await serve(t, host.path, 'tcp', 7777);
  const udpServer = await serve(t, host.path, 'udp', 7778);
  const procNetDir = `/proc/${tcpServer.proc.pid}/net`;
  assert.ok(udpServer.proc.pid);
  const a = new PortAllocator({ procNetDir });
  await assert.rejects(
    a.reserve('c', parsePortSpecs(['7777:80'])),
    (e: unknown) =>
      e instanceof CnmdError &&
      e.code === 'CONFLICT' &&
      e.message.startsWith('port 7777/tcp is already in use by a process on the host ([::]:7777)'),
  );
  await assert.rejects(
    a.reserve('c', parsePortSpecs(['10.0.0.1:7778:80/udp'])),
    /port 7778\/udp is already in use by a process on the host \(\[::\]:7778\)/,
  );
  // Free in that netns: 7777/udp, 7778/tcp.
  assert.deepEqual(
    (await a.reserve('c', parsePortSpecs(['7777:80/udp', '7778:80']))).map((b) => b.hostPort),
    [7777, 7778],
  );
});
