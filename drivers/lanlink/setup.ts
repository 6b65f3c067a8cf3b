// A macvlan/ipvlan network's setup as small named steps with undo: the
// parent (an existing link checked, an 802.1Q sub-interface or the network's
// own isolated link made), the MTU against it, and the host-access shim.
import { CnmdError, bestEffort, ignoreNotFound } from '../../src/errors';
import type { Handle, LinkAddSpec } from '../../src/netlink/handle';
import type { Link } from '../../src/netlink/rtnl/link';
import { IFF_LOOPBACK } from '../../src/netlink/rtnl/constants';
import { isMac } from '../../src/net/addr';
import { ALIAS_PREFIX } from '../bridge/setup';
import type { Step } from '../../src/steps';
import type { LanConfig } from './config';
import type { ParentTable } from './parents';

/**
 * Marks on the links cnmd makes in the host netns (their IFLA_IFALIAS), so a
 * restart knows what is its own: `cnmd:lan:vlan` on an 802.1Q sub-interface
 * it made (shared by every network on it), the network's id on its isolated
 * parent and its shim, the endpoint's on an engine endpoint's link. The
 * bridge driver's sweep passes over `cnmd:lan:` (neither `net` nor `ep`).
 */
export const LAN_ALIAS = 'cnmd:lan:';
export const vlanAlias = `${LAN_ALIAS}vlan`;
export const isolatedAlias = (networkId: string) => `${LAN_ALIAS}iso:${networkId}`;
export const shimAlias = (networkId: string) => `${LAN_ALIAS}shim:${networkId}`;
export const lanEndpointAlias = (networkId: string, endpointId: string) =>
  `${LAN_ALIAS}ep:${networkId}:${endpointId}`;

/**
 * The name a link cnmd makes in the host netns has until it carries its mark
 * (the kernel takes IFLA_IFALIAS only on an existing link: a second message).
 * A link still so named at start is a creation killed before its mark, and is
 * swept; one with its final name always has its mark.
 */
export const TEMP_PREFIX = 'cnt-';
export const tempName = (networkId: string) => `${TEMP_PREFIX}${networkId.slice(0, 11)}`;

/**
 * Makes a link under its temporary name, marks it, then gives it its final
 * name (and brings it up) in one request. A failure removes it.
 */
export async function addMarked(
  host: Handle,
  networkId: string,
  spec: LinkAddSpec & { alias: string },
): Promise<Link> {
  const { name, alias, up, ...rest } = spec;
  const tmp = tempName(networkId);
  const make = () => host.linkAdd({ ...rest, name: tmp } as LinkAddSpec);
  let link: Link;
  try {
    link = (await make())!;
  } catch (e) {
    // A leftover of a creation killed before its mark (restore runs before the sweep): replaced.
    if (!(e instanceof CnmdError && e.code === 'ALREADY_EXISTS')) throw e;
    await removeLink(host, tmp);
    link = (await make())!;
  }
  try {
    await host.linkSet(link.index, { alias });
    await host.linkSet(link.index, { name, up: up || undefined });
  } catch (e) {
    await bestEffort(undefined, 'link add rollback', tmp, () => host.linkDel(link.index));
    throw e;
  }
  return { ...link, name, alias, up: !!up || link.up };
}

/** The shim's name: 15 characters at most. */
export const shimName = (networkId: string) => `cnh-${networkId.slice(0, 11)}`;

/** The isolated parent's peer when it is a veth pair (kernels without CONFIG_DUMMY). */
export const isolatedPeerName = (networkId: string) => `dp-${networkId.slice(0, 12)}`;

export interface LanState {
  config: LanConfig;
  /** The parent's ifindex in the host netns, once resolved or made. */
  parentIndex: number;
  parentMtu: number;
  /** What this network's creation made (undone on failure, removed with the network). */
  made: { vlan?: boolean; isolated?: boolean; shim?: boolean };
}

export const linkOrNone = (host: Handle, ref: string | number): Promise<Link | undefined> =>
  ignoreNotFound(host.linkGet(ref));

/** Removes a link by name; one already gone is fine. */
export async function removeLink(host: Handle, name: string): Promise<void> {
  await ignoreNotFound(host.linkDel(name));
}

/** The cnmd mark of a link or of its veth peer (a VLAN sub-interface cnmd shares is the host's to use). */
async function cnmdMark(host: Handle, link: Link): Promise<string | undefined> {
  const mark = (l: Link | undefined) =>
    l?.alias?.startsWith(ALIAS_PREFIX) && l.alias !== vlanAlias ? l.alias : undefined;
  if (mark(link)) return mark(link);
  if (link.kind === 'veth' && link.parentIndex && link.linkNetnsId === undefined)
    return mark(await linkOrNone(host, link.parentIndex));
  return undefined;
}

