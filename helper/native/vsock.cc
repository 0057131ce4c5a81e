// AF_VSOCK (and AF_UNIX stream) listen/connect and socketPeer for the addon.
#include "addon.h"

namespace kata_addon {
namespace {

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

}  // namespace

void RegisterVsock(Napi::Env env, Napi::Object exports) {
  exports.Set("vsockListen", Napi::Function::New<VsockListen>(env, "vsockListen"));
  exports.Set("vsockConnect", Napi::Function::New<VsockConnect>(env, "vsockConnect"));
  exports.Set("unixStreamListen", Napi::Function::New<UnixStreamListen>(env, "unixStreamListen"));
  exports.Set("socketPeer", Napi::Function::New<SocketPeer>(env, "socketPeer"));
}

}  // namespace kata_addon
