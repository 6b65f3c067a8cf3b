// The encrypted overlay's scenarios (issue 17) on the VM cluster (vm.ts),
// registered by overlay.test.ts after the plain overlay's test so both share
// one cluster (three cnmd with the cluster secret and a short
// --encryption-key-rotation; a fourth host netns for the wrong secret).
// Independent observers only: ping and TCP between sandboxes, tcpdump on the
// underlay, `ip xfrm state` and /proc/net/xfrm_stat in each host netns,
// etcdctl reading the store, a forged datagram's sink.
import { test, TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { ChildProcess, spawn } from 'node:child_process';
import { eventually, runIn } from '../lib/fixture';
import { ping, roundTrip, serve } from '../lib/probe';
import { startDaemon, RunningDaemon } from '../lib/daemon';
import { ClusterLab, hostAddr } from '../lib/cluster';
import { etcdctl, etcdWatch, meshOf, network, OverlayNet, Sb } from '../lib/overlay-cluster';
import { capture, forgedVxlan, pinger, sendUdp, sendUdpSpoofed, udpSink } from '../lib/wire';
import { ENC_REQID } from '../../drivers/overlay/encryption';
import { buildSpi } from '../../src/cluster/keys';
import { mark, ROTATION, vmCluster, VM_READY_MS, VM_WAIT_MS } from './vm';

const ROTATION_WAIT_MS = 240_000;
const re = (s: string) => s.replace(/\./g, '\\.');

export interface Enc {
  KeyTags: number[];
  PrimaryKeyTag?: number;
  Error?: string;
  Peers: { IP: string; State: string; RxKeyTags: number[]; TxKeyTag?: number }[];
}

export async function encryption(d: RunningDaemon, net: string): Promise<Enc> {
  const r = await d.request('GET', `/networks/${net}`);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.ok(r.body.Encryption, `inspect of ${net} has no Encryption: ${JSON.stringify(r.body)}`);
  return r.body.Encryption;
}

/** Every host up sends with one primary, the ring steady (two keys at most), every peer encrypted: returns the primary. */
async function settled(c: ClusterLab, net: string, hosts = [0, 1, 2], ms = ROTATION_WAIT_MS): Promise<Enc> {
  return eventually(async () => {
    const all = await Promise.all(hosts.map((i) => encryption(c.daemons[i], net)));
    const first = all[0];
    assert.ok(first.PrimaryKeyTag !== undefined, JSON.stringify(first));
    for (const [k, e] of all.entries()) {
      assert.deepEqual(e.KeyTags, first.KeyTags, `host ${hosts[k] + 1} ring`);
      assert.ok(e.KeyTags.length <= 2, `ring steady: ${e.KeyTags}`);
      assert.equal(e.PrimaryKeyTag, first.PrimaryKeyTag);
      assert.equal(e.Peers.length, hosts.length - 1, JSON.stringify(e.Peers));
      for (const p of e.Peers) {
        assert.equal(p.State, 'encrypted', JSON.stringify(p));
        assert.equal(p.TxKeyTag, first.PrimaryKeyTag, JSON.stringify(p));
      }
    }
    return first;
  }, ms);
}

/** Waits for `n` completed rotations (the primary changed n times, ring steady again) as host 1 sees it. */
async function rotations(c: ClusterLab, net: string, n: number, hosts = [0, 1, 2]): Promise<Enc> {
  let e = await encryption(c.daemons[hosts[0]], net);
  for (let k = 0; k < n; k++) {
    const before = e.PrimaryKeyTag;
    await eventually(async () => {
      const now = await encryption(c.daemons[hosts[0]], net);
      assert.notEqual(now.PrimaryKeyTag, before, `primary still ${before}`);
    }, ROTATION_WAIT_MS);
    e = await settled(c, net, hosts);
    mark(`rotation ${k + 1}/${n}: primary ${before} -> ${e.PrimaryKeyTag}, keys ${e.KeyTags}`);
  }
  return e;
}

/** cnmd's SAs in a host netns (reqid ENC_REQID), as `ip xfrm state` prints them: "src>dst#spi" and their keys. */
export function states(c: ClusterLab, i: number): { ids: string[]; keys: string[] } {
  const text = c.hosts[i].run('ip', ['xfrm', 'state']);
  const ids: string[] = [];
  const keys: string[] = [];
  for (const block of text.split(/\n(?=src )/)) {
    const m = /^src (\S+) dst (\S+)\n\s+proto esp spi (0x[0-9a-f]+) reqid (\d+)/.exec(block);
    if (!m || Number(m[4]) !== ENC_REQID) continue;
    ids.push(`${m[1]}>${m[2]}#${Number(m[3])}`);
    const k = /aead rfc4106\(gcm\(aes\)\) 0x([0-9a-f]+)/.exec(block);
    if (k) keys.push(k[1]);
  }
  return { ids: ids.sort(), keys };
}

/** Exactly the SAs the ring says host i must have: receive with every key, send with the primary (VTEPs: vtep(i + 1)). */
export function expectedStates(i: number, peers: number[], e: Enc, vtep = hostAddr): string[] {
  const me = vtep(i + 1);
  const out: string[] = [];
  for (const p of peers) {
    const peer = vtep(p + 1);
    for (const tag of e.KeyTags) out.push(`${peer}>${me}#${buildSpi(peer, me, tag)}`);
    out.push(`${me}>${peer}#${buildSpi(me, peer, e.PrimaryKeyTag!)}`);
  }
  return out.sort();
}

/** Waits until every host in `hosts` holds exactly the SAs of the ring it reports (a rotation may be under way meanwhile). */
async function exactStates(c: ClusterLab, hosts = [0, 1, 2]): Promise<void> {
  for (const i of hosts)
    await eventually(async () => {
      const cur = await encryption(c.daemons[i], 'sec');
      assert.deepEqual(
        states(c, i).ids,
        expectedStates(
          i,
          hosts.filter((p) => p !== i),
          cur,
        ),
        `host ${i + 1}`,
      );
    }, VM_WAIT_MS);
}

/** The cluster's id of the host whose VTEP is ip (its record in the store). */
function hostId(c: ClusterLab, ip: string): string | undefined {
  const out = JSON.parse(etcdctl(c, 'get', '--prefix', '/cnmd/v1/hosts/', '-w', 'json'));
  for (const kv of out.kvs ?? []) {
    const h = JSON.parse(Buffer.from(kv.value, 'base64').toString());
    if (h.vtep === ip) return h.id;
  }
  return undefined;
}

/** /proc/net/xfrm_stat of a host netns. */
function xfrmStat(c: ClusterLab, i: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of c.hosts[i].run('cat', ['/proc/net/xfrm_stat']).split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k) out[k] = Number(v);
  }
  return out;
}
/** The counters that move when ESP or its policy loses a packet (no state for an SPI, a replayed/failed packet, blocked). */
const LOSS = [
  'XfrmInNoStates',
  'XfrmInStateProtoError',
  'XfrmInStateSeqError',
  'XfrmInStateInvalid',
  'XfrmInNoPols',
  'XfrmInTmplMismatch',
  'XfrmOutNoStates',
  'XfrmOutPolBlock',
  'XfrmOutStateSeqError',
];

