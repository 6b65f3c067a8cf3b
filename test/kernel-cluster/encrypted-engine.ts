// An encrypted overlay through the real Docker engine (issue 17), on the VM
// cluster (vm.ts), registered by overlay.test.ts before the other encrypted
// scenarios (it proves that nothing of cnmd's encryption is left once its
// network goes, which holds only while no other encrypted network exists).
// Debian's dockerd runs in hosts 1 and 2 beside their cnmd, with cnmd's plugin
// sockets as its /run/docker/plugins (test/lib/engine.ts, as in the engine
// lane), on vfs, without docker0 or its iptables rules: `docker network create
// -d cnmd-overlay --ipam-driver cnmd-ipam -o cnmd.network=<encrypted> -o
// encrypted`, `docker run` of a busybox on each host, ping and TCP (nc) from
// one container to the other inside ESP only on the underlay (tcpdump), then
// `docker rm -f` and `docker network rm` leave no SA, policy, vxlan, veth or
// firewall rule behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { eventually } from '../lib/fixture';
import type { ClusterLab } from '../lib/cluster';
import { Engine, startEngine } from '../lib/engine';
import { mirrored, network, overlayNs } from '../lib/overlay-cluster';
import { capture } from '../lib/wire';
import { assertEspEachWay, assertNoCleartext, pairEncrypted } from './encrypted-clients';
import { mark, vmCluster, VM_READY_MS, VM_WAIT_MS } from './vm';

/** A docker CLI call's bound in the VM (dockerd and the CLI are Go under TCG: seconds per call). */
const DOCKER_MS = 180_000;
const SUBNET = '10.37.0.0/24';

/**
 * What cnmd may leave in a host netns: links, XFRM states and policies, firewall rules and
 * user chains by table (a table that appeared empty, its built-in chains only, is no rule).
 */
function hostState(c: ClusterLab, i: number) {
  const h = c.hosts[i];
  const rules = (cmd: string) => {
    let table = '';
    const out: string[] = [];
    for (const l of h.run(cmd, []).split('\n')) {
      if (l.startsWith('*')) table = l.slice(1);
      else if (l.startsWith('-A ') || /^:\S+ - /.test(l))
        out.push(`${table}: ${l.replace(/ \[\d+:\d+\]$/, '')}`);
    }
    return out;
  };
  return {
    links: h
      .ipj('link', 'show')
      .map((l: { ifname: string }) => l.ifname)
      .sort(),
    xfrmStates: h.run('ip', ['xfrm', 'state']).trim(),
    xfrmPolicies: h.run('ip', ['xfrm', 'policy']).trim(),
    iptables: rules('iptables-save'),
    ip6tables: rules('ip6tables-save'),
  };
}

