// File descriptors and sockets: open, lock, close, bind, listen, options, UDP send.
#include "util.h"

namespace cnmd {

napi_value OpenPath(napi_env env, napi_callback_info info) {
  Args a(env, info, "openPath(path)");
  std::string path = a.String(0);
  if (!a.Ok()) return nullptr;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ThrowErrno(env, errno, "open", path);
  return Int32(env, fd);
}

// Opens (creating) path and takes an exclusive flock on it without waiting:
// the fd is the lock, released by the kernel when it is closed or the process
// dies, whatever killed it. EWOULDBLOCK when another process holds it.
napi_value LockFile(napi_env env, napi_callback_info info) {
  Args a(env, info, "lockFile(path)");
  std::string path = a.String(0);
  if (!a.Ok()) return nullptr;
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return ThrowErrno(env, errno, "open", path);
  int r;
  do {
    r = flock(fd, LOCK_EX | LOCK_NB);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    int err = errno;
    close(fd);
    return ThrowErrno(env, err, "flock", path);
  }
  return Int32(env, fd);
}

// close(fd). A watched netlink socket is closed only by nlClose: a close of its
// number here is a stale double close that would take the socket from under
// its watcher and I/O thread (and the number could go to the next socket
// opened): refused with EBUSY.
napi_value CloseFd(napi_env env, napi_callback_info info) {
  Args args(env, info, "close(fd)");
  auto [fd] = args.Ints<1>();
  if (!args.Ok()) return nullptr;
  if (NlWatched(fd)) return ThrowErrno(env, EBUSY, "close (a netlink socket: nlClose closes it)");
  if (close(fd) != 0) return ThrowErrno(env, errno, "close");
  return nullptr;
}

// listenFd(fd, backlog): a bound stream socket starts accepting into its backlog.
napi_value ListenFd(napi_env env, napi_callback_info info) {
  Args args(env, info, "listenFd(fd, backlog)");
  auto [fd, backlog] = args.Ints<2>();
  if (!args.Ok()) return nullptr;
  if (listen(fd, backlog) != 0) return ThrowErrno(env, errno, "listen");
  return nullptr;
}

napi_value SetsockoptInt(napi_env env, napi_callback_info info) {
  Args args(env, info, "setsockoptInt(fd, level, name, value)");
  auto [fd, level, name, value] = args.Ints<4>();
  if (!args.Ok()) return nullptr;
  if (setsockopt(fd, level, name, &value, sizeof(value)) != 0) return ThrowErrno(env, errno, "setsockopt");
  return nullptr;
}

// bindNetlink(fd, groups) -> the port id the kernel assigned
napi_value BindNetlink(napi_env env, napi_callback_info info) {
  Args args(env, info, "bindNetlink(fd, groups)");
  auto [fd, groups] = args.Ints<2>();
  if (!args.Ok()) return nullptr;
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  sa.nl_groups = static_cast<uint32_t>(groups);
  if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) return ThrowErrno(env, errno, "bind");
  socklen_t len = sizeof(sa);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) return ThrowErrno(env, errno, "getsockname");
  napi_value v;
  napi_create_uint32(env, sa.nl_pid, &v);  // a port id: u32, most above 2^31
  return v;
}

// bindInet(fd, address, port): bind a UDP/TCP socket to an IPv4 or IPv6 address.
napi_value BindInet(napi_env env, napi_callback_info info) {
  Args a(env, info, "bindInet(fd, address, port)");
  int fd = a.Int(0);
  std::string addr = a.String(1);
  int port = a.Int(2);
  if (!a.Ok()) return nullptr;
  sockaddr_storage ss;
  socklen_t len;
  int family;
  if (!ParseSockaddr(addr, port, &ss, &len, &family)) return ThrowErrno(env, EINVAL, "bind: not an IP address", addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) return ThrowErrno(env, errno, "bind", addr);
  return nullptr;
}

// udpSend(fd, data, address, port) -> bytes sent, or -errno: one non-blocking
// sendto on a datagram socket the caller owns. The embedded DNS answers with it:
// node's dgram send costs several microseconds of JS per datagram; a refusal
// (EAGAIN when the socket buffer is full) is returned, not thrown, so the caller
// falls back to the queued send.
napi_value UdpSend(napi_env env, napi_callback_info info) {
  Args a(env, info, "udpSend(fd, buffer, address, port)");
  int fd = a.Int(0);
  auto [data, size] = a.Buffer(1);
  std::string addr = a.String(2);
  int port = a.Int(3);
  if (!a.Ok()) return nullptr;
  sockaddr_storage ss;
  socklen_t len;
  int family;
  int32_t rc;
  if (!ParseSockaddr(addr, port, &ss, &len, &family)) {
    rc = -EINVAL;
  } else {
    ssize_t n = sendto(fd, data, size, MSG_DONTWAIT | MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&ss), len);
    rc = n >= 0 ? static_cast<int32_t>(n) : -errno;
  }
  return Int32(env, rc);
}

// originalDst(fd, family) -> { address, port }: where a connection redirected by
// iptables (REDIRECT/DNAT) was originally headed (SO_ORIGINAL_DST).
napi_value OriginalDst(napi_env env, napi_callback_info info) {
  Args args(env, info, "originalDst(fd, family)");
  auto [fd, family] = args.Ints<2>();
  if (!args.Ok()) return nullptr;
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  int rc = family == 6 ? getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &ss, &len)
                     : getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &ss, &len);
  if (rc != 0) return ThrowErrno(env, errno, "getsockopt SO_ORIGINAL_DST");
  char buf[INET6_ADDRSTRLEN] = {0};
  int port;
  if (ss.ss_family == AF_INET6) {
    auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &s6->sin6_addr, buf, sizeof(buf));
    port = ntohs(s6->sin6_port);
  } else {
    auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &s4->sin_addr, buf, sizeof(buf));
    port = ntohs(s4->sin_port);
  }
  napi_value out, addr, p;
  napi_create_object(env, &out);
  napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &addr);
  napi_create_int32(env, port, &p);
  napi_set_named_property(env, out, "address", addr);
  napi_set_named_property(env, out, "port", p);
  return out;
}

// socketNetns(fd) -> a new fd referring to the netns the socket lives in
// (SIOCGSKNS): a second socket can be opened in exactly that namespace even
// when its path was removed or reused.
napi_value SocketNetns(napi_env env, napi_callback_info info) {
  Args args(env, info, "socketNetns(fd)");
  auto [fd] = args.Ints<1>();
  if (!args.Ok()) return nullptr;
  int nsfd = ioctl(fd, SIOCGSKNS);
  if (nsfd < 0) return ThrowErrno(env, errno, "ioctl SIOCGSKNS");
  int flags = fcntl(nsfd, F_GETFD);
  if (flags >= 0) fcntl(nsfd, F_SETFD, flags | FD_CLOEXEC);
  return Int32(env, nsfd);
}

}  // namespace cnmd
