// rtnetlink through libnl-route-3 for the helper's network ops (helper/ops/network.ts).
//
// Every function takes the path of a network namespace file as its first argument ("" = the
// helper's own): a NETLINK_ROUTE socket is opened with the calling thread switched into that
// namespace (setns), and the thread is switched back at once. A netlink socket stays bound to
// the namespace it was created in, so the rest of the call works on the target without the
// thread staying there. Everything is synchronous (a netlink round trip is microseconds).
//
// Errors: Error objects with code (errno name), errno and syscall ("netlink <op>"), as addon.cc
// does for system calls; argument errors are TypeError. Addresses cross the boundary as text
// (inet_ntop/inet_pton, MAC "aa:bb:cc:dd:ee:ff" lower case).

#include "netlink.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <netlink/addr.h>
#include <netlink/cache.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/neighbour.h>
#include <netlink/route/route.h>

namespace kata {
namespace {

std::string ErrName(int err) {
  const char* name = strerrorname_np(err);
  return name != nullptr ? name : "ERRNO" + std::to_string(err);
}

Napi::Error SysError(Napi::Env env, int err, const std::string& what) {
  const char* desc = strerrordesc_np(err);
  Napi::Error e = Napi::Error::New(env, what + ": " + (desc ? desc : "error " + std::to_string(err)));
  e.Value().Set("code", ErrName(err));
  e.Value().Set("errno", err);
  e.Value().Set("syscall", what);
  return e;
}

// libnl folds kernel errnos into NLE_* codes; map the ones callers distinguish back.
int NlToErrno(int nlerr) {
  switch (nlerr < 0 ? -nlerr : nlerr) {
    case NLE_EXIST: return EEXIST;
    case NLE_OBJ_NOTFOUND: return ENOENT;
    case NLE_NOADDR: return EADDRNOTAVAIL;
    case NLE_NODEV: return ENODEV;
    case NLE_INVAL: return EINVAL;
    case NLE_PERM: return EPERM;
    case NLE_NOACCESS: return EACCES;
    case NLE_BUSY: return EBUSY;
    case NLE_RANGE: return ERANGE;
    case NLE_MSGSIZE: return EMSGSIZE;
    case NLE_AF_NOSUPPORT: return EAFNOSUPPORT;
    case NLE_OPNOTSUPP: return EOPNOTSUPP;
    case NLE_NOMEM: return ENOMEM;
    case NLE_AGAIN: return EAGAIN;
    case NLE_AF_MISMATCH: return EAFNOSUPPORT;
    default: return EIO;
  }
}

[[noreturn]] void ThrowNl(Napi::Env env, int nlerr, const std::string& op, const std::string& detail) {
  int err = NlToErrno(nlerr);
  std::string msg = "netlink " + op + ": " + nl_geterror(nlerr < 0 ? nlerr : -nlerr);
  if (!detail.empty()) msg += " (" + detail + ")";
  Napi::Error e = Napi::Error::New(env, msg);
  e.Value().Set("code", ErrName(err));
  e.Value().Set("errno", err);
  e.Value().Set("syscall", "netlink " + op);
  throw e;
}

// A NETLINK_ROUTE socket bound to the network namespace at `path` ("" = the caller's).
class NsSocket {
 public:
  NsSocket(Napi::Env env, const std::string& path) {
    sk_ = nl_socket_alloc();
    if (sk_ == nullptr) throw SysError(env, ENOMEM, "nl_socket_alloc");
    int self = -1;
    if (!path.empty()) {
      self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
      if (self < 0) Fail(env, errno, "open /proc/thread-self/ns/net");
      int target = open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (target < 0) {
        int e = errno;
        close(self);
        Fail(env, e, "open " + path);
      }
      int rc = setns(target, CLONE_NEWNET);
      int e = errno;
      close(target);
      if (rc < 0) {
        close(self);
        Fail(env, e, "setns " + path);
      }
    }
    int rc = nl_connect(sk_, NETLINK_ROUTE);
    if (self >= 0) {
      // Never leave the thread in the target namespace: that would be the event loop's thread.
      if (setns(self, CLONE_NEWNET) < 0) abort();
      close(self);
    }
    if (rc < 0) {
      nl_socket_free(sk_);
      sk_ = nullptr;
      ThrowNl(env, rc, "connect", path);
    }
  }
  ~NsSocket() {
    if (sk_ != nullptr) nl_socket_free(sk_);
  }
  NsSocket(const NsSocket&) = delete;
  NsSocket& operator=(const NsSocket&) = delete;
  nl_sock* get() const { return sk_; }

