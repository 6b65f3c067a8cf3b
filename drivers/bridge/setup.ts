// The bridge network's setup, as an ordered list of small named steps, each
// with its undo (libnetwork bridge: setup_device, setup_ipv4, setup_ipv6,
// setup_ip_forwarding, setup_ip_tables, setup_verify).
import { failure, hasCode, ignoreNotFound } from '../../src/errors';
import type { Handle } from '../../src/netlink/handle';
import { writeSysctl } from '../../src/netns/sysctl';
import { concurrently, Step } from '../../src/steps';
import { BridgeFirewall, firewallSpec } from './firewall';
import { randomMac } from '../../src/net/addr';
import type { BridgeConfig } from './options';

/** Marks kernel objects cnmd made, so `ip -d link` says who owns them and restarts know what to sweep. */
export const ALIAS_PREFIX = 'cnmd:';
export const networkAlias = (networkId: string) => `${ALIAS_PREFIX}net:${networkId}`;
export const endpointAlias = (networkId: string, endpointId: string) =>
  `${ALIAS_PREFIX}ep:${networkId}:${endpointId}`;

const OP = 'network create';

export interface BridgeState {
  config: BridgeConfig;
  /** ifindex of the bridge in the host netns. */
  index: number;
  /** The bridge was made by cnmd (a user-named existing bridge is only borrowed). */
  created: boolean;
}

export function setupDevice(host: Handle, st: BridgeState): Step {
  const c = st.config;
  return {
    name: 'setup device',
    async do() {
      // Made directly (one round trip); a device already there is looked at after the kernel says so.
      const link = await host
        .linkAdd({
          kind: 'bridge',
          name: c.bridgeName,
          mtu: c.mtu,
          // A fixed MAC: otherwise the bridge takes the lowest port MAC and changes as ports come and go.
          mac: randomMac(),
          alias: networkAlias(c.networkId),
          // icc=false is enforced by iptables, which bridged frames only traverse with nf_call_iptables.
          nfCallIptables: !c.enableICC ? true : undefined,
        })
        .catch((e) => {
          if (hasCode(e, 'ALREADY_EXISTS')) return undefined;
          throw e;
        });
      if (link) {
        st.index = link.index;
        st.created = true;
        return;
      }
      const existing = await ignoreNotFound(host.linkGet(c.bridgeName));
      const where = { op: OP, object: c.bridgeName };
      if (!existing)
        throw failure('CONFLICT', where, 'the device appeared and went while the bridge was made; try again');
      if (existing.kind !== 'bridge') {
        const kind = existing.kind ?? 'non-bridge';
        throw failure('CONFLICT', where, `the device exists and is a ${kind} device, not a bridge`);
      }
      if (existing.alias?.startsWith(ALIAS_PREFIX) && existing.alias !== networkAlias(c.networkId))
        throw failure('CONFLICT', where, 'the bridge is already used by another cnmd network');
      st.index = existing.index;
      st.created = false;
    },
    async undo() {
      if (st.created) await ignoreNotFound(host.linkDel(c.bridgeName));
    },
  };
}

/** Whether the bridge holds the network's IPv4 gateway address (not with inhibit_ipv4, nor gateway mode isolated). */
export function bridgeHasIPv4(c: BridgeConfig): boolean {
  return !c.inhibitIPv4 && c.gatewayModeIPv4 !== 'isolated' && !!c.gatewayV4;
}

export function setupIPv4(host: Handle, st: BridgeState): Step {
  const c = st.config;
  return {
    name: 'setup ipv4',
    async do() {
      const gw = c.gatewayV4;
      if (!bridgeHasIPv4(c) || !gw) return;
      // A bridge made just now has no address: only a borrowed one is looked at first.
      const have = st.created ? [] : await host.addrList({ link: st.index, family: 4 });
      if (!have.some((a) => a.cidr === gw)) await host.addrAdd(st.index, gw);
    },
    async undo() {
      const gw = c.gatewayV4;
      if (bridgeHasIPv4(c) && gw && !st.created) await ignoreNotFound(host.addrDel(st.index, gw));
    },
  };
}

export function setupIPv6(host: Handle, st: BridgeState): Step {
  const c = st.config;
  return {
    name: 'setup ipv6',
    async do() {
      if (!c.enableIPv6) return;
      // Gateway mode isolated: no IPv6 address at all on the bridge, not even a link-local (moby
      // setup_ipv6_linux.go disables IPv6 on it); IPAM gave it no gateway either.
      if (c.gatewayModeIPv6 === 'isolated') {
        writeSysctl(['net', 'ipv6', 'conf', c.bridgeName, 'disable_ipv6'], '1');
        return;
      }
      if (!c.gatewayV6) return;
      writeSysctl(['net', 'ipv6', 'conf', c.bridgeName, 'disable_ipv6'], '0');
      writeSysctl(['net', 'ipv6', 'conf', 'all', 'forwarding'], '1');
      const have = st.created ? [] : await host.addrList({ link: st.index, family: 6 });
      if (!have.some((a) => a.cidr === c.gatewayV6))
        await host.addrAdd(st.index, c.gatewayV6, { nodad: true });
    },
    async undo() {
      if (c.enableIPv6 && c.gatewayV6 && c.gatewayModeIPv6 !== 'isolated' && !st.created)
        await ignoreNotFound(host.addrDel(st.index, c.gatewayV6));
    },
  };
}

export function setupForwarding(): Step {
  return {
    name: 'setup ip forwarding',
    // Like Docker, forwarding stays on once enabled: other networks may rely on it.
    do: () => writeSysctl(['net', 'ipv4', 'ip_forward'], '1'),
  };
}

export function setupFirewall(fw: BridgeFirewall, st: BridgeState): Step {
  return {
    name: 'setup ip tables',
    do: () => fw.addNetwork(firewallSpec(st.config)),
    undo: () => fw.removeNetwork(firewallSpec(st.config)),
  };
}

export function setupUp(host: Handle, st: BridgeState): Step {
  return {
    name: 'setup up',
    do: () => host.linkSet(st.index, { up: true }),
  };
}

export function setupVerify(host: Handle, st: BridgeState): Step {
  const c = st.config;
  return {
    name: 'setup verify',
    async do() {
      const wantV4 = bridgeHasIPv4(c);
      const [link, addrs] = await Promise.all([
        host.linkGet(st.index),
        wantV4 ? host.addrList({ link: st.index, family: 4 }) : [],
      ]);
      const where = { op: OP, object: c.bridgeName };
      if (link.name !== c.bridgeName || link.kind !== 'bridge')
        throw failure(
          'INTERNAL',
          where,
          `device ${st.index} is ${link.name} (${link.kind}), not this bridge`,
        );
      if (wantV4 && !addrs.some((a) => a.cidr === c.gatewayV4))
        throw failure('INTERNAL', where, `the bridge does not hold its gateway ${c.gatewayV4}`);
    },
  };
}

/**
 * The device and its addresses (netlink) and the rules (an iptables-restore
 * process, ~5 ms) do not depend on each other: rules name the bridge, which
 * need not exist yet. They run side by side; the bridge comes up once both are done.
 */
export function bridgeSetupSteps(host: Handle, fw: BridgeFirewall, st: BridgeState): Step[] {
  return [
    concurrently('setup device and rules', [
      [setupDevice(host, st), setupIPv4(host, st), setupIPv6(host, st), setupForwarding()],
      [setupFirewall(fw, st)],
    ]),
    setupUp(host, st),
    setupVerify(host, st),
  ];
}
