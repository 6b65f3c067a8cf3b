// A netlink socket bound to one network namespace: sequence numbers, request
// pipelining with a bounded window, multipart dump assembly, ACK and error
// matching, per-request timeouts. Sends run on native's I/O thread; replies
// are read on the event loop, so a slow kernel operation never stalls it.
import { constants as osConstants } from 'node:os';
import {
  native,
  AF_NETLINK,
  NETLINK_CAP_ACK,
  NETLINK_EXT_ACK,
  NETLINK_GET_STRICT_CHK,
  NL_SEND_DUMP,
  NL_SEND_SLOW,
  NativeError,
  SOCK_NONBLOCK,
  SOCK_RAW,
  SOL_NETLINK,
  SOL_SOCKET,
  SO_RCVBUF,
  SO_RCVBUFFORCE,
  SO_SNDBUF,
  SO_SNDBUFFORCE,
  SocketSpec,
} from '../../native';
import { CnmdError, ErrorCode, hasErrno, reasonOf } from '../errors';
import {
  NLM_F_ACK,
  NLM_F_DUMP,
  NLM_F_DUMP_INTR,
  NLM_F_REQUEST,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLMSG_NOOP,
  NLMSG_OVERRUN,
  NlError,
  NlMessage,
  decodeDone,
  decodeError,
  decodeMessages,
  encodeMessage,
} from './codec';

const errnoNames: Record<number, string> = Object.fromEntries(
  Object.entries(osConstants.errno).map(([name, num]) => [num, name]),
);

export function errnoName(errno: number): string {
  return errnoNames[errno] ?? `E${errno}`;
}

function codeForErrno(name: string): ErrorCode {
  switch (name) {
    case 'EEXIST':
    case 'ENOTEMPTY':
      return 'ALREADY_EXISTS';
    case 'ENOENT':
    case 'ENODEV':
    case 'ESRCH':
    case 'EADDRNOTAVAIL':
      return 'NOT_FOUND';
    case 'EINVAL':
    case 'ERANGE':
    case 'E2BIG':
    case 'ENAMETOOLONG':
      return 'INVALID_ARGUMENT';
    case 'EBUSY':
      return 'CONFLICT';
    case 'EPERM':
    case 'EACCES':
      return 'FORBIDDEN';
    default:
      return 'KERNEL_ERROR';
  }
}

/** A request the kernel refused: errno name, the kernel's extended-ACK message, the operation and object. */
export class NetlinkError extends CnmdError {
  readonly errnoNumber: number;
  readonly kernelMessage?: string;
  readonly attributeOffset?: number;

  constructor(op: string, object: string | undefined, err: NlError, code?: ErrorCode) {
    const name = errnoName(err.errno);
    const reason = err.message ? `${err.message} (${name})` : `${describeErrno(err.errno)} (${name})`;
    super(code ?? codeForErrno(name), `${op}${object ? ` ${object}` : ''}: ${reason}`, {
      op,
      object,
      errno: name,
    });
    this.name = 'NetlinkError';
    this.errnoNumber = err.errno;
    this.kernelMessage = err.message;
    this.attributeOffset = err.offset;
  }
}

const errnoMessages: Map<number, [string, string]> = (
  require('node:util') as { getSystemErrorMap(): Map<number, [string, string]> }
).getSystemErrorMap();

function describeErrno(errno: number): string {
  // libuv's map is keyed by negative errno.
  return errnoMessages.get(-errno)?.[1] ?? 'kernel error';
}

export function fromNativeError(op: string, object: string | undefined, e: unknown): CnmdError {
  const ne = e as NativeError;
  if (ne && typeof ne.code === 'string' && typeof ne.errno === 'number') {
    // NetlinkError names the errno itself: drop native's own "(EINVAL)".
    const message = ne.message.replace(` (${ne.code})`, '');
    return new NetlinkError(op, object, {
      errno: ne.errno,
      request: { len: 0, type: 0, flags: 0, seq: 0, pid: 0 },
      message,
    });
  }
  return new CnmdError('INTERNAL', `${op}: ${String(e)}`, { op, object, cause: e });
}

