// The iptables backend: applies a RuleBatch with ONE `iptables-restore --noflush --wait`
// process per address family (ip6tables-restore for IPv6), never one process per rule,
// and makes the batch all-or-nothing. How iptables-restore behaves, how a batch is made
// all-or-nothing and what the table cache assumes: src/firewall/README.md.
import { defaultExec, SpareProcesses, type Exec, type ExecOptions, type ExecResult } from './exec';
import { CnmdError, type ErrorCode, settled } from '../errors';
import type { Logger } from '../log';
import { canonicalRule, ruleTarget, tokenize } from './canonical';
import { restored, restoreInput, together, type Together } from './restore-input';
import {
  BUILTIN_CHAINS,
  FAMILIES,
  TABLES,
  isBuiltinChain,
  validateChainName,
  validateRuleText,
  type Family,
  type FirewallBackend,
  type RuleBatch,
  type RuleOp,
  type Table,
  type TableOps,
} from './firewall';

// ---- running commands ------------------------------------------------------------------

export { defaultExec, SpareProcesses, type Exec, type ExecOptions, type ExecResult } from './exec';

// ---- state model -------------------------------------------------------------------------

interface RuleEntry {
  /** Canonical text (as iptables-save prints it): what presence is decided on. */
  key: string;
  /** Text to write into a restore input. */
  text: string;
}
interface ChainState {
  builtin: boolean;
  policy?: string;
  rules: RuleEntry[];
}
type TableState = Map<string, ChainState>;

function emptyTable(table: Table): TableState {
  const t: TableState = new Map();
  for (const c of BUILTIN_CHAINS[table]) t.set(c, { builtin: true, policy: 'ACCEPT', rules: [] });
  return t;
}

function cloneTable(t: TableState): TableState {
  const out: TableState = new Map();
  for (const [name, c] of t) out.set(name, { builtin: c.builtin, policy: c.policy, rules: c.rules.slice() });
  return out;
}

function isTable(s: string): s is Table {
  return (TABLES as readonly string[]).includes(s);
}

/** Parses iptables-save output into tables (only the tables it lists). */
export function parseSave(text: string): Map<Table, TableState> {
  const out = new Map<Table, TableState>();
  let cur: TableState | undefined;
  let curName: Table | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('*')) {
      const name = line.slice(1);
      curName = isTable(name) ? name : undefined;
      cur = curName ? new Map() : undefined;
      if (curName && cur) out.set(curName, cur);
      continue;
    }
    if (!cur || !curName) continue;
    if (line === 'COMMIT') {
      cur = undefined;
      continue;
    }
    if (line.startsWith(':')) {
      const [name, policy] = line.slice(1).split(/\s+/);
      const builtin = isBuiltinChain(curName, name);
      cur.set(name, { builtin, policy: builtin ? policy : undefined, rules: [] });
      continue;
    }
    const m = /^-A\s+(\S+)\s*(.*)$/.exec(line);
    if (m) {
      let chain = cur.get(m[1]);
      if (!chain) cur.set(m[1], (chain = { builtin: isBuiltinChain(curName, m[1]), rules: [] }));
      const text = m[2].replace(/\s+/g, ' ');
      chain.rules.push({ key: text, text });
    }
  }
  // Built-in chains are always there even when a table was never used.
  for (const [name, t] of out)
    for (const c of BUILTIN_CHAINS[name])
      if (!t.has(c)) t.set(c, { builtin: true, policy: 'ACCEPT', rules: [] });
  return out;
}

// ---- planning ------------------------------------------------------------------------------

interface LineOrigin {
  table: Table;
  chain: string;
  rule?: string;
  line: string;
}

interface FamilyPlan {
  family: Family;
  lines: string[];
  /** Per restore line (0-based), where it came from; undefined for *table / COMMIT. */
  origins: (LineOrigin | undefined)[];
  /** States after the batch, for the tables it has operations for. */
  next: Map<Table, TableState>;
  /** Chains named by the batch, per table: what a rollback restores. */
  touched: Map<Table, Set<string>>;
  /** Number of lines that change something (excludes *table/COMMIT). */
  changes: number;
}

