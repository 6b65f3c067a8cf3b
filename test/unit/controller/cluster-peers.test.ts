// The control plane's hand-over of remote endpoints to a driver
// (src/controller/cluster.ts): one store event is one updatePeers with that
// endpoint only; events of one watch message go together; the reconcile tick
// and a resumed watch hand over the whole set (setPeers); a failed change
// falls back to the whole set. A fake cluster plays the store's watches, a
// recording driver the overlay, a real SQLite store holds the network.
import { test, TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ClusterNetworks } from '../../../src/controller/cluster';
import type { Cluster, ClusterEvents } from '../../../src/cluster/cluster';
import type { EndpointPublication } from '../../../src/cluster/records';
import { SqliteStore } from '../../../src/store/sqlite';
import { KIND, NetworkRecord } from '../../../src/controller/records';
import { createLogger } from '../../../src/log';
import type { Driver, OverlayPeer, PeerChange } from '../../../drivers/driver';

const NET = 'n1';

class FakeCluster {
  readonly hostId = 'me';
  readonly vtep = '192.0.2.1';
  readonly networks = new Map<string, unknown>([[NET, {}]]);
  readonly eps = new Map<string, EndpointPublication>();
  events!: ClusterEvents;
  async start(events: ClusterEvents): Promise<void> {
    this.events = events;
  }
  remoteEndpoints(networkId: string): EndpointPublication[] {
    return [...this.eps.values()].filter((e) => e.networkId === networkId && e.host !== this.hostId);
  }
  remoteEndpoint(networkId: string, id: string): EndpointPublication | undefined {
    const e = this.eps.get(id);
    return e && e.networkId === networkId && e.host !== this.hostId ? e : undefined;
  }
  /** A watch event: the record changes, then the event fires (as Cluster does). */
  put(n: number, host = 'h2'): void {
    const e = pub(n, host);
    this.eps.set(e.id, e);
    this.events.peersChanged(NET, e.id);
  }
  remove(n: number): void {
    this.eps.delete(`e${n}`);
    this.events.peersChanged(NET, `e${n}`);
  }
}

const pub = (n: number, host = 'h2'): EndpointPublication => ({
  id: `e${n}`,
  networkId: NET,
  name: `s${n}`,
  hostname: `s${n}`,
  aliases: [],
  ipv4: `10.0.0.${n}/24`,
  mac: `02:42:0a:00:00:${n.toString(16).padStart(2, '0')}`,
  host,
  vtep: host === 'h2' ? '192.0.2.2' : '192.0.2.3',
});

class RecordingDriver {
  readonly name = 'overlay';
  calls: string[] = [];
  failUpdate = false;
  async setPeers(_id: string, peers: OverlayPeer[]): Promise<void> {
    this.calls.push(
      `set ${peers
        .map((p) => p.endpointId)
        .sort()
        .join(',')}`,
    );
  }
  async updatePeers(_id: string, c: PeerChange): Promise<void> {
    this.calls.push(
      `update +${c.put.map((p) => `${p.endpointId}@${p.vtep}`).join(',')} -${c.remove.join(',')}`,
    );
    if (this.failUpdate) throw new Error('kernel said no');
  }
}

async function setup(t: TestContext) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cnmd-cluster-peers-'));
  const store = new SqliteStore(dir);
  t.after(() => {
    store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  store.put(KIND.network, NET, {
    id: NET,
    name: 'ov',
    driver: 'overlay',
    scope: 'global',
    state: 'ready',
  } as NetworkRecord);
  const cluster = new FakeCluster();
  const driver = new RecordingDriver();
  const cn = new ClusterNetworks(cluster as unknown as Cluster, {
    store,
    drivers: new Map([['overlay', driver as unknown as Driver]]),
    log: createLogger('silent'),
    mirror: async () => undefined,
    unmirror: async () => undefined,
    dnsChanged: () => undefined,
  });
  await cn.start();
  return { cluster, driver };
}

/** Lets the queued hand-over run to the end (promises only: everything settles before the next macrotask). */
const settle = () => new Promise((r) => setImmediate(r));

test('cluster peers: the first change hands over the whole set, later ones each endpoint alone', async (t) => {
  const { cluster, driver } = await setup(t);
  cluster.put(2);
  await settle();
  // Nothing handed over yet: the driver has no set to build on.
  assert.deepEqual(driver.calls, ['set e2']);
  cluster.put(3);
  await settle();
  cluster.put(3, 'h3'); // moved
  await settle();
  cluster.remove(2);
  await settle();
  cluster.put(4, 'me'); // this host's own: not a peer
  await settle();
  assert.deepEqual(driver.calls, [
    'set e2',
    'update +e3@192.0.2.2 -',
    'update +e3@192.0.2.3 -',
    'update + -e2',
    'update + -e4',
  ]);
});

test('cluster peers: the events of one watch message go in one change; the tick and a resume hand over the whole set', async (t) => {
  const { cluster, driver } = await setup(t);
  cluster.put(2);
  await settle();
  driver.calls = [];
  cluster.put(3);
  cluster.put(4);
  cluster.remove(2);
  await settle();
  assert.deepEqual(driver.calls, ['update +e3@192.0.2.2,e4@192.0.2.2 -e2']);
  driver.calls = [];
  cluster.events.peersChanged(); // the reconcile tick
  await settle();
  cluster.events.peersChanged(NET); // a resumed watch
  await settle();
  assert.deepEqual(driver.calls, ['set e3,e4', 'set e3,e4']);
});

test('cluster peers: a change the driver fails to write is followed by the whole set', async (t) => {
  const { cluster, driver } = await setup(t);
  cluster.put(2);
  await settle();
  driver.failUpdate = true;
  cluster.put(3);
  await settle();
  assert.deepEqual(driver.calls, ['set e2', 'update +e3@192.0.2.2 -', 'set e2,e3']);
});
