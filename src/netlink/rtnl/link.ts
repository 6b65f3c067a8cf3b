// Links: encode RTM_NEWLINK/DELLINK/GETLINK payloads for every kind cnmd's
// drivers need, and decode the kernel's link messages. Pure functions: names,
// parents and namespaces arrive here already resolved to indexes and fds.
import { invalidArgument } from '../../errors';
import { AttrWriter, Attrs, malformed } from '../codec';
import { bytesToIp, bytesToMac, ipToBytes, macToBytes } from '../../net/addr';
import * as C from './constants';

export type LinkKind = 'veth' | 'bridge' | 'vxlan' | 'macvlan' | 'ipvlan' | 'vlan' | 'dummy';

export interface LinkAttrs {
  name: string;
  mtu?: number;
  mac?: string;
  txqlen?: number;
  /** Transmit and receive queues, each (the kernel's default for a veth is one per possible CPU). */
  queues?: number;
  alias?: string;
  /** Master (bridge) ifindex. */
  masterIndex?: number;
  /** Create the link directly in the netns this fd refers to. */
  netnsFd?: number;
  /** Ask for this ifindex (0/undefined: the kernel picks). */
  index?: number;
  up?: boolean;
}

export interface VethSpec extends LinkAttrs {
  kind: 'veth';
  peer: Omit<LinkAttrs, 'masterIndex' | 'alias'>;
}
export interface BridgeSpec extends LinkAttrs {
  kind: 'bridge';
  /** 0 off, 1 kernel STP. */
  stpState?: number;
  /** In 1/100 s (clock_t), as `ip link ... forward_delay`. */
  forwardDelay?: number;
  ageingTime?: number;
  vlanFiltering?: boolean;
  mcastSnooping?: boolean;
  nfCallIptables?: boolean;
}
export interface VxlanSpec extends LinkAttrs {
  kind: 'vxlan';
  vni: number;
  /** UDP destination port (default 4789 here, not the kernel's legacy 8472). */
  port?: number;
  local?: string;
  /** Remote unicast peer or multicast group. */
  group?: string;
  /** Underlay device ifindex. */
  linkIndex?: number;
  ttl?: number;
  tos?: number;
  learning?: boolean;
  proxy?: boolean;
  l2miss?: boolean;
  l3miss?: boolean;
  ageing?: number;
  limit?: number;
  udpCsum?: boolean;
  udp6ZeroCsumTx?: boolean;
  udp6ZeroCsumRx?: boolean;
  gbp?: boolean;
  portRange?: [number, number];
}
export interface MacvlanSpec extends LinkAttrs {
  kind: 'macvlan';
  parentIndex: number;
  mode?: keyof typeof C.MACVLAN_MODES;
}
export interface IpvlanSpec extends LinkAttrs {
  kind: 'ipvlan';
  parentIndex: number;
  mode?: keyof typeof C.IPVLAN_MODES;
  flag?: keyof typeof C.IPVLAN_FLAGS;
}
export interface VlanSpec extends LinkAttrs {
  kind: 'vlan';
  parentIndex: number;
  id: number;
  protocol?: '802.1Q' | '802.1ad';
}
export interface DummySpec extends LinkAttrs {
  kind: 'dummy';
}
export type LinkSpec = VethSpec | BridgeSpec | VxlanSpec | MacvlanSpec | IpvlanSpec | VlanSpec | DummySpec;

/** Changes for an existing link (RTM_NEWLINK without NLM_F_CREATE). */
export interface LinkChanges {
  up?: boolean;
  /** Bridge ifindex to enslave to; 0 = nomaster. */
  masterIndex?: number;
  netnsFd?: number;
  mtu?: number;
  mac?: string;
  name?: string;
  alias?: string;
  txqlen?: number;
  /** How the link makes its IPv6 link-local address ('none': it gets none). */
  addrGenMode?: AddrGenMode;
  /** Options of the link as a port of its bridge (slave data), in the same request. */
  bridgePort?: BridgePortChanges;
}

export type AddrGenMode = keyof typeof C.ADDR_GEN_MODES;