 private:
  [[noreturn]] void Fail(Napi::Env env, int err, const std::string& what) {
    nl_socket_free(sk_);
    sk_ = nullptr;
    throw SysError(env, err, what);
  }
  nl_sock* sk_ = nullptr;
};

// Owning wrappers for libnl objects.
struct CacheGuard {
  nl_cache* c = nullptr;
  ~CacheGuard() {
    if (c) nl_cache_free(c);
  }
};
struct AddrGuard {
  nl_addr* a = nullptr;
  ~AddrGuard() {
    if (a) nl_addr_put(a);
  }
};
template <typename T, void (*Put)(T*)>
struct ObjGuard {
  T* o = nullptr;
  ~ObjGuard() {
    if (o) Put(o);
  }
};

std::string StrArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsString()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

Napi::Object ObjArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsObject()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be an object");
  return info[i].As<Napi::Object>();
}

bool Has(const Napi::Object& o, const char* key) {
  return o.Has(key) && !o.Get(key).IsUndefined() && !o.Get(key).IsNull();
}

int64_t IntProp(const Napi::Object& o, const char* key, int64_t min, int64_t max) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string(key) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d != static_cast<double>(static_cast<int64_t>(d)) || d < static_cast<double>(min) || d > static_cast<double>(max)) {
    throw Napi::TypeError::New(o.Env(), std::string(key) + " out of range");
  }
  return static_cast<int64_t>(d);
}

