// The firewall seam: one backend interface and the batch of rule operations it applies.
//
// A batch lists, per address family and per table, an ordered list of operations on
// chains and rules. Rules are iptables argument strings as they follow `-A CHAIN`
// (for example `-s 10.1.0.0/24 ! -o br-abc -j MASQUERADE`). Operations are decided in
// order against the current state, so "ensure" operations make a batch idempotent:
// applying the same batch twice changes nothing the second time.
//
// Backends: `IptablesBackend` (iptables.ts, iptables-restore --noflush). An nftables
// backend is a later second implementation of the same interface.
import { invalidArgument } from '../errors';

export type Family = 'ipv4' | 'ipv6';
export type Table = 'filter' | 'nat' | 'mangle' | 'raw';

export const FAMILIES: readonly Family[] = ['ipv4', 'ipv6'];
/**
 * The order tables are written into one restore input. nat first: its rules load the extensions
 * (tcp/udp/sctp matches, DNAT, MASQUERADE) that iptables probes while parsing, and a probe after
 * an earlier table's commit deleted rules waits out that commit's grace period (firewall/README.md);
 * raw (the direct-access DROPs) before filter (the ACCEPTs they guard), so a publish never opens
 * a port before its DROP is in.
 */
export const TABLES: readonly Table[] = ['nat', 'mangle', 'raw', 'filter'];

/** Built-in chains per table (the same for IPv4 and IPv6). */
export const BUILTIN_CHAINS: Readonly<Record<Table, readonly string[]>> = {
  filter: ['INPUT', 'FORWARD', 'OUTPUT'],
  nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'],
  mangle: ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'],
  raw: ['PREROUTING', 'OUTPUT'],
};

export function isBuiltinChain(table: Table, chain: string): boolean {
  return BUILTIN_CHAINS[table].includes(chain);
}

/** One operation on one chain of one table. Positions are 1-based, as in `iptables -I`. */
export type RuleOp =
  /** Creates the chain if it does not exist; never flushes an existing one. No-op for built-in chains. */
  | { kind: 'ensureChain'; chain: string }
  /** Removes every rule of the chain, which must exist unless `ifExists`. */
  | { kind: 'flushChain'; chain: string; ifExists?: boolean }
  /** Deletes a user chain; it must be empty and unreferenced. `ifExists`: a missing chain is not an error. */
  | { kind: 'deleteChain'; chain: string; ifExists?: boolean }
  /** Appends unconditionally (may duplicate). */
  | { kind: 'append'; chain: string; rule: string }
  /** Inserts unconditionally at `position` (1 .. length+1). */
  | { kind: 'insert'; chain: string; rule: string; position: number }
  /** Deletes the first matching rule; the rule must be present. */
  | { kind: 'delete'; chain: string; rule: string }
  /**
   * Adds the rule only if it is absent: inserted at `position` (clamped to the chain's
   * length + 1) or appended when no position is given. With `pinned`, the rule must sit
   * exactly at `position`: a copy elsewhere is moved there (used for FORWARD's jumps,
   * which Docker keeps at the top).
   */
  | { kind: 'ensureRule'; chain: string; rule: string; position?: number; pinned?: boolean }
  /** Deletes every copy of the rule, if any. */
  | { kind: 'deleteIfPresent'; chain: string; rule: string };

export type TableOps = Partial<Record<Table, RuleOp[]>>;

/** Operations per family and table. Families are applied IPv4 first; tables in TABLES order. */
export interface RuleBatch {
  ipv4?: TableOps;
  ipv6?: TableOps;
}

export interface FirewallBackend {
  readonly name: string;
  /**
   * Applies a batch: all of it or, on failure, none of it (see the backend for how).
   * Rejects with CnmdError (code INVALID_ARGUMENT, NOT_FOUND, CONFLICT or KERNEL_ERROR, op 'firewall apply').
   */
  apply(batch: RuleBatch): Promise<void>;
  /** The rules of one chain as iptables-save prints them, without the `-A CHAIN ` prefix. */
  chainRules(table: Table, chain: string, family?: Family): Promise<string[]>;
  /** iptables-save output for one table or all of them. */
  save(table?: Table, family?: Family): Promise<string>;
}

