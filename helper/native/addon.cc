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

#include <napi.h>

#include "spool.h"
#include "uevent.h"
#include <uv.h>

#include "netlink.h"
#include "bpf-devices.h"

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

namespace {

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

std::string ErrnoName(int err) {
  const char* name = strerrorname_np(err);
  if (name != nullptr) return name;
  return "ERRNO" + std::to_string(err);
}

std::string ErrnoDescription(int err) {
  // strerrordesc_np is thread-safe and not localised, unlike strerror.
  const char* desc = strerrordesc_np(err);
  if (desc != nullptr) return desc;
  return "Unknown error " + std::to_string(err);
}

// An Error with code/errno/syscall, message "<syscall>: <strerror>[ (<detail>)]".
Napi::Error ErrnoError(Napi::Env env, int err, const std::string& syscall,
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

[[noreturn]] void ThrowErrno(Napi::Env env, int err, const std::string& syscall,
                             const std::string& detail = std::string()) {
  throw ErrnoError(env, err, syscall, detail);
}

// The same for a libuv status (on Unix a libuv error is the negated errno).
[[noreturn]] void ThrowUv(Napi::Env env, int status, const std::string& call,
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

[[noreturn]] void ThrowType(Napi::Env env, const std::string& message) {
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

std::string Describe(const Napi::Value& v) {
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
bool OptionalBool(Napi::Env env, const Napi::Object& options, const char* name, const std::string& what) {
  Napi::Value value = options.Get(name);
  if (value.IsUndefined()) return false;
  if (!value.IsBoolean()) ThrowType(env, what + " must be a boolean, got " + Describe(value));
  return value.As<Napi::Boolean>().Value();
}

int64_t ToInteger(Napi::Env env, const Napi::Value& v, const std::string& what, int64_t lo,
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

int64_t IntArg(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name,
               int64_t lo, int64_t hi) {
  return ToInteger(info.Env(), info[i], std::string(fn) + ": " + name, lo, hi);
}

int FdArg(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name = "fd") {
  return static_cast<int>(IntArg(info, i, fn, name, 0, INT_MAX));
}

bool BoolArg(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name) {
  if (!info[i].IsBoolean()) {
    ThrowType(info.Env(), std::string(fn) + ": " + name + " must be a boolean, got " +
                              Describe(info[i]));
  }
  return info[i].As<Napi::Boolean>().Value();
}

std::string ToStringNoNul(Napi::Env env, const Napi::Value& v, const std::string& what) {
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
Bytes BufferArg(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name) {
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
Bytes BufferRangeArgs(const Napi::CallbackInfo& info, size_t i, const char* fn) {
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

std::vector<int> FdArrayArg(Napi::Env env, const Napi::Value& v, const std::string& what,
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

std::vector<std::string> StringArrayArg(Napi::Env env, const Napi::Value& v,
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

Napi::Array FdPair(Napi::Env env, int a, int b) {
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, Napi::Number::New(env, a));
  out.Set(1u, Napi::Number::New(env, b));
  return out;
}

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

Napi::Value OpenPty(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  UniqueFd master(posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (master.get() < 0) ThrowErrno(env, errno, "posix_openpt");
  if (grantpt(master.get()) < 0) ThrowErrno(env, errno, "grantpt");
  if (unlockpt(master.get()) < 0) ThrowErrno(env, errno, "unlockpt");
  int slave = -1;
#ifdef TIOCGPTPEER
  // Opens the peer without a path lookup (immune to a different /dev/pts mount).
  slave = ioctl(master.get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (slave < 0 && errno != EINVAL && errno != ENOTTY) ThrowErrno(env, errno, "ioctl(TIOCGPTPEER)");
#endif
  if (slave < 0) {
    char name[128];
    int err = ptsname_r(master.get(), name, sizeof(name));
    if (err != 0) ThrowErrno(env, err, "ptsname_r");
    slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (slave < 0) ThrowErrno(env, errno, "open", name);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("master", Napi::Number::New(env, master.release()));
  out.Set("slave", Napi::Number::New(env, slave));
  return out;
}

void SetWinsize(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0, "setWinsize");
  struct winsize ws;
  std::memset(&ws, 0, sizeof(ws));
  ws.ws_row = static_cast<unsigned short>(IntArg(info, 1, "setWinsize", "rows", 0, 65535));
  ws.ws_col = static_cast<unsigned short>(IntArg(info, 2, "setWinsize", "columns", 0, 65535));
  if (ioctl(fd, TIOCSWINSZ, &ws) < 0) ThrowErrno(info.Env(), errno, "ioctl(TIOCSWINSZ)");
}

// ---------------------------------------------------------------------------------------------
// Unix SOCK_SEQPACKET sockets
// ---------------------------------------------------------------------------------------------

constexpr int kMaxSendFds = 253;  // SCM_MAX_FD
constexpr int kMaxRecvFds = 64;
constexpr int64_t kMaxRecvBytes = INT64_C(64) << 20;

// Fills `addr` from a path ("@name" = abstract); returns the exact address length.
socklen_t UnixAddress(Napi::Env env, const Napi::Value& v, const char* fn, const char* syscall,
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

std::string PathOf(const struct sockaddr_un& addr, socklen_t len) {
  size_t n = len - offsetof(struct sockaddr_un, sun_path);
  if (n > 0 && addr.sun_path[0] == '\0') return "@" + std::string(addr.sun_path + 1, n - 1);
  return std::string(addr.sun_path, n > 0 ? n - 1 : 0);
}

Napi::Value SeqpacketListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct sockaddr_un addr;
  socklen_t len = UnixAddress(env, info[0], "seqpacketListen", "bind", &addr);
  int backlog = static_cast<int>(IntArg(info, 1, "seqpacketListen", "backlog", 0, INT_MAX));
  UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) ThrowErrno(env, errno, "socket");
  if (bind(fd.get(), reinterpret_cast<struct sockaddr*>(&addr), len) < 0) {
    ThrowErrno(env, errno, "bind", PathOf(addr, len));
  }
  if (listen(fd.get(), backlog) < 0) ThrowErrno(env, errno, "listen");
  return Napi::Number::New(env, fd.release());
}

Napi::Value SeqpacketConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct sockaddr_un addr;
  socklen_t len = UnixAddress(env, info[0], "seqpacketConnect", "connect", &addr);
  UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) ThrowErrno(env, errno, "socket");
  int r;
  bool interrupted = false;
  for (;;) {
    r = connect(fd.get(), reinterpret_cast<struct sockaddr*>(&addr), len);
    if (r == 0 || errno != EINTR) break;
    interrupted = true;
  }
  if (r < 0 && !(interrupted && errno == EISCONN)) {
    ThrowErrno(env, errno, "connect", PathOf(addr, len));
  }
  int flags = fcntl(fd.get(), F_GETFL);
  if (flags < 0 || fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) < 0) {
    ThrowErrno(env, errno, "fcntl");
  }
  return Napi::Number::New(env, fd.release());
}

Napi::Value SeqpacketPair(const Napi::CallbackInfo& info) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds) < 0) {
    ThrowErrno(info.Env(), errno, "socketpair");
  }
  return FdPair(info.Env(), fds[0], fds[1]);
}

Napi::Value Accept(const Napi::CallbackInfo& info) {
  int fd = FdArg(info, 0, "accept");
  for (;;) {
    int conn = accept4(fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (conn >= 0) return Napi::Number::New(info.Env(), conn);
    // EINTR, and a connection that died in the queue: try the next one.
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(info.Env(), -1);
    ThrowErrno(info.Env(), errno, "accept4");
  }
}

Napi::Value PeerCred(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "peerCred");
  struct ucred cred;
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
    ThrowErrno(env, errno, "getsockopt(SO_PEERCRED)");
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("pid", Napi::Number::New(env, cred.pid));
  out.Set("uid", Napi::Number::New(env, cred.uid));
  out.Set("gid", Napi::Number::New(env, cred.gid));
  return out;
}

Napi::Value SeqpacketSend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "seqpacketSend");
  Bytes data = BufferArg(info, 1, "seqpacketSend", "data");
  std::vector<int> fds = FdArrayArg(env, info[2], "seqpacketSend: fds", 0, kMaxSendFds);
  if (data.length == 0 && fds.empty()) {
    // recvmsg() returns 0 for it, which the peer cannot tell from end-of-stream.
    ThrowType(env, "seqpacketSend: an empty packet without fds would read as EOF at the peer");
  }
  struct iovec iov;
  iov.iov_base = data.data;
  iov.iov_len = data.length;
  struct msghdr msg;
  std::memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control;
  if (!fds.empty()) {
    size_t payload = fds.size() * sizeof(int);
    control.assign(CMSG_SPACE(payload), 0);
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(payload);
    std::memcpy(CMSG_DATA(cmsg), fds.data(), payload);
  }
  ssize_t n;
  do {
    n = sendmsg(fd, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(env, -1);
    ThrowErrno(env, errno, "sendmsg");
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

Napi::Value SeqpacketRecv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "seqpacketRecv");
  size_t maxBytes = static_cast<size_t>(IntArg(info, 1, "seqpacketRecv", "maxBytes", 0, kMaxRecvBytes));
  // One scratch buffer per thread; the result is copied out at its exact size.
  static thread_local std::vector<uint8_t> scratch;
  if (scratch.size() < maxBytes) scratch.resize(maxBytes);
  union {
    char buf[CMSG_SPACE(kMaxRecvFds * sizeof(int))];
    struct cmsghdr align;
  } control;
  std::memset(&control, 0, sizeof(control));
  struct iovec iov;
  iov.iov_base = scratch.data();
  iov.iov_len = maxBytes;
  struct msghdr msg;
  std::memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof(control.buf);
  ssize_t n;
  do {
    n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Null();
    ThrowErrno(env, errno, "recvmsg");
  }
  std::vector<int> fds;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char* p = CMSG_DATA(c);
    for (size_t i = 0; i < count; i++) {
      int received;
      std::memcpy(&received, p + i * sizeof(int), sizeof(int));
      fds.push_back(received);
    }
  }
  bool truncated = (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0;
  Napi::Object out = Napi::Object::New(env);
  out.Set("data", Napi::Buffer<uint8_t>::Copy(env, scratch.data(), static_cast<size_t>(n)));
  Napi::Array fdArray = Napi::Array::New(env, fds.size());
  for (size_t i = 0; i < fds.size(); i++) {
    fdArray.Set(static_cast<uint32_t>(i), Napi::Number::New(env, fds[i]));
  }
  out.Set("fds", fdArray);
  out.Set("eof", Napi::Boolean::New(env, n == 0 && fds.empty() && !(msg.msg_flags & MSG_TRUNC)));
  out.Set("truncated", Napi::Boolean::New(env, truncated));
  return out;
}

// ---------------------------------------------------------------------------------------------
// AF_VSOCK
// ---------------------------------------------------------------------------------------------

struct sockaddr_vm VsockAddress(const Napi::CallbackInfo& info, const char* fn) {
  // -1 stands for VMADDR_CID_ANY / VMADDR_PORT_ANY (both 0xFFFFFFFF).
  int64_t cid = IntArg(info, 0, fn, "cid", -1, UINT32_MAX);
  int64_t port = IntArg(info, 1, fn, "port", -1, UINT32_MAX);
  struct sockaddr_vm addr;
  std::memset(&addr, 0, sizeof(addr));
  addr.svm_family = AF_VSOCK;
  addr.svm_cid = cid < 0 ? VMADDR_CID_ANY : static_cast<unsigned int>(cid);
  addr.svm_port = port < 0 ? VMADDR_PORT_ANY : static_cast<unsigned int>(port);
  return addr;
}

std::string VsockName(const struct sockaddr_vm& addr) {
  return "vsock cid " + std::to_string(addr.svm_cid) + " port " + std::to_string(addr.svm_port);
}

Napi::Value VsockListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct sockaddr_vm addr = VsockAddress(info, "vsockListen");
  int backlog = static_cast<int>(IntArg(info, 2, "vsockListen", "backlog", 0, INT_MAX));
  UniqueFd fd(socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) ThrowErrno(env, errno, "socket", "AF_VSOCK");
  int one = 1;
  if (setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) {
    ThrowErrno(env, errno, "setsockopt(SO_REUSEADDR)");
  }
  if (bind(fd.get(), reinterpret_cast<struct sockaddr*>(&addr), sizeof(addr)) < 0) {
    ThrowErrno(env, errno, "bind", VsockName(addr));
  }
  if (listen(fd.get(), backlog) < 0) ThrowErrno(env, errno, "listen", VsockName(addr));
  return Napi::Number::New(env, fd.release());
}

// A listening AF_UNIX SOCK_STREAM socket (passfd I/O over a unix socket, for tests where there
// is no vsock loopback); non-blocking, path mode as the umask leaves it.
Napi::Value UnixStreamListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct sockaddr_un addr;
  socklen_t len = UnixAddress(env, info[0], "unixStreamListen", "bind", &addr);
  int backlog = static_cast<int>(IntArg(info, 1, "unixStreamListen", "backlog", 0, INT_MAX));
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) ThrowErrno(env, errno, "socket");
  if (bind(fd.get(), reinterpret_cast<struct sockaddr*>(&addr), len) < 0) {
    ThrowErrno(env, errno, "bind", PathOf(addr, len));
  }
  if (listen(fd.get(), backlog) < 0) ThrowErrno(env, errno, "listen");
  return Napi::Number::New(env, fd.release());
}

// getpeername of a connected socket: {family: "vsock", cid, port} or {family: "unix", path}
// (path "" for an unbound peer, a leading "@" for an abstract name); other families throw.
Napi::Value SocketPeer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0, "socketPeer");
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  std::memset(&ss, 0, sizeof(ss));
  if (getpeername(fd, reinterpret_cast<struct sockaddr*>(&ss), &len) < 0) ThrowErrno(env, errno, "getpeername");
  Napi::Object out = Napi::Object::New(env);
  if (ss.ss_family == AF_VSOCK) {
    const auto* vm = reinterpret_cast<const struct sockaddr_vm*>(&ss);
    out.Set("family", "vsock");
    out.Set("cid", Napi::Number::New(env, vm->svm_cid));
    out.Set("port", Napi::Number::New(env, vm->svm_port));
    return out;
  }
  if (ss.ss_family == AF_UNIX) {
    const auto* un = reinterpret_cast<const struct sockaddr_un*>(&ss);
    size_t n = len > offsetof(struct sockaddr_un, sun_path) ? len - offsetof(struct sockaddr_un, sun_path) : 0;
    std::string path;
    if (n > 0 && un->sun_path[0] == '\0') {
      path = "@" + std::string(un->sun_path + 1, n - 1);
    } else {
      path = std::string(un->sun_path, strnlen(un->sun_path, n));
    }
    out.Set("family", "unix");
    out.Set("path", path);
    return out;
  }
  Napi::TypeError::New(env, "socketPeer: address family " + std::to_string(ss.ss_family) + " is not vsock or unix").ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value VsockConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct sockaddr_vm addr = VsockAddress(info, "vsockConnect");
  UniqueFd fd(socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) ThrowErrno(env, errno, "socket", "AF_VSOCK");
  int r;
  bool interrupted = false;
  for (;;) {
    r = connect(fd.get(), reinterpret_cast<struct sockaddr*>(&addr), sizeof(addr));
    if (r == 0 || errno != EINTR) break;
    interrupted = true;
  }
  if (r < 0 && !(interrupted && errno == EISCONN)) {
    ThrowErrno(env, errno, "connect", VsockName(addr));
  }
  int flags = fcntl(fd.get(), F_GETFL);
  if (flags < 0 || fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) < 0) {
    ThrowErrno(env, errno, "fcntl");
  }
  return Napi::Number::New(env, fd.release());
}

