// The embedded DNS's fast path (src/dns/fastpath.ts): which queries it takes
// and which it leaves to the general path, the bytes it writes (checked by
// decoding them with dns-packet and at fixed offsets), its per-sandbox cache
// and when that empties, and, through SandboxResolver.detached, that every
// query it answers gets the same answer from the general path.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as packet from 'dns-packet';
import { CACHE_MAX, EDNS_UDP_SIZE, FastPath, TTL, encodeName, parseQuery } from '../../../src/dns/fastpath';
import type { DnsEndpoint, DnsNetwork, RecordSource } from '../../../src/dns/records';
import { SandboxResolver } from '../../../src/dns/resolver';
import { Forwarder } from '../../../src/dns/forwarder';
import { createLogger } from '../../../src/log';

const log = createLogger('silent');
const ME = 'sb-client';

function ep(sandboxId: string, names: string[], o: Partial<DnsEndpoint> = {}): DnsEndpoint {
  return { sandboxId, names, aliases: [], ...o };
}

/** front: dual stack, an alias shared by three; back: IPv4 only. The client is on both. */
function networks(): DnsNetwork[] {
  return [
    {
      id: 'n1',
      name: 'front',
      endpoints: [
        ep(ME, ['client'], { ipv4: '10.61.0.2' }),
        ep('sb-beta', ['beta', 'beta-host'], { aliases: ['api', 'web'], ipv4: '10.61.0.3', ipv6: 'fd61::3' }),
        ep('sb-r1', ['rep1'], { aliases: ['pool'], ipv4: '10.61.0.11' }),
        ep('sb-r2', ['rep2'], { aliases: ['pool'], ipv4: '10.61.0.12' }),
        ep('sb-r3', ['rep3'], { aliases: ['pool'], ipv4: '10.61.0.13' }),
      ],
    },
    {
      id: 'n2',
      name: 'back',
      endpoints: [
        ep(ME, ['client'], { ipv4: '10.62.0.2' }),
        ep('sb-gamma', ['gamma'], { ipv4: '10.62.0.5' }),
      ],
    },
  ];
}

/** A RecordSource honouring the contract: one array until set() swaps in a new one. */
class Source implements RecordSource {
  nets: DnsNetwork[];
  calls = 0;
  constructor(nets: DnsNetwork[] = networks()) {
    this.nets = nets;
  }
  networksOf(sandboxId: string): DnsNetwork[] {
    this.calls++;
    return sandboxId === ME ? this.nets : [];
  }
  set(nets: DnsNetwork[]): void {
    this.nets = nets;
  }
}

type Q = {
  name: string;
  type?: string;
  id?: number;
  rd?: boolean;
  edns?: { size?: number; do?: boolean; cookie?: boolean };
};

function query(q: Q): Buffer {
  const additionals: packet.Answer[] = [];
  if (q.edns) {
    const flags = q.edns.do ? 0x8000 : 0;
    const options = q.edns.cookie ? [{ code: 10, data: Buffer.from('0123456789abcdef', 'hex') }] : [];
    additionals.push({
      type: 'OPT',
      name: '.',
      udpPayloadSize: q.edns.size ?? 4096,
      extendedRcode: 0,
      ednsVersion: 0,
      flags,
      flag_do: !!q.edns.do,
      options,
    } as packet.Answer);
  }
  return packet.encode({
    type: 'query',
    id: q.id ?? 0x1234,
    flags: q.rd === false ? 0 : packet.RECURSION_DESIRED,
    questions: [{ name: q.name, type: (q.type ?? 'A') as 'A', class: 'IN' }],
    additionals,
  });
}

function fast(src = new Source()): FastPath {
  return new FastPath(src, ME);
}

/** dns-packet's decoded form, with the fields its types leave out. */
type Decoded = packet.Packet & { rcode?: string; flag_aa?: boolean; flag_tc?: boolean };
type Rr = { name: string; type: string; class?: string; ttl?: number; data?: unknown };

function decode(b: Buffer): Decoded {
  return packet.decode(b) as Decoded;
}

function rrs(p: packet.Packet): Rr[] {
  return (p.answers ?? []) as unknown as Rr[];
}

function datas(p: packet.Packet): string[] {
  return rrs(p)
    .map((a) => String(a.data))
    .sort();
}

