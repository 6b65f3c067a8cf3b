// The sandbox attach path as it is now pipelined: records committed before
// kernel work, the DNS and files made while the veth is, the peer configured
// from the host side's echo, the default route found by the kernel, the netns
// pool refilled after the reply. Each behaviour the old sequential path had is
// checked here, and so is every rollback of the new phases.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { eventually, lab, runIn } from '../lib/fixture';
import { startDaemon } from '../lib/daemon';
import { ping } from '../lib/probe';
import { NetnsManager } from '../../src/netns/netns';
import { NetnsPool } from '../../src/netns/pool';
import { createLogger } from '../../src/log';
import { RESOLVER_SOCKETS, SandboxResolver, armResolverSockets } from '../../src/dns/resolver';
import type { RecordSource } from '../../src/dns/records';
import type { Forwarder } from '../../src/dns/forwarder';
import { ok } from '../lib/api';

const execFileAsync = promisify(execFile);

function routes(nsPath: string, family: '-4' | '-6' = '-4'): any[] {
  return JSON.parse(runIn(nsPath, 'ip', ['-j', family, 'route']));
}

// Two ways to the same sandbox: from a full pool the interface is made from
// the sandbox's side with an index known free and configured in one burst
// (bridge addVethAtFreeIndex); without a pool it is made from the host's side and
// configured after the kernel's answer (addVeth). Both must leave the same state.
for (const mode of ['pooled', 'no pool'] as const) {
  test(`one network (${mode}): veth aliased and in hairpin mode, peer up with its address, default route through eth0, DNS and files in place`, async (t) => {
    const l = await lab(t);
    const d = await startDaemon(t, l, {
      args: mode === 'pooled' ? ['--log-level', 'debug'] : ['--netns-pool-size', '0'],
    });
    if (mode === 'pooled') await eventually(() => assert.match(d.logs(), /"netns pool full"/), 20_000);
    const net = await ok(d, 'POST', '/networks/create', {
      Name: 'web',
      IPAM: { Config: [{ Subnet: '10.61.0.0/24' }] },
    });
    const { Id } = await ok(d, 'POST', '/sandboxes', {
      Name: 'a',
      Hostname: 'alpha',
      Networks: [{ Network: 'web' }],
    });
    const a = await ok(d, 'GET', `/sandboxes/${Id}`);
    const ep = a.Networks.web;
    const veth = `veth${ep.EndpointID.slice(0, 11)}`;
    const [host] = d.host.ipj('-d', 'link', 'show', veth);
    assert.equal(host.ifalias, `cnmd:ep:${net.Id}:${ep.EndpointID}`);
    assert.equal(host.master, `br-${net.Id.slice(0, 12)}`);
    assert.equal(host.linkinfo.info_slave_data.hairpin, true);
    // One queue each way on both ends (the kernel would allocate one per possible CPU).
    const [eth0d] = JSON.parse(runIn(a.SandboxKey, 'ip', ['-d', '-j', 'link', 'show', 'eth0']));
    for (const [end, l] of [
      ['host side', host],
      ['eth0', eth0d],
    ] as const) {
      assert.deepEqual([l.num_tx_queues, l.num_rx_queues], [1, 1], `${end}: tx and rx queues`);
    }
    // A bridge port needs no address of its own: no IPv6 link-local on the host side, so no DAD/MLD/RS flooded to the sandboxes.
    assert.equal(host.inet6_addr_gen_mode, 'none');
    assert.ok(host.flags.includes('UP'), 'host side up');
    assert.deepEqual(
      d.host.ipj('addr', 'show', veth).flatMap((x: any) => x.addr_info),
      [],
      'no address on the host side',
    );
    const [eth0] = JSON.parse(runIn(a.SandboxKey, 'ip', ['-j', 'addr', 'show', 'eth0']));
    assert.ok(eth0.flags.includes('UP'));
    assert.equal(eth0.address, '02:42:0a:3d:00:02');
    assert.ok(eth0.addr_info.some((x: any) => x.local === '10.61.0.2' && x.prefixlen === 24));
    // An IPv4-only network: no IPv6 on eth0, not even link-local (as Docker 26+), so it sends no DAD/MLD/RS for the bridge to flood.
    assert.deepEqual(
      eth0.addr_info.filter((x: any) => x.family === 'inet6'),
      [],
    );
    assert.deepEqual(
      JSON.parse(runIn(a.SandboxKey, 'ip', ['-j', '-6', 'addr', 'show', 'lo'])).flatMap((x: any) =>
        x.addr_info.map((i: any) => i.local),
      ),
      ['::1'],
      'loopback keeps ::1',
    );
    assert.deepEqual(
      routes(a.SandboxKey)
        .filter((r) => r.dst === 'default')
        .map((r) => [r.gateway, r.dev]),
      [['10.61.0.1', 'eth0']],
    );
    assert.ok(ping(a.SandboxKey, '10.61.0.1'), 'the gateway answers');
    // Written while the veth was made: they hold the address and the embedded DNS.
    const dir = path.join(d.execRoot, 'sandboxes', Id);
    assert.match(fs.readFileSync(path.join(dir, 'hosts'), 'utf8'), /^10\.61\.0\.2\talpha$/m);
    assert.match(fs.readFileSync(path.join(dir, 'resolv.conf'), 'utf8'), /^nameserver 127\.0\.0\.11$/m);
    assert.equal(fs.readFileSync(path.join(dir, 'hostname'), 'utf8'), 'alpha\n');
    assert.equal(
      runIn(a.SandboxKey, 'dig', ['@127.0.0.11', '+short', '+time=2', '+tries=1', 'alpha']).trim(),
      '10.61.0.2',
    );
    // Both log lines come, after the reply.
    await eventually(() => {
      assert.match(d.logs(), /"msg":"endpoint joined"/);
      assert.match(d.logs(), /"msg":"sandbox created"/);
    });
  });
}

