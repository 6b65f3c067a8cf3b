// XFRM through the netlink Handle, read back with `ip -s xfrm policy|state`
// (iproute2 has no JSON for xfrm: its text is parsed here). Policies work on
// every kernel with XFRM_USER; states need the IPsec protocol and crypto the
// kernel has: where it lacks them, the Handle must refuse typed, naming the
// CONFIG_ option, and leave nothing; where it has them, the full lifecycle.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lab, Ns } from '../lib/fixture';
import { CnmdError } from '../../src/errors';
import type { XfrmPolicy, XfrmStateSpec } from '../../src/netlink/xfrm/xfrm';
import { KERNEL_CONFIG, kernelHas } from '../lib/kernel';

// ---- `ip -s xfrm policy` text -> objects ----

interface TextPolicy {
  src: string;
  dst: string;
  proto?: string;
  sport?: number;
  dport?: number;
  dir: string;
  action: string;
  index: number;
  priority: number;
  mark?: string;
  tmpls: {
    src: string;
    dst: string;
    proto: string;
    spi: number;
    reqid: number;
    mode: string;
    level: string;
  }[];
}

/** Splits ip's xfrm output into blocks, one per object (each starts with "src " at column 0). */
function blocks(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    if (line.startsWith('src ')) out.push(line);
    else if (out.length > 0 && line.trim() !== '') out[out.length - 1] += '\n' + line;
  }
  return out;
}

function parsePolicies(text: string): TextPolicy[] {
  return blocks(text).map((b) => {
    const [head] = b.split('\n');
    const tok = head.trim().split(/\s+/);
    const kv = new Map<string, string>();
    for (let i = 0; i + 1 < tok.length; i += 2) kv.set(tok[i], tok[i + 1]);
    const dir = /\n\s+dir (\S+) action (\S+) index (\d+) priority (\d+)/.exec(b);
    assert.ok(dir, `a dir line in:\n${b}`);
    const mark = /\n\s+mark (0x[0-9a-f]+\/0x[0-9a-f]+)/.exec(b);
    const tmpls = [
      ...b.matchAll(
        /tmpl src (\S+) dst (\S+)\n\s+proto (\S+) spi 0x([0-9a-f]+)\(\d+\) reqid (\d+)\(0x[0-9a-f]+\) mode (\S+)\n\s+level (\S+)/g,
      ),
    ].map((m) => ({
      src: m[1],
      dst: m[2],
      proto: m[3],
      spi: parseInt(m[4], 16),
      reqid: Number(m[5]),
      mode: m[6],
      level: m[7],
    }));
    assert.equal(tmpls.length, (b.match(/tmpl /g) ?? []).length, `every template parsed in:\n${b}`);
    return {
      src: kv.get('src')!,
      dst: kv.get('dst')!,
      proto: kv.get('proto'),
      sport: kv.has('sport') ? Number(kv.get('sport')) : undefined,
      dport: kv.has('dport') ? Number(kv.get('dport')) : undefined,
      dir: dir[1],
      action: dir[2],
      index: Number(dir[3]),
      priority: Number(dir[4]),
      mark: mark?.[1],
      tmpls,
    };
  });
}

function ipPolicies(ns: Ns): TextPolicy[] {
  return parsePolicies(ns.run('ip', ['-s', 'xfrm', 'policy', 'list'])).sort((p, q) => p.index - q.index);
}

const PROTO_NAMES: Record<number, string> = { 6: 'tcp', 17: 'udp', 1: 'icmp', 58: 'ipv6-icmp', 132: 'sctp' };
const XPROTO: Record<number, string> = { 50: 'esp', 51: 'ah' };
const hex = (n: number) => `0x${n.toString(16)}`;

/** Our decoded policy in the shape parsed from ip (minus the template level, which we do not decode). */
function asText(
  p: XfrmPolicy,
): Omit<TextPolicy, 'tmpls'> & { tmpls: Omit<TextPolicy['tmpls'][number], 'level'>[] } {
  return {
    src: p.selector.src,
    dst: p.selector.dst,
    proto: p.selector.proto ? (PROTO_NAMES[p.selector.proto] ?? String(p.selector.proto)) : undefined,
    sport: p.selector.sport || undefined,
    dport: p.selector.dport || undefined,
    dir: String(p.dir),
    action: p.action,
    index: p.index,
    priority: p.priority,
    mark: p.mark ? `${hex(p.mark.value)}/${hex(p.mark.mask ?? 0xffffffff)}` : undefined,
    tmpls: p.templates.map((t) => ({
      src: t.src,
      dst: t.dst,
      proto: XPROTO[t.proto] ?? String(t.proto),
      spi: t.spi,
      reqid: t.reqid,
      mode: t.mode === 1 ? 'tunnel' : t.mode === 0 ? 'transport' : String(t.mode),
    })),
  };
}
const withoutLevel = (p: TextPolicy) => ({ ...p, tmpls: p.tmpls.map(({ level: _l, ...rest }) => rest) });

