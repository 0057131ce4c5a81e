{
  "targets": [
    {
      "target_name": "kata_native",
      "sources": ["helper/native/addon.cc", "helper/native/fds.cc", "helper/native/pty.cc", "helper/native/fdpass.cc", "helper/native/vsock.cc", "helper/native/spawn.cc", "helper/native/system.cc", "helper/native/seccomp.cc", "helper/native/poller.cc", "helper/native/uevent.cc", "helper/native/netlink.cc", "helper/native/spool.cc", "helper/native/bpf-devices.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "/usr/include/libnl3"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-O2"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "libraries": ["-lseccomp", "-lnl-route-3", "-lnl-3"]
    },
    {
      "target_name": "kata-init",
      "type": "executable",
      "sources": [
        "helper/native/kata-init/self.c",
        "helper/native/kata-init/report.c",
        "helper/native/kata-init/plan.c",
        "helper/native/kata-init/ns.c",
        "helper/native/kata-init/rootfs-path.c",
        "helper/native/kata-init/mounts.c",
        "helper/native/kata-init/userns-mounts.c",
        "helper/native/kata-init/dev.c",
        "helper/native/kata-init/masks.c",
        "helper/native/kata-init/rootfs.c",
        "helper/native/kata-init/ids.c",
        "helper/native/kata-init/tty.c",
        "helper/native/kata-init/hooks.c",
        "helper/native/kata-init/exec.c"
      ],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-O2"],
      "cflags_c": ["-std=gnu11"],
      "ldflags": ["-static"]
    }
  ]
}
