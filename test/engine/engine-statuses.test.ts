// Docker parity of the Engine API's refusals: each conflict is made on a real dockerd and on
// cnmd in the same state, and the two answers are put side by side: the same status (and
// Docker's wording where cnmd keeps it), or, for the few cases where Docker's 500 only means
// its error carries no errdefs class, the documented difference (docs/design-notes.md,
// "Engine-API statuses"). The engine and cnmd run in separate "host" netns: their bridges,
// routes and published ports must not see each other.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lab } from '../lib/fixture';
import { startDaemon } from '../lib/daemon';
import { startEngine, type Engine } from '../lib/engine';
import { unixRequest, type CurlReply } from '../lib/curl';

type Call = (method: string, p: string, body?: unknown) => Promise<CurlReply>;

interface Side {
  name: 'docker' | 'cnmd';
  call: Call;
  /** A running container (docker) or a sandbox (cnmd) on these networks. */
  container(name: string, network: string, opts?: { ip?: string; ports?: string[] }): Promise<CurlReply>;
}

const connect = (container: string, ip?: string) => ({
  Container: container,
  ...(ip ? { EndpointConfig: { IPAMConfig: { IPv4Address: ip } } } : {}),
});
const subnet = (...s: string[]) => ({ Config: s.map((x) => ({ Subnet: x })) });

interface Case {
  what: string;
  ask: (s: Side) => Promise<CurlReply>;
  /** Both answer this status. */
  status?: number;
  /** Or each its own (a documented difference); docker's may depend on the engine's version. */
  docker?: number | ((version: string) => number);
  cnmd?: number;
  /** Both messages match (cnmd keeps Docker's wording, then gives its reasons). */
  message?: RegExp;
}

/** Both sides' pools for networks made without --subnet: two /24s (each side's bridge may take one). */
const POOL = { base: '10.230.0.0/23', size: 24 };

const CASES: Case[] = [
  {
    what: 'network rm while a container is attached',
    ask: (s) => s.call('DELETE', '/networks/n1'),
    status: 403,
    message: /^error while removing network: network n1 .*has active endpoints/,
  },
  {
    what: 'network create with a subnet overlapping another network',
    ask: (s) => s.call('POST', '/networks/create', { Name: 'over', IPAM: subnet('10.200.1.128/25') }),
    status: 403,
    message: /Pool overlaps with other one on this address space/,
  },
  {
    what: 'network create with two overlapping subnets',
    ask: (s) =>
      s.call('POST', '/networks/create', { Name: 'self', IPAM: subnet('10.200.6.0/24', '10.200.6.0/25') }),
    status: 403,
    message: /Pool overlaps with other one on this address space/,
  },
  {
    what: 'network create with a name taken (CheckDuplicate, as the CLI sends it)',
    ask: (s) =>
      s.call('POST', '/networks/create', { Name: 'n1', CheckDuplicate: true, IPAM: subnet('10.200.9.0/24') }),
    status: 409,
    message: /^network with name n1 already exists$/,
  },
  {
    what: 'connect with --ip held by another container',
    ask: (s) => s.call('POST', '/networks/n1/connect', connect('c2', '10.200.1.10')),
    status: 403,
    message: /Address already in use/,
  },
  {
    what: "connect with --ip of the network's gateway",
    ask: (s) => s.call('POST', '/networks/n1/connect', connect('c2', '10.200.1.1')),
    status: 403,
    message: /Address already in use/,
  },
  {
    what: "connect with --ip of the subnet's network address",
    ask: (s) => s.call('POST', '/networks/n1/connect', connect('c2', '10.200.1.0')),
    status: 403,
  },
  {
    what: "connect with --ip of the subnet's broadcast address",
    ask: (s) => s.call('POST', '/networks/n1/connect', connect('c2', '10.200.1.255')),
    status: 403,
  },
  {
    what: 'connect a container to a network it is on',
    ask: (s) => s.call('POST', '/networks/n1/connect', connect('c1')),
    status: 403,
    message: /^endpoint with name c1 already exists in network n1$/,
  },
  {
    what: 'a container started with --ip held by another',
    ask: (s) => s.container('i1', 'n1', { ip: '10.200.1.10' }),
    status: 403,
    message: /Address already in use/,
  },
  {
    what: 'network rm of a pre-defined network',
    ask: (s) => s.call('DELETE', '/networks/bridge'),
    status: 403,
    message: /^bridge is a pre-defined network and cannot be removed$/,
  },
  {
    what: 'a second host network',
    ask: (s) => s.call('POST', '/networks/create', { Name: 'host2', Driver: 'host' }),
    status: 403,
    message: /^only one instance of "host" network is allowed$/,
  },
  {
    what: 'connect a container with its own netns to host',
    ask: (s) => s.call('POST', '/networks/host/connect', connect('c1')),
    status: 400,
    message: /container cannot be disconnected from host network or connected to host network/,
  },
  {
    what: 'connect a host-network container to a network',
    ask: (s) => s.call('POST', '/networks/n1/connect', connect('hc')),
    status: 400,
    message:
      /container sharing network namespace with another container or host cannot be connected to any other network/,
  },
  {
    what: 'connect a container on a network to none',
    ask: (s) => s.call('POST', '/networks/none/connect', connect('c1')),
    status: 400,
    message:
      /container cannot be connected to multiple networks with one of the networks in private \(none\) mode/,
  },
  // Docker's 500s below carry no errdefs class (a plain error from its port allocator, its
  // endpoint's address loop, its disconnect); cnmd's 500 means a bug of its own, so it answers
  // with the status of what the client has to fix.
  {
    what: 'a container publishing a host port another one holds',
    ask: (s) => s.container('p2', 'n1', { ports: ['18080:80'] }),
    docker: 500,
    cnmd: 409,
    message: /18080/,
  },
  {
    what: 'a container on a network with no address left',
    ask: (s) => s.container('t2', 'tiny'),
    docker: 500,
    cnmd: 409,
    message: /no available IPv4 addresses/,
  },
  {
    // Docker's status moved between versions: 404 from 20.10's NotFound error, 400 from 28's
    // ErrNoMoreSubnets (InvalidParameter); cnmd keeps EXHAUSTED's 409 (design notes).
    what: 'network create without --subnet once the default pools are all taken',
    ask: async (s) => {
      for (let i = 0; ; i++) {
        const r = await s.call('POST', '/networks/create', { Name: `auto${i}` });
        if (r.status !== 201 || i === 4) return r;
      }
    },
    docker: (version) => (/^(1\d|2[0-4])\./.test(version) ? 404 : 400),
    cnmd: 409,
  },
  {
    what: 'disconnect a container from a network it is not on',
    ask: (s) => s.call('POST', '/networks/n4/disconnect', { Container: 'c1' }),
    docker: 500,
    cnmd: 404,
    message: /not connected to network n4/,
  },
];