const SEL = { src: '10.0.0.1/32', dst: '10.0.0.2/32', proto: 'udp' as const, dport: 4789 };
const MARK_OUT = { value: 0xd0c4e3, mask: 0xffffffff };
const MARK_IN = { value: 0x5, mask: 0xff };

test('policies in every direction with marks, reqid templates and priorities: add, list, get agree with ip xfrm policy', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  await a.handle.xfrmPolicyAdd({
    selector: SEL,
    dir: 'out',
    priority: 100,
    mark: MARK_OUT,
    templates: [{ src: '10.0.0.1', dst: '10.0.0.2', proto: 'esp', mode: 'transport', reqid: 7 }],
  });
  await a.handle.xfrmPolicyAdd({
    selector: SEL,
    dir: 'in',
    priority: 200,
    mark: MARK_IN,
    templates: [{ src: '10.0.0.2', dst: '10.0.0.1', proto: 'esp', mode: 'tunnel', reqid: 8, optional: true }],
  });
  await a.handle.xfrmPolicyAdd({
    selector: SEL,
    dir: 'fwd',
    priority: 300,
    templates: [{ src: '10.0.0.2', dst: '10.0.0.1', proto: 'esp', mode: 'tunnel', reqid: 9 }],
  });
  await a.handle.xfrmPolicyAdd({
    selector: { src: 'fd00::/64', dst: 'fd01::/64' },
    dir: 'fwd',
    priority: 3,
    templates: [{ src: 'fd00::1', dst: 'fd01::1', proto: 'ah', mode: 'tunnel', reqid: 10, spi: 0x1234 }],
  });
  await a.handle.xfrmPolicyAdd({
    selector: { src: '10.1.0.0/16', dst: '10.2.0.0/16', proto: 'tcp', sport: 53 },
    dir: 'in',
    action: 'block',
    priority: 5,
  });

  const ip = ipPolicies(a);
  assert.equal(ip.length, 5);
  const find = (dir: string, src: string) => {
    const r = ip.filter((p) => p.dir === dir && p.src === src);
    assert.equal(r.length, 1, `${dir} ${src}`);
    const { index: _i, ...rest } = r[0];
    return rest;
  };
  assert.deepEqual(find('out', '10.0.0.1/32'), {
    src: '10.0.0.1/32',
    dst: '10.0.0.2/32',
    proto: 'udp',
    sport: undefined,
    dport: 4789,
    dir: 'out',
    action: 'allow',
    priority: 100,
    mark: '0xd0c4e3/0xffffffff',
    tmpls: [
      {
        src: '10.0.0.1',
        dst: '10.0.0.2',
        proto: 'esp',
        spi: 0,
        reqid: 7,
        mode: 'transport',
        level: 'required',
      },
    ],
  });
  assert.deepEqual(find('in', '10.0.0.1/32'), {
    src: '10.0.0.1/32',
    dst: '10.0.0.2/32',
    proto: 'udp',
    sport: undefined,
    dport: 4789,
    dir: 'in',
    action: 'allow',
    priority: 200,
    mark: '0x5/0xff',
    tmpls: [
      { src: '10.0.0.2', dst: '10.0.0.1', proto: 'esp', spi: 0, reqid: 8, mode: 'tunnel', level: 'use' },
    ],
  });
  assert.deepEqual(find('fwd', '10.0.0.1/32'), {
    src: '10.0.0.1/32',
    dst: '10.0.0.2/32',
    proto: 'udp',
    sport: undefined,
    dport: 4789,
    dir: 'fwd',
    action: 'allow',
    priority: 300,
    mark: undefined,
    tmpls: [
      { src: '10.0.0.2', dst: '10.0.0.1', proto: 'esp', spi: 0, reqid: 9, mode: 'tunnel', level: 'required' },
    ],
  });
  assert.deepEqual(find('fwd', 'fd00::/64'), {
    src: 'fd00::/64',
    dst: 'fd01::/64',
    proto: undefined,
    sport: undefined,
    dport: undefined,
    dir: 'fwd',
    action: 'allow',
    priority: 3,
    mark: undefined,
    tmpls: [
      {
        src: 'fd00::1',
        dst: 'fd01::1',
        proto: 'ah',
        spi: 0x1234,
        reqid: 10,
        mode: 'tunnel',
        level: 'required',
      },
    ],
  });
  assert.deepEqual(find('in', '10.1.0.0/16'), {
    src: '10.1.0.0/16',
    dst: '10.2.0.0/16',
    proto: 'tcp',
    sport: 53,
    dport: undefined,
    dir: 'in',
    action: 'block',
    priority: 5,
    mark: undefined,
    tmpls: [],
  });

  // Our dump is ip's, policy for policy (index included).
  const ours = (await a.handle.xfrmPolicyList()).map(asText).sort((p, q) => p.index - q.index);
  assert.deepEqual(ours, ip.map(withoutLevel));
  // Get each by its identity (selector, direction, mark).
  for (const [id, dir] of [
    [{ selector: SEL, dir: 'out' as const, mark: MARK_OUT }, 'out'],
    [{ selector: SEL, dir: 'in' as const, mark: MARK_IN }, 'in'],
    [{ selector: SEL, dir: 'fwd' as const }, 'fwd'],
    [{ selector: { src: 'fd00::/64', dst: 'fd01::/64' }, dir: 'fwd' as const }, 'fwd'],
  ] as const) {
    const got = asText(await a.handle.xfrmPolicyGet(id));
    const want = ip.find((p) => p.index === got.index);
    assert.ok(want, `get ${dir} returned a policy ip lists`);
    assert.deepEqual(got, withoutLevel(want));
    assert.equal(got.dir, dir);
  }
  const v6 = await a.handle.xfrmPolicyGet({ selector: { src: 'fd00::/64', dst: 'fd01::/64' }, dir: 'fwd' });
  assert.equal(v6.selector.family, 6);
  // The mark is part of a policy's identity.
  await assert.rejects(a.handle.xfrmPolicyGet({ selector: SEL, dir: 'in' }), {
    code: 'NOT_FOUND',
    errno: 'ENOENT',
  });
  await assert.rejects(a.handle.xfrmPolicyGet({ selector: SEL, dir: 'in', mark: MARK_OUT }), {
    code: 'NOT_FOUND',
    errno: 'ENOENT',
  });
});