export interface RequestOptions {
  /** The operation, for errors ("link add"). */
  op: string;
  /** The object, for errors ("veth0"). */
  object?: string;
  dump?: boolean;
  timeoutMs?: number;
  /** The kernel may block long on it (a link removal waits for RCU): sent on native's slow pool. */
  slow?: boolean;
}

interface Pending {
  seq: number;
  type: number;
  flags: number;
  payload: Uint8Array;
  opts: RequestOptions;
  replies: NlMessage[];
  interrupted: boolean;
  retries: number;
  resolve: (m: NlMessage[]) => void;
  reject: (e: Error) => void;
  timer?: NodeJS.Timeout;
}

const DEFAULT_TIMEOUT_MS = 10_000;
// Requests in flight per socket. Each ACK costs socket buffer; the window keeps
// a burst of pipelined requests from overrunning the receive queue.
const WINDOW = 64;
const DUMP_INTR_RETRIES = 5;
let nextSocketId = 1;

export class NetlinkSocket {
  readonly protocol: number;
  readonly nsPath: string | null;
  readonly portId: number;
  private readonly fd: number;
  private seq: number;
  private readonly inFlight = new Map<number, Pending>();
  private readonly queue: Pending[] = [];
  /** The kernel runs one dump per socket at a time (a second gets EBUSY): later dumps wait here. */
  private dumping?: Pending;
  private readonly dumpWaiters: Pending[] = [];
  private closed = false;
  private refd = false;
  readonly id = nextSocketId++;

  /** Opens a socket of `protocol` inside the netns at nsPath (null: the caller's own). */
  static open(protocol: number, nsPath: string | null): NetlinkSocket {
    let fd: number;
    try {
      [fd] = native.socketsAt(nsPath, [NetlinkSocket.spec(protocol)]);
    } catch (e) {
      const ne = e as NativeError;
      if (ne.code === 'ENOENT') {
        throw new CnmdError('NOT_FOUND', `netlink open: network namespace ${nsPath} does not exist`, {
          op: 'netlink open',
          object: nsPath ?? undefined,
          errno: 'ENOENT',
        });
      }
      if (ne.code === 'EINVAL' && ne.syscall === 'setns') {
        throw new CnmdError('INVALID_ARGUMENT', `netlink open: ${nsPath} is not a network namespace`, {
          op: 'netlink open',
          object: nsPath ?? undefined,
          errno: 'EINVAL',
        });
      }
      throw fromNativeError('netlink open', nsPath ?? undefined, e);
    }
    return NetlinkSocket.adopt(fd, protocol, nsPath);
  }

  static spec(protocol: number): SocketSpec {
    return [AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK, protocol];
  }

  /** Takes ownership of an already-open netlink fd (from native.netnsCreate). */
  static adopt(fd: number, protocol: number, nsPath: string | null): NetlinkSocket {
    try {
      return new NetlinkSocket(fd, protocol, nsPath);
    } catch (e) {
      try {
        native.close(fd);
      } catch (closeError) {
        // EBADF: fd was never open, which e reports already; any other failure is reported with e.
        if (!hasErrno(closeError, 'EBADF'))
          throw new AggregateError([e, closeError], `${reasonOf(e)}; close ${fd}: ${reasonOf(closeError)}`);
      }
      throw e;
    }
  }

