// Runs compiled node:test files inside the kernel lane's VM (one boot for all
// of them) and mirrors every top-level guest test as a host subtest, so a host
// `node --test` run shows and counts them one by one.
import * as path from 'node:path';
import type { TestContext } from 'node:test';
import { runInKernelVm, tail, VmOptions, VmResult } from './kernel-vm';

export interface GuestSuiteOptions extends VmOptions {
  /** Extra arguments for the guest's `node` before --test (e.g. ['--enable-source-maps']). */
  nodeArgs?: string[];
  /** Extra arguments after the --test flags (e.g. ['--test-concurrency=1']). */
  testArgs?: string[];
}

export interface GuestResult {
  ok: boolean;
  name: string;
  directive?: { kind: 'SKIP' | 'TODO'; reason: string };
  /** The test's TAP block: preceding comments, nested subtests, the result line and its YAML diagnostics. */
  block: string;
}

const DEFAULT_SUITE_TIMEOUT_MS = 600_000;

/** Host paths the guest covers with its own fresh filesystems (tmpfs, proc, sysfs, devtmpfs); /tmp stays the host's, read-only. */
const SHADOWED = ['/run', '/var/run', '/var/tmp', '/dev', '/proc', '/sys'];
const shadowedInGuest = (p: string) => SHADOWED.some((s) => p === s || p.startsWith(s + '/'));

/** Undoes the node TAP reporter's escaping of test names (\\ \# \n \t ...). */
function tapUnescape(s: string): string {
  const map: Record<string, string> = { n: '\n', t: '\t', r: '\r', b: '\b', f: '\f', v: '\v' };
  return s.replace(/\\(.)/g, (_, c: string) => map[c] ?? c);
}

/** The top-level results of a TAP 13 stream as produced by `node --test --test-reporter=tap`. */
export function parseTopLevelTap(text: string): GuestResult[] {
  const lines = text.split('\n');
  const results: GuestResult[] = [];
  let pending: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const m = /^(not )?ok \d+(?: - (.*))?$/.exec(line);
    if (!m) {
      if (!/^TAP version \d+$/.test(line) && !/^1\.\.\d+$/.test(line)) pending.push(line);
      continue;
    }
    const block = [...pending, line];
    pending = [];
    // The YAML diagnostics: "  ---" ... "  ...", indented by two spaces.
    if (lines[i + 1] === '  ---') {
      let j = i + 1;
      while (j < lines.length) {
        block.push(lines[j]);
        if (lines[j] === '  ...') break;
        j++;
      }
      i = j;
    }
    let rest = m[2] ?? '';
    let directive: GuestResult['directive'];
    // A directive is an unescaped " # SKIP ..." / " # TODO ..." at the end.
    const d = /(^|[^\\]) # (SKIP|TODO)\b ?(.*)$/i.exec(rest);
    if (d) {
      directive = { kind: d[2].toUpperCase() as 'SKIP' | 'TODO', reason: tapUnescape(d[3].trim()) };
      rest = rest.slice(0, d.index + d[1].length);
    }
    results.push({
      ok: !m[1],
      name: tapUnescape(rest.trim()) || '(unnamed)',
      directive,
      block: block.join('\n'),
    });
  }
  return results;
}

/** The parts of a TAP block worth showing on failure: trimmed of empty comment noise. */
function describe(r: GuestResult): string {
  return r.block.replace(/\n{3,}/g, '\n\n').trim();
}

/**
 * Boots ONE kernel-lane VM that runs `node --test --test-reporter=tap <files>`
 * (absolute paths of compiled .js test files; the host root is shared, so they
 * are at the same path in the guest), then creates one host subtest per
 * top-level guest result. The parent fails when the VM exits non-zero, times
 * out, or returns no results.
 */
export async function runGuestSuite(
  t: TestContext,
  files: string[],
  opts: GuestSuiteOptions = {},
): Promise<VmResult> {
  if (files.length === 0) throw new Error('runGuestSuite: no test files given');
  const abs = files.map((f) => path.resolve(f));
  const hidden = abs.filter(shadowedInGuest);
  if (hidden.length) {
    throw new Error(
      `runGuestSuite: ${hidden.join(', ')} would not be visible in the guest (fresh tmpfs there on ${SHADOWED.join(' ')}); compile the tests to a path outside them`,
    );
  }
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const command = [
    // The first rfc4106(gcm(aes)) SA makes the kernel load and self-test esp4, gcm and ghash, which
    // under TCG can outlast the netlink layer's 10 s per request: done once here by ip (no timeout)
    // on a throwaway SA in the guest's own netns, so no test pays for it.
    `ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x99 mode transport`,
    `aead 'rfc4106(gcm(aes))' 0x${'11'.repeat(36)} 128 >/dev/null 2>&1;`,
    'ip xfrm state flush >/dev/null 2>&1;',
    'exec node',
    ...(opts.nodeArgs ?? []).map(q),
    '--test',
    '--test-reporter=tap',
    ...(opts.testArgs ?? []).map(q),
    ...abs.map(q),
    '2>&1',
  ].join(' ');
  const r = await runInKernelVm(command, {
    cwd: opts.cwd ?? (shadowedInGuest(process.cwd()) ? '/' : process.cwd()),
    env: opts.env,
    modules: opts.modules,
    timeoutMs: opts.timeoutMs ?? DEFAULT_SUITE_TIMEOUT_MS,
  });

  const results = parseTopLevelTap(r.commandOutput);
  for (const res of results) {
    if (res.directive?.kind === 'SKIP') {
      await t.test(res.name, { skip: res.directive.reason || true }, () => {});
      continue;
    }
    const todo = res.directive?.kind === 'TODO' ? res.directive.reason || true : undefined;
    await t.test(res.name, { todo }, () => {
      if (!res.ok) {
        const e = new Error(`failed in the kernel-lane VM:\n${describe(res)}`);
        e.stack = e.message; // the host-side stack says nothing about the guest failure
        throw e;
      }
    });
  }

  // The guest's progress lines (test/kernel-cluster/vm.ts's mark: where the VM's time goes), passed or not,
  // in order on the suite: node's TAP prints a test's output after its result, so per test they would shift.
  for (const m of r.commandOutput.matchAll(/^\s*# (@ .*)$/gm)) t.diagnostic(m[1]);
  const where = `(${r.durationMs} ms, exit code ${r.exitCode}${r.timedOut ? ', TIMED OUT' : ''})\nconsole tail:\n${tail(r.console, 80)}`;
  if (r.timedOut)
    throw new Error(
      `kernel-lane VM timed out after ${opts.timeoutMs ?? DEFAULT_SUITE_TIMEOUT_MS} ms with ${results.length} results ${where}`,
    );
  if (results.length === 0) throw new Error(`kernel-lane VM returned no test results ${where}`);
  if (r.exitCode !== 0) {
    const failed = results.filter((x) => !x.ok && x.directive?.kind !== 'TODO').map((x) => x.name);
    throw new Error(
      `guest node --test exited with ${r.exitCode}; failed: ${failed.join(', ') || '(none reported)'} ${where}`,
    );
  }
  return r;
}
