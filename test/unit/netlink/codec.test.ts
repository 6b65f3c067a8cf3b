// The netlink wire codec (src/netlink/codec.ts): message headers, attribute
// writers, alignment, multipart datagrams, attribute parsing, error/ACK and
// DONE payloads, address helpers, and malformed input of every kind.
//
// Expected bytes are written out from the kernel's struct layouts in
// /usr/include/linux/netlink.h (checked with gcc: sizeof(struct nlmsghdr) = 16
// with len@0 type@4 flags@6 seq@8 pid@12; sizeof(struct nlattr) = 4 with
// len@0 type@2; sizeof(struct nlmsgerr) = 20: int error@0, struct nlmsghdr
// msg@4), never from running our encoder. The IP text vectors come from
// glibc's inet_pton/inet_ntop (a 10-line C program, see ipVectors below).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CnmdError } from '../../../src/errors';
import {
  AttrWriter,
  Attrs,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLM_F_ACK,
  NLM_F_ACK_TLVS,
  NLM_F_CAPPED,
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_MULTI,
  NLM_F_REQUEST,
  NLA_F_NESTED,
  NlMessage,
  align4,
  decodeDone,
  decodeError,
  decodeMessages,
  encodeMessage,
} from '../../../src/netlink/codec';
import { bytesToIp, bytesToMac, ipToBytes, macToBytes, parsePrefix } from '../../../src/net/addr';
import { decodeLink } from '../../../src/netlink/rtnl/link';
import { decodeAddr } from '../../../src/netlink/rtnl/addr';
import { decodeRoute } from '../../../src/netlink/rtnl/route';
import { decodeNeigh } from '../../../src/netlink/rtnl/neigh';
import { decodePolicy, decodeState } from '../../../src/netlink/xfrm/xfrm';

/** Hex with spaces/newlines/comments-free separators allowed: hex('0800 0100', '2a00 0000'). */
function hex(...parts: string[]): Buffer {
  const s = parts
    .join('')
    .replace(/[\s_|]/g, '')
    .toLowerCase();
  assert.match(s, /^([0-9a-f]{2})*$/, `test bug: bad hex ${s}`);
  return Buffer.from(s, 'hex');
}

function toHex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

/** Asserts fn throws a CnmdError MALFORMED_REPLY (not a RangeError or anything else). */
function assertMalformed(fn: () => unknown, what: string): void {
  let thrown: unknown;
  try {
    fn();
  } catch (e) {
    thrown = e;
  }
  assert.ok(thrown !== undefined, `${what}: did not throw`);
  assert.ok(
    thrown instanceof CnmdError,
    `${what}: threw ${(thrown as Error)?.constructor?.name}: ${(thrown as Error)?.message}, not a CnmdError`,
  );
  assert.equal((thrown as CnmdError).code, 'MALFORMED_REPLY', `${what}: code ${(thrown as CnmdError).code}`);
}

// ---------------------------------------------------------------- headers

test('encodeMessage: 16-byte nlmsghdr, little-endian fields, payload copied', () => {
  const m = encodeMessage(
    16,
    NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE,
    0x6b03f366,
    hex('01020304'),
    0x1234,
  );
  assert.equal(
    toHex(m),
    toHex(
      hex(
        '14000000', // nlmsg_len 20
        '1000', // nlmsg_type 16 (RTM_NEWLINK)
        '0506', // nlmsg_flags 0x0605
        '66f3036b', // nlmsg_seq
        '34120000', // nlmsg_pid
        '01020304',
      ),
    ),
  );
});

test('encodeMessage: odd payload length keeps nlmsg_len unpadded but pads the buffer with zeros', () => {
  // As iproute2 sends `ip xfrm state flush`: nlmsg_len 17, one payload byte.
  const m = encodeMessage(0x1c, NLM_F_REQUEST | NLM_F_ACK, 1, hex('ff'));
  assert.equal(toHex(m), '11000000' + '1c00' + '0500' + '01000000' + '00000000' + 'ff000000');
  assert.equal(m.length, 20);
});

test('encodeMessage: seq and pid wrap as unsigned 32-bit values', () => {
  const m = encodeMessage(2, 0, 0xffffffff, Buffer.alloc(0), 0xfffffffe);
  assert.equal(toHex(m), '10000000' + '0200' + '0000' + 'ffffffff' + 'feffffff');
  const m2 = encodeMessage(2, 0, -1, Buffer.alloc(0));
  assert.equal(m2.readUInt32LE(8), 0xffffffff);
});

test('decodeMessages: one message, fields read back', () => {
  const [m, ...rest] = decodeMessages(hex('14000000 1000 0506 66f3036b 34120000 01020304'));
  assert.equal(rest.length, 0);
  assert.equal(m.type, 16);
  assert.equal(m.flags, 0x0605);
  assert.equal(m.seq, 0x6b03f366);
  assert.equal(m.pid, 0x1234);
  assert.equal(toHex(m.payload), '01020304');
});

test('decodeMessages: multipart datagram with several messages, odd lengths padded between them', () => {
  const dg = hex(
    // RTM_NEWLINK, NLM_F_MULTI, seq 7, 5-byte payload (len 21) + 3 pad bytes
    '15000000 1000 0200 07000000 00000000 aabbccddee 000000',
    // RTM_NEWLINK, NLM_F_MULTI, seq 7, 4-byte payload
    '14000000 1000 0200 07000000 00000000 01020304',
    // NLMSG_DONE, NLM_F_MULTI, seq 7, int 0
    '14000000 0300 0200 07000000 00000000 00000000',
  );
  const ms = decodeMessages(dg);
  assert.deepEqual(
    ms.map((m) => [m.type, m.flags, m.seq, toHex(m.payload)]),
    [
      [16, NLM_F_MULTI, 7, 'aabbccddee'],
      [16, NLM_F_MULTI, 7, '01020304'],
      [NLMSG_DONE, NLM_F_MULTI, 7, '00000000'],
    ],
  );
});