const OP = 'firewall apply';

function refusal(code: ErrorCode, family: Family, table: Table, op: RuleOp, message: string): CnmdError {
  const rule = 'rule' in op ? ` ${op.rule}` : '';
  const object = `${family} -t ${table} ${op.chain}${rule}`;
  return new CnmdError(code, `${OP}: ${message} (${object})`, {
    op: OP,
    object,
    family,
    table,
    chain: op.chain,
  });
}

function positionOk(p: unknown): p is number {
  return typeof p === 'number' && Number.isInteger(p) && p >= 1;
}

/** Decides every operation against `state` (which is not modified) and writes the restore input. */
function planFamily(family: Family, ops: TableOps, state: Map<Table, TableState>): FamilyPlan {
  const plan: FamilyPlan = {
    family,
    lines: [],
    origins: [],
    next: new Map(),
    touched: new Map(),
    changes: 0,
  };
  for (const table of TABLES) {
    const list = ops[table];
    if (!list || list.length === 0) continue;
    const t = cloneTable(state.get(table) ?? emptyTable(table));
    const touched = new Set<string>();
    const block: string[] = [];
    const origins: LineOrigin[] = [];
    const emit = (chain: string, line: string, rule?: string) => {
      block.push(line);
      origins.push({ table, chain, rule, line });
    };
    const chainOf = (op: RuleOp, mustExist: boolean): ChainState | undefined => {
      const c = t.get(op.chain);
      if (!c && mustExist)
        throw refusal('NOT_FOUND', family, table, op, `chain ${op.chain} does not exist in table ${table}`);
      return c;
    };
    for (const op of list) {
      validateChainName(OP, op.chain);
      touched.add(op.chain);
      switch (op.kind) {
        case 'ensureChain':
          if (!t.has(op.chain)) {
            if (isBuiltinChain(table, op.chain))
              throw refusal('INVALID_ARGUMENT', family, table, op, 'not a chain of this table');
            t.set(op.chain, { builtin: false, rules: [] });
            emit(op.chain, `:${op.chain} - [0:0]`);
          }
          break;
        case 'flushChain': {
          const c = chainOf(op, !op.ifExists);
          if (c && c.rules.length > 0) {
            c.rules = [];
            emit(op.chain, `-F ${op.chain}`);
          }
          break;
        }
        case 'deleteChain': {
          if (isBuiltinChain(table, op.chain))
            throw refusal(
              'INVALID_ARGUMENT',
              family,
              table,
              op,
              `built-in chain ${op.chain} cannot be deleted`,
            );
          const c = chainOf(op, !op.ifExists);
          if (!c) break;
          if (c.rules.length > 0)
            throw refusal('CONFLICT', family, table, op, `chain ${op.chain} is not empty (flush it first)`);
          for (const [name, other] of t) {
            const ref = other.rules.find((r) => ruleTarget(r.key) === op.chain);
            if (ref)
              throw refusal(
                'CONFLICT',
                family,
                table,
                op,
                `chain ${op.chain} is still referenced by "-A ${name} ${ref.text}"`,
              );
          }
          t.delete(op.chain);
          emit(op.chain, `-X ${op.chain}`);
          break;
        }
        case 'append':
        case 'insert':
        case 'delete':
        case 'ensureRule':
        case 'deleteIfPresent': {
          validateRuleText(OP, op.rule);
          const text = op.rule.trim();
          let key: string;
          try {
            key = canonicalRule(text, family);
          } catch (e) {
            if (e instanceof CnmdError)
              throw refusal('INVALID_ARGUMENT', family, table, op, e.message.replace(/^firewall rule: /, ''));
            throw e;
          }
          const target = ruleTarget(key);
          if (op.kind === 'deleteIfPresent') {
            const c = chainOf(op, false);
            if (!c) break;
            for (
              let i = c.rules.findIndex((r) => r.key === key);
              i >= 0;
              i = c.rules.findIndex((r) => r.key === key)
            ) {
              c.rules.splice(i, 1);
              emit(op.chain, `-D ${op.chain} ${text}`, text);
            }
            break;
          }
          const c = chainOf(op, true)!;
          if (op.kind !== 'delete' && target && !t.has(target) && looksLikeChain(target)) {
            throw refusal(
              'NOT_FOUND',
              family,
              table,
              op,
              `jump target chain ${target} does not exist in table ${table}`,
            );
          }
          const entry: RuleEntry = { key, text };
          if (op.kind === 'append') {
            c.rules.push(entry);
            emit(op.chain, `-A ${op.chain} ${text}`, text);
          } else if (op.kind === 'insert') {
            if (!positionOk(op.position) || op.position > c.rules.length + 1) {
              throw refusal(
                'INVALID_ARGUMENT',
                family,
                table,
                op,
                `position ${op.position} is outside 1..${c.rules.length + 1}`,
              );
            }
            c.rules.splice(op.position - 1, 0, entry);
            emit(op.chain, `-I ${op.chain} ${op.position} ${text}`, text);
          } else if (op.kind === 'delete') {
            const i = c.rules.findIndex((r) => r.key === key);
            if (i < 0) throw refusal('NOT_FOUND', family, table, op, 'no such rule');
            c.rules.splice(i, 1);
            emit(op.chain, `-D ${op.chain} ${text}`, text);
          } else {
            // ensureRule
            if (op.position !== undefined && !positionOk(op.position)) {
              throw refusal(
                'INVALID_ARGUMENT',
                family,
                table,
                op,
                `position ${op.position} is not a positive integer`,
              );
            }
            const copies = c.rules.filter((r) => r.key === key).length;
            const pos = op.pinned ? (op.position ?? 1) : op.position;
            if (op.pinned) {
              const at = c.rules.findIndex((r) => r.key === key);
              if (copies === 1 && at === Math.min(pos!, c.rules.length) - 1) break;
              for (let n = 0; n < copies; n++) {
                c.rules.splice(
                  c.rules.findIndex((r) => r.key === key),
                  1,
                );
                emit(op.chain, `-D ${op.chain} ${text}`, text);
              }
            } else if (copies > 0) break;
            if (pos !== undefined && pos <= c.rules.length) {
              c.rules.splice(pos - 1, 0, entry);
              emit(op.chain, `-I ${op.chain} ${pos} ${text}`, text);
            } else {
              c.rules.push(entry);
              emit(op.chain, `-A ${op.chain} ${text}`, text);
            }
          }
          break;
        }
        default: {
          const never: never = op;
          throw new CnmdError('INVALID_ARGUMENT', `${OP}: unknown operation ${JSON.stringify(never)}`, {
            op: OP,
          });
        }
      }
    }
    plan.next.set(table, t);
    plan.touched.set(table, touched);
    if (block.length === 0) continue;
    plan.lines.push(`*${table}`);
    plan.origins.push(undefined);
    plan.lines.push(...block);
    plan.origins.push(...origins);
    plan.lines.push('COMMIT');
    plan.origins.push(undefined);
    plan.changes += block.length;
  }
  return plan;
}

