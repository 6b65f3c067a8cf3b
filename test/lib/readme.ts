// README's doc test, shared by its two lanes: the ```sh blocks of README.md, each with the
// marker on the line before it that says where it runs, and the bash script that runs a
// lane's blocks in order. Markers (an HTML comment, invisible on GitHub):
//   <!-- doctest: skip (reason) -->        not run anywhere; the integration lane lists it with the reason
//   <!-- doctest: background (reason) -->  runs in the background (the daemon); the next block waits for its API
//   <!-- doctest: engine (reason) -->      needs a Docker engine: runs in the engine lane (test/engine/readme.test.ts)
// An unmarked block runs in the integration lane (test/integration/readme.test.ts).
import * as path from 'node:path';

export const REPO = path.resolve(__dirname, '..', '..', '..');
export const README = path.join(REPO, 'README.md');

export type BlockMode = 'run' | 'skip' | 'background' | 'engine';

export interface DocBlock {
  /** 1-based line of the opening fence. */
  line: number;
  code: string;
  mode: BlockMode;
  reason?: string;
}

const MARKER = /^<!--\s*doctest:\s*(skip|background|engine)\s*\((.+)\)\s*-->$/;

/** The ```sh blocks of a markdown text, with the doctest marker on the line before each (blank lines between allowed). */
export function shBlocks(markdown: string): DocBlock[] {
  const lines = markdown.split('\n');
  const out: DocBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() !== '```sh') continue;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && lines[i].trim() !== '```'; i++) body.push(lines[i]);
    let j = start - 1;
    while (j >= 0 && lines[j].trim() === '') j--;
    const m = j >= 0 ? MARKER.exec(lines[j].trim()) : null;
    if (j >= 0 && !m && /doctest/.test(lines[j]))
      throw new Error(
        `README.md:${j + 1}: a doctest marker must read <!-- doctest: skip|background|engine (reason) -->`,
      );
    out.push({
      line: start + 1,
      code: body.join('\n'),
      mode: m ? (m[1] as BlockMode) : 'run',
      reason: m?.[2],
    });
  }
  return out;
}

/**
 * A bash script that runs `blocks` in order from the repository's root, each announced on
 * stderr as `::: README.md:<line> (<mode>)`; the first failing command stops it (so the
 * last announcement names the failing block). A background block's output goes to
 * `<logDir>/bg-<line>.log`, and the next block first waits (bounded) for the API socket.
 * `tail` is appended after `::: done`.
 */
export function blocksScript(blocks: DocBlock[], logDir: string, tail: string[] = []): string {
  const parts = [
    'set -eo pipefail',
    `cd ${JSON.stringify(REPO)}`,
    'cnmd_up() { for _ in $(seq 600); do curl -sf --unix-socket /run/cnmd/cnmd.sock http://cnmd/_ping >/dev/null && return 0; sleep 0.1; done; echo "cnmd did not answer within 60 s" >&2; return 1; }',
    'BG=0',
  ];
  for (const b of blocks) {
    parts.push(`echo "::: README.md:${b.line} (${b.mode})" >&2`);
    if (b.mode === 'background') {
      parts.push(`( ${b.code}\n) > ${JSON.stringify(path.join(logDir, `bg-${b.line}.log`))} 2>&1 &`, 'BG=1');
    } else {
      parts.push('if [ "$BG" = 1 ]; then cnmd_up; BG=2; fi', b.code);
    }
  }
  parts.push('echo "::: done" >&2', ...tail);
  return parts.join('\n');
}

/** The block the script was in when it stopped: its last `::: ` announcement. */
export function lastBlock(out: string): string | undefined {
  return [...out.matchAll(/^::: (.*)$/gm)].pop()?.[1];
}