// ---------------------------------------------------------------------------------------------
// Processes: spawn, pidfd, kill, reap, subreaper
// ---------------------------------------------------------------------------------------------

// What the child reports over the exec-error pipe when a step fails.
enum ChildStep : int32_t {
  kStepDupHigh = 1,  // fcntl(F_DUPFD_CLOEXEC) moving a source fd above the table
  kStepDup2 = 2,
  kStepClose = 3,
  kStepSetsid = 4,
  kStepExecve = 5,
  kStepSetCtty = 6,
};

const char* ChildStepName(int32_t step) {
  switch (step) {
    case kStepDupHigh: return "fcntl";
    case kStepDup2: return "dup2";
    case kStepClose: return "close_range";
    case kStepSetsid: return "setsid";
    case kStepExecve: return "execve";
    case kStepSetCtty: return "ioctl(TIOCSCTTY)";
    default: return "spawn";
  }
}

struct ChildReport {
  int32_t step;
  int32_t err;
};

// Everything the child needs, prepared (allocated) before fork.
struct ChildPlan {
  const char* file;
  char* const* argv;
  char* const* envp;
  const int* sources;  // n entries, -1 = leave closed
  int* temps;          // n scratch slots
  int count;           // n
  bool setsid;
  bool controllingTty;  // after setsid: child fd 0 (a tty) becomes the controlling terminal
  int errorPipe;       // write end of the exec-error pipe (O_CLOEXEC)
  int execFd;          // >= 0: execveat(execFd, "", AT_EMPTY_PATH) instead of execve(file)
  int bruteCloseMax;   // upper bound for the close loop when close_range is missing
  const sigset_t* emptyMask;
  const struct sigaction* defaultAction;
};

