// The "uplink" of a daemon's host netns: a veth to an "outside" netns (host side `uplink`, outside
// side `wan`), host 192.0.2.1/24 and outside 192.0.2.2/24 (TEST-NET-1); with ipv6, also
// 2001:db8::1/64 and 2001:db8::2/64 (no DAD: usable at once). `outsideIPs` replaces the outside's
// IPv4 addresses (each /24, in 192.0.2.0/24 to be on-link).
import type { Ns } from './fixture';

export const HOST_IP = '192.0.2.1';
export const OUTSIDE_IP = '192.0.2.2';
export const HOST6 = '2001:db8::1';
export const OUTSIDE6 = '2001:db8::2';

export async function uplink(
  host: Ns,
  outside: Ns,
  opts: { ipv6?: boolean; outsideIPs?: string[] } = {},
): Promise<void> {
  await host.handle.linkAdd({
    kind: 'veth',
    name: 'uplink',
    up: true,
    peer: { name: 'wan', netns: outside.path },
  });
  await outside.handle.linkSet('wan', { up: true });
  await host.handle.addrAdd('uplink', `${HOST_IP}/24`);
  for (const ip of opts.outsideIPs ?? [OUTSIDE_IP]) await outside.handle.addrAdd('wan', `${ip}/24`);
  if (!opts.ipv6) return;
  await host.handle.addrAdd('uplink', `${HOST6}/64`, { nodad: true });
  await outside.handle.addrAdd('wan', `${OUTSIDE6}/64`, { nodad: true });
}