  private constructor(fd: number, protocol: number, nsPath: string | null) {
    this.fd = fd;
    this.protocol = protocol;
    this.nsPath = nsPath;
    for (const [opt, val] of [
      [NETLINK_EXT_ACK, 1],
      [NETLINK_CAP_ACK, 1],
      [NETLINK_GET_STRICT_CHK, 1],
    ] as const) {
      try {
        native.setsockoptInt(fd, SOL_NETLINK, opt, val);
      } catch (e) {
        // ENOPROTOOPT: an older kernel lacks this option; replies are still correct without it.
        if (!hasErrno(e, 'ENOPROTOOPT')) throw e;
      }
    }
    for (const [force, plain] of [
      [SO_RCVBUFFORCE, SO_RCVBUF],
      [SO_SNDBUFFORCE, SO_SNDBUF],
    ] as const) {
      try {
        native.setsockoptInt(fd, SOL_SOCKET, force, 4 << 20);
      } catch (e) {
        // EPERM: the FORCE options need CAP_NET_ADMIN; without it, as large as net.core.[rw]mem_max allows.
        if (!hasErrno(e, 'EPERM')) throw e;
        native.setsockoptInt(fd, SOL_SOCKET, plain, 4 << 20);
      }
    }
    this.portId = native.bindNetlink(fd, 0);
    this.seq = (Math.random() * 0x7fffffff) >>> 0;
    native.nlWatch(fd, (err, msgs, token) => this.onNative(err, msgs, token));
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** A new fd for the netns this socket lives in (the caller closes it). */
  netnsFd(): number {
    if (this.closed)
      throw new CnmdError('CLOSED', 'netlink netns: handle is closed', { op: 'netlink netns' });
    return native.socketNetns(this.fd);
  }

  /** Opens another netlink socket in the very netns this one lives in (not by path: a path can be reused). */
  sibling(protocol: number): NetlinkSocket {
    const nsfd = this.netnsFd();
    try {
      return NetlinkSocket.open(protocol, `/proc/self/fd/${nsfd}`);
    } finally {
      native.close(nsfd);
    }
  }

  get pendingCount(): number {
    return this.inFlight.size + this.queue.length + this.dumpWaiters.length;
  }

  /**
   * Sends one request and resolves with the reply messages (the data messages
   * of a dump, or what precedes the ACK). Rejects with NetlinkError on an
   * NLMSG_ERROR, with TIMEOUT if the kernel never answers.
   */
  request(type: number, flags: number, payload: Uint8Array, opts: RequestOptions): Promise<NlMessage[]> {
    if (this.closed) {
      return Promise.reject(
        new CnmdError('CLOSED', `${opts.op}: netlink handle is closed`, { op: opts.op, object: opts.object }),
      );
    }
    return new Promise((resolve, reject) => {
      const p: Pending = {
        seq: 0,
        type,
        flags: NLM_F_REQUEST | flags | (opts.dump ? NLM_F_DUMP : NLM_F_ACK),
        payload,
        opts,
        replies: [],
        interrupted: false,
        retries: 0,
        resolve,
        reject,
      };
      this.start(p);
      this.updateRef();
    });
  }

  private start(p: Pending): void {
    if (p.opts.dump && this.dumping && this.dumping !== p) this.dumpWaiters.push(p);
    else if (this.inFlight.size < WINDOW) {
      if (p.opts.dump) this.dumping = p;
      this.dispatch(p);
    } else this.queue.push(p);
  }

  private dispatch(p: Pending): void {
    this.seq = (this.seq + 1) >>> 0 || 1;
    p.seq = this.seq;
    p.replies = [];
    p.interrupted = false;
    this.inFlight.set(p.seq, p);
    const timeout = p.opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!p.timer) {
      p.timer = setTimeout(() => {
        this.finish(
          p,
          new CnmdError(
            'TIMEOUT',
            `${p.opts.op}${p.opts.object ? ` ${p.opts.object}` : ''}: no answer from the kernel in ${timeout} ms`,
            { op: p.opts.op, object: p.opts.object },
          ),
        );
      }, timeout);
      p.timer.unref();
    }
    try {
      // A slow request runs on native's slow pool: requests on other sockets never queue behind it.
      const flags = (p.opts.slow ? NL_SEND_SLOW : 0) | (p.opts.dump ? NL_SEND_DUMP : 0);
      native.nlSend(this.fd, encodeMessage(p.type, p.flags, p.seq, p.payload, 0), p.seq, flags);
    } catch (e) {
      this.finish(p, fromNativeError(p.opts.op, p.opts.object, e));
    }
  }

