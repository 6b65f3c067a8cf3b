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
//
// This header holds what the addon's parts share: errors, reading a call's
// arguments (Args), sockets opened inside a netns, promises settled from the
// thread pool. Each part is one file: netns.cc, sockets.cc, netlink_io.cc,
// relay.cc, spawn.cc; addon.cc registers them.
#pragma once

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

#include <array>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <queue>
#include <string>
#include <thread>
#include <vector>

namespace cnmd {

#define CHECK_NAPI(env, call)                                               \
  do {                                                                      \
    if ((call) != napi_ok) {                                                \
      napi_throw_error((env), "ENAPI", "N-API call failed: " #call);        \
      return nullptr;                                                       \
    }                                                                       \
  } while (0)

inline const char* ErrnoName(int err) {
  const char* n = strerrorname_np(err);
  return n ? n : "EUNKNOWN";
}

inline napi_value MakeError(napi_env env, int err, const std::string& op, const std::string& path) {
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

inline napi_value ThrowErrno(napi_env env, int err, const std::string& op, const std::string& path = "") {
  napi_throw(env, MakeError(env, err, op, path));
  return nullptr;
}

inline bool GetString(napi_env env, napi_value v, std::string* out) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, nullptr, 0, &len) != napi_ok) return false;
  out->resize(len);
  size_t got = 0;
  if (napi_get_value_string_utf8(env, v, &(*out)[0], len + 1, &got) != napi_ok) return false;
  out->resize(got);
  return true;
}

