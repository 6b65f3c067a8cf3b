// Docker parity with the real engine (issue 19): a port published by a container on
// one network is reachable from a container on another network through the host's
// address and through the client network's own gateway, and a port on a host address
// the host does not have is refused. Checked side by side on Docker's own bridge
// driver and on cnmd-bridge networks of the same engine.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventually, lab } from '../lib/fixture';
import { startDaemon } from '../lib/daemon';
import { startEngine, type Engine } from '../lib/engine';

const HOST_IP = '192.0.2.1';
const HTTPD = ['sh', '-c', "trap 'exit 0' TERM; httpd -f -p 80 -h /etc & wait"];

/** GET url from inside a container (busybox wget wrapped in timeout: its -T crashes); the body or undefined. */
async function get(e: Engine, container: string, url: string): Promise<string | undefined> {
  const r = await e.exec(container, ['timeout', '4', 'wget', '-q', '-O', '-', url], { allowFail: true });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/** `docker run -d` of a container that must not start: the CLI's result; the container is removed. */
async function refusedRun(e: Engine, name: string, network: string, args: string[]) {
  const r = await e.docker(
    ['run', '-d', '--name', name, '--network', network, ...args, e.image, 'sleep', '60'],
    {
      allowFail: true,
    },
  );
  await e.docker(['rm', '-f', name], { allowFail: true });
  return r;
}

test(
  'a published port is reachable from another network through the host address and that network gateway, on Docker bridge and on cnmd-bridge alike',
  { timeout: 600_000 },
  async (t) => {
    const l = await lab(t);
    const d = await startDaemon(t, l);
    const e = await startEngine(t, l, { hostNs: d.host, pluginDir: d.pluginDir, tag: 'parity' });
    // The host's own address (on lo: a local address like any other for the containers' traffic).
    await d.host.handle.addrAdd('lo', `${HOST_IP}/32`);
    const cases = [
      { driver: 'bridge', pub: 'dpub', cli: 'dcli', subnets: ['10.96.0', '10.97.0'], port: 18096 },
      {
        driver: 'cnmd-bridge',
        pub: 'cpub',
        cli: 'ccli',
        subnets: ['10.94.0', '10.95.0'],
        port: 18095,
        ipam: ['--ipam-driver', 'cnmd-ipam'],
      },
    ];
    for (const c of cases) {
      const netCreate = (name: string, args: string[], allowFail = false) =>
        e.docker(['network', 'create', '-d', c.driver, ...(c.ipam ?? []), ...args, name], { allowFail });
      for (const [name, sub] of [
        [c.pub, c.subnets[0]],
        [c.cli, c.subnets[1]],
      ])
        await netCreate(name, ['--subnet', `${sub}.0/24`, '--gateway', `${sub}.1`]);
      const webId = await e.runDetached(`${c.pub}-web`, {
        network: c.pub,
        args: ['-p', `${c.port}:80`],
        cmd: HTTPD,
      });
      await e.runDetached(`${c.cli}-client`, { network: c.cli });
      const me = webId.slice(0, 12);
      const gw = `${c.subnets[1]}.1`;
      await eventually(
        async () =>
          assert.equal(
            await get(e, `${c.cli}-client`, `http://${HOST_IP}:${c.port}/hostname`),
            me,
            `${c.driver}: other network -> host address:${c.port}`,
          ),
        15_000,
      );
      assert.equal(
        await get(e, `${c.cli}-client`, `http://${gw}:${c.port}/hostname`),
        me,
        `${c.driver}: other network -> its own gateway ${gw}:${c.port}`,
      );
      const webIp = await e.ip(`${c.pub}-web`, c.pub);
      assert.equal(
        await get(e, `${c.cli}-client`, `http://${webIp}:80/hostname`),
        undefined,
        `${c.driver}: the container address itself stays isolated from the other network`,
      );
      // docker port: the engine lists what its own bridge published and drops a remote driver's
      // bindings (README says so, and where to see them: the CNMD nat chain).
      const listed = (await e.docker(['port', `${c.pub}-web`])).stdout;
      if (c.driver === 'bridge') assert.match(listed, new RegExp(`^80/tcp -> 0\\.0\\.0\\.0:${c.port}$`, 'm'));
      else {
        assert.equal(listed.trim(), '', 'the engine shows no port of a cnmd-bridge container');
        assert.match(
          d.host.run('iptables', ['-t', 'nat', '-S', 'CNMD']),
          new RegExp(`--dport ${c.port} -j DNAT --to-destination ${webIp.replace(/\./g, '\\.')}:80`),
        );
      }
      t.diagnostic(`${c.driver}: published port reached across networks by host address and gateway`);
      // A host address the host does not have: the container does not start, the message names the
      // address, and no rule is left for its port, on either driver.
      const far = await refusedRun(e, `${c.pub}-far`, c.pub, ['-p', `1.2.3.4:${c.port + 1000}:80`]);
      assert.notEqual(far.status, 0, `${c.driver}: -p 1.2.3.4:... refused`);
      assert.match(far.stderr, /1\.2\.3\.4/, `${c.driver}: the message names the address: ${far.stderr}`);
      assert.doesNotMatch(
        d.host.run('iptables-save', ['-t', 'nat']),
        new RegExp(`--dport ${c.port + 1000} `),
        `${c.driver}: no rule for the refused port`,
      );
      t.diagnostic(`${c.driver}: ${far.stderr.trim()}`);
      // Docker's wording where Docker has one, on either driver: a subnet overlap and the gateway's address.
      const over = await netCreate(`${c.pub}-over`, ['--subnet', `${c.subnets[0]}.128/25`], true);
      assert.notEqual(over.status, 0, `${c.driver}: an overlapping subnet refused`);
      assert.match(
        over.stderr,
        /Pool overlaps with other one on this address space/,
        `${c.driver}: ${over.stderr}`,
      );
      t.diagnostic(`${c.driver}: ${over.stderr.trim()}`);
      // cnmd's reasons follow, naming the engine network (the engine's name for it never reaches a plugin).
      const netId = (await e.docker(['network', 'inspect', '-f', '{{.Id}}', c.pub])).stdout
        .trim()
        .slice(0, 12);
      if (c.driver !== 'bridge')
        assert.match(
          over.stderr,
          new RegExp(`overlaps with ${c.subnets[0]}\\.0/24, the subnet of Docker engine network ${netId}`),
        );
      const gwRun = await refusedRun(e, `${c.pub}-gw`, c.pub, ['--ip', `${c.subnets[0]}.1`]);
      assert.notEqual(gwRun.status, 0, `${c.driver}: --ip of the gateway refused`);
      assert.match(gwRun.stderr, /Address already in use/, `${c.driver}: ${gwRun.stderr}`);
      if (c.driver !== 'bridge')
        assert.match(
          gwRun.stderr,
          new RegExp(
            `Address already in use: ${c.subnets[0]}\\.1 is the gateway of Docker engine network ${netId}`,
          ),
        );
      t.diagnostic(`${c.driver}: ${gwRun.stderr.trim()}`);
    }
  },
);
