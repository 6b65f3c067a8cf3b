// cnmd's native layer: syscalls only. No parsing, no policy.
//
// Two rules shape this file:
//  * No thread that runs JavaScript, nor a libuv pool thread, ever changes its
//    network namespace. Work that must happen "inside" a netns (creating one,
//    opening a socket in one) runs on a short-lived std::thread that is joined
//    and discarded, so its namespace dies with it.
//  * Netlink sends can block for milliseconds (the kernel does the work of an
//    rtnetlink request inside sendmsg, under rtnl_lock, and deleting a device
//    waits for RCU). Sends therefore go through one I/O thread; replies are
//    read on the event loop with uv_poll, non-blocking.

#include <node_api.h>
#include <uv.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <linux/netlink.h>
#include <sched.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <spawn.h>
#include <stdlib.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <queue>
#include <string>
#include <thread>
#include <vector>

namespace {

#define CHECK_NAPI(env, call)                                               \
  do {                                                                      \
    if ((call) != napi_ok) {                                                \
      napi_throw_error((env), "ENAPI", "N-API call failed: " #call);        \
      return nullptr;                                                       \
    }                                                                       \
  } while (0)

const char* ErrnoName(int err) {
  const char* n = strerrorname_np(err);
  return n ? n : "EUNKNOWN";
}

napi_value MakeError(napi_env env, int err, const std::string& op, const std::string& path) {
  std::string msg = op + ": " + strerror(err) + " (" + ErrnoName(err) + ")";
  if (!path.empty()) msg += " [" + path + "]";
  napi_value message, code, error, errnoValue, syscall;
  napi_create_string_utf8(env, msg.c_str(), NAPI_AUTO_LENGTH, &message);
  napi_create_string_utf8(env, ErrnoName(err), NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, message, &error);
  napi_create_int32(env, err, &errnoValue);
  napi_set_named_property(env, error, "errno", errnoValue);
  napi_create_string_utf8(env, op.c_str(), NAPI_AUTO_LENGTH, &syscall);
  napi_set_named_property(env, error, "syscall", syscall);
  if (!path.empty()) {
    napi_value p;
    napi_create_string_utf8(env, path.c_str(), NAPI_AUTO_LENGTH, &p);
    napi_set_named_property(env, error, "path", p);
  }
  return error;
}

napi_value ThrowErrno(napi_env env, int err, const std::string& op, const std::string& path = "") {
  napi_throw(env, MakeError(env, err, op, path));
  return nullptr;
}

bool GetString(napi_env env, napi_value v, std::string* out) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, nullptr, 0, &len) != napi_ok) return false;
  out->resize(len);
  size_t got = 0;
  if (napi_get_value_string_utf8(env, v, &(*out)[0], len + 1, &got) != napi_ok) return false;
  out->resize(got);
  return true;
}

// The one string argument (a path) of a call; throws a TypeError naming `usage` if absent.
bool PathArg(napi_env env, napi_callback_info info, const char* usage, std::string* path) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 1 || !GetString(env, argv[0], path)) {
    napi_throw_type_error(env, "EINVAL", usage);
    return false;
  }
  return true;
}

bool IsNullish(napi_env env, napi_value v) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  return t == napi_null || t == napi_undefined;
}

struct SocketSpec {
  int domain, type, protocol;
};

// Runs `fn` on a fresh thread that first enters the netns at nsFd (if >= 0).
// The thread is joined and discarded: nothing else ever runs in that namespace.
template <typename Fn>
int InNetnsThread(int nsFd, Fn fn) {
  int err = 0;
  std::thread t([&]() {
    if (nsFd >= 0 && setns(nsFd, CLONE_NEWNET) != 0) {
      err = errno;
      return;
    }
    err = fn();
  });
  t.join();
  return err;
}

// Opens each requested socket in the calling thread's netns. On failure,
// closes what was opened and returns the errno.
int OpenSockets(const std::vector<SocketSpec>& specs, std::vector<int>* fds) {
  for (const auto& s : specs) {
    int fd = socket(s.domain, s.type | SOCK_CLOEXEC, s.protocol);
    if (fd < 0) {
      int err = errno;
      for (int f : *fds) close(f);
      fds->clear();
      return err;
    }
    fds->push_back(fd);
  }
  return 0;
}

// Calls fn(element) for each element of the JS array arr; false when arr is no
// array or fn refuses an element.
template <typename F>
bool EachElement(napi_env env, napi_value arr, F fn) {
  bool isArray = false;
  napi_is_array(env, arr, &isArray);
  if (!isArray) return false;
  uint32_t n = 0;
  napi_get_array_length(env, arr, &n);
  for (uint32_t i = 0; i < n; i++) {
    napi_value item;
    if (napi_get_element(env, arr, i, &item) != napi_ok || !fn(item)) return false;
  }
  return true;
}

bool ElementInt(napi_env env, napi_value arr, uint32_t i, int32_t* out) {
  napi_value v;
  return napi_get_element(env, arr, i, &v) == napi_ok && napi_get_value_int32(env, v, out) == napi_ok;
}

bool ElementString(napi_env env, napi_value arr, uint32_t i, std::string* out) {
  napi_value v;
  return napi_get_element(env, arr, i, &v) == napi_ok && GetString(env, v, out);
}

bool ParseSocketSpecs(napi_env env, napi_value arr, std::vector<SocketSpec>* out) {
  return EachElement(env, arr, [&](napi_value item) {
    SocketSpec s{};
    if (!ElementInt(env, item, 0, &s.domain) || !ElementInt(env, item, 1, &s.type) || !ElementInt(env, item, 2, &s.protocol)) return false;
    out->push_back(s);
    return true;
  });
}

napi_value FdArray(napi_env env, const std::vector<int>& fds) {
  napi_value arr;
  napi_create_array_with_length(env, fds.size(), &arr);
  for (size_t i = 0; i < fds.size(); i++) {
    napi_value v;
    napi_create_int32(env, fds[i], &v);
    napi_set_element(env, arr, i, v);
  }
  return arr;
}

