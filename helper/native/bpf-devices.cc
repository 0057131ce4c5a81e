// cgroup v2 device controller: a BPF_PROG_TYPE_CGROUP_DEVICE program generated from a
// container's device rules (OCI config-linux.md#allowed-device-list), loaded with
// bpf(BPF_PROG_LOAD) and attached to the container's cgroup2 directory with BPF_PROG_ATTACH
// (BPF_F_ALLOW_MULTI). The same job as runc's libcontainer/cgroups/devices/ebpf and youki's
// devices program; the generator is our own (see Generate below). Contract: the bpfDevice*
// functions of `NativeAddon` in shared/native.ts.
#include "bpf-devices.h"
#include "errno-error.h"

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include <fcntl.h>
#include <linux/bpf.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace kata {
namespace {

// Same bound as shared/cgroup.ts validateCgroupResources (1024 device rules).
constexpr uint32_t kMaxRules = 1024;
constexpr int64_t kMaxDeviceNumber = 0xfffff;

using kata_native::ThrowErrno;

[[noreturn]] void ThrowType(Napi::Env env, const std::string& message) {
  throw Napi::TypeError::New(env, message);
}

struct Rule {
  bool allow;
  uint32_t type;    // BPF_DEVCG_DEV_* bits; 0 = any type ("a")
  int64_t major;    // -1 = any
  int64_t minor;    // -1 = any
  uint32_t access;  // BPF_DEVCG_ACC_* bits
};

int64_t DeviceNumber(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsNumber()) ThrowType(env, what + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d != static_cast<double>(static_cast<int64_t>(d)) || d < -1 || d > kMaxDeviceNumber) {
    ThrowType(env, what + " must be -1 (any) or an integer in 0.." + std::to_string(kMaxDeviceNumber));
  }
  return static_cast<int64_t>(d);
}

// rules: [{allow, type "a"|"b"|"c", major, minor, access letters of "rwm"}] (shared/protocol.ts
// CgroupDeviceRule). Throws a TypeError naming rules[i].<field>.
std::vector<Rule> ParseRules(Napi::Env env, const Napi::Value& v) {
  if (!v.IsArray()) ThrowType(env, "rules must be an array");
  Napi::Array arr = v.As<Napi::Array>();
  if (arr.Length() > kMaxRules) ThrowType(env, "rules has more than " + std::to_string(kMaxRules) + " entries");
  std::vector<Rule> out;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    std::string what = "rules[" + std::to_string(i) + "]";
    Napi::Value e = arr.Get(i);
    if (!e.IsObject() || e.IsArray()) ThrowType(env, what + " must be an object");
    Napi::Object o = e.As<Napi::Object>();
    Rule r{};
    Napi::Value allow = o.Get("allow");
    if (!allow.IsBoolean()) ThrowType(env, what + ".allow must be a boolean");
    r.allow = allow.As<Napi::Boolean>().Value();
    Napi::Value type = o.Get("type");
    std::string t = type.IsString() ? type.As<Napi::String>().Utf8Value() : "?";
    if (t == "a") r.type = 0;
    else if (t == "b") r.type = BPF_DEVCG_DEV_BLOCK;
    else if (t == "c") r.type = BPF_DEVCG_DEV_CHAR;
    else ThrowType(env, what + ".type must be \"a\", \"b\" or \"c\"");
    r.major = DeviceNumber(env, o.Get("major"), what + ".major");
    r.minor = DeviceNumber(env, o.Get("minor"), what + ".minor");
    Napi::Value access = o.Get("access");
    if (!access.IsString()) ThrowType(env, what + ".access must be a string");
    for (char c : access.As<Napi::String>().Utf8Value()) {
      if (c == 'r') r.access |= BPF_DEVCG_ACC_READ;
      else if (c == 'w') r.access |= BPF_DEVCG_ACC_WRITE;
      else if (c == 'm') r.access |= BPF_DEVCG_ACC_MKNOD;
      else ThrowType(env, what + ".access must be letters of \"rwm\"");
    }
    out.push_back(r);
  }
  return out;
}

bpf_insn Insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
  bpf_insn i;
  memset(&i, 0, sizeof i);
  i.code = code;
  i.dst_reg = dst & 0xf;
  i.src_reg = src & 0xf;
  i.off = off;
  i.imm = imm;
  return i;
}

// Registers of the generated program.
constexpr uint8_t R0 = 0, R1 = 1, R2 = 2, R3 = 3, R4 = 4, R5 = 5;