// ---- what the fast path takes ----

test('parseQuery: a plain A query; the key is the wire name and type, lower case; RD kept', () => {
  const q = parseQuery(query({ name: 'BeTa.Front', rd: true }))!;
  assert.ok(q);
  assert.equal(q.qtype, 1);
  assert.equal(q.key, '\x04beta\x05front\x00\x00\x01');
  assert.equal(q.rd, 1);
  assert.equal(q.udpSize, 0);
  assert.equal(parseQuery(query({ name: 'beta', rd: false }))!.rd, 0);
  assert.equal(parseQuery(query({ name: 'beta', type: 'AAAA' }))!.qtype, 28);
  assert.equal(parseQuery(query({ name: '3.0.61.10.in-addr.arpa', type: 'PTR' }))!.qtype, 12);
  assert.equal(parseQuery(query({ name: 'under_score-dash9' }))!.key, '\x11under_score-dash9\x00\x00\x01');
});

test('parseQuery: EDNS0 OPT: payload size (at least 512), DO bit, options such as cookies ignored', () => {
  const q = parseQuery(query({ name: 'beta', edns: { size: 1232, do: true, cookie: true } }))!;
  assert.equal(q.udpSize, 1232);
  assert.equal(q.dnssecOk, true);
  assert.equal(parseQuery(query({ name: 'beta', edns: { size: 100 } }))!.udpSize, 512);
  assert.equal(parseQuery(query({ name: 'beta', edns: {} }))!.dnssecOk, false);
});

/** Bytes of a query for "beta" A, with edits. */
function raw(edit: (b: Buffer) => Buffer | void): Buffer {
  const b = Buffer.from(query({ name: 'beta' }));
  return edit(b) ?? b;
}

test('parseQuery leaves everything unusual to the general path', () => {
  const optQuery = () => query({ name: 'beta', edns: {} });
  const cases: [string, Buffer][] = [
    ['empty', Buffer.alloc(0)],
    ['header only', Buffer.alloc(12)],
    ['a response (QR)', raw((b) => void (b[2] |= 0x80))],
    ['opcode 2 (STATUS)', raw((b) => void (b[2] |= 2 << 3))],
    ['TC set', raw((b) => void (b[2] |= 0x02))],
    ['two questions', raw((b) => void b.writeUInt16BE(2, 4))],
    ['no question', raw((b) => void b.writeUInt16BE(0, 4))],
    ['an answer in the query', raw((b) => void b.writeUInt16BE(1, 6))],
    ['an authority record', raw((b) => void b.writeUInt16BE(1, 8))],
    ['ARCOUNT 2', raw((b) => void b.writeUInt16BE(2, 10))],
    ['ARCOUNT 1, nothing there', raw((b) => void b.writeUInt16BE(1, 10))],
    ['trailing bytes', raw((b) => Buffer.concat([b, Buffer.from([0])]))],
    ['class CH', raw((b) => void b.writeUInt16BE(3, b.length - 2))],
    ['type MX', query({ name: 'beta', type: 'MX' })],
    ['type SRV', query({ name: '_http._tcp.beta', type: 'SRV' })],
    ['type TXT', query({ name: 'beta', type: 'TXT' })],
    ['type ANY', query({ name: 'beta', type: 'ANY' })],
    ['the root name', query({ name: '.' })],
    [
      'a dot inside a label',
      Buffer.concat([
        Buffer.from('123401000001000000000000', 'hex'),
        Buffer.from('\x03a.b\x00', 'latin1'),
        Buffer.from('00010001', 'hex'),
      ]),
    ],
    ['a space in a label', query({ name: 'be ta' })],
    ['a non-ASCII label', query({ name: 'bëta' })],
    [
      'a compression pointer in the question',
      Buffer.concat([Buffer.from('123401000001000000000000', 'hex'), Buffer.from([0xc0, 0x0c, 0, 1, 0, 1])]),
    ],
    [
      'a label of 64',
      Buffer.concat([
        Buffer.from('123401000001000000000000', 'hex'),
        Buffer.from([64]),
        Buffer.alloc(64, 0x61),
        Buffer.from([0, 0, 1, 0, 1]),
      ]),
    ],
    [
      'a name of 256 bytes',
      Buffer.concat([
        Buffer.from('123401000001000000000000', 'hex'),
        ...Array.from({ length: 4 }, () => Buffer.concat([Buffer.from([63]), Buffer.alloc(63, 0x61)])),
        Buffer.from([2, 0x61, 0x61, 0, 0, 1, 0, 1]),
      ]),
    ],
    [
      'OPT version 1',
      (() => {
        const b = optQuery();
        b[b.length - 5] = 1;
        return b;
      })(),
    ],
    [
      'OPT RDLENGTH past the end',
      (() => {
        const b = optQuery();
        b.writeUInt16BE(4, b.length - 2);
        return b;
      })(),
    ],
    [
      'OPT with a name',
      (() => {
        const b = optQuery();
        b[b.length - 11] = 1;
        return b;
      })(),
    ],
    [
      'an additional that is not OPT',
      (() => {
        const b = optQuery();
        b.writeUInt16BE(250, b.length - 10);
        return b;
      })(),
    ],
  ];
  for (const [what, msg] of cases) assert.equal(parseQuery(msg), undefined, what);
  // A name of exactly 255 bytes on the wire is still a name.
  const longest = Buffer.concat([
    Buffer.from('123401000001000000000000', 'hex'),
    ...Array.from({ length: 3 }, () => Buffer.concat([Buffer.from([63]), Buffer.alloc(63, 0x61)])),
    Buffer.from([61]),
    Buffer.alloc(61, 0x61),
    Buffer.from([0, 0, 1, 0, 1]),
  ]);
  assert.ok(parseQuery(longest));
  // Every prefix of good queries: never an exception, never a wrong parse.
  for (const good of [query({ name: 'beta.front' }), query({ name: 'beta', edns: { cookie: true } })]) {
    for (let n = 0; n < good.length; n++)
      assert.equal(parseQuery(good.subarray(0, n)), undefined, `prefix of ${n}`);
  }
});

