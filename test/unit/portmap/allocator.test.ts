// Host port allocation (src/portmap/allocator.ts): conflicts with Linux bind semantics,
// ephemeral ports from ip_local_port_range, ranges stored as intervals, host listeners
// read from /proc/net files. The /proc trees here are fixture directories; no root.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CnmdError } from '../../../src/errors';
import {
  DEFAULT_EPHEMERAL_RANGE,
  PortAllocator,
  formatPortSpec,
  parsePortRangeSysctl,
  parsePortSpec,
  parsePortSpecs,
  parseProcNet,
  parseReservedPorts,
  parseSctpEps,
  readHostListeners,
  type PortBinding,
} from '../../../src/portmap';

const P = (...specs: string[]): PortBinding[] => parsePortSpecs(specs);
const texts = (bs: PortBinding[]) => bs.map((b) => formatPortSpec(b));

/** /proc/net address hex of an IPv4 address, in this machine's byte order. */
function hex4(ip: string, endianness = os.endianness()): string {
  const b = ip.split('.').map(Number);
  const bytes = endianness === 'LE' ? b.reverse() : b;
  return bytes
    .map((x) => x.toString(16).padStart(2, '0'))
    .join('')
    .toUpperCase();
}

/** IPv6 in /proc/net hex: four 32-bit words, each in host byte order. */
function hex6(groups: number[], endianness = os.endianness()): string {
  let out = '';
  for (let w = 0; w < 4; w++) {
    const bytes = [
      groups[2 * w] >> 8,
      groups[2 * w] & 0xff,
      groups[2 * w + 1] >> 8,
      groups[2 * w + 1] & 0xff,
    ];
    out += (endianness === 'LE' ? bytes.reverse() : bytes)
      .map((x) => x.toString(16).padStart(2, '0'))
      .join('');
  }
  return out.toUpperCase();
}

const TCP_HEADER =
  '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode';
const UDP_HEADER =
  '   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops';

function line(i: number, local: string, port: number, st: string, remote = '00000000:0000'): string {
  const p = port.toString(16).toUpperCase().padStart(4, '0');
  return `   ${i}: ${local}:${p} ${remote} ${st} 00000000:00000000 00:00000000 00000000     0        0 ${1000 + i} 1 0000000000000000 100 0 0 10 0`;
}

interface ProcTree {
  root: string;
  write(rel: string, text: string): void;
}

function procTree(t: TestContext, files: Record<string, string> = {}): ProcTree {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cnmd-proc-'));
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  const write = (rel: string, text: string) => {
    fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    fs.writeFileSync(path.join(root, rel), text);
  };
  write('sys/net/ipv4/ip_local_port_range', '32768\t60999\n');
  write('sys/net/ipv4/ip_local_reserved_ports', '\n');
  write('net/tcp', TCP_HEADER + '\n');
  write('net/tcp6', TCP_HEADER + '\n');
  write('net/udp', UDP_HEADER + '\n');
  write('net/udp6', UDP_HEADER + '\n');
  for (const [k, v] of Object.entries(files)) write(k, v);
  return { root, write };
}

async function rejects(p: Promise<unknown>, code: string, re: RegExp): Promise<CnmdError> {
  let err: unknown;
  await p.then(
    () => assert.fail('expected a rejection'),
    (e) => (err = e),
  );
  assert.ok(err instanceof CnmdError, String(err));
  assert.equal(err.code, code, err.message);
  assert.match(err.message, re);
  return err;
}

// ---- /proc parsing ----------------------------------------------------------------------------

