// Netlink I/O: sends on native threads, replies read on the event loop.
#include "util.h"

namespace cnmd {

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
    if (napiGone || errTsfn == nullptr ||
        napi_call_threadsafe_function(errTsfn, e, napi_tsfn_nonblocking) != napi_ok)
      delete e;
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

// The watcher of fd, or nullptr (nlClose takes a closed socket's out of the map).
Watcher* WatcherOf(int fd) {
  auto it = g_watchers.find(fd);
  return it == g_watchers.end() ? nullptr : it->second;
}

bool NlWatched(int fd) { return WatcherOf(fd) != nullptr; }

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
    Watcher* w = WatcherOf(e->sock->fd);
    if (w != nullptr && w->sock == e->sock && !w->closing) {
      napi_value err, token;
      err = MakeError(env, e->err, "sendto", "");
      napi_create_double(env, e->token, &token);
      CallCallback(w, err, nullptr, token);
    }
  }
  delete e;
}

// nlWatch(fd, callback(err, buffers, token)): read replies on the event loop.
napi_value NlWatch(napi_env env, napi_callback_info info) {
  Args a(env, info, "nlWatch(fd, callback)");
  int fd = a.Int(0);
  napi_value callback = a.Value(1);
  if (!a.Ok()) return nullptr;
  if (NlWatched(fd)) return ThrowErrno(env, EEXIST, "nlWatch");
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
  napi_create_reference(env, callback, 1, &w->callback);
  bool first;
  {
    std::lock_guard<std::mutex> lock(g_io->mu);
    first = g_io->errTsfn == nullptr;
  }
  if (first) {
    napi_value name;
    napi_threadsafe_function tsfn;
    napi_create_string_utf8(env, "cnmd.netlinkSendError", NAPI_AUTO_LENGTH, &name);
    CHECK_NAPI(env, napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, nullptr, nullptr, nullptr,
                                                    CallSendError, &tsfn));
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
  Args a(env, info, "nlRef(fd, boolean)");
  int fd = a.Int(0);
  bool ref = a.Bool(1);
  if (!a.Ok()) return nullptr;
  Watcher* w = WatcherOf(fd);
  if (w == nullptr) return ThrowErrno(env, EBADF, "nlRef");
  auto* h = reinterpret_cast<uv_handle_t*>(&w->poll);
  if (ref) uv_ref(h); else uv_unref(h);
  return nullptr;
}

// nlSend(fd, buffer, token, flags?): queue a send (flags: kSendSlow, kSendDump);
// a failure comes back through the watcher's callback with the token.
napi_value NlSend(napi_env env, napi_callback_info info) {
  Args a(env, info, "nlSend(fd, buffer, token, flags?: number)");
  int fd = a.Int(0);
  auto [data, len] = a.Buffer(1);
  double token = a.Double(2);
  int32_t flags = a.Has(3) ? a.Int(3) : 0;
  if (!a.Ok()) return nullptr;
  Watcher* w = WatcherOf(fd);
  if (w == nullptr || w->closing) return ThrowErrno(env, EBADF, "nlSend");
  SendJob job;
  job.slow = flags & kSendSlow;
  job.dump = flags & kSendDump;
  job.sock = w->sock;
  job.fd = fd;
  job.data.assign(static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + len);
  job.close = false;
  job.token = token;
  g_io->Push(std::move(job));
  return nullptr;
}

// nlClose(fd): stop watching and close the socket after its queued sends.
napi_value NlClose(napi_env env, napi_callback_info info) {
  Args a(env, info, "nlClose(fd)");
  auto [fd] = a.Ints<1>();
  if (!a.Ok()) return nullptr;
  Watcher* w = WatcherOf(fd);
  if (w == nullptr) return ThrowErrno(env, EBADF, "nlClose");
  g_watchers.erase(fd);
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

}  // namespace cnmd