// The program. Decision per access bit, the last matching rule wins (as the v1 controller's
// list of exceptions and runc/youki's programs), unmatched bits are denied:
//   r2 = ctx->access_type & 0xffff (device type), r3 = ctx->access_type >> 16 (access bits
//   still undecided), r4 = ctx->major, r5 = ctx->minor;
//   for each rule from the last to the first, when type/major/minor match:
//     allow: r3 &= ~rule.access; if r3 == 0 → return 1 (every asked bit allowed)
//     deny:  if r3 & rule.access → return 0 (a bit not yet allowed is denied)
//   return 0.
// A rule of type "a" matches both types; -1 matches any major/minor.
std::vector<bpf_insn> Generate(const std::vector<Rule>& rules) {
  std::vector<bpf_insn> p;
  p.push_back(Insn(BPF_LDX | BPF_MEM | BPF_W, R2, R1, offsetof(bpf_cgroup_dev_ctx, access_type), 0));
  p.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, R3, R2, 0, 0));
  p.push_back(Insn(BPF_ALU64 | BPF_RSH | BPF_K, R3, 0, 0, 16));
  p.push_back(Insn(BPF_ALU64 | BPF_AND | BPF_K, R2, 0, 0, 0xffff));
  p.push_back(Insn(BPF_LDX | BPF_MEM | BPF_W, R4, R1, offsetof(bpf_cgroup_dev_ctx, major), 0));
  p.push_back(Insn(BPF_LDX | BPF_MEM | BPF_W, R5, R1, offsetof(bpf_cgroup_dev_ctx, minor), 0));
  for (size_t k = rules.size(); k-- > 0;) {
    const Rule& r = rules[k];
    std::vector<bpf_insn> block;
    // jumps to "next rule" are patched once the block's length is known (off = -1 marks them)
    if (r.type != 0) block.push_back(Insn(BPF_JMP | BPF_JNE | BPF_K, R2, 0, -1, static_cast<int32_t>(r.type)));
    if (r.major >= 0) block.push_back(Insn(BPF_JMP | BPF_JNE | BPF_K, R4, 0, -1, static_cast<int32_t>(r.major)));
    if (r.minor >= 0) block.push_back(Insn(BPF_JMP | BPF_JNE | BPF_K, R5, 0, -1, static_cast<int32_t>(r.minor)));
    if (r.allow) {
      block.push_back(Insn(BPF_ALU64 | BPF_AND | BPF_K, R3, 0, 0, static_cast<int32_t>(~r.access)));
      block.push_back(Insn(BPF_JMP | BPF_JNE | BPF_K, R3, 0, -1, 0));
      block.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_K, R0, 0, 0, 1));
    } else {
      block.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, R0, R3, 0, 0));
      block.push_back(Insn(BPF_ALU64 | BPF_AND | BPF_K, R0, 0, 0, static_cast<int32_t>(r.access)));
      block.push_back(Insn(BPF_JMP | BPF_JEQ | BPF_K, R0, 0, -1, 0));
      block.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_K, R0, 0, 0, 0));
    }
    block.push_back(Insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
    for (size_t j = 0; j < block.size(); j++) {
      if (BPF_CLASS(block[j].code) == BPF_JMP && BPF_OP(block[j].code) != BPF_EXIT && block[j].off == -1) {
        block[j].off = static_cast<int16_t>(block.size() - j - 1);
      }
    }
    p.insert(p.end(), block.begin(), block.end());
  }
  p.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_K, R0, 0, 0, 0));
  p.push_back(Insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
  return p;
}

long Bpf(int cmd, bpf_attr* attr) {
  return syscall(SYS_bpf, cmd, attr, sizeof *attr);
}

int FdArg(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsNumber()) ThrowType(env, what + " must be a number");
  int fd = v.As<Napi::Number>().Int32Value();
  if (fd < 0) ThrowType(env, what + " must be a file descriptor");
  return fd;
}

// An O_DIRECTORY fd of a cgroup2 directory (closed by the destructor).
struct CgroupDir {
  int fd;
  CgroupDir(Napi::Env env, const Napi::Value& v) {
    if (!v.IsString()) ThrowType(env, "cgroupDir must be a string");
    std::string dir = v.As<Napi::String>().Utf8Value();
    fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) ThrowErrno(env, errno, "open", dir);
  }
  ~CgroupDir() { close(fd); }
  CgroupDir(const CgroupDir&) = delete;
  CgroupDir& operator=(const CgroupDir&) = delete;
};

// bpfDeviceProgram(rules) → Buffer of struct bpf_insn (8 bytes each, host byte order).
Napi::Value Program(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<bpf_insn> p = Generate(ParseRules(env, info[0]));
  return Napi::Buffer<char>::Copy(env, reinterpret_cast<const char*>(p.data()), p.size() * sizeof(bpf_insn));
}

