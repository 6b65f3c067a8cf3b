{
  "targets": [
    {
      "target_name": "cnmd_native",
      "sources": [
        "native/addon.cc",
        "native/netns.cc",
        "native/sockets.cc",
        "native/netlink_io.cc",
        "native/relay.cc",
        "native/spawn.cc"
      ],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-fexceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
