// One daemon per root. A second cnmd on the same data root would run recovery
// against the first one's records and sweep its "leaked" veths, rules and
// namespaces; on the same exec root it would adopt the first one's sandboxes.
// Each root holds a lock file with an exclusive flock (the kernel releases it
// when the daemon dies, however it dies: no stale pid file to clean up) and
// the holder's pid, for the message a second daemon prints.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { native } from '../native';
import { CnmdError, hasErrno } from './errors';

export const DATA_LOCK = 'cnmd.lock';
export const EXEC_PIDFILE = 'cnmd.pid';

export class InstanceLock {
  private constructor(private fds: number[]) {}

  /** Locks both roots (created if missing) or throws CONFLICT naming the daemon that holds one. */
  static acquire(roots: { dataRoot: string; execRoot: string }): InstanceLock {
    const fds: number[] = [];
    try {
      for (const [flag, file] of [
        ['--data-root', path.join(roots.dataRoot, DATA_LOCK)],
        ['--exec-root', path.join(roots.execRoot, EXEC_PIDFILE)],
      ] as const) {
        fds.push(lockOne(flag, file));
      }
    } catch (e) {
      for (const fd of fds) native.close(fd);
      throw e;
    }
    return new InstanceLock(fds);
  }

  /** Releases the locks (the files stay: removing one another daemon has open would let a third lock a fresh one). */
  release(): void {
    for (const fd of this.fds.splice(0)) native.close(fd);
  }
}

function lockOne(flag: string, file: string): number {
  const op = 'daemon start';
  const root = path.dirname(file);
  let fd: number;
  try {
    fd = native.lockFile(file);
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code !== 'EWOULDBLOCK' && code !== 'EAGAIN') {
      throw new CnmdError(
        'INVALID_ARGUMENT',
        `${op}: cannot lock ${file} (${code ?? (e as Error).message}): ${flag} ${root} must be a writable ` +
          `directory on a filesystem with file locks`,
        {
          op,
          object: file,
          errno: code,
          cause: e,
        },
      );
    }
    const holder = readPid(file);
    throw new CnmdError(
      'CONFLICT',
      `${op}: another cnmd${holder ? ` (pid ${holder})` : ''} is running with ${flag} ${root}: stop it first, or give this one its own --data-root, --exec-root and --host`,
      { op, object: root, errno: code, holder },
    );
  }
  try {
    fs.ftruncateSync(fd, 0);
    fs.writeSync(fd, `${process.pid}\n`, 0);
  } catch (e) {
    native.close(fd);
    throw new CnmdError('INVALID_ARGUMENT', `${op}: cannot write ${file}: ${(e as Error).message}`, {
      op,
      object: file,
      cause: e,
    });
  }
  return fd;
}

/** The lock holder's pid from its file, for the CONFLICT message: ENOENT (it exited meanwhile) reads as none. */
function readPid(file: string): number | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if (hasErrno(e, 'ENOENT')) return undefined;
    throw e;
  }
  const pid = Number.parseInt(text, 10);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}
