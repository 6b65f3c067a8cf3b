// One "host"'s IPAM against the cluster store, run by the cluster lane inside
// a host netns (nsenter): `node cluster-ipam-worker.js <store> <dataDir> <hostId> <steps JSON>`.
// Steps run in order; each step's requests run concurrently. Prints one JSON
// object: per step, the addresses given or the error messages.
import { ClusterStore } from '../../src/cluster/etcd';
import { ClusterIpam } from '../../src/ipam/cluster';
import { DefaultIpam } from '../../src/ipam/default';
import { GLOBAL_SPACE } from '../../src/ipam/ipam';
import { createLogger } from '../../src/log';
import { SqliteStore } from '../../src/store/sqlite';
import { stripPrefix } from '../../src/net/addr';

export interface WorkerStep {
  pool: string;
  gateway: string;
  /** Dynamic requests, all at once. */
  dynamic?: number;
  /** Static requests, all at once. */
  statics?: string[];
  /** Addresses to release first. */
  release?: string[];
}

export interface WorkerResult {
  steps: { given: string[]; errors: string[] }[];
  blocks: Record<string, string[]>;
}

async function main(): Promise<void> {
  const [url, dataDir, hostId, stepsJson] = process.argv.slice(2);
  const log = createLogger('warn');
  const store = new SqliteStore(dataDir);
  const cluster = new ClusterStore({ url, log });
  const ipam = new ClusterIpam(store, new DefaultIpam(store), () => ({ store: cluster, hostId }), log);
  const out: WorkerResult = { steps: [], blocks: {} };
  for (const step of JSON.parse(stepsJson) as WorkerStep[]) {
    const pool = await ipam.requestPool({ addressSpace: GLOBAL_SPACE, pool: step.pool });
    await ipam.requestAddress(pool.poolId, step.gateway, { gateway: true });
    for (const ip of step.release ?? []) await ipam.releaseAddress(pool.poolId, ip);
    const reqs = [
      ...Array.from({ length: step.dynamic ?? 0 }, () => ipam.requestAddress(pool.poolId)),
      ...(step.statics ?? []).map((ip) => ipam.requestAddress(pool.poolId, ip)),
    ];
    const settled = await Promise.allSettled(reqs);
    out.steps.push({
      given: settled.flatMap((r) => (r.status === 'fulfilled' ? [stripPrefix(r.value)] : [])),
      errors: settled.flatMap((r) => (r.status === 'rejected' ? [String((r.reason as Error).message)] : [])),
    });
    out.blocks[step.pool] = ipam.blocks(pool.poolId);
  }
  process.stdout.write(JSON.stringify(out));
  cluster.close();
  store.close();
}

void main().catch((e) => {
  process.stderr.write(String((e as Error).stack ?? e));
  process.exit(1);
});
