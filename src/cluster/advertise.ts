// --cluster-advertise: the address other hosts send VXLAN to (this host's
// VTEP). An address must be one of the host's own; an interface name gives
// its first global address; nothing given: the default route's interface.
import { ipToBig } from '../net/addr';
import type { Handle } from '../netlink/handle';

export async function resolveAdvertise(host: Handle, wanted: string): Promise<string> {
  const addrs = (await host.addrList()).filter((a) => a.scope === 0);
  const links = await host.linkList();
  const nameOf = (index: number) => links.find((l) => l.index === index)?.name ?? `#${index}`;
  const have = () =>
    addrs.length
      ? addrs.map((a) => `${a.address} (${nameOf(a.index)})`).join(', ')
      : 'none: give the underlay interface an address';
  if (wanted && ipToBig(wanted)) {
    if (!addrs.some((a) => a.address === wanted))
      throw new Error(
        `--cluster-advertise ${wanted} is not an address of this host; its addresses are: ${have()}`,
      );
    return wanted;
  }
  if (wanted) {
    const link = links.find((l) => l.name === wanted);
    if (!link)
      throw new Error(
        `--cluster-advertise ${wanted} is neither an address nor an interface of this host; its addresses ` +
          `are: ${have()}`,
      );
    const a =
      addrs.find((x) => x.index === link.index && x.family === 4) ??
      addrs.find((x) => x.index === link.index);
    if (!a) throw new Error(`--cluster-advertise ${wanted}: the interface has no global address`);
    return a.address;
  }
  const routes = await host.routeList({ table: 254 });
  for (const family of [4, 6] as const) {
    const def = routes.find((r) => r.family === family && r.dst === 'default' && r.oifIndex);
    const a = def && addrs.find((x) => x.index === def.oifIndex && x.family === family);
    if (a) return a.address;
  }
  throw new Error(
    `--cluster-advertise not given and this host has no default route to take the address from: give the ` +
      `VTEP address or interface (addresses: ${have()})`,
  );
}