std::string StrProp(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsString()) throw Napi::TypeError::New(o.Env(), std::string(key) + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

// An IPv4/IPv6 address (text) with a prefix length; owned by the caller.
nl_addr* ParseIp(Napi::Env env, const std::string& text, int prefix, const char* what) {
  unsigned char buf[16];
  int family = text.find(':') != std::string::npos ? AF_INET6 : AF_INET;
  if (inet_pton(family, text.c_str(), buf) != 1) throw Napi::TypeError::New(env, std::string(what) + ": invalid IP address " + text);
  int len = family == AF_INET ? 4 : 16;
  if (prefix < 0 || prefix > len * 8) throw Napi::TypeError::New(env, std::string(what) + ": invalid prefix length");
  nl_addr* a = nl_addr_build(family, buf, len);
  if (a == nullptr) throw SysError(env, ENOMEM, "nl_addr_build");
  nl_addr_set_prefixlen(a, prefix);
  return a;
}

nl_addr* ParseMac(Napi::Env env, const std::string& text, const char* what) {
  unsigned int b[6];
  char tail;
  if (text.size() != 17 ||
      sscanf(text.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &tail) != 6) {
    throw Napi::TypeError::New(env, std::string(what) + ": invalid MAC address " + text);
  }
  unsigned char bytes[6];
  for (int i = 0; i < 6; i++) bytes[i] = static_cast<unsigned char>(b[i]);
  nl_addr* a = nl_addr_build(AF_LLC, bytes, 6);
  if (a == nullptr) throw SysError(env, ENOMEM, "nl_addr_build");
  return a;
}

// Text of an address: IPv4/IPv6 via inet_ntop, anything else as lower-case hex octets with ":".
std::string AddrText(nl_addr* a) {
  if (a == nullptr) return "";
  const unsigned char* bin = static_cast<const unsigned char*>(nl_addr_get_binary_addr(a));
  unsigned int len = nl_addr_get_len(a);
  int family = nl_addr_get_family(a);
  char out[INET6_ADDRSTRLEN];
  if ((family == AF_INET && len == 4) || (family == AF_INET6 && len == 16)) {
    if (inet_ntop(family, bin, out, sizeof out) == nullptr) return "";
    return out;
  }
  std::string s;
  for (unsigned int i = 0; i < len; i++) {
    char h[4];
    snprintf(h, sizeof h, i ? ":%02x" : "%02x", bin[i]);
    s += h;
  }
  return s;
}

int FamilyNumber(int af) { return af == AF_INET6 ? 6 : af == AF_INET ? 4 : 0; }

// ---------------------------------------------------------------------------------------------
// Dumps

Napi::Value NetLinks(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  NsSocket sk(env, StrArg(info, 0, "netns"));
  CacheGuard cache;
  int rc = rtnl_link_alloc_cache(sk.get(), AF_UNSPEC, &cache.c);
  if (rc < 0) ThrowNl(env, rc, "dump links", "");
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  for (nl_object* o = nl_cache_get_first(cache.c); o != nullptr; o = nl_cache_get_next(o)) {
    rtnl_link* l = reinterpret_cast<rtnl_link*>(o);
    Napi::Object r = Napi::Object::New(env);
    r.Set("index", rtnl_link_get_ifindex(l));
    const char* name = rtnl_link_get_name(l);
    r.Set("name", name ? name : "");
    r.Set("mtu", rtnl_link_get_mtu(l));
    r.Set("flags", rtnl_link_get_flags(l));
    r.Set("hwAddr", AddrText(rtnl_link_get_addr(l)));
    const char* kind = rtnl_link_get_type(l);
    r.Set("type", kind ? kind : "");
    r.Set("master", rtnl_link_get_master(l));
    Napi::Object st = Napi::Object::New(env);
    st.Set("rxBytes", static_cast<double>(rtnl_link_get_stat(l, RTNL_LINK_RX_BYTES)));
    st.Set("rxPackets", static_cast<double>(rtnl_link_get_stat(l, RTNL_LINK_RX_PACKETS)));
    st.Set("rxErrors", static_cast<double>(rtnl_link_get_stat(l, RTNL_LINK_RX_ERRORS)));
    st.Set("rxDropped", static_cast<double>(rtnl_link_get_stat(l, RTNL_LINK_RX_DROPPED)));
    st.Set("txBytes", static_cast<double>(rtnl_link_get_stat(l, RTNL_LINK_TX_BYTES)));
    st.Set("txPackets", static_cast<double>(rtnl_link_get_stat(l, RTNL_LINK_TX_PACKETS)));
    st.Set("txErrors", static_cast<double>(rtnl_link_get_stat(l, RTNL_LINK_TX_ERRORS)));
    st.Set("txDropped", static_cast<double>(rtnl_link_get_stat(l, RTNL_LINK_TX_DROPPED)));
    r.Set("stats", st);
    out.Set(n++, r);
  }
  return out;
}

Napi::Value NetAddrs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  NsSocket sk(env, StrArg(info, 0, "netns"));
  CacheGuard cache;
  int rc = rtnl_addr_alloc_cache(sk.get(), &cache.c);
  if (rc < 0) ThrowNl(env, rc, "dump addresses", "");
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  for (nl_object* o = nl_cache_get_first(cache.c); o != nullptr; o = nl_cache_get_next(o)) {
    rtnl_addr* a = reinterpret_cast<rtnl_addr*>(o);
    int fam = rtnl_addr_get_family(a);
    if (fam != AF_INET && fam != AF_INET6) continue;
    Napi::Object r = Napi::Object::New(env);
    r.Set("index", rtnl_addr_get_ifindex(a));
    r.Set("family", FamilyNumber(fam));
    r.Set("address", AddrText(rtnl_addr_get_local(a)));
    r.Set("prefixLen", rtnl_addr_get_prefixlen(a));
    r.Set("scope", rtnl_addr_get_scope(a));
    r.Set("flags", rtnl_addr_get_flags(a));
    out.Set(n++, r);
  }
  return out;
}

