// Whether this kernel can carry an encrypted overlay: ESP transport with
// rfc4106(gcm(aes)) through NETLINK_XFRM. Asked of the kernel itself (an SA
// added in a scratch netns, gone with it), and /proc/config.gz, where present,
// names every option that is not set, so one error lists all that is missing.
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { CnmdError, hasCode } from '../../src/errors';
import type { Handle } from '../../src/netlink/handle';
import type { NetnsManager } from '../../src/netns/netns';

/** The kernel options an encrypted overlay needs (per VTEP family), in the order an error lists them. */
export function encryptionKconfig(v6: boolean): string[] {
  return [
    'CONFIG_XFRM_USER',
    v6 ? 'CONFIG_INET6_ESP' : 'CONFIG_INET_ESP',
    'CONFIG_CRYPTO_GCM',
    'CONFIG_CRYPTO_SEQIV',
    // The inbound drop of cleartext VXLAN for an encrypted VNI (CVE-2023-28840).
    'CONFIG_NETFILTER_XT_MATCH_POLICY',
  ];
}

/** The options of `wanted` that a kernel config text says are not set (absent counts as not set). */
export function unsetOptions(configText: string, wanted: string[]): string[] {
  const set = new Set<string>();
  for (const line of configText.split('\n')) {
    const m = /^(CONFIG_[A-Z0-9_]+)=[ym]/.exec(line);
    if (m) set.add(m[1]);
  }
  return wanted.filter((o) => !set.has(o));
}

function readKernelConfig(): string | undefined {
  try {
    return zlib.gunzipSync(fs.readFileSync('/proc/config.gz')).toString('utf8');
  } catch {
    return undefined; // Not every kernel exposes its config (CONFIG_IKCONFIG_PROC): the SA probe alone decides.
  }
}

const SCRATCH_V4 = ['198.51.100.1', '198.51.100.2'];
const SCRATCH_V6 = ['2001:db8:ffff::1', '2001:db8:ffff::2'];

/** The kconfig options that an add of the SA `spec` in h says are missing ([] when it was added). */
async function tryState(h: Handle, spec: Parameters<Handle['xfrmStateAdd']>[0]): Promise<string[]> {
  try {
    await h.xfrmStateAdd(spec);
    return [];
  } catch (e) {
    if (!hasCode(e, 'KERNEL_FEATURE_MISSING')) throw e;
    const k = e.details.kconfig;
    return typeof k === 'string' ? [k] : [];
  }
}

export class EncryptionProbe {
  private readonly netns: NetnsManager;
  /** Per family (v6 or not): a kernel that had it keeps it (modules are not unloaded under us); a failure is asked again next time. */
  private readonly ok = new Set<boolean>();
  private seq = 0;

  constructor(netns: NetnsManager) {
    this.netns = netns;
  }

  /** Resolves when this kernel can do ESP with AES-GCM over the VTEP's family; otherwise KERNEL_FEATURE_MISSING naming the options. */
  async check(op: string, object: string, v6 = false): Promise<void> {
    if (this.ok.has(v6)) return;
    const missing = new Set(await this.probe(v6));
    const config = readKernelConfig();
    if (missing.size && config !== undefined)
      for (const o of unsetOptions(config, encryptionKconfig(v6))) missing.add(o);
    if (!missing.size) {
      this.ok.add(v6);
      return;
    }
    const list = [...missing];
    throw new CnmdError(
      'KERNEL_FEATURE_MISSING',
      `${op} ${object}: encrypted overlay networks need IPsec ESP with AES-GCM, which this kernel lacks: ` +
        `${list.join(', ')} not set; run a kernel built with them (or load their modules)`,
      { op, object, feature: 'IPsec ESP rfc4106(gcm(aes))', kconfig: list.join(',') },
    );
  }

  /** Two SAs in a scratch netns: one with GCM (ENOSYS without it) and one with cbc/hmac (ESP alone). */
  private async probe(v6: boolean): Promise<string[]> {
    const id = `probe-esp-${process.pid}-${++this.seq}`;
    const made = await this.netns.create(id);
    try {
      const [src, dst] = v6 ? SCRATCH_V6 : SCRATCH_V4;
      const base = { src, dst, proto: 'esp' as const, mode: 'transport' as const };
      const gcm = await tryState(made.handle, {
        ...base,
        spi: 0x100,
        aead: { name: 'rfc4106(gcm(aes))', key: Buffer.alloc(20, 0x11), icvBits: 128 },
      });
      const esp = await tryState(made.handle, {
        ...base,
        spi: 0x101,
        crypt: { name: 'cbc(aes)', key: Buffer.alloc(16, 0x11) },
        auth: { name: 'hmac(sha256)', key: Buffer.alloc(32, 0x22), truncBits: 128 },
      });
      // Without ESP the GCM SA fails on ESP too; without cbc/hmac the second one may name CRYPTO_AUTHENC: not ours.
      return [...esp, ...gcm].filter((k) => k !== 'CONFIG_CRYPTO_AUTHENC' && k !== 'CONFIG_CRYPTO_*');
    } finally {
      made.handle.close();
      await this.netns.remove(id);
    }
  }
}