test('policies: duplicate, update, delete each direction, missing, flush; bad input refused and nothing added', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  for (const dir of ['out', 'in', 'fwd'] as const) {
    await a.handle.xfrmPolicyAdd({
      selector: SEL,
      dir,
      priority: 10,
      mark: MARK_OUT,
      templates: [{ src: '10.0.0.1', dst: '10.0.0.2', proto: 'esp', reqid: 7 }],
    });
  }
  await assert.rejects(a.handle.xfrmPolicyAdd({ selector: SEL, dir: 'out', priority: 99, mark: MARK_OUT }), {
    code: 'ALREADY_EXISTS',
    errno: 'EEXIST',
  });
  // The same selector under another mark is another policy.
  await a.handle.xfrmPolicyAdd({ selector: SEL, dir: 'out', priority: 11, mark: MARK_IN });
  assert.equal(ipPolicies(a).length, 4);
  // Update changes it in place; update of a new one adds it.
  const before = ipPolicies(a).find((p) => p.dir === 'out' && p.mark === '0xd0c4e3/0xffffffff')!;
  await a.handle.xfrmPolicyUpdate({
    selector: SEL,
    dir: 'out',
    priority: 50,
    mark: MARK_OUT,
    templates: [{ src: '10.0.0.1', dst: '10.0.0.2', proto: 'esp', reqid: 70 }],
  });
  const after = ipPolicies(a).find((p) => p.dir === 'out' && p.mark === '0xd0c4e3/0xffffffff')!;
  assert.equal(after.index, before.index, 'updated in place');
  assert.equal(after.priority, 50);
  assert.equal(after.tmpls[0].reqid, 70);
  await a.handle.xfrmPolicyUpdate({ selector: { src: '10.3.0.0/16', dst: '10.4.0.0/16' }, dir: 'out' });
  assert.equal(ipPolicies(a).length, 5);
  // Delete each direction: only that one goes.
  for (const dir of ['fwd', 'in', 'out'] as const) {
    await a.handle.xfrmPolicyDel({ selector: SEL, dir, mark: MARK_OUT });
    assert.equal(
      ipPolicies(a).some((p) => p.dir === dir && p.mark === '0xd0c4e3/0xffffffff'),
      false,
      dir,
    );
  }
  assert.deepEqual(
    ipPolicies(a)
      .map((p) => [p.src, p.dir, p.mark ?? '-'])
      .sort(),
    [
      ['10.0.0.1/32', 'out', '0x5/0xff'],
      ['10.3.0.0/16', 'out', '-'],
    ],
  );
  await assert.rejects(a.handle.xfrmPolicyDel({ selector: SEL, dir: 'out', mark: MARK_OUT }), {
    code: 'NOT_FOUND',
    errno: 'ENOENT',
  });
  assert.equal((await a.handle.xfrmPolicyList()).length, 2);
  await a.handle.xfrmPolicyFlush();
  assert.equal(a.run('ip', ['xfrm', 'policy', 'list']).trim(), '');
  assert.deepEqual(await a.handle.xfrmPolicyList(), []);
  await a.handle.xfrmPolicyFlush(); // flushing nothing is fine

  for (const [call, msg] of [
    [
      () => a.handle.xfrmPolicyAdd({ selector: { src: '10.0.0.1/33', dst: '10.0.0.2/32' }, dir: 'out' }),
      /selector src "10.0.0.1\/33"/,
    ],
    [
      () =>
        a.handle.xfrmPolicyAdd({
          selector: { src: '10.0.0.1/32', dst: '10.0.0.2/32' },
          dir: 'sideways' as never,
        }),
      /direction "sideways"/,
    ],
    [
      () =>
        a.handle.xfrmPolicyAdd({
          selector: { src: '10.0.0.1/32', dst: '10.0.0.2/32', proto: 'gre' as never },
          dir: 'out',
        }),
      /protocol "gre"/,
    ],
    [
      () =>
        a.handle.xfrmPolicyAdd({
          selector: { src: '10.0.0.1/32', dst: '10.0.0.2/32' },
          dir: 'out',
          templates: [{ dst: '10.0.0.2', mode: 'beet' as never }],
        }),
      /template mode "beet"/,
    ],
    [
      () =>
        a.handle.xfrmPolicyAdd({
          selector: { src: '10.0.0.1/32', dst: '10.0.0.2/32' },
          dir: 'out',
          templates: [{ dst: '10.0.0.300' }],
        }),
      /template destination "10.0.0.300"/,
    ],
    [
      () => a.handle.xfrmPolicyGet({ selector: { src: 'x', dst: '10.0.0.2/32' }, dir: 'out' }),
      /selector src "x"/,
    ],
  ] as const) {
    await assert.rejects(call(), (e: any) => {
      assert.ok(e instanceof CnmdError);
      assert.equal(e.code, 'INVALID_ARGUMENT', String(e));
      assert.match(e.message, msg);
      return true;
    });
  }
  assert.equal(a.run('ip', ['xfrm', 'policy', 'list']).trim(), '');
});

