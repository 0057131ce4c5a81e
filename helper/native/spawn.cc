// Processes for the addon: spawn (clone3 into a cgroup / CLONE_VM|CLONE_VFORK + execve, no
// JavaScript in the child), sealedCopy (sealed memfd for execFd), pidfds, kill, reap, subreaper.

#include "addon.h"

namespace kata_addon {
namespace {

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
}  // namespace kata_addon

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

namespace kata_addon {
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

}  // namespace

void RegisterSpawn(Napi::Env env, Napi::Object exports) {
  exports.Set("spawn", Napi::Function::New<Spawn>(env, "spawn"));
  exports.Set("pidfdOpen", Napi::Function::New<PidfdOpen>(env, "pidfdOpen"));
  exports.Set("sealedCopy", Napi::Function::New<SealedCopy>(env, "sealedCopy"));
  exports.Set("pidfdSendSignal", Napi::Function::New<PidfdSendSignal>(env, "pidfdSendSignal"));
  exports.Set("kill", Napi::Function::New<Kill>(env, "kill"));
  exports.Set("reap", Napi::Function::New<Reap>(env, "reap"));
  exports.Set("setChildSubreaper", Napi::Function::New<SetChildSubreaper>(env, "setChildSubreaper"));
}

}  // namespace kata_addon