// ---- building batches ------------------------------------------------------------------

/** Fluent builder for the operations of one table of one family. */
export class TableOpsBuilder {
  constructor(readonly ops: RuleOp[]) {}
  ensureChain(chain: string): this {
    this.ops.push({ kind: 'ensureChain', chain });
    return this;
  }
  flushChain(chain: string, ifExists = false): this {
    this.ops.push(ifExists ? { kind: 'flushChain', chain, ifExists } : { kind: 'flushChain', chain });
    return this;
  }
  deleteChain(chain: string, ifExists = false): this {
    this.ops.push(ifExists ? { kind: 'deleteChain', chain, ifExists } : { kind: 'deleteChain', chain });
    return this;
  }
  append(chain: string, rule: string): this {
    this.ops.push({ kind: 'append', chain, rule });
    return this;
  }
  insert(chain: string, position: number, rule: string): this {
    this.ops.push({ kind: 'insert', chain, rule, position });
    return this;
  }
  delete(chain: string, rule: string): this {
    this.ops.push({ kind: 'delete', chain, rule });
    return this;
  }
  ensureRule(chain: string, rule: string, opts: { position?: number; pinned?: boolean } = {}): this {
    const op: RuleOp = { kind: 'ensureRule', chain, rule };
    if (opts.position !== undefined) op.position = opts.position;
    if (opts.pinned) op.pinned = true;
    this.ops.push(op);
    return this;
  }
  deleteIfPresent(chain: string, rule: string): this {
    this.ops.push({ kind: 'deleteIfPresent', chain, rule });
    return this;
  }
}

export class BatchBuilder {
  private readonly batch: RuleBatch = {};
  /** The operations of `table` in `family`, appended in call order. */
  in(table: Table, family: Family = 'ipv4'): TableOpsBuilder {
    const fam = (this.batch[family] ??= {});
    return new TableOpsBuilder((fam[table] ??= []));
  }
  build(): RuleBatch {
    return this.batch;
  }
}

/** Concatenates batches: per family and table, the operations of `a` then `b` ... */
export function mergeBatches(...batches: RuleBatch[]): RuleBatch {
  const out: RuleBatch = {};
  for (const b of batches) {
    for (const family of FAMILIES) {
      const src = b[family];
      if (!src) continue;
      const dst = (out[family] ??= {});
      for (const table of TABLES) {
        const ops = src[table];
        if (ops && ops.length) (dst[table] ??= []).push(...ops);
      }
    }
  }
  return out;
}

/** Number of operations in a batch. */
export function batchSize(batch: RuleBatch): number {
  let n = 0;
  for (const family of FAMILIES) for (const table of TABLES) n += batch[family]?.[table]?.length ?? 0;
  return n;
}

// ---- validation shared by backends -------------------------------------------------------

const CHAIN_NAME = /^[A-Za-z0-9_.:+-]{1,28}$/;

/** Chain names as iptables accepts them (at most 28 characters, no whitespace, not an option). */
export function validateChainName(op: string, chain: string): void {
  if (typeof chain !== 'string' || !CHAIN_NAME.test(chain) || chain.startsWith('-') || chain === '!') {
    throw invalidArgument(op, chain, `invalid chain name ${JSON.stringify(chain)}`);
  }
}

/** Rule text is one line of arguments; no line breaks or NULs (they would forge restore lines). */
export function validateRuleText(op: string, rule: string): void {
  if (typeof rule !== 'string' || rule.trim() === '' || /[\r\n\0]/.test(rule)) {
    throw invalidArgument(op, String(rule), `invalid rule text ${JSON.stringify(rule)}`);
  }
}
