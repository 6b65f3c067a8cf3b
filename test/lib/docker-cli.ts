// The stock docker CLI pointed at a cnmd's API socket (DOCKER_HOST), as a user
// runs it: its own config dir (no contexts, no hints, nothing from ~/.docker),
// its exit code, stdout and stderr as Docker prints them.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { RunningDaemon } from './daemon';

export interface DockerRun {
  code: number | null;
  out: string;
  err: string;
}

/** Why docker-CLI tests cannot run here, or false. */
export const dockerMissing =
  spawnSync('docker', ['--version'], { encoding: 'utf8' }).status !== 0
    ? 'the docker CLI is not installed (apt-get install docker.io)'
    : false;

/** Runs the docker CLI against d; `timeoutMs` bounds it (the kernel lane's VM runs it several times slower). */
export function docker(d: RunningDaemon, args: string[], timeoutMs = 30_000): DockerRun {
  const config = path.join(d.base, 'docker-config');
  fs.mkdirSync(config, { recursive: true });
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: d.base,
    DOCKER_HOST: d.hostUri,
    DOCKER_CONFIG: config,
    DOCKER_CLI_HINTS: 'false',
  };
  const r = spawnSync('docker', args, { encoding: 'utf8', env, timeout: timeoutMs });
  if (r.error) throw r.error;
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** docker ... that must succeed with nothing on stderr; returns stdout. */
export function dockerOk(d: RunningDaemon, args: string[], timeoutMs?: number): string {
  const r = docker(d, args, timeoutMs);
  assert.equal(r.code, 0, `docker ${args.join(' ')} -> ${r.code}\n${r.out}${r.err}`);
  assert.equal(r.err, '', `docker ${args.join(' ')} wrote to stderr`);
  return r.out;
}
