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
  /** Runs before the namespaces are removed (stop daemons that use them). */
  beforeCleanup(fn: () => Promise<void> | void): void;
}

/** Mount points at or under dir, deepest first (from /proc/self/mountinfo). */
export function mountsUnder(dir: string): string[] {
  const out: string[] = [];
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mp = line.split(' ')[4];
    if (mp && (mp === dir || mp.startsWith(dir + '/'))) out.push(mp.replace(/\\040/g, ' '));
  }
  return out.sort((a, b) => b.length - a.length);
}

/** A LAN parent for macvlan/ipvlan networks in ns: `lan0`, a veth whose peer `lan0p` stays beside it, both up. */
export function lanParent(ns: Ns): void {
  ns.run('ip', ['link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'lan0p']);
  ns.run('ip', ['link', 'set', 'lan0', 'up']);
  ns.run('ip', ['link', 'set', 'lan0p', 'up']);
}

export function runIn(nsPath: string, cmd: string, args: string[]): string {
  return execFileSync('nsenter', [`--net=${nsPath}`, cmd, ...args], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** A private exec-root with namespaces that are all removed when the test ends. */
export async function lab(t: TestContext): Promise<Lab> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cnmd-test-'));
  const netns = new NetnsManager(root);
  const made: Ns[] = [];
  const pre: (() => Promise<void> | void)[] = [];
  t.after(async () => {
    for (const fn of pre.reverse()) await fn();
    for (const n of made) n.handle.close();
    // Every netns mount under the root, ours and those of daemons under test.
    for (const mp of mountsUnder(root)) {
      try {
        native.netnsDelete(mp);
      } catch {
        /* not ours to remove: rmSync reports it */
      }
    }
    fs.rmSync(root, { recursive: true, force: true });
  });
  return {
    root,
    netns,
    beforeCleanup: (fn) => pre.push(fn),
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

/**
 * Retries an assertion until it holds or `ms` pass (then rethrows the last
 * failure). For kernel work that completes asynchronously: a netns removed
 * takes its veths with it in the kernel's deferred cleanup.
 */
export async function eventually<T>(fn: () => T | Promise<T>, ms = 3000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}
