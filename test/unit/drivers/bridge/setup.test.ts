// Each bridge setup step's do and undo against a recording netlink handle (no
// root, no kernel): what it asks the kernel for, what it leaves alone, and
// which failures its undo tolerates. The sysctl steps (ipv6, forwarding) write
// the host's /proc and are covered by the integration lane only.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { BridgeFirewall, BridgeNetworkSpec } from '../../../../drivers/bridge/firewall';
import { parseBridgeConfig } from '../../../../drivers/bridge/options';
import {
  BridgeState,
  networkAlias,
  setupDevice,
  setupFirewall,
  setupIPv4,
  setupIPv6,
  setupUp,
  setupVerify,
} from '../../../../drivers/bridge/setup';
import { CnmdError, ErrorCode } from '../../../../src/errors';
import type { Handle } from '../../../../src/netlink/handle';

const NET = 'a1b2c3d4e5f6a1b2c3d4e5f6';

type Link = { index: number; name: string; kind?: string; alias?: string };

/** A handle that records each call as a line and answers from `links`/`addrs`; `fail` makes a method throw. */
function recordingHandle(o: { links?: Link[]; addrs?: string[]; fail?: Record<string, ErrorCode> } = {}) {
  const calls: string[] = [];
  const links = [...(o.links ?? [])];
  const addrs = [...(o.addrs ?? [])];
  const call = (line: string) => {
    calls.push(line);
    const code = o.fail?.[line.split(' ')[0]];
    if (code) throw new CnmdError(code, `${line}: injected ${code}`, { op: line });
  };
  const find = (ref: string | number) => links.find((l) => l.name === ref || l.index === ref);
  const h = {
    async linkAdd(spec: { kind: string; name: string; alias?: string; mac?: string }) {
      call(`linkAdd ${spec.kind} ${spec.name} alias=${spec.alias}`);
      if (find(spec.name))
        throw new CnmdError('ALREADY_EXISTS', `link add ${spec.name}: exists`, { op: 'link add' });
      const l = { index: 40 + links.length, name: spec.name, kind: spec.kind, alias: spec.alias };
      links.push(l);
      return l;
    },
    async linkGet(ref: string | number) {
      call(`linkGet ${ref}`);
      const l = find(ref);
      if (!l) throw new CnmdError('NOT_FOUND', `link get ${ref}: no such link`, { op: 'link get' });
      return l;
    },
    async linkDel(ref: string | number) {
      call(`linkDel ${ref}`);
      const l = find(ref);
      if (!l) throw new CnmdError('NOT_FOUND', `link del ${ref}: no such link`, { op: 'link del' });
      links.splice(links.indexOf(l), 1);
    },
    async linkSet(ref: number, attrs: Record<string, unknown>) {
      call(`linkSet ${ref} ${JSON.stringify(attrs)}`);
    },
    async addrList(f: { link: number; family: number }) {
      call(`addrList ${f.link} ${f.family}`);
      return addrs.map((cidr) => ({ cidr }));
    },
    async addrAdd(index: number, cidr: string) {
      call(`addrAdd ${index} ${cidr}`);
      addrs.push(cidr);
    },
    async addrDel(index: number, cidr: string) {
      call(`addrDel ${index} ${cidr}`);
      if (!addrs.includes(cidr)) throw new CnmdError('NOT_FOUND', `addr del ${cidr}`, { op: 'addr del' });
      addrs.splice(addrs.indexOf(cidr), 1);
    },
  };
  return { h: h as unknown as Handle, calls, links, addrs };
}

function state(options: Record<string, string> = {}, v6 = false): BridgeState {
  const config = parseBridgeConfig({
    id: NET,
    name: 'n',
    options,
    ipv4: [{ pool: '10.9.0.0/24', gateway: '10.9.0.1/24' }],
    ipv6: v6 ? [{ pool: 'fd00:9::/64', gateway: 'fd00:9::1/64' }] : [],
    enableIPv6: v6,
    internal: false,
  });
  return { config, index: 0, created: false };
}

test('setup device: makes the bridge with its alias and marks it created; undo deletes it, gone already is fine', async () => {
  const { h, calls } = recordingHandle();
  const st = state();
  const step = setupDevice(h, st);
  await step.do();
  assert.deepEqual(calls, [`linkAdd bridge br-a1b2c3d4e5f6 alias=${networkAlias(NET)}`]);
  assert.equal(st.created, true);
  assert.equal(st.index, 40);
  await step.undo!();
  assert.deepEqual(calls.slice(1), ['linkDel br-a1b2c3d4e5f6']);
  await step.undo!(); // NOT_FOUND: done
});