/**
 * Standard verdicts and target extensions are not chains. Extension targets are
 * UPPERCASE letters and digits; a missing target with a dash or lowercase letters
 * (CNMD-USER, my-chain) can only be a chain, and is refused before anything runs.
 * Other unknown names are left to iptables (which refuses them: "Couldn't load target").
 */
const VERDICTS = new Set([
  'ACCEPT',
  'DROP',
  'RETURN',
  'QUEUE',
  'NFQUEUE',
  'REJECT',
  'LOG',
  'NFLOG',
  'MARK',
  'CONNMARK',
  'MASQUERADE',
  'SNAT',
  'DNAT',
  'REDIRECT',
  'NOTRACK',
  'CT',
  'TPROXY',
  'TCPMSS',
  'CHECKSUM',
  'TRACE',
  'TEE',
  'CLASSIFY',
  'DSCP',
  'TOS',
  'TTL',
  'HL',
  'SET',
  'AUDIT',
  'NETMAP',
  'CLUSTERIP',
  'SECMARK',
  'CONNSECMARK',
  'IDLETIMER',
  'LED',
  'RATEEST',
  'SYNPROXY',
  'HMARK',
]);
function looksLikeChain(target: string): boolean {
  return !VERDICTS.has(target) && /[^A-Z0-9_]/.test(target);
}

