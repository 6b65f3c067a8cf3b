// The controller's lock keys. An operation takes every key it needs in ONE
// KeyedMutex.lock() call (keys are sorted there, so overlapping sets cannot
// deadlock). The mutex is NOT reentrant: code running under a key must not
// lock that key again, it would wait for itself forever; pass "locked"
// variants down instead (connectLocked).

export const LOCK = {
  /**
   * A cnmd network's record and its driver state; endpoint joins and leaves on it take it too, so a delete
   * never races them.
   */
  net: (id: string) => `net:${id}`,
  /** A network name: "is the name free?" and the create that takes it happen as one. */
  netName: (name: string) => `net-name:${name}`,
  /** A sandbox's record, its endpoints' records and its LiveSandbox (runtime state). */
  sb: (id: string) => `sb:${id}`,
  /** A sandbox name: "is the name free?" and the create that takes it happen as one. */
  sbName: (name: string) => `sb-name:${name}`,
  /** A singleton driver (Capabilities.singleton): at most one network of it. */
  driver: (name: string) => `driver:${name}`,
  /** A network the Docker engine made through the plugin, and its record. */
  engineNet: (id: string) => `enet:${id}`,
  /** An engine endpoint's record (taken with its network's key). */
  engineEp: (id: string) => `eep:${id}`,
  /** An IPAM pool the engine holds through cnmd's IPAM plugin (its lease record). */
  lease: (poolId: string) => `lease:${poolId}`,
} as const;