export interface Link {
  index: number;
  name: string;
  kind?: string;
  slaveKind?: string;
  flags: number;
  up: boolean;
  mtu: number;
  mac?: string;
  broadcast?: string;
  masterIndex?: number;
  parentIndex?: number;
  alias?: string;
  addrGenMode?: AddrGenMode;
  operstate: string;
  txqlen?: number;
  linkNetnsId?: number;
  vxlan?: {
    vni: number;
    port?: number;
    local?: string;
    group?: string;
    linkIndex?: number;
    ttl?: number;
    learning?: boolean;
    proxy?: boolean;
    l2miss?: boolean;
    l3miss?: boolean;
    ageing?: number;
    udpCsum?: boolean;
  };
  macvlan?: { mode: string };
  ipvlan?: { mode: string; flag: string };
  vlan?: { id: number; protocol: string };
  bridge?: { stpState?: number; forwardDelay?: number; ageingTime?: number; vlanFiltering?: boolean };
}

const OPERSTATES = ['UNKNOWN', 'NOTPRESENT', 'DOWN', 'LOWERLAYERDOWN', 'TESTING', 'DORMANT', 'UP'];

/** dev_valid_name(): 1..15 bytes, not "." or "..", no '/', ':' or whitespace. */
export function validateIfName(op: string, name: string): void {
  if (typeof name !== 'string' || name.length === 0)
    throw invalidArgument(op, name, 'interface name is empty');
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes >= C.IFNAMSIZ) {
    throw invalidArgument(
      op,
      name,
      `interface name "${name}" is ${bytes} bytes; Linux allows at most ${C.IFNAMSIZ - 1}`,
    );
  }
  if (name === '.' || name === '..' || /[/:\s]/.test(name)) {
    throw invalidArgument(
      op,
      name,
      `interface name "${name}" may not be "." or ".." nor contain '/', ':' or whitespace`,
    );
  }
}

const USER_IFNAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;

/** Whether `name` is a plain interface name as validateUserIfName wants it (1-15 bytes, no wildcard). */
export function isUserIfName(name: string): boolean {
  return USER_IFNAME.test(name);
}

/**
 * A name a user gives for an interface that cnmd will make and name in firewall rules (a
 * bridge, a parent): a valid Linux name that is also safe in iptables and in the kernel's
 * own parsing. 1-15 ASCII letters, digits, '_', '.', '-', starting with a letter or digit:
 * no `+` (iptables' wildcard: `-o br+` matches every br*), no `*` or `!`, no leading `-`
 * (an option to iptables), no `%` (the kernel expands `br%d` into `br0` and answers for a
 * name cnmd never asked for), no whitespace, `/`, `:` or non-ASCII.
 */
export function validateUserIfName(op: string, what: string, name: string): void {
  validateIfName(op, name);
  if (!isUserIfName(name))
    throw invalidArgument(
      op,
      name,
      `${what}: "${name}" is not usable as an interface name: use 1-15 ASCII letters, digits, '_', '.' or '-', starting with a letter or digit (no iptables wildcard '+', no '%' template, no '*', '!', whitespace or '/')`,
    );
}

function validateMac(op: string, object: string, mac: string): Buffer {
  const b = macToBytes(mac);
  if (!b) throw invalidArgument(op, object, `"${mac}" is not a MAC address (want xx:xx:xx:xx:xx:xx)`);
  if (b[0] & 1)
    throw invalidArgument(
      op,
      object,
      `"${mac}" is a multicast address; a link needs a unicast MAC (first byte even)`,
    );
  if (b.every((x) => x === 0))
    throw invalidArgument(op, object, `"${mac}" (all zeros) is not a usable MAC address`);
  return b;
}

function validateMtu(op: string, object: string, mtu: number): void {
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535)
    throw invalidArgument(op, object, `MTU ${mtu} is outside 68..65535`);
}

export function ifinfomsg(family: number, index: number, flags = 0, change = 0): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt8(family, 0);
  b.writeInt32LE(index, 4);
  b.writeUInt32LE(flags >>> 0, 8);
  b.writeUInt32LE(change >>> 0, 12);
  return b;
}

function writeCommon(op: string, w: AttrWriter, a: Omit<LinkAttrs, 'up' | 'index'>): void {
  validateIfName(op, a.name);
  w.str(C.IFLA_IFNAME, a.name);
  if (a.mtu !== undefined) {
    validateMtu(op, a.name, a.mtu);
    w.u32(C.IFLA_MTU, a.mtu);
  }
  if (a.mac !== undefined) w.bytes(C.IFLA_ADDRESS, validateMac(op, a.name, a.mac));
  if (a.txqlen !== undefined) w.u32(C.IFLA_TXQLEN, a.txqlen);
  if (a.queues !== undefined) {
    if (!Number.isInteger(a.queues) || a.queues < 1 || a.queues > 4096)
      throw invalidArgument(op, a.name, `queue count ${a.queues} is outside 1..4096`);
    w.u32(C.IFLA_NUM_TX_QUEUES, a.queues);
    w.u32(C.IFLA_NUM_RX_QUEUES, a.queues);
  }
  if (a.masterIndex !== undefined) w.u32(C.IFLA_MASTER, a.masterIndex);
  if (a.netnsFd !== undefined) w.u32(C.IFLA_NET_NS_FD, a.netnsFd);
  if (a.alias !== undefined) w.str(C.IFLA_IFALIAS, a.alias);
}

