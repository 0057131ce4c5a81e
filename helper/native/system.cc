// Whole-system calls for the addon: mount/umount2, entropy, realtime clock, swap, power off.
#include "addon.h"

namespace kata_addon {
namespace {

// ---------------------------------------------------------------------------------------------
// Mounts
// ---------------------------------------------------------------------------------------------

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

}  // namespace

void RegisterSystem(Napi::Env env, Napi::Object exports) {
  exports.Set("mount", Napi::Function::New<Mount>(env, "mount"));
  exports.Set("umount2", Napi::Function::New<Umount2>(env, "umount2"));
  exports.Set("addEntropy", Napi::Function::New<AddEntropy>(env, "addEntropy"));
  exports.Set("setRealtime", Napi::Function::New<SetRealtime>(env, "setRealtime"));
  exports.Set("swapon", Napi::Function::New<Swapon>(env, "swapon"));
  exports.Set("swapoff", Napi::Function::New<Swapoff>(env, "swapoff"));
  exports.Set("powerOff", Napi::Function::New<PowerOff>(env, "powerOff"));
}

}  // namespace kata_addon
