// Output spools (memfd + splice + hole punching) for crash-safe stdio buffering in control.
#pragma once
#include <napi.h>

namespace kata_spool {
// Adds memfdCreate(name), splice(fdIn, fdOut, offOut, len), punchHole(fd, offset, len),
// setPipeSize(fd, bytes) and setSendBuffer(fd, bytes).
void Register(Napi::Env env, Napi::Object exports);
}  // namespace kata_spool
