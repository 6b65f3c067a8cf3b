// Docker 20.10 engines (no swarm) on two hosts with cnmd-overlay: each
// engine's local-scope network is bound to the cnmd overlay network `web`
// (-o cnmd.network=web) and takes its addresses from the cluster's blocks
// through cnmd-ipam. Two hosts (netns) on an underlay with etcd, one cnmd and
// one dockerd per host: containers started by `docker run` on each host reach
// each other across the VXLAN; bad bindings are refused naming the fix; rm
// of the containers and the networks leaves no veth, peer entry, endpoint
// record or address behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { eventually, runIn } from '../lib/fixture';
import { CNMCTL, type RunningDaemon } from '../lib/daemon';
import { startEngine } from '../lib/engine';
import { clusterLab, etcdAddr, hostAddr } from '../lib/cluster';

const VXLANID = 'com.docker.network.driver.overlay.vxlanid_list';

function etcdKeys(c: Awaited<ReturnType<typeof clusterLab>>, prefix: string): string[] {
  return c.etcd[0].ns
    .run('etcdctl', [`--endpoints=http://${etcdAddr(1)}:2379`, 'get', '--prefix', '--keys-only', prefix])
    .split('\n')
    .filter((l) => l);
}

/** Keys under a prefix and the lease each is under. */
function leases(c: Awaited<ReturnType<typeof clusterLab>>, prefix: string): Map<string, string> {
  const out = c.etcd[0].ns.run('etcdctl', [
    `--endpoints=http://${etcdAddr(1)}:2379`,
    'get',
    '--prefix',
    '--write-out=json',
    prefix,
  ]);
  // Lease ids are int64: quoted before parsing, or JSON numbers lose their low digits.
  const kvs: { key: string; lease?: string }[] =
    JSON.parse(out.replace(/"lease":(\d+)/g, '"lease":"$1"')).kvs ?? [];
  return new Map(kvs.map((kv) => [Buffer.from(kv.key, 'base64').toString(), String(kv.lease ?? 0)]));
}

/** The overlay netns of a network on host d: its neighbour entries on the vxlan device (IP -> MAC). */
function neigh(d: RunningDaemon, netId: string, vni: number): Map<string, string> {
  const ns = path.join(d.execRoot, 'overlay', 'netns', `ov-${netId}`);
  const dev = `vx-${vni.toString(16).padStart(6, '0')}`;
  const out = new Map<string, string>();
  for (const e of JSON.parse(runIn(ns, 'ip', ['-j', 'neigh', 'show', 'dev', dev]) || '[]'))
    if (e.lladdr) out.set(e.dst, e.lladdr);
  return out;
}

/** The veths on the overlay network's bridge on host d (the endpoints joined there). */
function bridgePorts(d: RunningDaemon, netId: string): string[] {
  const ns = path.join(d.execRoot, 'overlay', 'netns', `ov-${netId}`);
  return JSON.parse(runIn(ns, 'ip', ['-j', 'link', 'show', 'type', 'veth']) || '[]').map(
    (l: any) => l.ifname,
  );
}

