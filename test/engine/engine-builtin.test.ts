// Engine lane, first file: the launcher (test/lib/engine.ts) proven with the
// engine's own bridge driver, before any cnmd plugin is involved: containers
// on a user-defined network reach each other by address and by name, dockerd
// restarts on the same roots, the plugin dir handed to the engine is the one
// it discovers plugins in, and nothing of the engine outlives its test.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { eventually, lab } from '../lib/fixture';
import { EngineFootprint, engineLeftovers, startEngine } from '../lib/engine';

/** Link names and iptables chains of the machine's own netns (read only): must be the same after the tests. */
function machineState(): { links: string[]; chains: string[] } {
  const links = spawnSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' })
    .stdout.split('\n')
    .map((l) => l.split(':')[1]?.trim().split('@')[0])
    .filter(Boolean) as string[];
  const chains: string[] = [];
  for (const table of ['filter', 'nat']) {
    const r = spawnSync('iptables', ['-t', table, '-S'], { encoding: 'utf8' });
    for (const l of (r.stdout ?? '').split('\n'))
      if (l.startsWith('-N ')) chains.push(`${table}:${l.slice(3)}`);
  }
  return { links: links.sort(), chains: chains.sort() };
}

test(
  'built-in bridge: two containers reach each other by IP and by name; dockerd restart keeps working; the engine leaves nothing behind',
  { timeout: 300_000 },
  async (t) => {
    const before = machineState();
    let fp: EngineFootprint | undefined;
    let hostNsPath = '';

    await t.test('containers on a user-defined network', async (st) => {
      const l = await lab(st);
      const host = await l.ns('host');
      hostNsPath = host.path;
      let t0 = performance.now();
      const e = await startEngine(st, l, { hostNs: host, tag: 'builtin' });
      st.diagnostic(
        `dockerd ${e.version} (pid ${e.pid}), CLI ${e.cli}: started with the image imported in ${(performance.now() - t0).toFixed(0)} ms`,
      );

      // docker0 exists in the engine's netns only.
      assert.ok(host.ipj('link', 'show', 'docker0').length === 1, 'docker0 in the host netns');
      if (!before.links.includes('docker0'))
        assert.ok(!machineState().links.includes('docker0'), 'no docker0 in the machine netns');

      await e.docker(['network', 'create', '--subnet', '10.88.0.0/24', 'usernet']);
      const netId = (await e.inspect('usernet')).Id as string;
      const bridge = `br-${netId.slice(0, 12)}`;
      assert.equal(host.ipj('link', 'show', bridge).length, 1, `${bridge} in the host netns`);

      await e.runDetached('c1', { network: 'usernet' });
      // httpd answers with c2's own /etc/hostname: TCP by name, not just ICMP.
      // (pid 1 ignores SIGTERM without a handler: the trap keeps `docker stop` and the restart quick.)
      await e.runDetached('c2', {
        network: 'usernet',
        cmd: ['sh', '-c', "trap 'exit 0' TERM; httpd -f -p 8080 -h /etc & wait"],
      });
      const ip1 = await e.ip('c1', 'usernet');
      const ip2 = await e.ip('c2', 'usernet');
      assert.match(ip1, /^10\.88\.0\.\d+$/);
      assert.match(ip2, /^10\.88\.0\.\d+$/);
      assert.notEqual(ip1, ip2);

      // Each container has its own netns holding its address, with the host-side veth on the bridge.
      const pid2 = await e.containerPid('c2');
      const addrs = JSON.parse(
        spawnSync('nsenter', [`--net=/proc/${pid2}/ns/net`, 'ip', '-j', 'addr', 'show', 'eth0'], {
          encoding: 'utf8',
        }).stdout,
      );
      assert.ok(
        addrs[0]?.addr_info?.some((a: { local: string }) => a.local === ip2),
        `c2's eth0 holds ${ip2}`,
      );
      assert.equal(host.ipj('link', 'show', 'master', bridge).length, 2, `two veths on ${bridge}`);

      await e.exec('c1', ['ping', '-c', '1', '-W', '2', ip2]);
      await e.exec('c2', ['ping', '-c', '1', '-W', '2', ip1]);
      await e.exec('c1', ['ping', '-c', '1', '-W', '2', 'c2']);
      await e.exec('c2', ['ping', '-c', '1', '-W', '2', 'c1']);
      const ns = (await e.exec('c1', ['nslookup', 'c2', '127.0.0.11'])).stdout;
      assert.ok(ns.includes(ip2), `nslookup c2 through the engine's DNS answers ${ip2}:\n${ns}`);
      const c2host = (await e.exec('c2', ['hostname'])).stdout.trim();
      const page = await eventually(
        async () =>
          (
            await e.exec('c1', ['timeout', '5', 'wget', '-q', '-O', '-', 'http://c2:8080/hostname'])
          ).stdout.trim(),
        10_000,
      );
      assert.equal(page, c2host);

      // dockerd restarted: the network survives, the containers start again and still find each other.
      const oldPid = e.pid;
      t0 = performance.now();
      await e.restart();
      st.diagnostic(`restart with two running containers: ${(performance.now() - t0).toFixed(0)} ms`);
      assert.notEqual(e.pid, oldPid);
      assert.equal((await e.inspect('usernet')).Id, netId);
      await e.docker(['start', 'c1', 'c2']);
      await e.exec('c1', ['ping', '-c', '1', '-W', '2', 'c2']);
      const ip2b = await e.ip('c2', 'usernet');
      assert.match(
        await e.run(['ping', '-c', '1', '-W', '2', ip2b], { network: 'usernet' }),
        /1 packets received/,
      );

      // A short-lived container: --rm leaves no container and no veth.
      assert.equal((await e.run(['sh', '-c', 'echo hi'], { network: 'usernet' })).trim(), 'hi');
      assert.deepEqual(
        (await e.docker(['ps', '-a', '--format', '{{.Names}}'])).stdout.trim().split('\n').sort(),
        ['c1', 'c2'],
      );
      await eventually(
        () =>
          assert.equal(host.ipj('link', 'show', 'master', bridge).length, 2, 'only c1 and c2 on the bridge'),
        5000,
      );

      fp = e.footprint();
      assert.ok(fp.pids.length >= 4, `engine processes seen: ${fp.pids.join(' ')}`);
      // Cleanup is the lab's, with containers still running: that is the case it must handle.
    });

    assert.ok(fp, 'the subtest ran');
    assert.deepEqual(engineLeftovers(fp!), []);
    assert.ok(!fs.existsSync(hostNsPath), 'host netns removed');
    const after = machineState();
    assert.deepEqual(after.links, before.links, "the machine netns's links are unchanged");
    assert.deepEqual(after.chains, before.chains, "the machine netns's iptables chains are unchanged");
  },
);