test('setup device: an existing bridge is borrowed (never deleted by undo); a non-bridge or another network’s bridge is a CONFLICT', async () => {
  const mine = recordingHandle({ links: [{ index: 7, name: 'br-a1b2c3d4e5f6', kind: 'bridge' }] });
  const st = state();
  const step = setupDevice(mine.h, st);
  await step.do();
  assert.deepEqual([st.created, st.index], [false, 7]);
  await step.undo!();
  assert.ok(!mine.calls.some((c) => c.startsWith('linkDel')), 'a borrowed bridge stays');

  const dummy = recordingHandle({ links: [{ index: 8, name: 'br-a1b2c3d4e5f6', kind: 'dummy' }] });
  await assert.rejects(async () => setupDevice(dummy.h, state()).do(), {
    code: 'CONFLICT',
    message: 'network create br-a1b2c3d4e5f6: the device exists and is a dummy device, not a bridge',
  });
  const other = recordingHandle({
    links: [{ index: 9, name: 'br-a1b2c3d4e5f6', kind: 'bridge', alias: networkAlias('other') }],
  });
  await assert.rejects(async () => setupDevice(other.h, state()).do(), { code: 'CONFLICT' });
});

test('setup device: undo lets a real failure through (EPERM is not swallowed)', async () => {
  const { h } = recordingHandle({ fail: { linkDel: 'KERNEL_ERROR' } });
  const step = setupDevice(h, state());
  await step.do();
  await assert.rejects(async () => step.undo!(), { code: 'KERNEL_ERROR' });
});

test('setup ipv4: a new bridge gets its gateway without a look-up; a borrowed one only if missing, and its undo removes only that', async () => {
  const fresh = recordingHandle();
  const st = { ...state(), index: 40, created: true };
  const step = setupIPv4(fresh.h, st);
  await step.do();
  assert.deepEqual(fresh.calls, ['addrAdd 40 10.9.0.1/24']);
  await step.undo!();
  assert.deepEqual(fresh.calls.length, 1, 'a bridge cnmd made takes its address with it');

  const borrowed = recordingHandle({ addrs: ['10.9.0.1/24'] });
  const b = { ...state(), index: 7, created: false };
  await setupIPv4(borrowed.h, b).do();
  assert.deepEqual(borrowed.calls, ['addrList 7 4'], 'already there: nothing added');
  await setupIPv4(borrowed.h, b).undo!();
  assert.deepEqual(borrowed.calls.slice(1), ['addrDel 7 10.9.0.1/24']);
  await setupIPv4(borrowed.h, b).undo!(); // gone already: done

  const inhibited = recordingHandle();
  await setupIPv4(inhibited.h, {
    ...state({ 'com.docker.network.bridge.inhibit_ipv4': 'true' }),
    index: 7,
  }).do();
  assert.deepEqual(inhibited.calls, []);
});

test('setup ipv6: undo removes a borrowed bridge’s gateway only, tolerating its absence', async () => {
  const { h, calls } = recordingHandle({ addrs: ['fd00:9::1/64'] });
  const st = { ...state({}, true), index: 7, created: false };
  await setupIPv6(h, st).undo!();
  await setupIPv6(h, st).undo!();
  assert.deepEqual(calls, ['addrDel 7 fd00:9::1/64', 'addrDel 7 fd00:9::1/64']);
  const made = recordingHandle();
  await setupIPv6(made.h, { ...st, created: true }).undo!();
  assert.deepEqual(made.calls, []);
});

test('setup ip tables: adds the network’s rules, undo removes the same rules', async () => {
  const seen: string[] = [];
  const fw: BridgeFirewall = {
    async setupBase() {},
    async addNetwork(n: BridgeNetworkSpec) {
      seen.push(`add ${n.bridge} ${n.subnets.v4} icc=${n.icc}`);
    },
    async removeNetwork(n: BridgeNetworkSpec) {
      seen.push(`remove ${n.bridge} ${n.subnets.v4} icc=${n.icc}`);
    },
  };
  const step = setupFirewall(fw, state({ 'com.docker.network.bridge.enable_icc': 'false' }));
  await step.do();
  await step.undo!();
  assert.deepEqual(seen, [
    'add br-a1b2c3d4e5f6 10.9.0.0/24 icc=false',
    'remove br-a1b2c3d4e5f6 10.9.0.0/24 icc=false',
  ]);
});

test('setup up and verify: up by index; verify refuses a device that is not this bridge or lacks its gateway', async () => {
  const { h, calls } = recordingHandle({
    links: [{ index: 7, name: 'br-a1b2c3d4e5f6', kind: 'bridge' }],
    addrs: ['10.9.0.1/24'],
  });
  const st = { ...state(), index: 7 };
  await setupUp(h, st).do();
  await setupVerify(h, st).do();
  assert.deepEqual(calls, ['linkSet 7 {"up":true}', 'linkGet 7', 'addrList 7 4']);

  const noGw = recordingHandle({ links: [{ index: 7, name: 'br-a1b2c3d4e5f6', kind: 'bridge' }] });
  await assert.rejects(async () => setupVerify(noGw.h, st).do(), {
    code: 'INTERNAL',
    message: 'network create br-a1b2c3d4e5f6: the bridge does not hold its gateway 10.9.0.1/24',
  });
  const swapped = recordingHandle({
    links: [{ index: 7, name: 'eth0', kind: 'veth' }],
    addrs: ['10.9.0.1/24'],
  });
  await assert.rejects(async () => setupVerify(swapped.h, st).do(), { code: 'INTERNAL' });
});

