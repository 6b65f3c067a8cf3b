// A one-machine underlay for overlay tests and benches: a "switch" netns with
// a bridge, and "host" netns each wired to it by a veth (their eth0) with an
// underlay address, as hosts on one L2 segment.
import type { Handle } from '../../src/netlink/handle';

export interface NsRef {
  path: string;
  handle: Handle;
}

export type UnderlayHost<T extends NsRef = NsRef> = T & {
  name: string;
  /** The host's underlay (VTEP) address. */
  ip: string;
};

export const UNDERLAY_BRIDGE = 'ulbr';

export async function underlay<T extends NsRef>(
  make: (id: string) => Promise<T>,
  count: number,
  opts: { v6?: boolean; mtu?: number; prefix?: string } = {},
): Promise<{ sw: T; hosts: UnderlayHost<T>[] }> {
  const prefix = opts.prefix ?? 'h';
  const sw = await make(`${prefix}sw`);
  await sw.handle.linkAdd({ kind: 'bridge', name: UNDERLAY_BRIDGE, mtu: opts.mtu });
  await sw.handle.linkSet(UNDERLAY_BRIDGE, { up: true });
  const hosts: UnderlayHost<T>[] = [];
  for (let i = 1; i <= count; i++) {
    const name = `${prefix}${i}`;
    const h = await make(name);
    await sw.handle.linkAdd({
      kind: 'veth',
      name: `ul${i}`,
      mtu: opts.mtu,
      master: UNDERLAY_BRIDGE,
      peer: { name: 'eth0', netns: h.handle, mtu: opts.mtu },
    });
    await sw.handle.linkSet(`ul${i}`, { up: true });
    await h.handle.linkSet('eth0', { up: true });
    const ip = opts.v6 ? `fd77::${i}` : `192.168.77.${i}`;
    await h.handle.addrAdd('eth0', opts.v6 ? `${ip}/64` : `${ip}/24`, opts.v6 ? { nodad: true } : undefined);
    hosts.push({ ...h, name, ip });
  }
  return { sw, hosts };
}
