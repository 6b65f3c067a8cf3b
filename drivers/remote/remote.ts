// A network driver served by another process over Docker's remote
// NetworkDriver protocol (libnetwork drivers/remote), with the part the engine
// itself plays: the interface the plugin creates is moved into the sandbox
// and configured here (plumb.ts).
import { CnmdError } from '../../src/errors';
import { Handle } from '../../src/netlink/handle';
import type { Logger } from '../../src/log';
import type { PortBinding } from '../../src/portmap/spec';
import { PluginClient, PluginClientOptions, isPluginStatus } from '../../src/remote/client';
import type { SearchDirs } from '../../src/remote/discovery';
import { loadPlugin, onceRetrying } from '../../src/remote/activation';
import type {
  Capabilities,
  Driver,
  EndpointInfo,
  EndpointSpec,
  ExternalConnectivityOptions,
  JoinInfo,
  LeaveOptions,
  NetworkSpec,
  SandboxRef,
} from '../driver';
import { hostNsPath, moveBack, moveIntoSandbox, renameInHost } from './plumb';
import {
  ReplyError,
  createEndpointRequest,
  createNetworkRequest,
  parseCapabilities,
  parseEndpointReply,
  parseJoinReply,
  portOptions,
} from './wire';

export interface RemoteDriverDeps {
  client: PluginClient;
  /** A handle in the daemon's own netns, where plugins create the interfaces they name in Join. */
  host: Handle;
  log?: Logger;
}

interface Joined {
  /** The plugin's name for the interface (Join's InterfaceName.SrcName). */
  srcName: string;
  ifname: string;
  /** The sandbox it was moved into; absent when it was left in the daemon's netns for the engine. */
  sandboxKey?: string;
}

interface EndpointState {
  networkId: string;
  address?: string;
  addressIPv6?: string;
  mac?: string;
  joined?: Joined;
}

/** Until GetCapabilities answers: what most plugins are, so a synchronous caller gets an answer. */
const FALLBACK: Capabilities = { scope: 'local', connectivityScope: 'local', portMapping: true };

const PROTOCOL = 'NetworkDriver';

export class RemoteDriver implements Driver {
  readonly name: string;
  readonly client: PluginClient;
  private readonly host: Handle;
  private readonly log?: Logger;
  private caps?: Capabilities;
  private readonly endpoints = new Map<string, EndpointState>();
  // Calls already made to the plugin while failing a step: the controller undoes
  // the failing step too, and the plugin must not see the same Delete/Leave twice.
  private readonly undone = new Set<string>();

  constructor(deps: RemoteDriverDeps) {
    this.client = deps.client;
    this.name = deps.client.name;
    this.host = deps.host;
    this.log = deps.log;
  }

  /** Finds the plugin (see discovery.ts), activates it and reads its capabilities. */
  static async load(
    name: string,
    opts: { dirs: SearchDirs; host: Handle; log?: Logger; client?: PluginClientOptions },
  ): Promise<RemoteDriver> {
    return loadPlugin(name, opts, (client) => new RemoteDriver({ client, host: opts.host, log: opts.log }));
  }

  /**
   * Plugin.Activate (must implement NetworkDriver) then GetCapabilities, once;
   * every call waits for it. After a failure the next call tries again.
   */
  readonly ready = onceRetrying(async (): Promise<Capabilities> => {
    await this.client.require(PROTOCOL);
    const method = `${PROTOCOL}.GetCapabilities`;
    const reply = await this.client.call(method, undefined, { errorField: 'Err' });
    try {
      this.caps = parseCapabilities(reply);
    } catch (e) {
      throw this.replyError(method, e);
    }
    return this.caps;
  });

  capabilities(): Capabilities {
    return this.caps ?? FALLBACK;
  }

  close(): void {
    this.client.close();
  }

  private async call(method: string, body: unknown): Promise<Record<string, unknown>> {
    await this.ready();
    return this.client.call(`${PROTOCOL}.${method}`, body, { errorField: 'Err' });
  }

  private replyError(method: string, e: unknown, rollback?: string): unknown {
    if (!(e instanceof ReplyError)) return e;
    return this.client.error(
      'MALFORMED_REPLY',
      method,
      `bad reply: ${e.message}; fix the plugin${rollback ? `; ${rollback}` : ''}`,
      { field: e.field },
    );
  }