// Async-signal-safe only: raw system calls on memory prepared before fork.
[[noreturn]] void ChildFail(int fd, int32_t step) {
  ChildReport report{step, errno};
  ssize_t r;
  do {
    r = write(fd, &report, sizeof(report));
  } while (r < 0 && errno == EINTR);
  _exit(127);
}

void ChildCloseFrom(int first, int last, int keep, int bruteMax) {
  // Closes [first, last] except `keep`; last = -1 means "to the end".
  unsigned int lo = static_cast<unsigned int>(first);
  unsigned int hi = last < 0 ? ~0U : static_cast<unsigned int>(last);
  if (keep >= first && (last < 0 || keep <= last)) {
    if (keep > first) ChildCloseFrom(first, keep - 1, -1, bruteMax);
    ChildCloseFrom(keep + 1, last, -1, bruteMax);
    return;
  }
  if (lo > hi) return;
  if (syscall(SYS_close_range, lo, hi, 0) == 0) return;
  // Kernel before 5.9: a plain loop (reading /proc/self/fd is not async-signal-safe).
  int end = last < 0 ? bruteMax : (last < bruteMax ? last : bruteMax);
  for (int fd = first; fd <= end; fd++) close(fd);
}

[[noreturn]] void ChildMain(const ChildPlan& plan) {
  // 1. Default dispositions for every signal (Node ignores SIGPIPE; its handlers must not run
  //    here). All signals are still blocked, as the parent blocked them around fork.
  for (int sig = 1; sig < NSIG; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    sigaction(sig, plan.defaultAction, nullptr);  // EINVAL for glibc-reserved ones: ignored
  }
  const int n = plan.count;
  // 2. The error pipe and every source go above the table first, so that no dup2 below can
  //    overwrite a source still to be placed (or the pipe).
  int errfd = fcntl(plan.errorPipe, F_DUPFD_CLOEXEC, n);
  if (errfd < 0) ChildFail(plan.errorPipe, kStepDupHigh);
  for (int i = 0; i < n; i++) {
    plan.temps[i] = -1;
    if (plan.sources[i] < 0) continue;
    plan.temps[i] = fcntl(plan.sources[i], F_DUPFD_CLOEXEC, n);
    if (plan.temps[i] < 0) ChildFail(errfd, kStepDupHigh);
  }
  // 3. Place them; dup2 leaves the new fd without FD_CLOEXEC.
  for (int i = 0; i < n; i++) {
    if (plan.temps[i] < 0) {
      close(i);
    } else if (dup2(plan.temps[i], i) < 0) {
      ChildFail(errfd, kStepDup2);
    }
  }
  // 4. Nothing else survives: close everything above the table except the error pipe (which
  //    is O_CLOEXEC and goes away at execve).
  //    With execFd, that fd too (moved above the table, O_CLOEXEC: gone after execveat).
  int execfd = -1;
  if (plan.execFd >= 0) {
    execfd = fcntl(plan.execFd, F_DUPFD_CLOEXEC, n);
    if (execfd < 0) ChildFail(errfd, kStepDupHigh);
  }
  if (execfd < 0) {
    ChildCloseFrom(n, -1, errfd, plan.bruteCloseMax);
  } else {
    int lo = errfd < execfd ? errfd : execfd;
    int hi = errfd < execfd ? execfd : errfd;
    ChildCloseFrom(n, hi - 1, lo, plan.bruteCloseMax);
    ChildCloseFrom(hi + 1, -1, -1, plan.bruteCloseMax);
  }
  if (plan.setsid && setsid() < 0) ChildFail(errfd, kStepSetsid);
  if (plan.controllingTty && ioctl(0, TIOCSCTTY, 0) < 0) ChildFail(errfd, kStepSetCtty);
  // 5. Unblock everything and exec.
  sigprocmask(SIG_SETMASK, plan.emptyMask, nullptr);
  if (execfd >= 0) {
    syscall(SYS_execveat, execfd, "", plan.argv, plan.envp, AT_EMPTY_PATH);
  } else {
    execve(plan.file, plan.argv, plan.envp);
  }
  ChildFail(errfd, kStepExecve);
}

// The child's own stack while it runs in the parent's memory (see Spawn).
constexpr size_t kChildStackBytes = 128 * 1024;

int ChildEntry(void* arg) {
  ChildMain(*static_cast<const ChildPlan*>(arg));
}

}  // namespace

// clone3(2) with a child function, as glibc's clone() is for clone(2): glibc (2.36) has no
// public clone3 wrapper and a CLONE_VM child must not return from the system call into C code
// (it runs on its own stack, in our memory). KataClone3(args, size, fn, arg) returns the child's
// pid or -errno in the parent; the child calls fn(arg) on args->stack and exits with its value.
// Used for CLONE_INTO_CGROUP (Linux 5.7): the child is born in a cgroup2 cgroup, so nobody has
// to move it there through cgroup.procs, which takes the kernel's global threadgroup lock for
// writing and waits for an RCU grace period (6-25 ms on this 2-CPU VM, most of a container
// create before this existed).
#if defined(__x86_64__) || defined(__aarch64__)
#define KATA_HAVE_CLONE3_FN 1
extern "C" long KataClone3(struct clone_args* args, size_t size, int (*fn)(void*), void* arg);
#if defined(__x86_64__)
asm(R"(
  .text
  .globl KataClone3
  .hidden KataClone3
  .type KataClone3,@function
KataClone3:
  mov %rcx, %r8
  mov $435, %eax
  syscall
  test %rax, %rax
  jz 1f
  ret
1:
  xor %ebp, %ebp
  and $-16, %rsp
  mov %r8, %rdi
  call *%rdx
  mov %eax, %edi
  mov $60, %eax
  syscall
  hlt
  .size KataClone3, .-KataClone3
)");
#else
asm(R"(
  .text
  .globl KataClone3
  .hidden KataClone3
  .type KataClone3,%function
KataClone3:
  mov x10, x2
  mov x11, x3
  mov x8, #435
  svc #0
  cbz x0, 1f
  ret
1:
  mov x29, xzr
  mov x30, xzr
  mov x0, x11
  blr x10
  mov x8, #93
  svc #0
  brk #0
  .size KataClone3, .-KataClone3
)");
#endif
#endif