test('two networks: eth0 and eth1 in order, one default route through the first, both addresses in hosts', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  await ok(d, 'POST', '/networks/create', { Name: 'front', IPAM: { Config: [{ Subnet: '10.62.0.0/24' }] } });
  await ok(d, 'POST', '/networks/create', { Name: 'back', IPAM: { Config: [{ Subnet: '10.63.0.0/24' }] } });
  const { Id } = await ok(d, 'POST', '/sandboxes', {
    Name: 'b',
    Networks: [{ Network: 'front' }, { Network: 'back' }],
  });
  const b = await ok(d, 'GET', `/sandboxes/${Id}`);
  assert.deepEqual([b.Networks.front.Interface, b.Networks.back.Interface], ['eth0', 'eth1']);
  const addrs = JSON.parse(runIn(b.SandboxKey, 'ip', ['-j', 'addr']));
  const byName = new Map(addrs.map((x: any) => [x.ifname, x]));
  assert.ok((byName.get('eth0') as any).addr_info.some((x: any) => x.local === '10.62.0.2'));
  assert.ok((byName.get('eth1') as any).addr_info.some((x: any) => x.local === '10.63.0.2'));
  assert.deepEqual(
    routes(b.SandboxKey)
      .filter((r) => r.dst === 'default')
      .map((r) => [r.gateway, r.dev]),
    [['10.62.0.1', 'eth0']],
  );
  const hosts = fs.readFileSync(path.join(d.execRoot, 'sandboxes', Id, 'hosts'), 'utf8');
  assert.match(hosts, /^10\.62\.0\.2\t/m);
  assert.match(hosts, /^10\.63\.0\.2\t/m);
  // Leaving the first network moves the default route to the second.
  await ok(d, 'POST', '/networks/front/disconnect', { Container: 'b' });
  assert.deepEqual(
    routes(b.SandboxKey)
      .filter((r) => r.dst === 'default')
      .map((r) => [r.gateway, r.dev]),
    [['10.63.0.1', 'eth1']],
  );
});

test('two networks, the first internal: the default route goes through the second, eth1', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  await ok(d, 'POST', '/networks/create', {
    Name: 'inner',
    Internal: true,
    IPAM: { Config: [{ Subnet: '10.68.0.0/24' }] },
  });
  await ok(d, 'POST', '/networks/create', { Name: 'outer', IPAM: { Config: [{ Subnet: '10.69.0.0/24' }] } });
  const { Id } = await ok(d, 'POST', '/sandboxes', {
    Name: 'e',
    Networks: [{ Network: 'inner' }, { Network: 'outer' }],
  });
  const e = await ok(d, 'GET', `/sandboxes/${Id}`);
  assert.deepEqual([e.Networks.inner.Interface, e.Networks.outer.Interface], ['eth0', 'eth1']);
  assert.deepEqual(
    routes(e.SandboxKey)
      .filter((r) => r.dst === 'default')
      .map((r) => [r.gateway, r.dev]),
    [['10.69.0.1', 'eth1']],
  );
  assert.ok(ping(e.SandboxKey, '10.69.0.1'), 'the gateway answers through eth1');
});

