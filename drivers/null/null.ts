// The null driver: the sandbox keeps only its loopback. One network, not deletable.
import type { Capabilities, Driver, EndpointInfo, JoinInfo } from '../driver';

export class NullDriver implements Driver {
  readonly name = 'null';
  capabilities(): Capabilities {
    return { scope: 'local', singleton: true };
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