// socketsAt(nsPath | null, [[domain, type, protocol], ...]) -> fd[]
napi_value SocketsAt(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  std::vector<SocketSpec> specs;
  if (argc < 2 || !ParseSocketSpecs(env, argv[1], &specs)) {
    napi_throw_type_error(env, "EINVAL", "socketsAt(nsPath, [[domain, type, protocol], ...])");
    return nullptr;
  }
  std::vector<int> fds;
  if (IsNullish(env, argv[0])) {
    int err = OpenSockets(specs, &fds);
    if (err) return ThrowErrno(env, err, "socket");
    return FdArray(env, fds);
  }
  std::string path;
  if (!GetString(env, argv[0], &path)) {
    napi_throw_type_error(env, "EINVAL", "nsPath must be a string or null");
    return nullptr;
  }
  int nsFd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (nsFd < 0) return ThrowErrno(env, errno, "open netns", path);
  bool inSetns = true;
  int err = InNetnsThread(nsFd, [&]() {
    inSetns = false;
    return OpenSockets(specs, &fds);
  });
  close(nsFd);
  if (err) return ThrowErrno(env, err, inSetns ? "setns" : "socket", path);
  return FdArray(env, fds);
}

// ---- promises settled from the thread pool ----

// One call's work on the libuv pool: Execute() there, then the promise is
// rejected with err (naming op and object) or resolved with Result().
struct PromiseWork {
  int err = 0;
  std::string op, object;
  napi_deferred deferred;
  napi_async_work work;
  virtual ~PromiseWork() = default;
  virtual void Execute() = 0;
  virtual napi_value Result(napi_env env) {
    napi_value u;
    napi_get_undefined(env, &u);
    return u;
  }
};

// Queues w (owned from here on) and returns its promise.
napi_value QueuePromiseWork(napi_env env, const char* name, PromiseWork* w) {
  napi_value promise, resource;
  if (napi_create_promise(env, &w->deferred, &promise) != napi_ok) {
    delete w;
    napi_throw_error(env, "ENAPI", "N-API call failed: napi_create_promise");
    return nullptr;
  }
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource);
  napi_status st = napi_create_async_work(
      env, nullptr, resource, [](napi_env, void* d) { static_cast<PromiseWork*>(d)->Execute(); },
      [](napi_env env, napi_status, void* d) {
        auto* w = static_cast<PromiseWork*>(d);
        if (w->err) napi_reject_deferred(env, w->deferred, MakeError(env, w->err, w->op, w->object));
        else napi_resolve_deferred(env, w->deferred, w->Result(env));
        napi_delete_async_work(env, w->work);
        delete w;
      },
      w, &w->work);
  if (st != napi_ok || napi_queue_async_work(env, w->work) != napi_ok) {
    napi_reject_deferred(env, w->deferred, MakeError(env, EAGAIN, "queue work", name));
    if (st == napi_ok) napi_delete_async_work(env, w->work);
    delete w;
  }
  return promise;
}

// ---- netns create (async: unshare and mount can take a while) ----

struct NetnsCreateWork : PromiseWork {
  std::string path;
  std::vector<SocketSpec> specs;
  std::vector<std::pair<std::string, std::string>> sysctls;  // /proc/sys paths (relative) and values
  std::vector<int> fds;
  void Execute() override;
  napi_value Result(napi_env env) override { return FdArray(env, fds); }
};

void NetnsCreateWork::Execute() {
  object = path;
  int fd = open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
  if (fd < 0) {
    err = errno;
    op = "create netns file";
    return;
  }
  close(fd);
  err = InNetnsThread(-1, [&]() {
    if (unshare(CLONE_NEWNET) != 0) {
      op = "unshare";
      return errno;
    }
    if (mount("/proc/thread-self/ns/net", path.c_str(), "none", MS_BIND, nullptr) != 0) {
      op = "mount";
      return errno;
    }
    // /proc/sys/net is the opener's netns: this thread is the one place that sees the new one.
    for (const auto& kv : sysctls) {
      std::string file = "/proc/sys/" + kv.first;
      int fd = open(file.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd < 0) {
        op = "sysctl " + kv.first;
        return errno;
      }
      ssize_t n = write(fd, kv.second.data(), kv.second.size());
      int e = n < 0 ? errno : 0;
      close(fd);
      if (e) {
        op = "sysctl " + kv.first;
        return e;
      }
    }
    int e = OpenSockets(specs, &fds);
    if (e) op = "socket";
    return e;
  });
  if (err) {
    umount2(path.c_str(), MNT_DETACH);
    unlink(path.c_str());
  }
}

bool ParseSysctls(napi_env env, napi_value arr, std::vector<std::pair<std::string, std::string>>* out) {
  return EachElement(env, arr, [&](napi_value item) {
    std::pair<std::string, std::string> kv;
    if (!ElementString(env, item, 0, &kv.first) || !ElementString(env, item, 1, &kv.second)) return false;
    if (kv.first.find("..") != std::string::npos || kv.first.rfind("net/", 0) != 0) return false;
    out->push_back(kv);
    return true;
  });
}

// netnsCreate(path, [[domain, type, protocol], ...], [[sysctlPath, value], ...]) -> Promise<fd[]>
// Creates a new netns bind-mounted at path, writes the sysctls (paths under
// /proc/sys, "net/..." only) inside it, and opens the requested sockets in it.
napi_value NetnsCreate(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  auto* w = new NetnsCreateWork();
  if (argc < 1 || !GetString(env, argv[0], &w->path) ||
      (argc >= 2 && !IsNullish(env, argv[1]) && !ParseSocketSpecs(env, argv[1], &w->specs)) ||
      (argc >= 3 && !IsNullish(env, argv[2]) && !ParseSysctls(env, argv[2], &w->sysctls))) {
    delete w;
    napi_throw_type_error(env, "EINVAL", "netnsCreate(path, [[domain, type, protocol], ...], [[\"net/...\", value], ...])");
    return nullptr;
  }
  return QueuePromiseWork(env, "cnmd.netnsCreate", w);
}

// Unmounts (lazily) and removes a netns file: 0, or the errno (ENOENT when either says so).
int RemoveNetnsFile(const std::string& path) {
  int umountErr = 0;
  if (umount2(path.c_str(), MNT_DETACH) != 0) umountErr = errno;
  if (unlink(path.c_str()) != 0) return umountErr == ENOENT || errno == ENOENT ? ENOENT : errno;
  return 0;
}

