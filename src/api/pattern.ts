// Docker's filter match (filters.Args.Match): a value equal to the field
// matches, else the value is a Go regular expression searched in the field.
// Go's regexp is RE2, which runs in time linear in pattern and input; so is
// re2js (a port of RE2), used here. JavaScript's RegExp backtracks: one filter
// such as `([0-9a-f]+)+g` against a 64-hex id would hold the event loop (and
// with it the API, every sandbox's DNS and the plugin sockets) for good.
import { RE2JS } from 're2js';
import { invalidArgument } from '../errors';

/** Longest filter value accepted (bytes of the pattern). */
export const MAX_PATTERN = 1024;
/**
 * Bound on pattern length times the counted repetitions in it: RE2 compiles `x{2,1000}`
 * into ~2000 instructions, and re2js compiles ~200k instructions per second here, so a
 * 1 KiB pattern of such repeats would hold the event loop for a second. 20k keeps any
 * accepted pattern's compile under ~20 ms; `^web-[0-9]{3}$` costs 56.
 */
export const MAX_PATTERN_COST = 20_000;

/** A conservative size estimate of the compiled program: every counted repeat may copy the whole pattern. */
function cost(pattern: string): number {
  let repeats = 0;
  for (const m of pattern.matchAll(/\{(\d*)(?:,(\d*))?\}/g))
    repeats += Math.max(Number(m[1] || 0), Number(m[2] || 0));
  return pattern.length * (1 + repeats);
}

/**
 * Compiles a `name`/`id` filter value once for a request. An invalid expression matches
 * nothing but the exact value, as Docker's Match (it ignores the regexp error).
 */
export function compilePattern(key: string, pattern: string): (field: string) => boolean {
  if (Buffer.byteLength(pattern) > MAX_PATTERN)
    throw invalidArgument('filters', key, `filter '${key}' value is longer than ${MAX_PATTERN} bytes`);
  if (cost(pattern) > MAX_PATTERN_COST)
    throw invalidArgument(
      'filters',
      key,
      `filter '${key}' value has too many counted repetitions for its length ({n,m} bounds times length ` +
        `over ${MAX_PATTERN_COST}); use smaller {n,m} bounds or a shorter pattern`,
    );
  let re: RE2JS | undefined;
  try {
    re = RE2JS.compile(pattern);
  } catch {
    re = undefined;
  }
  return (field) => field === pattern || (re !== undefined && re.test(field));
}
