// What every part of the controller shares: the records, the kernel's
// namespaces, the sandbox files, look-ups, runtime state, the lock and the log.
import type { Logger } from '../log';
import type { NetnsManager } from '../netns/netns';
import type { NetnsPool } from '../netns/pool';
import type { Store } from '../store/store';
import type { ClusterNetworks } from './cluster';
import type { LiveSandboxes } from './live';
import type { Lookup } from './lookup';
import type { KeyedMutex } from './mutex';
import type { SandboxFiles } from './sandbox-files';

export interface Core {
  store: Store;
  netns: NetnsManager;
  /** Ready-made namespaces for new sandboxes (optional). */
  pool?: NetnsPool;
  files: SandboxFiles;
  lookup: Lookup;
  /** Every sandbox's runtime state; the one owner (live.ts). */
  live: LiveSandboxes;
  /** Keys and what each guards: locks.ts. Not reentrant. */
  locks: KeyedMutex;
  log: Logger;
  /** Global (overlay) networks through the cluster store; absent without --cluster-store. */
  cluster?: ClusterNetworks;
}
