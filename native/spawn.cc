// Processes with piped stdio, and reaping them.
#include "util.h"

namespace cnmd {

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
  Args a(env, info, "spawnPiped(file, argv: string[] with argv[0])");
  auto* w = new SpawnWork();
  w->file = a.String(0);
  bool listed = EachElement(env, a.Value(1), [&](napi_value e) {
    std::string s;
    if (!GetString(env, e, &s)) return false;
    w->argv.push_back(s);
    return true;
  });
  if (!listed || w->argv.empty()) a.Invalid();
  if (!a.Ok()) {
    delete w;
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
  Args a(env, info, "waitPid(pid)");
  int32_t pid = a.Int(0);
  if (pid <= 0) a.Invalid();
  if (!a.Ok()) return nullptr;
  auto* w = new WaitWork();
  w->pid = pid;
  w->op = "waitpid";
  w->object = std::to_string(pid);
  return QueuePromiseWork(env, "cnmd.waitPid", w);
}

}  // namespace cnmd