// netnsDelete(path): unmount (lazily) and remove the file.
napi_value NetnsDelete(napi_env env, napi_callback_info info) {
  std::string path;
  if (!PathArg(env, info, "netnsDelete(path)", &path)) return nullptr;
  int err = RemoveNetnsFile(path);
  if (err) return ThrowErrno(env, err, "unlink netns", path);
  return nullptr;
}

// netnsRemove(path) -> Promise: netnsDelete on the thread pool. A detached
// unmount waits for an RCU grace period (~0.4 ms here, more when loaded): a
// caller that need not wait (a pool sweeping its spent paths) leaves the event
// loop free meanwhile.
struct NetnsRemoveWork : PromiseWork {
  void Execute() override { err = RemoveNetnsFile(object); }
};

napi_value NetnsRemove(napi_env env, napi_callback_info info) {
  std::string path;
  if (!PathArg(env, info, "netnsRemove(path)", &path)) return nullptr;
  auto* w = new NetnsRemoveWork();
  w->op = "unlink netns";
  w->object = path;
  return QueuePromiseWork(env, "cnmd.netnsRemove", w);
}

// netnsBind(src, dst): bind-mount the netns file src (or /proc/self/ns/net,
// the daemon's own netns) at dst, a new file. Gives a namespace a second path.
napi_value NetnsBind(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  std::string src, dst;
  if (argc < 2 || !GetString(env, argv[0], &src) || !GetString(env, argv[1], &dst)) {
    napi_throw_type_error(env, "EINVAL", "netnsBind(src, dst)");
    return nullptr;
  }
  int fd = open(dst.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
  if (fd < 0) return ThrowErrno(env, errno, "create netns file", dst);
  close(fd);
  if (mount(src.c_str(), dst.c_str(), "none", MS_BIND, nullptr) != 0) {
    int err = errno;
    unlink(dst.c_str());
    return ThrowErrno(env, err, "mount", src + " -> " + dst);
  }
  return nullptr;
}

// isNetns(path) -> boolean: is path a bind-mounted network namespace?
napi_value IsNetns(napi_env env, napi_callback_info info) {
  std::string path;
  if (!PathArg(env, info, "isNetns(path)", &path)) return nullptr;
  napi_value result;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  bool yes = false;
  if (fd >= 0) {
    // setns on a non-netns fd fails with EINVAL; probe on a throwaway thread.
    int err = InNetnsThread(fd, []() { return 0; });
    yes = err == 0;
    close(fd);
  }
  napi_get_boolean(env, yes, &result);
  return result;
}

napi_value OpenPath(napi_env env, napi_callback_info info) {
  std::string path;
  if (!PathArg(env, info, "openPath(path)", &path)) return nullptr;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ThrowErrno(env, errno, "open", path);
  napi_value v;
  napi_create_int32(env, fd, &v);
  return v;
}

// Opens (creating) path and takes an exclusive flock on it without waiting:
// the fd is the lock, released by the kernel when it is closed or the process
// dies, whatever killed it. EWOULDBLOCK when another process holds it.
napi_value LockFile(napi_env env, napi_callback_info info) {
  std::string path;
  if (!PathArg(env, info, "lockFile(path)", &path)) return nullptr;
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
  napi_value v;
  napi_create_int32(env, fd, &v);
  return v;
}

bool GetInts(napi_env env, napi_callback_info info, size_t want, int* out) {
  size_t argc = 8;
  napi_value argv[8];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < want) return false;
  for (size_t i = 0; i < want; i++) {
    if (napi_get_value_int32(env, argv[i], &out[i]) != napi_ok) return false;
  }
  return true;
}

bool NlWatched(int fd);

// close(fd). A watched netlink socket is closed only by nlClose: a close of its
// number here is a stale double close that would take the socket from under
// its watcher and I/O thread (and the number could go to the next socket
// opened): refused with EBUSY.
napi_value CloseFd(napi_env env, napi_callback_info info) {
  int a[1];
  if (!GetInts(env, info, 1, a)) {
    napi_throw_type_error(env, "EINVAL", "close(fd)");
    return nullptr;
  }
  if (NlWatched(a[0])) return ThrowErrno(env, EBUSY, "close (a netlink socket: nlClose closes it)");
  if (close(a[0]) != 0) return ThrowErrno(env, errno, "close");
  return nullptr;
}

// listenFd(fd, backlog): a bound stream socket starts accepting into its backlog.
napi_value ListenFd(napi_env env, napi_callback_info info) {
  int a[2];
  if (!GetInts(env, info, 2, a)) {
    napi_throw_type_error(env, "EINVAL", "listenFd(fd, backlog)");
    return nullptr;
  }
  if (listen(a[0], a[1]) != 0) return ThrowErrno(env, errno, "listen");
  return nullptr;
}

napi_value SetsockoptInt(napi_env env, napi_callback_info info) {
  int a[4];
  if (!GetInts(env, info, 4, a)) {
    napi_throw_type_error(env, "EINVAL", "setsockoptInt(fd, level, name, value)");
    return nullptr;
  }
  if (setsockopt(a[0], a[1], a[2], &a[3], sizeof(int)) != 0) return ThrowErrno(env, errno, "setsockopt");
  return nullptr;
}