test('decodeMessages: a last message without its alignment padding is accepted', () => {
  const ms = decodeMessages(hex('11000000 1c00 0500 01000000 00000000 ff'));
  assert.equal(ms.length, 1);
  assert.equal(toHex(ms[0].payload), 'ff');
});

test('decodeMessages: an empty datagram holds no messages', () => {
  assert.deepEqual(decodeMessages(Buffer.alloc(0)), []);
});

test('encodeMessage -> decodeMessages round trip', () => {
  const a = encodeMessage(20, 5, 99, hex('0102030405060708'), 3);
  const b = encodeMessage(3, 2, 99, hex('00000000'));
  const ms = decodeMessages(Buffer.concat([a, b]));
  assert.equal(ms.length, 2);
  assert.deepEqual(
    [ms[0].type, ms[0].flags, ms[0].seq, ms[0].pid, toHex(ms[0].payload)],
    [20, 5, 99, 3, '0102030405060708'],
  );
  assert.deepEqual([ms[1].type, ms[1].seq], [3, 99]);
});

// ---------------------------------------------------------------- attribute writer

test('AttrWriter.u8: len 5, value, 3 zero pad bytes', () => {
  assert.equal(toHex(new AttrWriter().u8(7, 0xab).toBuffer()), '0500' + '0700' + 'ab000000');
});

test('AttrWriter.u16 (host LE) and u16be (network order)', () => {
  assert.equal(toHex(new AttrWriter().u16(1, 0x1234).toBuffer()), '0600' + '0100' + '3412' + '0000');
  // IFLA_VXLAN_PORT 4789 as iproute2 sends it: 06000f00 12b50000
  assert.equal(toHex(new AttrWriter().u16be(15, 4789).toBuffer()), '0600' + '0f00' + '12b5' + '0000');
});

test('AttrWriter.u32, s32, u32be', () => {
  assert.equal(toHex(new AttrWriter().u32(4, 1400).toBuffer()), '0800' + '0400' + '78050000');
  assert.equal(toHex(new AttrWriter().u32(4, 0xffffffff).toBuffer()), '08000400ffffffff');
  assert.equal(toHex(new AttrWriter().s32(37, -1).toBuffer()), '0800' + '2500' + 'ffffffff');
  assert.equal(toHex(new AttrWriter().s32(37, -2).toBuffer()), '08002500feffffff');
  assert.equal(toHex(new AttrWriter().u32be(6, 0x0a000001).toBuffer()), '0800' + '0600' + '0a000001');
});

test('AttrWriter.u64: little-endian 8 bytes', () => {
  assert.equal(
    toHex(new AttrWriter().u64(9, 0x0102030405060708n).toBuffer()),
    '0c00' + '0900' + '0807060504030201',
  );
  assert.equal(toHex(new AttrWriter().u64(9, 0xffffffffffffffffn).toBuffer()), '0c000900ffffffffffffffff');
});

test('AttrWriter.str: NUL-terminated, length counts the NUL, padded to 4', () => {
  // IFLA_IFNAME "v0" as iproute2 sends it: 07000300 76300000
  assert.equal(toHex(new AttrWriter().str(3, 'v0').toBuffer()), '0700' + '0300' + '7630' + '00' + '00');
  // "abc" + NUL = 4 bytes: len 8, no padding
  assert.equal(toHex(new AttrWriter().str(3, 'abc').toBuffer()), '0800' + '0300' + '61626300');
  // empty string: just the NUL
  assert.equal(toHex(new AttrWriter().str(3, '').toBuffer()), '0500' + '0300' + '00000000');
  // UTF-8 is encoded as bytes: "é" = c3 a9
  assert.equal(toHex(new AttrWriter().str(20, 'é').toBuffer()), '0700' + '1400' + 'c3a900' + '00');
});

test('AttrWriter.bytes: raw payload, odd lengths padded (MAC = 6 bytes -> len 10, 2 pad)', () => {
  // IFLA_ADDRESS 02:00:00:00:00:0a as iproute2 sends it: 0a000100 02000000000a 0000
  assert.equal(
    toHex(new AttrWriter().bytes(1, hex('02000000000a')).toBuffer()),
    '0a00' + '0100' + '02000000000a' + '0000',
  );
  assert.equal(toHex(new AttrWriter().bytes(1, hex('aabbcc')).toBuffer()), '0700' + '0100' + 'aabbcc' + '00');
  assert.equal(toHex(new AttrWriter().bytes(1, Buffer.alloc(0)).toBuffer()), '0400' + '0100');
});

test('AttrWriter.flag: header only, len 4', () => {
  assert.equal(toHex(new AttrWriter().flag(23).toBuffer()), '0400' + '1700');
});

test('AttrWriter.nested: NLA_F_NESTED set, length back-patched over padded children', () => {
  const b = new AttrWriter()
    .nested(18, (w) => {
      w.str(1, 'vxlan'); // 0a00 0100 "vxlan\0" + 2 pad = 12
      w.nested(2, (d) => {
        d.u32(1, 42); // 8
        d.u8(7, 0); // 8
      }); // 4 + 16 = 20
    })
    .toBuffer();
  assert.equal(
    toHex(b),
    toHex(
      hex(
        '2400 1280', // len 36, IFLA_LINKINFO | NLA_F_NESTED
        '0a00 0100 76786c616e00 0000', // IFLA_INFO_KIND "vxlan"
        '1400 0280', // len 20, IFLA_INFO_DATA | NLA_F_NESTED
        '0800 0100 2a000000', // IFLA_VXLAN_ID 42
        '0500 0700 00000000', // IFLA_VXLAN_LEARNING 0
      ),
    ),
  );
  assert.equal(NLA_F_NESTED, 0x8000);
});