function needIp(op: string, object: string, what: string, ip: string): Buffer {
  const b = ipToBytes(ip);
  if (!b) throw invalidArgument(op, object, `${what} "${ip}" is not an IP address`);
  return b;
}

function writeInfoData(op: string, w: AttrWriter, spec: LinkSpec): void {
  switch (spec.kind) {
    case 'veth':
      validateIfName(op, spec.peer.name);
      w.nestedWithHeader(
        C.VETH_INFO_PEER,
        ifinfomsg(
          C.AF_UNSPEC,
          spec.peer.index ?? 0,
          spec.peer.up ? C.IFF_UP : 0,
          spec.peer.up ? C.IFF_UP : 0,
        ),
        (p) => writeCommon(op, p, spec.peer),
      );
      return;
    case 'bridge':
      if (spec.forwardDelay !== undefined) w.u32(C.IFLA_BR_FORWARD_DELAY, spec.forwardDelay);
      if (spec.ageingTime !== undefined) w.u32(C.IFLA_BR_AGEING_TIME, spec.ageingTime);
      if (spec.stpState !== undefined) w.u32(C.IFLA_BR_STP_STATE, spec.stpState);
      // Off is the default: only "on" is sent, so kernels without CONFIG_BRIDGE_VLAN_FILTERING accept "off".
      if (spec.vlanFiltering) w.u8(C.IFLA_BR_VLAN_FILTERING, 1);
      if (spec.mcastSnooping !== undefined) w.u8(C.IFLA_BR_MCAST_SNOOPING, spec.mcastSnooping ? 1 : 0);
      if (spec.nfCallIptables !== undefined) w.u8(C.IFLA_BR_NF_CALL_IPTABLES, spec.nfCallIptables ? 1 : 0);
      return;
    case 'vxlan': {
      if (!Number.isInteger(spec.vni) || spec.vni < 0 || spec.vni > 0xffffff) {
        throw invalidArgument(op, spec.name, `VXLAN id ${spec.vni} is outside 0..16777215`);
      }
      w.u32(C.IFLA_VXLAN_ID, spec.vni);
      if (spec.group !== undefined) {
        const g = needIp(op, spec.name, 'VXLAN group/remote', spec.group);
        w.bytes(g.length === 4 ? C.IFLA_VXLAN_GROUP : C.IFLA_VXLAN_GROUP6, g);
      }
      if (spec.local !== undefined) {
        const l = needIp(op, spec.name, 'VXLAN local address', spec.local);
        w.bytes(l.length === 4 ? C.IFLA_VXLAN_LOCAL : C.IFLA_VXLAN_LOCAL6, l);
      }
      if (spec.linkIndex !== undefined) w.u32(C.IFLA_VXLAN_LINK, spec.linkIndex);
      if (spec.ttl !== undefined) w.u8(C.IFLA_VXLAN_TTL, spec.ttl);
      if (spec.tos !== undefined) w.u8(C.IFLA_VXLAN_TOS, spec.tos);
      if (spec.learning !== undefined) w.u8(C.IFLA_VXLAN_LEARNING, spec.learning ? 1 : 0);
      if (spec.proxy !== undefined) w.u8(C.IFLA_VXLAN_PROXY, spec.proxy ? 1 : 0);
      if (spec.l2miss !== undefined) w.u8(C.IFLA_VXLAN_L2MISS, spec.l2miss ? 1 : 0);
      if (spec.l3miss !== undefined) w.u8(C.IFLA_VXLAN_L3MISS, spec.l3miss ? 1 : 0);
      if (spec.ageing !== undefined) w.u32(C.IFLA_VXLAN_AGEING, spec.ageing);
      if (spec.limit !== undefined) w.u32(C.IFLA_VXLAN_LIMIT, spec.limit);
      const port = spec.port ?? 4789;
      if (!Number.isInteger(port) || port < 1 || port > 65535)
        throw invalidArgument(op, spec.name, `VXLAN port ${port} is outside 1..65535`);
      w.u16be(C.IFLA_VXLAN_PORT, port);
      if (spec.portRange) {
        const r = Buffer.alloc(4);
        r.writeUInt16BE(spec.portRange[0], 0);
        r.writeUInt16BE(spec.portRange[1], 2);
        w.bytes(C.IFLA_VXLAN_PORT_RANGE, r);
      }
      if (spec.udpCsum !== undefined) w.u8(C.IFLA_VXLAN_UDP_CSUM, spec.udpCsum ? 1 : 0);
      if (spec.udp6ZeroCsumTx !== undefined)
        w.u8(C.IFLA_VXLAN_UDP_ZERO_CSUM6_TX, spec.udp6ZeroCsumTx ? 1 : 0);
      if (spec.udp6ZeroCsumRx !== undefined)
        w.u8(C.IFLA_VXLAN_UDP_ZERO_CSUM6_RX, spec.udp6ZeroCsumRx ? 1 : 0);
      if (spec.gbp) w.flag(C.IFLA_VXLAN_GBP);
      return;
    }
    case 'macvlan': {
      const mode = C.MACVLAN_MODES[spec.mode ?? 'bridge'];
      if (mode === undefined)
        throw invalidArgument(
          op,
          spec.name,
          `macvlan mode "${spec.mode}" is not one of ${Object.keys(C.MACVLAN_MODES).join(', ')}`,
        );
      w.u32(C.IFLA_MACVLAN_MODE, mode);
      return;
    }
    case 'ipvlan': {
      const mode = C.IPVLAN_MODES[spec.mode ?? 'l2'];
      if (mode === undefined)
        throw invalidArgument(
          op,
          spec.name,
          `ipvlan mode "${spec.mode}" is not one of ${Object.keys(C.IPVLAN_MODES).join(', ')}`,
        );
      const flag = C.IPVLAN_FLAGS[spec.flag ?? 'bridge'];
      if (flag === undefined)
        throw invalidArgument(
          op,
          spec.name,
          `ipvlan flag "${spec.flag}" is not one of ${Object.keys(C.IPVLAN_FLAGS).join(', ')}`,
        );
      w.u16(C.IFLA_IPVLAN_MODE, mode);
      w.u16(C.IFLA_IPVLAN_FLAGS, flag);
      return;
    }
    case 'vlan': {
      if (!Number.isInteger(spec.id) || spec.id < 0 || spec.id > 4094)
        throw invalidArgument(op, spec.name, `VLAN id ${spec.id} is outside 0..4094`);
      w.u16(C.IFLA_VLAN_ID, spec.id);
      if (spec.protocol)
        w.u16be(C.IFLA_VLAN_PROTOCOL, spec.protocol === '802.1ad' ? C.ETH_P_8021AD : C.ETH_P_8021Q);
      return;
    }
    case 'dummy':
      return;
  }
}

