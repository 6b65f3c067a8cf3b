// The repository's docs stand on their own: no file points outside the repository
// (a path under /work/ or ../shared, where the project's first notes lived), and every
// relative link of a markdown file names a file (and heading) that exists.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';

const REPO = path.resolve(__dirname, '..', '..', '..');
const SKIP_DIRS = new Set(['node_modules', 'dist', 'build', '.git']);
const RESULTS = path.join(REPO, 'bench', 'results');
const TEXT = /\.(md|ts|js|sh|json|service|cc|h|gyp)$/;

function files(dir: string, out: string[] = []): string[] {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory()) {
      if (!SKIP_DIRS.has(e.name)) files(path.join(dir, e.name), out);
    } else if (dir === RESULTS && e.name.endsWith('.json')) {
      continue; // a bench run's output, not the repository's text (.gitignore)
    } else if (TEXT.test(e.name) || e.name === 'run' || dir.endsWith(`${path.sep}bin`)) {
      out.push(path.join(dir, e.name));
    }
  }
  return out;
}

test('no file of the repository points outside it', () => {
  const bad: string[] = [];
  for (const f of files(REPO)) {
    if (f === __filename || f.endsWith(path.join('test', 'unit', 'docs-links.test.ts'))) continue;
    fs.readFileSync(f, 'utf8')
      .split('\n')
      .forEach((line, i) => {
        if (/\/work\/|\.\.\/shared\b/.test(line))
          bad.push(`${path.relative(REPO, f)}:${i + 1}: ${line.trim()}`);
      });
  }
  assert.deepEqual(bad, []);
});

/** GitHub's anchors of a markdown file's headings: lower case, punctuation dropped, spaces to '-'. */
function anchors(markdown: string): Set<string> {
  const out = new Set<string>();
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (line.startsWith('```')) fenced = !fenced;
    const m = fenced ? null : /^#{1,6} (.*)$/.exec(line);
    if (m)
      out.add(
        m[1]
          .toLowerCase()
          .replace(/[^a-z0-9 _-]/g, '')
          .replace(/ /g, '-'),
      );
  }
  return out;
}

test("every relative link in the repository's markdown names a file and a heading that exist", () => {
  const bad: string[] = [];
  for (const f of files(REPO).filter((x) => x.endsWith('.md'))) {
    const text = fs.readFileSync(f, 'utf8');
    for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      const [target, anchor] = m[1].split('#');
      if (/^[a-z]+:/i.test(target)) continue;
      const file = target === '' ? f : path.resolve(path.dirname(f), target);
      if (!fs.existsSync(file)) bad.push(`${path.relative(REPO, f)}: (${m[1]}): no such file`);
      else if (
        anchor !== undefined &&
        file.endsWith('.md') &&
        !anchors(fs.readFileSync(file, 'utf8')).has(anchor)
      )
        bad.push(`${path.relative(REPO, f)}: (${m[1]}): no such heading`);
    }
  }
  assert.deepEqual(bad, []);
});