// ---- states ----

interface TextState {
  src: string;
  dst: string;
  proto: string;
  spi: number;
  reqid: number;
  mode: string;
  replayWindow: number;
  mark?: string;
  authTrunc?: { name: string; key: string; bits: number };
  enc?: { name: string; key: string };
  aead?: { name: string; key: string; icvBits: number };
}

function parseStates(text: string): TextState[] {
  return blocks(text).map((b) => {
    const head = /^src (\S+) dst (\S+)/.exec(b);
    const id =
      /\n\s+proto (\S+) spi 0x([0-9a-f]+)(?:\(\d+\))? reqid (\d+)(?:\(0x[0-9a-f]+\))? mode (\S+)/.exec(b);
    const rw = /replay-window (\d+)/.exec(b);
    assert.ok(head && id && rw, `a state block:\n${b}`);
    const mark = /\n\s+mark (0x[0-9a-f]+\/0x[0-9a-f]+)/.exec(b);
    const auth = /\n\s+auth-trunc (\S+) 0x([0-9a-f]+)(?: \(\d+ bits\))? (\d+)/.exec(b);
    const enc = /\n\s+enc (\S+) 0x([0-9a-f]+)/.exec(b);
    const aead = /\n\s+aead (\S+) 0x([0-9a-f]+)(?: \(\d+ bits\))? (\d+)/.exec(b);
    return {
      src: head[1],
      dst: head[2],
      proto: id[1],
      spi: parseInt(id[2], 16),
      reqid: Number(id[3]),
      mode: id[4],
      replayWindow: Number(rw[1]),
      mark: mark?.[1],
      authTrunc: auth ? { name: auth[1], key: auth[2], bits: Number(auth[3]) } : undefined,
      enc: enc ? { name: enc[1], key: enc[2] } : undefined,
      aead: aead ? { name: aead[1], key: aead[2], icvBits: Number(aead[3]) } : undefined,
    };
  });
}
const ipStates = (ns: Ns) =>
  parseStates(ns.run('ip', ['-s', 'xfrm', 'state', 'list'])).sort((p, q) => p.spi - q.spi);