Napi::Value NetRoutes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  NsSocket sk(env, StrArg(info, 0, "netns"));
  CacheGuard cache;
  int rc = rtnl_route_alloc_cache(sk.get(), AF_UNSPEC, 0, &cache.c);
  if (rc < 0) ThrowNl(env, rc, "dump routes", "");
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  for (nl_object* o = nl_cache_get_first(cache.c); o != nullptr; o = nl_cache_get_next(o)) {
    rtnl_route* rt = reinterpret_cast<rtnl_route*>(o);
    int fam = rtnl_route_get_family(rt);
    if (fam != AF_INET && fam != AF_INET6) continue;
    Napi::Object r = Napi::Object::New(env);
    r.Set("family", FamilyNumber(fam));
    r.Set("table", rtnl_route_get_table(rt));
    nl_addr* dst = rtnl_route_get_dst(rt);
    r.Set("dst", dst ? AddrText(dst) : "");
    r.Set("dstLen", dst ? nl_addr_get_prefixlen(dst) : 0);
    nl_addr* src = rtnl_route_get_src(rt);
    r.Set("src", src ? AddrText(src) : "");
    r.Set("srcLen", src ? nl_addr_get_prefixlen(src) : 0);
    r.Set("prefsrc", AddrText(rtnl_route_get_pref_src(rt)));
    r.Set("scope", rtnl_route_get_scope(rt));
    r.Set("protocol", rtnl_route_get_protocol(rt));
    r.Set("type", rtnl_route_get_type(rt));
    r.Set("priority", rtnl_route_get_priority(rt));
    r.Set("flags", rtnl_route_get_flags(rt));
    r.Set("tos", rtnl_route_get_tos(rt));
    int oif = 0;
    std::string gw;
    if (rtnl_route_get_nnexthops(rt) > 0) {
      rtnl_nexthop* nh = rtnl_route_nexthop_n(rt, 0);
      oif = rtnl_route_nh_get_ifindex(nh);
      gw = AddrText(rtnl_route_nh_get_gateway(nh));
    }
    r.Set("oif", oif);
    r.Set("gateway", gw);
    out.Set(n++, r);
  }
  return out;
}

Napi::Value NetNeighbors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  NsSocket sk(env, StrArg(info, 0, "netns"));
  CacheGuard cache;
  int rc = rtnl_neigh_alloc_cache(sk.get(), &cache.c);
  if (rc < 0) ThrowNl(env, rc, "dump neighbours", "");
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  for (nl_object* o = nl_cache_get_first(cache.c); o != nullptr; o = nl_cache_get_next(o)) {
    rtnl_neigh* ne = reinterpret_cast<rtnl_neigh*>(o);
    int fam = rtnl_neigh_get_family(ne);
    if (fam != AF_INET && fam != AF_INET6) continue;
    Napi::Object r = Napi::Object::New(env);
    r.Set("index", rtnl_neigh_get_ifindex(ne));
    r.Set("family", FamilyNumber(fam));
    r.Set("address", AddrText(rtnl_neigh_get_dst(ne)));
    r.Set("lladdr", AddrText(rtnl_neigh_get_lladdr(ne)));
    r.Set("state", rtnl_neigh_get_state(ne));
    r.Set("flags", static_cast<double>(rtnl_neigh_get_flags(ne)));
    out.Set(n++, r);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Changes

// netLinkSet(netns, index, {name?, mtu?, up?, noarp?, promisc?, allmulti?, hwAddr?})
Napi::Value NetLinkSet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string ns = StrArg(info, 0, "netns");
  if (info.Length() < 2 || !info[1].IsNumber()) throw Napi::TypeError::New(env, "index must be a number");
  int index = info[1].As<Napi::Number>().Int32Value();
  Napi::Object opts = ObjArg(info, 2, "options");
  NsSocket sk(env, ns);
  ObjGuard<rtnl_link, rtnl_link_put> orig;
  int rc = rtnl_link_get_kernel(sk.get(), index, nullptr, &orig.o);
  if (rc < 0) ThrowNl(env, rc, "get link", "index " + std::to_string(index));
  ObjGuard<rtnl_link, rtnl_link_put> change;
  change.o = rtnl_link_alloc();
  if (change.o == nullptr) throw SysError(env, ENOMEM, "rtnl_link_alloc");
  if (Has(opts, "name")) {
    std::string name = StrProp(opts, "name");
    if (name.empty() || name.size() >= IFNAMSIZ) throw Napi::TypeError::New(env, "name: invalid interface name");
    rtnl_link_set_name(change.o, name.c_str());
  }
  if (Has(opts, "mtu")) rtnl_link_set_mtu(change.o, static_cast<unsigned int>(IntProp(opts, "mtu", 0, 0x7fffffff)));
  if (Has(opts, "hwAddr")) {
    AddrGuard mac;
    mac.a = ParseMac(env, StrProp(opts, "hwAddr"), "hwAddr");
    rtnl_link_set_addr(change.o, mac.a);
  }
  struct {
    const char* key;
    unsigned int flag;
  } flags[] = {{"up", IFF_UP}, {"noarp", IFF_NOARP}, {"promisc", IFF_PROMISC}, {"allmulti", IFF_ALLMULTI}};
  for (const auto& f : flags) {
    if (!Has(opts, f.key)) continue;
    if (opts.Get(f.key).ToBoolean().Value()) rtnl_link_set_flags(change.o, f.flag);
    else rtnl_link_unset_flags(change.o, f.flag);
  }
  rc = rtnl_link_change(sk.get(), orig.o, change.o, 0);
  if (rc < 0) ThrowNl(env, rc, "set link", "index " + std::to_string(index));
  return env.Undefined();
}