test(
  'two Docker engines bound to one cnmd overlay network: docker run on each host, ping across, refusals, rm leaves nothing',
  { timeout: 600_000 },
  async (t) => {
    const c = await clusterLab(t, { hosts: 2 });
    let d1 = await c.startDaemon(0);
    const d2 = await c.startDaemon(1);
    // cnmd before the engines: the lab stops the engines first, while cnmd still answers their plugin calls.
    const [e1, e2] = await Promise.all(
      [d1, d2].map((d, i) =>
        startEngine(t, c.lab, {
          hostNs: d.host,
          pluginDir: d.pluginDir,
          tag: `ov${i + 1}`,
          bip: `172.3${i}.0.1/16`,
        }),
      ),
    );
    const cnmctl = (d: RunningDaemon, ...args: string[]) =>
      execFileSync(process.execPath, [CNMCTL, '-H', d.hostUri, ...args], { encoding: 'utf8' });

    // The cnmd overlay network, made once on h1: h2 has it too.
    cnmctl(d1, 'network', 'create', '-d', 'overlay', '--subnet', '10.70.0.0/16', 'web');
    const web = (await d1.request('GET', '/networks/web')).body;
    const vni = Number(web.Options[VXLANID]);
    await eventually(async () => assert.equal((await d2.request('GET', '/networks/web')).status, 200));

    const create = (e: typeof e1, ...args: string[]) =>
      e.docker(['network', 'create', '-d', 'cnmd-overlay', ...args], { allowFail: true });
    // Refusals, each naming what to do: no binding, an unknown network, another subnet, the engine's own IPAM.
    const refusals: [string[], RegExp][] = [
      [['--ipam-driver', 'cnmd-ipam', '--subnet', '10.70.0.0/16', 'x'], /give -o cnmd\.network=NAME/],
      [
        ['--ipam-driver', 'cnmd-ipam', '--subnet', '10.70.0.0/16', '-o', 'cnmd.network=nope', 'x'],
        /cnmd overlay network nope \(-o cnmd\.network\) not found on this host: create it first with cnmctl/,
      ],
      [
        ['--ipam-driver', 'cnmd-ipam', '--subnet', '10.71.0.0/16', '-o', 'cnmd.network=web', 'x'],
        /pool 10\.71\.0\.0\/16 is not the subnet of cnmd overlay network web \(10\.70\.0\.0\/16\)/,
      ],
      [
        ['--subnet', '10.70.0.0/16', '-o', 'cnmd.network=web', 'x'],
        /must come from the cluster's address blocks \(unique on every host\): create it with .*--ipam-driver cnmd-ipam/,
      ],
      // Docker's -o encrypted reaches the plugin: it must agree with the bound network (web is plain).
      [
        ['--ipam-driver', 'cnmd-ipam', '--subnet', '10.70.0.0/16', '-o', 'encrypted', 'x'],
        /give -o cnmd\.network=NAME \(create NAME on any host with: cnmctl network create -d overlay -o encrypted --subnet SUBNET NAME\)/,
      ],
      [
        [
          '--ipam-driver',
          'cnmd-ipam',
          '--subnet',
          '10.70.0.0/16',
          '-o',
          'cnmd.network=web',
          '-o',
          'encrypted',
          'x',
        ],
        /-o encrypted asks for encryption, but cnmd overlay network web is not encrypted \(encryption is the cnmd network's\): bind to one made with cnmctl network create -d overlay -o encrypted/,
      ],
      [
        [
          '--ipam-driver',
          'cnmd-ipam',
          '--subnet',
          '10.70.0.0/16',
          '-o',
          'cnmd.network=web',
          '-o',
          'encrypted=maybe',
          'x',
        ],
        /option encrypted: "maybe" is not true or false/,
      ],
    ];
    for (const [args, msg] of refusals) {
      const r = await create(e1, ...args);
      assert.notEqual(r.status, 0, `accepted: ${args.join(' ')}`);
      assert.match(r.stderr, msg);
    }
    // The overlay's pool is not for other drivers.
    const POOL = ['--ipam-driver', 'cnmd-ipam', '--subnet', '10.70.0.0/16'];
    const BIND = [...POOL, '-o', 'cnmd.network=web'];
    const br = await e1.docker(['network', 'create', '-d', 'cnmd-bridge', ...POOL, 'x'], { allowFail: true });
    assert.notEqual(br.status, 0);
    assert.match(br.stderr, /pool 10\.70\.0\.0\/16 is the subnet of a cnmd overlay network/);
    // Nothing of the refusals stayed: no engine network in cnmd, no lease.
    assert.deepEqual((await d1.request('GET', '/networks')).body.map((n: any) => n.Name).sort(), [
      'bridge',
      'host',
      'none',
      'web',
    ]);

    // The binding, on both hosts.
    for (const e of [e1, e2]) {
      const r = await create(e, ...BIND, 'enginenet');
      assert.equal(r.status, 0, r.stderr);
      const n = await e.inspect('enginenet');
      assert.equal(n.Scope, 'local');
      assert.equal(n.IPAM.Driver, 'cnmd-ipam');
    }
    await e1.runDetached('c1', { network: 'enginenet' });
    await e2.runDetached('c2', { network: 'enginenet' });
    await e1.runDetached('c3', { network: 'enginenet' });
    const ip1 = await e1.ip('c1', 'enginenet');
    const ip2 = await e2.ip('c2', 'enginenet');
    const ip3 = await e1.ip('c3', 'enginenet');
    // Unique cluster-wide: the hosts allocate from their own blocks.
    assert.equal(new Set([ip1, ip2, ip3]).size, 3, `${ip1} ${ip2} ${ip3}`);
    for (const ip of [ip1, ip2, ip3]) assert.match(ip, /^10\.70\.\d+\.\d+$/);
    const blocks = new Map(
      etcdKeys(c, '/cnmd/v1/blocks/10.70.0.0/16/').map((k) => [k.split('/').slice(-2).join('/'), k]),
    );
    assert.ok(blocks.size >= 2, `each host claimed a block: ${[...blocks.keys()]}`);

    // The other host's kernel has the static entries (published through etcd), and packets cross.
    const mac2 = (await e2.inspect('c2')).NetworkSettings.Networks.enginenet.MacAddress;
    await eventually(() => assert.equal(neigh(d1, web.Id, vni).get(ip2), mac2));
    await eventually(() => {
      const n = neigh(d2, web.Id, vni);
      assert.ok(n.has(ip1) && n.has(ip3), `h2's entries: ${[...n.keys()]}`);
    });
    for (const [e, from, to] of [
      [e1, 'c1', ip2],
      [e2, 'c2', ip1],
      [e2, 'c2', ip3],
      [e1, 'c3', ip2],
    ] as const) {
      const r = await e.exec(from, ['ping', '-c1', '-W2', to], { allowFail: true });
      assert.equal(r.status, 0, `${from} -> ${to}: ${r.stdout}${r.stderr}`);
    }
    // By name: the engine's embedded DNS answers its own containers (c3 from c1, same host); a plugin is never
    // told container names, so a container on the other engine is not resolvable (the engine forwards the name
    // to its host's resolvers: `ping c2` from c1 answered "bad address 'c2'" after ~15 s when tried).
    const byName = await e1.exec('c1', ['ping', '-c1', '-W2', 'c3'], { allowFail: true });
    assert.equal(byName.status, 0, byName.stdout + byName.stderr);
    // The underlay carried it: h1's cnmd lists h2 as a peer of web.
    const peers = (await d1.request('GET', '/networks/web')).body.Peers.map((p: any) => p.IP).sort();
    assert.deepEqual(peers, [hostAddr(1), hostAddr(2)]);
    assert.equal(etcdKeys(c, `/cnmd/v1/endpoints/${web.Id}/`).length, 3);

    // cnmd SIGKILLed and restarted on h1 under running containers: it publishes the engine's endpoints again (and does not
    // sweep them as unknown), adopts their veths, and traffic keeps flowing.
    const h1Lease = (): { key: string; lease: string } => {
      const eps = [...leases(c, `/cnmd/v1/endpoints/${web.Id}/`).values()];
      const [key, lease] = [...leases(c, '/cnmd/v1/hosts/')].find(
        ([, l]) => eps.filter((x) => x === l).length === 2,
      )!;
      return { key, lease };
    };
    const before = h1Lease();
    await d1.kill();
    d1 = await c.restart(0);
    await eventually(() => {
      const now = leases(c, '/cnmd/v1/hosts/').get(before.key);
      assert.ok(
        now && now !== before.lease,
        `h1 joined again under a new lease: ${JSON.stringify(before)} now ${now}`,
      );
      const eps = [...leases(c, `/cnmd/v1/endpoints/${web.Id}/`).values()];
      assert.equal(eps.length, 3);
      assert.equal(eps.filter((l) => l === now).length, 2, "h1's engine endpoints are under its new lease");
    });
    const after = await e2.exec('c2', ['ping', '-c1', '-W2', ip1], { allowFail: true });
    assert.equal(after.status, 0, after.stdout + after.stderr);
    assert.equal(bridgePorts(d1, web.Id).length, 2);

    // A cnmd sandbox on web reaches the engine containers of both hosts, and they it.
    const sb = await d2.request('POST', '/sandboxes', { Name: 'native', Networks: [{ Network: 'web' }] });
    assert.equal(sb.status, 201, JSON.stringify(sb.body));
    const sbInfo = (await d2.request('GET', '/sandboxes/native')).body;
    const sbIp = sbInfo.Networks.web.IPAddress;
    await eventually(async () => {
      const r = await e1.exec('c1', ['ping', '-c1', '-W2', sbIp], { allowFail: true });
      assert.equal(r.status, 0, r.stdout);
    });
    assert.equal((await d2.request('DELETE', '/sandboxes/native')).status, 204);

    // web cannot go while engine containers are on it (their endpoints are published).
    const busy = await d1.request('DELETE', '/networks/web');
    assert.equal(busy.status, 403, JSON.stringify(busy.body));

    // Removal: containers, then the engine networks; nothing left of them anywhere.
    await e1.docker(['rm', '-f', 'c1', 'c3']);
    await e2.docker(['rm', '-f', 'c2']);
    await e1.docker(['network', 'rm', 'enginenet']);
    await e2.docker(['network', 'rm', 'enginenet']);
    await eventually(() => assert.deepEqual(etcdKeys(c, `/cnmd/v1/endpoints/${web.Id}/`), []));
    for (const d of [d1, d2]) {
      await eventually(() => assert.equal(neigh(d, web.Id, vni).size, 0));
      assert.deepEqual(bridgePorts(d, web.Id), []);
      assert.deepEqual(
        d.host
          .ipj('link', 'show')
          .filter(
            (x: any) =>
              (x.ifname.startsWith('cnmd') && x.ifname !== 'cnmd_gwbridge') || x.ifname.startsWith('veth'),
          ),
        [],
      );
      assert.deepEqual((await d.request('GET', '/networks')).body.map((n: any) => n.Name).sort(), [
        'bridge',
        'host',
        'none',
        'web',
      ]);
    }
    // The addresses are free again: web can go now, and a cnmd sandbox on h1 gets the first address of h1's block.
    const again = await d1.request('POST', '/sandboxes', { Name: 'again', Networks: [{ Network: 'web' }] });
    assert.equal(again.status, 201, JSON.stringify(again.body));
    const againIp = (await d1.request('GET', '/sandboxes/again')).body.Networks.web.IPAddress;
    assert.ok([ip1, ip3].includes(againIp), `${againIp} is one of the engine's released ${ip1} ${ip3}`);
    assert.equal((await d1.request('DELETE', '/sandboxes/again')).status, 204);
    // An engine network bound to web when web goes (no container on it, so the rm is not refused): a container
    // on it is refused naming why, and the engine network and its lease still go.
    const late = await create(e2, ...BIND, 'late');
    assert.equal(late.status, 0, late.stderr);
    await eventually(async () => assert.equal((await d1.request('DELETE', '/networks/web')).status, 204));
    await eventually(async () => assert.equal((await d2.request('GET', '/networks/web')).status, 404));
    const orphan = await e2.docker(['run', '--rm', '--network', 'late', e2.image, 'true'], {
      allowFail: true,
    });
    assert.notEqual(orphan.status, 0);
    assert.match(
      orphan.stderr,
      /pool 10\.70\.0\.0\/16 was a cnmd overlay network's, and that network is gone from this host/,
    );
    await e2.docker(['network', 'rm', 'late']);
    assert.deepEqual((await d2.request('GET', '/networks')).body.map((n: any) => n.Name).sort(), [
      'bridge',
      'host',
      'none',
    ]);
    await Promise.all([e1.stop(), e2.stop()]);
  },
);
