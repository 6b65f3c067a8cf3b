// The kernel lane itself: boot Debian's kernel under qemu once and check that
// what this machine's kernel lacks (dummy, 802.1Q vlan, ipvlan) works there,
// and that node runs in the guest. Missing tools make this test FAIL with the
// packages to install; it never skips.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { kernelLanePrerequisites, runInKernelVm, tail } from '../lib/kernel-vm';

const SCRIPT = `
set -e
echo "KERNEL $(uname -r)"
ip link add d0 type dummy && echo "DUMMY $(ip -j -d link show d0)"
ip link add link d0 name d0.10 type vlan id 10 && echo "VLAN $(ip -j -d link show d0.10)"
ip link add ipv0 link d0 type ipvlan mode l2 && echo "IPVLAN $(ip -j -d link show ipv0)"
echo "NODE $(node -e "console.log(process.version)")"
`;

test(
  'kernel lane: Debian kernel under qemu has dummy, vlan, ipvlan, and runs node',
  { timeout: 300_000 },
  async () => {
    const pre = kernelLanePrerequisites(); // throws (test fails) with the missing packages
    const r = await runInKernelVm(SCRIPT, { timeoutMs: 240_000 });
    const why = `exit ${r.exitCode}, timedOut=${r.timedOut}, ${r.durationMs} ms; console tail:\n${tail(r.console)}`;
    assert.equal(r.timedOut, false, why);
    assert.equal(r.exitCode, 0, why);

    const lines = new Map<string, string>();
    for (const line of r.commandOutput.split('\n')) {
      const m = /^(KERNEL|DUMMY|VLAN|IPVLAN|NODE) (.*)$/.exec(line);
      if (m) lines.set(m[1], m[2]);
    }
    const json = (key: string) => {
      const text = lines.get(key);
      if (text === undefined) assert.fail(`no ${key} line in the guest output; ${why}`);
      const parsed = JSON.parse(text);
      assert.ok(Array.isArray(parsed) && parsed.length === 1, `${key}: ${text}`);
      return parsed[0];
    };

    assert.equal(lines.get('KERNEL'), pre.kernel, why);

    const dummy = json('DUMMY');
    assert.equal(dummy.ifname, 'd0');
    assert.equal(dummy.linkinfo.info_kind, 'dummy');

    const vlan = json('VLAN');
    assert.equal(vlan.ifname, 'd0.10');
    assert.equal(vlan.link, 'd0');
    assert.equal(vlan.linkinfo.info_kind, 'vlan');
    assert.equal(vlan.linkinfo.info_data.id, 10);
    assert.equal(vlan.linkinfo.info_data.protocol, '802.1Q');

    const ipvlan = json('IPVLAN');
    assert.equal(ipvlan.ifname, 'ipv0');
    assert.equal(ipvlan.link, 'd0');
    assert.equal(ipvlan.linkinfo.info_kind, 'ipvlan');
    assert.equal(ipvlan.linkinfo.info_data.mode, 'l2');

    assert.equal(lines.get('NODE'), process.version, why);
    console.log(`kernel lane: ${pre.kernel} booted, ran and powered off in ${r.durationMs} ms`);
  },
);