bool IsAdd(const Napi::CallbackInfo& info) {
  std::string action = StrArg(info, 1, "action");
  if (action != "add" && action != "del") throw Napi::TypeError::New(info.Env(), "action must be \"add\" or \"del\"");
  return action == "add";
}

// netAddr(netns, "add"|"del", {index, address, prefixLen})
Napi::Value NetAddr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string ns = StrArg(info, 0, "netns");
  bool add = IsAdd(info);
  Napi::Object o = ObjArg(info, 2, "address");
  int index = static_cast<int>(IntProp(o, "index", 1, 0x7fffffff));
  std::string text = StrProp(o, "address");
  AddrGuard local;
  local.a = ParseIp(env, text, static_cast<int>(IntProp(o, "prefixLen", 0, 128)), "address");
  NsSocket sk(env, ns);
  ObjGuard<rtnl_addr, rtnl_addr_put> a;
  a.o = rtnl_addr_alloc();
  if (a.o == nullptr) throw SysError(env, ENOMEM, "rtnl_addr_alloc");
  rtnl_addr_set_ifindex(a.o, index);
  rtnl_addr_set_family(a.o, nl_addr_get_family(local.a));
  int rc = rtnl_addr_set_local(a.o, local.a);
  if (rc >= 0) {
    rtnl_addr_set_prefixlen(a.o, nl_addr_get_prefixlen(local.a));
    rc = add ? rtnl_addr_add(sk.get(), a.o, 0) : rtnl_addr_delete(sk.get(), a.o, 0);
  }
  if (rc < 0) ThrowNl(env, rc, add ? "add address" : "delete address", text + "/" + std::to_string(nl_addr_get_prefixlen(local.a)));
  return env.Undefined();
}

