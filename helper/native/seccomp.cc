// Seccomp for the addon: seccompCompile, an OCI profile compiled to BPF with libseccomp
// (never loaded here; kata-init loads it).
#include "addon.h"

namespace kata_addon {
namespace {

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

}  // namespace

void RegisterSeccomp(Napi::Env env, Napi::Object exports) {
  exports.Set("seccompCompile", Napi::Function::New<SeccompCompile>(env, "seccompCompile"));
}

}  // namespace kata_addon
