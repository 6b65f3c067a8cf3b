// The host driver: the sandbox uses the daemon's own netns. One network, not deletable.
import type { Capabilities, Driver, EndpointInfo, JoinInfo } from '../driver';

export class HostDriver implements Driver {
  readonly name = 'host';
  capabilities(): Capabilities {
    return { scope: 'local', singleton: true, usesHostNetns: true };
  }
  async createNetwork(): Promise<void> {}
  async deleteNetwork(): Promise<void> {}
  async createEndpoint(): Promise<EndpointInfo> {
    return {};
  }
  async deleteEndpoint(): Promise<void> {}
  async join(): Promise<JoinInfo> {
    return { staticRoutes: [], disableGatewayService: true };
  }
  async leave(): Promise<void> {}
  async programExternalConnectivity(): Promise<void> {}
  async revokeExternalConnectivity(): Promise<void> {}
}