test('a sandbox whose second network fails in the kernel is undone whole: veths, netns, files, DNS, addresses', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  await ok(d, 'POST', '/networks/create', { Name: 'good', IPAM: { Config: [{ Subnet: '10.64.0.0/24' }] } });
  const bad = await ok(d, 'POST', '/networks/create', {
    Name: 'bad',
    IPAM: { Config: [{ Subnet: '10.65.0.0/24' }] },
  });
  const linksBefore = d.host
    .ipj('link')
    .map((x: any) => x.ifname)
    .sort();
  // The second network's bridge vanishes behind cnmd's back: its join fails after the first endpoint is wired.
  d.host.run('ip', ['link', 'del', `br-${bad.Id.slice(0, 12)}`]);
  const r = await d.request('POST', '/sandboxes', {
    Name: 'c',
    Networks: [{ Network: 'good' }, { Network: 'bad' }],
  });
  assert.ok(r.status >= 400, `status ${r.status}`);
  await eventually(() =>
    assert.deepEqual(
      d.host
        .ipj('link')
        .map((x: any) => x.ifname)
        .sort(),
      linksBefore.filter((n: string) => n !== `br-${bad.Id.slice(0, 12)}`),
    ),
  );
  assert.deepEqual(await ok(d, 'GET', '/sandboxes'), []);
  assert.deepEqual(
    fs.readdirSync(path.join(d.execRoot, 'netns')).filter((f) => f !== 'default'),
    [],
  );
  assert.deepEqual(
    fs.existsSync(path.join(d.execRoot, 'sandboxes'))
      ? fs.readdirSync(path.join(d.execRoot, 'sandboxes'))
      : [],
    [],
  );
  const good = await ok(d, 'GET', '/networks/good');
  assert.deepEqual(good.Containers, {});
  // The first network's address went back to the IPAM.
  const { Id } = await ok(d, 'POST', '/sandboxes', { Name: 'c', Networks: [{ Network: 'good' }] });
  assert.equal((await ok(d, 'GET', `/sandboxes/${Id}`)).Networks.good.IPAddress, '10.64.0.2');
});

test('a sandbox whose second network has no address left is undone before any kernel work', async (t) => {
  const l = await lab(t);
  const d = await startDaemon(t, l);
  await ok(d, 'POST', '/networks/create', { Name: 'wide', IPAM: { Config: [{ Subnet: '10.66.0.0/24' }] } });
  await ok(d, 'POST', '/networks/create', { Name: 'tiny', IPAM: { Config: [{ Subnet: '10.67.0.0/30' }] } });
  await ok(d, 'POST', '/sandboxes', { Name: 'one', Networks: [{ Network: 'tiny' }] });
  const linksBefore = d.host
    .ipj('link')
    .map((x: any) => x.ifname)
    .sort();
  const r = await d.request('POST', '/sandboxes', {
    Name: 'two',
    Networks: [{ Network: 'wide' }, { Network: 'tiny' }],
  });
  assert.equal(r.status, 409);
  assert.match(r.body.message, /no available IPv4 addresses in 10\.67\.0\.0\/30/);
  assert.deepEqual(
    d.host
      .ipj('link')
      .map((x: any) => x.ifname)
      .sort(),
    linksBefore,
  );
  assert.deepEqual(
    (await ok(d, 'GET', '/sandboxes')).map((s: any) => s.Name),
    ['one'],
  );
  const { Id } = await ok(d, 'POST', '/sandboxes', { Name: 'two', Networks: [{ Network: 'wide' }] });
  assert.equal(
    (await ok(d, 'GET', `/sandboxes/${Id}`)).Networks.wide.IPAddress,
    '10.66.0.2',
    "the first network's address was given back",
  );
});