// bindNetlink(fd, groups) -> the port id the kernel assigned
napi_value BindNetlink(napi_env env, napi_callback_info info) {
  int a[2];
  if (!GetInts(env, info, 2, a)) {
    napi_throw_type_error(env, "EINVAL", "bindNetlink(fd, groups)");
    return nullptr;
  }
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  sa.nl_groups = static_cast<uint32_t>(a[1]);
  if (bind(a[0], reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) return ThrowErrno(env, errno, "bind");
  socklen_t len = sizeof(sa);
  if (getsockname(a[0], reinterpret_cast<sockaddr*>(&sa), &len) != 0) return ThrowErrno(env, errno, "getsockname");
  napi_value v;
  napi_create_uint32(env, sa.nl_pid, &v);
  return v;
}

// Parses an IPv4 or IPv6 address and port into ss; false if not an address.
bool ParseSockaddr(const std::string& addr, int port, sockaddr_storage* ss, socklen_t* len, int* family) {
  *ss = sockaddr_storage{};
  auto* s4 = reinterpret_cast<sockaddr_in*>(ss);
  auto* s6 = reinterpret_cast<sockaddr_in6*>(ss);
  if (inet_pton(AF_INET, addr.c_str(), &s4->sin_addr) == 1) {
    s4->sin_family = AF_INET;
    s4->sin_port = htons(static_cast<uint16_t>(port));
    *len = sizeof(*s4);
    *family = AF_INET;
    return true;
  }
  if (inet_pton(AF_INET6, addr.c_str(), &s6->sin6_addr) == 1) {
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(static_cast<uint16_t>(port));
    *len = sizeof(*s6);
    *family = AF_INET6;
    return true;
  }
  return false;
}

// bindInet(fd, address, port): bind a UDP/TCP socket to an IPv4 or IPv6 address.
napi_value BindInet(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  int fd = -1, port = 0;
  std::string addr;
  if (argc < 3 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || !GetString(env, argv[1], &addr) ||
      napi_get_value_int32(env, argv[2], &port) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "bindInet(fd, address, port)");
    return nullptr;
  }
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
  size_t argc = 4;
  napi_value argv[4];
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  int fd = -1, port = 0;
  void* data = nullptr;
  size_t size = 0;
  std::string addr;
  if (argc < 4 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_buffer_info(env, argv[1], &data, &size) != napi_ok ||
      !GetString(env, argv[2], &addr) || napi_get_value_int32(env, argv[3], &port) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "udpSend(fd, buffer, address, port)");
    return nullptr;
  }
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
  napi_value v;
  napi_create_int32(env, rc, &v);
  return v;
}

// originalDst(fd, family) -> { address, port }: where a connection redirected by
// iptables (REDIRECT/DNAT) was originally headed (SO_ORIGINAL_DST).
napi_value OriginalDst(napi_env env, napi_callback_info info) {
  int a[2];
  if (!GetInts(env, info, 2, a)) {
    napi_throw_type_error(env, "EINVAL", "originalDst(fd, family)");
    return nullptr;
  }
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  int rc = a[1] == 6 ? getsockopt(a[0], SOL_IPV6, IP6T_SO_ORIGINAL_DST, &ss, &len)
                     : getsockopt(a[0], SOL_IP, SO_ORIGINAL_DST, &ss, &len);
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
  int a[1];
  if (!GetInts(env, info, 1, a)) {
    napi_throw_type_error(env, "EINVAL", "socketNetns(fd)");
    return nullptr;
  }
  int nsfd = ioctl(a[0], SIOCGSKNS);
  if (nsfd < 0) return ThrowErrno(env, errno, "ioctl SIOCGSKNS");
  int flags = fcntl(nsfd, F_GETFD);
  if (flags >= 0) fcntl(nsfd, F_SETFD, flags | FD_CLOEXEC);
  napi_value v;
  napi_create_int32(env, nsfd, &v);
  return v;
}

// ---- netlink I/O ----

// One I/O thread performs every netlink send, in submission order. Closing a
// socket is queued behind its sends so an fd number is never reused while a
// send for the old socket is still pending.

// What a watched socket shares with the I/O threads; it outlives both the
// watcher and the socket's last queued send.
struct NlSocket {
  int fd;
  // Held by the event loop while it receives and by an I/O thread while it
  // sends a dump request. A recv continues a running dump in the kernel
  // (netlink_recvmsg -> netlink_dump), checking first without the dump's lock
  // whether one runs; a recv that sees a dump being started on another thread
  // and then finds it already finished (one that fits in one batch, as an
  // IPv6 address dump does) sets EINVAL on the socket, and the next recv fails
  // with it: the CI flake "addr list: recv: EINVAL". So a dump is never
  // started while this socket is being read.
  std::mutex recvMu;
};

// nlSend's flags.
constexpr int kSendSlow = 1;  // may block long in the kernel (a link removal): the slow pool
constexpr int kSendDump = 2;  // starts a dump: sent while the event loop is not reading the socket

struct SendJob {
  bool slow = false;
  bool dump = false;
  uint64_t seq = 0;   // submission order, across sockets (set by Push)
  int fd;
  std::shared_ptr<NlSocket> sock;
  std::vector<uint8_t> data;
  bool close;  // a close request (data empty)
  double token;
};

// A send's failure, for the watcher of the very socket that sent (not of
// whatever socket holds its fd number when the event loop gets to it).
struct SendError {
  std::shared_ptr<NlSocket> sock;
  int err;
  double token;
};

// One fast I/O thread plus a pool for slow sends. Each socket's
// sends (and its close) stay in submission order: a socket is handed to at
// most one thread at a time. Sends the caller marks slow (RTM_DELLINK: the
// kernel waits for an RCU grace period, ~20 ms here, after the rtnl lock) go
// to up to kMaxSlowThreads threads and overlap their waits; everything else
// goes, in order, through the one fast thread, so it never queues behind a
// slow send of another socket, and quick sends never contend with each other.
//
// "In order" is submission order across sockets too: callers send a request
// naming a link on one socket right after the request making it on another
// (a veth made from the sandbox's side, its host side set by name). So the
// fast thread takes the ready socket whose next send was submitted first
// (a heap by sequence number), not the one that became ready first: a socket
// whose previous send has returned from the kernel but whose bookkeeping the
// thread has not done yet (preempted in between) became ready late, and a
// FIFO of sockets let a later send on another socket overtake it. Only a
// socket whose previous send is a slow one running elsewhere waits apart.
constexpr int kMaxSlowThreads = 8;

