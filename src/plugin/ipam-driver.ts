// /IpamDriver.* (cnmd-ipam): the engine's pools and addresses from cnmd's
// default IPAM, held as leases so they survive a cnmd restart and are never
// handed to cnmd's own networks meanwhile.
import { z } from 'zod';
import type { Controller } from '../controller/controller';
import { invalidArgument } from '../errors';
import { GATEWAY_OPTION, GLOBAL_SPACE, LOCAL_SPACE, SERIAL_OPTION } from '../ipam/ipam';
import { method, type PluginDef } from './protocol';

const opts = z.record(z.string(), z.string()).nullish();
const poolId = z.string().min(1, 'must be the PoolID RequestPool returned');

export function ipamDriverPlugin(name: string, ctrl: Controller): PluginDef {
  const engine = ctrl.engine;
  return {
    name,
    implements: 'IpamDriver',
    methods: {
      GetCapabilities: method(z.unknown(), () => ({
        RequiresMACAddress: false,
        RequiresRequestReplay: false,
      })),
      GetDefaultAddressSpaces: method(z.unknown(), () => ({
        LocalDefaultAddressSpace: LOCAL_SPACE,
        GlobalDefaultAddressSpace: GLOBAL_SPACE,
      })),
      RequestPool: method(
        z
          .object({
            AddressSpace: z.string().optional(),
            Pool: z.string().optional(),
            SubPool: z.string().optional(),
            Options: opts,
            V6: z.boolean().optional(),
          })
          .passthrough(),
        async (r) => {
          // As the default IPAM: only its two address spaces exist (an empty one is the local default).
          if (r.AddressSpace && r.AddressSpace !== LOCAL_SPACE && r.AddressSpace !== GLOBAL_SPACE)
            throw invalidArgument(
              'ipam request pool',
              r.AddressSpace,
              `address space "${r.AddressSpace}" is not ${LOCAL_SPACE} or ${GLOBAL_SPACE}`,
            );
          const p = await engine.requestPool({
            pool: r.Pool,
            subPool: r.SubPool,
            v6: r.V6,
            options: r.Options ?? {},
          });
          return { PoolID: p.poolId, Pool: p.pool, Data: p.data ?? {} };
        },
      ),
      ReleasePool: method(z.object({ PoolID: poolId }).passthrough(), async (r) => {
        await engine.releasePool(r.PoolID);
        return {};
      }),
      RequestAddress: method(
        z.object({ PoolID: poolId, Address: z.string().optional(), Options: opts }).passthrough(),
        async (r) => {
          const o = r.Options ?? {};
          const address = await engine.requestAddress(r.PoolID, r.Address || undefined, {
            gateway: o.RequestAddressType === GATEWAY_OPTION,
            serial: o[SERIAL_OPTION] === 'true',
          });
          return { Address: address, Data: {} };
        },
      ),
      ReleaseAddress: method(
        z.object({ PoolID: poolId, Address: z.string().min(1, 'must be an IP address') }).passthrough(),
        async (r) => {
          await engine.releaseAddress(r.PoolID, r.Address);
          return {};
        },
      ),
    },
  };
}