test('random and mutated packets never throw', () => {
  const f = fast();
  const seeds = [
    query({ name: 'beta' }),
    query({ name: 'api', type: 'AAAA', edns: { cookie: true } }),
    query({ name: '3.0.61.10.in-addr.arpa', type: 'PTR' }),
  ];
  for (let i = 0; i < 20000; i++) {
    let msg: Buffer;
    if (i % 4 === 0) msg = crypto.randomBytes(i % 80);
    else {
      msg = Buffer.from(seeds[i % seeds.length]);
      for (let k = 0; k < 1 + (i % 3); k++) msg[crypto.randomInt(msg.length)] = crypto.randomInt(256);
    }
    f.answer(msg, i % 2 === 0);
  }
});

// ---- the answers it writes ----

test('A: authoritative answer, RD echoed, RA, TTL 600, owner compressed to the question, the name as asked', () => {
  const msg = query({ name: 'BETA', id: 0xbeef });
  const out = fast().answer(msg, false)!;
  assert.ok(out);
  const p = decode(out);
  assert.equal(p.id, 0xbeef);
  assert.equal(p.type, 'response');
  assert.equal(p.flags, packet.AUTHORITATIVE_ANSWER | packet.RECURSION_AVAILABLE | packet.RECURSION_DESIRED);
  assert.equal(p.rcode, 'NOERROR');
  assert.deepEqual(p.questions, [{ name: 'BETA', type: 'A', class: 'IN' }]);
  assert.deepEqual(
    rrs(p).map((a) => ({ ...a })),
    [{ name: 'BETA', type: 'A', class: 'IN', ttl: TTL, data: '10.61.0.3', flush: false }],
  );
  assert.deepEqual(p.additionals, []);
  // Header and question are the query's; the answer's owner is the pointer 0xc00c.
  assert.deepEqual(out.subarray(12, msg.length), msg.subarray(12));
  assert.equal(out.readUInt16BE(msg.length), 0xc00c);
  assert.equal(out.length, msg.length + 12 + 4);
  // Without RD asked: none in the reply.
  assert.equal(
    decode(fast().answer(query({ name: 'beta', rd: false }), false)!).flags,
    packet.AUTHORITATIVE_ANSWER | packet.RECURSION_AVAILABLE,
  );
});