/** The state every case starts from, made the same way on both sides. */
async function setUp(s: Side): Promise<void> {
  const created = async (r: Promise<CurlReply>, what: string) => {
    const x = await r;
    assert.ok(x.status === 201 || x.status === 204, `${s.name}: ${what}: ${x.status} ${x.text}`);
  };
  for (const [name, sn] of [
    ['n1', '10.200.1.0/24'],
    ['n4', '10.200.4.0/24'],
    ['tiny', '10.200.5.0/30'],
  ])
    await created(s.call('POST', '/networks/create', { Name: name, IPAM: subnet(sn) }), `network ${name}`);
  await created(s.container('c1', 'n1', { ip: '10.200.1.10' }), 'c1');
  await created(s.container('c2', 'n4'), 'c2');
  await created(s.container('hc', 'host'), 'hc');
  await created(s.container('t1', 'tiny'), 't1'); // the /30's one address
  await created(s.container('p1', 'n1', { ports: ['18080:80'] }), 'p1');
}

function dockerSide(e: Engine): Side {
  const call: Call = (m, p, body) => unixRequest(e.paths.sock, m, `/v1.41${p}`, { body });
  return {
    name: 'docker',
    call,
    async container(name, network, opts = {}) {
      const args = ['--network', network, ...(opts.ip ? ['--ip', opts.ip] : [])];
      for (const p of opts.ports ?? []) args.push('-p', p);
      await e.docker(['create', '--name', name, ...args, e.image, 'sleep', '600']);
      // The start is where the engine allocates addresses and ports: its answer is the one compared.
      return call('POST', `/containers/${name}/start`);
    },
  };
}

function cnmdSide(sock: string): Side {
  const call: Call = (m, p, body) => unixRequest(sock, m, `/v1.41${p}`, { body });
  return {
    name: 'cnmd',
    call,
    container: (name, network, opts = {}) =>
      call('POST', '/sandboxes', {
        Name: name,
        Networks: [{ Network: network, ...(opts.ip ? { IPv4Address: opts.ip } : {}) }],
        ...(opts.ports ? { Ports: opts.ports } : {}),
      }),
  };
}

test(
  "the Engine API's refusals answer Docker's status, case by case beside a real dockerd",
  { timeout: 300_000 },
  async (t) => {
    const l = await lab(t);
    const d = await startDaemon(t, l, {
      args: ['--default-address-pool', `base=${POOL.base},size=${POOL.size}`],
    });
    const e = await startEngine(t, l, {
      hostNs: await l.ns('dockerhost'),
      tag: 'statuses',
      bip: '172.30.0.1/16',
      config: { 'default-address-pools': [POOL] },
    });
    const sides = [dockerSide(e), cnmdSide(d.sock)];
    for (const s of sides) await setUp(s);
    const rows: string[] = [];
    for (const c of CASES) {
      const [docker, cnmd] = await Promise.all(sides.map((s) => c.ask(s)));
      const seen = `docker ${docker.status} ${docker.text.trim()} | cnmd ${cnmd.status} ${cnmd.text.trim()}`;
      const dockerWants = typeof c.docker === 'function' ? c.docker(e.version) : (c.status ?? c.docker);
      assert.equal(docker.status, dockerWants, `${c.what}: dockerd: ${seen}`);
      assert.equal(cnmd.status, c.status ?? c.cnmd, `${c.what}: cnmd: ${seen}`);
      if (c.message) {
        assert.match(docker.body?.message ?? '', c.message, `${c.what}: dockerd's message: ${seen}`);
        assert.match(cnmd.body?.message ?? '', c.message, `${c.what}: cnmd's message: ${seen}`);
      }
      rows.push(`${c.what}: docker ${docker.status}, cnmd ${cnmd.status}`);
    }
    t.diagnostic(`dockerd ${e.version}:\n${rows.join('\n')}`);
    // The engine's containers go before it stops (the lab's cleanup stops it on failure too).
    await e.docker(['rm', '-f', 'c1', 'c2', 'hc', 't1', 't2', 'p1', 'p2', 'i1']);
  },
);