// bpfDeviceLoad(rules) → program fd (O_CLOEXEC). The verifier's log is the error's detail.
Napi::Value Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<bpf_insn> p = Generate(ParseRules(env, info[0]));
  static const char kLicense[] = "Apache-2.0";
  std::vector<char> log(16384, '\0');
  bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
  attr.insns = reinterpret_cast<uintptr_t>(p.data());
  attr.insn_cnt = static_cast<uint32_t>(p.size());
  attr.license = reinterpret_cast<uintptr_t>(kLicense);
  strncpy(attr.prog_name, "kata_devices", sizeof attr.prog_name - 1);
  long fd = Bpf(BPF_PROG_LOAD, &attr);
  if (fd < 0 && errno == EINVAL) {
    // kernels before 4.15 have no prog_name: retry without it
    memset(attr.prog_name, 0, sizeof attr.prog_name);
    fd = Bpf(BPF_PROG_LOAD, &attr);
  }
  if (fd < 0) {
    int err = errno;
    if (err == EINVAL || err == EACCES) {
      // ask for the verifier's reason
      attr.log_buf = reinterpret_cast<uintptr_t>(log.data());
      attr.log_size = static_cast<uint32_t>(log.size());
      attr.log_level = 1;
      long again = Bpf(BPF_PROG_LOAD, &attr);
      if (again >= 0) close(static_cast<int>(again));
    }
    log.back() = '\0';
    ThrowErrno(env, err, "bpf(BPF_PROG_LOAD)", std::string(log.data()).substr(0, 512));
  }
  return Napi::Number::New(env, static_cast<double>(fd));
}

// Attach (BPF_PROG_ATTACH, with BPF_F_ALLOW_MULTI) or detach (BPF_PROG_DETACH) program info[1]
// as a BPF_CGROUP_DEVICE program of cgroup directory info[0].
Napi::Value AttachOrDetach(const Napi::CallbackInfo& info, bool attach) {
  Napi::Env env = info.Env();
  CgroupDir dir(env, info[0]);
  int prog = FdArg(env, info[1], "progFd");
  bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.target_fd = static_cast<uint32_t>(dir.fd);
  attr.attach_bpf_fd = static_cast<uint32_t>(prog);
  attr.attach_type = BPF_CGROUP_DEVICE;
  if (attach) attr.attach_flags = BPF_F_ALLOW_MULTI;
  if (Bpf(attach ? BPF_PROG_ATTACH : BPF_PROG_DETACH, &attr) < 0) {
    ThrowErrno(env, errno, attach ? "bpf(BPF_PROG_ATTACH)" : "bpf(BPF_PROG_DETACH)", info[0].As<Napi::String>().Utf8Value());
  }
  return env.Undefined();
}

// bpfDeviceAttach(cgroupDir, progFd): BPF_PROG_ATTACH BPF_CGROUP_DEVICE with BPF_F_ALLOW_MULTI.
Napi::Value Attach(const Napi::CallbackInfo& info) {
  return AttachOrDetach(info, true);
}

// bpfDeviceDetach(cgroupDir, progFd): BPF_PROG_DETACH of that program.
Napi::Value Detach(const Napi::CallbackInfo& info) {
  return AttachOrDetach(info, false);
}

// bpfDeviceQuery(cgroupDir) → ids of the BPF_CGROUP_DEVICE programs attached to that cgroup.
Napi::Value Query(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CgroupDir dir(env, info[0]);
  std::vector<uint32_t> ids(64);
  bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.query.target_fd = static_cast<uint32_t>(dir.fd);
  attr.query.attach_type = BPF_CGROUP_DEVICE;
  attr.query.prog_ids = reinterpret_cast<uintptr_t>(ids.data());
  attr.query.prog_cnt = static_cast<uint32_t>(ids.size());
  if (Bpf(BPF_PROG_QUERY, &attr) < 0) ThrowErrno(env, errno, "bpf(BPF_PROG_QUERY)", info[0].As<Napi::String>().Utf8Value());
  uint32_t n = attr.query.prog_cnt < ids.size() ? attr.query.prog_cnt : static_cast<uint32_t>(ids.size());
  Napi::Array out = Napi::Array::New(env, n);
  for (uint32_t i = 0; i < n; i++) out.Set(i, Napi::Number::New(env, ids[i]));
  return out;
}

}  // namespace

void RegisterBpfDevices(Napi::Env env, Napi::Object exports) {
  exports.Set("bpfDeviceProgram", Napi::Function::New<Program>(env, "bpfDeviceProgram"));
  exports.Set("bpfDeviceLoad", Napi::Function::New<Load>(env, "bpfDeviceLoad"));
  exports.Set("bpfDeviceAttach", Napi::Function::New<Attach>(env, "bpfDeviceAttach"));
  exports.Set("bpfDeviceDetach", Napi::Function::New<Detach>(env, "bpfDeviceDetach"));
  exports.Set("bpfDeviceQuery", Napi::Function::New<Query>(env, "bpfDeviceQuery"));
}

}  // namespace kata