/** A TCP stream of numbered 1 KB chunks from a sandbox to a counting server in another: bytes and order checked at the end. */
async function tcpStream(
  t: TestContext,
  from: Sb,
  to: Sb,
  port: number,
): Promise<{ stop(): Promise<{ sent: number; received: number; intact: boolean }> }> {
  const server = `let n = 0, bad = false, buf = Buffer.alloc(0), want = 0;
require('net').createServer((c) => c.on('data', (d) => { buf = Buffer.concat([buf, d]);
  while (buf.length >= 1024) { if (buf.readUInt32BE(0) !== want++) bad = true; buf = buf.subarray(1024); n++; } })
  .on('end', () => { console.log(JSON.stringify({ received: n, intact: !bad && buf.length === 0 })); process.exit(0); }))
  .listen(${port}, () => console.log('ready'));`;
  const client = `let i = 0, stop = false;
const c = require('net').connect(${port}, ${JSON.stringify(to.ip)}, () => {
  const tick = setInterval(() => { for (let k = 0; k < 4; k++) { const b = Buffer.alloc(1024); b.writeUInt32BE(i++); c.write(b); }
    if (stop) { clearInterval(tick); c.end(() => console.log(JSON.stringify({ sent: i }))); } }, 10); });
c.on('error', (e) => { console.log(JSON.stringify({ error: e.code })); process.exit(1); });
process.on('SIGINT', () => { stop = true; });`;
  const srv = spawn('nsenter', [`--net=${to.key}`, process.execPath, '-e', server], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => void (srv.exitCode === null && srv.kill('SIGKILL')));
  let srvOut = '';
  await new Promise<void>((resolve, reject) => {
    srv.stdout!.on('data', (d) => {
      srvOut += d;
      if (srvOut.includes('ready')) resolve();
    });
    srv.once('exit', (code) => reject(new Error(`tcp server exited ${code}`)));
  });
  const cl: ChildProcess = spawn('nsenter', [`--net=${from.key}`, process.execPath, '-e', client], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => void (cl.exitCode === null && cl.kill('SIGKILL')));
  let clOut = '';
  cl.stdout!.on('data', (d) => (clOut += d));
  const clExit = new Promise<void>((r) => cl.once('exit', () => r()));
  const srvExit = new Promise<void>((r) => srv.once('exit', () => r()));
  return {
    async stop() {
      cl.kill('SIGINT');
      await clExit;
      await srvExit;
      const s = JSON.parse(clOut.trim().split('\n').pop() || '{}');
      const r = JSON.parse(srvOut.replace('ready', '').trim().split('\n').pop() || '{}');
      assert.equal(s.error, undefined, `tcp client: ${clOut}`);
      return { sent: s.sent, received: r.received, intact: r.intact };
    },
  };
}

