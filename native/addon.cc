// Registers the addon's calls (each file of native/ holds one part; util.h says which).
#include "util.h"

namespace cnmd {
namespace {

napi_value Init(napi_env env, napi_value exports) {
  struct {
    const char* name;
    napi_callback fn;
  } fns[] = {
      // netns.cc
      {"socketsAt", SocketsAt},
      {"netnsCreate", NetnsCreate},
      {"netnsDelete", NetnsDelete},
      {"netnsRemove", NetnsRemove},
      {"isNetns", IsNetns},
      {"netnsBind", NetnsBind},
      // sockets.cc
      {"openPath", OpenPath},
      {"lockFile", LockFile},
      {"close", CloseFd},
      {"setsockoptInt", SetsockoptInt},
      {"bindNetlink", BindNetlink},
      {"bindInet", BindInet},
      {"listenFd", ListenFd},
      {"originalDst", OriginalDst},
      {"socketNetns", SocketNetns},
      {"udpSend", UdpSend},
      // netlink_io.cc
      {"nlWatch", NlWatch},
      {"nlRef", NlRef},
      {"nlSend", NlSend},
      {"nlClose", NlClose},
      // relay.cc
      {"relayStart", RelayStart},
      // spawn.cc
      {"spawnPiped", SpawnPiped},
      {"waitPid", WaitPid},
  };
  for (const auto& f : fns) {
    napi_value v;
    napi_create_function(env, f.name, NAPI_AUTO_LENGTH, f.fn, nullptr, &v);
    napi_set_named_property(env, exports, f.name, v);
  }
  return exports;
}

}  // namespace
}  // namespace cnmd

NAPI_MODULE(NODE_GYP_MODULE_NAME, cnmd::Init)