struct IoPool {
  struct SockQueue {
    std::deque<SendJob> jobs;
    bool busy = false;
  };
  std::mutex mu;
  std::condition_variable fastCv, slowCv;
  std::map<int, SockQueue> socks;  // an entry lives while it has jobs or one is running
  using Ready = std::pair<uint64_t, int>;  // (seq of the socket's next job, fd)
  // Sockets with jobs and no running send: the smallest next-job seq first.
  std::priority_queue<Ready, std::vector<Ready>, std::greater<Ready>> readyFast, readySlow;
  uint64_t nextSeq = 1;
  bool fastStarted = false;
  bool fastWaiting = false;  // the fast thread sleeps on fastCv (set and read under mu)
  int slowThreads = 0, slowIdle = 0;
  // Test hook (CNMD_TEST_IO_LAG_US): the fast thread pauses between a send's
  // return and its bookkeeping, as a preempted thread would.
  long lagUs = [] {
    const char* v = getenv("CNMD_TEST_IO_LAG_US");
    return v ? atol(v) : 0L;
  }();

  // With mu held: q (for fd) has jobs and none running: queue it by its next job.
  // Returns the condition variable to notify once mu is released, if any: a
  // thread woken while the notifier still holds mu wakes only to block on mu,
  // and sleeps and wakes once more (two more futex calls and a context switch
  // on every burst's first send, measured with strace).
  std::condition_variable* MakeReady(int fd, SockQueue& q) {
    if (q.jobs.front().slow) {
      readySlow.push({q.jobs.front().seq, fd});
      if (slowIdle == 0 && slowThreads < kMaxSlowThreads) {
        slowThreads++;
        std::thread([this]() { Run(true); }).detach();
        return nullptr;
      }
      return &slowCv;
    }
    readyFast.push({q.jobs.front().seq, fd});
    if (!fastStarted) {
      fastStarted = true;
      std::thread([this]() { Run(false); }).detach();
      return nullptr;
    }
    return fastWaiting ? &fastCv : nullptr;
  }

  void Push(SendJob job) {
    std::condition_variable* wake;
    {
      std::lock_guard<std::mutex> lock(mu);
      int fd = job.fd;
      job.seq = nextSeq++;
      auto& q = socks[fd];
      q.jobs.push_back(std::move(job));
      if (q.busy || q.jobs.size() > 1) return;  // already queued or running
      wake = MakeReady(fd, q);
    }
    if (wake) wake->notify_one();
  }

  // Send errors go to the event loop through one threadsafe function for every
  // socket (its callback finds the watcher by fd). Calls into node happen under
  // mu, and stop once the environment's teardown has begun (napiGone, set by an
  // env cleanup hook registered after the function, so it runs before the
  // function is finalized): an I/O thread still busy while the process exits
  // must not touch a torn-down environment (it aborted the process).
  napi_threadsafe_function errTsfn = nullptr;
  bool napiGone = false;

  void ReportError(SendError* e) {
    std::lock_guard<std::mutex> lock(mu);
    if (napiGone || errTsfn == nullptr || napi_call_threadsafe_function(errTsfn, e, napi_tsfn_nonblocking) != napi_ok) delete e;
  }

  void Perform(SendJob& job) {
    if (job.close) {
      close(job.fd);
      return;
    }
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    std::unique_lock<std::mutex> reading(job.sock->recvMu, std::defer_lock);
    if (job.dump) reading.lock();
    ssize_t n;
    do {
      n = sendto(job.fd, job.data.data(), job.data.size(), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof(kernel));
    } while (n < 0 && errno == EINTR);
    int err = n < 0 ? errno : 0;
    if (reading.owns_lock()) reading.unlock();
    if (err) ReportError(new SendError{job.sock, err, job.token});
  }

  void Run(bool slow) {
    auto& ready = slow ? readySlow : readyFast;
    auto& cv = slow ? slowCv : fastCv;
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      if (slow) slowIdle++;
      else fastWaiting = ready.empty();
      cv.wait(lock, [&]() { return !ready.empty(); });
      if (slow) slowIdle--;
      else fastWaiting = false;
      int fd = ready.top().second;
      ready.pop();
      auto& q = socks[fd];
      SendJob job = std::move(q.jobs.front());
      q.jobs.pop_front();
      q.busy = true;
      lock.unlock();
      Perform(job);
      if (!slow && lagUs > 0) usleep(static_cast<useconds_t>(lagUs));
      lock.lock();
      auto& q2 = socks[fd];
      q2.busy = false;
      std::condition_variable* wake = nullptr;
      if (q2.jobs.empty()) socks.erase(fd);
      else wake = MakeReady(fd, q2);
      // The socket's next job may be for the other kind of thread: notify it with
      // the lock dropped, as in Push. One for this kind needs no notify: this
      // thread loops and takes a ready socket itself.
      if (wake && wake != &cv) {
        lock.unlock();
        wake->notify_one();
        lock.lock();
      }
    }
  }
};

IoPool* g_io = new IoPool();  // never freed: the detached threads outlive static destruction

struct Watcher {
  napi_env env;
  int fd;
  std::shared_ptr<NlSocket> sock;
  uv_poll_t poll;
  napi_ref callback;
  bool closing = false;
};

// One receive buffer for every watcher: replies are read on the event loop
// thread only, and copied out before the next read. (A buffer per watcher
// cost 64 KiB per sandbox handle: 64 MB of RSS at 1000 sandboxes.)
std::vector<uint8_t> g_recvbuf(64 * 1024);

std::map<int, Watcher*> g_watchers;

bool NlWatched(int fd) { return g_watchers.count(fd) > 0; }

void CallCallback(Watcher* w, napi_value err, napi_value msgs, napi_value token) {
  if (w->callback == nullptr) return;
  napi_env env = w->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb, global, undef;
  napi_get_undefined(env, &undef);
  napi_get_global(env, &global);
  if (napi_get_reference_value(env, w->callback, &cb) == napi_ok && cb != nullptr) {
    napi_value args[3] = {err ? err : undef, msgs ? msgs : undef, token ? token : undef};
    napi_value result;
    // make_callback so promise microtasks run after the callback, as for any I/O.
    napi_make_callback(env, nullptr, global, cb, 3, args, &result);
  }
  napi_close_handle_scope(env, scope);
}

