// The encrypted overlay's firewall rules (CVE-2023-28840's fix) on this
// machine's kernel, which has xt_u32 and xt_policy (not ESP): applied through
// the iptables backend in a lab netns, read back with iptables-save, and a
// cleartext VXLAN packet for the VNI counted by the drop rule while one for
// another VNI passes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lab, runIn } from '../lib/fixture';
import { IptablesBackend } from '../../src/firewall/iptables';
import {
  encryptedVniRules,
  parseEncryptedVniRule,
  removeEncryptedVniRules,
} from '../../src/firewall/encrypted-vni';
import { mergeBatches } from '../../src/firewall/firewall';

const MARK = 0x0c4d0e5c;

test('encrypted VNI rules: drop of cleartext VXLAN for the VNI on input, mark on output, idempotent, removed exactly', async (t) => {
  const l = await lab(t);
  const ns = await l.ns('fw');
  const fw = new IptablesBackend({ netns: ns.path, verify: true });
  t.after(() => fw.close());
  const v1 = { vni: 4200, port: 4789, mark: MARK };
  const v2 = { vni: 4300, port: 4789, mark: MARK };
  await fw.apply(mergeBatches(encryptedVniRules(v1), encryptedVniRules(v2)));
  await fw.apply(encryptedVniRules(v1)); // nothing to do the second time (verify checks the prediction)
  const save = runIn(ns.path, 'iptables-save', []);
  assert.match(save, /^-A INPUT -j CNMD-ENCRYPTED$/m);
  assert.match(save, /^-A OUTPUT -j CNMD-ENCRYPTED$/m);
  const drops = save.split('\n').filter((x) => x.includes('--pol none -j DROP'));
  assert.deepEqual(drops, [
    '-A CNMD-ENCRYPTED -p udp -m udp --dport 4789 -m u32 --u32 "0x0>>0x16&0x3c@0xc>>0x8=0x1068" -m policy --dir in --pol none -j DROP',
    '-A CNMD-ENCRYPTED -p udp -m udp --dport 4789 -m u32 --u32 "0x0>>0x16&0x3c@0xc>>0x8=0x10cc" -m policy --dir in --pol none -j DROP',
  ]);
  assert.deepEqual(parseEncryptedVniRule(drops[0].replace(/^-A CNMD-ENCRYPTED /, '')), {
    vni: 4200,
    port: 4789,
  });

  // Real packets on loopback: VXLAN with VNI 4200 is dropped (counted), VNI 4201 is not.
  runIn(ns.path, 'ip', ['link', 'set', 'lo', 'up']);
  const count = () => {
    const out = runIn(ns.path, 'iptables', ['-L', 'CNMD-ENCRYPTED', '-v', '-x', '-n']);
    const line = out.split('\n').find((x) => x.includes('0x1068') && x.includes('DROP'))!;
    return Number(line.trim().split(/\s+/)[0]);
  };
  const script = (vni: number) => `
const s = require('dgram').createSocket('udp4');
const p = Buffer.from([8, 0, 0, 0, ${vni >> 16}, ${(vni >> 8) & 255}, ${vni & 255}, 0, 1, 2, 3, 4]);
s.send(p, 4789, '127.0.0.1', () => s.send(p, 4789, '127.0.0.1', () => s.close()));`;
  runIn(ns.path, process.execPath, ['-e', script(4200)]);
  runIn(ns.path, process.execPath, ['-e', script(4201)]);
  assert.equal(count(), 2);

  // One VNI removed: only its rules; the last one removed with the chains and jumps.
  await fw.apply(removeEncryptedVniRules(v1));
  assert.doesNotMatch(runIn(ns.path, 'iptables-save', []), /0x1068/);
  assert.match(runIn(ns.path, 'iptables-save', []), /0x10cc/);
  await fw.apply(removeEncryptedVniRules(v2, true));
  assert.doesNotMatch(runIn(ns.path, 'iptables-save', []), /CNMD-ENCRYPTED/);
  await fw.apply(removeEncryptedVniRules(v2, true)); // already gone: nothing to do
});