test('parseProcNet: TCP LISTEN sockets only, both byte orders, IPv6 and v4-mapped', () => {
  const text = [
    TCP_HEADER,
    // Captured on this machine: 0.0.0.0:2024 LISTEN.
    '   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1145 1 000000001465f435 100 0 0 10 0',
    line(1, '0100007F', 8080, '0A'),
    line(2, '0100007F', 8081, '01', '0100007F:9999'), // ESTABLISHED: not a listener
    line(3, '0100007F', 8082, '06'), // TIME_WAIT
  ].join('\n');
  assert.deepEqual(parseProcNet(text, 'tcp', 'LE'), [
    { proto: 'tcp', family: 'ipv4', ip: '0.0.0.0', port: 2024 },
    { proto: 'tcp', family: 'ipv4', ip: '127.0.0.1', port: 8080 },
  ]);
  assert.deepEqual(parseProcNet(line(0, '7F000001', 80, '0A'), 'tcp', 'BE'), [
    { proto: 'tcp', family: 'ipv4', ip: '127.0.0.1', port: 80 },
  ]);
  const v6 = [
    TCP_HEADER,
    line(0, '00000000000000000000000000000000', 443, '0A'),
    line(1, hex6([0, 0, 0, 0, 0, 0, 0, 1], 'LE'), 444, '0A'),
    line(2, hex6([0xfd00, 0, 0, 0, 0, 0, 0, 0x12], 'LE'), 445, '0A'),
    line(3, hex6([0, 0, 0, 0, 0, 0xffff, 0x0a00, 0x0001], 'LE'), 446, '0A'),
  ].join('\n');
  assert.deepEqual(parseProcNet(v6, 'tcp6', 'LE'), [
    { proto: 'tcp', family: 'ipv6', ip: '::', port: 443 },
    { proto: 'tcp', family: 'ipv6', ip: '::1', port: 444 },
    { proto: 'tcp', family: 'ipv6', ip: 'fd00::12', port: 445 },
    { proto: 'tcp', family: 'ipv4', ip: '10.0.0.1', port: 446 },
  ]);
  assert.deepEqual(
    parseProcNet(line(0, hex6([0xfd00, 0, 0, 0, 0, 0, 0, 0x12], 'BE'), 445, '0A'), 'tcp6', 'BE')[0].ip,
    'fd00::12',
  );
});

test('parseProcNet: UDP unconnected sockets only; garbage lines are skipped', () => {
  const text = [
    UDP_HEADER,
    line(0, '00000000', 53, '07'),
    line(1, '0100007F', 5353, '01', '0101A8C0:0035'),
    'garbage',
    '  9: zz:zz 0 07',
  ].join('\n');
  assert.deepEqual(parseProcNet(text, 'udp', 'LE'), [
    { proto: 'udp', family: 'ipv4', ip: '0.0.0.0', port: 53 },
  ]);
});

test('parseSctpEps: every bound address of an endpoint', () => {
  const text = [
    ' ENDPT     SOCK   STY SST HBKT LPORT   UID INODE LADDRS',
    'ffff88810a2c4000 ffff888109a8c000 1   10  20   9      0    31234 10.0.0.1 192.168.1.5 ',
    'ffff88810a2c5000 ffff888109a8d000 1   10  21   5000   0    31235 0.0.0.0 ',
    'ffff88810a2c6000 ffff888109a8e000 1   10  22   5001   0    31236 0000:0000:0000:0000:0000:0000:0000:0001 ',
  ].join('\n');
  assert.deepEqual(parseSctpEps(text), [
    { proto: 'sctp', family: 'ipv4', ip: '10.0.0.1', port: 9 },
    { proto: 'sctp', family: 'ipv4', ip: '192.168.1.5', port: 9 },
    { proto: 'sctp', family: 'ipv4', ip: '0.0.0.0', port: 5000 },
    { proto: 'sctp', family: 'ipv6', ip: '::1', port: 5001 },
  ]);
});

test('sysctl parsers', () => {
  assert.deepEqual(parsePortRangeSysctl('32768\t60999\n'), { start: 32768, end: 60999 });
  assert.deepEqual(parsePortRangeSysctl('1024 1024'), { start: 1024, end: 1024 });
  assert.equal(parsePortRangeSysctl('60999 32768'), undefined);
  assert.equal(parsePortRangeSysctl('nope'), undefined);
  assert.deepEqual(parseReservedPorts('\n'), []);
  assert.deepEqual(parseReservedPorts('8080,9000-9010\n'), [
    { start: 8080, end: 8080 },
    { start: 9000, end: 9010 },
  ]);
});

