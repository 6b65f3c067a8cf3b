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
    family: 'ipv4',
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

// Sends VXLAN datagrams on [::1]:4789 from inside a netns, some with a destination options header before the
// UDP header (IPV6_DSTOPTS), then the last one, which must arrive: prints what did (an ordered path, so any
// sent before it that passed the rules arrived before it).
const V6_SENDER = `import socket, sys, json
r = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); r.bind(('::1', 4789)); r.settimeout(10)
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
dstopts = bytes([0, 0, 1, 4, 0, 0, 0, 0])  # next header (the kernel's), length 0, PadN of 4
for spec in json.loads(sys.argv[1]):
    vni, tag, ext = spec
    p = bytes([8, 0, 0, 0, vni >> 16, (vni >> 8) & 255, vni & 255, 0]) + tag.encode()
    if ext: s.sendmsg([p], [(socket.IPPROTO_IPV6, getattr(socket, 'IPV6_DSTOPTS', 59), dstopts)], 0, ('::1', 4789))
    else: s.sendto(p, ('::1', 4789))
got = []
while not got or got[-1] != spec[1]:
    got.append(r.recv(100)[8:].decode())
print(json.dumps(got))`;

test('encrypted VNI rules over IPv6 (ip6tables): the VNI’s cleartext VXLAN dropped, and any with an extension header (which would hide its VNI from u32); other VNIs pass; removed exactly', async (t) => {
  const l = await lab(t);
  const ns = await l.ns('fw6');
  runIn(ns.path, 'ip', ['link', 'set', 'lo', 'up']);
  runIn(ns.path, 'sysctl', ['-qw', 'net.ipv6.conf.lo.disable_ipv6=0']);
  const fw = new IptablesBackend({ netns: ns.path, verify: true });
  t.after(() => fw.close());
  const v = { vni: 4200, port: 4789, mark: MARK, family: 'ipv6' as const };
  await fw.apply(encryptedVniRules(v));
  await fw.apply(encryptedVniRules({ ...v, vni: 4300 }));
  await fw.apply(encryptedVniRules(v)); // nothing to do the second time
  const save = runIn(ns.path, 'ip6tables-save', []);
  assert.deepEqual(
    save.split('\n').filter((x) => x.startsWith('-A CNMD-ENCRYPTED') && x.includes('DROP')),
    [
      '-A CNMD-ENCRYPTED -p udp -m udp --dport 4789 -m u32 --u32 "0x4>>0x8&0xff=0x11&&0x34>>0x8=0x1068" -m policy --dir in --pol none -j DROP',
      '-A CNMD-ENCRYPTED -p udp -m udp --dport 4789 -m u32 ! --u32 "0x4>>0x8&0xff=0x11" -m policy --dir in --pol none -j DROP',
      '-A CNMD-ENCRYPTED -p udp -m udp --dport 4789 -m u32 --u32 "0x4>>0x8&0xff=0x11&&0x34>>0x8=0x10cc" -m policy --dir in --pol none -j DROP',
    ],
  );
  assert.match(save, /^-A OUTPUT -j CNMD-ENCRYPTED$/m);
  assert.doesNotMatch(runIn(ns.path, 'iptables-save', []), /CNMD-ENCRYPTED/, 'nothing in the IPv4 tables');

  const send = (specs: [number, string, boolean][]) =>
    JSON.parse(runIn(ns.path, 'python3', ['-c', V6_SENDER, JSON.stringify(specs)]));
  const specs: [number, string, boolean][] = [
    [4200, 'vni-4200', false],
    [4200, 'vni-4200-ext', true],
    [4201, 'vni-4201-ext', true],
    [4201, 'vni-4201', false],
  ];
  assert.deepEqual(send(specs), ['vni-4201'], 'only the other VNI without an extension header arrived');
  const counts = () =>
    runIn(ns.path, 'ip6tables', ['-L', 'CNMD-ENCRYPTED', '-v', '-x', '-n'])
      .split('\n')
      .filter((x) => x.includes('DROP'))
      .map((x) => Number(x.trim().split(/\s+/)[0]));
  assert.deepEqual(counts(), [1, 2, 0]);

  // One VNI removed: its rule only (the extension header drop stays for the other); the last with the chains.
  await fw.apply(removeEncryptedVniRules(v));
  assert.deepEqual(counts().length, 2);
  assert.deepEqual(
    send(specs),
    ['vni-4200', 'vni-4201'],
    'VNI 4200 is plain again; extension headers still dropped',
  );
  await fw.apply(removeEncryptedVniRules({ ...v, vni: 4300 }, true));
  assert.doesNotMatch(runIn(ns.path, 'ip6tables-save', []), /CNMD-ENCRYPTED/);
  assert.deepEqual(
    send(specs),
    ['vni-4200', 'vni-4200-ext', 'vni-4201-ext', 'vni-4201'],
    'all pass without rules',
  );
});