test('AAAA, aliases, host names, name.network, several addresses in random order', () => {
  const f = fast();
  const ask = (name: string, type = 'A') => decode(f.answer(query({ name, type }), false)!);
  assert.deepEqual(datas(ask('beta', 'AAAA')), ['fd61::3']);
  assert.deepEqual(datas(ask('api')), ['10.61.0.3']);
  assert.deepEqual(datas(ask('beta-host')), ['10.61.0.3']);
  assert.deepEqual(datas(ask('gamma.back')), ['10.62.0.5']);
  assert.deepEqual(datas(ask('GAMMA.Back')), ['10.62.0.5']);
  assert.deepEqual(datas(ask('pool')), ['10.61.0.11', '10.61.0.12', '10.61.0.13']);
  const orders = new Set<string>();
  for (let i = 0; i < 50; i++)
    orders.add(
      rrs(ask('pool'))
        .map((a) => String(a.data))
        .join(','),
    );
  assert.ok(orders.size > 1, 'round robin: the order changes between replies');
});

test('AAAA of an IPv4-only name: NOERROR, authoritative, no answer (not forwarded)', () => {
  const p = decode(fast().answer(query({ name: 'gamma', type: 'AAAA' }), false)!);
  assert.equal(p.rcode, 'NOERROR');
  assert.equal(p.flag_aa, true);
  assert.deepEqual(p.answers, []);
});

test('PTR: name.network. for IPv4 and IPv6 endpoint addresses', () => {
  const f = fast();
  const v4 = decode(f.answer(query({ name: '3.0.61.10.in-addr.arpa', type: 'PTR' }), false)!);
  assert.deepEqual(datas(v4), ['beta.front']);
  assert.equal(rrs(v4)[0].ttl, TTL);
  const nib = '3' + '.0'.repeat(27) + '.1.6.d.f.ip6.arpa';
  const v6 = decode(f.answer(query({ name: nib, type: 'PTR' }), false)!);
  assert.deepEqual(datas(v6), ['beta.front']);
  assert.equal(
    f.answer(query({ name: '9.9.61.10.in-addr.arpa', type: 'PTR' }), false),
    undefined,
    'an unknown address: forwarded by the general path',
  );
});

test('names the networks do not know, or hidden on other networks, are left to the general path (forwarded)', () => {
  const f = fast();
  assert.equal(f.answer(query({ name: 'example.com' }), false), undefined);
  assert.equal(f.answer(query({ name: 'gamma.front' }), false), undefined);
  assert.equal(
    new FastPath(new Source(), 'sb-other').answer(query({ name: 'beta' }), false),
    undefined,
    'a sandbox on no network sees nothing',
  );
});

test('EDNS0: our OPT back (payload size, DO copied), none without one in the query', () => {
  const f = fast();
  const withDo = decode(
    f.answer(query({ name: 'beta', edns: { size: 1232, do: true, cookie: true } }), false)!,
  );
  assert.equal(withDo.additionals!.length, 1);
  const opt = withDo.additionals![0] as packet.OptAnswer;
  assert.equal(opt.type, 'OPT');
  assert.equal(opt.udpPayloadSize, EDNS_UDP_SIZE);
  assert.equal(opt.ednsVersion, 0);
  assert.equal(opt.flag_do, true);
  assert.deepEqual(opt.options, []);
  const noDo = decode(f.answer(query({ name: 'beta', edns: {} }), false)!);
  assert.equal((noDo.additionals![0] as packet.OptAnswer).flag_do, false);
  assert.deepEqual(decode(f.answer(query({ name: 'beta' }), false)!).additionals, []);
});

