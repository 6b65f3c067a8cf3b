// A driver with no kernel work of its own: the base of host and null.
import type { Capabilities, Driver, EndpointInfo, JoinInfo } from './driver';

export abstract class NoKernelDriver implements Driver {
  abstract readonly name: string;
  abstract capabilities(): Capabilities;
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
