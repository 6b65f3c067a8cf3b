// Benchmark runner: `npm run bench` runs every case, `npm run bench -- <case> ...`
// the named ones. A case is a file bench/cases/<name>.ts exporting
//   name: string; unit: string; run(): Promise<Record<string, number>>
// (as named exports or as a default export object). Each result is written
// to bench/results/<case>.json as {"case", "unit", "figures"}, then the table
// bench/results/README.md is rebuilt from every bench/results/*.json and printed.
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface BenchCase {
  name: string;
  unit: string;
  run(): Promise<Record<string, number>>;
}

export interface CaseResult {
  case: string;
  unit: string;
  figures: Record<string, number>;
}

// dist/bench/run.js -> the repository root (bench/ sources and results live there).
const ROOT = path.resolve(__dirname, '..', '..');
const SRC_CASES = path.join(ROOT, 'bench', 'cases');
const DIST_CASES = path.join(__dirname, 'cases');
const RESULTS = path.join(ROOT, 'bench', 'results');

interface Found {
  file: string;
  load(): BenchCase;
}

/** The cases: one per bench/cases/*.ts, loaded from its compiled twin under dist/. */
export function discover(): Map<string, Found> {
  const found = new Map<string, Found>();
  let names: string[] = [];
  try {
    names = fs
      .readdirSync(SRC_CASES)
      .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
      .sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  for (const f of names) {
    const base = f.slice(0, -3);
    const js = path.join(DIST_CASES, `${base}.js`);
    found.set(base, {
      file: path.join('bench', 'cases', f),
      load() {
        if (!fs.existsSync(js))
          throw new Error(
            `bench case ${base}: ${path.relative(ROOT, js)} is missing; run "npm run build" first`,
          );
        // eslint-disable-next-line @typescript-eslint/no-var-requires
        const mod = require(js) as Partial<BenchCase> & { default?: Partial<BenchCase> };
        const c = (
          mod.default && typeof mod.default.run === 'function' ? mod.default : mod
        ) as Partial<BenchCase>;
        if (typeof c.name !== 'string' || typeof c.unit !== 'string' || typeof c.run !== 'function') {
          throw new Error(
            `bench case ${f}: must export name (string), unit (string) and run() (async function)`,
          );
        }
        if (c.name !== base)
          throw new Error(`bench case ${f}: exports name "${c.name}"; it must match the file name "${base}"`);
        return c as BenchCase;
      },
    });
  }
  return found;
}

function fmt(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(1) : a >= 1 ? v.toFixed(2) : v.toFixed(3);
}

function isRatio(name: string): boolean {
  return name.startsWith('ratio_');
}

function cell(figs: [string, number][]): string {
  return figs.length === 0 ? '' : figs.map(([k, v]) => `${k}=${fmt(v)}`).join(', ');
}

/** Every bench/results/*.json, sorted by case name; unreadable files are reported, not fatal. */
export function readResults(): CaseResult[] {
  let files: string[] = [];
  try {
    files = fs
      .readdirSync(RESULTS)
      .filter((f) => f.endsWith('.json'))
      .sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const out: CaseResult[] = [];
  for (const f of files) {
    try {
      const r = JSON.parse(fs.readFileSync(path.join(RESULTS, f), 'utf8')) as CaseResult;
      if (
        typeof r.case !== 'string' ||
        typeof r.unit !== 'string' ||
        typeof r.figures !== 'object' ||
        r.figures === null
      ) {
        throw new Error('want {"case", "unit", "figures"}');
      }
      out.push(r);
    } catch (e) {
      console.error(`bench: skipping bench/results/${f}: ${(e as Error).message}`);
    }
  }
  return out.sort((a, b) => a.case.localeCompare(b.case));
}

/** The summary table (markdown): one line per case. */
export function table(results: CaseResult[]): string {
  const lines = [
    '| case | unit | figures | ratios |',
    '| --- | --- | --- | --- |',
    ...results.map((r) => {
      const all = Object.entries(r.figures);
      return `| ${r.case} | ${r.unit} | ${cell(all.filter(([k]) => !isRatio(k)))} | ${cell(all.filter(([k]) => isRatio(k)))} |`;
    }),
  ];
  return lines.join('\n');
}

/**
 * The table's rows for cases that have no result file here (the JSON files are
 * not committed: a fresh clone that runs one case must not drop the others' lines).
 */
function keptRows(results: CaseResult[]): string[] {
  let old = '';
  try {
    old = fs.readFileSync(path.join(RESULTS, 'README.md'), 'utf8');
  } catch {
    return [];
  }
  const fresh = new Set(results.map((r) => r.case));
  return old.split('\n').filter((l) => {
    const m = /^\| ([^|\s]+) \|/.exec(l);
    return !!m && m[1] !== 'case' && m[1] !== '---' && !fresh.has(m[1]);
  });
}

function writeReadme(results: CaseResult[]): string {
  const kept = keptRows(results);
  const rows = table(results).split('\n');
  const byCase = (l: string) => /^\| ([^|\s]+) \|/.exec(l)![1];
  const t = [
    ...rows.slice(0, 2),
    ...[...rows.slice(2), ...kept].sort((a, b) => byCase(a).localeCompare(byCase(b))),
  ].join('\n');
  const text = [
    '# Benchmark results',
    '',
    'Generated by `npm run bench` (bench/run.ts) from the `*.json` files in this',
    'directory; do not edit by hand. Absolute times drift between runs and',
    'machines: compare the ratios, which are taken within one run of a case.',
    'What each figure means: bench/README.md.',
    '',
    t,
    '',
  ].join('\n');
  fs.mkdirSync(RESULTS, { recursive: true });
  fs.writeFileSync(path.join(RESULTS, 'README.md'), text);
  return t;
}

async function main(argv: string[]): Promise<number> {
  const cases = discover();
  const known = [...cases.keys()];
  if (argv.includes('-h') || argv.includes('--help')) {
    console.log(`usage: npm run bench [-- <case> ...]\ncases: ${known.join(', ') || '(none)'}`);
    return 0;
  }
  const unknown = argv.filter((a) => !cases.has(a));
  if (unknown.length > 0) {
    console.error(
      `bench: unknown case${unknown.length > 1 ? 's' : ''} ${unknown.map((u) => `"${u}"`).join(', ')}; cases: ${known.join(', ') || '(none found under bench/cases/)'}`,
    );
    return 2;
  }
  const chosen = argv.length > 0 ? [...new Set(argv)] : known;
  if (chosen.length === 0) {
    console.error('bench: no cases found under bench/cases/');
    return 2;
  }
  let failed = 0;
  for (const name of chosen) {
    const found = cases.get(name)!;
    console.log(`\n=== bench ${name} (${found.file}) ===`);
    const t0 = performance.now();
    try {
      const c = found.load();
      const figures = await c.run();
      for (const [k, v] of Object.entries(figures)) {
        if (typeof v !== 'number' || !Number.isFinite(v))
          throw new Error(`figure ${k} is not a finite number: ${String(v)}`);
      }
      const result: CaseResult = { case: c.name, unit: c.unit, figures };
      fs.mkdirSync(RESULTS, { recursive: true });
      fs.writeFileSync(path.join(RESULTS, `${c.name}.json`), JSON.stringify(result, null, 2) + '\n');
      console.log(
        `bench ${name}: done in ${((performance.now() - t0) / 1000).toFixed(1)} s -> bench/results/${c.name}.json`,
      );
    } catch (e) {
      failed++;
      console.error(`bench ${name}: FAILED: ${(e as Error).stack ?? String(e)}`);
    }
  }
  console.log('\n' + writeReadme(readResults()));
  return failed > 0 ? 1 : 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