test('readHostListeners reads tcp, tcp6, udp, udp6 of a proc tree; missing files are no sockets', async (t) => {
  const tree = procTree(t, {
    'net/tcp': [TCP_HEADER, line(0, hex4('0.0.0.0'), 8080, '0A')].join('\n'),
    'net/udp6': [UDP_HEADER, line(0, hex6([0, 0, 0, 0, 0, 0, 0, 1]), 5353, '07')].join('\n'),
  });
  fs.rmSync(path.join(tree.root, 'net/tcp6'));
  assert.deepEqual(await readHostListeners(path.join(tree.root, 'net')), [
    { proto: 'tcp', family: 'ipv4', ip: '0.0.0.0', port: 8080 },
    { proto: 'udp', family: 'ipv6', ip: '::1', port: 5353 },
  ]);
  assert.deepEqual(await readHostListeners(path.join(tree.root, 'net'), ['udp']), [
    { proto: 'udp', family: 'ipv6', ip: '::1', port: 5353 },
  ]);
  // This process's own netns view works too (whatever it holds).
  assert.ok(Array.isArray(await readHostListeners()));
});

// ---- reservations and conflicts ------------------------------------------------------------------

function allocator(t: TestContext, files: Record<string, string> = {}): { a: PortAllocator; tree: ProcTree } {
  const tree = procTree(t, files);
  return { a: new PortAllocator({ procRoot: tree.root }), tree };
}

test('exact ports are reserved and returned unchanged; the same port twice conflicts', async (t) => {
  const { a } = allocator(t);
  assert.deepEqual(texts(await a.reserve('ctr1', P('8080:80', '8080:80/udp', '127.0.0.1:9090:90'))), [
    '8080:80/tcp',
    '8080:80/udp',
    '127.0.0.1:9090:90/tcp',
  ]);
  const e = await rejects(
    a.reserve('ctr2', P('8080:81')),
    'CONFLICT',
    /port 8080\/tcp is already published \(0\.0\.0\.0:8080\/tcp by endpoint ctr1\); cannot publish 8080:81\/tcp/,
  );
  assert.equal(e.details.owner, 'ctr1');
  // The same owner cannot publish it twice either, nor twice in one call.
  await rejects(a.reserve('ctr1', P('8080:80')), 'CONFLICT', /already published/);
  await rejects(
    a.reserve('ctr3', P('7070:70', '7070:71')),
    'CONFLICT',
    /port 7070\/tcp is already published \(0\.0\.0\.0:7070\/tcp by another binding of the same request\)/,
  );
  // With the daemon's naming, the message names the sandbox, not the endpoint id.
  a.describeOwner = (owner) => (owner === 'ctr1' ? 'sandbox "web1"' : undefined);
  await rejects(
    a.reserve('ctr4', P('8080:82')),
    'CONFLICT',
    /port 8080\/tcp is already published \(0\.0\.0\.0:8080\/tcp by sandbox "web1"\); cannot publish 8080:82\/tcp/,
  );
  // Another protocol is another port.
  assert.deepEqual(texts(await a.reserve('ctr2', P('9090:90/udp'))), ['9090:90/udp']);
});

test('bind semantics: wildcard vs specific addresses, per family', async (t) => {
  const { a } = allocator(t);
  await a.reserve('spec', P('127.0.0.1:8080:80'));
  // 0.0.0.0 and '' cover 127.0.0.1; another specific address does not.
  await rejects(a.reserve('x', P('0.0.0.0:8080:80')), 'CONFLICT', /127\.0\.0\.1:8080\/tcp by endpoint spec/);
  await rejects(a.reserve('x', P('8080:80')), 'CONFLICT', /127\.0\.0\.1:8080/);
  await a.reserve('other', P('127.0.0.2:8080:80', '192.168.1.5:8080:80'));
  // IPv6 is another family: [::]:8080 and [::1]:8080 are free.
  await a.reserve('v6', P('[::]:8080:80'));
  await rejects(a.reserve('x', P('[::1]:8080:80')), 'CONFLICT', /\[::\]:8080\/tcp by endpoint v6/);

  const { a: b } = allocator(t);
  await b.reserve('all', P('9000:90'));
  await rejects(b.reserve('x', P('10.0.0.1:9000:90')), 'CONFLICT', /0\.0\.0\.0:9000\/tcp by endpoint all/);
  await rejects(b.reserve('x', P('[fd00::1]:9000:90')), 'CONFLICT', /\[::\]:9000\/tcp by endpoint all/);
  await rejects(b.reserve('x', P('[::]:9000:90')), 'CONFLICT', /by endpoint all/);
});