void OnReadable(uv_poll_t* handle, int status, int) {
  auto* w = static_cast<Watcher*>(handle->data);
  napi_env env = w->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  if (status < 0) {
    CallCallback(w, MakeError(env, -status, "poll", ""), nullptr, nullptr);
    napi_close_handle_scope(env, scope);
    return;
  }
  // An I/O thread is starting a dump on this socket (NlSocket::recvMu): read
  // once it is done. The socket stays readable, so the loop calls back at once.
  std::unique_lock<std::mutex> reading(w->sock->recvMu, std::try_to_lock);
  if (!reading.owns_lock()) {
    napi_close_handle_scope(env, scope);
    return;
  }
  napi_value arr;
  napi_create_array(env, &arr);
  uint32_t count = 0;
  napi_value error = nullptr;
  // Drain what is queued now, bounded so one chatty socket can't starve the loop.
  for (int i = 0; i < 256; i++) {
    // One recv per message into a buffer no netlink message comes near (the kernel
    // sizes a dump's messages to at most 32 KiB, vishvananda/netlink reads with 64 KiB):
    // a peek first for the size would double the syscalls of every reply. MSG_TRUNC
    // returns the real length, so a message that did not fit is an error, not data lost quietly.
    ssize_t n = recv(w->fd, g_recvbuf.data(), g_recvbuf.size(), MSG_DONTWAIT | MSG_TRUNC);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) error = MakeError(env, errno, "recv", "");
      break;
    }
    if (static_cast<size_t>(n) > g_recvbuf.size()) {
      error = MakeError(env, EMSGSIZE, "recv (a netlink message of " + std::to_string(n) + " bytes was cut)", "");
      break;
    }
    void* data;
    napi_value b;
    napi_create_buffer_copy(env, static_cast<size_t>(n), g_recvbuf.data(), &data, &b);
    napi_set_element(env, arr, count++, b);
  }
  reading.unlock();
  if (count > 0) CallCallback(w, nullptr, arr, nullptr);
  if (error != nullptr && !w->closing) CallCallback(w, error, nullptr, nullptr);
  napi_close_handle_scope(env, scope);
}

void CallSendError(napi_env env, napi_value, void*, void* data) {
  auto* e = static_cast<SendError*>(data);
  if (env != nullptr) {
    auto it = g_watchers.find(e->sock->fd);
    if (it != g_watchers.end() && it->second->sock == e->sock && !it->second->closing) {
      napi_value err, token;
      err = MakeError(env, e->err, "sendto", "");
      napi_create_double(env, e->token, &token);
      CallCallback(it->second, err, nullptr, token);
    }
  }
  delete e;
}

// nlWatch(fd, callback(err, buffers, token)): read replies on the event loop.
napi_value NlWatch(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  int fd = -1;
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "nlWatch(fd, callback)");
    return nullptr;
  }
  if (g_watchers.count(fd)) return ThrowErrno(env, EEXIST, "nlWatch");
  uv_loop_t* loop;
  CHECK_NAPI(env, napi_get_uv_event_loop(env, &loop));
  auto* w = new Watcher();
  w->env = env;
  w->fd = fd;
  w->sock = std::make_shared<NlSocket>();
  w->sock->fd = fd;
  w->poll.data = w;
  int rc = uv_poll_init(loop, &w->poll, fd);
  if (rc != 0) {
    delete w;
    return ThrowErrno(env, -rc, "uv_poll_init");
  }
  napi_create_reference(env, argv[1], 1, &w->callback);
  bool first;
  {
    std::lock_guard<std::mutex> lock(g_io->mu);
    first = g_io->errTsfn == nullptr;
  }
  if (first) {
    napi_value name;
    napi_threadsafe_function tsfn;
    napi_create_string_utf8(env, "cnmd.netlinkSendError", NAPI_AUTO_LENGTH, &name);
    CHECK_NAPI(env, napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, nullptr, nullptr, nullptr, CallSendError, &tsfn));
    napi_unref_threadsafe_function(env, tsfn);
    CHECK_NAPI(env, napi_add_env_cleanup_hook(
                        env,
                        [](void*) {
                          std::lock_guard<std::mutex> lock(g_io->mu);
                          g_io->napiGone = true;
                        },
                        nullptr));
    std::lock_guard<std::mutex> lock(g_io->mu);
    g_io->errTsfn = tsfn;
  }
  uv_poll_start(&w->poll, UV_READABLE, OnReadable);
  uv_unref(reinterpret_cast<uv_handle_t*>(&w->poll));
  g_watchers[fd] = w;
  return nullptr;
}

// nlRef(fd, bool): keep the event loop alive while requests are outstanding.
napi_value NlRef(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  int fd = -1;
  bool ref = false;
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_bool(env, argv[1], &ref) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "nlRef(fd, boolean)");
    return nullptr;
  }
  auto it = g_watchers.find(fd);
  if (it == g_watchers.end()) return ThrowErrno(env, EBADF, "nlRef");
  auto* h = reinterpret_cast<uv_handle_t*>(&it->second->poll);
  if (ref) uv_ref(h); else uv_unref(h);
  return nullptr;
}

// nlSend(fd, buffer, token, flags?): queue a send (flags: kSendSlow, kSendDump);
// a failure comes back through the watcher's callback with the token.
napi_value NlSend(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  int fd = -1;
  double token = 0;
  void* data = nullptr;
  size_t len = 0;
  if (argc < 3 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok || napi_get_value_double(env, argv[2], &token) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "nlSend(fd, buffer, token)");
    return nullptr;
  }
  auto it = g_watchers.find(fd);
  if (it == g_watchers.end() || it->second->closing) return ThrowErrno(env, EBADF, "nlSend");
  int32_t flags = 0;
  if (argc >= 4 && !IsNullish(env, argv[3]) && napi_get_value_int32(env, argv[3], &flags) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "nlSend(fd, buffer, token, flags?: number)");
    return nullptr;
  }
  SendJob job;
  job.slow = flags & kSendSlow;
  job.dump = flags & kSendDump;
  job.sock = it->second->sock;
  job.fd = fd;
  job.data.assign(static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + len);
  job.close = false;
  job.token = token;
  g_io->Push(std::move(job));
  return nullptr;
}