// ---- errors from iptables-restore -------------------------------------------------------------

const ERRNO_TEXT: Record<string, string> = {
  'Invalid argument': 'EINVAL',
  'Device or resource busy': 'EBUSY',
  'No such file or directory': 'ENOENT',
  'File exists': 'EEXIST',
  'Operation not permitted': 'EPERM',
  'Permission denied': 'EACCES',
  'Directory not empty': 'ENOTEMPTY',
  'Cannot allocate memory': 'ENOMEM',
  'Operation not supported': 'EOPNOTSUPP',
  'Protocol not supported': 'EPROTONOSUPPORT',
  'Too many links': 'EMLINK',
  'Numerical result out of range': 'ERANGE',
};

export interface RestoreFailure {
  /** 1-based line of the restore input named by iptables-restore, if it named one. */
  line?: number;
  /** The error text without version banners and help hints. */
  message: string;
  errno?: string;
}

/** Reads iptables-restore's stderr: which line failed and why. */
export function parseRestoreError(stderr: string): RestoreFailure {
  let line: number | undefined;
  const m =
    /Error occurred at line:\s*(\d+)/.exec(stderr) ??
    /line (\d+) failed/.exec(stderr) ??
    /^line (\d+):/m.exec(stderr) ??
    /COMMIT expected at line (\d+)/.exec(stderr) ??
    /at line:?\s*(\d+)/.exec(stderr);
  if (m) line = Number(m[1]);
  const parts = stderr
    .split('\n')
    .map((l) => l.replace(/^ip6?tables-restore( v[\d.]+( \([^)]*\))?)?:\s*/, '').trim())
    .filter((l) => l !== '' && !/^Error occurred at line/.test(l) && !/^Try `ip6?tables-restore -h'/.test(l));
  const message = parts.join('; ').replace(/^line \d+:\s*/, '') || 'failed';
  let errno: string | undefined;
  for (const [text, name] of Object.entries(ERRNO_TEXT))
    if (stderr.includes(`(${text})`) || stderr.includes(`:${text}`)) errno = name;
  return { line, message, errno };
}

// ---- the backend ---------------------------------------------------------------------------------

export interface IptablesCommands {
  restore: string;
  save: string;
}

export interface IptablesBackendOptions {
  /** Network namespace path to run in (via `nsenter --net=<path>`); null/undefined: the current one. */
  netns?: string | null;
  exec?: Exec;
  log?: Logger;
  /** Per-process timeout when `exec` is not given (default 60 s). */
  timeoutMs?: number;
  /** Binaries per family (e.g. iptables-legacy-restore). */
  commands?: Partial<Record<Family, Partial<IptablesCommands>>>;
  /**
   * Check mode for tests: after each successful restore, read the touched tables back
   * (one more iptables-save per family) and fail with INTERNAL if they differ from what
   * the backend predicted, i.e. a rule was given in a form canonicalRule() does not map
   * to iptables-save's (its "ensure" would then add it again each time).
   */
  verify?: boolean;
  /**
   * Keep an iptables-restore (and ip6tables-restore) waiting for the next batch, started
   * after each one (exec.ts SpareProcesses): the daemon's choice. Ignored when `exec` is given.
   */
  spareProcesses?: boolean;
}

export interface IptablesStats {
  /** iptables-restore / ip6tables-restore processes run (applies and rollbacks). */
  restores: number;
  /** iptables-save / ip6tables-save processes run. */
  saves: number;
  rollbacks: number;
  /** Restores that said their batch was committed before they exited (the done line). */
  doneBeforeExit: number;
}

export class IptablesBackend implements FirewallBackend {
  readonly name = 'iptables';
  readonly netns: string | null;
  readonly stats: IptablesStats = { restores: 0, saves: 0, rollbacks: 0, doneBeforeExit: 0 };
  private readonly exec: Exec;
  private readonly log?: Logger;
  private readonly commands: Record<Family, IptablesCommands>;
  private readonly verify: boolean;
  private readonly cache: Record<Family, Map<Table, TableState>> = { ipv4: new Map(), ipv6: new Map() };
  private tail: Promise<unknown> = Promise.resolve();
  private readonly spares?: SpareProcesses;
  /** Per family: a restore echoed the done line before its exit (so it echoes comments at once). */
  private readonly echoes: Record<Family, boolean> = { ipv4: false, ipv6: false };

  constructor(opts: IptablesBackendOptions = {}) {
    this.netns = opts.netns ?? null;
    if (!opts.exec && opts.spareProcesses)
      this.spares = new SpareProcesses({ timeoutMs: opts.timeoutMs, log: opts.log });
    this.exec = opts.exec ?? this.spares?.exec ?? defaultExec(opts.timeoutMs);
    this.log = opts.log;
    this.verify = opts.verify ?? false;
    this.commands = {
      ipv4: { restore: 'iptables-restore', save: 'iptables-save', ...opts.commands?.ipv4 },
      ipv6: { restore: 'ip6tables-restore', save: 'ip6tables-save', ...opts.commands?.ipv6 },
    };
  }

  /** Ends the waiting processes, if any; a later batch runs in a process of its own. */
  close(): void {
    this.spares?.close();
  }

  /** Restores served by a waiting process / by one started for them (spareProcesses only). */
  get spareStats(): { spare: number; cold: number } | undefined {
    return this.spares ? { ...this.spares.stats } : undefined;
  }

  /** Drops the cached state: the next apply reads the tables it needs again. */
  invalidate(family?: Family): void {
    for (const f of family ? [family] : FAMILIES) this.cache[f].clear();
  }

  apply(batch: RuleBatch): Promise<void> {
    return this.serial(() => this.applyNow(batch));
  }

  chainRules(table: Table, chain: string, family: Family = 'ipv4'): Promise<string[]> {
    return this.serial(async () => {
      const t = (await this.read(family, [table])).get(table)!;
      const c = t.get(chain);
      if (!c) {
        throw new CnmdError(
          'NOT_FOUND',
          `firewall chain rules: chain ${chain} does not exist in ${family} table ${table}`,
          {
            op: 'firewall chain rules',
            object: `${family} -t ${table} ${chain}`,
          },
        );
      }
      return c.rules.map((r) => r.text);
    });
  }

  save(table?: Table, family: Family = 'ipv4'): Promise<string> {
    return this.serial(async () => {
      const text = await this.runSave(family, table);
      for (const [name, t] of parseSave(text)) this.cache[family].set(name, t);
      return text;
    });
  }

  // ---- internals ----

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.tail.then(fn, fn);
    // The next call waits for this one whatever its outcome; this one's caller sees its error.
    this.tail = settled(p);
    return p;
  }

  private argv(cmd: string, args: string[]): [string, string[]] {
    if (this.netns === null) return [cmd, args];
    return ['nsenter', [`--net=${this.netns}`, cmd, ...args]];
  }

  private async run(
    op: string,
    cmd: string,
    args: string[],
    input?: string,
    opts?: ExecOptions,
  ): Promise<ExecResult> {
    const [file, argv] = this.argv(cmd, args);
    try {
      return await this.exec(file, argv, input, opts);
    } catch (e) {
      const errno = (e as NodeJS.ErrnoException).code;
      throw new CnmdError(
        errno === 'ENOENT' ? 'KERNEL_FEATURE_MISSING' : 'KERNEL_ERROR',
        `${op}: cannot run ${file}: ${(e as Error).message}`,
        {
          op,
          object: cmd,
          errno,
          cause: e,
        },
      );
    }
  }

  private async runSave(family: Family, table?: Table): Promise<string> {
    const op = 'firewall save';
    const cmd = this.commands[family].save;
    this.stats.saves++;
    const r = await this.run(op, cmd, table ? ['-t', table] : []);
    if (r.code !== 0) {
      const msg = r.stderr.trim() || `exit ${r.code ?? r.signal}`;
      throw new CnmdError(
        /No such file|cannot open/.test(msg) ? 'NOT_FOUND' : 'KERNEL_ERROR',
        `${op}: ${cmd} failed: ${msg}`,
        {
          op,
          object: this.netns ?? 'current netns',
          family,
          table,
          stderr: r.stderr,
        },
      );
    }
    return r.stdout;
  }

  /** Fresh state of `tables` (one iptables-save; -t when it is one table). Updates the cache. */
  private async read(family: Family, tables: Table[]): Promise<Map<Table, TableState>> {
    const text = await this.runSave(family, tables.length === 1 ? tables[0] : undefined);
    const parsed = parseSave(text);
    const out = new Map<Table, TableState>();
    for (const table of tables) {
      const t = parsed.get(table) ?? emptyTable(table);
      this.cache[family].set(table, t);
      out.set(table, t);
    }
    return out;
  }

  /**
   * One restore process. Its input ends with a comment that `--verbose` echoes once every COMMIT
   * before it has succeeded: the call resolves then, not at the exit, which after a batch that
   * deleted rules waits ~20-30 ms for an RCU grace period (README.md). A process that exits first
   * (a failure, or a restore that echoes only at exit) is judged by its status as before.
   * `pair`: the other family's restore of the same batch runs side by side (see applyNow).
   * Failure lines are those of `lines` (the comments are not counted).
   */
  private async restore(family: Family, lines: string[], pair?: Together): Promise<ExecResult> {
    const cmd = this.commands[family].restore;
    this.stats.restores++;
    const { input, opts, renumber } = restoreInput(lines, pair);
    let r: ExecResult;
    try {
      r = await this.run(OP, cmd, ['--noflush', '--wait', '--verbose'], input, opts);
    } finally {
      pair?.arrive(false);
    }
    if (!r.exiting) return { ...r, stderr: renumber(r.stderr) };
    this.stats.doneBeforeExit++;
    this.echoes[family] = true;
    void r.exiting.then(
      (x) => {
        if (x.code !== 0)
          this.log?.error(
            { family, code: x.code, signal: x.signal, stderr: x.stderr.slice(0, 400), netns: this.netns },
            `${OP}: ${cmd} exited with ${x.code ?? x.signal} after its batch was committed`,
          );
      },
      (e: unknown) => this.log?.error({ err: e, family }, `${OP}: ${cmd} could not be reaped`),
    );
    return r;
  }

  private async applyNow(batch: RuleBatch): Promise<void> {
    const families = FAMILIES.filter((f) => TABLES.some((t) => (batch[f]?.[t]?.length ?? 0) > 0));
    if (families.length === 0) return;
    // Cheap checks first, before reading anything.
    for (const f of families) {
      for (const t of TABLES) {
        for (const op of batch[f]![t] ?? []) {
          validateChainName(OP, op.chain);
          if ('rule' in op) validateRuleText(OP, op.rule);
        }
      }
    }
    // State before the batch, from the cache or one iptables-save per family.
    const before = new Map<Family, Map<Table, TableState>>();
    for (const f of families) {
      const tables = TABLES.filter((t) => (batch[f]![t]?.length ?? 0) > 0);
      const missing = tables.filter((t) => !this.cache[f].has(t));
      if (missing.length) await this.read(f, missing);
      before.set(f, new Map(tables.map((t) => [t, this.cache[f].get(t)!])));
    }
    // Decide every operation; refusals throw here, before any change.
    const plans = families.map((f) => planFamily(f, batch[f]!, before.get(f)!));
    // The two families are separate kernel tables: their restores run side by side, so a publish
    // that needs both (IPv6 bindings served by the proxy) costs one restore's time, not two.
    const applied = plans.filter((p) => p.changes > 0);
    const started = Date.now();
    // Each restore's commits start once both have parsed their first table (the probes iptables
    // makes while parsing close netlink sockets, and such a close waits for the grace period of
    // rules the other already deleted), and neither exits before both said done (the exit of one
    // that deleted rules holds the netns's nf_tables commit lock for that grace period).
    // Only with restores seen to echo at once: one that echoes only at its exit would wait at the
    // gate for input it never gets (early xtables-restore versions did not flush a comment's echo).
    const side =
      applied.length > 1 && applied.every((p) => this.echoes[p.family])
        ? together(applied.length)
        : undefined;
    // Each family's own time (the two overlap: their sum is more than the batch's).
    const took: number[] = [];
    const results = await Promise.allSettled(
      applied.map((p, i) =>
        this.restore(p.family, p.lines, side?.members[i]).finally(() => (took[i] = Date.now() - started)),
      ),
    );
    side?.release();
    const failed = (i: number) => {
      const r = results[i];
      return r.status === 'rejected' || !restored(r.value);
    };
    // The restore that failed on its own, not the one stopped at its first table because of it.
    const failures = [...results.keys()].filter(failed);
    const failedAt = failures.find((i) => !side?.members[i].stopped()) ?? failures[0] ?? -1;
    if (failedAt >= 0) {
      const rollback = await this.rollback(applied, before);
      this.invalidate();
      const r = results[failedAt];
      if (r.status === 'rejected') throw r.reason;
      const failure = parseRestoreError(r.value.stderr || `exit ${r.value.code ?? r.value.signal}`);
      throw this.restoreError(applied[failedAt], r.value, failure, rollback);
    }
    applied.forEach((plan, i) =>
      this.log?.debug(
        { family: plan.family, lines: plan.changes, ms: took[i], netns: this.netns },
        'firewall batch applied',
      ),
    );
    for (const plan of plans) for (const [table, t] of plan.next) this.cache[plan.family].set(table, t);
    if (this.verify) for (const plan of applied) await this.verifyPlan(plan);
  }

  private async verifyPlan(plan: FamilyPlan): Promise<void> {
    const actual = await this.read(plan.family, [...plan.next.keys()]);
    const diffs: string[] = [];
    for (const [table, chains] of plan.touched) {
      const want = plan.next.get(table)!;
      const got = actual.get(table)!;
      for (const chain of chains) {
        const a = want.get(chain)?.rules.map((r) => r.key) ?? [];
        const b = got.get(chain)?.rules.map((r) => r.key) ?? [];
        if (want.has(chain) !== got.has(chain) || a.join('\n') !== b.join('\n')) {
          diffs.push(`${table} ${chain}: predicted [${a.join(' | ')}], iptables-save has [${b.join(' | ')}]`);
        }
      }
    }
    if (diffs.length) {
      throw new CnmdError(
        'INTERNAL',
        `${OP}: state after apply differs from the prediction (${plan.family}): ${diffs.join('; ')}`,
        {
          op: OP,
          object: plan.family,
          diffs,
        },
      );
    }
  }

  private restoreError(
    plan: FamilyPlan,
    r: ExecResult,
    failure: RestoreFailure,
    rollback: string,
  ): CnmdError {
    const origin = failure.line !== undefined ? plan.origins[failure.line - 1] : undefined;
    const lineText = failure.line !== undefined ? plan.lines[failure.line - 1] : undefined;
    let object = origin ? `-t ${origin.table} ${origin.line}` : (lineText ?? plan.family);
    if (!origin && lineText === 'COMMIT') {
      // iptables-legacy-restore names the COMMIT line of the table whose commit the kernel refused.
      const header = plan.lines
        .slice(0, failure.line! - 1)
        .reverse()
        .find((l) => l.startsWith('*'));
      object = `-t ${header?.slice(1) ?? '?'} COMMIT (the table's commit was refused; the rule is not named)`;
    }
    const code: ErrorCode = r.code === 2 ? 'INVALID_ARGUMENT' : 'KERNEL_ERROR';
    const where = failure.line !== undefined ? `, line ${failure.line}` : '';
    const message =
      `${OP}: ${this.commands[plan.family].restore} rejected "${object}" ` +
      `(${plan.family}${where}): ${failure.message}; ${rollback}`;
    this.log?.warn(
      { family: plan.family, line: failure.line, rule: object, stderr: r.stderr, rollback },
      'firewall batch failed',
    );
    return new CnmdError(code, message, {
      op: OP,
      object,
      errno: failure.errno,
      family: plan.family,
      table: origin?.table,
      chain: origin?.chain,
      rule: origin?.rule,
      line: failure.line,
      exitCode: r.code,
      stderr: r.stderr,
      rollback,
    });
  }

  /**
   * Puts every chain the failed batch touched back to its state before the batch, in each
   * family that ran a restore (tables committed before the failing line stay committed).
   */
  private async rollback(
    applied: FamilyPlan[],
    before: Map<Family, Map<Table, TableState>>,
  ): Promise<string> {
    const done: string[] = [];
    try {
      for (const plan of applied) {
        const tables = [...plan.touched.keys()];
        const actual = await this.read(plan.family, tables);
        const lines = rollbackLines(plan.touched, before.get(plan.family)!, actual);
        if (lines.length === 0) continue;
        this.stats.rollbacks++;
        const r = await this.restore(plan.family, lines);
        if (!restored(r)) return `rollback FAILED (${plan.family}): ${parseRestoreError(r.stderr).message}`;
        done.push(plan.family);
      }
    } catch (e) {
      return `rollback FAILED: ${(e as Error).message}`;
    }
    return done.length
      ? `tables committed before the failure were rolled back (${done.join(', ')})`
      : 'nothing was changed';
  }
}