/** Refuses a parent the children cannot work on, saying what to change. */
async function checkParent(op: string, host: Handle, c: LanConfig, link: Link): Promise<void> {
  // The kernel makes children of Ethernet devices only: on another the network was made, and every join
  // failed with 'link add eth0: invalid argument (EINVAL)'.
  const notEthernet =
    link.flags & IFF_LOOPBACK
      ? 'the loopback device'
      : !link.mac || !isMac(link.mac) || link.mac === '00:00:00:00:00:00'
        ? `a${link.kind ? ` ${link.kind}` : ''} device without an Ethernet address`
        : undefined;
  if (notEthernet)
    throw new CnmdError(
      'INVALID_ARGUMENT',
      `${op}: parent ${c.parent} is ${notEthernet}: ${c.kind} children need an Ethernet device (a NIC, a bond, a bridge, a veth or an 802.1Q sub-interface)`,
      { op, object: c.parent },
    );
  // cnmd's own links (a bridge, an isolated parent or its veth peer, a shim) go with their network, and a child
  // on one sits on that network's LAN: an isolated or internal network's peer was taken this way, and its
  // removal then took this network's endpoints' links along.
  const owned = await cnmdMark(host, link);
  if (owned)
    throw new CnmdError(
      'CONFLICT',
      `${op}: parent ${c.parent} is a link cnmd made for another network (${owned}): it would join that network's LAN and go with it; give a link of the host's with -o parent=`,
      { op, object: c.parent },
    );
  if (link.masterIndex) {
    const master = await linkOrNone(host, link.masterIndex);
    const what = master ? `${master.kind ?? 'device'} ${master.name}` : `device ${link.masterIndex}`;
    throw new CnmdError(
      'CONFLICT',
      `${op}: parent ${c.parent} is a port of ${what}, which takes all its traffic: use ${master?.name ?? 'the master'} as the parent, or take ${c.parent} out of it`,
      { op, object: c.parent },
    );
  }
  if (!link.up)
    throw new CnmdError(
      'CONFLICT',
      `${op}: parent ${c.parent} is down: bring it up (ip link set ${c.parent} up) and create the network again`,
      { op, object: c.parent },
    );
  // Children made by others: the kernel lets one kind of child own a device.
  const children = (await host.linkList()).filter(
    (l) => l.parentIndex === link.index && l.linkNetnsId === undefined && l.index !== link.index,
  );
  const other = children.find((l) => (l.kind === 'macvlan' || l.kind === 'ipvlan') && l.kind !== c.kind);
  if (other)
    throw new CnmdError(
      'CONFLICT',
      `${op}: parent ${c.parent} carries the ${other.kind} link ${other.name}; macvlan and ipvlan cannot share a parent: pick another parent`,
      { op, object: c.parent },
    );
  const passthru = children.find((l) => l.macvlan?.mode === 'passthru');
  if (passthru || (c.mode.exclusive && children.some((l) => l.kind === c.kind)))
    throw new CnmdError(
      'CONFLICT',
      `${op}: parent ${c.parent} ${passthru ? `is taken by the passthru link ${passthru.name}` : `carries ${c.kind} links already, and passthru takes the whole device`}: pick another parent`,
      { op, object: c.parent },
    );
}

/** The network's own parent, isolated from every LAN: a dummy link as Docker's, else a veth pair. */
async function makeIsolated(host: Handle, st: LanState): Promise<Link> {
  const c = st.config;
  st.made.isolated = true;
  const alias = isolatedAlias(c.networkId);
  try {
    return await addMarked(host, c.networkId, { kind: 'dummy', name: c.parent, up: true, alias });
  } catch (e) {
    if (!(e instanceof CnmdError && e.code === 'KERNEL_FEATURE_MISSING')) throw e;
  }
  // Without CONFIG_DUMMY: a veth pair whose peer leads nowhere has a carrier like a dummy and no LAN.
  return addMarked(host, c.networkId, {
    kind: 'veth',
    name: c.parent,
    up: true,
    alias,
    peer: { name: isolatedPeerName(c.networkId), up: true },
  });
}

/** The 802.1Q sub-interface `<lower>.<id>`, made on its lower link and marked as cnmd's. */
async function makeVlan(op: string, host: Handle, st: LanState): Promise<Link> {
  const c = st.config;
  const v = c.vlan!;
  const lower = await linkOrNone(host, v.lower);
  if (!lower)
    throw new CnmdError(
      'NOT_FOUND',
      `${op}: parent ${c.parent} does not exist, and neither does ${v.lower} to make it on as VLAN ${v.id}: give an existing interface with -o parent=`,
      { op, object: c.parent },
    );
  st.made.vlan = true;
  try {
    return await addMarked(host, c.networkId, {
      kind: 'vlan',
      name: c.parent,
      parent: lower.index,
      id: v.id,
      up: true,
      alias: vlanAlias,
    });
  } catch (e) {
    // Another network's creation made it meanwhile (the kernel allows one link per VLAN id): use theirs.
    if (!(e instanceof CnmdError && e.code === 'ALREADY_EXISTS')) throw e;
    const theirs = await linkOrNone(host, c.parent);
    if (!theirs) throw e;
    st.made.vlan = false;
    return theirs;
  }
}

