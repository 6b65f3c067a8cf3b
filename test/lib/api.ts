// Calling a daemon under test's API in tests: the answer's body, or a failed
// assertion naming the call and what came back.
import assert from 'node:assert/strict';
import type { RunningDaemon } from './daemon';

/** Calls method p on d's API and asserts a 2xx answer; resolves with its body. */
export async function ok(d: RunningDaemon, method: string, p: string, body?: unknown): Promise<any> {
  const r = await d.request(method, p, body);
  assert.ok(r.status < 300, `${method} ${p} -> ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}
