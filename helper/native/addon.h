// Shared by the addon's sources (addon.cc registers them): ThrowErrno (errno-error.h), UniqueFd,
// argument validation and unix socket addresses, plus each source's Register function.
// Rules every source keeps are in addon.cc's header comment.
#pragma once

#include <napi.h>

#include <uv.h>

#include "errno-error.h"

#include <cerrno>
#include <climits>
#include <cmath>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <pthread.h>
#include <seccomp.h>
#include <stdlib.h>
#include <linux/random.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/sendfile.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sched.h>
#include <linux/sched.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif

namespace kata_addon {

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

using kata_native::ErrnoError;
using kata_native::ThrowErrno;

// The same for a libuv status (on Unix a libuv error is the negated errno).
[[noreturn]] inline void ThrowUv(Napi::Env env, int status, const std::string& call,
                                 const std::string& detail = std::string()) {
  std::string message = call + ": " + uv_strerror(status);
  if (!detail.empty()) message += " (" + detail + ")";
  Napi::Error error = Napi::Error::New(env, message);
  Napi::Object obj = error.Value();
  obj.Set("code", Napi::String::New(env, uv_err_name(status)));
  obj.Set("errno", Napi::Number::New(env, -status));
  obj.Set("syscall", Napi::String::New(env, call));
  throw error;
}

[[noreturn]] inline void ThrowType(Napi::Env env, const std::string& message) {
  throw Napi::TypeError::New(env, message);
}

// Owns one fd until release(); closes it (keeping errno) otherwise.
class UniqueFd {
 public:
  explicit UniqueFd(int fd = -1) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1) {
    if (fd_ >= 0) {
      int saved = errno;
      ::close(fd_);
      errno = saved;
    }
    fd_ = fd;
  }

 private:
  int fd_;
};

// ---------------------------------------------------------------------------------------------
// Argument validation
// ---------------------------------------------------------------------------------------------

inline std::string Describe(const Napi::Value& v) {
  switch (v.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return v.As<Napi::Boolean>().Value() ? "true" : "false";
    case napi_number: return v.ToString().Utf8Value();
    case napi_string: return "a string";
    case napi_symbol: return "a symbol";
    case napi_function: return "a function";
    case napi_bigint: return "a bigint";
    case napi_object: return v.IsArray() ? "an array" : "an object";
    default: return "an unsupported value";
  }
}

// options[name]: false when undefined, else it must be a boolean (TypeError naming `what`).
inline bool OptionalBool(Napi::Env env, const Napi::Object& options, const char* name, const std::string& what) {
  Napi::Value value = options.Get(name);
  if (value.IsUndefined()) return false;
  if (!value.IsBoolean()) ThrowType(env, what + " must be a boolean, got " + Describe(value));
  return value.As<Napi::Boolean>().Value();
}

inline int64_t ToInteger(Napi::Env env, const Napi::Value& v, const std::string& what, int64_t lo,
                         int64_t hi) {
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (std::isfinite(d) && std::floor(d) == d && d >= static_cast<double>(lo) &&
        d <= static_cast<double>(hi)) {
      return static_cast<int64_t>(d);
    }
  }
  ThrowType(env, what + " must be an integer in [" + std::to_string(lo) + ", " +
                     std::to_string(hi) + "], got " + Describe(v));
}

inline int64_t IntArg(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name,
                      int64_t lo, int64_t hi) {
  return ToInteger(info.Env(), info[i], std::string(fn) + ": " + name, lo, hi);
}

inline int FdArg(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name = "fd") {
  return static_cast<int>(IntArg(info, i, fn, name, 0, INT_MAX));
}

inline bool BoolArg(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name) {
  if (!info[i].IsBoolean()) {
    ThrowType(info.Env(), std::string(fn) + ": " + name + " must be a boolean, got " +
                              Describe(info[i]));
  }
  return info[i].As<Napi::Boolean>().Value();
}

inline std::string ToStringNoNul(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsString()) ThrowType(env, what + " must be a string, got " + Describe(v));
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos) ThrowType(env, what + " must not contain NUL bytes");
  return s;
}

struct Bytes {
  uint8_t* data;
  size_t length;
};

// A Buffer / TypedArray / DataView argument.
inline Bytes BufferArg(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name) {
  Napi::Env env = info.Env();
  if (!info[i].IsBuffer() && !info[i].IsTypedArray() && !info[i].IsDataView()) {
    ThrowType(env, std::string(fn) + ": " + name + " must be a Buffer, got " + Describe(info[i]));
  }
  void* data = nullptr;
  size_t length = 0;
  if (napi_get_buffer_info(env, info[i], &data, &length) != napi_ok) {
    ThrowType(env, std::string(fn) + ": " + name + " must be a Buffer");
  }
  return Bytes{static_cast<uint8_t*>(data), length};
}