export function parentStep(host: Handle, st: LanState, parents: ParentTable): Step {
  const op = 'network create';
  const c = st.config;
  return {
    name: 'setup parent',
    async do() {
      parents.check(op, {
        networkId: c.networkId,
        kind: c.kind,
        parent: c.parent,
        mode: c.mode.mode,
        exclusive: c.mode.exclusive,
      });
      let link = await linkOrNone(host, c.parent);
      if (link && c.isolated && link.alias !== isolatedAlias(c.networkId))
        throw new CnmdError(
          'CONFLICT',
          `${op}: device ${c.parent}, the isolated parent's name for this network, exists and is not cnmd's: remove it`,
          { op, object: c.parent },
        );
      if (!link && c.isolated) link = await makeIsolated(host, st);
      else if (!link && c.vlan) link = await makeVlan(op, host, st);
      else if (!link)
        throw new CnmdError(
          'NOT_FOUND',
          `${op}: parent ${c.parent} does not exist: give an existing interface with -o parent= (or none for a network isolated on this host)`,
          { op, object: c.parent },
        );
      else await checkParent(op, host, c, link);
      st.parentIndex = link.index;
      st.parentMtu = link.mtu;
    },
    async undo() {
      // A sub-interface another network uses stays (both may have raced to it: the other one keeps it).
      if (st.made.vlan && parents.on(c.parent, c.networkId).length === 0) await removeLink(host, c.parent);
      if (st.made.isolated) await removeLink(host, c.parent);
      st.made.vlan = st.made.isolated = false;
    },
  };
}

export function mtuStep(st: LanState): Step {
  return {
    name: 'check mtu',
    do() {
      const c = st.config;
      if (c.mtu !== undefined && c.mtu > st.parentMtu)
        throw new CnmdError(
          'INVALID_ARGUMENT',
          `network create: option com.docker.network.driver.mtu: ${c.mtu} is above the MTU of parent ${c.parent} (${st.parentMtu}); give at most ${st.parentMtu}`,
          { op: 'network create', object: 'com.docker.network.driver.mtu' },
        );
    },
  };
}

/** The prefix the shim routes to the network: its --ip-range, else the subnet. */
function shimRoutes(c: LanConfig): string[] {
  const out: string[] = [];
  if (c.hostAccess?.v4) out.push(c.rangeV4 ?? c.subnetV4!);
  if (c.hostAccess?.v6) out.push(c.rangeV6 ?? c.subnetV6!);
  return out;
}

/**
 * Host access (moby#21735): the kernel keeps a parent and its children apart,
 * so the host gets a child of its own on the parent, a sibling of the
 * sandboxes, with the network's aux address `host` and routes to the network.
 */
export function shimStep(host: Handle, st: LanState): Step {
  const op = 'network create';
  const c = st.config;
  const name = shimName(c.networkId);
  return {
    name: 'setup host access',
    async do() {
      if (!c.hostAccess) return;
      st.made.shim = true;
      const link = await addMarked(
        host,
        c.networkId,
        c.kind === 'macvlan'
          ? {
              kind: 'macvlan',
              name,
              parent: st.parentIndex,
              mode: c.mode.mode as 'bridge',
              mtu: c.mtu,
              alias: shimAlias(c.networkId),
            }
          : {
              kind: 'ipvlan',
              name,
              parent: st.parentIndex,
              mode: c.mode.mode as 'l2',
              flag: c.mode.flag as 'bridge',
              mtu: c.mtu,
              alias: shimAlias(c.networkId),
            },
      );
      const addrs = [c.hostAccess.v4, c.hostAccess.v6].filter((a): a is string => !!a);
      await Promise.all(
        addrs.map((a) =>
          host.addrAdd(link.index, `${a.replace(/\/\d+$/, '')}/${a.includes(':') ? 128 : 32}`, {
            nodad: true,
          }),
        ),
      );
      await host.linkSet(link.index, { up: true });
      for (const dst of shimRoutes(c)) {
        const src = (dst.includes(':') ? c.hostAccess.v6 : c.hostAccess.v4)!.replace(/\/\d+$/, '');
        try {
          await host.routeAdd({ dst, dev: link.index, src, scope: 'link' });
        } catch (e) {
          if (e instanceof CnmdError && e.code === 'ALREADY_EXISTS')
            throw new CnmdError(
              'CONFLICT',
              `${op}: option ${c.kind === 'macvlan' ? 'cnmd.macvlan.host_access' : 'cnmd.ipvlan.host_access'}: the host already routes ${dst} (an address of its own on that LAN): give --ip-range so only the sandboxes' range goes through the shim`,
              { op, object: dst, cause: e },
            );
          throw e;
        }
      }
    },
    async undo() {
      if (st.made.shim) await removeLink(host, name);
      st.made.shim = false;
    },
  };
}

export function lanSetupSteps(host: Handle, st: LanState, parents: ParentTable): Step[] {
  return [parentStep(host, st, parents), mtuStep(st), shimStep(host, st)];
}
