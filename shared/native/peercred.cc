// realmnet_peercred: who is at the other end of a local (unix) socket, as the kernel saw it.
//
// 1. peerCredentials(fd): getsockopt(SO_PEERCRED) gives the pid, uid and gid of the peer: for an
//    accepted socket the process that connected, for a connected one the process that called listen().
//    The kernel took them at connect()/listen() time, so the peer cannot lie about them. SO_PEERGROUPS
//    (Linux >= 4.13) adds the peer's supplementary groups; an older kernel gives none.
// 2. groupId(name): getgrnam_r, so a group from NSS (LDAP, sssd) resolves like one in /etc/group.
//    null for an unknown name.
// A failure throws an Error carrying errno and the step; shared/peercred.ts maps it to a SystemError.
#include <napi.h>

#include "shared/native/throw.h"

#include <grp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

namespace {

using realmnet::ThrowErrno;
using realmnet::ThrowType;

// Supplementary groups of the peer, or false with errno set. ENOPROTOOPT (old kernel) is not an error.
bool PeerGroups(int fd, std::vector<gid_t>* out) {
  std::vector<gid_t> groups(64);
  for (int attempt = 0; attempt < 2; attempt++) {
    socklen_t len = socklen_t(groups.size() * sizeof(gid_t));
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) == 0) {
      groups.resize(len / sizeof(gid_t));
      *out = std::move(groups);
      return true;
    }
    if (errno == ENOPROTOOPT) return true;
    // ERANGE: len now says how much room the list needs (NGROUPS_MAX is 65536).
    if (errno != ERANGE) return false;
    groups.resize(len / sizeof(gid_t) + 1);
  }
  errno = ERANGE;
  return false;
}

Napi::Value PeerCredentials(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) return ThrowType(env, "peerCredentials(fd)");
  int fd = info[0].As<Napi::Number>().Int32Value();
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return ThrowErrno(env, errno, "getsockopt SO_PEERCRED");
  std::vector<gid_t> groups;
  if (!PeerGroups(fd, &groups)) return ThrowErrno(env, errno, "getsockopt SO_PEERGROUPS");
  Napi::Object out = Napi::Object::New(env);
  out.Set("pid", Napi::Number::New(env, cred.pid));
  out.Set("uid", Napi::Number::New(env, cred.uid));
  out.Set("gid", Napi::Number::New(env, cred.gid));
  Napi::Array list = Napi::Array::New(env, groups.size());
  for (size_t i = 0; i < groups.size(); i++) list[uint32_t(i)] = Napi::Number::New(env, groups[i]);
  out.Set("groups", list);
  return out;
}

Napi::Value GroupId(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) return ThrowType(env, "groupId(name)");
  std::string name = info[0].As<Napi::String>().Utf8Value();
  long hint = sysconf(_SC_GETGR_R_SIZE_MAX);
  std::vector<char> buf(hint > 0 ? size_t(hint) : 1024);
  struct group g;
  struct group* found = nullptr;
  int err;
  // ERANGE: a group with many members; grow until it fits (bounded: 1 MB is far past any real group).
  while ((err = getgrnam_r(name.c_str(), &g, buf.data(), buf.size(), &found)) == ERANGE && buf.size() < (1u << 20)) {
    buf.resize(buf.size() * 2);
  }
  if (err != 0) return ThrowErrno(env, err, "getgrnam_r");
  if (found == nullptr) return env.Null();
  return Napi::Number::New(env, found->gr_gid);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("peerCredentials", Napi::Function::New(env, PeerCredentials, "peerCredentials"));
  exports.Set("groupId", Napi::Function::New(env, GroupId, "groupId"));
  return exports;
}

}  // namespace

NODE_API_MODULE(realmnet_peercred, Init)