function hasInfoData(spec: LinkSpec): boolean {
  return spec.kind !== 'dummy';
}

/** RTM_NEWLINK payload creating `spec` (send with NLM_F_CREATE|NLM_F_EXCL). */
export function encodeLinkAdd(spec: LinkSpec): Buffer {
  const op = 'link add';
  const kinds: LinkKind[] = ['veth', 'bridge', 'vxlan', 'macvlan', 'ipvlan', 'vlan', 'dummy'];
  if (!kinds.includes(spec.kind))
    throw invalidArgument(
      op,
      spec.name,
      `link kind "${(spec as { kind: string }).kind}" is not one of ${kinds.join(', ')}`,
    );
  const w = new AttrWriter();
  w.raw(ifinfomsg(C.AF_UNSPEC, spec.index ?? 0, spec.up ? C.IFF_UP : 0, spec.up ? C.IFF_UP : 0));
  writeCommon(op, w, spec);
  if ('parentIndex' in spec && spec.parentIndex !== undefined) w.u32(C.IFLA_LINK, spec.parentIndex);
  w.nested(C.IFLA_LINKINFO, (li) => {
    li.str(C.IFLA_INFO_KIND, spec.kind);
    if (hasInfoData(spec)) li.nested(C.IFLA_INFO_DATA, (d) => writeInfoData(op, d, spec));
  });
  return w.toBuffer();
}

