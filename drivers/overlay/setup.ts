// An overlay network's kernel side on one host, as ordered steps with undo:
// its own netns, a bridge in it, and a vxlan device made in the host netns
// (so its UDP socket lives there, on the underlay) then moved into the
// network's netns and enslaved to the bridge.
import { CnmdError } from '../../src/errors';
import type { Handle } from '../../src/netlink/handle';
import type { NetnsManager } from '../../src/netns/netns';
import type { Step } from '../../src/steps';
import { randomMac } from '../../src/net/addr';
import { OverlayConfig, ovNetworkAlias } from './options';

export interface OverlayNetworkState {
  config: OverlayConfig;
  /** rtnetlink handle inside the network's netns. */
  ns?: Handle;
  nsPath: string;
  bridgeIndex: number;
  vxlanIndex: number;
  mtu: number;
  vtep: string;
  port: number;
}

function notFound(e: unknown): undefined {
  if (e instanceof CnmdError && e.code === 'NOT_FOUND') return undefined;
  throw e;
}

export function setupNetns(netns: NetnsManager, st: OverlayNetworkState): Step {
  return {
    name: 'setup netns',
    async do() {
      const made = await netns.create(st.config.netnsId).catch(async (e) => {
        if (!(e instanceof CnmdError && e.code === 'ALREADY_EXISTS')) throw e;
        // A leftover of a create that was interrupted: this network's, so it goes.
        await netns.remove(st.config.netnsId).catch(notFound);
        return netns.create(st.config.netnsId);
      });
      st.ns = made.handle;
      st.nsPath = made.path;
    },
    async undo() {
      st.ns?.close();
      st.ns = undefined;
      await netns.remove(st.config.netnsId).catch(notFound);
    },
  };
}

export function setupBridge(st: OverlayNetworkState): Step {
  const c = st.config;
  return {
    name: 'setup bridge',
    async do() {
      const link = await st.ns!.linkAdd({
        kind: 'bridge',
        name: c.bridgeName,
        mtu: st.mtu,
        // A fixed MAC: otherwise the bridge takes the lowest port MAC and changes as ports come and go.
        mac: randomMac(),
        alias: ovNetworkAlias(c.networkId),
      });
      st.bridgeIndex = link!.index;
    },
    // The netns's removal takes the bridge with it.
  };
}

export function setupVxlan(host: Handle, st: OverlayNetworkState): Step {
  const c = st.config;
  return {
    name: 'setup vxlan',
    async do() {
      await host
        .linkAdd({
          kind: 'vxlan',
          name: c.vxlanName,
          vni: c.vni,
          port: st.port,
          local: st.vtep,
          // Peers come from the cluster store as static entries: nothing is learned from the wire,
          // and the device answers ARP/ND itself from its neighbour table (proxy), so none crosses the underlay.
          learning: false,
          proxy: true,
          l2miss: false,
          l3miss: false,
          mtu: st.mtu,
          alias: ovNetworkAlias(c.networkId),
          echo: false,
        })
        .catch((e) => {
          if (e instanceof CnmdError && e.code === 'ALREADY_EXISTS')
            throw new CnmdError(
              'CONFLICT',
              `network create: VXLAN device ${c.vxlanName} or VNI ${c.vni} on port ${st.port} is already in ` +
                `use on this host`,
              { op: 'network create', object: c.vxlanName, cause: e },
            );
          throw e;
        });
      await host.linkSet(c.vxlanName, { netns: st.nsPath });
      const vx = await st.ns!.linkGet(c.vxlanName);
      st.vxlanIndex = vx.index;
      // Made in the host netns, it would make an IPv6 link-local and send DAD/MLD/RS into the bridge: none.
      await st.ns!.linkSet(vx.index, { addrGenMode: 'none' });
      await st.ns!.linkSet(vx.index, { master: st.bridgeIndex, up: true });
    },
    async undo() {
      // Wherever the interruption left it.
      await host.linkDel(c.vxlanName).catch(notFound);
      if (st.ns && !st.ns.closed) await st.ns.linkDel(c.vxlanName).catch(notFound);
    },
  };
}

export function setupUp(st: OverlayNetworkState): Step {
  return { name: 'setup up', do: () => st.ns!.linkSet(st.bridgeIndex, { up: true }) };
}

export function overlaySetupSteps(host: Handle, netns: NetnsManager, st: OverlayNetworkState): Step[] {
  return [setupNetns(netns, st), setupBridge(st), setupVxlan(host, st), setupUp(st)];
}
