// What the Docker engine does with the interface a plugin names in its Join
// reply (libnetwork osl): the plugin creates it in the daemon's netns; the
// daemon moves it into the sandbox under the container's name, sets the
// endpoint's MAC and addresses and brings it up. On the way out it goes back to
// the daemon's netns under the plugin's name, where the plugin's Leave or
// DeleteEndpoint expects to find it.
import { type WarnSink, bestEffort, isNotFound } from '../../src/errors';
import { Handle } from '../../src/netlink/handle';

export interface InterfaceConfig {
  mac?: string;
  /** CIDRs */
  address?: string;
  addressIPv6?: string;
}

/** The path the kernel needs to move a link back into the daemon's own netns. */
export function hostNsPath(host: Handle): string {
  return host.nsPath ?? '/proc/self/ns/net';
}

/**
 * Moves `srcName` from the daemon's netns into the sandbox as `ifname` and
 * configures it. Leaves nothing behind on failure: the link is back in the
 * daemon's netns under `srcName` (a failure of that is logged to `log`).
 */
export async function moveIntoSandbox(
  host: Handle,
  sandbox: Handle,
  sandboxKey: string,
  srcName: string,
  ifname: string,
  cfg: InterfaceConfig,
  log?: WarnSink,
): Promise<void> {
  const link = await host.linkGet(srcName);
  let renamed = false;
  try {
    // Moved and renamed in one message. The kernel moves first, then renames: a
    // failed rename (ifname taken) leaves the link in the sandbox as srcName.
    await host.linkSet(link.index, { netns: sandboxKey, name: ifname });
    renamed = true;
    const index = await sandbox.linkIndex(ifname);
    if (cfg.mac) await sandbox.linkSet(index, { mac: cfg.mac });
    if (cfg.address) await sandbox.addrAdd(index, cfg.address);
    if (cfg.addressIPv6) await sandbox.addrAdd(index, cfg.addressIPv6, { nodad: true });
    await sandbox.linkSet(index, { up: true });
  } catch (e) {
    // The move's own error is the answer; a failed move back is logged.
    await bestEffort(log, 'interface move back', srcName, () =>
      moveBack(sandbox, hostNsPath(host), renamed ? ifname : srcName, srcName),
    );
    throw e;
  }
}

/**
 * Takes `ifname` out of the sandbox back into the daemon's netns as `srcName`.
 * A link already gone (the plugin deleted its veth peer) is not an error.
 */
export async function moveBack(
  sandbox: Handle,
  hostPath: string,
  ifname: string,
  srcName: string,
): Promise<void> {
  let index: number;
  try {
    index = await sandbox.linkIndex(ifname);
  } catch (e) {
    if (isNotFound(e)) return;
    throw e;
  }
  // Down first: addresses and routes in the sandbox go with it, as the engine's osl does.
  await sandbox.linkSet(index, { up: false });
  await sandbox.linkSet(index, { netns: hostPath, name: srcName });
}

/** Renames a link in the daemon's netns; a missing link is not an error when `tolerateMissing`. */
export async function renameInHost(
  host: Handle,
  from: string,
  to: string,
  tolerateMissing = false,
): Promise<void> {
  if (from === to) return;
  try {
    const index = await host.linkIndex(from);
    // The kernel refuses to rename a link that is up (EBUSY).
    await host.linkSet(index, { up: false });
    await host.linkSet(index, { name: to });
  } catch (e) {
    if (tolerateMissing && isNotFound(e)) return;
    throw e;
  }
}