export function encryptedEngineScenario(): void {
  test('VM cluster, encrypted overlay through the real Docker engine (dockerd with cnmd’s plugins on two hosts): docker network create -d cnmd-overlay -o cnmd.network=<encrypted> -o encrypted (a contradicting -o encrypted=false refused), docker run on each host, ping and TCP (nc) across inside ESP only; docker rm -f and network rm leave no SA, policy, vxlan or rule', async (t) => {
    const c = await vmCluster();
    const [d1, d2] = c.daemons;
    // dockerd in each host netns, cnmd's plugin dir as its /run/docker/plugins; no docker0 and no
    // iptables of its own (nothing here needs them), vfs (no overlayfs on the guest's tmpfs needed),
    // containerd started before it (dockerd's own wait for the containerd it starts is too short under TCG).
    const t0 = Date.now();
    const engines: Engine[] = await Promise.all(
      [d1, d2].map((d, i) =>
        startEngine(t, c.lab, {
          hostNs: d.host,
          pluginDir: d.pluginDir,
          tag: `vm${i + 1}`,
          args: ['--bridge=none', '--iptables=false', '--storage-driver=vfs'],
          startTimeoutMs: VM_READY_MS,
          ownContainerd: true,
        }),
      ),
    );
    const [e1, e2] = engines;
    mark(`dockerd ${e1.version} up on hosts 1 and 2, busybox imported (${Date.now() - t0} ms)`);

    // Nothing of cnmd's encryption before: no encrypted network exists yet on this cluster.
    const before = [0, 1].map((i) => hostState(c, i));
    for (const [i, s] of before.entries()) {
      assert.equal(s.xfrmStates, '', `host ${i + 1}: no SA before the first encrypted network`);
      assert.equal(s.xfrmPolicies, '', `host ${i + 1}: no XFRM policy before the first encrypted network`);
    }

    // The cnmd network the engines bind to. Until the ring agent has read the ring, creation answers 503.
    const fsec = await eventually(() => network(d1, 'fsec', SUBNET, { encrypted: '' }), VM_WAIT_MS);
    await mirrored(d2, 'fsec', VM_WAIT_MS);

    const POOL = ['--ipam-driver', 'cnmd-ipam', '--subnet', SUBNET, '-o', 'cnmd.network=fsec'];
    const create = (e: Engine, ...args: string[]) =>
      e.docker(['network', 'create', '-d', 'cnmd-overlay', ...POOL, ...args], {
        allowFail: true,
        timeoutMs: DOCKER_MS,
      });
    // On host 1 a binding that contradicts the network's encryption first (refused, nothing made);
    // host 2 binds meanwhile (each docker CLI call takes seconds under TCG).
    const [, r2] = await Promise.all([
      (async () => {
        const no = await create(e1, '-o', 'encrypted=false', 'fnet');
        assert.notEqual(no.status, 0, 'a binding that contradicts the network’s encryption is refused');
        assert.match(
          no.stderr,
          /-o encrypted=false asks for no encryption, but cnmd overlay network fsec is encrypted/,
        );
        const r1 = await create(e1, '-o', 'encrypted', 'fnet');
        assert.equal(r1.status, 0, r1.stderr);
      })(),
      create(e2, '-o', 'encrypted', 'fnet'),
    ]);
    assert.equal(r2.status, 0, r2.stderr);
    mark('engine networks bound to fsec on hosts 1 and 2');

    // c2 answers every TCP connection on 7000 with what it read; c1 idles.
    await Promise.all([
      e1.runDetached('c1', { network: 'fnet', timeoutMs: DOCKER_MS }),
      e2.runDetached('c2', {
        network: 'fnet',
        timeoutMs: DOCKER_MS,
        cmd: ['sh', '-c', `trap 'exit 0' TERM; nc -ll -p 7000 -e sh -c 'read x; echo got:$x' & wait`],
      }),
    ]);
    const [ip1, ip2] = await Promise.all([e1.ip('c1', 'fnet'), e2.ip('c2', 'fnet')]);
    assert.notEqual(ip1, ip2);
    for (const ip of [ip1, ip2]) assert.ok(ip.startsWith('10.37.0.'), `${ip} in ${SUBNET}`);
    mark(`containers c1 ${ip1} (host 1), c2 ${ip2} (host 2)`);
    await pairEncrypted(c, 'fsec');

    const cap = await capture(t, c.underlay.path, 'br0', 'udp port 4789 or esp');
    const pinged = await e1.exec('c1', ['ping', '-c', '5', '-W', '5', ip2], {
      allowFail: true,
      timeoutMs: DOCKER_MS,
    });
    assert.equal(pinged.status, 0, `c1 -> c2 ping: ${pinged.stdout}${pinged.stderr}`);
    assert.match(pinged.stdout, /5 packets transmitted, 5 packets received/);
    const token = `tok${Date.now()}`;
    const tcp = await e1.exec('c1', ['sh', '-c', `echo ${token} | nc -w 10 ${ip2} 7000`], {
      allowFail: true,
      timeoutMs: DOCKER_MS,
    });
    assert.equal(tcp.stdout.trim(), `got:${token}`, `c1 -> c2:7000 over TCP: ${tcp.stdout}${tcp.stderr}`);
    // 5 echoes and 5 replies, and the TCP exchange, each way inside ESP.
    await eventually(() => assertEspEachWay(cap.text(), [0, 1], 8), VM_WAIT_MS);
    assertNoCleartext(await cap.stop(), fsec.vni, '10.37.0.');
    mark('c1 <-> c2 ping and TCP inside ESP only');

    // docker rm -f, docker network rm on both hosts; then the cnmd network itself.
    await Promise.all([
      e1.docker(['rm', '-f', 'c1'], { timeoutMs: DOCKER_MS }),
      e2.docker(['rm', '-f', 'c2'], { timeoutMs: DOCKER_MS }),
    ]);
    await Promise.all([e1, e2].map((e) => e.docker(['network', 'rm', 'fnet'], { timeoutMs: DOCKER_MS })));
    for (const d of [d1, d2]) {
      const nets = (await d.request('GET', '/networks')).body;
      assert.deepEqual(
        nets.filter((n: any) => n.Labels?.['cnmd.owner'] === 'docker-engine').map((n: any) => n.Name),
        [],
        'the engine networks are gone from cnmd',
      );
      await eventually(async () => {
        const e = (await d.request('GET', '/networks/fsec')).body.Encryption;
        assert.deepEqual(e.Peers, [], 'no peer once the containers are gone');
      }, VM_WAIT_MS);
    }
    await eventually(async () => assert.equal((await d1.request('DELETE', '/networks/fsec')).status, 204));
    await eventually(async () => assert.equal((await d2.request('GET', '/networks/fsec')).status, 404));
    for (const i of [0, 1]) {
      assert.ok(!fs.existsSync(overlayNs(c.daemons[i], fsec.id)), `host ${i + 1}: fsec's overlay netns gone`);
      await eventually(() => assert.deepEqual(hostState(c, i), before[i], `host ${i + 1}`), VM_WAIT_MS);
      assert.deepEqual(c.hosts[i].ipj('link', 'show', 'type', 'vxlan'), [], `host ${i + 1}: no vxlan`);
    }
    mark('docker rm -f, network rm: nothing of fsec left on hosts 1 and 2');
    await Promise.all([e1.stop(), e2.stop()]);
    mark(`engines stopped (${Date.now() - t0} ms since the first dockerd start)`);
  });
}