// netRoute(netns, "add"|"del", {family, table, protocol, scope, type, dst, dstLen, src, srcLen,
//                               prefsrc, gateway, oif, priority, tos})
Napi::Value NetRoute(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string ns = StrArg(info, 0, "netns");
  bool add = IsAdd(info);
  Napi::Object o = ObjArg(info, 2, "route");
  int fam = IntProp(o, "family", 4, 6) == 6 ? AF_INET6 : AF_INET;
  ObjGuard<rtnl_route, rtnl_route_put> rt;
  rt.o = rtnl_route_alloc();
  if (rt.o == nullptr) throw SysError(env, ENOMEM, "rtnl_route_alloc");
  rtnl_route_set_family(rt.o, static_cast<uint8_t>(fam));
  rtnl_route_set_table(rt.o, static_cast<uint32_t>(IntProp(o, "table", 0, 0xffffffffLL)));
  rtnl_route_set_protocol(rt.o, static_cast<uint8_t>(IntProp(o, "protocol", 0, 255)));
  rtnl_route_set_scope(rt.o, static_cast<uint8_t>(IntProp(o, "scope", 0, 255)));
  rtnl_route_set_type(rt.o, static_cast<uint8_t>(IntProp(o, "type", 0, 255)));
  if (Has(o, "tos")) rtnl_route_set_tos(rt.o, static_cast<uint8_t>(IntProp(o, "tos", 0, 255)));
  if (Has(o, "priority")) rtnl_route_set_priority(rt.o, static_cast<uint32_t>(IntProp(o, "priority", 0, 0xffffffffLL)));
  std::string dstText = Has(o, "dst") ? StrProp(o, "dst") : std::string();
  int dstLen = Has(o, "dstLen") ? static_cast<int>(IntProp(o, "dstLen", 0, 128)) : 0;
  AddrGuard dst;
  if (dstText.empty()) {
    static const unsigned char zero[16] = {0};
    dst.a = nl_addr_build(fam, zero, fam == AF_INET ? 4 : 16);
    if (dst.a == nullptr) throw SysError(env, ENOMEM, "nl_addr_build");
    nl_addr_set_prefixlen(dst.a, 0);
  } else {
    dst.a = ParseIp(env, dstText, dstLen, "dst");
  }
  int rc = rtnl_route_set_dst(rt.o, dst.a);
  if (rc >= 0 && Has(o, "src") && !StrProp(o, "src").empty()) {
    AddrGuard src;
    src.a = ParseIp(env, StrProp(o, "src"), static_cast<int>(IntProp(o, "srcLen", 0, 128)), "src");
    rc = rtnl_route_set_src(rt.o, src.a);
  }
  if (rc >= 0 && Has(o, "prefsrc") && !StrProp(o, "prefsrc").empty()) {
    AddrGuard ps;
    ps.a = ParseIp(env, StrProp(o, "prefsrc"), fam == AF_INET ? 32 : 128, "prefsrc");
    rc = rtnl_route_set_pref_src(rt.o, ps.a);
  }
  if (rc < 0) ThrowNl(env, rc, "build route", dstText);
  rtnl_nexthop* nh = rtnl_route_nh_alloc();
  if (nh == nullptr) throw SysError(env, ENOMEM, "rtnl_route_nh_alloc");
  int oif = Has(o, "oif") ? static_cast<int>(IntProp(o, "oif", 0, 0x7fffffff)) : 0;
  if (oif > 0) rtnl_route_nh_set_ifindex(nh, oif);
  std::string gwText = Has(o, "gateway") ? StrProp(o, "gateway") : std::string();
  if (!gwText.empty()) {
    AddrGuard gw;
    try {
      gw.a = ParseIp(env, gwText, fam == AF_INET ? 32 : 128, "gateway");
    } catch (...) {
      rtnl_route_nh_free(nh);
      throw;
    }
    rtnl_route_nh_set_gateway(nh, gw.a);
  }
  rtnl_route_add_nexthop(rt.o, nh);  // the route owns nh from here
  NsSocket sk(env, ns);
  rc = add ? rtnl_route_add(sk.get(), rt.o, NLM_F_EXCL) : rtnl_route_delete(sk.get(), rt.o, 0);
  if (rc < 0) {
    std::string what = (dstText.empty() ? std::string("default") : dstText + "/" + std::to_string(dstLen));
    if (!gwText.empty()) what += " via " + gwText;
    ThrowNl(env, rc, add ? "add route" : "delete route", what);
  }
  return env.Undefined();
}

