// Typed face of the N-API addon (native/*.cc). Syscalls only.
import * as path from 'node:path';

export type SocketSpec = [domain: number, type: number, protocol: number];

/** Error thrown by the addon: `code` is the errno name (EEXIST, ENOENT, ...). */
export interface NativeError extends Error {
  code: string;
  errno: number;
  syscall: string;
  path?: string;
}

export type NetlinkCallback = (
  err: NativeError | undefined,
  messages: Buffer[] | undefined,
  token: number | undefined,
) => void;

export interface NativeAddon {
  /** Opens sockets inside the netns at nsPath (null: the daemon's own), on a throwaway thread. */
  socketsAt(nsPath: string | null, specs: SocketSpec[]): number[];
  /**
   * Creates a netns bind-mounted at path (the file must not exist), writes
   * sysctls inside it ([path under /proc/sys, starting "net/", value]) and opens sockets in it.
   */
  netnsCreate(path: string, specs?: SocketSpec[], sysctls?: [string, string][]): Promise<number[]>;
  /** Unmounts (lazily) and removes a netns file. */
  netnsDelete(path: string): void;
  /** netnsDelete on the thread pool: the unmount's RCU wait does not hold the event loop. */
  netnsRemove(path: string): Promise<void>;
  isNetns(path: string): boolean;
  /** Bind-mounts the netns file src (or /proc/self/ns/net) at dst, a new file. */
  netnsBind(src: string, dst: string): void;
  openPath(path: string): number;
  /**
   * Opens (creating, 0644) path with an exclusive flock taken without waiting: the fd
   * holds the lock until closed. EWOULDBLOCK if another process holds it.
   */
  lockFile(path: string): number;
  /** close(2); EBUSY for a watched netlink socket's fd (nlClose closes those). */
  close(fd: number): void;
  setsockoptInt(fd: number, level: number, name: number, value: number): void;
  bindNetlink(fd: number, groups: number): number;
  bindInet(fd: number, address: string, port: number): void;
  /** listen(2) on a bound stream socket. */
  listenFd(fd: number, backlog: number): void;
  nlWatch(fd: number, cb: NetlinkCallback): void;
  nlRef(fd: number, ref: boolean): void;
  /**
   * Queues a send. flags: NL_SEND_SLOW (a request that blocks in the kernel, like a
   * link removal: a separate pool runs it, so it never delays other sockets),
   * NL_SEND_DUMP (starts a dump: never sent while the event loop reads the socket).
   */
  nlSend(fd: number, data: Buffer, token: number, flags?: number): void;
  nlClose(fd: number): void;
  /** A new fd for the netns a socket lives in (SIOCGSKNS); the caller closes it. */
  socketNetns(fd: number): number;
  /**
   * Connects to host:port and relays the (dup'ed) client fd with it, both ways, with
   * splice(2) on a native thread until both sides are done. The caller closes its own fd.
   */
  relayStart(clientFd: number, host: string, port: number): void;
  /** One non-blocking sendto on a datagram socket: bytes sent, or -errno (never throws for a send failure). */
  udpSend(fd: number, data: Buffer, address: string, port: number): number;
  /**
   * Starts `file` (PATH searched) with argv (argv[0] included) on the thread pool
   * (posix_spawn: the event loop neither forks nor waits for the exec), its stdio on
   * new pipes: [pid, stdin, stdout, stderr] (the caller owns the fds). ENOENT etc. reject.
   */
  spawnPiped(
    file: string,
    argv: string[],
  ): Promise<[pid: number, stdin: number, stdout: number, stderr: number]>;
  /**
   * Reaps a spawnPiped child (blocks a pool thread until it exits: call once its
   * pipes closed): [exit code or -1, signal number or 0].
   */
  waitPid(pid: number): Promise<[code: number, signal: number]>;
  /** SO_ORIGINAL_DST of an accepted TCP connection that iptables redirected. */
  originalDst(fd: number, family: 4 | 6): { address: string; port: number };
}

export const NL_SEND_SLOW = 1;
export const NL_SEND_DUMP = 2;

export const AF_INET = 2;
export const AF_INET6 = 10;
export const AF_NETLINK = 16;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_RAW = 3;
export const SOCK_NONBLOCK = 0o4000;
export const SOL_SOCKET = 1;
export const SO_REUSEADDR = 2;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_SNDBUFFORCE = 32;
export const SO_RCVBUFFORCE = 33;
export const SOL_NETLINK = 270;
export const NETLINK_ROUTE = 0;
export const NETLINK_XFRM = 6;
export const NETLINK_ADD_MEMBERSHIP = 1;
export const NETLINK_CAP_ACK = 10;
export const NETLINK_EXT_ACK = 11;
export const NETLINK_GET_STRICT_CHK = 12;

function load(): NativeAddon {
  // dist/native/index.js -> <root>/build/Release; also works from the source tree.
  const candidates = [
    path.resolve(__dirname, '..', '..', 'build', 'Release', 'cnmd_native.node'),
    path.resolve(__dirname, '..', 'build', 'Release', 'cnmd_native.node'),
  ];
  let lastError: unknown;
  for (const file of candidates) {
    try {
      return require(file) as NativeAddon;
    } catch (e) {
      lastError = e;
    }
  }
  throw new Error(
    `cnmd native addon not built (run "npm install" or "npx node-gyp rebuild"): ${String(lastError)}`,
  );
}

export const native: NativeAddon = load();