namespace {

int PidfdOpenRaw(pid_t pid) {
  int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return -1;
  // pidfds are O_CLOEXEC from birth; make sure of it anyway.
  int flags = fcntl(fd, F_GETFD);
  if (flags >= 0 && !(flags & FD_CLOEXEC)) fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
  return fd;
}

void WaitForPid(pid_t pid) {
  int status;
  while (waitpid(pid, &status, __WALL) < 0 && errno == EINTR) {
  }
}

// options[name]: undefined (-1) or an open fd; anything else is a TypeError.
int OptionalFd(Napi::Env env, const Napi::Object& options, const char* name) {
  Napi::Value value = options.Get(name);
  if (value.IsUndefined()) return -1;
  double v = value.IsNumber() ? value.As<Napi::Number>().DoubleValue() : -1;
  if (!value.IsNumber() || v != std::floor(v) || v < 0 || v > INT_MAX) {
    ThrowType(env, std::string("spawn: options.") + name + " must be a file descriptor, got " + Describe(value));
  }
  if (fcntl(static_cast<int>(v), F_GETFD) < 0) ThrowErrno(env, errno, "fcntl", std::string("spawn: options.") + name);
  return static_cast<int>(v);
}

Napi::Value Spawn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject() || info[0].IsArray() || info[0].IsFunction()) {
    ThrowType(env, "spawn: options must be an object, got " + Describe(info[0]));
  }
  Napi::Object options = info[0].As<Napi::Object>();

  // Everything the child touches is built here, before fork.
  std::string file = ToStringNoNul(env, options.Get("file"), "spawn: options.file");
  if (file.empty()) ThrowType(env, "spawn: options.file must not be empty");
  std::vector<std::string> argv = StringArrayArg(env, options.Get("argv"), "spawn: options.argv");
  if (argv.empty()) ThrowType(env, "spawn: options.argv must hold at least argv[0]");
  std::vector<std::string> envp = StringArrayArg(env, options.Get("envp"), "spawn: options.envp");
  std::vector<int> sources = FdArrayArg(env, options.Get("fds"), "spawn: options.fds", -1, 65536);
  bool doSetsid = OptionalBool(env, options, "setsid", "spawn: options.setsid");
  bool doCtty = OptionalBool(env, options, "controllingTty", "spawn: options.controllingTty");
  int cgroupFd = OptionalFd(env, options, "cgroupFd");
  int execFd = OptionalFd(env, options, "execFd");
  if (doCtty && !doSetsid) ThrowType(env, "spawn: options.controllingTty needs options.setsid");
  for (size_t i = 0; i < sources.size(); i++) {
    if (sources[i] >= 0 && fcntl(sources[i], F_GETFD) < 0) {
      ThrowErrno(env, errno, "fcntl",
                 "spawn: options.fds[" + std::to_string(i) + "] = " + std::to_string(sources[i]));
    }
  }

  std::vector<char*> argvPtrs;
  for (std::string& s : argv) argvPtrs.push_back(&s[0]);
  argvPtrs.push_back(nullptr);
  std::vector<char*> envpPtrs;
  for (std::string& s : envp) envpPtrs.push_back(&s[0]);
  envpPtrs.push_back(nullptr);
  std::vector<int> temps(sources.size() + 1, -1);

  struct rlimit nofile;
  int bruteMax = 65535;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY &&
      nofile.rlim_cur < static_cast<rlim_t>(bruteMax)) {
    bruteMax = static_cast<int>(nofile.rlim_cur);
  }
  sigset_t emptyMask;
  sigemptyset(&emptyMask);
  struct sigaction defaultAction;
  std::memset(&defaultAction, 0, sizeof(defaultAction));
  defaultAction.sa_handler = SIG_DFL;
  sigemptyset(&defaultAction.sa_mask);

  int errorPipe[2];
  if (pipe2(errorPipe, O_CLOEXEC) < 0) ThrowErrno(env, errno, "pipe2");
  UniqueFd errorRead(errorPipe[0]);
  UniqueFd errorWrite(errorPipe[1]);

  ChildPlan plan;
  plan.file = file.c_str();
  plan.argv = argvPtrs.data();
  plan.envp = envpPtrs.data();
  plan.sources = sources.data();
  plan.temps = temps.data();
  plan.count = static_cast<int>(sources.size());
  plan.setsid = doSetsid;
  plan.controllingTty = doCtty;
  plan.errorPipe = errorWrite.get();
  plan.execFd = execFd;
  plan.bruteCloseMax = bruteMax;
  plan.emptyMask = &emptyMask;
  plan.defaultAction = &defaultAction;

  // Block every signal across the clone so that no handler of ours runs in the child before
  // its dispositions are reset (it would write to libuv's signal pipe, shared with us).
  //
  // clone(CLONE_VM | CLONE_VFORK), as posix_spawn does, rather than fork(): the child runs on
  // its own stack in our memory, this thread waits until it has called execve (or exited), and
  // the helper's page tables are neither copied nor torn down again at the child's execve.
  // With fork() that copy was most of a container start (helper profile, 100 create/remove
  // cycles: 17.7% of the helper's time in spawn). The child only runs ChildMain (raw system
  // calls on memory prepared above, nothing the parent reads afterwards except through the
  // error pipe); without CLONE_SIGHAND its signal dispositions are its own copy, so resetting
  // them does not touch ours. errno is this thread's (shared TLS): read only when clone fails.
  std::vector<char> childStack(kChildStackBytes);
  sigset_t all, saved;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &saved);
  //
  // With options.cgroupFd the child is created by clone3 with CLONE_INTO_CGROUP (see
  // KataClone3); a kernel that has no clone3 or no CLONE_INTO_CGROUP (ENOSYS, E2BIG, EINVAL)
  // gets the plain clone and the result says intoCgroup: false.
  pid_t pid = -1;
  int forkErrno = 0;
  bool intoCgroup = false;
#ifdef KATA_HAVE_CLONE3_FN
  if (cgroupFd >= 0) {
    struct clone_args args;
    std::memset(&args, 0, sizeof(args));
    args.flags = CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP;
    args.exit_signal = SIGCHLD;
    args.stack = reinterpret_cast<uintptr_t>(childStack.data());
    args.stack_size = childStack.size();
    args.cgroup = static_cast<uint64_t>(cgroupFd);
    long r = KataClone3(&args, sizeof(args), ChildEntry, &plan);
    if (r >= 0) {
      pid = static_cast<pid_t>(r);
      intoCgroup = true;
    } else if (r != -ENOSYS && r != -E2BIG && r != -EINVAL) {
      pthread_sigmask(SIG_SETMASK, &saved, nullptr);
      ThrowErrno(env, static_cast<int>(-r), "clone3", "spawn: CLONE_INTO_CGROUP (options.cgroupFd " + std::to_string(cgroupFd) + ")");
    }
  }
#endif
  if (!intoCgroup) {
    pid = clone(ChildEntry, childStack.data() + childStack.size(), CLONE_VM | CLONE_VFORK | SIGCHLD, &plan);
    forkErrno = errno;
  }
  pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  if (pid < 0) ThrowErrno(env, forkErrno, "clone");

  errorWrite.reset();
  // EOF (0 bytes) = execve succeeded and closed the pipe; a report = the child failed.
  ChildReport report{0, 0};
  size_t got = 0;
  while (got < sizeof(report)) {
    ssize_t r = read(errorRead.get(), reinterpret_cast<char*>(&report) + got, sizeof(report) - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += static_cast<size_t>(r);
  }
  if (got > 0) {
    WaitForPid(pid);
    if (got < sizeof(report) || report.err <= 0) {
      ThrowErrno(env, EIO, "spawn", "child failed before execve without a complete report");
    }
    ThrowErrno(env, report.err, ChildStepName(report.step), file);
  }
  int pidfd = PidfdOpenRaw(pid);
  if (pidfd < 0) {
    int err = errno;
    // Without a pidfd the caller cannot own the child: do not leave it running.
    kill(pid, SIGKILL);
    WaitForPid(pid);
    ThrowErrno(env, err, "pidfd_open");
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("pid", Napi::Number::New(env, pid));
  out.Set("pidfd", Napi::Number::New(env, pidfd));
  out.Set("intoCgroup", Napi::Boolean::New(env, intoCgroup));
  return out;
}

// sealedCopy(path): a memfd holding the file's bytes, sealed against every change
// (F_SEAL_SEAL|SHRINK|GROW|WRITE), O_CLOEXEC; spawn's execFd runs it. kata-init started from one
// skips its own copy-and-re-exec (KATA-INIT.md step 0: /proc/self/exe is already a sealed
// memfd), so the helper makes the copy once instead of every kata-init making one per spawn.
Napi::Value SealedCopy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string file = ToStringNoNul(env, info[0], "sealedCopy: path");
  UniqueFd src(open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (src.get() < 0) ThrowErrno(env, errno, "open", file);
  struct stat st;
  if (fstat(src.get(), &st) < 0) ThrowErrno(env, errno, "fstat", file);
  if (!S_ISREG(st.st_mode)) ThrowErrno(env, EINVAL, "sealedCopy", file + " is not a regular file");
  UniqueFd mem(static_cast<int>(syscall(SYS_memfd_create, "kata-init", MFD_CLOEXEC | MFD_ALLOW_SEALING)));
  if (mem.get() < 0) ThrowErrno(env, errno, "memfd_create");
  off_t off = 0;
  while (off < st.st_size) {
    ssize_t n = sendfile(mem.get(), src.get(), nullptr, static_cast<size_t>(st.st_size - off));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) ThrowErrno(env, n < 0 ? errno : EIO, "sendfile", file);
    off += n;
  }
  if (fcntl(mem.get(), F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0) {
    ThrowErrno(env, errno, "fcntl(F_ADD_SEALS)", file);
  }
  return Napi::Number::New(env, mem.release());
}

Napi::Value PidfdOpen(const Napi::CallbackInfo& info) {
  pid_t pid = static_cast<pid_t>(IntArg(info, 0, "pidfdOpen", "pid", 1, INT_MAX));
  int fd = PidfdOpenRaw(pid);
  if (fd < 0) ThrowErrno(info.Env(), errno, "pidfd_open");
  return Napi::Number::New(info.Env(), fd);
}

void PidfdSendSignal(const Napi::CallbackInfo& info) {
  int pidfd = FdArg(info, 0, "pidfdSendSignal", "pidfd");
  int sig = static_cast<int>(IntArg(info, 1, "pidfdSendSignal", "signal", 0, NSIG - 1));
  if (syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0) < 0) {
    ThrowErrno(info.Env(), errno, "pidfd_send_signal");
  }
}