test('host_binding_ipv4: a binding on every address occupies that IPv4 address and ::', async (t) => {
  const { a } = allocator(t);
  await a.reserve('n1', P('8080:80'), { hostBindingIPv4: '192.168.1.5' });
  await a.reserve('n2', P('10.0.0.1:8080:80')); // another IPv4 address: free
  await rejects(
    a.reserve('n3', P('192.168.1.5:8080:80')),
    'CONFLICT',
    /192\.168\.1\.5:8080\/tcp by endpoint n1/,
  );
  await rejects(a.reserve('n3', P('[::1]:8080:80')), 'CONFLICT', /\[::\]:8080\/tcp by endpoint n1/);
  assert.equal(a.ownerOf('tcp', '192.168.1.5', 8080), 'n1');
  assert.equal(a.ownerOf('tcp', '', 8080, { hostBindingIPv4: '192.168.1.5' }), 'n1');
  assert.equal(a.ownerOf('tcp', '10.0.0.1', 8080), 'n2');
  await rejects(
    a.reserve('n4', P('9:9'), { hostBindingIPv4: 'fd00::1' }),
    'INVALID_ARGUMENT',
    /host_binding_ipv4/,
  );
});

test('overlapping ranges conflict; adjacent ones do not', async (t) => {
  const { a } = allocator(t);
  await a.reserve('r1', P('8000-8099:80-179'));
  await rejects(
    a.reserve('r2', P('8099-8100:80-81')),
    'CONFLICT',
    /port 8099\/tcp is already published \(0\.0\.0\.0:8000-8099\/tcp by endpoint r1\)/,
  );
  await rejects(a.reserve('r2', P('7000-8000:7000-8000')), 'CONFLICT', /port 8000\/tcp/);
  await rejects(a.reserve('r2', P('8050:80')), 'CONFLICT', /port 8050\/tcp/);
  await rejects(a.reserve('r2', P('7000-9000:7000-9000')), 'CONFLICT', /port 8000\/tcp/);
  await a.reserve('r2', P('7000-7999:7000-7999', '8100-8199:8100-8199'));
  assert.equal(a.ownerOf('tcp', '', 7999), 'r2');
  assert.equal(a.ownerOf('tcp', '', 8000), 'r1');
  assert.equal(a.ownerOf('tcp', '', 8099), 'r1');
  assert.equal(a.ownerOf('tcp', '', 8100), 'r2');
  assert.equal(a.ownerOf('tcp', '', 8200), undefined);
});

test('all or nothing: a failing binding leaves none of the call reserved', async (t) => {
  const { a } = allocator(t);
  await a.reserve('first', P('9000:90'));
  const before = a.stats();
  await rejects(a.reserve('second', P('8000:80', '80-89', '9000:90', '8001:81')), 'CONFLICT', /port 9000/);
  assert.deepEqual(a.stats(), before);
  assert.deepEqual(a.owned('second'), []);
  assert.equal(a.ownerOf('tcp', '', 8000), undefined);
  // The ephemeral cursor did not move either: the next ephemeral port is the first one.
  assert.deepEqual(texts(await a.reserve('second', P('80'))), ['32768:80/tcp']);
});