inline bool IsNullish(napi_env env, napi_value v) {
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
inline int InNetnsThread(int nsFd, Fn fn) {
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
inline int OpenSockets(const std::vector<SocketSpec>& specs, std::vector<int>* fds) {
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
inline bool EachElement(napi_env env, napi_value arr, F fn) {
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

inline bool ElementInt(napi_env env, napi_value arr, uint32_t i, int32_t* out) {
  napi_value v;
  return napi_get_element(env, arr, i, &v) == napi_ok && napi_get_value_int32(env, v, out) == napi_ok;
}

inline bool ElementString(napi_env env, napi_value arr, uint32_t i, std::string* out) {
  napi_value v;
  return napi_get_element(env, arr, i, &v) == napi_ok && GetString(env, v, out);
}

inline bool ParseSocketSpecs(napi_env env, napi_value arr, std::vector<SocketSpec>* out) {
  return EachElement(env, arr, [&](napi_value item) {
    SocketSpec s{};
    if (!ElementInt(env, item, 0, &s.domain) || !ElementInt(env, item, 1, &s.type) ||
        !ElementInt(env, item, 2, &s.protocol))
      return false;
    out->push_back(s);
    return true;
  });
}

// A JS number from an int (an fd, a count, -errno).
inline napi_value Int32(napi_env env, int32_t n) {
  napi_value v;
  napi_create_int32(env, n, &v);
  return v;
}

inline napi_value FdArray(napi_env env, const std::vector<int>& fds) {
  napi_value arr;
  napi_create_array_with_length(env, fds.size(), &arr);
  for (size_t i = 0; i < fds.size(); i++) {
    napi_set_element(env, arr, i, Int32(env, fds[i]));
  }
  return arr;
}


// Reads a call's arguments. Each getter returns a zero value once an argument
// is missing or of the wrong type; Ok() then throws one TypeError naming the
// call's usage (EINVAL) and returns false:
//   Args a(env, info, "bindInet(fd, address, port)");
//   int fd = a.Int(0);
//   std::string address = a.String(1);
//   if (!a.Ok()) return nullptr;
class Args {
 public:
  Args(napi_env env, napi_callback_info info, const char* usage) : env_(env), usage_(usage) {
    if (napi_get_cb_info(env, info, &argc_, argv_, nullptr, nullptr) != napi_ok) ok_ = false;
  }
  // Present and neither null nor undefined.
  bool Has(size_t i) { return i < argc_ && !IsNullish(env_, argv_[i]); }
  napi_value Value(size_t i) { return Need(i) ? argv_[i] : nullptr; }
  int32_t Int(size_t i) {
    int32_t v = 0;
    if (Need(i) && napi_get_value_int32(env_, argv_[i], &v) != napi_ok) ok_ = false;
    return v;
  }
  // The first N arguments as ints: auto [fd, backlog] = a.Ints<2>();
  template <size_t N>
  std::array<int32_t, N> Ints() {
    std::array<int32_t, N> v{};
    for (size_t i = 0; i < N; i++) v[i] = Int(i);
    return v;
  }
  double Double(size_t i) {
    double v = 0;
    if (Need(i) && napi_get_value_double(env_, argv_[i], &v) != napi_ok) ok_ = false;
    return v;
  }
  bool Bool(size_t i) {
    bool v = false;
    if (Need(i) && napi_get_value_bool(env_, argv_[i], &v) != napi_ok) ok_ = false;
    return v;
  }
  std::string String(size_t i) {
    std::string v;
    if (Need(i) && !GetString(env_, argv_[i], &v)) ok_ = false;
    return v;
  }
  // A Buffer's bytes (still owned by the caller's Buffer).
  std::pair<void*, size_t> Buffer(size_t i) {
    void* data = nullptr;
    size_t len = 0;
    if (Need(i) && napi_get_buffer_info(env_, argv_[i], &data, &len) != napi_ok) ok_ = false;
    return {data, len};
  }
  // Marks the call invalid (a check beyond the types failed).
  void Invalid() { ok_ = false; }
  bool Ok() {
    if (!ok_) napi_throw_type_error(env_, "EINVAL", usage_);
    return ok_;
  }

 private:
  bool Need(size_t i) {
    if (ok_ && i >= argc_) ok_ = false;
    return ok_;
  }
  static constexpr size_t kMax = 8;
  napi_env env_;
  const char* usage_;
  size_t argc_ = kMax;
  napi_value argv_[kMax] = {};
  bool ok_ = true;
};

// Parses an IPv4 or IPv6 address and port into ss; false if not an address.
inline bool ParseSockaddr(const std::string& addr, int port, sockaddr_storage* ss, socklen_t* len, int* family) {
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
inline napi_value QueuePromiseWork(napi_env env, const char* name, PromiseWork* w) {
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

// A watched netlink socket's fd (netlink_io.cc): only nlClose closes it.
bool NlWatched(int fd);

// The calls addon.cc registers, by file.
napi_value SocketsAt(napi_env env, napi_callback_info info);
napi_value NetnsCreate(napi_env env, napi_callback_info info);
napi_value NetnsDelete(napi_env env, napi_callback_info info);
napi_value NetnsRemove(napi_env env, napi_callback_info info);
napi_value NetnsBind(napi_env env, napi_callback_info info);
napi_value IsNetns(napi_env env, napi_callback_info info);

napi_value OpenPath(napi_env env, napi_callback_info info);
napi_value LockFile(napi_env env, napi_callback_info info);
napi_value CloseFd(napi_env env, napi_callback_info info);
napi_value ListenFd(napi_env env, napi_callback_info info);
napi_value SetsockoptInt(napi_env env, napi_callback_info info);
napi_value BindNetlink(napi_env env, napi_callback_info info);
napi_value BindInet(napi_env env, napi_callback_info info);
napi_value UdpSend(napi_env env, napi_callback_info info);
napi_value OriginalDst(napi_env env, napi_callback_info info);
napi_value SocketNetns(napi_env env, napi_callback_info info);

napi_value NlWatch(napi_env env, napi_callback_info info);
napi_value NlRef(napi_env env, napi_callback_info info);
napi_value NlSend(napi_env env, napi_callback_info info);
napi_value NlClose(napi_env env, napi_callback_info info);

napi_value RelayStart(napi_env env, napi_callback_info info);

napi_value SpawnPiped(napi_env env, napi_callback_info info);
napi_value WaitPid(napi_env env, napi_callback_info info);

}  // namespace cnmd