void Kill(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t pid = IntArg(info, 0, "kill", "pid", INT_MIN + 1, INT_MAX);
  // 0 and -1 would signal our own process group or every process we may signal.
  if (pid == 0 || pid == -1) {
    ThrowType(env, "kill: pid must not be 0 or -1 (it would signal the agent itself or every process), got " +
                       std::to_string(pid));
  }
  int sig = static_cast<int>(IntArg(info, 1, "kill", "signal", 0, NSIG - 1));
  if (kill(static_cast<pid_t>(pid), sig) < 0) ThrowErrno(env, errno, "kill");
}

Napi::Value Reap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env);
  uint32_t count = 0;
  for (;;) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, WNOHANG | __WALL);
    if (pid == 0) break;
    if (pid < 0) {
      if (errno == EINTR) continue;
      if (errno == ECHILD) break;
      if (count > 0) break;  // do not lose the children already reaped
      ThrowErrno(env, errno, "waitpid");
    }
    if (!WIFEXITED(status) && !WIFSIGNALED(status)) continue;  // a stop report: not an exit
    Napi::Object child = Napi::Object::New(env);
    child.Set("pid", Napi::Number::New(env, pid));
    child.Set("exitCode", WIFEXITED(status) ? Napi::Value(Napi::Number::New(env, WEXITSTATUS(status)))
                                            : env.Null());
    child.Set("signal", WIFSIGNALED(status) ? Napi::Value(Napi::Number::New(env, WTERMSIG(status)))
                                            : env.Null());
    out.Set(count++, child);
  }
  return out;
}

void SetChildSubreaper(const Napi::CallbackInfo& info) {
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) {
    ThrowErrno(info.Env(), errno, "prctl(PR_SET_CHILD_SUBREAPER)");
  }
}

// mount(source, target, fstype, flags, data): mount(2) in the caller's mount namespace.
void Mount(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string source = ToStringNoNul(env, info[0], "mount: source");
  std::string target = ToStringNoNul(env, info[1], "mount: target");
  std::string fstype = ToStringNoNul(env, info[2], "mount: fstype");
  int64_t flags = IntArg(info, 3, "mount", "flags", 0, UINT32_MAX);
  std::string data = ToStringNoNul(env, info[4], "mount: data");
  if (::mount(source.empty() ? nullptr : source.c_str(), target.c_str(),
              fstype.empty() ? nullptr : fstype.c_str(), static_cast<unsigned long>(flags),
              data.empty() ? nullptr : data.c_str()) < 0) {
    ThrowErrno(env, errno, "mount", target);
  }
}

// umount2(target, flags).
void Umount2(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string target = ToStringNoNul(env, info[0], "umount2: target");
  int flags = static_cast<int>(IntArg(info, 1, "umount2", "flags", 0, INT_MAX));
  if (::umount2(target.c_str(), flags) < 0) ThrowErrno(env, errno, "umount2", target);
}

// ---------------------------------------------------------------------------------------------
// Guest operations: entropy, realtime clock, swap (helper/ops/guest.ts)
// ---------------------------------------------------------------------------------------------

// addEntropy(device, data): RNDADDENTROPY of `data` (credited at 8 bits per byte, as the host
// gave it as random) on `device` (/dev/random), then RNDRESEEDCRNG so the CRNG uses it at once.
// Upstream random.rs writes the data then RNDADDTOENTCNT; RNDADDENTROPY mixes and credits in one
// call. Both need CAP_SYS_ADMIN. 1..4096 bytes.
void AddEntropy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string device = ToStringNoNul(env, info[0], "addEntropy: device");
  Bytes data = BufferArg(info, 1, "addEntropy", "data");
  if (data.length == 0 || data.length > 4096) {
    ThrowType(env, "addEntropy: data must be 1..4096 bytes, got " + std::to_string(data.length));
  }
  UniqueFd fd(::open(device.c_str(), O_RDWR | O_CLOEXEC | O_NOCTTY));
  if (fd.get() < 0) ThrowErrno(env, errno, "open", device);
  std::vector<uint8_t> raw(sizeof(struct rand_pool_info) + data.length);
  auto* pool = reinterpret_cast<struct rand_pool_info*>(raw.data());
  pool->entropy_count = static_cast<int>(data.length * 8);
  pool->buf_size = static_cast<int>(data.length);
  memcpy(pool->buf, data.data, data.length);
  if (::ioctl(fd.get(), RNDADDENTROPY, pool) < 0) ThrowErrno(env, errno, "ioctl RNDADDENTROPY", device);
  if (::ioctl(fd.get(), RNDRESEEDCRNG, 0) < 0) ThrowErrno(env, errno, "ioctl RNDRESEEDCRNG", device);
}

// setRealtime(sec, nsec): clock_settime(CLOCK_REALTIME) (upstream: settimeofday). CAP_SYS_TIME.
void SetRealtime(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t sec = IntArg(info, 0, "setRealtime", "sec", 0, (INT64_C(1) << 53) - 1);
  int64_t nsec = IntArg(info, 1, "setRealtime", "nsec", 0, 999999999);
  struct timespec ts;
  ts.tv_sec = static_cast<time_t>(sec);
  ts.tv_nsec = static_cast<long>(nsec);
  if (::clock_settime(CLOCK_REALTIME, &ts) < 0) ThrowErrno(env, errno, "clock_settime");
}

// swapon(path, flags) / swapoff(path). CAP_SYS_ADMIN.
void Swapon(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ToStringNoNul(env, info[0], "swapon: path");
  int flags = static_cast<int>(IntArg(info, 1, "swapon", "flags", 0, INT_MAX));
  if (::swapon(path.c_str(), flags) < 0) ThrowErrno(env, errno, "swapon", path);
}

void Swapoff(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ToStringNoNul(env, info[0], "swapoff: path");
  if (::swapoff(path.c_str()) < 0) ThrowErrno(env, errno, "swapoff", path);
}

// powerOff(): sync(2), then reboot(RB_POWER_OFF): init mode's last act (control/init.ts, as
// upstream init_agent_as_init's shutdown). Refused with EPERM ("only PID 1 ...") unless the
// caller is PID 1 of its PID namespace, so a stray call on a host never powers it off (in a
// child PID namespace the kernel turns it into SIGKILL of that namespace's init).
void PowerOff(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (getpid() != 1) ThrowErrno(env, EPERM, "reboot", "RB_POWER_OFF: only PID 1 may power off");
  sync();
  if (::reboot(RB_POWER_OFF) < 0) ThrowErrno(env, errno, "reboot", "RB_POWER_OFF");
}

// ---------------------------------------------------------------------------------------------
// Seccomp: compile an OCI profile to BPF with libseccomp (never loaded here)
// ---------------------------------------------------------------------------------------------

// Bounds of a profile (the same numbers as SECCOMP_LIMITS in shared/protocol.ts).
constexpr uint32_t kSeccompMaxRules = 4096;
constexpr uint32_t kSeccompMaxNames = 16384;
constexpr size_t kSeccompMaxNameBytes = 256;
constexpr uint32_t kSeccompMaxArgs = 6;
constexpr uint32_t kSeccompMaxArches = 32;
constexpr int64_t kSeccompMaxErrno = 65535;

struct SeccompActionName {
  const char* name;
  uint32_t action;  // without errno data
  bool takesData;   // SCMP_ACT_ERRNO / SCMP_ACT_TRACE: the low 16 bits are the errno / message
};

const SeccompActionName kSeccompActions[] = {
    {"SCMP_ACT_KILL", SCMP_ACT_KILL, false},
    {"SCMP_ACT_KILL_PROCESS", SCMP_ACT_KILL_PROCESS, false},
    {"SCMP_ACT_KILL_THREAD", SCMP_ACT_KILL_THREAD, false},
    {"SCMP_ACT_TRAP", SCMP_ACT_TRAP, false},
    {"SCMP_ACT_ERRNO", SCMP_ACT_ERRNO(0), true},
    {"SCMP_ACT_TRACE", SCMP_ACT_TRACE(0), true},
    {"SCMP_ACT_ALLOW", SCMP_ACT_ALLOW, false},
    {"SCMP_ACT_LOG", SCMP_ACT_LOG, false},
};

const std::pair<const char*, scmp_compare> kSeccompOps[] = {
    {"SCMP_CMP_NE", SCMP_CMP_NE}, {"SCMP_CMP_LT", SCMP_CMP_LT},
    {"SCMP_CMP_LE", SCMP_CMP_LE}, {"SCMP_CMP_EQ", SCMP_CMP_EQ},
    {"SCMP_CMP_GE", SCMP_CMP_GE}, {"SCMP_CMP_GT", SCMP_CMP_GT},
    {"SCMP_CMP_MASKED_EQ", SCMP_CMP_MASKED_EQ},
};

