// Starts a cnmd under test inside its own "host" netns (nsenter --net, so
// mounts stay shared) with private data/exec roots and API socket.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChildProcess, spawn } from 'node:child_process';
import type { TestContext } from 'node:test';
import { apiRequest } from '../../src/cli/cnmctl-client';
import { CNMD_NODE_FLAGS } from '../../src/cli/node-flags';
import type { Lab, Ns } from './fixture';

export const CNMD = path.resolve(__dirname, '..', '..', 'src', 'cli', 'cnmd.js');
export const CNMCTL = path.resolve(__dirname, '..', '..', 'src', 'cli', 'cnmctl.js');

export interface RunningDaemon {
  host: Ns;
  /** Directory holding this daemon's roots and socket (pass as `base` to restart on the same state). */
  base: string;
  sock: string;
  hostUri: string;
  dataRoot: string;
  execRoot: string;
  pluginDir: string;
  proc: ChildProcess;
  logs(): string;
  request(method: string, p: string, body?: unknown): Promise<{ status: number; body: any }>;
  /** SIGTERM and wait for exit; resolves with the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL and wait. */
  kill(): Promise<void>;
}

export async function startDaemon(
  t: TestContext,
  l: Lab,
  opts: { hostNs?: Ns; args?: string[]; name?: string; base?: string; entry?: string; readyMs?: number } = {},
): Promise<RunningDaemon> {
  const host = opts.hostNs ?? (await l.ns(opts.name ?? 'host'));
  const base = opts.base ?? fs.mkdtempSync(path.join(l.root, 'daemon-'));
  const dataRoot = path.join(base, 'data');
  const execRoot = path.join(base, 'exec');
  const pluginDir = path.join(base, 'plugins');
  const sock = path.join(base, 'cnmd.sock');
  const hostUri = `unix://${sock}`;
  const args = [
    `--net=${host.path}`,
    process.execPath,
    ...CNMD_NODE_FLAGS,
    opts.entry ?? CNMD,
    '--data-root',
    dataRoot,
    '--exec-root',
    execRoot,
    '-H',
    hostUri,
    '--plugin-dir',
    pluginDir,
    ...(opts.args ?? []),
  ];
  let out = '';
  const proc = spawn('nsenter', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const d: RunningDaemon = {
    host,
    base,
    sock,
    hostUri,
    dataRoot,
    execRoot,
    pluginDir,
    proc,
    logs: () => out,
    request: (method, p, body) => apiRequest(hostUri, method, p, body),
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      proc.kill('SIGTERM');
      return exited;
    },
    async kill() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGKILL');
      await exited;
    },
  };
  l.beforeCleanup(() => d.kill());
  void t;
  // A daemon under qemu without KVM (the kernel lane) starts several times slower.
  const readyMs = opts.readyMs ?? 15_000;
  const deadline = Date.now() + readyMs;
  for (;;) {
    if (proc.exitCode !== null)
      throw new Error(`cnmd exited with ${proc.exitCode} before answering:\n${out}`);
    try {
      const r = await d.request('GET', '/_ping');
      if (r.status === 200) break;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline)
      throw new Error(`cnmd did not answer /_ping within ${readyMs / 1000} s:\n${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return d;
}

/** Starts a new daemon on the same host netns, roots and socket as `d` (which must have exited). */
export function restartDaemon(
  t: TestContext,
  l: Lab,
  d: RunningDaemon,
  args?: string[],
): Promise<RunningDaemon> {
  return startDaemon(t, l, { hostNs: d.host, base: d.base, args });
}
