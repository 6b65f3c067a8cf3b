// Network namespaces: sockets opened inside one, create, remove, bind, probe.
#include "util.h"

namespace cnmd {

// socketsAt(nsPath | null, [[domain, type, protocol], ...]) -> fd[]
napi_value SocketsAt(napi_env env, napi_callback_info info) {
  Args a(env, info, "socketsAt(nsPath: string | null, [[domain, type, protocol], ...])");
  std::vector<SocketSpec> specs;
  if (!ParseSocketSpecs(env, a.Value(1), &specs)) a.Invalid();
  bool own = !a.Has(0);  // null: the caller's own netns
  std::string path = own ? "" : a.String(0);
  if (!a.Ok()) return nullptr;
  std::vector<int> fds;
  if (own) {
    int err = OpenSockets(specs, &fds);
    if (err) return ThrowErrno(env, err, "socket");
    return FdArray(env, fds);
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
  Args a(env, info, "netnsCreate(path, [[domain, type, protocol], ...], [[\"net/...\", value], ...])");
  auto* w = new NetnsCreateWork();
  w->path = a.String(0);
  if (a.Has(1) && !ParseSocketSpecs(env, a.Value(1), &w->specs)) a.Invalid();
  if (a.Has(2) && !ParseSysctls(env, a.Value(2), &w->sysctls)) a.Invalid();
  if (!a.Ok()) {
    delete w;
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
  Args a(env, info, "netnsDelete(path)");
  std::string path = a.String(0);
  if (!a.Ok()) return nullptr;
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
  Args a(env, info, "netnsRemove(path)");
  std::string path = a.String(0);
  if (!a.Ok()) return nullptr;
  auto* w = new NetnsRemoveWork();
  w->op = "unlink netns";
  w->object = path;
  return QueuePromiseWork(env, "cnmd.netnsRemove", w);
}

// netnsBind(src, dst): bind-mount the netns file src (or /proc/self/ns/net,
// the daemon's own netns) at dst, a new file. Gives a namespace a second path.
napi_value NetnsBind(napi_env env, napi_callback_info info) {
  Args a(env, info, "netnsBind(src, dst)");
  std::string src = a.String(0), dst = a.String(1);
  if (!a.Ok()) return nullptr;
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
  Args a(env, info, "isNetns(path)");
  std::string path = a.String(0);
  if (!a.Ok()) return nullptr;
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

}  // namespace cnmd
