// Poller for the addon: a libuv poll watcher so that nothing blocks the event loop.
#include "addon.h"

namespace kata_addon {
namespace {

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

}  // namespace

void RegisterPoller(Napi::Env env, Napi::Object exports) {

  exports.Set("Poller", Poller::Define(env));
}

}  // namespace kata_addon
