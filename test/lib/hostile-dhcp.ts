// A hostile DHCP server on a test LAN: a small UDP responder (Python, raw
// BOOTP bytes) in the LAN's netns, whose answers the test scripts through a
// JSON file read again at every request (so a test turns renewals into NAKs
// mid-way). Before each real answer it can send junk a client must survive:
// truncated packets, options running past the end, the wrong xid, chaddr or
// client id, addresses nobody may hold, a ~30 KB reply; after it, a flood of
// 200 OFFERs for other transactions.
// It logs every request it gets (its own account of what the client sent).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChildProcess, spawn } from 'node:child_process';
import type { TestContext } from 'node:test';
import { eventually, type Lab, type Ns } from './fixture';

export interface HostileDhcpConfig {
  /** The address the server speaks from (option 54). */
  server: string;
  /** Addresses handed out, one per client id in order (all clients get the first with sameAddress). */
  pool: string[];
  sameAddress?: boolean;
  /** Option 1, as 4 bytes in dotted form (may be non-contiguous). */
  mask: string;
  routers: string[];
  dns: string[];
  /** Option 15 and option 12 (text, may hold newlines). */
  domain?: string;
  hostname?: string;
  /** Options 51, 58, 59 (absent when undefined). */
  lease?: number;
  t1?: number;
  t2?: number;
  /** Junk sent before every real answer (and a flood after it). */
  junk?: boolean;
  /** How a renewal (a REQUEST with ciaddr) is answered: ACK, NAK, ACK of another address, nothing. */
  renew?: 'ack' | 'nak' | 'other' | 'silent';
}

export interface DhcpRequest {
  type: number;
  xid: number;
  ciaddr: string;
  requested?: string;
  clientId: string;
  at: number;
}

export interface HostileDhcp {
  ns: Ns;
  set(c: Partial<HostileDhcpConfig>): void;
  requests(): DhcpRequest[];
  stop(): Promise<void>;
}