test('release frees the ports (all, or only the given bindings); releasing nothing is fine', async (t) => {
  const { a } = allocator(t);
  const got = await a.reserve('c', P('8080:80', '9000-9099:9000-9099/udp'));
  assert.deepEqual(a.owners(), ['c']);
  assert.deepEqual(texts(a.release('c', [got[0]])), ['8080:80/tcp']);
  assert.deepEqual(texts(a.owned('c')), ['9000-9099:9000-9099/udp']);
  await a.reserve('d', P('8080:80'));
  await rejects(a.reserve('d', P('9050:9050/udp')), 'CONFLICT', /by endpoint c\)/);
  assert.deepEqual(texts(a.release('c')), ['9000-9099:9000-9099/udp']);
  assert.deepEqual(a.release('c'), []);
  assert.deepEqual(a.release('nobody'), []);
  await a.reserve('e', P('9050:9050/udp'));
  assert.deepEqual(a.owners().sort(), ['d', 'e']);
  a.release('d');
  a.release('e');
  assert.deepEqual(a.stats(), { intervals: 0, owners: 0, lists: 0 });
});

test('restore records allocated bindings without reading /proc, and still refuses conflicts', async (t) => {
  const { a } = allocator(t, { 'net/tcp': [TCP_HEADER, line(0, hex4('0.0.0.0'), 8080, '0A')].join('\n') });
  assert.deepEqual(texts(a.restore('c', P('8080:80', '20000-20999:20000-20999'))), [
    '8080:80/tcp',
    '20000-20999:20000-20999/tcp',
  ]);
  assert.throws(() => a.restore('d', P('20500:80')), /port 20500\/tcp is already published/);
  assert.throws(() => a.restore('d', P('80')), /restore needs allocated bindings/);
  await rejects(a.reserve('d', P('8080:80')), 'CONFLICT', /by endpoint c\)/);
});

// ---- ephemeral ports ------------------------------------------------------------------------------

test('ephemeral ports come from ip_local_port_range, round robin, skipping reserved and used ports', async (t) => {
  const { a, tree } = allocator(t);
  tree.write('sys/net/ipv4/ip_local_port_range', '40000\t40009\n');
  tree.write('sys/net/ipv4/ip_local_reserved_ports', '40001\n');
  await a.reserve('fixed', P('40002:80'));
  assert.deepEqual(texts(await a.reserve('c1', P('80'))), ['40000:80/tcp']);
  // 40001 reserved by the kernel setting, 40002 taken.
  assert.deepEqual(texts(await a.reserve('c2', P('80', '80/udp'))), ['40003:80/tcp', '40000:80/udp']);
  // A container range gets a block of consecutive host ports (one rule, not one per port).
  assert.deepEqual(texts(await a.reserve('c3', P('100-103'))), ['40004-40007:100-103/tcp']);
  // Round robin: 40008, 40009, then wraps around to what was freed.
  a.release('c1');
  assert.deepEqual(texts(await a.reserve('c4', P('80', '81'))), ['40008:80/tcp', '40009:81/tcp']);
  assert.deepEqual(texts(await a.reserve('c5', P('80'))), ['40000:80/tcp']);
  // Full: EXHAUSTED, naming the sysctl.
  await rejects(
    a.reserve('c6', P('80')),
    'EXHAUSTED',
    /no free ephemeral port for 80\/tcp in 40000-40009\/tcp \(net\.ipv4\.ip_local_port_range\)/,
  );
  await rejects(
    a.reserve('c6', P('100-102/udp', '200-210/udp')),
    'EXHAUSTED',
    /no 11 consecutive free ephemeral ports for 200-210\/udp/,
  );
  assert.deepEqual(a.owned('c6'), [], 'the first binding of the failed call was rolled back');
});

test('ephemeral ports on one address may reuse a port taken on another address', async (t) => {
  const { a } = allocator(t);
  const opts = { ephemeralRange: { start: 50000, end: 50001 } };
  const b = new PortAllocator({ ...opts, procRoot: a['procRoot'] as string });
  assert.deepEqual(texts(await b.reserve('x', P('10.0.0.1::80'))), ['10.0.0.1:50000:80/tcp']);
  assert.deepEqual(texts(await b.reserve('y', P('10.0.0.2::80'))), ['10.0.0.2:50001:80/tcp']);
  assert.deepEqual(texts(await b.reserve('z', P('10.0.0.2::80'))), ['10.0.0.2:50000:80/tcp']);
  // '' needs the port on every address: none left.
  await rejects(b.reserve('w', P('80')), 'EXHAUSTED', /50000-50001/);
});