  private finish(p: Pending, result: Error | NlMessage[]): void {
    if (this.inFlight.get(p.seq) !== p) return;
    this.inFlight.delete(p.seq);
    if (p.timer) clearTimeout(p.timer);
    if (result instanceof Error) p.reject(result);
    else p.resolve(result);
    if (this.dumping === p) {
      this.dumping = undefined;
      const next = this.dumpWaiters.shift();
      if (next) this.start(next);
    }
    while (this.inFlight.size < WINDOW && this.queue.length > 0) this.start(this.queue.shift()!);
    this.updateRef();
  }

  private updateRef(): void {
    const want = this.pendingCount > 0;
    if (want !== this.refd && !this.closed) {
      native.nlRef(this.fd, want);
      this.refd = want;
    }
  }

  private onNative(
    err: NativeError | undefined,
    datagrams: Buffer[] | undefined,
    token: number | undefined,
  ): void {
    if (err) {
      if (token !== undefined) {
        const p = this.inFlight.get(token);
        if (p) this.finish(p, fromNativeError(p.opts.op, p.opts.object, err));
        return;
      }
      // A receive error (ENOBUFS: the kernel dropped replies) leaves every
      // in-flight request without a reliable answer.
      for (const p of [...this.inFlight.values()])
        this.finish(p, fromNativeError(p.opts.op, p.opts.object, err));
      return;
    }
    for (const dg of datagrams ?? []) {
      let msgs: NlMessage[];
      try {
        msgs = decodeMessages(dg);
      } catch (e) {
        // A datagram we cannot split: we can't tell whose it was from its
        // header alone, so fail the request named by its seq if readable.
        const seq = dg.length >= 12 ? dg.readUInt32LE(8) : -1;
        const p = this.inFlight.get(seq);
        if (p) this.finish(p, e as Error);
        continue;
      }
      for (const m of msgs) this.onMessage(m);
    }
  }

  private onMessage(m: NlMessage): void {
    const p = this.inFlight.get(m.seq);
    if (!p || (m.pid !== 0 && m.pid !== this.portId)) return; // a late reply to a timed-out request, or a notification
    try {
      if (m.flags & NLM_F_DUMP_INTR) p.interrupted = true;
      switch (m.type) {
        case NLMSG_NOOP:
          return;
        case NLMSG_OVERRUN:
          this.finish(
            p,
            new CnmdError('KERNEL_ERROR', `${p.opts.op}: netlink overrun`, {
              op: p.opts.op,
              object: p.opts.object,
            }),
          );
          return;
        case NLMSG_ERROR: {
          const e = decodeError(m);
          if (e.errno === 0) this.finish(p, p.replies);
          else this.finish(p, new NetlinkError(p.opts.op, p.opts.object, e));
          return;
        }
        case NLMSG_DONE: {
          const e = decodeDone(m);
          if (e) this.finish(p, new NetlinkError(p.opts.op, p.opts.object, e));
          else if (p.interrupted && p.retries < DUMP_INTR_RETRIES) this.retry(p);
          else if (p.interrupted)
            this.finish(
              p,
              new CnmdError('KERNEL_ERROR', `${p.opts.op}: dump kept changing under us`, {
                op: p.opts.op,
                object: p.opts.object,
              }),
            );
          else this.finish(p, p.replies);
          return;
        }
        default:
          p.replies.push(m);
      }
    } catch (e) {
      this.finish(p, e as Error);
    }
  }

  /** The kernel flagged the dump as inconsistent (objects changed mid-dump): ask again. */
  private retry(p: Pending): void {
    this.inFlight.delete(p.seq);
    p.retries++;
    this.dispatch(p);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    const err = (p: Pending) =>
      new CnmdError('CLOSED', `${p.opts.op}: netlink handle closed`, {
        op: p.opts.op,
        object: p.opts.object,
      });
    for (const p of [...this.inFlight.values(), ...this.queue, ...this.dumpWaiters]) {
      if (p.timer) clearTimeout(p.timer);
      p.reject(err(p));
    }
    this.inFlight.clear();
    this.queue.length = 0;
    this.dumpWaiters.length = 0;
    this.dumping = undefined;
    native.nlClose(this.fd);
  }
}
