{
  # Built by `npm install` (scripts.install = node-gyp rebuild -j max: one job per core).
  # Two small addons, one per I/O edge:
  # inside (TUN) and outside (UDP), three tiny ones for the operating system: one runs `ip` without
  # forking the agent on its event loop (shared/native/spawn.cc), one reads a unix socket peer's
  # credentials for the agent's control socket, one sends systemd its notifications (sd_notify);
  # and the data plane's AEAD (shared/crypto/native/aead.cc).
  # All use node-addon-api without C++ exceptions: errors are thrown as JS errors (carrying errno for a
  # failed system call), and the TypeScript wrappers turn them into typed errors.
  "target_defaults": {
    # "." (the repo root): both addons include shared/native/reader.h, their common reader thread.
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "."],
    "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
    "cflags!": ["-O3"],
    "cflags_cc!": ["-O3", "-std=gnu++17"],
    "cflags": ["-O2", "-Wall", "-Wextra"],
    "cflags_cc": ["-O2", "-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter"]
  },
  "targets": [
    {
      "target_name": "realmnet_tun",
      "sources": ["agent/tun/native/tun.cc"]
    },
    {
      "target_name": "realmnet_udp",
      "sources": ["shared/udp/native/udp.cc"]
    },
    {
      "target_name": "realmnet_spawn",
      "sources": ["shared/native/spawn.cc"]
    },
    {
      "target_name": "realmnet_peercred",
      "sources": ["shared/native/peercred.cc"]
    },
    {
      # systemd's notification protocol (shared/service.ts): Node has no unix datagram socket.
      "target_name": "realmnet_notify",
      "sources": ["shared/native/notify.cc"]
    },
    {
      # The data plane's AEAD (shared/crypto/aead.ts). OpenSSL is Node's own: its headers come first on
      # the include path (a system libssl-dev, if any, is never used) and nothing links libcrypto: the
      # EVP symbols resolve from the node binary when the addon is loaded.
      "target_name": "realmnet_aead",
      "sources": ["shared/crypto/native/aead.cc"],
      "include_dirs": ["<(node_root_dir)/include/node"]
    },
    {
      # Not an addon: a test tool (scripts/tools/native/spoof.c) that sends UDP with forged source
      # addresses from the testbed's attacker namespace (scripts/bench/abuse.ts, test/e2e/abuse.test.ts).
      # Node cannot forge a source address; built here so that `npm install` provides it.
      "target_name": "realmnet_spoof",
      "type": "executable",
      "sources": ["scripts/tools/native/spoof.c"]
    }
  ]
}
