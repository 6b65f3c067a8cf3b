// Key material of encrypted overlays (issue 17), pure: the cluster secret the
// operator distributes (--cluster-secret-file), ring keys sealed under it for
// the cluster store, per-pair ESP keys and SPIs derived from a ring key.
// Nothing here is sent anywhere in clear; etcd only ever holds sealed keys.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { CnmdError, invalidArgument } from '../errors';
import { ipToBytes } from '../net/addr';

/** At least 256 bits: the secret is the root of every key. */
export const CLUSTER_SECRET_MIN_BYTES = 32;
/** AES-256 ring keys. */
export const RING_KEY_BYTES = 32;
/** rfc4106(gcm(aes)) key material: a 32-byte AES-256 key and the 4-byte salt (nonce prefix). */
export const ESP_KEY_BYTES = 36;

export interface ClusterSecret {
  /** AES-256-GCM key that seals ring keys (HKDF of the file's bytes); the bytes themselves are not kept. */
  readonly wrapKey: Buffer;
  /** Names the secret without revealing it (HKDF, distinct info): logs and errors may show it. */
  readonly fingerprint: string;
}

const hkdf = (ikm: Buffer, salt: string | Buffer, info: string | Buffer, len: number): Buffer =>
  Buffer.from(crypto.hkdfSync('sha256', ikm, salt, info, len));

export function clusterSecret(bytes: Buffer, source = 'the cluster secret'): ClusterSecret {
  if (bytes.length < CLUSTER_SECRET_MIN_BYTES)
    throw invalidArgument(
      'cluster secret',
      source,
      `${source} holds ${bytes.length} bytes; it needs at least ${CLUSTER_SECRET_MIN_BYTES} random bytes ` +
        `(make one with: head -c 64 /dev/urandom > FILE, and copy that file to every host)`,
    );
  return {
    wrapKey: hkdf(bytes, 'cnmd cluster secret v1', 'ring key wrap', 32),
    fingerprint: hkdf(bytes, 'cnmd cluster secret v1', 'fingerprint', 8).toString('hex'),
  };
}

/** --cluster-secret-file: a file of random bytes, the same on every host. */
export function readClusterSecret(file: string): ClusterSecret {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? String(e);
    throw invalidArgument(
      'cluster secret',
      file,
      `--cluster-secret-file ${file}: cannot be read (${code}); give a file of at least ${CLUSTER_SECRET_MIN_BYTES} random bytes, the same on every host`,
    );
  }
  return clusterSecret(bytes, `--cluster-secret-file ${file}`);
}

/** A ring key as the cluster store holds it: AES-256-GCM under the secret's wrap key, its tag as AAD. */
export interface SealedRingKey {
  tag: number;
  nonce: string;
  sealed: string;
}

const aad = (tag: number) => Buffer.from(`cnmd ring key ${tag >>> 0}`);

function checkTag(op: string, tag: number): void {
  if (!Number.isInteger(tag) || tag < 1 || tag > 0xffffffff)
    throw invalidArgument(op, String(tag), `key tag ${tag} is not an integer in 1..4294967295`);
}

export function sealRingKey(secret: ClusterSecret, tag: number, key: Buffer): SealedRingKey {
  checkTag('ring key seal', tag);
  if (key.length !== RING_KEY_BYTES)
    throw invalidArgument(
      'ring key seal',
      String(tag),
      `a ring key is ${RING_KEY_BYTES} bytes, not ${key.length}`,
    );
  const nonce = crypto.randomBytes(12);
  const c = crypto.createCipheriv('aes-256-gcm', secret.wrapKey, nonce);
  c.setAAD(aad(tag));
  const ct = Buffer.concat([c.update(key), c.final(), c.getAuthTag()]);
  return { tag, nonce: nonce.toString('base64'), sealed: ct.toString('base64') };
}

/**
 * The ring key; a wrong cluster secret (or a record altered, or moved to
 * another tag) fails GCM's authentication: FORBIDDEN, and nothing is changed.
 */
export function openRingKey(secret: ClusterSecret, rec: SealedRingKey): Buffer {
  const op = 'ring key open';
  checkTag(op, rec.tag);
  const nonce = Buffer.from(rec.nonce ?? '', 'base64');
  const ct = Buffer.from(rec.sealed ?? '', 'base64');
  if (nonce.length !== 12 || ct.length !== RING_KEY_BYTES + 16)
    throw new CnmdError('MALFORMED_REPLY', `${op} ${rec.tag}: the cluster store's sealed key is malformed`, {
      op,
      object: String(rec.tag),
    });
  const d = crypto.createDecipheriv('aes-256-gcm', secret.wrapKey, nonce);
  d.setAAD(aad(rec.tag));
  d.setAuthTag(ct.subarray(RING_KEY_BYTES));
  try {
    return Buffer.concat([d.update(ct.subarray(0, RING_KEY_BYTES)), d.final()]);
  } catch {
    throw new CnmdError(
      'FORBIDDEN',
      `${op} ${rec.tag}: the cluster's encryption keys do not open with this host's cluster secret ` +
        `(fingerprint ${secret.fingerprint}); give every host the same --cluster-secret-file`,
      { op, object: String(rec.tag), fingerprint: secret.fingerprint },
    );
  }
}

export function newRingKey(): Buffer {
  return crypto.randomBytes(RING_KEY_BYTES);
}

/** An address in 16 bytes (IPv4 as IPv4-mapped IPv6), as libnetwork hashes it. */
function addr16(op: string, ip: string): Buffer {
  const b = ipToBytes(ip);
  if (!b) throw invalidArgument(op, ip, `"${ip}" is not an IP address`);
  if (b.length === 16) return b;
  return Buffer.concat([Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]), b]);
}

/**
 * The ESP key (AES-256 key || 4-byte salt) for traffic src -> dst under ring
 * key `tag`: HKDF of the ring key with the ordered pair, so each direction of
 * each pair has its own key and one of them says nothing about the others
 * (libnetwork uses the ring key itself for every pair).
 */
export function pairKey(ringKey: Buffer, tag: number, src: string, dst: string): Buffer {
  const op = 'pair key';
  checkTag(op, tag);
  const salt = Buffer.alloc(4);
  salt.writeUInt32BE(tag >>> 0);
  const info = Buffer.concat([Buffer.from('cnmd esp pair v1'), addr16(op, src), addr16(op, dst)]);
  return hkdf(ringKey, salt, info, ESP_KEY_BYTES);
}

/**
 * The SPI of the SA src -> dst under key `tag`: libnetwork's scheme
 * (FNV-1a 32 of src16 || tag BE || dst16, so both ends derive it, nothing is
 * exchanged), moved out of 0..255, which RFC 4303 reserves.
 */
export function buildSpi(src: string, dst: string, tag: number): number {
  const op = 'spi';
  checkTag(op, tag);
  const t = Buffer.alloc(4);
  t.writeUInt32BE(tag >>> 0);
  let h = 0x811c9dc5;
  for (const b of Buffer.concat([addr16(op, src), t, addr16(op, dst)])) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h < 256 ? h + 256 : h;
}
