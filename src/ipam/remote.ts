// An IPAM served by another process over Docker's remote IpamDriver protocol
// (libnetwork ipams/remote). Its replies carry errors in "Error", not "Err".
import { CnmdError } from '../errors';
import type { Logger } from '../log';
import { PluginClient, PluginClientOptions } from '../remote/client';
import type { SearchDirs } from '../remote/discovery';
import { loadPlugin, onceRetrying } from '../remote/activation';
import { cidrFamily, ipFamily, stripPrefix } from '../net/addr';
import { AddressOptions, GATEWAY_OPTION, Ipam, PoolInfo, PoolRequest, SERIAL_OPTION } from './ipam';

const PROTOCOL = 'IpamDriver';
/** libnetwork's ipamapi.RequestAddressType: the option key that marks a gateway request. */
export const REQUEST_ADDRESS_TYPE = 'RequestAddressType';

export class RemoteIpam implements Ipam {
  readonly name: string;
  readonly client: PluginClient;
  private readonly log?: Logger;
  private spaces?: { local: string; global: string };

  constructor(deps: { client: PluginClient; log?: Logger }) {
    this.client = deps.client;
    this.name = deps.client.name;
    this.log = deps.log;
  }

  /** Finds the plugin (see discovery.ts) and activates it. */
  static async load(
    name: string,
    opts: { dirs: SearchDirs; log?: Logger; client?: PluginClientOptions },
  ): Promise<RemoteIpam> {
    return loadPlugin(name, opts, (client) => new RemoteIpam({ client, log: opts.log }));
  }

  /** Plugin.Activate, once; the plugin must implement IpamDriver. A failure is tried again on the next call. */
  readonly ready = onceRetrying(() => this.client.require(PROTOCOL));

  close(): void {
    this.client.close();
  }

  private async call(method: string, body?: unknown): Promise<Record<string, unknown>> {
    await this.ready();
    return this.client.call(`${PROTOCOL}.${method}`, body, { errorField: 'Error' });
  }

  private bad(method: string, message: string): CnmdError {
    return this.client.error(
      'MALFORMED_REPLY',
      `${PROTOCOL}.${method}`,
      `bad reply: ${message}; fix the plugin`,
    );
  }

  async defaultAddressSpaces(): Promise<{ local: string; global: string }> {
    if (this.spaces) return this.spaces;
    const r = await this.call('GetDefaultAddressSpaces');
    const local = r.LocalDefaultAddressSpace;
    const global = r.GlobalDefaultAddressSpace;
    if (typeof local !== 'string' || local === '')
      throw this.bad(
        'GetDefaultAddressSpaces',
        `LocalDefaultAddressSpace is ${JSON.stringify(local)}, expected a name`,
      );
    if (global !== undefined && global !== null && typeof global !== 'string')
      throw this.bad(
        'GetDefaultAddressSpaces',
        `GlobalDefaultAddressSpace is ${JSON.stringify(global)}, expected a name`,
      );
    this.spaces = { local, global: (global as string | undefined | null) || '' };
    return this.spaces;
  }

  async requestPool(req: PoolRequest): Promise<PoolInfo> {
    const method = 'RequestPool';
    // The engine always names a space; a caller that does not means the plugin's local default.
    const addressSpace = req.addressSpace ?? (await this.defaultAddressSpaces()).local;
    const v6 = !!req.v6;
    const r = await this.call(method, {
      AddressSpace: addressSpace,
      Pool: req.pool ?? '',
      SubPool: req.subPool ?? '',
      Options: req.options ?? {},
      V6: v6,
    });
    const poolId = r.PoolID;
    if (typeof poolId !== 'string' || poolId === '')
      throw this.bad(method, `PoolID is ${JSON.stringify(poolId)}, expected a non-empty string`);
    const problem = poolProblem(r, v6);
    if (problem) {
      // The plugin allocated something cnmd cannot use: give it back before failing.
      await this.call('ReleasePool', { PoolID: poolId }).catch((e) =>
        this.log?.warn({ err: e, plugin: this.name, poolId }, 'releasing a refused pool failed'),
      );
      throw this.bad(method, `${problem} (pool ${poolId} was released)`);
    }
    const info: PoolInfo = { poolId, pool: r.Pool as string };
    const data = r.Data as Record<string, string> | null | undefined;
    if (data && Object.keys(data).length) info.data = data;
    return info;
  }

  async releasePool(poolId: string): Promise<void> {
    await this.call('ReleasePool', { PoolID: poolId });
  }

  async requestAddress(poolId: string, ip?: string, opts: AddressOptions = {}): Promise<string> {
    const method = 'RequestAddress';
    const wanted = ip ? stripPrefix(ip) : '';
    const options: Record<string, string> = {};
    if (opts.gateway) options[REQUEST_ADDRESS_TYPE] = GATEWAY_OPTION;
    if (opts.serial) options[SERIAL_OPTION] = 'true';
    const r = await this.call(method, { PoolID: poolId, Address: wanted, Options: options });
    const addr = r.Address;
    if (addr === undefined || addr === null || addr === '')
      throw this.bad(method, `no Address in the reply for pool ${poolId}`);
    if (cidrFamily(addr) === 0)
      throw this.bad(method, `Address ${JSON.stringify(addr)} is not an address with a prefix (10.1.0.2/24)`);
    const got = addr as string;
    if (wanted && ipFamily(wanted) !== 0 && !sameIp(stripPrefix(got), wanted)) {
      await this.call('ReleaseAddress', { PoolID: poolId, Address: stripPrefix(got) }).catch((e) =>
        this.log?.warn({ err: e, plugin: this.name, poolId }, 'releasing a refused address failed'),
      );
      throw this.bad(method, `asked for ${wanted}, the plugin gave ${got} (released)`);
    }
    return got;
  }

  async releaseAddress(poolId: string, ip: string): Promise<void> {
    await this.call('ReleaseAddress', { PoolID: poolId, Address: stripPrefix(ip) });
  }
}

function poolProblem(r: Record<string, unknown>, v6: boolean): string | undefined {
  const fam = cidrFamily(r.Pool);
  if (fam === 0) return `Pool is ${JSON.stringify(r.Pool)}, expected a CIDR`;
  if (fam !== (v6 ? 6 : 4))
    return `Pool ${r.Pool} is IPv${fam}, but an IPv${v6 ? 6 : 4} pool was requested (V6: ${v6})`;
  const d = r.Data;
  if (
    d !== undefined &&
    d !== null &&
    (typeof d !== 'object' || Array.isArray(d) || Object.values(d).some((v) => typeof v !== 'string'))
  ) {
    return `Data is ${JSON.stringify(d)}, expected an object of strings`;
  }
  return undefined;
}

/** IPv6 has several spellings of one address: compare what they mean. */
function sameIp(a: string, b: string): boolean {
  if (a === b) return true;
  if (ipFamily(a) !== 6 || ipFamily(b) !== 6) return false;
  const expand = (s: string): string => {
    const [head, tail = ''] = s.split('::');
    const h = head ? head.split(':') : [];
    const t = tail ? tail.split(':') : [];
    const fill = s.includes('::') ? Array(8 - h.length - t.length).fill('0') : [];
    return [...h, ...fill, ...t].map((x) => parseInt(x, 16)).join(':');
  };
  // IPv4-embedded forms are rare enough in plugin replies to compare as written.
  if (a.includes('.') || b.includes('.')) return false;
  return expand(a) === expand(b);
}
