// Unix SOCK_SEQPACKET sockets for the addon: listen/connect/pair, accept, peer credentials,
// send/recv with SCM_RIGHTS fd passing.
#include "addon.h"

namespace kata_addon {
namespace {

// ---------------------------------------------------------------------------------------------
// Unix SOCK_SEQPACKET sockets
// ---------------------------------------------------------------------------------------------

constexpr int kMaxSendFds = 253;  // SCM_MAX_FD
constexpr int kMaxRecvFds = 64;
constexpr int64_t kMaxRecvBytes = INT64_C(64) << 20;

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

}  // namespace

void RegisterFdpass(Napi::Env env, Napi::Object exports) {
  exports.Set("seqpacketListen", Napi::Function::New<SeqpacketListen>(env, "seqpacketListen"));
  exports.Set("seqpacketConnect", Napi::Function::New<SeqpacketConnect>(env, "seqpacketConnect"));
  exports.Set("seqpacketPair", Napi::Function::New<SeqpacketPair>(env, "seqpacketPair"));
  exports.Set("accept", Napi::Function::New<Accept>(env, "accept"));
  exports.Set("peerCred", Napi::Function::New<PeerCred>(env, "peerCred"));
  exports.Set("seqpacketSend", Napi::Function::New<SeqpacketSend>(env, "seqpacketSend"));
  exports.Set("seqpacketRecv", Napi::Function::New<SeqpacketRecv>(env, "seqpacketRecv"));
}

}  // namespace kata_addon
