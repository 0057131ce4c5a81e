// The addon's errno Error, shared by all its sources: an Error with code = errno name (ERRNO<n>
// when glibc has none), errno = the number, syscall, message "<syscall>: <strerror>" (and
// " (<detail>)" when a detail is given).
#pragma once
#include <napi.h>

#include <cstring>
#include <string>

namespace kata_native {

inline std::string ErrnoName(int err) {
  const char* name = strerrorname_np(err);
  if (name != nullptr) return name;
  return "ERRNO" + std::to_string(err);
}

inline std::string ErrnoDescription(int err) {
  // strerrordesc_np is thread-safe and not localised, unlike strerror.
  const char* desc = strerrordesc_np(err);
  if (desc != nullptr) return desc;
  return "Unknown error " + std::to_string(err);
}

// An Error with code/errno/syscall, message "<syscall>: <strerror>[ (<detail>)]".
inline Napi::Error ErrnoError(Napi::Env env, int err, const std::string& syscall,
                              const std::string& detail = std::string()) {
  std::string message = syscall + ": " + ErrnoDescription(err);
  if (!detail.empty()) message += " (" + detail + ")";
  Napi::Error error = Napi::Error::New(env, message);
  Napi::Object obj = error.Value();
  obj.Set("code", Napi::String::New(env, ErrnoName(err)));
  obj.Set("errno", Napi::Number::New(env, err));
  obj.Set("syscall", Napi::String::New(env, syscall));
  return error;
}

[[noreturn]] inline void ThrowErrno(Napi::Env env, int err, const std::string& syscall,
                                    const std::string& detail = std::string()) {
  throw ErrnoError(env, err, syscall, detail);
}

}  // namespace kata_native