/** Restore input that turns the touched chains of `actual` back into `before`. */
function rollbackLines(
  touched: Map<Table, Set<string>>,
  before: Map<Table, TableState>,
  actual: Map<Table, TableState>,
): string[] {
  const out: string[] = [];
  for (const [table, chains] of touched) {
    const pre = before.get(table) ?? emptyTable(table);
    const now = actual.get(table) ?? emptyTable(table);
    const create: string[] = [];
    const refill: string[] = [];
    const remove: string[] = [];
    for (const chain of chains) {
      const a = pre.get(chain);
      const b = now.get(chain);
      if (a && !b) create.push(chain);
      else if (!a && b) remove.push(chain);
      else if (a && b && !sameRules(a.rules, b.rules)) refill.push(chain);
    }
    if (!create.length && !refill.length && !remove.length) continue;
    out.push(`*${table}`);
    for (const c of create) out.push(`:${c} - [0:0]`);
    for (const c of refill) out.push(`-F ${c}`);
    for (const c of [...create, ...refill]) for (const r of pre.get(c)!.rules) out.push(`-A ${c} ${r.text}`);
    for (const c of remove) out.push(`-F ${c}`);
    for (const c of remove) out.push(`-X ${c}`);
    out.push('COMMIT');
  }
  return out;
}

function sameRules(a: RuleEntry[], b: RuleEntry[]): boolean {
  return a.length === b.length && a.every((r, i) => r.key === b[i].key);
}

// Exported for unit tests.
export const _internal = { planFamily, rollbackLines, emptyTable, tokenize };