test('netns pool: take() binds the sandbox path only; pool paths are swept and the pool refilled once no taker has been at work for the idle time', async (t) => {
  const l = await lab(t);
  const root = path.join(l.root, 'pool-exec');
  const target = new NetnsManager(root);
  // Long enough that a loaded machine's late timers do not cross it: the checks below are before it and after it.
  const idleMs = 1000;
  const pool = new NetnsPool(target, root, { size: 2, log: createLogger('silent'), idleMs });
  t.after(() => pool.close());
  const poolDir = path.join(root, 'pool', 'netns');
  const pooled = () => (fs.existsSync(poolDir) ? fs.readdirSync(poolDir) : []);
  pool.start();
  await eventually(() => assert.equal(pool.readyCount, 2));
  assert.equal(pooled().length, 2);
  // Each comes with its netns fd open (for IFLA_NET_NS_FD), so a taker opens none on its attach.
  const openNetns = new Set(
    fs
      .readdirSync('/proc/self/fd')
      .map((f) => {
        try {
          return fs.readlinkSync(`/proc/self/fd/${f}`);
        } catch {
          return ''; // the directory's own fd, closed by now
        }
      })
      .filter((l) => l.startsWith('net:')),
  );
  for (const f of pooled())
    assert.ok(
      openNetns.has(`net:[${fs.statSync(path.join(poolDir, f)).ino}]`),
      `pooled ${f}: its netns fd is open`,
    );
  const taken = await pool.take('sb1');
  t.after(() => taken.handle.close());
  assert.equal(taken.path, path.join(root, 'netns', 'sb1'));
  assert.equal(pooled().length, 2, 'the pool path stays while sandboxes are being attached');
  // The handle works inside the namespace the sandbox path names.
  await taken.handle.linkAdd({ kind: 'bridge', name: 'probe0' });
  assert.match(runIn(taken.path, 'ip', ['-o', 'link', 'show', 'probe0']), /probe0/);
  // A burst: the second taker empties the pool, the third makes its netns directly; nothing is refilled meanwhile.
  const second = await pool.take('sb2');
  t.after(() => second.handle.close());
  pool.done('sb1');
  const third = await pool.take('sb3');
  t.after(() => third.handle.close());
  assert.equal(third.path, path.join(root, 'netns', 'sb3'));
  assert.match(
    runIn(third.path, 'ip', ['-o', 'link', 'show', 'lo']),
    /state UNKNOWN|LOOPBACK,UP/,
    'a directly made netns has loopback up too',
  );
  pool.done('sb2');
  await new Promise((r) => setTimeout(r, idleMs / 2));
  assert.equal(pool.readyCount, 0, 'no refill before the idle time, while sb3 is still at work');
  assert.equal(pooled().length, 2, 'and no pool path swept');
  await new Promise((r) => setTimeout(r, idleMs * 1.5));
  assert.equal(pool.readyCount, 0, 'no refill while a taker (sb3) is at work, however long');
  pool.done('sb3');
  // Run dry by a burst: one netns is made at once for the next taker, the rest when idle.
  await eventually(
    () => assert.equal(pool.readyCount, 1, 'one made right after a burst that ran the pool dry'),
    idleMs / 2,
  );
  await eventually(() => assert.equal(pool.readyCount, 2));
  await eventually(() =>
    assert.equal(pooled().length, 2, 'the two spent pool paths were swept, two new ones made'),
  );
  for (const x of [taken, second]) {
    assert.equal(target.exists(path.basename(x.path)), true, 'a sandbox path outlives its pool path');
  }
  assert.match(runIn(taken.path, 'ip', ['-o', 'link', 'show', 'probe0']), /probe0/);
  pool.done('never-taken'); // harmless
  for (const id of ['sb1', 'sb2', 'sb3']) target.delete(id);
});

/** A full netns pool under the lab whose namespaces come with the resolver's sockets armed. */
async function resolverPool(t: TestContext, dir: string, size: number): Promise<NetnsPool> {
  const l = await lab(t);
  const root = path.join(l.root, dir);
  const pool = new NetnsPool(new NetnsManager(root), root, {
    size,
    log: createLogger('silent'),
    sockets: { specs: RESOLVER_SOCKETS, arm: armResolverSockets },
  });
  t.after(() => pool.close());
  pool.start();
  await eventually(() => assert.equal(pool.readyCount, size));
  return pool;
}

/** A resolver with no records and no upstreams: every name gets an error answer, never a timeout. */
function bareResolverContext(sandboxId: string) {
  return {
    sandboxId,
    records: { networksOf: () => [] } as unknown as RecordSource,
    forwarder: undefined as unknown as Forwarder,
    upstreams: () => [],
    log: createLogger('silent'),
  };
}