test('an answer over the UDP limit is left to the general path (truncation); TCP and a larger EDNS0 size take it', () => {
  const many: DnsNetwork[] = [
    {
      id: 'n',
      name: 'big',
      endpoints: [
        ep(ME, ['client'], { ipv4: '10.9.0.1' }),
        ...Array.from({ length: 40 }, (_, i) =>
          ep(`r${i}`, [`r${i}`], { aliases: ['pool'], ipv4: `10.9.1.${i}`, ipv6: `fd09::${i}` }),
        ),
      ],
    },
  ];
  const f = fast(new Source(many));
  assert.equal(f.answer(query({ name: 'pool', type: 'AAAA' }), false), undefined, '40 x 28 bytes > 512');
  assert.equal(f.answer(query({ name: 'pool', type: 'AAAA', edns: { size: 512 } }), false), undefined);
  assert.equal(
    datas(decode(f.answer(query({ name: 'pool', type: 'AAAA' }), true)!)).length,
    40,
    'TCP: whole',
  );
  assert.equal(
    datas(decode(f.answer(query({ name: 'pool', type: 'AAAA', edns: { size: 4096 } }), false)!)).length,
    40,
    'within the EDNS0 size',
  );
  assert.equal(f.answer(query({ name: 'pool' }), false), undefined, '22 + 40 x 16 bytes > 512');
  // Compressed, an A record is 16 bytes: 30 fit in 512 (uncompressed, 20 bytes each, they would not).
  const thirty = fast(new Source([{ ...many[0], endpoints: many[0].endpoints.slice(0, 31) }]));
  const out = thirty.answer(query({ name: 'pool' }), false)!;
  assert.equal(out.length, 12 + 10 + 30 * 16);
  assert.equal(datas(decode(out)).length, 30);
});

test('encodeName: labels as on the wire; names that cannot be encoded are refused', () => {
  assert.deepEqual(encodeName('beta.front.'), Buffer.from('\x04beta\x05front\x00', 'latin1'));
  assert.deepEqual(encodeName('beta.front'), Buffer.from('\x04beta\x05front\x00', 'latin1'));
  assert.equal(encodeName('a..b'), undefined);
  assert.equal(encodeName('x'.repeat(64)), undefined);
  assert.equal(encodeName(Array.from({ length: 5 }, () => 'y'.repeat(60)).join('.')), undefined);
});

// ---- the cache ----

/** A network whose endpoints count how often they are read. */
function counted(): { nets: DnsNetwork[]; reads: () => number } {
  let n = 0;
  const nets = networks();
  const eps = nets[0].endpoints;
  Object.defineProperty(nets[0], 'endpoints', {
    get() {
      n++;
      return eps;
    },
  });
  return { nets, reads: () => n };
}

test('cache: while the records are the same array, a name is looked up once', () => {
  const c = counted();
  const src = new Source(c.nets);
  const f = fast(src);
  f.answer(query({ name: 'beta' }), false);
  const after = c.reads();
  assert.ok(after > 0);
  for (let i = 0; i < 10; i++) f.answer(query({ name: 'BETA', id: i }), false);
  assert.equal(c.reads(), after, 'the same name in any case: from the cache');
  assert.equal(src.calls, 11, 'the records are still asked for their identity every time');
  f.answer(query({ name: 'beta', type: 'AAAA' }), false);
  assert.ok(c.reads() > after, 'another type is another entry');
});

test('cache: a new records array (an endpoint joined or left) empties it at once, negative entries too', () => {
  const src = new Source();
  const f = fast(src);
  assert.equal(f.answer(query({ name: 'late' }), false), undefined);
  assert.deepEqual(datas(decode(f.answer(query({ name: 'beta' }), false)!)), ['10.61.0.3']);
  const joined = networks();
  joined[0].endpoints.push(ep('sb-late', ['late'], { ipv4: '10.61.0.99' }));
  joined[0].endpoints[1] = { ...joined[0].endpoints[1], ipv4: '10.61.0.33' };
  src.set(joined);
  assert.deepEqual(datas(decode(f.answer(query({ name: 'late' }), false)!)), ['10.61.0.99']);
  assert.deepEqual(datas(decode(f.answer(query({ name: 'beta' }), false)!)), ['10.61.0.33']);
  src.set(networks());
  assert.equal(f.answer(query({ name: 'late' }), false), undefined, 'gone at once after leaving');
});

test('cache: a flood of distinct names keeps at most CACHE_MAX entries and answers stay right', () => {
  const c = counted();
  const f = fast(new Source(c.nets));
  for (let i = 0; i < CACHE_MAX * 3; i++) f.answer(query({ name: `n${i}.example` }), false);
  assert.deepEqual(datas(decode(f.answer(query({ name: 'beta' }), false)!)), ['10.61.0.3']);
  const size = (f as unknown as { cache: Map<string, unknown> }).cache.size;
  assert.ok(size <= CACHE_MAX, `cache holds ${size}`);
});

