// Test fixtures: every test works in namespaces of its own under a private
// exec-root, never in the machine's own netns, and removes them pass or fail.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import type { TestContext } from 'node:test';
import { native } from '../../native';
import { Handle } from '../../src/netlink/handle';
import { NetnsManager } from '../../src/netns/netns';

export interface Ns {
  id: string;
  path: string;
  handle: Handle;
  /** Runs a command inside this netns (nsenter --net), returns stdout. */
  run(cmd: string, args: string[]): string;
  /** Runs `ip -j ...` inside this netns and parses the JSON. */
  ipj<T = any>(...args: string[]): T;
}

export interface Lab {
  root: string;
  netns: NetnsManager;
  ns(id: string): Promise<Ns>;
}

export function runIn(nsPath: string, cmd: string, args: string[]): string {
  return execFileSync('nsenter', [`--net=${nsPath}`, cmd, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A private exec-root with namespaces that are all removed when the test ends. */
export async function lab(t: TestContext): Promise<Lab> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cnmd-test-'));
  const netns = new NetnsManager(root);
  const made: Ns[] = [];
  t.after(() => {
    for (const n of made) n.handle.close();
    for (const id of netns.list()) {
      try {
        netns.delete(id);
      } catch {
        /* already gone */
      }
    }
    // Anything left that is still mounted is unmounted by netnsDelete; then the tree goes.
    for (const f of fs.existsSync(netns.dir) ? fs.readdirSync(netns.dir) : []) {
      try {
        native.netnsDelete(path.join(netns.dir, f));
      } catch {
        /* not a mount */
      }
    }
    fs.rmSync(root, { recursive: true, force: true });
  });
  return {
    root,
    netns,
    async ns(id: string): Promise<Ns> {
      const c = await netns.create(id);
      const n: Ns = {
        id,
        path: c.path,
        handle: c.handle,
        run: (cmd, args) => runIn(c.path, cmd, args),
        ipj: (...args) => JSON.parse(runIn(c.path, 'ip', ['-j', ...args]) || '[]'),
      };
      made.push(n);
      return n;
    },
  };
}

/** Open file descriptors of this process. */
export function fdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}