test("ip_local_port_range unreadable: Docker's fallback range", async (t) => {
  const { a, tree } = allocator(t);
  fs.rmSync(path.join(tree.root, 'sys/net/ipv4/ip_local_port_range'));
  const got = await a.reserve('c', P('80'));
  assert.equal(got[0].hostPort, DEFAULT_EPHEMERAL_RANGE.start);
});

test('a host range for one container port takes the lowest free port of the range', async (t) => {
  const { a } = allocator(t, { 'net/tcp': [TCP_HEADER, line(0, hex4('0.0.0.0'), 8001, '0A')].join('\n') });
  await a.reserve('x', P('8000:80'));
  assert.deepEqual(texts(await a.reserve('y', P('8000-8003:80'))), ['8002:80/tcp']);
  assert.deepEqual(texts(await a.reserve('y', P('8000-8003:80'))), ['8003:80/tcp']);
  await rejects(
    a.reserve('z', P('8000-8003:80')),
    'CONFLICT',
    /every host port of 8000-8003\/tcp is already in use; cannot publish 8000-8003:80\/tcp/,
  );
  // On ::1: 8000 is taken by x's binding on every address, 8001 only by an IPv4 listener.
  assert.deepEqual(texts(await a.reserve('z', P('[::1]:8000-8003:80'))), ['[::1]:8001:80/tcp']);
});

// ---- host listeners ---------------------------------------------------------------------------------

test('ports host processes listen on are refused with a clear CONFLICT', async (t) => {
  const { a } = allocator(t, {
    'net/tcp': [
      TCP_HEADER,
      line(0, hex4('0.0.0.0'), 8080, '0A'),
      line(1, hex4('127.0.0.1'), 6379, '0A'),
      line(2, hex4('10.0.0.1'), 9999, '01'),
    ].join('\n'),
    'net/tcp6': [
      TCP_HEADER,
      line(0, hex6([0, 0, 0, 0, 0, 0, 0, 0]), 443, '0A'),
      line(1, hex6([0, 0, 0, 0, 0, 0, 0, 1]), 7000, '0A'),
    ].join('\n'),
    'net/udp': [UDP_HEADER, line(0, hex4('0.0.0.0'), 53, '07')].join('\n'),
  });
  const e = await rejects(
    a.reserve('c', P('8080:80')),
    'CONFLICT',
    /^port 8080\/tcp is already in use by a process on the host \(0\.0\.0\.0:8080\); cannot publish 8080:80\/tcp$/,
  );
  assert.equal(e.details.listener, '0.0.0.0:8080');
  // 127.0.0.1:6379: conflicts with '' and 0.0.0.0 and 127.0.0.1, not with another address.
  await rejects(a.reserve('c', P('6379:6379')), 'CONFLICT', /\(127\.0\.0\.1:6379\)/);
  await rejects(a.reserve('c', P('127.0.0.1:6379:6379')), 'CONFLICT', /127\.0\.0\.1:6379/);
  await a.reserve('ok1', P('10.0.0.1:6379:6379'));
  // [::]:443 is taken as dual-stack: it blocks IPv4 bindings too.
  await rejects(a.reserve('c', P('10.0.0.1:443:443')), 'CONFLICT', /\(\[::\]:443\)/);
  // [::1]:7000 only blocks IPv6 loopback / wildcard / every-address bindings.
  await a.reserve('ok2', P('127.0.0.1:7000:7000'));
  await rejects(a.reserve('c', P('[::]:7000:7000')), 'CONFLICT', /\(\[::1\]:7000\)/);
  // Only the protocol of the socket: 53/udp is busy, 53/tcp is free.
  await rejects(
    a.reserve('c', P('53:53/udp')),
    'CONFLICT',
    /port 53\/udp is already in use by a process on the host \(0\.0\.0\.0:53\)/,
  );
  await a.reserve('ok3', P('53:53'));
  // A connected socket's port (9999 ESTABLISHED) is not a listener.
  await a.reserve('ok4', P('10.0.0.1:9999:80'));
  // A range that covers a listener is refused, naming the port.
  await rejects(a.reserve('c', P('8000-8099:8000-8099')), 'CONFLICT', /port 8080\/tcp is already in use/);
  // Ephemeral allocation steps around listeners.
  const { a: b } = allocator(t, {
    'sys/net/ipv4/ip_local_port_range': '40000 40002',
    'net/tcp': [TCP_HEADER, line(0, hex4('0.0.0.0'), 40000, '0A')].join('\n'),
  });
  assert.deepEqual(texts(await b.reserve('c', P('80'))), ['40001:80/tcp']);
  // checkHostListeners: false ignores them.
  const tree = procTree(t, { 'net/tcp': [TCP_HEADER, line(0, hex4('0.0.0.0'), 8080, '0A')].join('\n') });
  const c = new PortAllocator({ procRoot: tree.root, checkHostListeners: false });
  await c.reserve('c', P('8080:80'));
});

