// The encrypted overlay's firewall rules as text: what iptables-save prints
// (the backend decides presence on it), their inverse, and the sweep's parser.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  encryptedVniRules,
  inboundDropRule,
  extensionHeaderDropRule,
  outboundMarkRule,
  parseEncryptedVniRule,
  removeEncryptedVniRules,
} from '../../../src/firewall/encrypted-vni';
import { canonicalRule } from '../../../src/firewall/canonical';

const v = { vni: 0x10f2, port: 4789, mark: 0x0c4d0e5c };

test('encrypted VNI rules: drop without a secpath on input, mark on output, by u32 on the VNI word; first in INPUT/OUTPUT', () => {
  assert.equal(
    inboundDropRule(v),
    '-p udp -m udp --dport 4789 -m u32 --u32 "0x0>>0x16&0x3c@0xc>>0x8=0x10f2" -m policy --dir in --pol none -j DROP',
  );
  assert.equal(
    outboundMarkRule(v),
    '-p udp -m udp --dport 4789 -m u32 --u32 "0x0>>0x16&0x3c@0xc>>0x8=0x10f2" -j MARK --set-xmark 0xc4d0e5c/0xffffffff',
  );
  // As iptables-save prints them (u32's program quoted): the canonical form is the text itself.
  for (const r of [inboundDropRule(v), outboundMarkRule(v)]) assert.equal(canonicalRule(r, 'ipv4'), r);
  const b = encryptedVniRules(v);
  assert.deepEqual(b.ipv4!.filter!.slice(0, 2), [
    { kind: 'ensureChain', chain: 'CNMD-ENCRYPTED' },
    { kind: 'ensureRule', chain: 'INPUT', rule: '-j CNMD-ENCRYPTED', position: 1 },
  ]);
  assert.deepEqual(b.ipv4!.mangle!.slice(0, 2), [
    { kind: 'ensureChain', chain: 'CNMD-ENCRYPTED' },
    { kind: 'ensureRule', chain: 'OUTPUT', rule: '-j CNMD-ENCRYPTED', position: 1 },
  ]);
  assert.equal(b.ipv6, undefined);
  // Removal: the mark before the drop (tables in that order); chains only with the last network.
  assert.deepEqual(removeEncryptedVniRules(v).ipv4!.mangle, [
    { kind: 'deleteIfPresent', chain: 'CNMD-ENCRYPTED', rule: outboundMarkRule(v) },
  ]);
  assert.equal(removeEncryptedVniRules(v, true).ipv4!.filter!.at(-1)!.kind, 'deleteChain');
  assert.deepEqual(parseEncryptedVniRule(inboundDropRule(v)), { vni: 0x10f2, port: 4789, family: 'ipv4' });
  assert.deepEqual(parseEncryptedVniRule(outboundMarkRule({ ...v, port: 8472 })), {
    vni: 0x10f2,
    port: 8472,
    family: 'ipv4',
  });
  assert.equal(parseEncryptedVniRule('-p udp -m udp --dport 4789 -j DROP'), undefined);
  assert.equal(parseEncryptedVniRule(extensionHeaderDropRule(4789)), undefined, 'not a VNI rule');
  assert.throws(() => encryptedVniRules({ ...v, vni: 0 }), /VNI 0 is outside/);
  assert.throws(() => encryptedVniRules({ ...v, port: 70000 }), /port 70000 is outside/);
});

test('encrypted VNI rules over an IPv6 underlay: ip6tables, the VNI at 40 + 12 when UDP follows the fixed header, any extension header dropped', () => {
  const v6 = { ...v, family: 'ipv6' as const };
  assert.equal(
    inboundDropRule(v6),
    '-p udp -m udp --dport 4789 -m u32 --u32 "0x4>>0x8&0xff=0x11&&0x34>>0x8=0x10f2" -m policy --dir in --pol none -j DROP',
  );
  assert.equal(
    outboundMarkRule(v6),
    '-p udp -m udp --dport 4789 -m u32 --u32 "0x4>>0x8&0xff=0x11&&0x34>>0x8=0x10f2" -j MARK --set-xmark 0xc4d0e5c/0xffffffff',
  );
  const ext = extensionHeaderDropRule(4789);
  assert.equal(
    ext,
    '-p udp -m udp --dport 4789 -m u32 ! --u32 "0x4>>0x8&0xff=0x11" -m policy --dir in --pol none -j DROP',
  );
  for (const r of [inboundDropRule(v6), outboundMarkRule(v6), ext]) assert.equal(canonicalRule(r, 'ipv6'), r);
  const b = encryptedVniRules(v6);
  assert.equal(b.ipv4, undefined);
  assert.deepEqual(b.ipv6!.filter!.slice(2), [
    { kind: 'ensureRule', chain: 'CNMD-ENCRYPTED', rule: inboundDropRule(v6) },
    { kind: 'ensureRule', chain: 'CNMD-ENCRYPTED', rule: ext },
  ]);
  assert.deepEqual(b.ipv6!.mangle!.at(-1), {
    kind: 'ensureRule',
    chain: 'CNMD-ENCRYPTED',
    rule: outboundMarkRule(v6),
  });
  // A VNI's removal keeps the extension header drop (other encrypted VNIs need it); the last goes with the chain.
  assert.deepEqual(removeEncryptedVniRules(v6).ipv6!.filter, [
    { kind: 'deleteIfPresent', chain: 'CNMD-ENCRYPTED', rule: inboundDropRule(v6) },
  ]);
  assert.equal(removeEncryptedVniRules(v6).ipv4, undefined);
  assert.equal(removeEncryptedVniRules(v6, true).ipv6!.filter!.at(-1)!.kind, 'deleteChain');
  assert.deepEqual(parseEncryptedVniRule(inboundDropRule(v6)), { vni: 0x10f2, port: 4789, family: 'ipv6' });
  assert.deepEqual(parseEncryptedVniRule(outboundMarkRule(v6)), { vni: 0x10f2, port: 4789, family: 'ipv6' });
});
