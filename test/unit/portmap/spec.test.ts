// `-p` parsing (src/portmap/spec.ts): every form Docker accepts (go-connections/nat
// ParsePortSpec), the errors it gives for what Docker refuses, normalization, and
// `docker port` formatting. Pure functions: no root, no kernel.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CnmdError } from '../../../src/errors';
import {
  bindingAddresses,
  canonicalIP,
  defaultBindingIPv4,
  formatBinding,
  formatPortSpec,
  isAllocated,
  normalizeBinding,
  parsePortSpec,
  parsePortSpecs,
  portCount,
  type PortBinding,
} from '../../../src/portmap';

function one(s: string): PortBinding {
  const out = parsePortSpec(s);
  assert.equal(out.length, 1, `${s}: one binding`);
  return out[0];
}

/** Asserts INVALID_ARGUMENT with a message matching `re`. */
function refuses(s: string, re: RegExp): void {
  assert.throws(
    () => parsePortSpec(s),
    (e: unknown) => {
      assert.ok(e instanceof CnmdError, `${s}: a CnmdError`);
      assert.equal(e.code, 'INVALID_ARGUMENT', `${s}: code`);
      assert.match(e.message, re, `${s}: message`);
      assert.ok(e.message.includes(JSON.stringify(s)), `${s}: the message quotes the spec`);
      return true;
    },
  );
}

const accepted: [string, PortBinding][] = [
  ['80', { proto: 'tcp', hostIP: '', hostPort: 0, containerPort: 80 }],
  ['80/tcp', { proto: 'tcp', hostIP: '', hostPort: 0, containerPort: 80 }],
  ['80/', { proto: 'tcp', hostIP: '', hostPort: 0, containerPort: 80 }],
  ['53/udp', { proto: 'udp', hostIP: '', hostPort: 0, containerPort: 53 }],
  ['53/UDP', { proto: 'udp', hostIP: '', hostPort: 0, containerPort: 53 }],
  ['9/sctp', { proto: 'sctp', hostIP: '', hostPort: 0, containerPort: 9 }],
  ['8080:80', { proto: 'tcp', hostIP: '', hostPort: 8080, containerPort: 80 }],
  ['0:80', { proto: 'tcp', hostIP: '', hostPort: 0, containerPort: 80 }],
  [':80', { proto: 'tcp', hostIP: '', hostPort: 0, containerPort: 80 }],
  ['65535:1', { proto: 'tcp', hostIP: '', hostPort: 65535, containerPort: 1 }],
  ['8080:80/udp', { proto: 'udp', hostIP: '', hostPort: 8080, containerPort: 80 }],
  ['127.0.0.1:8080:80', { proto: 'tcp', hostIP: '127.0.0.1', hostPort: 8080, containerPort: 80 }],
  ['192.168.1.5:8080:80/sctp', { proto: 'sctp', hostIP: '192.168.1.5', hostPort: 8080, containerPort: 80 }],
  ['127.0.0.1::80', { proto: 'tcp', hostIP: '127.0.0.1', hostPort: 0, containerPort: 80 }],
  ['0.0.0.0:8080:80', { proto: 'tcp', hostIP: '0.0.0.0', hostPort: 8080, containerPort: 80 }],
  ['[::1]:8080:80', { proto: 'tcp', hostIP: '::1', hostPort: 8080, containerPort: 80 }],
  ['[fd00::1]::80', { proto: 'tcp', hostIP: 'fd00::1', hostPort: 0, containerPort: 80 }],
  ['[FD00:0:0:0::1]:8080:80/udp', { proto: 'udp', hostIP: 'fd00::1', hostPort: 8080, containerPort: 80 }],
  ['[::]:8080:80', { proto: 'tcp', hostIP: '::', hostPort: 8080, containerPort: 80 }],
  // Unbracketed IPv6, as Docker reads it: everything before the last two colons.
  ['::1:8080:80', { proto: 'tcp', hostIP: '::1', hostPort: 8080, containerPort: 80 }],
  ['fd00::1::80', { proto: 'tcp', hostIP: 'fd00::1', hostPort: 0, containerPort: 80 }],
  // v4-mapped IPv6 is IPv4 (Go's To4()).
  ['[::ffff:10.0.0.1]:80:80', { proto: 'tcp', hostIP: '10.0.0.1', hostPort: 80, containerPort: 80 }],
  // Ranges.
  [
    '8000-8099:80-179',
    { proto: 'tcp', hostIP: '', hostPort: 8000, hostPortEnd: 8099, containerPort: 80, containerPortEnd: 179 },
  ],
  [
    '20000-20999:20000-20999/udp',
    {
      proto: 'udp',
      hostIP: '',
      hostPort: 20000,
      hostPortEnd: 20999,
      containerPort: 20000,
      containerPortEnd: 20999,
    },
  ],
  [
    '10.0.0.1:8000-8001:80-81',
    {
      proto: 'tcp',
      hostIP: '10.0.0.1',
      hostPort: 8000,
      hostPortEnd: 8001,
      containerPort: 80,
      containerPortEnd: 81,
    },
  ],
  ['8000-8010:80', { proto: 'tcp', hostIP: '', hostPort: 8000, hostPortEnd: 8010, containerPort: 80 }],
  ['80-90', { proto: 'tcp', hostIP: '', hostPort: 0, containerPort: 80, containerPortEnd: 90 }],
  ['[::1]::80-90/udp', { proto: 'udp', hostIP: '::1', hostPort: 0, containerPort: 80, containerPortEnd: 90 }],
  [
    '1-65535:1-65535',
    { proto: 'tcp', hostIP: '', hostPort: 1, hostPortEnd: 65535, containerPort: 1, containerPortEnd: 65535 },
  ],
  // A one-port "range" is a port.
  ['8080-8080:80-80', { proto: 'tcp', hostIP: '', hostPort: 8080, containerPort: 80 }],
  ['8080-8080:80', { proto: 'tcp', hostIP: '', hostPort: 8080, containerPort: 80 }],
];

