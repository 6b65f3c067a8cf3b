// The sandbox OS layer: network namespaces as files under <exec-root>/netns,
// each created with loopback up and handed out with a netlink handle.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { native } from '../../native';
import { CnmdError, hasErrno, invalidArgument, reasonOf } from '../errors';
import { Handle } from '../netlink/handle';
import { NetlinkSocket, fromNativeError } from '../netlink/socket';
import { NETLINK_ROUTE, SocketSpec } from '../../native';

const ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const LOOPBACK_INDEX = 1; // the first device of every new netns

export interface CreatedNetns {
  id: string;
  path: string;
  /** An rtnetlink handle opened inside the new netns; the caller closes it. */
  handle: Handle;
  /** The sockets asked for at creation (create's `sockets`), opened inside it; the caller closes them. */
  sockets: number[];
  /** An ifindex no device in it has (when its devices were listed: a pooled netns). */
  freeIndex?: number;
}

/** Closes fds a caller owns and empties the array; EBADF (one closed already) is done, any other failure throws. */
export function closeFds(fds: number[]): void {
  for (const fd of fds.splice(0)) {
    try {
      native.close(fd);
    } catch (e) {
      if (!hasErrno(e, 'EBADF')) throw e;
    }
  }
}

/**
 * What a sandbox netns is made with, beyond loopback up: new interfaces get
 * no IPv6 link-local address (addr_gen_mode none), as Docker (26+) leaves an
 * interface without IPv6 on an IPv4-only network. Without it each new eth0
 * sends DAD, MLD and router solicitations that the bridge floods to every
 * other sandbox: work on every port for every attach. A driver turns link-local
 * generation back on for an endpoint that has IPv6 (LinkChanges.addrGenMode).
 */
export const SANDBOX_SYSCTLS: [string, string][] = [['net/ipv6/conf/default/addr_gen_mode', '1']];

/** SANDBOX_SYSCTLS this kernel has (one booted with ipv6.disable=1 has no net/ipv6). */
export function sandboxSysctls(): [string, string][] {
  return SANDBOX_SYSCTLS.filter(([k]) => fs.existsSync(path.join('/proc/sys', k)));
}

function deleteError(id: string, p: string, e: unknown): CnmdError {
  if ((e as { code?: string }).code === 'ENOENT') {
    return new CnmdError('NOT_FOUND', `netns delete ${id}: ${p} does not exist`, {
      op: 'netns delete',
      object: id,
      errno: 'ENOENT',
    });
  }
  return fromNativeError('netns delete', id, e);
}

export class NetnsManager {
  readonly dir: string;
  /** Written inside every netns this manager creates (native.netnsCreate's sysctls). */
  readonly sysctls: [string, string][];

  constructor(execRoot: string, o: { sysctls?: [string, string][] } = {}) {
    this.dir = path.join(execRoot, 'netns');
    this.sysctls = o.sysctls ?? [];
  }

  pathOf(id: string): string {
    if (typeof id !== 'string' || !ID.test(id)) {
      throw invalidArgument(
        'netns',
        String(id),
        `netns id "${id}" must be 1-128 characters of [A-Za-z0-9_.-], starting with a letter or digit`,
      );
    }
    return path.join(this.dir, id);
  }

  private dirMade = false;

  private ensureDir(op: string, id: string): void {
    // One stat instead of mkdir's mkdir+stat once made; made again if someone removed it.
    if (this.dirMade && fs.existsSync(this.dir)) return;
    try {
      fs.mkdirSync(this.dir, { recursive: true, mode: 0o755 });
      this.dirMade = true;
    } catch (e) {
      throw new CnmdError(
        'INVALID_ARGUMENT',
        `${op} ${id}: cannot use ${this.dir} for namespaces: ${(e as Error).message}`,
        { op, object: id, errno: (e as NodeJS.ErrnoException).code, cause: e },
      );
    }
  }

  /**
   * Creates netns `id` with loopback up, and opens `sockets` in it (one thread, one setns). Fails with
   * ALREADY_EXISTS if it exists.
   */
  async create(id: string, sockets: SocketSpec[] = []): Promise<CreatedNetns> {
    const p = this.pathOf(id);
    this.ensureDir('netns create', id);
    let fds: number[];
    try {
      fds = await native.netnsCreate(p, [NetlinkSocket.spec(NETLINK_ROUTE), ...sockets], this.sysctls);
    } catch (e) {
      if ((e as { code?: string }).code === 'EEXIST') {
        throw new CnmdError('ALREADY_EXISTS', `netns create ${id}: ${p} already exists`, {
          op: 'netns create',
          object: id,
          errno: 'EEXIST',
        });
      }
      throw fromNativeError('netns create', id, e);
    }
    const extra = fds.slice(1);
    let handle: Handle;
    try {
      handle = Handle.adopt(p, fds[0]);
    } catch (e) {
      this.undoCreate(id, p, extra, e);
    }
    try {
      await handle.linkSet(LOOPBACK_INDEX, { up: true });
    } catch (e) {
      handle.close();
      this.undoCreate(id, p, extra, e);
    }
    return { id, path: p, handle, sockets: extra };
  }

