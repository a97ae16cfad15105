// realmnet_notify: one datagram to a unix socket, for systemd's notification protocol (sd_notify).
//
// Node has no unix datagram sockets, and Type=notify services tell systemd "READY=1", "WATCHDOG=1",
// "RELOADING=1", "STOPPING=1" by sending a datagram to $NOTIFY_SOCKET. sendTo(path, message) opens a
// SOCK_DGRAM|SOCK_CLOEXEC socket, sends once and closes it: a handful of calls a minute, so keeping a
// socket open buys nothing. A path starting with '@' is an abstract socket (the '@' becomes a NUL, as
// systemd and libsystemd do). Returns the bytes sent; a failure throws an Error carrying errno.
#include <napi.h>

#include "shared/native/throw.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>

namespace {

using realmnet::ThrowErrno;
using realmnet::ThrowType;

Napi::Value SendTo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString() || !info[1].IsString()) return ThrowType(env, "sendTo(path, message)");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  std::string msg = info[1].As<Napi::String>().Utf8Value();
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) return ThrowErrno(env, ENAMETOOLONG, "notify socket path");
  memcpy(addr.sun_path, path.data(), path.size());
  socklen_t len = socklen_t(offsetof(struct sockaddr_un, sun_path) + path.size());
  if (path[0] == '@') addr.sun_path[0] = '\0';
  else len += 1;  // the path's NUL
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ThrowErrno(env, errno, "socket AF_UNIX");
  ssize_t n;
  do n = sendto(fd, msg.data(), msg.size(), MSG_NOSIGNAL, reinterpret_cast<struct sockaddr*>(&addr), len);
  while (n < 0 && errno == EINTR);
  int err = errno;
  close(fd);
  if (n < 0) return ThrowErrno(env, err, "sendto NOTIFY_SOCKET");
  return Napi::Number::New(env, double(n));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("sendTo", Napi::Function::New(env, SendTo, "sendTo"));
  return exports;
}

}  // namespace

NODE_API_MODULE(realmnet_notify, Init)
