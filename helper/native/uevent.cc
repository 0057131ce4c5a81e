// Kernel uevent socket: open a NETLINK_KOBJECT_UEVENT socket bound to the kernel's multicast
// group 1 and read one message at a time (non-blocking; the caller polls the fd with libuv
// through the addon's Poller). Parsing of the KEY=VALUE records is left to TypeScript.
#include "uevent.h"
#include "errno-error.h"

#include <cerrno>
#include <cstring>
#include <string>

#include <linux/netlink.h>
#include <sys/socket.h>
#include <unistd.h>

namespace kata_uevent {
namespace {

// Largest uevent the kernel sends is 2 KiB (UEVENT_BUFFER_SIZE); keep a margin.
constexpr size_t kMaxUevent = 8192;

[[noreturn]] void Throw(Napi::Env env, int err, const char* syscall) { kata_native::ThrowErrno(env, err, syscall); }

// ueventOpen(): the fd (CLOEXEC, non-blocking). Throws the errno error.
Napi::Value Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_KOBJECT_UEVENT);
  if (fd < 0) Throw(env, errno, "socket(NETLINK_KOBJECT_UEVENT)");
  int size = 1 << 20;  // bursts of hotplug events must not overflow the queue
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0) {
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  }
  struct sockaddr_nl addr;
  memset(&addr, 0, sizeof addr);
  addr.nl_family = AF_NETLINK;
  addr.nl_groups = 1;  // the kernel's uevent group (udev re-broadcasts on group 2)
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&addr), sizeof addr) < 0) {
    int err = errno;
    close(fd);
    Throw(env, err, "bind(NETLINK_KOBJECT_UEVENT)");
  }
  return Napi::Number::New(env, fd);
}

// ueventRecv(fd): {data: Buffer, kernel: boolean} for one message, null when none is queued.
// `kernel` is false for a message whose sender port is not 0 (not from the kernel).
Napi::Value Recv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) throw Napi::TypeError::New(env, "ueventRecv: fd must be a number");
  int fd = info[0].As<Napi::Number>().Int32Value();
  char buf[kMaxUevent];
  struct sockaddr_nl from;
  struct iovec iov = {buf, sizeof buf};
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_name = &from;
  msg.msg_namelen = sizeof from;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  ssize_t n;
  do {
    n = recvmsg(fd, &msg, MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Null();
    Throw(env, errno, "recvmsg(uevent)");
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("data", Napi::Buffer<char>::Copy(env, buf, static_cast<size_t>(n)));
  out.Set("kernel", Napi::Boolean::New(env, from.nl_pid == 0));
  out.Set("truncated", Napi::Boolean::New(env, (msg.msg_flags & MSG_TRUNC) != 0));
  return out;
}

}  // namespace

void Register(Napi::Env env, Napi::Object exports) {
  exports.Set("ueventOpen", Napi::Function::New<Open>(env, "ueventOpen"));
  exports.Set("ueventRecv", Napi::Function::New<Recv>(env, "ueventRecv"));
}

}  // namespace kata_uevent
