// Plain fds for the addon: close, pipe, O_NONBLOCK / FD_CLOEXEC flags, read, write.
#include "addon.h"

namespace kata_addon {
namespace {

// ---------------------------------------------------------------------------------------------
// Plain fds: close, pipe, flags, read, write, pty
// ---------------------------------------------------------------------------------------------

void Close(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0, "close");
  // On Linux the fd is released even when close() reports EINTR: not an error for us.
  if (::close(fd) < 0 && errno != EINTR) ThrowErrno(info.Env(), errno, "close");
}

Napi::Value Pipe(const Napi::CallbackInfo& info) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0) ThrowErrno(info.Env(), errno, "pipe2");
  return FdPair(info.Env(), fds[0], fds[1]);
}

void SetNonBlocking(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0, "setNonBlocking");
  bool on = BoolArg(info, 1, "setNonBlocking", "on");
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) ThrowErrno(info.Env(), errno, "fcntl");
  int wanted = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  if (wanted != flags && fcntl(fd, F_SETFL, wanted) < 0) ThrowErrno(info.Env(), errno, "fcntl");
}

void SetCloexec(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0, "setCloexec");
  bool on = BoolArg(info, 1, "setCloexec", "on");
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0) ThrowErrno(info.Env(), errno, "fcntl");
  int wanted = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
  if (wanted != flags && fcntl(fd, F_SETFD, wanted) < 0) ThrowErrno(info.Env(), errno, "fcntl");
}

Napi::Value Read(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0, "read");
  Bytes range = BufferRangeArgs(info, 1, "read");
  ssize_t n;
  do {
    n = ::read(fd, range.data, range.length);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(info.Env(), -1);
    ThrowErrno(info.Env(), errno, "read");
  }
  return Napi::Number::New(info.Env(), static_cast<double>(n));
}

Napi::Value Write(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0, "write");
  Bytes range = BufferRangeArgs(info, 1, "write");
  ssize_t n;
  do {
    n = ::write(fd, range.data, range.length);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(info.Env(), -1);
    ThrowErrno(info.Env(), errno, "write");
  }
  return Napi::Number::New(info.Env(), static_cast<double>(n));
}

}  // namespace

void RegisterFds(Napi::Env env, Napi::Object exports) {
  exports.Set("close", Napi::Function::New<Close>(env, "close"));
  exports.Set("pipe", Napi::Function::New<Pipe>(env, "pipe"));
  exports.Set("setNonBlocking", Napi::Function::New<SetNonBlocking>(env, "setNonBlocking"));
  exports.Set("setCloexec", Napi::Function::New<SetCloexec>(env, "setCloexec"));
  exports.Set("read", Napi::Function::New<Read>(env, "read"));
  exports.Set("write", Napi::Function::New<Write>(env, "write"));
}

}  // namespace kata_addon