// OCI architecture names this libseccomp knows (newer ones only when its header has them).
const std::pair<const char*, uint32_t> kSeccompArches[] = {
    {"SCMP_ARCH_X86", SCMP_ARCH_X86},
    {"SCMP_ARCH_X86_64", SCMP_ARCH_X86_64},
    {"SCMP_ARCH_X32", SCMP_ARCH_X32},
    {"SCMP_ARCH_ARM", SCMP_ARCH_ARM},
    {"SCMP_ARCH_AARCH64", SCMP_ARCH_AARCH64},
    {"SCMP_ARCH_MIPS", SCMP_ARCH_MIPS},
    {"SCMP_ARCH_MIPS64", SCMP_ARCH_MIPS64},
    {"SCMP_ARCH_MIPS64N32", SCMP_ARCH_MIPS64N32},
    {"SCMP_ARCH_MIPSEL", SCMP_ARCH_MIPSEL},
    {"SCMP_ARCH_MIPSEL64", SCMP_ARCH_MIPSEL64},
    {"SCMP_ARCH_MIPSEL64N32", SCMP_ARCH_MIPSEL64N32},
    {"SCMP_ARCH_PPC", SCMP_ARCH_PPC},
    {"SCMP_ARCH_PPC64", SCMP_ARCH_PPC64},
    {"SCMP_ARCH_PPC64LE", SCMP_ARCH_PPC64LE},
    {"SCMP_ARCH_S390", SCMP_ARCH_S390},
    {"SCMP_ARCH_S390X", SCMP_ARCH_S390X},
    {"SCMP_ARCH_PARISC", SCMP_ARCH_PARISC},
    {"SCMP_ARCH_PARISC64", SCMP_ARCH_PARISC64},
    {"SCMP_ARCH_RISCV64", SCMP_ARCH_RISCV64},
#ifdef SCMP_ARCH_LOONGARCH64
    {"SCMP_ARCH_LOONGARCH64", SCMP_ARCH_LOONGARCH64},
#endif
#ifdef SCMP_ARCH_M68K
    {"SCMP_ARCH_M68K", SCMP_ARCH_M68K},
#endif
#ifdef SCMP_ARCH_SH
    {"SCMP_ARCH_SH", SCMP_ARCH_SH},
#endif
#ifdef SCMP_ARCH_SHEB
    {"SCMP_ARCH_SHEB", SCMP_ARCH_SHEB},
#endif
};

// Names OCI knows that this libseccomp build does not: an Error (code EOPNOTSUPP), not a TypeError.
const char* const kSeccompOciArches[] = {"SCMP_ARCH_LOONGARCH64", "SCMP_ARCH_M68K", "SCMP_ARCH_SH",
                                         "SCMP_ARCH_SHEB"};

#ifndef SECCOMP_FILTER_FLAG_TSYNC
#define SECCOMP_FILTER_FLAG_TSYNC (1UL << 0)
#endif
#ifndef SECCOMP_FILTER_FLAG_LOG
#define SECCOMP_FILTER_FLAG_LOG (1UL << 1)
#endif
#ifndef SECCOMP_FILTER_FLAG_SPEC_ALLOW
#define SECCOMP_FILTER_FLAG_SPEC_ALLOW (1UL << 2)
#endif

struct SeccompFlagName {
  const char* name;
  scmp_filter_attr attr;
  uint32_t kernelFlag;
};

const SeccompFlagName kSeccompFlags[] = {
    {"SECCOMP_FILTER_FLAG_TSYNC", SCMP_FLTATR_CTL_TSYNC, SECCOMP_FILTER_FLAG_TSYNC},
    {"SECCOMP_FILTER_FLAG_LOG", SCMP_FLTATR_CTL_LOG, SECCOMP_FILTER_FLAG_LOG},
    {"SECCOMP_FILTER_FLAG_SPEC_ALLOW", SCMP_FLTATR_CTL_SSB, SECCOMP_FILTER_FLAG_SPEC_ALLOW},
};

class SeccompContext {
 public:
  explicit SeccompContext(scmp_filter_ctx ctx) : ctx_(ctx) {}
  ~SeccompContext() {
    if (ctx_ != nullptr) seccomp_release(ctx_);
  }
  SeccompContext(const SeccompContext&) = delete;
  SeccompContext& operator=(const SeccompContext&) = delete;
  scmp_filter_ctx get() const { return ctx_; }

 private:
  scmp_filter_ctx ctx_;
};

Napi::Object ObjectProp(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsObject() || v.IsArray() || v.IsFunction()) {
    ThrowType(env, what + " must be an object, got " + Describe(v));
  }
  return v.As<Napi::Object>();
}

Napi::Array ArrayProp(Napi::Env env, const Napi::Value& v, const std::string& what, uint32_t max,
                      bool optional) {
  if (optional && (v.IsUndefined() || v.IsNull())) return Napi::Array::New(env, 0);
  if (!v.IsArray()) ThrowType(env, what + " must be an array, got " + Describe(v));
  Napi::Array arr = v.As<Napi::Array>();
  if (arr.Length() > max) {
    ThrowType(env, what + " has " + std::to_string(arr.Length()) + " entries, at most " +
                       std::to_string(max) + " are allowed");
  }
  return arr;
}

// An unsigned 64-bit value: a safe-integer Number or a BigInt in [0, 2^64).
uint64_t U64Prop(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (v.IsBigInt()) {
    bool lossless = false;
    uint64_t out = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) ThrowType(env, what + " must be a bigint in [0, 2^64 - 1]");
    return out;
  }
  return static_cast<uint64_t>(ToInteger(env, v, what, 0, (INT64_C(1) << 53) - 1));
}

// SCMP_ACT_* value of `name` (errno / trace message `data` for the actions that take one).
uint32_t SeccompActionOf(Napi::Env env, const Napi::Value& v, const std::string& what,
                         uint32_t data) {
  std::string name = ToStringNoNul(env, v, what);
  for (const SeccompActionName& a : kSeccompActions) {
    if (name == a.name) return a.takesData ? (a.action | (data & 0xffff)) : a.action;
  }
  ThrowType(env, what + " \"" + name + "\" is not a supported seccomp action");
}

// The errno / trace message: `v` absent → EPERM (as upstream), else 0..65535.
uint32_t SeccompErrnoOf(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (v.IsUndefined() || v.IsNull()) return EPERM;
  return static_cast<uint32_t>(ToInteger(env, v, what, 0, kSeccompMaxErrno));
}

struct SeccompRule {
  std::vector<std::string> names;
  uint32_t action;
  std::vector<scmp_arg_cmp> args;
};