interface StateCase {
  name: string;
  /** Kernel options it needs; the first ones missing decide the error. */
  needs: string[];
  spec: (spi: number) => XfrmStateSpec;
  /** What ip shows for the algorithms. */
  ipAlgs: (s: TextState) => unknown;
  want: unknown;
}

const AUTH_KEY = '22'.repeat(32);
const ENC_KEY = '33'.repeat(16);
const GCM_KEY = '11'.repeat(20);
const CASES: StateCase[] = [
  {
    name: 'AH transport with hmac(sha256), IPv4',
    needs: ['CONFIG_INET_AH', 'CONFIG_CRYPTO_HMAC', 'CONFIG_CRYPTO_SHA256'],
    spec: (spi) => ({
      src: '10.0.0.1',
      dst: '10.0.0.2',
      proto: 'ah',
      spi,
      reqid: 7,
      mode: 'transport',
      mark: MARK_OUT,
      auth: { name: 'hmac(sha256)', key: '0x' + AUTH_KEY, truncBits: 128 },
    }),
    ipAlgs: (s) => s.authTrunc,
    want: { name: 'hmac(sha256)', key: AUTH_KEY, bits: 128 },
  },
  {
    name: 'AH tunnel with hmac(sha256), IPv6',
    needs: ['CONFIG_INET6_AH', 'CONFIG_CRYPTO_HMAC', 'CONFIG_CRYPTO_SHA256'],
    spec: (spi) => ({
      src: 'fd00::1',
      dst: 'fd00::2',
      proto: 'ah',
      spi,
      reqid: 8,
      mode: 'tunnel',
      auth: { name: 'hmac(sha256)', key: '0x' + AUTH_KEY, truncBits: 128 },
    }),
    ipAlgs: (s) => s.authTrunc,
    want: { name: 'hmac(sha256)', key: AUTH_KEY, bits: 128 },
  },
  {
    name: 'ESP transport with cbc(aes) + hmac(sha256), IPv4',
    needs: [
      'CONFIG_INET_ESP',
      'CONFIG_CRYPTO_AUTHENC',
      'CONFIG_CRYPTO_CBC',
      'CONFIG_CRYPTO_AES',
      'CONFIG_CRYPTO_HMAC',
      'CONFIG_CRYPTO_SHA256',
    ],
    spec: (spi) => ({
      src: '10.0.0.1',
      dst: '10.0.0.2',
      proto: 'esp',
      spi,
      reqid: 9,
      mark: MARK_IN,
      crypt: { name: 'cbc(aes)', key: '0x' + ENC_KEY },
      auth: { name: 'hmac(sha256)', key: '0x' + AUTH_KEY, truncBits: 128 },
    }),
    ipAlgs: (s) => [s.enc, s.authTrunc],
    want: [
      { name: 'cbc(aes)', key: ENC_KEY },
      { name: 'hmac(sha256)', key: AUTH_KEY, bits: 128 },
    ],
  },
  {
    name: 'ESP transport with rfc4106(gcm(aes)), IPv4',
    needs: ['CONFIG_INET_ESP', 'CONFIG_CRYPTO_GCM', 'CONFIG_CRYPTO_AES'],
    spec: (spi) => ({
      src: '10.0.0.1',
      dst: '10.0.0.2',
      proto: 'esp',
      spi,
      reqid: 10,
      aead: { name: 'rfc4106(gcm(aes))', key: '0x' + GCM_KEY, icvBits: 128 },
    }),
    ipAlgs: (s) => s.aead,
    want: { name: 'rfc4106(gcm(aes))', key: GCM_KEY, icvBits: 128 },
  },
  {
    name: 'ESP tunnel with rfc4106(gcm(aes)), IPv6',
    needs: ['CONFIG_INET6_ESP', 'CONFIG_CRYPTO_GCM', 'CONFIG_CRYPTO_AES'],
    spec: (spi) => ({
      src: 'fd00::1',
      dst: 'fd00::2',
      proto: 'esp',
      spi,
      reqid: 11,
      mode: 'tunnel',
      aead: { name: 'rfc4106(gcm(aes))', key: '0x' + GCM_KEY, icvBits: 64 },
    }),
    ipAlgs: (s) => s.aead,
    want: { name: 'rfc4106(gcm(aes))', key: GCM_KEY, icvBits: 64 },
  },
];

