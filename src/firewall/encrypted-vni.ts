// Rules of encrypted overlay networks (issue 17), in the host netns, per VNI,
// as libnetwork's fix of CVE-2023-28840/28841 writes them:
//   filter  INPUT   -j CNMD-ENCRYPTED                                   (first)
//           CNMD-ENCRYPTED  -p udp --dport PORT <VNI> -m policy --dir in --pol none -j DROP
//   mangle  OUTPUT  -j CNMD-ENCRYPTED                                   (first)
//           CNMD-ENCRYPTED  -p udp --dport PORT <VNI> -j MARK --set-xmark MARK/0xffffffff
// The VNI is matched with u32 (IP header length -> UDP header -> +12: the
// VXLAN VNI word): cleartext VXLAN for an encrypted VNI never reaches the
// vxlan device (ESP-decapsulated packets carry a secpath, --pol none skips
// them), and only that VNI's outgoing VXLAN gets the mark the XFRM policies
// select. Over an IPv6 underlay (ip6tables) the UDP header is at 40 when the
// next header is UDP; u32 cannot walk extension headers, so cleartext VXLAN
// with any extension header before its UDP header is dropped on receive
// whatever its VNI (Linux's vxlan never sends one; an attacker could use one
// to hide the VNI from the match). Rules are written as iptables-save prints
// them (presence is decided on that text).
import { invalidArgument } from '../errors';
import { BatchBuilder, type Family, type RuleBatch } from './firewall';

export const ENCRYPTED_CHAIN = 'CNMD-ENCRYPTED';

export interface EncryptedVni {
  vni: number;
  port: number;
  /** The XFRM policies' mark (value, mask 0xffffffff). */
  mark: number;
  /** The underlay's family (the VTEP's): iptables or ip6tables. IPv4 when absent. */
  family?: Family;
}

const hex = (n: number) => `0x${(n >>> 0).toString(16)}`;

function check(v: EncryptedVni): void {
  const op = 'encrypted vni rules';
  if (!Number.isInteger(v.vni) || v.vni < 1 || v.vni > 0xffffff)
    throw invalidArgument(op, String(v.vni), `VNI ${v.vni} is outside 1..16777215`);
  if (!Number.isInteger(v.port) || v.port < 1 || v.port > 65535)
    throw invalidArgument(op, String(v.port), `port ${v.port} is outside 1..65535`);
  if (!Number.isInteger(v.mark) || v.mark < 1 || v.mark > 0xffffffff)
    throw invalidArgument(op, String(v.mark), `mark ${v.mark} is not a 32-bit value above 0`);
}

/** The u32 match of VXLAN's VNI (as iptables-save prints it): over IPv4 past the header's length, over IPv6 at 40 + 12 when UDP follows the fixed header. */
export function vniMatch(vni: number, family: Family = 'ipv4'): string {
  return family === 'ipv4'
    ? `-m u32 --u32 "0x0>>0x16&0x3c@0xc>>0x8=${hex(vni)}"`
    : `-m u32 --u32 "0x4>>0x8&0xff=0x11&&0x34>>0x8=${hex(vni)}"`;
}

export function inboundDropRule(v: EncryptedVni): string {
  return `-p udp -m udp --dport ${v.port} ${vniMatch(v.vni, v.family)} -m policy --dir in --pol none -j DROP`;
}

/** IPv6: cleartext VXLAN whose UDP header does not follow the fixed header (the VNI match cannot see it). */
export function extensionHeaderDropRule(port: number): string {
  return `-p udp -m udp --dport ${port} -m u32 ! --u32 "0x4>>0x8&0xff=0x11" -m policy --dir in --pol none -j DROP`;
}

export function outboundMarkRule(v: EncryptedVni): string {
  return `-p udp -m udp --dport ${v.port} ${vniMatch(v.vni, v.family)} -j MARK --set-xmark ${hex(v.mark)}/0xffffffff`;
}

const JUMP = `-j ${ENCRYPTED_CHAIN}`;

/** Chains, jumps (first in INPUT and OUTPUT) and the VNI's two rules (IPv6: and the extension header drop); idempotent. */
export function encryptedVniRules(v: EncryptedVni): RuleBatch {
  check(v);
  const family = v.family ?? 'ipv4';
  const b = new BatchBuilder();
  const filter = b
    .in('filter', family)
    .ensureChain(ENCRYPTED_CHAIN)
    .ensureRule('INPUT', JUMP, { position: 1 })
    .ensureRule(ENCRYPTED_CHAIN, inboundDropRule(v));
  if (family === 'ipv6') filter.ensureRule(ENCRYPTED_CHAIN, extensionHeaderDropRule(v.port));
  b.in('mangle', family)
    .ensureChain(ENCRYPTED_CHAIN)
    .ensureRule('OUTPUT', JUMP, { position: 1 })
    .ensureRule(ENCRYPTED_CHAIN, outboundMarkRule(v));
  return b.build();
}

/** The VNI's rules, if present; with `last`, the chains and jumps too (no encrypted network is left). */
export function removeEncryptedVniRules(v: EncryptedVni, last = false): RuleBatch {
  check(v);
  const family = v.family ?? 'ipv4';
  const b = new BatchBuilder();
  // The mark goes first: nothing is marked for an XFRM policy that may be going.
  const mangle = b.in('mangle', family).deleteIfPresent(ENCRYPTED_CHAIN, outboundMarkRule(v));
  const filter = b.in('filter', family).deleteIfPresent(ENCRYPTED_CHAIN, inboundDropRule(v));
  if (last) {
    mangle
      .deleteIfPresent('OUTPUT', JUMP)
      .flushChain(ENCRYPTED_CHAIN, true)
      .deleteChain(ENCRYPTED_CHAIN, true);
    filter
      .deleteIfPresent('INPUT', JUMP)
      .flushChain(ENCRYPTED_CHAIN, true)
      .deleteChain(ENCRYPTED_CHAIN, true);
  }
  return b.build();
}

/** The VNI, port and family of a VNI rule of ENCRYPTED_CHAIN (either table), or undefined for any other text. */
export function parseEncryptedVniRule(
  rule: string,
): { vni: number; port: number; family: Family } | undefined {
  const m =
    /^-p udp -m udp --dport (\d+) -m u32 --u32 "(0x0>>0x16&0x3c@0xc>>0x8|0x4>>0x8&0xff=0x11&&0x34>>0x8)=0x([0-9a-f]+)"/.exec(
      rule,
    );
  if (!m) return undefined;
  return { port: Number(m[1]), vni: parseInt(m[3], 16), family: m[2].startsWith('0x0') ? 'ipv4' : 'ipv6' };
}