// seccompCompile(profile) → {bpf, flags, skipped}. See shared/native.ts.
Napi::Value SeccompCompile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string fn = "seccompCompile: ";
  Napi::Object profile = ObjectProp(env, info[0], fn + "profile");

  // Everything is read and checked before libseccomp is touched.
  uint32_t defaultAction = SeccompActionOf(
      env, profile.Get("defaultAction"), fn + "profile.defaultAction",
      SeccompErrnoOf(env, profile.Get("defaultErrnoRet"), fn + "profile.defaultErrnoRet"));

  std::vector<std::pair<std::string, uint32_t>> arches;
  Napi::Array archList = ArrayProp(env, profile.Get("architectures"), fn + "profile.architectures",
                                   kSeccompMaxArches, true);
  for (uint32_t i = 0; i < archList.Length(); i++) {
    std::string what = fn + "profile.architectures[" + std::to_string(i) + "]";
    std::string name = ToStringNoNul(env, archList.Get(i), what);
    bool found = false;
    for (const auto& a : kSeccompArches) {
      if (name == a.first) {
        arches.emplace_back(name, a.second);
        found = true;
        break;
      }
    }
    if (found) continue;
    for (const char* oci : kSeccompOciArches) {
      if (name == oci) {
        ThrowErrno(env, EOPNOTSUPP, "seccomp_arch_add",
                   name + " is not supported by libseccomp " + std::to_string(SCMP_VER_MAJOR) +
                       "." + std::to_string(SCMP_VER_MINOR) + "." +
                       std::to_string(SCMP_VER_MICRO));
      }
    }
    ThrowType(env, what + " \"" + name + "\" is not a seccomp architecture");
  }

  std::vector<const SeccompFlagName*> flags;
  uint32_t kernelFlags = 0;
  Napi::Array flagList = ArrayProp(env, profile.Get("flags"), fn + "profile.flags", 16, true);
  for (uint32_t i = 0; i < flagList.Length(); i++) {
    std::string what = fn + "profile.flags[" + std::to_string(i) + "]";
    std::string name = ToStringNoNul(env, flagList.Get(i), what);
    const SeccompFlagName* found = nullptr;
    for (const SeccompFlagName& f : kSeccompFlags) {
      if (name == f.name) found = &f;
    }
    if (found == nullptr) ThrowType(env, what + " \"" + name + "\" is not a supported seccomp flag");
    flags.push_back(found);
    kernelFlags |= found->kernelFlag;
  }

  std::vector<SeccompRule> rules;
  uint32_t totalNames = 0;
  Napi::Array ruleList =
      ArrayProp(env, profile.Get("syscalls"), fn + "profile.syscalls", kSeccompMaxRules, true);
  for (uint32_t i = 0; i < ruleList.Length(); i++) {
    std::string what = fn + "profile.syscalls[" + std::to_string(i) + "]";
    Napi::Object r = ObjectProp(env, ruleList.Get(i), what);
    SeccompRule rule;
    Napi::Array names = ArrayProp(env, r.Get("names"), what + ".names", kSeccompMaxNames, false);
    if (names.Length() == 0) ThrowType(env, what + ".names must not be empty");
    totalNames += names.Length();
    if (totalNames > kSeccompMaxNames) {
      ThrowType(env, fn + "profile.syscalls has more than " + std::to_string(kSeccompMaxNames) +
                         " syscall names in all");
    }
    for (uint32_t j = 0; j < names.Length(); j++) {
      std::string nameWhat = what + ".names[" + std::to_string(j) + "]";
      std::string name = ToStringNoNul(env, names.Get(j), nameWhat);
      if (name.empty() || name.size() > kSeccompMaxNameBytes) {
        ThrowType(env, nameWhat + " must be 1 to " + std::to_string(kSeccompMaxNameBytes) +
                           " bytes long");
      }
      rule.names.push_back(std::move(name));
    }
    rule.action = SeccompActionOf(env, r.Get("action"), what + ".action",
                                  SeccompErrnoOf(env, r.Get("errnoRet"), what + ".errnoRet"));
    Napi::Array args = ArrayProp(env, r.Get("args"), what + ".args", kSeccompMaxArgs, true);
    for (uint32_t k = 0; k < args.Length(); k++) {
      std::string argWhat = what + ".args[" + std::to_string(k) + "]";
      Napi::Object a = ObjectProp(env, args.Get(k), argWhat);
      scmp_arg_cmp cmp;
      std::memset(&cmp, 0, sizeof cmp);
      cmp.arg = static_cast<unsigned int>(ToInteger(env, a.Get("index"), argWhat + ".index", 0, 5));
      std::string op = ToStringNoNul(env, a.Get("op"), argWhat + ".op");
      bool opFound = false;
      for (const auto& o : kSeccompOps) {
        if (op == o.first) {
          cmp.op = o.second;
          opFound = true;
        }
      }
      if (!opFound) ThrowType(env, argWhat + ".op \"" + op + "\" is not a seccomp operator");
      uint64_t value = U64Prop(env, a.Get("value"), argWhat + ".value");
      Napi::Value twoValue = a.Get("valueTwo");
      uint64_t valueTwo = twoValue.IsUndefined() || twoValue.IsNull()
                              ? 0
                              : U64Prop(env, twoValue, argWhat + ".valueTwo");
      // OCI and upstream: for SCMP_CMP_MASKED_EQ `value` is the mask and `valueTwo` the datum;
      // libseccomp wants the mask in datum_a and the datum in datum_b.
      cmp.datum_a = value;
      cmp.datum_b = cmp.op == SCMP_CMP_MASKED_EQ ? valueTwo : 0;
      rule.args.push_back(cmp);
    }
    rules.push_back(std::move(rule));
  }

  SeccompContext ctx(seccomp_init(defaultAction));
  if (ctx.get() == nullptr) {
    ThrowErrno(env, EINVAL, "seccomp_init", "default action " + std::to_string(defaultAction) +
                                                " is not supported by this kernel or libseccomp");
  }
  // kata-init sets no_new_privs itself, from the OCI process; never on libseccomp's behalf.
  int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_NNP, 0);
  if (rc < 0) ThrowErrno(env, -rc, "seccomp_attr_set", "SCMP_FLTATR_CTL_NNP");
  for (const auto& arch : arches) {
    rc = seccomp_arch_add(ctx.get(), arch.second);
    if (rc < 0 && rc != -EEXIST) ThrowErrno(env, -rc, "seccomp_arch_add", arch.first);
  }

  std::vector<std::string> skipped;
  for (size_t i = 0; i < rules.size(); i++) {
    const SeccompRule& rule = rules[i];
    for (const std::string& name : rule.names) {
      int nr = seccomp_syscall_resolve_name(name.c_str());
      if (nr == __NR_SCMP_ERROR) {
        // Not a syscall libseccomp knows (field case B23): skipped and reported, as upstream.
        bool seen = false;
        for (const std::string& s : skipped) seen = seen || s == name;
        if (!seen) skipped.push_back(name);
        continue;
      }
      // A rule whose action is the default one is redundant, and libseccomp refuses it.
      if (rule.action == defaultAction) continue;
      rc = seccomp_rule_add_array(ctx.get(), rule.action, nr,
                                  static_cast<unsigned int>(rule.args.size()),
                                  rule.args.empty() ? nullptr : rule.args.data());
      if (rc < 0) {
        ThrowErrno(env, -rc, "seccomp_rule_add",
                   "syscalls[" + std::to_string(i) + "] " + name);
      }
    }
  }
  for (const SeccompFlagName* f : flags) {
    rc = seccomp_attr_set(ctx.get(), f->attr, 1);
    if (rc < 0) ThrowErrno(env, -rc, "seccomp_attr_set", f->name);
  }

  UniqueFd mem(static_cast<int>(syscall(SYS_memfd_create, "kata-seccomp-bpf", MFD_CLOEXEC)));
  if (mem.get() < 0) ThrowErrno(env, errno, "memfd_create");
  rc = seccomp_export_bpf(ctx.get(), mem.get());
  if (rc < 0) ThrowErrno(env, -rc, "seccomp_export_bpf");
  struct stat st;
  if (fstat(mem.get(), &st) < 0) ThrowErrno(env, errno, "fstat", "the exported filter");
  size_t size = static_cast<size_t>(st.st_size);
  Napi::Buffer<uint8_t> bpf = Napi::Buffer<uint8_t>::New(env, size);
  size_t got = 0;
  while (got < size) {
    ssize_t n = pread(mem.get(), bpf.Data() + got, size - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) ThrowErrno(env, errno, "pread", "the exported filter");
    if (n == 0) ThrowErrno(env, EIO, "pread", "the exported filter is shorter than its size");
    got += static_cast<size_t>(n);
  }

  Napi::Object out = Napi::Object::New(env);
  out.Set("bpf", bpf);
  out.Set("flags", Napi::Number::New(env, kernelFlags));
  Napi::Array skippedOut = Napi::Array::New(env, skipped.size());
  for (size_t i = 0; i < skipped.size(); i++) {
    skippedOut.Set(static_cast<uint32_t>(i), Napi::String::New(env, skipped[i]));
  }
  out.Set("skipped", skippedOut);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Poller: a uv_poll_t on the calling environment's loop
// ---------------------------------------------------------------------------------------------

// Which (loop, fd) pairs have a started Poller: libuv must never see two watchers of one fd
// (and uv_poll_init on an fd already in the epoll set would drop that fd's registration).
std::mutex gPollMutex;
std::map<std::pair<uv_loop_t*, int>, const void*> gStartedPollers;

