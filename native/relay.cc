// The userland proxy's TCP relay.
#include "util.h"

namespace cnmd {

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
          ssize_t n =
              splice(src, nullptr, r->pipe[d][1], nullptr, cap - r->inPipe[d], SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
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
  Args a(env, info, "relayStart(clientFd, host, port)");
  int clientFd = a.Int(0);
  std::string host = a.String(1);
  int port = a.Int(2);
  if (!a.Ok()) return nullptr;
  sockaddr_storage ss;
  socklen_t slen;
  int family;
  if (!ParseSockaddr(host, port, &ss, &slen, &family))
    return ThrowErrno(env, EINVAL, "relayStart: not an IP address", host);
  auto* r = new Relay();
  r->fd[0] = fcntl(clientFd, F_DUPFD_CLOEXEC, 0);
  if (r->fd[0] < 0) {
    int err = errno;
    delete r;
    return ThrowErrno(env, err, "dup");
  }
  fcntl(r->fd[0], F_SETFL, fcntl(r->fd[0], F_GETFL) | O_NONBLOCK);
  r->fd[1] = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (r->fd[1] < 0 || pipe2(r->pipe[0], O_NONBLOCK | O_CLOEXEC) != 0 ||
      pipe2(r->pipe[1], O_NONBLOCK | O_CLOEXEC) != 0) {
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

}  // namespace cnmd