// nlClose(fd): stop watching and close the socket after its queued sends.
napi_value NlClose(napi_env env, napi_callback_info info) {
  int a[1];
  if (!GetInts(env, info, 1, a)) {
    napi_throw_type_error(env, "EINVAL", "nlClose(fd)");
    return nullptr;
  }
  auto it = g_watchers.find(a[0]);
  if (it == g_watchers.end()) return ThrowErrno(env, EBADF, "nlClose");
  Watcher* w = it->second;
  g_watchers.erase(it);
  w->closing = true;
  napi_delete_reference(env, w->callback);
  w->callback = nullptr;
  // The poll lets go of the fd (uv_close stops it and removes the fd from the
  // loop's epoll set) before the close is queued: once an I/O thread has
  // closed it, the number may be another socket's.
  uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), [](uv_handle_t* h) { delete static_cast<Watcher*>(h->data); });
  SendJob job;
  job.fd = w->fd;
  job.sock = w->sock;
  job.close = true;
  job.token = 0;
  g_io->Push(std::move(job));
  return nullptr;
}

// ---- TCP relay for the userland proxy ----
//
// relayStart(clientFd, host, port): connect to host:port and move bytes both
// ways with splice(2) through a pipe per direction, on one thread with epoll:
// no copy into user space, no JS per chunk (Go's docker-proxy gets the same
// from splice). Half-closes are passed on (FIN after the last byte); the fds
// are closed when both directions are done or on any error. The client fd is
// dup'ed: the caller closes its own.

struct Relay {
  int fd[2] = {-1, -1};      // 0: client, 1: upstream
  int pipe[2][2] = {{-1, -1}, {-1, -1}};  // pipe[d]: bytes from fd[d] to fd[1-d]
  size_t inPipe[2] = {0, 0};
  bool eof[2] = {false, false};
  bool shut[2] = {false, false};  // shut[d]: write side of fd[1-d] shut down
  bool connecting = true;
};

struct RelayLoop {
  std::mutex mu;
  int ep = -1;
  std::map<uint64_t, Relay*> relays;
  uint64_t next = 1;

  void Start() {
    ep = epoll_create1(EPOLL_CLOEXEC);
    std::thread([this]() { Run(); }).detach();
  }

  static void Close(Relay* r) {
    for (int i = 0; i < 2; i++) {
      if (r->fd[i] >= 0) close(r->fd[i]);
      for (int j = 0; j < 2; j++)
        if (r->pipe[i][j] >= 0) close(r->pipe[i][j]);
    }
    delete r;
  }

  // Moves what it can; false when the relay is finished (closed).
  static bool Pump(Relay* r) {
    if (r->connecting) {
      int err = 0;
      socklen_t len = sizeof(err);
      if (getsockopt(r->fd[1], SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) return false;
      r->connecting = false;
    }
    const size_t cap = 1 << 20;
    for (bool progress = true; progress;) {
      progress = false;
      for (int d = 0; d < 2; d++) {
        int src = r->fd[d], dst = r->fd[1 - d];
        if (!r->eof[d] && r->inPipe[d] < cap) {
          ssize_t n = splice(src, nullptr, r->pipe[d][1], nullptr, cap - r->inPipe[d], SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
          if (n > 0) {
            r->inPipe[d] += static_cast<size_t>(n);
            progress = true;
          } else if (n == 0) {
            r->eof[d] = true;
            progress = true;
          } else if (errno != EAGAIN && errno != EINTR) {
            return false;
          }
        }
        if (r->inPipe[d] > 0) {
          ssize_t n = splice(r->pipe[d][0], nullptr, dst, nullptr, r->inPipe[d], SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
          if (n > 0) {
            r->inPipe[d] -= static_cast<size_t>(n);
            progress = true;
          } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            return false;
          }
        }
        if (r->eof[d] && r->inPipe[d] == 0 && !r->shut[d]) {
          shutdown(dst, SHUT_WR);
          r->shut[d] = true;
        }
      }
    }
    return !(r->shut[0] && r->shut[1]);
  }

  void Run() {
    epoll_event evs[64];
    for (;;) {
      int n = epoll_wait(ep, evs, 64, -1);
      if (n < 0) continue;
      std::lock_guard<std::mutex> lock(mu);
      for (int i = 0; i < n; i++) {
        uint64_t id = evs[i].data.u64;
        auto it = relays.find(id);
        if (it == relays.end()) continue;
        if (!Pump(it->second)) {
          Close(it->second);  // closing the fds removes them from the epoll set
          relays.erase(it);
        }
      }
    }
  }
};

RelayLoop* g_relay = nullptr;

napi_value RelayStart(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  int clientFd = -1, port = 0;
  std::string host;
  if (argc < 3 || napi_get_value_int32(env, argv[0], &clientFd) != napi_ok || !GetString(env, argv[1], &host) ||
      napi_get_value_int32(env, argv[2], &port) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "relayStart(clientFd, host, port)");
    return nullptr;
  }
  sockaddr_storage ss;
  socklen_t slen;
  int family;
  if (!ParseSockaddr(host, port, &ss, &slen, &family)) return ThrowErrno(env, EINVAL, "relayStart: not an IP address", host);
  auto* r = new Relay();
  r->fd[0] = fcntl(clientFd, F_DUPFD_CLOEXEC, 0);
  if (r->fd[0] < 0) {
    int err = errno;
    delete r;
    return ThrowErrno(env, err, "dup");
  }
  fcntl(r->fd[0], F_SETFL, fcntl(r->fd[0], F_GETFL) | O_NONBLOCK);
  r->fd[1] = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (r->fd[1] < 0 || pipe2(r->pipe[0], O_NONBLOCK | O_CLOEXEC) != 0 || pipe2(r->pipe[1], O_NONBLOCK | O_CLOEXEC) != 0) {
    int err = errno;
    RelayLoop::Close(r);
    return ThrowErrno(env, err, "relayStart socket/pipe");
  }
  for (int d = 0; d < 2; d++) fcntl(r->pipe[d][1], F_SETPIPE_SZ, 1 << 20);
  if (connect(r->fd[1], reinterpret_cast<sockaddr*>(&ss), slen) != 0 && errno != EINPROGRESS) {
    int err = errno;
    RelayLoop::Close(r);
    return ThrowErrno(env, err, "connect", host);
  }
  if (!g_relay) {
    g_relay = new RelayLoop();
    g_relay->Start();
  }
  {
    std::lock_guard<std::mutex> lock(g_relay->mu);
    uint64_t id = g_relay->next++;
    g_relay->relays[id] = r;
    for (int i = 0; i < 2; i++) {
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
      ev.data.u64 = id;
      epoll_ctl(g_relay->ep, EPOLL_CTL_ADD, r->fd[i], &ev);
    }
  }
  return nullptr;
}

// spawnPiped(file, argv) -> Promise<[pid, stdinFd, stdoutFd, stderrFd]>: starts a
// program (PATH searched) with its stdio on three new pipes, on the thread pool.
// glibc's posix_spawn is clone(CLONE_VM|CLONE_VFORK): no copy of the daemon's
// page tables, and only the pool thread waits for the exec, where node's spawn()
// forks the whole process and holds the event loop until the child has exec'ed.
// The child starts with default signal dispositions and an empty mask (node
// ignores SIGPIPE). Pool threads never change netns: the child runs in the daemon's.
struct SpawnWork : PromiseWork {
  std::string file;
  std::vector<std::string> argv;
  pid_t pid = -1;
  int fds[3] = {-1, -1, -1};
  void Execute() override;
  napi_value Result(napi_env env) override {
    napi_value arr, v;
    napi_create_array_with_length(env, 4, &arr);
    napi_create_int32(env, pid, &v);
    napi_set_element(env, arr, 0, v);
    for (int i = 0; i < 3; i++) {
      napi_create_int32(env, fds[i], &v);
      napi_set_element(env, arr, i + 1, v);
    }
    return arr;
  }
};

void SpawnWork::Execute() {
  op = "spawn";
  object = file;
  int p[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}};
  auto closeAll = [&]() {
    for (auto& q : p)
      for (int fd : q)
        if (fd >= 0) close(fd);
  };
  for (auto& q : p) {
    if (pipe2(q, O_CLOEXEC) != 0) {
      err = errno;
      closeAll();
      return;
    }
  }
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&at);
  // dup2 clears FD_CLOEXEC on the copies; the originals close at exec.
  posix_spawn_file_actions_adddup2(&fa, p[0][0], 0);
  posix_spawn_file_actions_adddup2(&fa, p[1][1], 1);
  posix_spawn_file_actions_adddup2(&fa, p[2][1], 2);
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&at, &all);
  posix_spawnattr_setsigmask(&at, &none);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  int rc = posix_spawnp(&pid, file.c_str(), &fa, &at, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  if (rc != 0) {
    err = rc;
    closeAll();
    return;
  }
  close(p[0][0]);
  close(p[1][1]);
  close(p[2][1]);
  fds[0] = p[0][1];
  fds[1] = p[1][0];
  fds[2] = p[2][0];
}