export function encryptedScenarios(): void {
  let sec: OverlayNet;
  let plain: OverlayNet;
  let sbs: Sb[] = [];
  let psbs: Sb[] = [];

  test('VM cluster, encrypted overlay: ping and TCP across hosts; the underlay carries only ESP for it and plain UDP 4789 for a plain network beside it; the kernel holds exactly the ring’s SAs', async (t) => {
    const c = await vmCluster();
    sec = await network(c.daemons[0], 'sec', '10.32.0.0/24', { encrypted: '' });
    plain = await network(c.daemons[1], 'plain2', '10.33.0.0/24');
    sbs = await meshOf(c, sec, 'sec', { ms: VM_WAIT_MS });
    psbs = await meshOf(c, plain, 'plain2', { ms: VM_WAIT_MS });
    const e = await settled(c, 'sec');
    mark(`encrypted mesh up, keys ${e.KeyTags} primary ${e.PrimaryKeyTag}`);

    const cap = await capture(t, c.underlay.path, 'br0', 'udp port 4789 or esp');
    await serve(t, sbs[1].key, 'tcp', 8080);
    for (const [a, b] of [
      [0, 1],
      [1, 2],
      [2, 0],
      [1, 0],
    ]) {
      await eventually(() => assert.ok(ping(sbs[a].key, sbs[b].ip), `sec ${a + 1} -> ${b + 1}`), VM_WAIT_MS);
      await eventually(
        () => assert.ok(ping(psbs[a].key, psbs[b].ip), `plain ${a + 1} -> ${b + 1}`),
        VM_WAIT_MS,
      );
    }
    const rt = roundTrip(sbs[0].key, 'tcp', sbs[1].ip, 8080, 20_000);
    assert.ok(rt.ok, 'TCP echo over the encrypted network');
    assert.equal(rt.seenFrom, sbs[0].ip);
    for (let i = 0; i < 3; i++)
      for (let j = 0; j < 3; j++) {
        if (i === j) continue;
        await eventually(() => {
          const txt = cap.text();
          assert.match(txt, new RegExp(`${re(hostAddr(i + 1))} > ${re(hostAddr(j + 1))}: ESP\\(spi=0x`));
          assert.match(
            txt,
            new RegExp(
              `${re(hostAddr(i + 1))}\\.\\d+ > ${re(hostAddr(j + 1))}\\.4789: VXLAN[^\\n]*vni ${plain.vni}\\b`,
            ),
          );
        }, VM_WAIT_MS);
      }
    const seen = await cap.stop();
    assert.doesNotMatch(seen, new RegExp(`vni ${sec.vni}\\b`), 'no cleartext VXLAN of the encrypted network');
    assert.doesNotMatch(seen, /10\.32\.0\./, 'no address of the encrypted network on the wire');
    // The ring's SAs exactly, on every host (ESN, cnmd's reqid); nothing else of cnmd's.
    await exactStates(c);
    for (let i = 0; i < 3; i++) assert.match(c.hosts[i].run('ip', ['xfrm', 'state']), /flag esn/);
  });

  test('VM cluster, encrypted overlay: forged cleartext VXLAN with its VNI, from an extra netns, with its own address and spoofing a peer host’s, never reaches a sandbox (the plain network’s does)', async (t) => {
    const c = await vmCluster();
    const x = await c.attach('x2', '192.0.2.67');
    const sink = await udpSink(t, sbs[0].key, 7777);
    const psink = await udpSink(t, psbs[0].key, 7777);
    const tok = (s: string) => `${s}-${randomBytes(4).toString('hex')}`;
    const forged = [tok('forged-x'), tok('forged-as-h2')];
    const control = tok('forged-plain');
    const legit = tok('legit');
    const frame = (vni: number, sb: Sb, payload: string) =>
      forgedVxlan({
        vni,
        dstMac: sb.mac,
        src: vni === sec.vni ? '10.32.0.250' : '10.33.0.250',
        dst: sb.ip,
        port: 7777,
        payload: Buffer.from(payload),
      });
    await eventually(() => {
      // The encrypted VNI's first, on the same path as the control that must arrive.
      sendUdp(x.path, hostAddr(1), 4789, frame(sec.vni, sbs[0], forged[0]));
      sendUdpSpoofed(x.path, hostAddr(2), hostAddr(1), 4789, frame(sec.vni, sbs[0], forged[1]));
      sendUdp(x.path, hostAddr(1), 4789, frame(plain.vni, psbs[0], control));
      sendUdp(sbs[1].key, sbs[0].ip, 7777, Buffer.from(legit));
      assert.ok(psink.received().includes(control), 'the plain network’s forged datagram arrived');
      assert.ok(sink.received().includes(legit), 'a real datagram over the encrypted network arrived');
    }, VM_WAIT_MS);
    for (const f of forged)
      assert.ok(!sink.received().includes(f), `${f} reached the sandbox: ${sink.received()}`);
  });

  test('VM cluster, encrypted overlay: a rotation under ping at 100/s and a TCP stream loses nothing; no ESP error counter moves', async (t) => {
    const c = await vmCluster();
    await settled(c, 'sec');
    const before = [0, 1, 2].map((i) => xfrmStat(c, i));
    const pings = [pinger(sbs[0].key, sbs[1].ip), pinger(sbs[2].key, sbs[0].ip)];
    const stream = await tcpStream(t, sbs[1], sbs[2], 9090);
    await rotations(c, 'sec', 1);
    // A moment on the new key before stopping: the last replies are in.
    await eventually(() => assert.ok(ping(sbs[0].key, sbs[1].ip)), VM_WAIT_MS);
    const got = await Promise.all(pings.map((p) => p.stop()));
    const tcp = await stream.stop();
    for (const [k, g] of got.entries()) {
      mark(
        `pinger ${k}: ${g.sent} sent, ${g.answered} answered, highest ${g.highest}, lost ${g.lost.length}`,
      );
      assert.ok(g.highest > 100, `pinger ${k} ran: ${g.highest}`);
      assert.deepEqual(g.lost, [], `pinger ${k} lost ${g.lost.length} of ${g.highest}`);
    }
    mark(`tcp: ${tcp.sent} chunks sent, ${tcp.received} received, intact ${tcp.intact}`);
    assert.equal(tcp.received, tcp.sent);
    assert.ok(tcp.intact);
    const after = [0, 1, 2].map((i) => xfrmStat(c, i));
    for (let i = 0; i < 3; i++)
      for (const k of LOSS) assert.equal(after[i][k] ?? 0, before[i][k] ?? 0, `host ${i + 1} ${k}`);
    await exactStates(c);
  });

  test('VM cluster, encrypted overlay: the store holds no key material in clear', async () => {
    const c = await vmCluster();
    // Every key the kernels use (hex, from ip xfrm state) and the cluster secret itself.
    const secrets = new Set<string>();
    for (let i = 0; i < 3; i++) for (const k of states(c, i).keys) secrets.add(k);
    assert.ok(secrets.size >= 6, `keys found: ${secrets.size}`);
    const material = [...secrets].map((h) => Buffer.from(h, 'hex'));
    material.push(fs.readFileSync(c.secretFile!));
    const dump = etcdctl(c, 'get', '--prefix', '/');
    assert.match(dump, /enc\/ring/, 'the ring is in the store');
    const texts = [dump];
    // Base64 inside JSON values, decoded, too.
    for (const m of dump.matchAll(/[A-Za-z0-9+/]{20,}={0,2}/g))
      texts.push(Buffer.from(m[0], 'base64').toString('latin1'));
    for (const m of dump.matchAll(/[0-9a-f]{32,}/g)) texts.push(Buffer.from(m[0], 'hex').toString('latin1'));
    for (const key of material)
      for (let off = 0; off + 12 <= key.length; off += 12) {
        const piece = key.subarray(off, off + 12);
        for (const txt of texts) {
          assert.ok(!txt.includes(piece.toString('latin1')), `key bytes at ${off} found in the store`);
          assert.ok(!txt.toLowerCase().includes(piece.toString('hex')), 'key hex found in the store');
        }
        assert.ok(!dump.includes(piece.toString('base64').slice(0, 12)), 'key base64 found in the store');
      }
  });

  test('VM cluster, encrypted overlay: a host with a wrong cluster secret is refused with a clear error and disturbs no one', async (t) => {
    const c = await vmCluster();
    const wrong = path.join(c.lab.root, 'wrong-secret');
    fs.writeFileSync(wrong, randomBytes(64), { mode: 0o600 });
    const h4 = await c.attach('h4', hostAddr(4));
    const d4 = await startDaemon(t, c.lab, {
      hostNs: h4,
      readyMs: VM_READY_MS,
      args: [
        '--cluster-store',
        c.storeUrl,
        '--cluster-ttl',
        '10',
        '--netns-pool-size',
        '0',
        '--cluster-secret-file',
        wrong,
        '--encryption-key-rotation',
        ROTATION,
      ],
    });
    try {
      // Once its ring agent has read the ring: refused, naming the flag (a host whose secret does not open
      // the ring does not make the cluster's encrypted networks either: 'sec' is not joinable there).
      await eventually(async () => {
        const r = await d4.request('POST', '/networks/create', {
          Name: 'sec4',
          Driver: 'overlay',
          Options: { encrypted: '' },
        });
        assert.equal(r.status, 403, JSON.stringify(r.body));
        assert.match(r.body.message, /does not open with this host's --cluster-secret-file/);
      }, VM_WAIT_MS);
      const j = await d4.request('POST', '/sandboxes', { Name: 'sec-s4', Networks: [{ Network: 'sec' }] });
      assert.ok(j.status >= 400, JSON.stringify(j.body));
      // It neither acked nor led, its lease notwithstanding: the others rotate and talk.
      const id4 = await eventually(() => {
        const id = hostId(c, hostAddr(4));
        assert.ok(id, 'host 4 is a member');
        return id;
      }, VM_WAIT_MS);
      assert.doesNotMatch(etcdctl(c, 'get', '--prefix', '--keys-only', '/cnmd/v1/enc/'), new RegExp(id4));
      assert.equal(states(c, 0).ids.filter((s) => s.includes(hostAddr(4))).length, 0);
      await rotations(c, 'sec', 1);
      assert.ok(ping(sbs[0].key, sbs[1].ip));
      assert.ok(ping(sbs[2].key, sbs[0].ip));
    } finally {
      await d4.kill();
    }
  });

  test('VM cluster, encrypted overlay: a host down through two rotations comes back and talks', async () => {
    const c = await vmCluster();
    await settled(c, 'sec');
    await c.daemons[2].kill();
    runIn(c.underlay.path, 'ip', ['link', 'set', 'u3', 'down']);
    mark('host 3 down');
    await rotations(c, 'sec', 2, [0, 1]);
    assert.ok(ping(sbs[0].key, sbs[1].ip));
    runIn(c.underlay.path, 'ip', ['link', 'set', 'u3', 'up']);
    await c.restart(2);
    mark('host 3 back');
    // Caught up: the same ring as the others, exactly its SAs.
    await settled(c, 'sec');
    await exactStates(c);
    for (const [a, b] of [
      [2, 0],
      [0, 2],
      [2, 1],
      [1, 2],
    ])
      await eventually(() => assert.ok(ping(sbs[a].key, sbs[b].ip), `${a + 1} -> ${b + 1}`), VM_WAIT_MS);
  });

  test('VM cluster, encrypted overlay: cnmd SIGKILLed during a rotation recovers: the ring completes, the kernel holds exactly its SAs, traffic flows', async (t) => {
    const c = await vmCluster();
    await settled(c, 'sec');
    // The ring's phase as etcd streams it: the kill lands while a rotation is under way.
    const w = etcdWatch(c, '/cnmd/v1/enc/ring');
    await eventually(() => assert.match(w.text(), /"phase":"(installing|switching)"/), ROTATION_WAIT_MS);
    const out = w.text();
    w.stop();
    await c.daemons[1].kill();
    mark(`host 2 killed in phase ${/"phase":"(\w+)"/.exec(out)?.[1]}`);
    await c.restart(1);
    await settled(c, 'sec');
    await exactStates(c);
    for (const [a, b] of [
      [1, 0],
      [0, 1],
      [1, 2],
      [2, 1],
    ])
      await eventually(() => assert.ok(ping(sbs[a].key, sbs[b].ip), `${a + 1} -> ${b + 1}`), VM_WAIT_MS);
  });
}
