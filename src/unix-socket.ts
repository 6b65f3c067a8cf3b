// Taking a unix socket path to listen on. A socket file left by a killed
// daemon is removed; one that something still answers on is not: unlinking it
// would take the address from a running daemon (another cnmd with other roots
// but the same --host or --plugin-dir) and leave it serving nobody.
import * as fs from 'node:fs';
import * as net from 'node:net';
import { CnmdError } from './errors';

/** How long a connect to an existing socket may take before it counts as nobody's. */
const PROBE_MS = 1000;

/**
 * Makes `sockPath` free to listen on, or throws CONFLICT if a process listens there. `flag` names the setting
 * for the message.
 */
export async function claimSocketPath(sockPath: string, flag: string): Promise<void> {
  const op = 'listen';
  let st: fs.Stats;
  try {
    st = fs.lstatSync(sockPath);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  if (!st.isSocket()) {
    throw new CnmdError(
      'CONFLICT',
      `${op}: ${sockPath} exists and is not a socket; remove it or choose another ${flag}`,
      { op, object: sockPath },
    );
  }
  if (await answers(sockPath)) {
    throw new CnmdError(
      'CONFLICT',
      `${op}: another process (another cnmd?) is listening on ${sockPath}; stop it first, or choose another ${flag}`,
      { op, object: sockPath },
    );
  }
  try {
    fs.unlinkSync(sockPath);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}

function answers(sockPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(sockPath);
    const done = (yes: boolean) => {
      clearTimeout(timer);
      s.destroy();
      resolve(yes);
    };
    // Only a refusal means nobody listens: a full backlog (EAGAIN) or a slow accept is still someone's.
    const timer = setTimeout(() => done(true), PROBE_MS);
    s.once('connect', () => done(true));
    s.once('error', (e: NodeJS.ErrnoException) => done(e.code !== 'ECONNREFUSED' && e.code !== 'ENOENT'));
  });
}