napi_value SpawnPiped(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  auto* w = new SpawnWork();
  bool ok = argc >= 2 && GetString(env, argv[0], &w->file) && EachElement(env, argv[1], [&](napi_value e) {
    std::string a;
    if (!GetString(env, e, &a)) return false;
    w->argv.push_back(a);
    return true;
  });
  if (!ok || w->argv.empty()) {
    delete w;
    napi_throw_type_error(env, "EINVAL", "spawnPiped(file, argv: string[] with argv[0])");
    return nullptr;
  }
  return QueuePromiseWork(env, "cnmd.spawnPiped", w);
}

// waitPid(pid) -> Promise<[exitCode | -1, signal | 0]>: reaps a child of
// spawnPiped on the thread pool. Call it once the child's pipes have closed:
// it blocks a pool thread until the child exits. (libuv reaps only the pids
// it spawned, so it never takes these.)
struct WaitWork : PromiseWork {
  pid_t pid = -1;
  int status = 0;
  void Execute() override {
    pid_t r;
    do r = waitpid(pid, &status, 0);
    while (r < 0 && errno == EINTR);
    if (r < 0) err = errno;
  }
  napi_value Result(napi_env env) override {
    napi_value arr, code, sig;
    napi_create_array_with_length(env, 2, &arr);
    napi_create_int32(env, WIFEXITED(status) ? WEXITSTATUS(status) : -1, &code);
    napi_create_int32(env, WIFSIGNALED(status) ? WTERMSIG(status) : 0, &sig);
    napi_set_element(env, arr, 0, code);
    napi_set_element(env, arr, 1, sig);
    return arr;
  }
};

napi_value WaitPid(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  int32_t pid = 0;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &pid) != napi_ok || pid <= 0) {
    napi_throw_type_error(env, "EINVAL", "waitPid(pid)");
    return nullptr;
  }
  auto* w = new WaitWork();
  w->pid = pid;
  w->op = "waitpid";
  w->object = std::to_string(pid);
  return QueuePromiseWork(env, "cnmd.waitPid", w);
}

napi_value Init(napi_env env, napi_value exports) {
  struct {
    const char* name;
    napi_callback fn;
  } fns[] = {
      {"socketsAt", SocketsAt},   {"netnsCreate", NetnsCreate}, {"netnsDelete", NetnsDelete}, {"netnsRemove", NetnsRemove},
      {"isNetns", IsNetns},       {"netnsBind", NetnsBind},       {"openPath", OpenPath},       {"lockFile", LockFile},       {"close", CloseFd},
      {"setsockoptInt", SetsockoptInt}, {"bindNetlink", BindNetlink}, {"bindInet", BindInet}, {"listenFd", ListenFd},
      {"nlWatch", NlWatch},       {"nlRef", NlRef},             {"nlSend", NlSend},
      {"nlClose", NlClose},       {"originalDst", OriginalDst},  {"socketNetns", SocketNetns}, {"relayStart", RelayStart}, {"udpSend", UdpSend},
      {"spawnPiped", SpawnPiped}, {"waitPid", WaitPid},
  };
  for (const auto& f : fns) {
    napi_value v;
    napi_create_function(env, f.name, NAPI_AUTO_LENGTH, f.fn, nullptr, &v);
    napi_set_named_property(env, exports, f.name, v);
  }
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