test('netns pool: pooled namespaces come with their resolver sockets bound and listening on 127.0.0.11:53; a sandbox that takes one answers DNS at once', async (t) => {
  const pool = await resolverPool(t, 'pool-dns', 1);
  const taken = await pool.take('sb');
  t.after(() => taken.handle.close()); // its mount goes with the lab's
  assert.equal(taken.sockets.length, 2);
  // Bound and listening inside the sandbox before any resolver serves them: the kernel queues what comes.
  const ss = runIn(taken.path, 'ss', ['-H', '-lnu']) + runIn(taken.path, 'ss', ['-H', '-lnt']);
  assert.match(ss, /UNCONN\s+\d+\s+\d+\s+127\.0\.0\.11:53\b/);
  assert.match(ss, /LISTEN\s+\d+\s+\d+\s+127\.0\.0\.11:53\b/);
  const r = await SandboxResolver.start(taken.path, bareResolverContext('sb'), taken.sockets);
  t.after(() => r.close());
  // A name nobody has, with no upstreams: the resolver answers (not a timeout), over UDP and TCP.
  // dig runs asynchronously: the resolver answers on this process's event loop.
  for (const proto of ['+notcp', '+tcp']) {
    const { stdout: out } = await execFileAsync('nsenter', [
      `--net=${taken.path}`,
      'dig',
      '@127.0.0.11',
      proto,
      '+time=2',
      '+tries=1',
      'nobody.example',
    ]);
    assert.match(out, /status: (SERVFAIL|NXDOMAIN|REFUSED)/, `${proto}: ${out}`);
  }
});

test('an adopted resolver answers the queries that came before it served; one closed before serving leaves no socket', async (t) => {
  const pool = await resolverPool(t, 'pool-adopt', 2);
  const ctx = bareResolverContext;
  // What the kernel holds for 127.0.0.11:53 in a netns: [state, Recv-Q] per socket (UDP: bytes queued; a listener: connections waiting).
  const listeners = (ns: string) =>
    (runIn(ns, 'ss', ['-H', '-lnu']) + runIn(ns, 'ss', ['-H', '-lnt']))
      .split('\n')
      .map((x) => x.trim().split(/\s+/))
      .filter((f) => f[3] === '127.0.0.11:53')
      .map((f) => [f[0], Number(f[1])] as const);
  const a = await pool.take('a');
  t.after(() => a.handle.close());
  const r = SandboxResolver.adopt(ctx('a'), a.sockets);
  t.after(() => r.close());
  // The queries go out before the resolver serves: the kernel queues them.
  const early = ['+notcp', '+tcp'].map((proto) =>
    execFileAsync('nsenter', [
      `--net=${a.path}`,
      'dig',
      '@127.0.0.11',
      proto,
      '+time=5',
      '+tries=1',
      'nobody.example',
    ]),
  );
  await eventually(() => {
    const q = listeners(a.path);
    assert.ok(
      q.some(([st, n]) => st === 'UNCONN' && n > 0),
      `a UDP query waits: ${JSON.stringify(q)}`,
    );
    assert.ok(
      q.some(([st, n]) => st === 'LISTEN' && n > 0),
      `a TCP connection waits: ${JSON.stringify(q)}`,
    );
  });
  await r.serve();
  for (const [i, p] of early.entries())
    assert.match((await p).stdout, /status: (SERVFAIL|NXDOMAIN|REFUSED)/, i ? 'tcp' : 'udp');
  // Stopped before it served (a sandbox removed at once): its sockets are closed, and a late serve() does nothing.
  const b = await pool.take('b');
  t.after(() => b.handle.close());
  assert.equal(listeners(b.path).length, 2);
  const rb = SandboxResolver.adopt(ctx('b'), b.sockets);
  rb.close();
  await rb.serve();
  assert.deepEqual(listeners(b.path), [], 'nothing listens on 127.0.0.11:53 any more');
});

test('netns pool: sockets that could not be readied are closed and not handed out (a taker would close numbers that belong to others by then)', async (t) => {
  const l = await lab(t);
  const root = path.join(l.root, 'pool-arm');
  const target = new NetnsManager(root);
  let given: number[] = [];
  const pool = new NetnsPool(target, root, {
    size: 1,
    log: createLogger('silent'),
    sockets: {
      specs: RESOLVER_SOCKETS,
      arm: (fds) => {
        given = [...fds];
        throw new Error('cannot bind');
      },
    },
  });
  t.after(() => pool.close());
  pool.start();
  await eventually(() => assert.equal(pool.readyCount, 1));
  const taken = await pool.take('sb');
  t.after(() => taken.handle.close());
  assert.equal(given.length, 2);
  assert.deepEqual(taken.sockets, [], 'no socket numbers handed out');
  // The numbers were closed: each is free or, if reused since, no longer a socket in the pooled netns.
  for (const fd of given) {
    let target = '';
    try {
      target = fs.readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue;
    }
    assert.ok(
      !/^socket:/.test(target) || !runIn(taken.path, 'ss', ['-H', '-lnu']).includes('127.0.0.11:53'),
      `fd ${fd} still open: ${target}`,
    );
  }
});