// buf, offset, length at info[i..i+2]; checks offset + length <= buf.length.
inline Bytes BufferRangeArgs(const Napi::CallbackInfo& info, size_t i, const char* fn) {
  Bytes buf = BufferArg(info, i, fn, "buf");
  int64_t offset = IntArg(info, i + 1, fn, "offset", 0, INT64_C(1) << 53);
  int64_t length = IntArg(info, i + 2, fn, "length", 0, INT64_C(1) << 53);
  if (static_cast<uint64_t>(offset) + static_cast<uint64_t>(length) > buf.length) {
    ThrowType(info.Env(), std::string(fn) + ": offset " + std::to_string(offset) + " + length " +
                              std::to_string(length) + " exceeds the buffer's " +
                              std::to_string(buf.length) + " bytes");
  }
  return Bytes{buf.data + offset, static_cast<size_t>(length)};
}

inline std::vector<int> FdArrayArg(Napi::Env env, const Napi::Value& v, const std::string& what,
                                   int64_t lo, size_t maxCount) {
  if (!v.IsArray()) ThrowType(env, what + " must be an array of fds, got " + Describe(v));
  Napi::Array arr = v.As<Napi::Array>();
  uint32_t n = arr.Length();
  if (n > maxCount) {
    ThrowType(env, what + " has " + std::to_string(n) + " entries, at most " +
                       std::to_string(maxCount) + " are allowed");
  }
  std::vector<int> out;
  out.reserve(n);
  for (uint32_t i = 0; i < n; i++) {
    out.push_back(static_cast<int>(
        ToInteger(env, arr.Get(i), what + "[" + std::to_string(i) + "]", lo, INT_MAX)));
  }
  return out;
}

inline std::vector<std::string> StringArrayArg(Napi::Env env, const Napi::Value& v,
                                               const std::string& what) {
  if (!v.IsArray()) ThrowType(env, what + " must be an array of strings, got " + Describe(v));
  Napi::Array arr = v.As<Napi::Array>();
  uint32_t n = arr.Length();
  std::vector<std::string> out;
  out.reserve(n);
  for (uint32_t i = 0; i < n; i++) {
    out.push_back(ToStringNoNul(env, arr.Get(i), what + "[" + std::to_string(i) + "]"));
  }
  return out;
}

inline Napi::Array FdPair(Napi::Env env, int a, int b) {
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, Napi::Number::New(env, a));
  out.Set(1u, Napi::Number::New(env, b));
  return out;
}

// Fills `addr` from a path ("@name" = abstract); returns the exact address length.
inline socklen_t UnixAddress(Napi::Env env, const Napi::Value& v, const char* fn, const char* syscall,
                             struct sockaddr_un* addr) {
  if (!v.IsString()) {
    ThrowType(env, std::string(fn) + ": path must be a string, got " + Describe(v));
  }
  std::string path = v.As<Napi::String>().Utf8Value();
  if (path.empty()) ThrowType(env, std::string(fn) + ": path must not be empty");
  std::memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  const size_t capacity = sizeof(addr->sun_path);  // 108 on Linux
  if (path[0] == '@') {
    // Abstract name: sun_path[0] = 0, then the name's bytes; no terminator is counted.
    size_t nameLength = path.size() - 1;
    if (nameLength > capacity - 1) {
      throw ErrnoError(env, ENAMETOOLONG, syscall,
                       "abstract socket name of " + std::to_string(nameLength) +
                           " bytes, at most " + std::to_string(capacity - 1) + ": " + path);
    }
    std::memcpy(addr->sun_path + 1, path.data() + 1, nameLength);
    return static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + 1 + nameLength);
  }
  if (path.find('\0') != std::string::npos) {
    ThrowType(env, std::string(fn) + ": a filesystem socket path must not contain NUL bytes");
  }
  if (path.size() > capacity - 1) {
    throw ErrnoError(env, ENAMETOOLONG, syscall,
                     "unix socket path of " + std::to_string(path.size()) + " bytes, at most " +
                         std::to_string(capacity - 1) + ": " + path);
  }
  std::memcpy(addr->sun_path, path.data(), path.size());
  return static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + path.size() + 1);
}

inline std::string PathOf(const struct sockaddr_un& addr, socklen_t len) {
  size_t n = len - offsetof(struct sockaddr_un, sun_path);
  if (n > 0 && addr.sun_path[0] == '\0') return "@" + std::string(addr.sun_path + 1, n - 1);
  return std::string(addr.sun_path, n > 0 ? n - 1 : 0);
}

// Each adds its functions to `exports` (the contract is NativeAddon in shared/native.ts).
void RegisterFds(Napi::Env env, Napi::Object exports);      // fds.cc
void RegisterPty(Napi::Env env, Napi::Object exports);      // pty.cc
void RegisterFdpass(Napi::Env env, Napi::Object exports);   // fdpass.cc
void RegisterVsock(Napi::Env env, Napi::Object exports);    // vsock.cc
void RegisterSpawn(Napi::Env env, Napi::Object exports);    // spawn.cc
void RegisterSystem(Napi::Env env, Napi::Object exports);   // system.cc
void RegisterSeccomp(Napi::Env env, Napi::Object exports);  // seccomp.cc
void RegisterPoller(Napi::Env env, Napi::Object exports);   // poller.cc

}  // namespace kata_addon