test('procNetDir: the listeners of another netns view (e.g. /proc/<pid>/net)', async (t) => {
  const other = procTree(t, { 'net/udp': [UDP_HEADER, line(0, hex4('0.0.0.0'), 5000, '07')].join('\n') });
  const { a: plain, tree } = allocator(t);
  await plain.reserve('c', P('5000:5000/udp'));
  const a = new PortAllocator({ procRoot: tree.root, procNetDir: path.join(other.root, 'net') });
  await rejects(
    a.reserve('c', P('5000:5000/udp')),
    'CONFLICT',
    /in use by a process on the host \(0\.0\.0\.0:5000\)/,
  );
});

// ---- scale ----------------------------------------------------------------------------------------

test('a 10,000-port range is one interval per address, whatever its size', async (t) => {
  const { a } = allocator(t);
  const heapBefore = process.memoryUsage().heapUsed;
  await a.reserve('big', P('20000-29999:20000-29999'));
  await a.reserve('big4', P('10.0.0.1:30000-39999:30000-39999/udp'));
  assert.deepEqual(a.stats(), { intervals: 3, owners: 2, lists: 3 });
  // Every port of the range is taken (checked at the edges and inside), none outside.
  for (const p of [20000, 20001, 25000, 29999]) assert.equal(a.ownerOf('tcp', '', p), 'big');
  assert.equal(a.ownerOf('tcp', '', 19999), undefined);
  assert.equal(a.ownerOf('tcp', '', 30000), undefined);
  await rejects(
    a.reserve('x', P('[::1]:29999:80')),
    'CONFLICT',
    /port 29999\/tcp is already published \(\[::\]:20000-29999\/tcp by endpoint big\)/,
  );
  // 1000 single-port sandboxes and the whole 1-65535 range on another address.
  for (let i = 0; i < 1000; i++) await a.reserve(`s${i}`, P(`10.9.0.1:${1000 + i}:80`));
  assert.equal(a.stats().intervals, 3 + 1000);
  const whole = new PortAllocator({ procRoot: a['procRoot'] as string });
  await whole.reserve('all', P('1-65535:1-65535', '1-65535:1-65535/udp'));
  assert.deepEqual(whole.stats(), { intervals: 4, owners: 1, lists: 4 });
  await rejects(whole.reserve('x', P('80')), 'EXHAUSTED', /no free ephemeral port/);
  // Memory: nowhere near one object per port (65,535 + 20,000 ports reserved here).
  const grown = process.memoryUsage().heapUsed - heapBefore;
  assert.ok(grown < 20 * 1024 * 1024, `heap grew ${grown} bytes`);
  for (let i = 0; i < 1000; i++) a.release(`s${i}`);
  a.release('big');
  a.release('big4');
  assert.deepEqual(a.stats(), { intervals: 0, owners: 0, lists: 0 });
});

test('the returned bindings are copies: changing them does not change the reservations', async (t) => {
  const { a } = allocator(t);
  const [b] = await a.reserve('c', parsePortSpec('8080:80'));
  b.hostPort = 1;
  assert.equal(a.ownerOf('tcp', '', 8080), 'c');
  assert.equal(a.owned('c')[0].hostPort, 8080);
});
