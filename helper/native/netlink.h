// rtnetlink for the helper's network ops (links, addresses, routes, neighbours) through
// libnl-route-3, and entering a network namespace around a spawn. Contract: the `net*`
// functions of `NativeAddon` in shared/native.ts.
#pragma once

#include <napi.h>

namespace kata {

// Add the net* functions to the addon's exports.
void RegisterNetlink(Napi::Env env, Napi::Object exports);

}  // namespace kata