/** An IPv4 network's spec with these options. */
const spec = (options: Record<string, string>, internal = false) => ({
  id: NET,
  name: 'n',
  options,
  ipv4: [{ pool: '10.9.0.0/24', gateway: '10.9.0.1/24' }],
  ipv6: [],
  enableIPv6: false,
  internal,
});

test('gateway modes: Docker values per family, bad values and isolated without --internal refused naming the option', () => {
  const v4 = 'com.docker.network.bridge.gateway_mode_ipv4';
  const v6 = 'com.docker.network.bridge.gateway_mode_ipv6';
  const c = parseBridgeConfig(spec({}));
  assert.deepEqual([c.gatewayModeIPv4, c.gatewayModeIPv6], ['nat', 'nat']);
  for (const mode of ['nat', 'nat-unprotected', 'routed'] as const) {
    assert.equal(parseBridgeConfig(spec({ [v4]: mode })).gatewayModeIPv4, mode);
    assert.equal(parseBridgeConfig(spec({ [v6]: mode })).gatewayModeIPv6, mode);
  }
  assert.equal(parseBridgeConfig(spec({ [v6]: 'isolated' }, true)).gatewayModeIPv6, 'isolated');
  const refused = (options: Record<string, string>, internal: boolean, key: string, why: RegExp) =>
    assert.throws(
      () => parseBridgeConfig(spec(options, internal)),
      (e: unknown) =>
        e instanceof CnmdError && e.code === 'INVALID_ARGUMENT' && e.object === key && why.test(e.message),
    );
  for (const key of [v4, v6]) {
    for (const bad of ['', 'NAT', 'route', 'nat ', 'nat,routed'])
      refused(
        { [key]: bad },
        false,
        key,
        /is not a gateway mode \(use nat, nat-unprotected, routed, isolated\)/,
      );
    refused({ [key]: 'isolated' }, false, key, /'isolated' can only be used for an internal network/);
  }
});

test('bridge options cnmd does not implement are refused by name; other namespaces pass through', () => {
  for (const key of ['com.docker.network.bridge.enable_icc_typo', 'com.docker.network.bridge.'])
    assert.throws(
      () => parseBridgeConfig(spec({ [key]: 'x' })),
      (e: unknown) =>
        e instanceof CnmdError &&
        e.code === 'INVALID_ARGUMENT' &&
        e.object === key &&
        e.message.includes(
          `option ${key} is not supported by cnmd's bridge driver (supported: name, enable_icc,`,
        ),
    );
  // Outside the namespace: kept as given (Docker passes unknown generic options through).
  assert.equal(parseBridgeConfig(spec({ 'com.example.whatever': 'x', foo: 'y' })).gatewayModeIPv4, 'nat');
  // A network restored from the store keeps working.
  assert.equal(
    parseBridgeConfig(spec({ 'com.docker.network.bridge.typo': 'x' }), { refuseUnknown: false }).bridgeName,
    'br-a1b2c3d4e5f6',
  );
});

test('setup ipv4 and verify: an isolated network’s bridge gets no IPv4 address and verify does not ask for one', async () => {
  const { h, calls } = recordingHandle({ links: [{ index: 40, name: 'br-a1b2c3d4e5f6', kind: 'bridge' }] });
  const config = parseBridgeConfig(spec({ 'com.docker.network.bridge.gateway_mode_ipv4': 'isolated' }, true));
  const st: BridgeState = { config, index: 40, created: true };
  await setupIPv4(h, st).do();
  await setupVerify(h, st).do();
  assert.deepEqual(calls, ['linkGet 40']);
});

test('trusted_host_interfaces: colon-separated interface names, empty parts dropped as Docker does; a wildcard or bad name refused', () => {
  const key = 'com.docker.network.bridge.trusted_host_interfaces';
  assert.deepEqual(parseBridgeConfig(spec({ [key]: 'vxlan.1:eth3' })).trustedHostInterfaces, [
    'vxlan.1',
    'eth3',
  ]);
  assert.deepEqual(parseBridgeConfig(spec({ [key]: ':eth3::' })).trustedHostInterfaces, ['eth3']);
  assert.deepEqual(parseBridgeConfig(spec({})).trustedHostInterfaces, []);
  for (const bad of ['eth+', 'a b', 'x'.repeat(16), '!eth0'])
    assert.throws(
      () => parseBridgeConfig(spec({ [key]: bad })),
      (e: unknown) =>
        e instanceof CnmdError &&
        e.code === 'INVALID_ARGUMENT' &&
        e.object === key &&
        e.message.includes(`option ${key}: ${JSON.stringify(bad)} is not an interface name`),
    );
});