for (const c of CASES) {
  test(`XFRM state, ${c.name}: the full lifecycle where the kernel has it, else a typed KERNEL_FEATURE_MISSING naming what it lacks`, async (t) => {
    const l = await lab(t);
    const a = await l.ns('a');
    const spec = c.spec(0x1000);
    const missing = c.needs.filter((o) => kernelHas(o) === false);
    let err: unknown;
    try {
      await a.handle.xfrmStateAdd(spec);
    } catch (e) {
      err = e;
    }
    if (err !== undefined) {
      // Refused: typed, naming one of the options this kernel lacks; nothing added.
      assert.ok(err instanceof CnmdError, String(err));
      const e = err as CnmdError;
      assert.equal(e.code, 'KERNEL_FEATURE_MISSING', e.message);
      assert.equal(e.op, 'xfrm state add');
      assert.match(String(e.errno), /^(EPROTONOSUPPORT|ENOSYS)$/);
      const kconfig = e.details.kconfig as string;
      assert.match(e.message, new RegExp(`\\(${kconfig}\\)`));
      if (KERNEL_CONFIG !== '') {
        assert.ok(
          missing.length > 0,
          `the kernel config has every option (${c.needs.join(', ')}) yet the state was refused: ${e.message}`,
        );
        assert.ok(
          missing.includes(kconfig),
          `the error names ${kconfig}; this kernel lacks ${missing.join(', ')}`,
        );
      }
      if (spec.aead) assert.match(e.message, /CONFIG_INET6?_ESP|CONFIG_CRYPTO_GCM/);
      assert.equal(a.run('ip', ['xfrm', 'state', 'list']).trim(), '');
      assert.deepEqual(await a.handle.xfrmStateList(), []);
      await a.handle.xfrmStateFlush(); // flush works whatever the kernel lacks
      return;
    }
    assert.deepEqual(missing, [], 'the state was added, so the kernel has what it needs');
    // Added: read back with ip, field by field.
    const proto = spec.proto ?? 'esp';
    await a.handle.xfrmStateAdd(c.spec(0x1001));
    let ip = ipStates(a);
    assert.equal(ip.length, 2);
    const s = ip[0];
    assert.deepEqual(
      {
        src: s.src,
        dst: s.dst,
        proto: s.proto,
        spi: s.spi,
        reqid: s.reqid,
        mode: s.mode,
        replayWindow: s.replayWindow,
        mark: s.mark,
      },
      {
        src: spec.src,
        dst: spec.dst,
        proto,
        spi: 0x1000,
        reqid: spec.reqid,
        mode: spec.mode ?? 'transport',
        replayWindow: 32,
        mark: spec.mark ? `${hex(spec.mark.value)}/${hex(spec.mark.mask ?? 0xffffffff)}` : undefined,
      },
    );
    assert.deepEqual(c.ipAlgs(s), c.want);
    // get and list agree.
    const got = await a.handle.xfrmStateGet({ dst: spec.dst, spi: 0x1000, proto, mark: spec.mark });
    assert.deepEqual(
      [got.src, got.dst, got.proto, got.spi, got.reqid, got.mode, got.replayWindow],
      [spec.src, spec.dst, proto, 0x1000, spec.reqid, spec.mode ?? 'transport', 32],
    );
    if (spec.mark) assert.deepEqual(got.mark, spec.mark);
    if (spec.aead)
      assert.deepEqual(got.aead, {
        name: spec.aead.name,
        keyBits: GCM_KEY.length * 4,
        icvBits: spec.aead.icvBits,
      });
    if (spec.auth)
      assert.deepEqual(got.auth, { name: spec.auth.name, keyBits: AUTH_KEY.length * 4, truncBits: 128 });
    if (spec.crypt) assert.deepEqual(got.crypt, { name: spec.crypt.name, keyBits: ENC_KEY.length * 4 });
    assert.equal(got.stats.packets, 0n);
    const list = await a.handle.xfrmStateList();
    assert.deepEqual(list.map((x) => x.spi).sort(), [0x1000, 0x1001]);
    // duplicate, missing, delete
    await assert.rejects(a.handle.xfrmStateAdd(spec), { code: 'ALREADY_EXISTS', errno: 'EEXIST' });
    await assert.rejects(a.handle.xfrmStateGet({ dst: spec.dst, spi: 0x2000, proto, mark: spec.mark }), {
      code: 'NOT_FOUND',
      errno: 'ESRCH',
    });
    await a.handle.xfrmStateDel({ dst: spec.dst, spi: 0x1000, proto, mark: spec.mark });
    ip = ipStates(a);
    assert.deepEqual(
      ip.map((x) => x.spi),
      [0x1001],
    );
    await assert.rejects(a.handle.xfrmStateDel({ dst: spec.dst, spi: 0x1000, proto, mark: spec.mark }), {
      code: 'NOT_FOUND',
      errno: 'ESRCH',
    });
    // flush of the other protocol leaves it; flush of its own removes it.
    await a.handle.xfrmStateFlush(proto === 'esp' ? 'ah' : 'esp');
    assert.equal(ipStates(a).length, 1);
    await a.handle.xfrmStateFlush(proto);
    assert.equal(a.run('ip', ['xfrm', 'state', 'list']).trim(), '');
    await a.handle.xfrmStateAdd(spec);
    await a.handle.xfrmStateFlush();
    assert.deepEqual(await a.handle.xfrmStateList(), []);
  });
}