const RESPONDER = String.raw`
import json, socket, struct, sys, time
cfg_path, log_path, iface = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, 25, iface.encode())
s.bind(('0.0.0.0', 67))
log = open(log_path, 'a', buffering=1)
given = {}
nakd = set()
def A(ip): return socket.inet_aton(ip)
def opts(b):
    i, out = 240, {}
    while i < len(b):
        c = b[i]; i += 1
        if c == 0: continue
        if c == 255 or i >= len(b): break
        l = b[i]; i += 1
        out[c] = b[i:i + l]; i += l
    return out
def opt(code, data): return bytes([code, len(data)]) + data
def head(req, yiaddr, xid=None, chaddr=None):
    h = bytearray(240)
    h[0], h[1], h[2] = 2, 1, 6
    h[4:8] = req[4:8] if xid is None else struct.pack('!I', xid)
    h[10:12] = req[10:12]
    h[16:20] = A(yiaddr)
    h[28:44] = req[28:44] if chaddr is None else chaddr
    h[236:240] = b'\x63\x82\x53\x63'
    return bytes(h)
def body(c, typ, yiaddr, cid):
    o = opt(53, bytes([typ])) + opt(54, A(c['server']))
    if typ == 6: return o + opt(56, b'no\nway\x00') + b'\xff'
    if cid is not None: o += opt(61, cid)
    o += opt(1, A(c['mask']))
    if c['routers']: o += opt(3, b''.join(A(r) for r in c['routers']))
    if c['dns']: o += opt(6, b''.join(A(r) for r in c['dns']))
    if c.get('domain') is not None: o += opt(15, c['domain'].encode())
    if c.get('hostname') is not None: o += opt(12, c['hostname'].encode())
    for code, k in ((51, 'lease'), (58, 't1'), (59, 't2')):
        if c.get(k) is not None: o += opt(code, struct.pack('!I', c[k]))
    return o + b'\xff'
def send(pkt, to):
    try: s.sendto(pkt, (to, 68))
    except OSError as e: print('send', e, file=sys.stderr)
def junk(c, req, typ, yiaddr, cid, to):
    real = head(req, yiaddr) + body(c, typ, yiaddr, cid)
    xid = struct.unpack('!I', req[4:8])[0]
    send(real[:100], to)
    send(real[:239], to)
    send(head(req, yiaddr) + bytes([53, 1, typ, 54, 200, 1, 2, 3]), to)
    send(head(req, yiaddr) + bytes([53, 1, typ, 3, 8, 1, 2]), to)
    send(head(req, '10.99.99.99', xid=(xid + 1) & 0xffffffff) + body(c, typ, '10.99.99.99', cid), to)
    send(head(req, '10.99.99.98', chaddr=b'\x02' * 16) + body(c, typ, '10.99.99.98', cid), to)
    send(head(req, '10.99.99.97') + body(c, typ, '10.99.99.97', b'\x00not-yours'), to)
    for bad in ('127.0.0.5', '0.0.0.0', '224.0.0.1', '255.255.255.255'):
        send(head(req, bad) + body(c, typ, bad, cid), to)
    big = head(req, '10.99.99.96', xid=(xid + 999) & 0xffffffff) + b''.join(opt(43, bytes([i % 256]) * 255) for i in range(120)) + b'\xff'
    send(big, to)
def flood(c, req, cid, to):
    # After the real answer: a flood before it would overflow the client's socket buffer (the LAN can always
    # drown a client; what is checked is that junk is never taken).
    xid = struct.unpack('!I', req[4:8])[0]
    for i in range(200):
        send(head(req, '10.99.98.%d' % (i % 250 + 1), xid=(xid + 2 + i) & 0xffffffff) + body(c, 2, '10.99.98.1', cid), to)
while True:
    req, src = s.recvfrom(65535)
    if len(req) < 240 or req[0] != 1: continue
    o = opts(req)
    typ = o.get(53, b'\x00')[0]
    cid = o.get(61)
    key = (cid or req[28:34]).hex()
    ciaddr = socket.inet_ntoa(req[12:16])
    requested = socket.inet_ntoa(o[50]) if 50 in o and len(o[50]) == 4 else None
    log.write(json.dumps({'type': typ, 'xid': struct.unpack('!I', req[4:8])[0], 'ciaddr': ciaddr,
        'requested': requested, 'clientId': key, 'at': time.time()}) + '\n')
    with open(cfg_path) as f: c = json.load(f)
    if typ == 7: continue
    if key not in given:
        given[key] = c['pool'][0] if c.get('sameAddress') else c['pool'][len(given) % len(c['pool'])]
    yiaddr = given[key]
    bcast = ciaddr == '0.0.0.0'
    to = '255.255.255.255' if bcast else ciaddr
    if typ == 1: answer = 2
    elif typ == 3 and not bcast:
        mode = c.get('renew', 'ack')
        if mode == 'silent': continue
        if mode == 'nak':
            others = [p for p in c['pool'] if p not in given.values()]
            if others: given[key] = others[0]
            answer = 6
        elif mode == 'other':
            yiaddr = [p for p in c['pool'] if p != yiaddr][0]
            answer = 5
        else: answer = 5
    elif typ == 3: answer = 5
    else: continue
    if c.get('junk'): junk(c, req, answer, yiaddr, cid, to)
    send(head(req, yiaddr) + body(c, answer, yiaddr, cid), to)
    if c.get('junk'): flood(c, req, cid, to)
`;

/**
 * The hostile server on `iface` of `ns` (which must hold `c.server`), until
 * the test ends.
 */
export async function hostileDhcp(
  t: TestContext,
  l: Lab,
  ns: Ns,
  iface: string,
  c: HostileDhcpConfig,
): Promise<HostileDhcp> {
  const dir = fs.mkdtempSync(path.join(l.root, 'hostile-dhcp-'));
  const cfgPath = path.join(dir, 'config.json');
  const logPath = path.join(dir, 'requests');
  let cfg = { ...c };
  const write = () => fs.writeFileSync(`${cfgPath}.tmp`, JSON.stringify(cfg));
  write();
  fs.renameSync(`${cfgPath}.tmp`, cfgPath);
  fs.writeFileSync(logPath, '');
  let stderr = '';
  const p: ChildProcess = spawn(
    'nsenter',
    [`--net=${ns.path}`, 'python3', '-c', RESPONDER, cfgPath, logPath, iface],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  p.stderr!.on('data', (d) => (stderr += d));
  const stop = async () => {
    if (p.exitCode !== null || p.signalCode !== null) return;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await gone;
  };
  l.beforeCleanup(stop);
  void t;
  // Listening once port 67 is bound in its netns.
  await eventually(() => {
    if (p.exitCode !== null) throw new Error(`hostile dhcp exited ${p.exitCode}: ${stderr}`);
    if (!/:67\b/.test(ns.run('ss', ['-Hlun', 'sport', '= :67']))) throw new Error('not listening yet');
  }, 10_000);
  return {
    ns,
    set(more) {
      cfg = { ...cfg, ...more };
      write();
      fs.renameSync(`${cfgPath}.tmp`, cfgPath);
    },
    requests: () =>
      fs
        .readFileSync(logPath, 'utf8')
        .split('\n')
        .filter((x) => x.trim())
        .map((x) => JSON.parse(x)),
    stop,
  };
}
