// DNS packet fuzz from a seed: malformed and mutated queries to 127.0.0.11 over
// UDP, and broken framing over TCP, from inside a sandbox; then real queries
// from it and from another sandbox are still answered, over UDP and TCP.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { eventually, lab } from '../lib/fixture';
import { startDaemon } from '../lib/daemon';
import { assertInvariants } from '../lib/invariants';
import { chaosRng } from '../lib/seed';

const UDP_PACKETS = Number(process.env.CHAOS_DNS_PACKETS || 20000);

// Seeded in python too, so CHAOS_SEED replays the same packets.
const FUZZER = `
import random, socket, struct, sys, time
seed, name, udp_n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
r = random.Random(seed)
def qname(n):
    return b''.join(bytes([len(p)]) + p.encode() for p in n.split('.')) + b'\\0'
def query(i, qtype=1, qd=1):
    return struct.pack('>HHHHHH', i & 0xffff, 0x0100, qd, 0, 0, 0) + qname(name) + struct.pack('>HH', qtype, 1)
def mutant(i):
    q = bytearray(query(i, r.choice([1, 28, 12, 15, 16, 33, 255, 0, 65535]), r.choice([1, 1, 0, 2, 65535])))
    k = r.randrange(9)
    if k == 0: return bytes(r.randrange(256) for _ in range(r.randrange(0, 600)))
    if k == 1: return bytes(q[:r.randrange(len(q))])
    if k == 2:
        for _ in range(r.randrange(1, 8)): q[r.randrange(len(q))] = r.randrange(256)
        return bytes(q)
    if k == 3: return bytes(q[:12]) + b'\\xc0\\x0c' + b'\\x00\\x01\\x00\\x01'          # name pointing at itself
    if k == 4: return bytes(q[:12]) + (b'\\x3f' + b'a' * 63) * 5 + b'\\0\\0\\1\\0\\1'  # name over 255
    if k == 5: return bytes(q) + bytes(r.randrange(256) for _ in range(r.randrange(1, 3000)))
    if k == 6: q[2] = r.randrange(256); q[3] = r.randrange(256); return bytes(q)          # flags/opcode
    if k == 7: return bytes(q[:12]) + b'\\x01' * r.randrange(1, 300)
    return bytes(q) * r.randrange(1, 20)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setblocking(False)
for i in range(udp_n):
    try: u.sendto(mutant(i), ('127.0.0.11', 53))
    except BlockingIOError: time.sleep(0.001)
    except OSError: pass
    if i % 200 == 0:
        try:
            while True: u.recv(65535)
        except BlockingIOError: pass
tcp_cases = 0
for i in range(300):
    s = socket.socket(); s.settimeout(2)
    try:
        s.connect(('127.0.0.11', 53))
        k = r.randrange(6)
        q = query(i)
        if k == 0: s.sendall(b'\\xff\\xff' + bytes(r.randrange(256) for _ in range(100)))   # length larger than sent
        elif k == 1: s.sendall(struct.pack('>H', 0))                                           # empty message
        elif k == 2: s.sendall(struct.pack('>H', len(q))[:1])                                  # half a length
        elif k == 3: s.sendall(struct.pack('>H', len(q)) + q[:5])                              # truncated
        elif k == 4: s.sendall(bytes(r.randrange(256) for _ in range(r.randrange(1, 5000))))
        else: s.sendall(b''.join(struct.pack('>H', len(m)) + m for m in (mutant(j) for j in range(50))))
        tcp_cases += 1
    except OSError: pass
    finally: s.close()
print(udp_n, tcp_cases)
`;

function run(nsPath: string, cmd: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(
      'nsenter',
      [`--net=${nsPath}`, cmd, ...args],
      { encoding: 'utf8', timeout: timeoutMs },
      (e, out, err) => (e ? reject(new Error(`${cmd}: ${e.message}\n${err}`)) : resolve(out.trim())),
    ),
  );
}

const dig = (ns: string, name: string, tcp: boolean) =>
  run(ns, 'dig', ['@127.0.0.11', '+short', '+time=2', '+tries=2', ...(tcp ? ['+tcp'] : []), name], 15_000);

test(`DNS fuzz: ${UDP_PACKETS} malformed UDP packets and 300 broken TCP streams, then real queries answered`, async (t) => {
  const r = chaosRng(t);
  const l = await lab(t);
  const d = await startDaemon(t, l);
  assert.equal(
    (
      await d.request('POST', '/networks/create', {
        Name: 'web',
        IPAM: { Config: [{ Subnet: '10.90.0.0/24' }] },
      })
    ).status,
    201,
  );
  const sb = async (name: string) => {
    assert.equal(
      (await d.request('POST', '/sandboxes', { Name: name, Networks: [{ Network: 'web' }] })).status,
      201,
    );
    return (await d.request('GET', `/sandboxes/${name}`)).body;
  };
  const fuzzer = await sb('fuzzer');
  const other = await sb('other');
  const out = await run(
    fuzzer.SandboxKey,
    'python3',
    ['-c', FUZZER, String(r.seed), 'other.web', String(UDP_PACKETS)],
    120_000,
  );
  t.diagnostic(`sent (udp packets, tcp streams): ${out}`);
  const want = { fuzzer: fuzzer.Networks.web.IPAddress, other: other.Networks.web.IPAddress };
  // Another sandbox is answered at once; the fuzzer's own TCP resolver may still be holding the
  // fuzzer's stalled connections (64 per sandbox, closed after 5 s stalled): it hurt itself only.
  for (const tcp of [false, true])
    assert.equal(
      await dig(other.SandboxKey, 'fuzzer', tcp),
      want.fuzzer,
      `another sandbox's resolver (tcp ${tcp})`,
    );
  assert.equal(await dig(fuzzer.SandboxKey, 'other', false), want.other, "the fuzzer's own resolver (UDP)");
  await eventually(async () => assert.equal(await dig(fuzzer.SandboxKey, 'other', true), want.other), 20_000);
  assert.equal((await d.request('GET', '/_ping')).status, 200);
  await assertInvariants(d);
});
