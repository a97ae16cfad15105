// How every realmnet addon reports failure to JS (no C++ exceptions: NAPI_DISABLE_CPP_EXCEPTIONS).
#ifndef REALMNET_SHARED_NATIVE_THROW_H_
#define REALMNET_SHARED_NATIVE_THROW_H_

#include <napi.h>

#include <cstring>
#include <string>

namespace realmnet {

// A failed system call as a JS Error carrying errno and the step; the TypeScript wrappers map it to a
// typed SystemError (shared/native.ts isNativeErrnoError).
inline Napi::Value ThrowErrno(Napi::Env env, int err, const char* step) {
  Napi::Error e = Napi::Error::New(env, std::string(step) + ": " + strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, step));
  e.ThrowAsJavaScriptException();
  return env.Undefined();
}

// A wrapper bug (wrong arguments): the wrappers never let a user's value get this far.
inline Napi::Value ThrowType(Napi::Env env, const char* msg) {
  Napi::TypeError::New(env, msg).ThrowAsJavaScriptException();
  return env.Undefined();
}

}  // namespace realmnet

#endif  // REALMNET_SHARED_NATIVE_THROW_H_