  /** Runs the plugin call that undoes a half-done step; describes the outcome for the error message. */
  private async rollback(key: string, method: string, body: unknown): Promise<string> {
    try {
      await this.call(method, body);
      this.undone.add(key);
      return `cnmd called ${PROTOCOL}.${method} to roll back`;
    } catch (re) {
      this.log?.error({ err: re, plugin: this.name, method }, 'plugin rollback failed');
      return `rolling back with ${PROTOCOL}.${method} failed too: ${(re as Error).message}`;
    }
  }

  async createNetwork(spec: NetworkSpec): Promise<void> {
    await this.call('CreateNetwork', createNetworkRequest(spec));
  }

  async deleteNetwork(networkId: string): Promise<void> {
    await this.call('DeleteNetwork', { NetworkID: networkId });
    for (const [id, ep] of this.endpoints) if (ep.networkId === networkId) this.endpoints.delete(id);
  }

  /** An interrupted create or delete: the plugin may or may not hold the network. */
  async cleanupNetwork(spec: NetworkSpec): Promise<void> {
    try {
      await this.call('DeleteNetwork', { NetworkID: spec.id });
    } catch (e) {
      // The plugin answered (it does not know the network): nothing to clean. Unreachable or stuck: the caller logs it.
      if (!(e instanceof CnmdError && e.code === 'PLUGIN_ERROR' && typeof e.details.status === 'number'))
        throw e;
    }
    for (const [id, ep] of this.endpoints) if (ep.networkId === spec.id) this.endpoints.delete(id);
  }

  async createEndpoint(spec: EndpointSpec): Promise<EndpointInfo> {
    const method = 'CreateEndpoint';
    const reply = await this.call(method, createEndpointRequest(spec));
    let fill;
    try {
      fill = parseEndpointReply(spec, reply);
    } catch (e) {
      const rb = await this.rollback(`delete:${spec.endpointId}`, 'DeleteEndpoint', {
        NetworkID: spec.networkId,
        EndpointID: spec.endpointId,
      });
      throw this.replyError(`${PROTOCOL}.${method}`, e, rb);
    }
    this.endpoints.set(spec.endpointId, {
      networkId: spec.networkId,
      address: spec.address ?? fill.address,
      addressIPv6: spec.addressIPv6 ?? fill.addressIPv6,
      mac: spec.mac ?? fill.mac,
    });
    return fill;
  }

  async deleteEndpoint(networkId: string, endpointId: string): Promise<void> {
    this.endpoints.delete(endpointId);
    if (this.undone.delete(`delete:${endpointId}`)) return;
    await this.call('DeleteEndpoint', { NetworkID: networkId, EndpointID: endpointId });
  }

  async join(
    networkId: string,
    endpointId: string,
    sb: SandboxRef,
    options: Record<string, unknown>,
  ): Promise<JoinInfo> {
    const method = `${PROTOCOL}.Join`;
    const ep = this.endpoints.get(endpointId);
    if (!ep) {
      throw this.client.error(
        'NOT_FOUND',
        method,
        `endpoint ${endpointId} is not known to cnmd's remote driver (not created through it, or lost); ` +
          `recreate the endpoint`,
      );
    }
    this.undone.delete(`leave:${endpointId}`);
    const reply = await this.call('Join', {
      NetworkID: networkId,
      EndpointID: endpointId,
      SandboxKey: sb.key,
      Options: options ?? {},
    });
    let iface = '';
    try {
      const { srcName, info } = parseJoinReply(reply);
      if (srcName === undefined) return info;
      iface = srcName;
      if (sb.handle) {
        await moveIntoSandbox(this.host, sb.handle, sb.key, srcName, sb.ifname, ep, this.log);
        ep.joined = { srcName, ifname: sb.ifname, sandboxKey: sb.key };
        return info;
      }
      // The engine moves and configures the interface itself: hand it over under the name it expects.
      await renameInHost(this.host, srcName, sb.ifname);
      ep.joined = { srcName, ifname: sb.ifname };
      return { ...info, srcName: sb.ifname };
    } catch (e) {
      const rb = await this.rollback(`leave:${endpointId}`, 'Leave', {
        NetworkID: networkId,
        EndpointID: endpointId,
      });
      if (e instanceof ReplyError) throw this.replyError(method, e, rb);
      throw this.interfaceError(method, iface, sb, e, rb);
    }
  }