test('XFRM state input is checked before anything reaches the kernel', async (t) => {
  const l = await lab(t);
  const a = await l.ns('a');
  const aead = { name: 'rfc4106(gcm(aes))', key: '0x' + GCM_KEY, icvBits: 128 };
  for (const [spec, msg] of [
    [{ src: '10.0.0.1', dst: '10.0.0.2', spi: 0, aead }, /SPI 0 is outside/],
    [{ src: '10.0.0.1', dst: '10.0.0.2', spi: 2 ** 32, aead }, /SPI 4294967296 is outside/],
    [{ src: '10.0.0.1', dst: 'fd00::2', spi: 1, aead }, /different families/],
    [{ src: '10.0.0.1', dst: '10.0.0.300', spi: 1, aead }, /destination "10.0.0.300" is not an IP address/],
    [{ src: '10.0.0.1', dst: '10.0.0.2', spi: 1 }, /needs an aead, or auth and\/or crypt/],
    [
      { src: '10.0.0.1', dst: '10.0.0.2', spi: 1, aead: { ...aead, key: 'xyz' } },
      /key of rfc4106\(gcm\(aes\)\) is not hex/,
    ],
    [
      { src: '10.0.0.1', dst: '10.0.0.2', spi: 1, aead: { ...aead, name: 'x'.repeat(64) } },
      /longer than 63 bytes/,
    ],
    [
      { src: '10.0.0.1', dst: '10.0.0.2', spi: 1, proto: 'gre' as never, aead },
      /protocol "gre" is not esp or ah/,
    ],
    [{ src: '10.0.0.1', dst: '10.0.0.2', spi: 1, mode: 'beet' as never, aead }, /mode "beet"/],
  ] as const) {
    await assert.rejects(a.handle.xfrmStateAdd(spec as XfrmStateSpec), (e: any) => {
      assert.equal(e.code, 'INVALID_ARGUMENT', String(e));
      assert.match(e.message, msg);
      return true;
    });
  }
  await assert.rejects(a.handle.xfrmStateGet({ dst: 'nope', spi: 1 }), { code: 'INVALID_ARGUMENT' });
  await assert.rejects(a.handle.xfrmStateDel({ dst: '10.0.0.2', spi: -1 }), { code: 'INVALID_ARGUMENT' });
  assert.equal(a.run('ip', ['xfrm', 'state', 'list']).trim(), '');
});
