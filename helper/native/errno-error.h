// The addon's errno Error for the split-out sources (uevent.cc, spool.cc, bpf-devices.cc): an
// Error with code = errno name, errno = the number, syscall, message "<syscall>: <strerror>"
// (and " (<detail>)" when a detail is given).
#pragma once
#include <napi.h>

#include <cstring>
#include <string>

namespace kata_native {
[[noreturn]] inline void ThrowErrno(Napi::Env env, int err, const std::string& syscall, const std::string& detail = "") {
  std::string message = syscall + ": " + strerror(err);
  if (!detail.empty()) message += " (" + detail + ")";
  Napi::Error error = Napi::Error::New(env, message);
  Napi::Object obj = error.Value();
  const char* name = strerrorname_np(err);
  obj.Set("code", Napi::String::New(env, name != nullptr ? name : "EUNKNOWN"));
  obj.Set("errno", Napi::Number::New(env, err));
  obj.Set("syscall", Napi::String::New(env, syscall));
  throw error;
}
}  // namespace kata_native