/** RTM_NEWLINK payload changing an existing link, found by index (or by name when index is 0). */
export function encodeLinkSet(index: number, name: string | undefined, ch: LinkChanges): Buffer {
  const op = 'link set';
  const object = name ?? String(index);
  const w = new AttrWriter();
  w.raw(ifinfomsg(C.AF_UNSPEC, index, ch.up ? C.IFF_UP : 0, ch.up === undefined ? 0 : C.IFF_UP));
  if (index === 0) {
    if (name === undefined) throw invalidArgument(op, object, 'a link index or name is required');
    validateIfName(op, name);
    w.str(C.IFLA_IFNAME, name);
  }
  if (ch.name !== undefined) {
    validateIfName(op, ch.name);
    // The kernel takes a rename from IFLA_IFNAME when the link is found by index.
    if (index === 0) throw invalidArgument(op, object, 'renaming needs the link index');
    w.str(C.IFLA_IFNAME, ch.name);
  }
  if (ch.mtu !== undefined) {
    validateMtu(op, object, ch.mtu);
    w.u32(C.IFLA_MTU, ch.mtu);
  }
  if (ch.mac !== undefined) w.bytes(C.IFLA_ADDRESS, validateMac(op, object, ch.mac));
  if (ch.txqlen !== undefined) w.u32(C.IFLA_TXQLEN, ch.txqlen);
  if (ch.masterIndex !== undefined) w.u32(C.IFLA_MASTER, ch.masterIndex);
  if (ch.netnsFd !== undefined) w.u32(C.IFLA_NET_NS_FD, ch.netnsFd);
  if (ch.alias !== undefined) w.str(C.IFLA_IFALIAS, ch.alias);
  if (ch.bridgePort !== undefined) {
    const bp = ch.bridgePort;
    // The bridge's slave_changelink applies these to an enslaved link (RTM_NEWLINK on an existing link).
    w.nested(C.IFLA_LINKINFO, (li) =>
      li.nested(C.IFLA_INFO_SLAVE_DATA, (sd) => {
        if (bp.hairpin !== undefined) sd.u8(C.IFLA_BRPORT_MODE, bp.hairpin ? 1 : 0);
        if (bp.learning !== undefined) sd.u8(C.IFLA_BRPORT_LEARNING, bp.learning ? 1 : 0);
      }),
    );
  }
  if (ch.addrGenMode !== undefined) {
    const mode = C.ADDR_GEN_MODES[ch.addrGenMode];
    if (mode === undefined)
      throw invalidArgument(
        op,
        object,
        `IPv6 address generation mode "${ch.addrGenMode}" is not one of ${Object.keys(C.ADDR_GEN_MODES).join(', ')}`,
      );
    w.nested(C.IFLA_AF_SPEC, (af) => af.nested(C.AF_INET6, (i6) => i6.u8(C.IFLA_INET6_ADDR_GEN_MODE, mode)));
  }
  return w.toBuffer();
}

/** RTM_GETLINK / RTM_DELLINK payload for one link, by index or name. */
export function encodeLinkRef(index: number, name?: string): Buffer {
  const w = new AttrWriter(32);
  w.raw(ifinfomsg(C.AF_UNSPEC, index));
  if (index === 0 && name !== undefined) {
    validateIfName('link get', name);
    w.str(C.IFLA_IFNAME, name);
  }
  return w.toBuffer();
}

/** RTM_GETLINK dump request. */
export function encodeLinkDump(): Buffer {
  return ifinfomsg(C.AF_UNSPEC, 0);
}

function bool(a: Attrs, t: number): boolean | undefined {
  const v = a.u8(t);
  return v === undefined ? undefined : v !== 0;
}

function keyOf<T extends Record<string, number>>(table: T, v: number | undefined): string {
  if (v === undefined) return 'unknown';
  return Object.entries(table).find(([, n]) => n === v)?.[0] ?? `unknown(${v})`;
}