/** A NetworkDriver that records what the engine asks and agrees to everything. */
async function probePlugin(
  sock: string,
): Promise<{ calls: { path: string; body: any }[]; close(): Promise<void> }> {
  const calls: { path: string; body: any }[] = [];
  const server = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (d) => (raw += d));
    req.on('end', () => {
      let body: any = {};
      try {
        body = raw ? JSON.parse(raw) : {};
      } catch {
        /* keep {} */
      }
      calls.push({ path: req.url ?? '', body });
      const reply =
        req.url === '/Plugin.Activate'
          ? { Implements: ['NetworkDriver'] }
          : req.url === '/NetworkDriver.GetCapabilities'
            ? { Scope: 'local', ConnectivityScope: 'local' }
            : {};
      res.writeHead(200, { 'Content-Type': 'application/vnd.docker.plugins.v1.2+json' });
      res.end(JSON.stringify(reply));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(sock, () => resolve());
  });
  return {
    calls,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

test(
  'the engine finds plugins in the plugin dir it was given, also after a dockerd restart; the machine never sees them',
  { timeout: 180_000 },
  async (t) => {
    const l = await lab(t);
    const host = await l.ns('host');
    const pluginDir = path.join(l.root, 'cnmd-plugins');
    fs.mkdirSync(pluginDir);
    const probe = await probePlugin(path.join(pluginDir, 'cnmd-probe.sock'));
    // Registered before the engine: cleanup runs in reverse, so the plugin outlives the engine's shutdown.
    l.beforeCleanup(() => probe.close());
    const e = await startEngine(t, l, { hostNs: host, pluginDir, tag: 'probe' });

    assert.ok(
      e.nsexec('ls', ['/run/docker/plugins']).split('\n').includes('cnmd-probe.sock'),
      'the engine sees the socket in /run/docker/plugins',
    );
    assert.ok(
      !fs.existsSync('/run/docker/plugins/cnmd-probe.sock'),
      "the machine's /run/docker/plugins does not",
    );

    await e.docker(['network', 'create', '-d', 'cnmd-probe', '--subnet', '10.89.0.0/24', 'probenet']);
    const paths = probe.calls.map((c) => c.path);
    for (const want of ['/Plugin.Activate', '/NetworkDriver.GetCapabilities', '/NetworkDriver.CreateNetwork'])
      assert.ok(paths.includes(want), `${want} called (got ${paths.join(' ')})`);
    const create = probe.calls.find((c) => c.path === '/NetworkDriver.CreateNetwork')!;
    assert.equal(create.body.IPv4Data?.[0]?.Pool, '10.89.0.0/24');
    const netId = (await e.inspect('probenet')).Id;
    assert.equal(create.body.NetworkID, netId);

    // A new dockerd, a new mount namespace: the plugin dir is bound again and the plugin activated again on demand.
    await e.restart();
    assert.ok(e.nsexec('ls', ['/run/docker/plugins']).split('\n').includes('cnmd-probe.sock'));
    probe.calls.length = 0;
    await e.docker(['network', 'rm', 'probenet']);
    const del = probe.calls.find((c) => c.path === '/NetworkDriver.DeleteNetwork');
    assert.ok(
      del,
      `DeleteNetwork called after the restart (got ${probe.calls.map((c) => c.path).join(' ')})`,
    );
    assert.equal(del!.body.NetworkID, netId);
  },
);
