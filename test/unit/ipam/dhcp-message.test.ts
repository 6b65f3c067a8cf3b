// DHCPv4 messages: the bytes a client sends (RFC 2131's fixed header, RFC
// 2132's options) and what it reads from a server's reply, hostile ones included.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DHCP, clientIdOf, decodeServerReply, encodeClientMessage } from '../../../src/ipam/dhcp/message';
import { leaseOf } from '../../../src/ipam/dhcp/client';

/** The options of an encoded message, code -> bytes. */
function options(b: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  for (let i = 240; i < b.length && b[i] !== 255;) {
    if (b[i] === 0) {
      i++;
      continue;
    }
    out.set(b[i], b.subarray(i + 2, i + 2 + b[i + 1]));
    i += 2 + b[i + 1];
  }
  return out;
}

/** A server reply as a server would build it (BOOTREPLY), with raw options. */
function reply(xid: number, mac: string, yiaddr: string, opts: number[]): Buffer {
  const b = Buffer.alloc(240);
  b[0] = 2;
  b[1] = 1;
  b[2] = 6;
  b.writeUInt32BE(xid, 4);
  Buffer.from(yiaddr.split('.').map(Number)).copy(b, 16);
  Buffer.from(mac.replace(/:/g, ''), 'hex').copy(b, 28);
  b.writeUInt32BE(0x63825363, 236);
  return Buffer.concat([b, Buffer.from(opts)]);
}

test('DISCOVER: BOOTREQUEST from the MAC, broadcast flag, client id, parameter list, padded to 300 bytes', () => {
  const clientId = clientIdOf('ab12');
  const b = encodeClientMessage({
    type: DHCP.DISCOVER,
    xid: 0xdeadbeef,
    mac: '02:42:ac:11:00:02',
    clientId,
    broadcast: true,
    hostname: 'web',
  });
  assert.equal(b.length, 300);
  assert.deepEqual([b[0], b[1], b[2]], [1, 1, 6]);
  assert.equal(b.readUInt32BE(4), 0xdeadbeef);
  assert.equal(b.readUInt16BE(10), 0x8000);
  assert.equal(b.subarray(28, 34).toString('hex'), '0242ac110002');
  assert.equal(b.readUInt32BE(236), 0x63825363);
  const o = options(b);
  assert.deepEqual([...o.get(53)!], [DHCP.DISCOVER]);
  assert.deepEqual(o.get(61), Buffer.concat([Buffer.from([0]), Buffer.from('cnmd:ab12')]));
  assert.deepEqual([...o.get(55)!], [1, 3, 6, 15, 51, 58, 59]);
  assert.equal(o.get(12)!.toString(), 'web');
  assert.ok(!o.has(50) && !o.has(54));
});

test('RENEW and RELEASE carry ciaddr; a RELEASE names the server and asks for nothing', () => {
  const base = { xid: 1, mac: '02:00:00:00:00:01', clientId: clientIdOf('e1') };
  const renew = encodeClientMessage({ ...base, type: DHCP.REQUEST, ciaddr: '10.0.0.7' });
  assert.equal([...renew.subarray(12, 16)].join('.'), '10.0.0.7');
  assert.equal(renew.readUInt16BE(10), 0, 'a bound client takes unicast replies');
  const rel = encodeClientMessage({ ...base, type: DHCP.RELEASE, ciaddr: '10.0.0.7', serverId: '10.0.0.1' });
  const o = options(rel);
  assert.deepEqual([...o.get(54)!], [10, 0, 0, 1]);
  assert.ok(!o.has(55) && !o.has(57));
});

test('an ACK decodes to the lease: address, prefix, routers, DNS, times, server', () => {
  const r = decodeServerReply(
    reply(
      7,
      '02:00:00:00:00:01',
      '192.168.60.120',
      [
        53, 1, 5, 1, 4, 255, 255, 254, 0, 3, 8, 192, 168, 60, 1, 192, 168, 60, 254, 6, 4, 192, 168, 60, 53,
        51, 4, 0, 0, 0x0e, 0x10, 58, 4, 0, 0, 0, 30, 54, 4, 192, 168, 60, 1, 0, 0, 255,
      ],
    ),
  );
  assert.deepEqual(r, {
    type: DHCP.ACK,
    xid: 7,
    mac: '02:00:00:00:00:01',
    yiaddr: '192.168.60.120',
    prefix: 23,
    routers: ['192.168.60.1', '192.168.60.254'],
    dns: ['192.168.60.53'],
    leaseSeconds: 3600,
    t1: 30,
    serverId: '192.168.60.1',
  });
});

test('hostile replies decode to nothing or to what is well formed', () => {
  const ok = [53, 1, 2];
  // An option running past the end, a request instead of a reply, no magic, no message type.
  assert.equal(
    decodeServerReply(reply(1, '02:00:00:00:00:01', '10.0.0.2', [...ok, 6, 200, 1, 2])),
    undefined,
  );
  const request = reply(1, '02:00:00:00:00:01', '10.0.0.2', ok);
  request[0] = 1;
  assert.equal(decodeServerReply(request), undefined);
  const noMagic = reply(1, '02:00:00:00:00:01', '10.0.0.2', ok);
  noMagic.writeUInt32BE(0, 236);
  assert.equal(decodeServerReply(noMagic), undefined);
  assert.equal(decodeServerReply(reply(1, '02:00:00:00:00:01', '10.0.0.2', [3, 4, 10, 0, 0, 1])), undefined);
  assert.equal(decodeServerReply(Buffer.alloc(100)), undefined);
  // A mask with holes gives no prefix; a NAK's message is kept printable.
  const r = decodeServerReply(
    reply(1, '02:00:00:00:00:01', '0.0.0.0', [53, 1, 6, 1, 4, 255, 0, 255, 0, 56, 3, 0x61, 0x0a, 0x62]),
  );
  assert.equal(r?.prefix, undefined);
  assert.equal(r?.message, 'a?b');
});

test("a lease keeps only what the LAN's ACK says that can be configured", () => {
  const ack = {
    type: DHCP.ACK,
    xid: 1,
    mac: '02:00:00:00:00:01',
    yiaddr: '10.5.0.9',
    prefix: 0,
    routers: ['10.6.0.1', '10.5.0.9', '10.5.0.1'],
    dns: ['224.0.0.1', '127.0.0.1', '10.5.0.53', '0.1.2.3'],
    leaseSeconds: 0,
    t1: 500,
    t2: 3,
    serverId: '255.255.255.255',
  };
  assert.deepEqual(leaseOf(ack, 1000, ack.mac, '10.5.0.254'), {
    address: '10.5.0.9/24',
    gateway: '10.5.0.1',
    dns: ['10.5.0.53'],
    server: '10.5.0.254',
    leaseSeconds: 10,
    t1: 10,
    t2: 10,
    boundAt: 1000,
    mac: '02:00:00:00:00:01',
  });
  const plain = leaseOf(
    { ...ack, prefix: 8, leaseSeconds: 3600, t1: undefined, t2: undefined },
    0,
    ack.mac,
    's',
  );
  assert.deepEqual(
    [plain.address, plain.gateway, plain.t1, plain.t2],
    ['10.5.0.9/8', '10.6.0.1', 1800, 3150],
  );
});