for (const [spec, want] of accepted) {
  test(`parsePortSpec accepts ${JSON.stringify(spec)}`, () => {
    assert.deepEqual(one(spec), want);
  });
}

test('every accepted form round-trips through formatPortSpec', () => {
  for (const [spec] of accepted) {
    const b = one(spec);
    const text = formatPortSpec(b);
    assert.deepEqual(one(text), b, `${spec} -> ${text}`);
  }
  assert.equal(formatPortSpec(one('[fd00::1]::80')), '[fd00::1]::80/tcp');
  assert.equal(formatPortSpec(one('8000-8099:80-179/udp')), '8000-8099:80-179/udp');
  assert.equal(formatPortSpec(one('80')), '80/tcp');
  assert.equal(formatPortSpec(one('127.0.0.1::80')), '127.0.0.1::80/tcp');
});

test('a 10,000-port range is one binding, not 10,000', () => {
  const b = parsePortSpec('20000-29999:20000-29999');
  assert.equal(b.length, 1);
  assert.equal(portCount(b[0]), 10_000);
  assert.ok(isAllocated(b[0]));
});

const refused: [string, RegExp][] = [
  ['70000:80', /host port 70000 is outside 1-65535/],
  ['8080:70000', /container port 70000 is outside 1-65535/],
  ['8080:0', /container port 0 is outside 1-65535/],
  ['0', /container port 0 is outside 1-65535/],
  ['0-10:80', /host port 0 is outside 1-65535/],
  ['8000-65536:80', /host port 65536 is outside 1-65535/],
  [
    '8000-8099:80-180',
    /host range 8000-8099 has 100 ports but container range 80-180 has 101; the ranges must be the same length/,
  ],
  ['8080:80-90', /host port 8080 is one port but container ports 80-90 are 11.*8080-8090:80-90/],
  ['8099-8000:80', /host port range 8099-8000 is reversed/],
  ['80-70', /container port range 80-70 is reversed \(write 70-80\)/],
  ['80/icmp', /protocol "icmp" is not one of tcp, udp, sctp/],
  ['80/tcp/udp', /more than one "\/"/],
  ['8080/tcp:80', /the protocol goes after the container port/],
  ['999.1.1.1:8080:80', /host address "999.1.1.1" is not an IPv4 or IPv6 address/],
  ['localhost:8080:80', /host address "localhost" is not an IPv4 or IPv6 address/],
  ['10.0.0.0/24:8080:80', /the protocol goes after the container port|not an IPv4/],
  ['fe80::1%eth0:8080:80', /not an IPv4 or IPv6 address/],
  ['[::1:8080:80', /unclosed "\["/],
  [':8080:80', /empty host address/],
  ['1.2.3.4:80', /host port "1.2.3.4" is not a port number.*1\.2\.3\.4::CONTAINER_PORT/],
  ['http:80', /host port "http" is not a port number/],
  ['8080:', /no container port/],
  ['8080:eighty', /container port "eighty" is not a port number/],
  ['8080:+80', /container port "\+80" is not a port number/],
  ['8080:0x50', /container port "0x50" is not a port number/],
  ['80-', /container port "80-" is not a port number/],
  ['', /empty/],
  ['   ', /whitespace/],
  [' 8080:80 ', /whitespace/],
];

for (const [spec, re] of refused) {
  test(`parsePortSpec refuses ${JSON.stringify(spec)}`, () => refuses(spec, re));
}

test('parsePortSpecs: in order; the first bad spec throws', () => {
  assert.deepEqual(
    parsePortSpecs(['80', '8080:80/udp']).map((b) => formatPortSpec(b)),
    ['80/tcp', '8080:80/udp'],
  );
  assert.throws(() => parsePortSpecs(['80', '70000:80']), /70000/);
});