export function decodeLink(payload: Buffer): Link {
  if (payload.length < 16) throw malformed('link', `ifinfomsg needs 16 bytes, got ${payload.length}`);
  const flags = payload.readUInt32LE(8);
  const a = Attrs.parse(payload.subarray(16), 'link');
  const name = a.str(C.IFLA_IFNAME);
  if (name === undefined) throw malformed('link', 'no IFLA_IFNAME');
  const link: Link = {
    index: payload.readInt32LE(4),
    name,
    flags,
    up: (flags & C.IFF_UP) !== 0,
    mtu: a.u32(C.IFLA_MTU) ?? 0,
    operstate: OPERSTATES[a.u8(C.IFLA_OPERSTATE) ?? 0] ?? 'UNKNOWN',
  };
  const mac = a.get(C.IFLA_ADDRESS);
  if (mac && mac.length === 6) link.mac = bytesToMac(mac);
  const brd = a.get(C.IFLA_BROADCAST);
  if (brd && brd.length === 6) link.broadcast = bytesToMac(brd);
  const master = a.u32(C.IFLA_MASTER);
  if (master) link.masterIndex = master;
  const nsidForParent = a.s32(C.IFLA_LINK_NETNSID);
  const parent = a.u32(C.IFLA_LINK);
  // A veth whose peer lives in another netns may have the same ifindex there.
  if (parent !== undefined && (parent !== link.index || nsidForParent !== undefined))
    link.parentIndex = parent;
  const alias = a.str(C.IFLA_IFALIAS);
  if (alias) link.alias = alias;
  link.txqlen = a.u32(C.IFLA_TXQLEN);
  const nsid = a.s32(C.IFLA_LINK_NETNSID);
  if (nsid !== undefined) link.linkNetnsId = nsid;
  const i6 = a.get(C.IFLA_AF_SPEC) ? a.nested(C.IFLA_AF_SPEC)?.nested(C.AF_INET6) : undefined;
  const gen = i6?.u8(C.IFLA_INET6_ADDR_GEN_MODE);
  if (gen !== undefined)
    link.addrGenMode = (Object.keys(C.ADDR_GEN_MODES) as AddrGenMode[]).find(
      (k) => C.ADDR_GEN_MODES[k] === gen,
    );
  const info = a.nested(C.IFLA_LINKINFO);
  if (info) {
    link.kind = info.str(C.IFLA_INFO_KIND);
    link.slaveKind = info.str(C.IFLA_INFO_SLAVE_KIND);
    const data = info.get(C.IFLA_INFO_DATA) ? info.nested(C.IFLA_INFO_DATA) : undefined;
    if (data) decodeInfoData(link, data);
  }
  return link;
}

function decodeInfoData(link: Link, d: Attrs): void {
  switch (link.kind) {
    case 'vxlan': {
      const group = d.get(C.IFLA_VXLAN_GROUP) ?? d.get(C.IFLA_VXLAN_GROUP6);
      const local = d.get(C.IFLA_VXLAN_LOCAL) ?? d.get(C.IFLA_VXLAN_LOCAL6);
      link.vxlan = {
        vni: d.u32(C.IFLA_VXLAN_ID) ?? 0,
        port: d.u16be(C.IFLA_VXLAN_PORT),
        group: group ? bytesToIp(group) : undefined,
        local: local ? bytesToIp(local) : undefined,
        linkIndex: d.u32(C.IFLA_VXLAN_LINK),
        ttl: d.u8(C.IFLA_VXLAN_TTL),
        learning: bool(d, C.IFLA_VXLAN_LEARNING),
        proxy: bool(d, C.IFLA_VXLAN_PROXY),
        l2miss: bool(d, C.IFLA_VXLAN_L2MISS),
        l3miss: bool(d, C.IFLA_VXLAN_L3MISS),
        ageing: d.u32(C.IFLA_VXLAN_AGEING),
        udpCsum: bool(d, C.IFLA_VXLAN_UDP_CSUM),
      };
      return;
    }
    case 'macvlan':
      link.macvlan = { mode: keyOf(C.MACVLAN_MODES, d.u32(C.IFLA_MACVLAN_MODE)) };
      return;
    case 'ipvlan':
      link.ipvlan = {
        mode: keyOf(C.IPVLAN_MODES, d.u16(C.IFLA_IPVLAN_MODE)),
        flag: keyOf(C.IPVLAN_FLAGS, d.u16(C.IFLA_IPVLAN_FLAGS) ?? 0),
      };
      return;
    case 'vlan': {
      const proto = d.u16be(C.IFLA_VLAN_PROTOCOL);
      link.vlan = {
        id: d.u16(C.IFLA_VLAN_ID) ?? 0,
        protocol: proto === C.ETH_P_8021AD ? '802.1ad' : '802.1Q',
      };
      return;
    }
    case 'bridge':
      link.bridge = {
        stpState: d.u32(C.IFLA_BR_STP_STATE),
        forwardDelay: d.u32(C.IFLA_BR_FORWARD_DELAY),
        ageingTime: d.u32(C.IFLA_BR_AGEING_TIME),
        vlanFiltering: bool(d, C.IFLA_BR_VLAN_FILTERING),
      };
      return;
  }
}

export interface BridgePortChanges {
  /** Send frames back out the port they came in on (hairpin NAT to a sandbox itself). */
  hairpin?: boolean;
  learning?: boolean;
}
