// kata_native: the native addon of kata-agent-ts (node-addon-api, C++ exceptions enabled).
//
// The JavaScript-facing contract is the `NativeAddon` interface in shared/native.ts; every
// function below is documented there. In short: SOCK_SEQPACKET unix sockets with SCM_RIGHTS,
// AF_VSOCK listen/connect, raw pipes and ptys, clone(CLONE_VM|CLONE_VFORK)+execve without JavaScript in the child,
// pidfds, reaping, a libuv poll watcher (Poller) so that nothing blocks the event loop, and
// seccomp profiles compiled to BPF with libseccomp (loaded later by kata-init, never here).
//
// Rules this file keeps:
//  - every fd it creates is O_CLOEXEC from birth (SOCK_CLOEXEC, pipe2, MSG_CMSG_CLOEXEC, ...);
//  - system-call failures are thrown as Error objects carrying code (errno name), errno
//    (positive number) and syscall, with message "<syscall>: <strerror>";
//  - bad argument types or ranges are thrown as TypeError, never a crash;
//  - the spawned child runs only async-signal-safe code on memory prepared before the clone.
//
// This file only registers the module; the functions live by concern in fds.cc, pty.cc,
// fdpass.cc, vsock.cc, spawn.cc, system.cc, seccomp.cc, poller.cc (shared helpers: addon.h),
// uevent.cc, spool.cc, netlink.cc and bpf-devices.cc.

#include <napi.h>

#include "addon.h"
#include "bpf-devices.h"
#include "netlink.h"
#include "spool.h"
#include "uevent.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  kata_addon::RegisterFds(env, exports);
  kata_addon::RegisterPty(env, exports);
  kata_addon::RegisterFdpass(env, exports);
  kata_addon::RegisterVsock(env, exports);
  kata_addon::RegisterSpawn(env, exports);
  kata_addon::RegisterSystem(env, exports);
  kata_addon::RegisterSeccomp(env, exports);
  kata_addon::RegisterPoller(env, exports);
  kata_uevent::Register(env, exports);
  kata_spool::Register(env, exports);
  kata::RegisterNetlink(env, exports);
  kata::RegisterBpfDevices(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(kata_native, Init)
