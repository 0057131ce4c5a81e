// Output spools: the helper creates one memfd per output stream of a process (memfdCreate) and
// keeps a reference; control moves the pipe's bytes into it with splice(2) so that every byte is
// at every instant either still in the pipe or in the memfd (never only in control's memory),
// and releases delivered ranges with fallocate(PUNCH_HOLE). See control/sandbox/spool.ts.
#include "spool.h"
#include "errno-error.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

namespace kata_spool {
namespace {

[[noreturn]] void Throw(Napi::Env env, int err, const char* syscall) { kata_native::ThrowErrno(env, err, syscall); }

[[noreturn]] void ThrowType(Napi::Env env, const std::string& message) {
  throw Napi::TypeError::New(env, message);
}

// A non-negative integer argument below 2^53 (byte offsets and lengths).
int64_t IntArg(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, int64_t max) {
  if (info.Length() <= i || !info[i].IsNumber()) ThrowType(info.Env(), std::string(fn) + ": " + name + " must be a number");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(v) || v < 0 || v != std::floor(v) || v > static_cast<double>(max)) {
    ThrowType(info.Env(), std::string(fn) + ": " + name + " must be an integer in [0, " + std::to_string(max) + "]");
  }
  return static_cast<int64_t>(v);
}

constexpr int64_t kMaxSafe = (int64_t{1} << 53) - 1;

// memfdCreate(name): a new memfd (MFD_CLOEXEC), as an fd number. Throws the errno error.
Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) ThrowType(info.Env(), "memfdCreate: name must be a string");
  std::string name = info[0].As<Napi::String>().Utf8Value();
  if (name.size() > 200) ThrowType(info.Env(), "memfdCreate: name longer than 200 bytes");
  int fd = memfd_create(name.c_str(), MFD_CLOEXEC);
  if (fd < 0) Throw(info.Env(), errno, "memfd_create");
  return Napi::Number::New(info.Env(), fd);
}

// splice(fdIn, fdOut, offOut, len): moves up to len bytes from the pipe fdIn to fdOut at offset
// offOut (SPLICE_F_NONBLOCK | SPLICE_F_MOVE). Returns the bytes moved, 0 at end of file, -1 when
// the pipe is empty (EAGAIN). Throws the errno error otherwise.
Napi::Value Splice(const Napi::CallbackInfo& info) {
  int64_t in = IntArg(info, 0, "splice", "fdIn", INT32_MAX);
  int64_t out = IntArg(info, 1, "splice", "fdOut", INT32_MAX);
  loff_t off = IntArg(info, 2, "splice", "offOut", kMaxSafe);
  int64_t len = IntArg(info, 3, "splice", "len", 1 << 30);
  ssize_t n;
  do {
    n = splice(static_cast<int>(in), nullptr, static_cast<int>(out), &off, static_cast<size_t>(len),
               SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(info.Env(), -1);
    Throw(info.Env(), errno, "splice");
  }
  return Napi::Number::New(info.Env(), static_cast<double>(n));
}

// punchHole(fd, offset, len): fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE): the range
// reads as zeros and its memory is freed; the file size is kept. Throws the errno error.
void PunchHole(const Napi::CallbackInfo& info) {
  int64_t fd = IntArg(info, 0, "punchHole", "fd", INT32_MAX);
  int64_t off = IntArg(info, 1, "punchHole", "offset", kMaxSafe);
  int64_t len = IntArg(info, 2, "punchHole", "len", kMaxSafe);
  if (len == 0) return;
  int rc;
  do {
    rc = fallocate(static_cast<int>(fd), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) Throw(info.Env(), errno, "fallocate");
}

// setPipeSize(fd, bytes): fcntl(F_SETPIPE_SZ): the pipe's capacity becomes at least `bytes`
// (the kernel rounds up to a power-of-two number of pages; EPERM above
// /proc/sys/fs/pipe-max-size for an unprivileged caller, EBUSY below what the pipe holds).
// Returns the new capacity in bytes. Throws the errno error.
Napi::Value SetPipeSize(const Napi::CallbackInfo& info) {
  int64_t fd = IntArg(info, 0, "setPipeSize", "fd", INT32_MAX);
  int64_t bytes = IntArg(info, 1, "setPipeSize", "bytes", INT32_MAX);
  int rc = fcntl(static_cast<int>(fd), F_SETPIPE_SZ, static_cast<int>(bytes));
  if (rc < 0) Throw(info.Env(), errno, "fcntl(F_SETPIPE_SZ)");
  return Napi::Number::New(info.Env(), rc);
}

// setSendBuffer(fd, bytes): setsockopt(SO_SNDBUF) on the socket fd (the kernel caps `bytes` at
// net.core.wmem_max and doubles it for its bookkeeping), so that one large ttRPC answer (a
// ReadStdout of 1 MiB) leaves in one write instead of one per ~208 KB and EPOLLOUT round.
// Returns the resulting SO_SNDBUF. Throws the errno error.
Napi::Value SetSendBuffer(const Napi::CallbackInfo& info) {
  int64_t fd = IntArg(info, 0, "setSendBuffer", "fd", INT32_MAX);
  int bytes = static_cast<int>(IntArg(info, 1, "setSendBuffer", "bytes", INT32_MAX / 2));
  if (setsockopt(static_cast<int>(fd), SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes) < 0) Throw(info.Env(), errno, "setsockopt(SO_SNDBUF)");
  int now = 0;
  socklen_t len = sizeof now;
  if (getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_SNDBUF, &now, &len) < 0) Throw(info.Env(), errno, "getsockopt(SO_SNDBUF)");
  return Napi::Number::New(info.Env(), now);
}

}  // namespace

void Register(Napi::Env env, Napi::Object exports) {
  exports.Set("memfdCreate", Napi::Function::New<MemfdCreate>(env, "memfdCreate"));
  exports.Set("splice", Napi::Function::New<Splice>(env, "splice"));
  exports.Set("punchHole", Napi::Function::New<PunchHole>(env, "punchHole"));
  exports.Set("setPipeSize", Napi::Function::New<SetPipeSize>(env, "setPipeSize"));
  exports.Set("setSendBuffer", Napi::Function::New<SetSendBuffer>(env, "setSendBuffer"));
}

}  // namespace kata_spool