  /** Gives the daemon's own netns a path under dir, for sandboxes on the host network. */
  async pin(id: string): Promise<string> {
    return this.bind('netns pin', id, '/proc/self/ns/net');
  }

  /**
   * Gives the namespace mounted at `from` (e.g. a pooled one) the path of `id`
   * and removes the `from` mount; an open handle inside it stays valid.
   */
  adopt(id: string, from: string): string {
    const p = this.share(id, from);
    native.netnsDelete(from);
    return p;
  }

  /**
   * Gives the namespace mounted at `from` the path of `id` too, leaving `from`
   * for the caller to remove: an unmount waits for an RCU grace period, which
   * the caller may rather spend off its hot path.
   */
  share(id: string, from: string): string {
    return this.bind('netns adopt', id, from);
  }

  private bind(op: string, id: string, src: string): string {
    const p = this.pathOf(id);
    // The directory is looked at only when a bind fails: a stat before every bind costs more than this rare retry.
    if (!this.tryBind(op, id, src, p)) {
      this.dirMade = false;
      this.ensureDir(op, id);
      this.tryBind(op, id, src, p, true);
    }
    return p;
  }

  /** False when the directory is missing (and not last): the caller makes it and tries again. */
  private tryBind(op: string, id: string, src: string, p: string, last = false): boolean {
    try {
      native.netnsBind(src, p);
      return true;
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === 'ENOENT' && !last && !fs.existsSync(this.dir)) return false;
      if (code === 'EEXIST') {
        throw new CnmdError('ALREADY_EXISTS', `${op} ${id}: ${p} already exists`, {
          op,
          object: id,
          errno: 'EEXIST',
        });
      }
      throw fromNativeError(op, id, e);
    }
  }

  /** Removes netns `id` on the thread pool (the unmount waits for an RCU grace period); NOT_FOUND if there is none. */
  async remove(id: string): Promise<void> {
    const p = this.pathOf(id);
    await native.netnsRemove(p).catch((e) => {
      throw deleteError(id, p, e);
    });
  }

  /** Removes netns `id`. Fails with NOT_FOUND if there is none. */
  delete(id: string): void {
    const p = this.pathOf(id);
    try {
      native.netnsDelete(p);
    } catch (e) {
      throw deleteError(id, p, e);
    }
  }

  exists(id: string): boolean {
    return native.isNetns(this.pathOf(id));
  }

  /** Ids of the namespaces under dir (files that are not netns mounts are left out). */
  list(): string[] {
    return this.entries().filter((n) => native.isNetns(path.join(this.dir, n)));
  }

  /**
   * Ids of every file under dir, namespaces and stubs: a create killed between
   * the file and its bind mount leaves an empty file that no netns is behind
   * (delete() removes it like a namespace).
   */
  entries(): string[] {
    let names: string[];
    try {
      names = fs.readdirSync(this.dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new CnmdError(
        'INVALID_ARGUMENT',
        `netns list: cannot read ${this.dir}: ${(e as Error).message}`,
        { op: 'netns list', object: this.dir, errno: (e as NodeJS.ErrnoException).code, cause: e },
      );
    }
    return names.filter((n) => ID.test(n)).sort();
  }

  /** A new handle inside netns `id`; the caller closes it. */
  handle(id: string): Handle {
    return Handle.at(this.pathOf(id));
  }

  /**
   * Undoes a create that failed after the netns was made, then throws its error e. A removal that fails
   * (ENOENT aside: gone is what it wanted) is reported with e, not dropped.
   */
  private undoCreate(id: string, p: string, fds: number[], e: unknown): never {
    const failed: unknown[] = [];
    try {
      closeFds(fds);
    } catch (x) {
      failed.push(x);
    }
    try {
      native.netnsDelete(p);
    } catch (x) {
      if (!hasErrno(x, 'ENOENT')) failed.push(x);
    }
    if (failed.length)
      throw new AggregateError(
        [e, ...failed],
        `netns create ${id}: ${reasonOf(e)}; undo: ${failed.map(reasonOf).join('; ')}`,
      );
    throw e;
  }
}