test('AttrWriter.nested: an empty nest is a bare 4-byte header', () => {
  assert.equal(toHex(new AttrWriter().nested(2, () => {}).toBuffer()), '0400' + '0280');
});

test('AttrWriter.nestedWithHeader: fixed struct first, no NLA_F_NESTED (as veth peer, iproute2 bytes)', () => {
  const ifi = Buffer.alloc(16);
  const b = new AttrWriter().nestedWithHeader(1, ifi, (w) => w.str(3, 'v1')).toBuffer();
  // From `ip link add v0 type veth peer name v1` (strace): 1c000100 <16 zero bytes> 07000300 76310000
  assert.equal(toHex(b), '1c000100' + '00'.repeat(16) + '07000300' + '76310000');
});

test('AttrWriter.nestedWithHeader: an odd-sized header is padded before the children', () => {
  const b = new AttrWriter().nestedWithHeader(1, hex('010203'), (w) => w.u8(2, 9)).toBuffer();
  assert.equal(toHex(b), '1000' + '0100' + '01020300' + '0500' + '0200' + '09000000');
});

test('AttrWriter.raw: pads a fixed struct to 4 bytes', () => {
  assert.equal(toHex(new AttrWriter().raw(hex('ff')).toBuffer()), 'ff000000');
  assert.equal(toHex(new AttrWriter().raw(hex('0102030405060708')).toBuffer()), '0102030405060708');
});

test('AttrWriter: grows past its initial size without corrupting earlier attributes', () => {
  const w = new AttrWriter(8);
  const expected: string[] = [];
  for (let i = 0; i < 200; i++) {
    w.u32(i & 0x7fff, i * 7);
    const v = Buffer.alloc(4);
    v.writeUInt32LE(i * 7);
    const t = Buffer.alloc(2);
    t.writeUInt16LE(i & 0x7fff);
    expected.push('0800' + toHex(t) + toHex(v));
  }
  w.nested(1, (n) => n.bytes(2, Buffer.alloc(300, 0xab)));
  const b = w.toBuffer();
  assert.equal(b.length, 200 * 8 + 4 + 4 + 300);
  assert.equal(toHex(b.subarray(0, 1600)), expected.join(''));
  assert.equal(b.readUInt16LE(1600), 308);
  assert.equal(b.readUInt16LE(1604), 304);
  assert.ok(b.subarray(1608).every((x) => x === 0xab));
  assert.equal(w.length, b.length);
});

test('AttrWriter: each fixed-size writer works when it is the one that must grow the buffer', () => {
  // The writer starts with room for exactly one 4-byte flag; the second
  // attribute must reallocate. The value has to land in the new buffer.
  const cases: [string, (w: AttrWriter) => void, string][] = [
    ['u8', (w) => w.u8(2, 0x11), '0500 0200 11000000'],
    ['u16', (w) => w.u16(2, 0x2211), '0600 0200 1122 0000'],
    ['u16be', (w) => w.u16be(2, 0x2211), '0600 0200 2211 0000'],
    ['u32', (w) => w.u32(2, 0x44332211), '0800 0200 11223344'],
    ['s32', (w) => w.s32(2, -2), '0800 0200 feffffff'],
    ['u32be', (w) => w.u32be(2, 0x44332211), '0800 0200 44332211'],
    ['u64', (w) => w.u64(2, 0x8877665544332211n), '0c00 0200 1122334455667788'],
    ['str', (w) => w.str(2, 'ab'), '0700 0200 616200 00'],
    ['bytes', (w) => w.bytes(2, hex('aabbccdd')), '0800 0200 aabbccdd'],
    ['flag', (w) => w.flag(2), '0400 0200'],
    ['nested', (w) => w.nested(2, (n) => n.u32(1, 7)), '0c00 0280 0800 0100 07000000'],
  ];
  for (const [name, write, expected] of cases) {
    const w = new AttrWriter(4).flag(1);
    let b: Buffer;
    try {
      write(w);
      b = w.toBuffer();
    } catch (e) {
      assert.fail(`${name} across a reallocation threw ${(e as Error).name}: ${(e as Error).message}`);
    }
    assert.equal(toHex(b), toHex(hex('0400 0100', expected)), name);
  }
});

test('AttrWriter: padding bytes are zero even when the buffer held garbage', () => {
  // allocUnsafe may hand back dirty memory: write a lot, then check every pad byte.
  for (let round = 0; round < 20; round++) {
    const w = new AttrWriter(4096); // big enough: this test is about padding, not growth
    for (let i = 0; i < 50; i++) w.u8(1, 0xff).str(2, 'x').bytes(3, hex('ffffff'));
    const b = w.toBuffer();
    for (let off = 0; off < b.length; off += 24) {
      assert.equal(
        toHex(b.subarray(off, off + 24)),
        '05000100ff000000' + '06000200780000' + '00' + '07000300ffffff00',
      );
    }
  }
});

test('align4', () => {
  assert.deepEqual([0, 1, 2, 3, 4, 5, 17, 20].map(align4), [0, 4, 4, 4, 4, 8, 20, 20]);
});

// ---------------------------------------------------------------- attribute parser