// netNeigh(netns, "add"|"del", {index, address, lladdr, state, flags})
Napi::Value NetNeigh(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string ns = StrArg(info, 0, "netns");
  bool add = IsAdd(info);
  Napi::Object o = ObjArg(info, 2, "neighbour");
  int index = static_cast<int>(IntProp(o, "index", 1, 0x7fffffff));
  std::string text = StrProp(o, "address");
  AddrGuard dst;
  dst.a = ParseIp(env, text, text.find(':') != std::string::npos ? 128 : 32, "address");
  ObjGuard<rtnl_neigh, rtnl_neigh_put> ne;
  ne.o = rtnl_neigh_alloc();
  if (ne.o == nullptr) throw SysError(env, ENOMEM, "rtnl_neigh_alloc");
  rtnl_neigh_set_ifindex(ne.o, index);
  rtnl_neigh_set_family(ne.o, nl_addr_get_family(dst.a));
  int rc = rtnl_neigh_set_dst(ne.o, dst.a);
  if (rc < 0) ThrowNl(env, rc, "build neighbour", text);
  if (Has(o, "lladdr") && !StrProp(o, "lladdr").empty()) {
    AddrGuard ll;
    ll.a = ParseMac(env, StrProp(o, "lladdr"), "lladdr");
    rtnl_neigh_set_lladdr(ne.o, ll.a);
  }
  if (add) {
    rtnl_neigh_set_state(ne.o, static_cast<int>(IntProp(o, "state", 0, 0xffff)));
    unsigned int fl = static_cast<unsigned int>(IntProp(o, "flags", 0, 0xff));
    if (fl != 0) rtnl_neigh_set_flags(ne.o, fl);
  }
  NsSocket sk(env, ns);
  rc = add ? rtnl_neigh_add(sk.get(), ne.o, NLM_F_CREATE | NLM_F_REPLACE) : rtnl_neigh_delete(sk.get(), ne.o, 0);
  if (rc < 0) ThrowNl(env, rc, add ? "add neighbour" : "delete neighbour", text);
  return env.Undefined();
}

// ---------------------------------------------------------------------------------------------
// Namespace switch around a spawn

// netnsEnter(path) -> fd of the thread's previous network namespace (give it to netnsLeave).
Napi::Value NetnsEnter(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = StrArg(info, 0, "path");
  int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (self < 0) throw SysError(env, errno, "open /proc/thread-self/ns/net");
  int target = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (target < 0) {
    int e = errno;
    close(self);
    throw SysError(env, e, "open " + path);
  }
  int rc = setns(target, CLONE_NEWNET);
  int e = errno;
  close(target);
  if (rc < 0) {
    close(self);
    throw SysError(env, e, "setns " + path);
  }
  return Napi::Number::New(env, self);
}

// netnsLeave(fd): back to the namespace netnsEnter saved; closes fd. Aborts if that fails (the
// event loop's thread must never stay in a foreign namespace).
Napi::Value NetnsLeave(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "fd must be a number");
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (setns(fd, CLONE_NEWNET) < 0) abort();
  close(fd);
  return env.Undefined();
}

}  // namespace

void RegisterNetlink(Napi::Env env, Napi::Object exports) {
  exports.Set("netLinks", Napi::Function::New<NetLinks>(env, "netLinks"));
  exports.Set("netAddrs", Napi::Function::New<NetAddrs>(env, "netAddrs"));
  exports.Set("netRoutes", Napi::Function::New<NetRoutes>(env, "netRoutes"));
  exports.Set("netNeighbors", Napi::Function::New<NetNeighbors>(env, "netNeighbors"));
  exports.Set("netLinkSet", Napi::Function::New<NetLinkSet>(env, "netLinkSet"));
  exports.Set("netAddr", Napi::Function::New<NetAddr>(env, "netAddr"));
  exports.Set("netRoute", Napi::Function::New<NetRoute>(env, "netRoute"));
  exports.Set("netNeigh", Napi::Function::New<NetNeigh>(env, "netNeigh"));
  exports.Set("netnsEnter", Napi::Function::New<NetnsEnter>(env, "netnsEnter"));
  exports.Set("netnsLeave", Napi::Function::New<NetnsLeave>(env, "netnsLeave"));
}

}  // namespace kata