class Poller : public Napi::ObjectWrap<Poller> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Poller",
                       {
                           InstanceMethod<&Poller::Start>("start"),
                           InstanceMethod<&Poller::Stop>("stop"),
                           InstanceMethod<&Poller::Close>("close"),
                       });
  }

  explicit Poller(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Poller>(info) {
    Napi::Env env = info.Env();
    fd_ = FdArg(info, 0, "Poller");
    if (!info[1].IsFunction()) {
      ThrowType(env, "Poller: callback must be a function, got " + Describe(info[1]));
    }
    if (napi_get_uv_event_loop(env, &loop_) != napi_ok || loop_ == nullptr) {
      throw Napi::Error::New(env, "Poller: no libuv loop for this environment");
    }
    {
      std::lock_guard<std::mutex> lock(gPollMutex);
      if (gStartedPollers.count({loop_, fd_}) != 0) {
        ThrowErrno(env, EBUSY, "uv_poll_init",
                   "fd " + std::to_string(fd_) + " is already watched by another Poller");
      }
    }
    // The callback lives on the object itself (read-only, not enumerable), so that a
    // callback closing over its Poller does not pin it in memory through a persistent handle.
    info.This().As<Napi::Object>().DefineProperty(
        Napi::PropertyDescriptor::Value("callback", info[1], napi_default));
    asyncContext_ = std::make_unique<Napi::AsyncContext>(env, "kata_native.Poller");
    handle_ = new uv_poll_t;
    int r = uv_poll_init(loop_, handle_, fd_);
    if (r < 0) {
      delete handle_;
      handle_ = nullptr;
      ThrowUv(env, r, "uv_poll_init", "fd " + std::to_string(fd_));
    }
    handle_->data = this;
  }

  ~Poller() override {
    // Reached only when the object is unreachable, so it is not started (or the environment
    // is going away). Release the libuv handle; its memory is freed by the close callback.
    Unregister();
    ReleaseHandle();
  }

 private:
  void Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bool readable = BoolArg(info, 0, "Poller.start", "readable");
    bool writable = BoolArg(info, 1, "Poller.start", "writable");
    if (closed_) throw Napi::Error::New(env, "Poller.start: the poller is closed");
    {
      std::lock_guard<std::mutex> lock(gPollMutex);
      auto it = gStartedPollers.find({loop_, fd_});
      if (it != gStartedPollers.end() && it->second != this) {
        ThrowErrno(env, EBUSY, "uv_poll_start",
                   "fd " + std::to_string(fd_) + " is already watched by another Poller");
      }
    }
    int events = UV_DISCONNECT | (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0);
    int r = uv_poll_start(handle_, events, OnPoll);
    if (r < 0) ThrowUv(env, r, "uv_poll_start", "fd " + std::to_string(fd_));
    if (!active_) {
      {
        std::lock_guard<std::mutex> lock(gPollMutex);
        gStartedPollers[{loop_, fd_}] = this;
      }
      active_ = true;
      Ref();  // not collectable while it may call back
    }
  }

  void Stop(const Napi::CallbackInfo&) {
    if (closed_) return;
    uv_poll_stop(handle_);
    Deactivate();
  }

  void Close(const Napi::CallbackInfo&) {
    if (closed_) return;
    closed_ = true;
    Deactivate();
    ReleaseHandle();
  }

  // Bookkeeping for "no longer started": registry entry and the strong reference.
  void Deactivate() {
    if (!active_) return;
    Unregister();
    active_ = false;
    Unref();
  }

  void Unregister() {
    std::lock_guard<std::mutex> lock(gPollMutex);
    auto it = gStartedPollers.find({loop_, fd_});
    if (it != gStartedPollers.end() && it->second == this) gStartedPollers.erase(it);
  }

  void ReleaseHandle() {
    if (handle_ == nullptr) return;
    uv_poll_stop(handle_);
    handle_->data = nullptr;  // OnPoll ignores a closing handle
    uv_close(reinterpret_cast<uv_handle_t*>(handle_), OnClose);
    handle_ = nullptr;
  }

  static void OnClose(uv_handle_t* handle) { delete reinterpret_cast<uv_poll_t*>(handle); }

  static void OnPoll(uv_poll_t* handle, int status, int events) {
    Poller* self = static_cast<Poller*>(handle->data);
    if (self == nullptr || self->closed_) return;
    Napi::Env env = self->Env();
    Napi::HandleScope scope(env);
    // A local handle keeps the object (and so `self`) alive through the callback, even if the
    // callback stops or closes the poller and drops the last reference.
    Napi::Object object = self->Value();
    if (object.IsEmpty()) return;
    if (status < 0) {
      // libuv has stopped the watcher after reporting the error.
      self->Deactivate();
    }
    try {
      Napi::Value callback = object.Get("callback");
      if (!callback.IsFunction()) return;
      Napi::Object flags = Napi::Object::New(env);
      flags.Set("readable", Napi::Boolean::New(env, (events & UV_READABLE) != 0));
      flags.Set("writable", Napi::Boolean::New(env, (events & UV_WRITABLE) != 0));
      flags.Set("disconnect", Napi::Boolean::New(env, (events & UV_DISCONNECT) != 0));
      callback.As<Napi::Function>().MakeCallback(
          object, {Napi::Number::New(env, status), flags}, *self->asyncContext_);
    } catch (const Napi::Error& error) {
      // The callback threw: report it like any other uncaught exception of an event callback.
      napi_fatal_exception(env, error.Value());
    }
  }

  uv_loop_t* loop_ = nullptr;
  uv_poll_t* handle_ = nullptr;
  int fd_ = -1;
  bool active_ = false;
  bool closed_ = false;
  std::unique_ptr<Napi::AsyncContext> asyncContext_;
};

// ---------------------------------------------------------------------------------------------
// Module
// ---------------------------------------------------------------------------------------------

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("close", Napi::Function::New<Close>(env, "close"));
  exports.Set("pipe", Napi::Function::New<Pipe>(env, "pipe"));
  exports.Set("setNonBlocking", Napi::Function::New<SetNonBlocking>(env, "setNonBlocking"));
  exports.Set("setCloexec", Napi::Function::New<SetCloexec>(env, "setCloexec"));
  exports.Set("read", Napi::Function::New<Read>(env, "read"));
  exports.Set("write", Napi::Function::New<Write>(env, "write"));
  exports.Set("openpty", Napi::Function::New<OpenPty>(env, "openpty"));
  exports.Set("setWinsize", Napi::Function::New<SetWinsize>(env, "setWinsize"));
  exports.Set("seqpacketListen", Napi::Function::New<SeqpacketListen>(env, "seqpacketListen"));
  exports.Set("seqpacketConnect", Napi::Function::New<SeqpacketConnect>(env, "seqpacketConnect"));
  exports.Set("seqpacketPair", Napi::Function::New<SeqpacketPair>(env, "seqpacketPair"));
  exports.Set("accept", Napi::Function::New<Accept>(env, "accept"));
  exports.Set("peerCred", Napi::Function::New<PeerCred>(env, "peerCred"));
  exports.Set("seqpacketSend", Napi::Function::New<SeqpacketSend>(env, "seqpacketSend"));
  exports.Set("seqpacketRecv", Napi::Function::New<SeqpacketRecv>(env, "seqpacketRecv"));
  exports.Set("vsockListen", Napi::Function::New<VsockListen>(env, "vsockListen"));
  exports.Set("vsockConnect", Napi::Function::New<VsockConnect>(env, "vsockConnect"));
  exports.Set("unixStreamListen", Napi::Function::New<UnixStreamListen>(env, "unixStreamListen"));
  exports.Set("socketPeer", Napi::Function::New<SocketPeer>(env, "socketPeer"));
  exports.Set("spawn", Napi::Function::New<Spawn>(env, "spawn"));
  exports.Set("pidfdOpen", Napi::Function::New<PidfdOpen>(env, "pidfdOpen"));
  exports.Set("sealedCopy", Napi::Function::New<SealedCopy>(env, "sealedCopy"));
  exports.Set("pidfdSendSignal", Napi::Function::New<PidfdSendSignal>(env, "pidfdSendSignal"));
  exports.Set("kill", Napi::Function::New<Kill>(env, "kill"));
  exports.Set("reap", Napi::Function::New<Reap>(env, "reap"));
  exports.Set("setChildSubreaper", Napi::Function::New<SetChildSubreaper>(env, "setChildSubreaper"));
  exports.Set("mount", Napi::Function::New<Mount>(env, "mount"));
  exports.Set("umount2", Napi::Function::New<Umount2>(env, "umount2"));
  exports.Set("seccompCompile", Napi::Function::New<SeccompCompile>(env, "seccompCompile"));
  exports.Set("addEntropy", Napi::Function::New<AddEntropy>(env, "addEntropy"));
  exports.Set("setRealtime", Napi::Function::New<SetRealtime>(env, "setRealtime"));
  exports.Set("swapon", Napi::Function::New<Swapon>(env, "swapon"));
  exports.Set("swapoff", Napi::Function::New<Swapoff>(env, "swapoff"));
  exports.Set("powerOff", Napi::Function::New<PowerOff>(env, "powerOff"));
  exports.Set("Poller", Poller::Define(env));
  kata_uevent::Register(env, exports);
  kata_spool::Register(env, exports);
  kata::RegisterNetlink(env, exports);
  kata::RegisterBpfDevices(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(kata_native, Init)