  private interfaceError(
    method: string,
    srcName: string,
    sb: SandboxRef,
    e: unknown,
    rollback: string,
  ): unknown {
    if (!(e instanceof CnmdError)) return e;
    if (e.code === 'NOT_FOUND' && e.op === 'link get') {
      return this.client.error(
        'PLUGIN_ERROR',
        method,
        `the reply names interface "${srcName}" (InterfaceName.SrcName), but cnmd's network namespace has ` +
          `no such link; the plugin must create it in the daemon's netns before answering Join; ${rollback}`,
        { cause: e },
      );
    }
    const hint =
      e.code === 'ALREADY_EXISTS'
        ? ` (the sandbox or cnmd's netns already has a link named ${sb.ifname}: remove it)`
        : '';
    return new CnmdError(
      e.code,
      `${this.client.label}: ${method}: putting the plugin's interface "${srcName}" into sandbox ${sb.id} ` +
        `as ${sb.ifname} failed: ${e.message}${hint}; ${rollback}`,
      {
        ...e.details,
        op: method,
        object: this.name,
        plugin: this.name,
        cause: e,
      },
    );
  }

  async leave(networkId: string, endpointId: string, opts: LeaveOptions = {}): Promise<void> {
    const ep = this.endpoints.get(endpointId);
    const joined = ep?.joined;
    if (ep) ep.joined = undefined;
    if (this.undone.delete(`leave:${endpointId}`)) return;
    // A destroyed sandbox took the interface with it; otherwise give it back to the plugin under its own name.
    if (joined && !opts.sandboxDestroyed) await this.giveBack(joined);
    await this.call('Leave', { NetworkID: networkId, EndpointID: endpointId });
  }

  private async giveBack(j: Joined): Promise<void> {
    try {
      if (j.sandboxKey)
        await Handle.inNetns(j.sandboxKey, (h) => moveBack(h, hostNsPath(this.host), j.ifname, j.srcName));
      else await renameInHost(this.host, j.ifname, j.srcName, true);
    } catch (e) {
      // The plugin's Leave must still run: it owns the interface and frees it either way.
      this.log?.warn(
        { err: e, plugin: this.name, ifname: j.ifname, srcName: j.srcName },
        'could not move the interface back to the plugin',
      );
    }
  }

  async programExternalConnectivity(
    networkId: string,
    endpointId: string,
    options: ExternalConnectivityOptions,
  ): Promise<PortBinding[] | void> {
    const bindings = options.portBindings;
    try {
      await this.call('ProgramExternalConnectivity', {
        NetworkID: networkId,
        EndpointID: endpointId,
        Options: portOptions(bindings ?? []),
      });
    } catch (e) {
      // Optional in the protocol (libnetwork): a plugin without it publishes nothing.
      if (isPluginStatus(e, 404)) return bindings ? [] : undefined;
      throw e;
    }
    // The plugin owns the host ports: cnmd records them as requested.
    return bindings;
  }

  async revokeExternalConnectivity(networkId: string, endpointId: string): Promise<void> {
    try {
      await this.call('RevokeExternalConnectivity', { NetworkID: networkId, EndpointID: endpointId });
    } catch (e) {
      if (!isPluginStatus(e, 404)) throw e;
    }
  }

  /**
   * The plugin keeps its own state across a cnmd restart: only what this side
   * needs (endpoint addresses and MAC for Join) is rebuilt, without calling it.
   * Where a joined interface sits is not in the specs, so a Leave after a restart
   * leaves it to the plugin to remove.
   */
  async restore(_networks: NetworkSpec[], endpoints: EndpointSpec[]): Promise<void> {
    this.endpoints.clear();
    this.undone.clear();
    for (const e of endpoints) {
      this.endpoints.set(e.endpointId, {
        networkId: e.networkId,
        address: e.address,
        addressIPv6: e.addressIPv6,
        mac: e.mac,
      });
    }
  }
}