test('normalizeBinding validates API objects with the same rules', () => {
  assert.deepEqual(normalizeBinding({ containerPort: 80 }), {
    proto: 'tcp',
    hostIP: '',
    hostPort: 0,
    containerPort: 80,
  });
  assert.deepEqual(
    normalizeBinding({
      proto: 'UDP',
      hostIP: '[FD00::1]',
      hostPort: 8000,
      hostPortEnd: 8001,
      containerPort: 80,
      containerPortEnd: 81,
    }),
    {
      proto: 'udp',
      hostIP: 'fd00::1',
      hostPort: 8000,
      hostPortEnd: 8001,
      containerPort: 80,
      containerPortEnd: 81,
    },
  );
  // Ends equal to starts are dropped.
  assert.deepEqual(
    normalizeBinding({
      proto: 'tcp',
      hostIP: '',
      hostPort: 8080,
      hostPortEnd: 8080,
      containerPort: 80,
      containerPortEnd: 80,
    }),
    {
      proto: 'tcp',
      hostIP: '',
      hostPort: 8080,
      containerPort: 80,
    },
  );
  const bad: [unknown, RegExp][] = [
    [null, /not an object/],
    [{ containerPort: 0 }, /containerPort 0 is outside/],
    [{ containerPort: 80.5 }, /containerPort/],
    [{ containerPort: '80' }, /containerPort/],
    [{ containerPort: 80, hostPort: 70000 }, /hostPort 70000 is outside/],
    [{ containerPort: 80, proto: 'icmp' }, /proto "icmp"/],
    [{ containerPort: 80, hostIP: 'nope' }, /hostIP "nope"/],
    [{ containerPort: 80, hostPort: 10, hostPortEnd: 5 }, /hostPortEnd 5 must be a port >= hostPort/],
    [
      { containerPort: 80, containerPortEnd: 90, hostPort: 10, hostPortEnd: 12 },
      /host range has 3 ports but container range has 11/,
    ],
    [{ containerPort: 80, hostPortEnd: 12 }, /cannot start at 0/],
  ];
  for (const [b, re] of bad) {
    assert.throws(
      () => normalizeBinding(b),
      (e: unknown) => e instanceof CnmdError && e.code === 'INVALID_ARGUMENT' && re.test(e.message),
      JSON.stringify(b),
    );
  }
});

test('isAllocated: exact host ports only', () => {
  assert.ok(isAllocated(one('8080:80')));
  assert.ok(isAllocated(one('8000-8099:80-179')));
  assert.ok(!isAllocated(one('80')));
  assert.ok(!isAllocated(one('80-90')));
  assert.ok(!isAllocated(one('8000-8010:80')));
});

test('canonicalIP and bindingAddresses', () => {
  assert.deepEqual(canonicalIP('10.0.0.1'), { ip: '10.0.0.1', family: 'ipv4' });
  assert.deepEqual(canonicalIP('2001:DB8:0:0:0:0:0:1'), { ip: '2001:db8::1', family: 'ipv6' });
  assert.equal(canonicalIP('10.0.0.1/32'), undefined);
  assert.equal(canonicalIP(''), undefined);
  assert.deepEqual(bindingAddresses(''), { ipv4: '0.0.0.0', ipv6: '::' });
  assert.deepEqual(bindingAddresses('', '192.168.1.5'), { ipv4: '192.168.1.5', ipv6: '::' });
  assert.deepEqual(bindingAddresses('10.0.0.1', '192.168.1.5'), { ipv4: '10.0.0.1' });
  assert.deepEqual(bindingAddresses('::1'), { ipv6: '::1' });
  assert.equal(defaultBindingIPv4(), '0.0.0.0');
  assert.throws(() => defaultBindingIPv4('::1'), /host_binding_ipv4 "::1" is not an IPv4 address/);
});

test('formatBinding prints what `docker port` prints', () => {
  assert.deepEqual(formatBinding(one('8080:80')), ['80/tcp -> 0.0.0.0:8080', '80/tcp -> [::]:8080']);
  assert.deepEqual(formatBinding(one('8080:80'), { ipv6: false }), ['80/tcp -> 0.0.0.0:8080']);
  assert.deepEqual(formatBinding(one('8080:80'), { hostBindingIPv4: '192.168.1.5' }), [
    '80/tcp -> 192.168.1.5:8080',
    '80/tcp -> [::]:8080',
  ]);
  assert.deepEqual(formatBinding(one('127.0.0.1:8080:80/udp')), ['80/udp -> 127.0.0.1:8080']);
  assert.deepEqual(formatBinding(one('[::1]:8080:80')), ['80/tcp -> [::1]:8080']);
  assert.deepEqual(formatBinding(one('[::]:8080:80/sctp')), ['80/sctp -> [::]:8080']);
  assert.deepEqual(formatBinding(one('0.0.0.0:8080:80')), ['80/tcp -> 0.0.0.0:8080']);
  // A range: one line per port and address, as docker port does; or compact.
  assert.deepEqual(formatBinding(one('10.0.0.1:8000-8002:80-82')), [
    '80/tcp -> 10.0.0.1:8000',
    '81/tcp -> 10.0.0.1:8001',
    '82/tcp -> 10.0.0.1:8002',
  ]);
  assert.equal(formatBinding(one('8000-8099:80-179')).length, 200);
  assert.deepEqual(formatBinding(one('8000-8099:80-179'), { compact: true }), [
    '80-179/tcp -> 0.0.0.0:8000-8099',
    '80-179/tcp -> [::]:8000-8099',
  ]);
});
