// Ptys for the addon: openpty (master + peer slave), setWinsize.
#include "addon.h"

namespace kata_addon {
namespace {

// ---------------------------------------------------------------------------------------------
// Ptys
// ---------------------------------------------------------------------------------------------

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

}  // namespace

void RegisterPty(Napi::Env env, Napi::Object exports) {
  exports.Set("openpty", Napi::Function::New<OpenPty>(env, "openpty"));
  exports.Set("setWinsize", Napi::Function::New<SetWinsize>(env, "setWinsize"));
}

}  // namespace kata_addon