// ---- the same answers as the general path ----

function resolvers(src: RecordSource) {
  const ctx = { sandboxId: ME, records: src, forwarder: new Forwarder({ log }), upstreams: () => [], log };
  return {
    fastFirst: SandboxResolver.detached(ctx),
    general: SandboxResolver.detached(ctx, { fastPath: false }),
  };
}

/** A decoded reply with the answers in a fixed order (both paths shuffle). */
function canonical(b: Buffer): unknown {
  const p = decode(b);
  const answers = rrs(p)
    .map((a) => ({ ...a }))
    .sort((x, y) => String(x.data).localeCompare(String(y.data)));
  return { ...p, answers };
}

test('every query the fast path answers gets the same answer from the general path (A, AAAA, PTR, EDNS0, case, RD, TCP)', async () => {
  const src = new Source();
  const { fastFirst, general } = resolvers(src);
  const f = fast(src);
  const names = [
    'beta',
    'BETA',
    'Api',
    'web',
    'beta-host',
    'client',
    'pool',
    'gamma',
    'beta.front',
    'gamma.back',
    'rep2.FRONT',
  ];
  const qs: Q[] = [];
  for (const name of names) {
    for (const type of ['A', 'AAAA']) {
      qs.push(
        { name, type },
        { name, type, rd: false },
        { name, type, edns: {} },
        { name, type, edns: { do: true, cookie: true, size: 1232 } },
      );
    }
  }
  qs.push(
    { name: '3.0.61.10.in-addr.arpa', type: 'PTR' },
    { name: '5.0.62.10.IN-ADDR.ARPA', type: 'PTR', edns: { do: true } },
  );
  let answered = 0;
  for (const q of qs) {
    for (const tcp of [false, true]) {
      const msg = query(q);
      const viaFast = f.answer(msg, tcp);
      if (!viaFast) continue;
      answered++;
      const viaGeneral = await general.answer(msg, tcp);
      assert.ok(viaGeneral, `general path answers ${JSON.stringify(q)}`);
      assert.deepEqual(canonical(viaFast), canonical(viaGeneral), `${JSON.stringify(q)} tcp=${tcp}`);
      assert.deepEqual(canonical((await fastFirst.answer(msg, tcp))!), canonical(viaGeneral));
    }
  }
  assert.equal(answered, qs.length * 2, "all of these are the fast path's");
});

test('what the fast path leaves, the resolver still answers the general way (FORMERR, SERVFAIL without upstreams, MX, truncation)', async () => {
  const many: DnsNetwork[] = [
    {
      id: 'n',
      name: 'big',
      endpoints: [
        ep(ME, ['client'], { ipv4: '10.9.0.1' }),
        ...Array.from({ length: 40 }, (_, i) =>
          ep(`r${i}`, [`r${i}`], { aliases: ['pool'], ipv6: `fd09::${i}` }),
        ),
      ],
    },
  ];
  const { fastFirst } = resolvers(new Source(many));
  const two = Buffer.from(query({ name: 'client' }));
  two.writeUInt16BE(2, 4);
  assert.equal(decode((await fastFirst.answer(two, false))!).rcode, 'FORMERR');
  assert.equal(decode((await fastFirst.answer(query({ name: 'example.com' }), false))!).rcode, 'SERVFAIL');
  const mx = decode((await fastFirst.answer(query({ name: 'client', type: 'MX' }), false))!);
  assert.equal(mx.rcode, 'NOERROR');
  assert.deepEqual(mx.answers, []);
  const trunc = decode((await fastFirst.answer(query({ name: 'pool', type: 'AAAA' }), false))!);
  assert.equal(trunc.flag_tc, true);
  assert.ok(trunc.answers!.length > 0 && trunc.answers!.length < 40);
  // The general path echoes OPT too, and truncates within the client's size.
  const edns = decode(
    (await fastFirst.answer(query({ name: 'pool', type: 'AAAA', edns: { size: 600, do: true } }), false))!,
  );
  assert.equal(edns.flag_tc, true);
  assert.equal((edns.additionals![0] as packet.OptAnswer).flag_do, true);
  assert.equal(await fastFirst.answer(Buffer.alloc(0), false), undefined);
});
