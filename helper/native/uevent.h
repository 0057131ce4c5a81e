// Kernel uevents (NETLINK_KOBJECT_UEVENT) for the helper's device waits (Kata agent uevent.rs).
#pragma once
#include <napi.h>

namespace kata_uevent {
// Adds ueventOpen() and ueventRecv(fd) to the addon's exports.
void Register(Napi::Env env, Napi::Object exports);
}  // namespace kata_uevent