test('Attrs.parse: typed getters read what the writer wrote', () => {
  const buf = new AttrWriter()
    .u8(1, 200)
    .u16(2, 0xbeef)
    .u16be(3, 4789)
    .u32(4, 0xdeadbeef)
    .s32(5, -5)
    .u32be(6, 0x01020304)
    .u64(7, 0x1122334455667788n)
    .str(8, 'hello')
    .bytes(9, hex('0a0b0c'))
    .flag(10)
    .nested(11, (n) => n.u32(1, 77).str(2, 'in'))
    .toBuffer();
  const a = Attrs.parse(buf);
  assert.equal(a.u8(1), 200);
  assert.equal(a.u16(2), 0xbeef);
  assert.equal(a.u16be(3), 4789);
  assert.equal(a.u32(4), 0xdeadbeef);
  assert.equal(a.s32(5), -5);
  assert.equal(a.u32be(6), 0x01020304);
  assert.equal(a.u64(7), 0x1122334455667788n);
  assert.equal(a.str(8), 'hello');
  assert.equal(toHex(a.get(9)!), '0a0b0c');
  assert.equal(a.has(10), true);
  assert.equal(a.get(10)!.length, 0);
  const n = a.nested(11)!;
  assert.equal(n.u32(1), 77);
  assert.equal(n.str(2), 'in');
  assert.deepEqual(a.types(), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  assert.equal(a.has(12), false);
  assert.equal(a.u32(12), undefined);
  assert.equal(a.str(12), undefined);
  assert.equal(a.nested(12), undefined);
});

test('Attrs.parse: the type is masked of NLA_F_NESTED and NLA_F_NET_BYTEORDER', () => {
  const a = Attrs.parse(hex('0800 1280 01000000', '0800 0540 02000000'));
  assert.deepEqual(a.types(), [18, 5]);
  assert.equal(a.u32(18), 1);
  assert.equal(a.u32(5), 2);
});

test('Attrs.parse: repeated types keep every occurrence in order; get() is the first', () => {
  // Two XFRMA_TMPL-like repeats and three of type 1.
  const a = Attrs.parse(
    hex('0800 0100 01000000', '0800 0200 aa000000', '0800 0100 02000000', '0500 0100 03000000'),
  );
  assert.equal(a.all(1).length, 3);
  assert.deepEqual(a.all(1).map(toHex), ['01000000', '02000000', '03']);
  assert.equal(a.u32(1), 1);
  assert.deepEqual(a.all(2).map(toHex), ['aa000000']);
  assert.deepEqual(a.all(3), []);
});

test('Attrs.parse: a string without its NUL is read to the end of the attribute', () => {
  assert.equal(Attrs.parse(hex('0600 0300 7630 0000')).str(3), 'v0');
  assert.equal(Attrs.parse(hex('0700 0300 763000 00')).str(3), 'v0');
});

test('Attrs.parse: an empty buffer has no attributes', () => {
  assert.deepEqual(Attrs.parse(Buffer.alloc(0)).types(), []);
});

test('Attrs.parse: the last attribute may omit its padding', () => {
  const a = Attrs.parse(hex('0500 0100 07'));
  assert.equal(a.u8(1), 7);
});

// ---------------------------------------------------------------- errors, ACKs, DONE

function msg(type: number, flags: number, payload: Buffer, seq = 42, pid = 0): NlMessage {
  return { type, flags, seq, pid, payload };
}

/** struct nlmsgerr: int error; struct nlmsghdr msg (the request's header). */
function nlmsgerr(errno: number, req: string): string {
  const e = Buffer.alloc(4);
  e.writeInt32LE(-errno);
  return toHex(e) + req;
}

// The request these replies answer: RTM_NEWLINK len 0x38 flags 0x0605 seq 42 pid 0.
const REQ_HDR = '38000000' + '1000' + '0506' + '2a000000' + '00000000';

test('decodeError: a plain ACK (error 0), as the kernel sends with NETLINK_CAP_ACK', () => {
  const e = decodeError(msg(NLMSG_ERROR, NLM_F_CAPPED, hex(nlmsgerr(0, REQ_HDR))));
  assert.ok(e.errno === 0, `errno ${e.errno}`);
  assert.deepEqual(e.request, { len: 0x38, type: 16, flags: 0x0605, seq: 42, pid: 0 });
  assert.deepEqual(Object.keys(e).sort(), ['errno', 'request']);
});

test('decodeError: an ACK reports errno +0, not -0 (deepEqual/Object.is/JSON consumers)', () => {
  const e = decodeError(msg(NLMSG_ERROR, NLM_F_CAPPED, hex(nlmsgerr(0, REQ_HDR))));
  assert.ok(Object.is(e.errno, 0), 'errno is -0: `-p.readInt32LE(0)` negates a zero');
});

test('decodeError: an error without extack, the full request echoed', () => {
  const body = '00'.repeat(0x38 - 16);
  const e = decodeError(msg(NLMSG_ERROR, 0, hex(nlmsgerr(17, REQ_HDR) + body)));
  assert.equal(e.errno, 17); // EEXIST
  assert.deepEqual(e.request, { len: 0x38, type: 16, flags: 0x0605, seq: 42, pid: 0 });
  assert.equal(e.message, undefined);
  assert.equal(e.offset, undefined);
});

test('decodeError: NLM_F_ACK_TLVS + NLM_F_CAPPED with NLMSGERR_ATTR_MSG and NLMSGERR_ATTR_OFFS', () => {
  const text = Buffer.from('mtu less than device minimum\0'); // 29 bytes -> attr len 33, 3 pad
  const payload = hex(
    nlmsgerr(22, REQ_HDR),
    '2100 0100', // NLMSGERR_ATTR_MSG, len 33
    toHex(text),
    '000000',
    '0800 0200 24000000', // NLMSGERR_ATTR_OFFS 36
  );
  const e = decodeError(msg(NLMSG_ERROR, NLM_F_CAPPED | NLM_F_ACK_TLVS, payload));
  assert.equal(e.errno, 22);
  assert.equal(e.message, 'mtu less than device minimum');
  assert.equal(e.offset, 36);
  assert.equal(e.request.len, 0x38);
  assert.equal(e.cookie, undefined);
  assert.equal(e.missingType, undefined);
});

test('decodeError: NLM_F_ACK_TLVS without NLM_F_CAPPED: TLVs follow the echoed request (aligned)', () => {
  // A 0x25-byte request (odd): echoed in full, then 3 pad bytes, then the TLVs.
  const req = '25000000' + '1000' + '0506' + '2a000000' + '00000000' + 'ee'.repeat(0x25 - 16) + '000000';
  const payload = hex(
    nlmsgerr(95, req),
    '0900 0100 6e6f706500 000000',
    '0800 0200 10000000',
    '0800 0500 03000000',
    '0c00 0300 0102030405060708',
  );
  const e = decodeError(msg(NLMSG_ERROR, NLM_F_ACK_TLVS, payload));
  assert.equal(e.errno, 95);
  assert.equal(e.message, 'nope');
  assert.equal(e.offset, 16);
  assert.equal(e.missingType, 3);
  assert.equal(toHex(e.cookie!), '0102030405060708');
  assert.equal(e.request.len, 0x25);
});

test('decodeError: an ACK with ACK_TLVS but no TLVs', () => {
  const e = decodeError(msg(NLMSG_ERROR, NLM_F_CAPPED | NLM_F_ACK_TLVS, hex(nlmsgerr(0, REQ_HDR))));
  assert.ok(e.errno === 0, `errno ${e.errno}`);
  assert.equal(e.message, undefined);
  assert.equal(e.offset, undefined);
});

test('decodeDone: int 0 means success; without a payload too', () => {
  assert.equal(decodeDone(msg(NLMSG_DONE, NLM_F_MULTI, hex('00000000'))), undefined);
  assert.equal(decodeDone(msg(NLMSG_DONE, NLM_F_MULTI, Buffer.alloc(0))), undefined);
});

test('decodeDone: a failed dump carries -errno, and with extack a message', () => {
  const plain = decodeDone(msg(NLMSG_DONE, NLM_F_MULTI, hex('f2ffffff'), 9, 77))!;
  assert.equal(plain.errno, 14);
  assert.equal(plain.request.seq, 9);
  assert.equal(plain.request.pid, 77);
  assert.equal(plain.message, undefined);
  const withMsg = decodeDone(
    msg(
      NLMSG_DONE,
      NLM_F_MULTI | NLM_F_ACK_TLVS,
      hex('eaffffff', '0f00 0100', toHex(Buffer.from('bad filter\0')), '00', '0800 0200 0c000000'),
    ),
  )!;
  assert.equal(withMsg.errno, 22);
  assert.equal(withMsg.message, 'bad filter');
  assert.equal(withMsg.offset, 12);
});

// ---------------------------------------------------------------- malformed input

test('malformed datagrams: truncated header, length beyond the buffer, length < 16, trailing bytes', () => {
  const good = '14000000 1000 0200 07000000 00000000 01020304';
  assertMalformed(() => decodeMessages(hex('14000000 1000 0200 0700')), 'truncated header (10 bytes)');
  assertMalformed(() => decodeMessages(hex('14')), 'one byte');
  assertMalformed(
    () => decodeMessages(hex('20000000 1000 0200 07000000 00000000 01020304')),
    'nlmsg_len 32 in a 20-byte datagram',
  );
  assertMalformed(
    () => decodeMessages(hex('ffffffff 1000 0200 07000000 00000000 01020304')),
    'nlmsg_len 0xffffffff',
  );
  assertMalformed(
    () => decodeMessages(hex('0f000000 1000 0200 07000000 00000000 01020304')),
    'nlmsg_len 15 (< header)',
  );
  assertMalformed(
    () => decodeMessages(hex('00000000 1000 0200 07000000 00000000')),
    'nlmsg_len 0 (would loop forever)',
  );
  assertMalformed(() => decodeMessages(hex(good, 'aabbcc')), '3 trailing bytes');
  assertMalformed(() => decodeMessages(hex(good, '14000000 0300 0200 0700')), 'a second, truncated header');
  assertMalformed(
    () => decodeMessages(hex(good, '18000000 0300 0200 07000000 00000000 00000000')),
    'a second message overrunning the datagram',
  );
});

test('malformed attributes: length < 4, overrunning the buffer, overrunning inside a nest', () => {
  assertMalformed(() => Attrs.parse(hex('0300 0100 00000000')), 'nla_len 3');
  assertMalformed(() => Attrs.parse(hex('0000 0100 00000000')), 'nla_len 0 (would loop forever)');
  assertMalformed(() => Attrs.parse(hex('0c00 0100 01020304')), 'nla_len 12 in 8 bytes');
  assertMalformed(
    () => Attrs.parse(hex('0800 0100 01020304', '0800 0200 0102')),
    'second attribute overruns',
  );
  const outer = Attrs.parse(hex('0c00 1280', '0900 0100 01020304')); // nest holds 8 bytes, child claims 9
  assertMalformed(() => outer.nested(18), 'child overruns its nest');
});

test('malformed attributes: 1-3 stray bytes after the last attribute', () => {
  // Every kernel attribute is padded (nla_total_size), so a remainder too short
  // for a header means the stream is corrupt; the kernel's own nla_parse
  // reports "bytes leftover after parsing attributes".
  assertMalformed(() => Attrs.parse(hex('0800 0100 01020304', 'aabb')), '2 stray bytes');
  assertMalformed(() => Attrs.parse(hex('0800 0100 01020304', 'aa')), '1 stray byte');
});

test('malformed attribute values: too short for the typed getter', () => {
  const a = Attrs.parse(hex('0500 0100 07000000', '0600 0200 0102 0000', '0400 0300'));
  assertMalformed(() => a.u16(1), 'u16 of 1 byte');
  assertMalformed(() => a.u32(2), 'u32 of 2 bytes');
  assertMalformed(() => a.s32(2), 's32 of 2 bytes');
  assertMalformed(() => a.u32be(2), 'u32be of 2 bytes');
  assertMalformed(() => a.u64(2), 'u64 of 2 bytes');
  assertMalformed(() => a.u8(3), 'u8 of 0 bytes');
  assertMalformed(() => a.u16be(3), 'u16be of 0 bytes');
});

test('malformed error payloads: truncated nlmsgerr, extack beyond the payload, bad TLVs', () => {
  assertMalformed(() => decodeError(msg(NLMSG_ERROR, 0, hex('eaffffff'))), 'errno only');
  assertMalformed(
    () => decodeError(msg(NLMSG_ERROR, 0, hex('eaffffff 38000000 1000 0506 2a000000'))),
    '19 bytes',
  );
  assertMalformed(() => decodeError(msg(NLMSG_ERROR, 0, Buffer.alloc(0))), 'empty');
  // ACK_TLVS, not capped: the echoed request claims 0x38 bytes but only the header is there.
  assertMalformed(
    () => decodeError(msg(NLMSG_ERROR, NLM_F_ACK_TLVS, hex(nlmsgerr(22, REQ_HDR)))),
    'echoed request missing',
  );
  assertMalformed(
    () =>
      decodeError(
        msg(NLMSG_ERROR, NLM_F_CAPPED | NLM_F_ACK_TLVS, hex(nlmsgerr(22, REQ_HDR), '2000 0100 6162')),
      ),
    'MSG attr overruns',
  );
  assertMalformed(
    () =>
      decodeError(
        msg(NLMSG_ERROR, NLM_F_CAPPED | NLM_F_ACK_TLVS, hex(nlmsgerr(22, REQ_HDR), '0600 0200 0100 0000')),
      ),
    'OFFS of 2 bytes',
  );
  assertMalformed(
    () => decodeDone(msg(NLMSG_DONE, NLM_F_ACK_TLVS, hex('eaffffff', '0200 0100'))),
    'DONE with a 2-byte TLV',
  );
});

test('malformed fixed structs: too short for ifinfomsg/ifaddrmsg/rtmsg/ndmsg/xfrm_usersa_info/xfrm_userpolicy_info', () => {
  for (const n of [0, 1, 8, 15]) assertMalformed(() => decodeLink(Buffer.alloc(n)), `ifinfomsg of ${n}`);
  for (const n of [0, 4, 7]) assertMalformed(() => decodeAddr(Buffer.alloc(n)), `ifaddrmsg of ${n}`);
  for (const n of [0, 8, 11]) assertMalformed(() => decodeRoute(Buffer.alloc(n)), `rtmsg of ${n}`);
  for (const n of [0, 8, 11]) assertMalformed(() => decodeNeigh(Buffer.alloc(n)), `ndmsg of ${n}`);
  for (const n of [0, 56, 223])
    assertMalformed(() => decodeState(Buffer.alloc(n)), `xfrm_usersa_info of ${n}`);
  for (const n of [0, 64, 167])
    assertMalformed(() => decodePolicy(Buffer.alloc(n)), `xfrm_userpolicy_info of ${n}`);
});

test('malformed objects: missing name/address, bad attribute lengths inside decoders', () => {
  const ifi = '00000000 03000000 00000000 00000000';
  assertMalformed(() => decodeLink(hex(ifi)), 'link without IFLA_IFNAME');
  assertMalformed(
    () => decodeLink(hex(ifi, '0700 0300 763000 00', '0600 0400 dc05 0000')),
    'IFLA_MTU of 2 bytes',
  );
  assertMalformed(
    () => decodeLink(hex(ifi, '0700 0300 763000 00', '1400 1200 0a00 0100 76786c616e000000')),
    'IFLA_LINKINFO overruns',
  );
  assertMalformed(
    () => decodeLink(hex(ifi, '0700 0300 763000 00', '0900 0300 7630')),
    'attribute overruns the message',
  );
  assertMalformed(
    () =>
      decodeLink(
        hex(ifi, '0700 0300 763000 00', '1800 1280', '0a00 0100 76786c616e00 0000', '0800 0280 0500 0f00'),
      ),
    'vxlan IFLA_VXLAN_PORT of 1 byte',
  );
  const ifa = '02180000 03000000';
  assertMalformed(() => decodeAddr(hex(ifa)), 'address without IFA_ADDRESS/IFA_LOCAL');
  assertMalformed(() => decodeAddr(hex(ifa, '0900 0200 0a010203 05 000000')), 'IFA_LOCAL of 5 bytes');
  const rtm = '02100000 fe03fd01 00000000';
  assertMalformed(() => decodeRoute(hex(rtm, '0700 0100 0a0900 00')), 'RTA_DST of 3 bytes');
  assertMalformed(() => decodeRoute(hex(rtm, '0600 0400 0300 0000')), 'RTA_OIF of 2 bytes');
  const nd = '02000000 03000000 80000000';
  assertMalformed(() => decodeNeigh(hex(nd, '0700 0100 0a0102 00')), 'NDA_DST of 3 bytes');
  assertMalformed(() => decodeNeigh(hex(nd, '0500 0700 2a000000')), 'NDA_VNI of 1 byte');
  const pol = Buffer.alloc(168);
  assertMalformed(
    () => decodePolicy(Buffer.concat([pol, hex('4300 0500', '00'.repeat(63), '00')])),
    'XFRMA_TMPL of 63 bytes',
  );
  const sa = Buffer.alloc(224);
  sa.writeUInt16LE(2, 212);
  assertMalformed(
    () => decodeState(Buffer.concat([sa, hex('4600 1200', '00'.repeat(66), '0000')])),
    'XFRMA_ALG_AEAD of 66 bytes',
  );
  assertMalformed(
    () => decodeState(Buffer.concat([sa, hex('4000 0200', '00'.repeat(60))])),
    'XFRMA_ALG_CRYPT of 60 bytes',
  );
});

test('decoders never throw anything but MALFORMED_REPLY on random garbage', () => {
  // A deterministic PRNG (xorshift32) so a failure is reproducible.
  let s = 0x9e3779b9;
  const rnd = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
  const decoders: [string, (b: Buffer) => unknown][] = [
    ['decodeMessages', decodeMessages],
    ['Attrs.parse', (b) => Attrs.parse(b)],
    ['decodeLink', decodeLink],
    ['decodeAddr', decodeAddr],
    ['decodeRoute', decodeRoute],
    ['decodeNeigh', decodeNeigh],
    ['decodeState', decodeState],
    ['decodePolicy', decodePolicy],
    ['decodeError', (b) => decodeError(msg(NLMSG_ERROR, NLM_F_ACK_TLVS | (b[0] & 1 ? NLM_F_CAPPED : 0), b))],
  ];
  for (let i = 0; i < 3000; i++) {
    const len = rnd() % 300;
    const b = Buffer.alloc(len);
    for (let j = 0; j < len; j++) b[j] = rnd() & 0xff;
    // Make plausible small lengths common so parsing gets past the first header.
    if (len >= 2 && rnd() % 2) b.writeUInt16LE(rnd() % (len + 8), 0);
    if (len >= 18 && rnd() % 2) b.writeUInt16LE(rnd() % 40, 16);
    for (const [name, fn] of decoders) {
      try {
        fn(b);
      } catch (e) {
        assert.ok(
          e instanceof CnmdError && e.code === 'MALFORMED_REPLY',
          `${name}(${toHex(b)}) threw ${(e as Error).name}: ${(e as Error).message}`,
        );
      }
    }
  }
});

// ---------------------------------------------------------------- addresses

// Generated with glibc (gcc, inet_pton + inet_ntop on this machine):
//   [text, bytes (null: inet_pton rejects it), inet_ntop's canonical text]
const ipVectors: [string, string | null, string?][] = [
  ['0.0.0.0', '00000000', '0.0.0.0'],
  ['255.255.255.255', 'ffffffff', '255.255.255.255'],
  ['10.1.2.3', '0a010203', '10.1.2.3'],
  ['192.0.2.1', 'c0000201', '192.0.2.1'],
  ['1.2.3', null],
  ['256.1.1.1', null],
  ['01.2.3.4', null],
  ['1.2.3.04', null],
  ['1.2.3.4.5', null],
  ['1.2.3.', null],
  ['', null],
  ['::', '00000000000000000000000000000000', '::'],
  ['::1', '00000000000000000000000000000001', '::1'],
  ['1::', '00010000000000000000000000000000', '1::'],
  ['::ffff:1.2.3.4', '00000000000000000000ffff01020304', '::ffff:1.2.3.4'],
  ['::FFFF:1.2.3.4', '00000000000000000000ffff01020304', '::ffff:1.2.3.4'],
  ['fe80::1', 'fe800000000000000000000000000001', 'fe80::1'],
  ['FE80::ABCD:0:0:1', 'fe80000000000000abcd000000000001', 'fe80::abcd:0:0:1'],
  ['2001:db8:0:0:1:0:0:1', '20010db8000000000001000000000001', '2001:db8::1:0:0:1'],
  ['2001:0db8:0000:0000:0000:0000:0000:0001', '20010db8000000000000000000000001', '2001:db8::1'],
  ['2001:db8:0:1:1:1:1:1', '20010db8000000010001000100010001', '2001:db8:0:1:1:1:1:1'],
  ['2001:0:0:1:0:0:0:1', '20010000000000010000000000000001', '2001:0:0:1::1'],
  ['1:0:0:2:0:0:3:4', '00010000000000020000000000030004', '1::2:0:0:3:4'],
  ['1:2:3:4:5:6:7:8', '00010002000300040005000600070008', '1:2:3:4:5:6:7:8'],
  ['1:2:3:4:5:6:7::', '00010002000300040005000600070000', '1:2:3:4:5:6:7:0'],
  ['::2:3:4:5:6:7:8', '00000002000300040005000600070008', '0:2:3:4:5:6:7:8'],
  ['fd00::1%eth0', null],
  ['fe80::1%eth0', null],
  [':::', null],
  ['1:::2', null],
  [':1::', null],
  ['1::2::3', null],
  ['1:2:3:4:5:6:7:8:9', null],
  ['12345::', null],
  ['g::1', null],
  ['1:2:3:4:5:6:7', null],
  ['::ffff:1.2.3', null],
  ['::ffff:256.1.1.1', null],
  ['1.2.3.4::', null],
  ['fe80:0:0:0:0:0:0:0', 'fe800000000000000000000000000000', 'fe80::'],
  ['0:0:0:0:0:0:0:1', '00000000000000000000000000000001', '::1'],
  ['2001:db8::1:0:0:0', '20010db8000000000001000000000000', '2001:db8:0:0:1::'],
  ['64:ff9b::c000:201', '0064ff9b0000000000000000c0000201', '64:ff9b::c000:201'],
  ['1:2:3:4:5:6:1.2.3.4', '00010002000300040005000601020304', '1:2:3:4:5:6:102:304'],
  ['1:2:3:4:5:6:7:1.2.3.4', null],
  ['::1.2.3.4:5', null],
  ['1::2:3:4:5:6:7', '00010000000200030004000500060007', '1:0:2:3:4:5:6:7'],
  ['::ffff:01.2.3.4', null],
  ['0001:0002::', '00010002000000000000000000000000', '1:2::'],
  ['00001::', null],
  ['::ffff:1.2.3.4.5', null],
  ['fe80::', 'fe800000000000000000000000000000', 'fe80::'],
  ['1:2:3:4:5::1.2.3.4', '00010002000300040005000001020304', '1:2:3:4:5:0:102:304'],
  [' ::1', null],
  ['::1 ', null],
  ['1.2.3.4 ', null],
];

test('ipToBytes agrees with inet_pton on every vector (valid and invalid)', () => {
  for (const [text, bytes] of ipVectors) {
    const b = ipToBytes(text);
    if (bytes === null)
      assert.equal(
        b,
        undefined,
        `ipToBytes(${JSON.stringify(text)}) should be rejected, got ${b && toHex(b)}`,
      );
    else assert.equal(b && toHex(b), bytes, `ipToBytes(${JSON.stringify(text)})`);
  }
});

test('bytesToIp agrees with inet_ntop (RFC 5952) on every vector, except v4-mapped', () => {
  for (const [text, bytes, canon] of ipVectors) {
    if (bytes === null || bytes.startsWith('00000000000000000000ffff')) continue;
    assert.equal(bytesToIp(Buffer.from(bytes, 'hex')), canon, `bytesToIp of ${text}`);
    // and the canonical text parses back to the same bytes
    assert.equal(toHex(ipToBytes(canon!)!), bytes);
  }
});

test('bytesToIp: a v4-mapped address prints in mixed notation (RFC 5952 section 5, inet_ntop, ip -j)', () => {
  assert.equal(bytesToIp(hex('00000000000000000000ffff01020304')), '::ffff:1.2.3.4');
  assert.equal(bytesToIp(hex('00000000000000000000ffffc0000201')), '::ffff:192.0.2.1');
});

test('bytesToIp: RFC 5952 details: lowercase, no leading zeros, single zero group not compressed, first of equal runs', () => {
  assert.equal(bytesToIp(hex('20010db8 00000000 00000000 00000001')), '2001:db8::1');
  assert.equal(bytesToIp(hex('20010DB8 000A00B0 0C000000 00000001')), '2001:db8:a:b0:c00::1');
  assert.equal(bytesToIp(hex('20010db8 00000001 00010001 00010001')), '2001:db8:0:1:1:1:1:1');
  assert.equal(bytesToIp(hex('20010db8 00000000 00010000 00000001')), '2001:db8::1:0:0:1');
  assert.equal(bytesToIp(hex('00000000 00000000 00000000 00000000')), '::');
});

test('bytesToIp: lengths other than 4 and 16 are MALFORMED_REPLY', () => {
  for (const n of [0, 1, 3, 5, 6, 15, 17])
    assertMalformed(() => bytesToIp(Buffer.alloc(n)), `${n}-byte address`);
});

test('parsePrefix: v4/v6 with and without a length, bounds, junk', () => {
  assert.deepEqual(parsePrefix('10.0.0.2/24'), { ip: hex('0a000002'), prefixLen: 24, family: 4 });
  assert.deepEqual(parsePrefix('10.0.0.2'), { ip: hex('0a000002'), prefixLen: 32, family: 4 });
  assert.deepEqual(parsePrefix('0.0.0.0/0'), { ip: hex('00000000'), prefixLen: 0, family: 4 });
  assert.deepEqual(parsePrefix('fd00::1/64'), {
    ip: hex('fd000000000000000000000000000001'),
    prefixLen: 64,
    family: 6,
  });
  assert.deepEqual(parsePrefix('::/0'), { ip: Buffer.alloc(16), prefixLen: 0, family: 6 });
  assert.deepEqual(parsePrefix('fd00::1'), {
    ip: hex('fd000000000000000000000000000001'),
    prefixLen: 128,
    family: 6,
  });
  assert.deepEqual(parsePrefix('fd00::/128'), {
    ip: hex('fd000000000000000000000000000000'),
    prefixLen: 128,
    family: 6,
  });
  for (const bad of [
    '10.0.0.0/33',
    'fd00::/129',
    '10.0.0.0/',
    '10.0.0.0/-1',
    '10.0.0.0/2x',
    '10.0.0.0/1/2',
    '/24',
    '',
    '1.2.3/24',
    'fe80::1%eth0/64',
    '10.0.0.0/ 8',
  ]) {
    assert.equal(parsePrefix(bad), undefined, `parsePrefix(${JSON.stringify(bad)})`);
  }
  assert.equal(parsePrefix(undefined as unknown as string), undefined);
  assert.equal(parsePrefix(42 as unknown as string), undefined);
});

test('macToBytes / bytesToMac', () => {
  assert.equal(toHex(macToBytes('02:00:00:00:00:0a')!), '02000000000a');
  assert.equal(toHex(macToBytes('AA:bb:CC:dd:EE:ff')!), 'aabbccddeeff');
  assert.equal(bytesToMac(hex('02000000000a')), '02:00:00:00:00:0a');
  assert.equal(bytesToMac(hex('AABBCCDDEEFF')), 'aa:bb:cc:dd:ee:ff');
  for (const bad of [
    '',
    '02:00:00:00:00',
    '02:00:00:00:00:0a:0b',
    '02-00-00-00-00-0a',
    '0200.0000.000a',
    '2:0:0:0:0:a',
    'gg:00:00:00:00:0a',
    ' 02:00:00:00:00:0a',
    '02:00:00:00:00:0a\n',
  ]) {
    assert.equal(macToBytes(bad), undefined, `macToBytes(${JSON.stringify(bad)})`);
  }
});
