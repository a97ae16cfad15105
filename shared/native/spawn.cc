// Runs a short-lived command (iproute2's `ip`) without stalling the JavaScript thread.
//
// Node's child_process forks the whole process on the event loop's thread: the kernel copies the
// page tables first, so a spawn costs 5 ms at 50 MB of RSS and ~50 ms at 900 MB (measured here), and
// the agent forwards no packet meanwhile. glibc's posix_spawn uses clone(CLONE_VM | CLONE_VFORK): no
// page tables are copied, the calling thread waits only until the child has exec'd. We call it from
// a libuv threadpool thread (Napi::AsyncWorker), so even that wait is off the event loop, and collect
// the output there too.
//
// run(file, args, input | null, timeoutMs, maxBytes) -> Promise<{ code, signal, stdout, stderr, errno }>
//   code: exit status (-1 if killed or not started); signal: the signal that ended it (0: none);
//   errno: non-zero when the command could not be started (e.g. ENOENT); output past maxBytes is cut
//   and the command killed (code -1, signal SIGKILL).
#include <napi.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace {

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

class SpawnWorker : public Napi::AsyncWorker {
 public:
  SpawnWorker(Napi::Env env, std::string file, std::vector<std::string> args, std::string input, bool hasInput, int timeoutMs, size_t maxBytes)
      : Napi::AsyncWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        file_(std::move(file)),
        args_(std::move(args)),
        input_(std::move(input)),
        hasInput_(hasInput),
        timeoutMs_(timeoutMs),
        maxBytes_(maxBytes) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
    if ((hasInput_ && pipe2(in, O_CLOEXEC) != 0) || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
      errno_ = errno;
      CloseAll(in, out, err);
      return;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (hasInput_) posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    else posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(file_.c_str()));
    for (auto& a : args_) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = -1;
    int rc = posix_spawnp(&pid, file_.c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    // The child's ends belong to the child now (or to nobody if it did not start).
    if (hasInput_) close(in[0]);
    close(out[1]);
    close(err[1]);
    in[0] = out[1] = err[1] = -1;
    if (rc != 0) {
      errno_ = rc;
      CloseAll(in, out, err);
      return;
    }
    Pump(pid, in[1], out[0], err[0]);
    CloseAll(in, out, err);
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object r = Napi::Object::New(env);
    r.Set("code", Napi::Number::New(env, code_));
    r.Set("signal", Napi::Number::New(env, signal_));
    r.Set("errno", Napi::Number::New(env, errno_));
    r.Set("stdout", Napi::Buffer<char>::Copy(env, stdout_.data(), stdout_.size()));
    r.Set("stderr", Napi::Buffer<char>::Copy(env, stderr_.data(), stderr_.size()));
    deferred_.Resolve(r);
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  static void CloseAll(int* a, int* b, int* c) {
    for (int* p : {a, b, c}) {
      for (int i = 0; i < 2; i++) {
        if (p[i] >= 0) close(p[i]);
        p[i] = -1;
      }
    }
  }

  // Feeds stdin, drains stdout and stderr until both close, then reaps the child; kills it at the
  // deadline or when the output grows past maxBytes. Every fd is taken by reference and set to -1
  // where it is closed, so that CloseAll never closes one twice: between the two closes another
  // thread may have been given the same number (a UDP socket, another command's pipe), and closing
  // it would take it away from under its owner.
  void Pump(pid_t pid, int& inFd, int& outFd, int& errFd) {
    size_t written = 0;
    if (inFd >= 0) fcntl(inFd, F_SETFL, fcntl(inFd, F_GETFL) | O_NONBLOCK);
    const int64_t deadline = NowMs() + timeoutMs_;
    bool killed = false;
    char buf[16384];
    while (outFd >= 0 || errFd >= 0) {
      pollfd fds[3];
      int n = 0;
      int iOut = -1, iErr = -1, iIn = -1;
      if (outFd >= 0) { iOut = n; fds[n++] = {outFd, POLLIN, 0}; }
      if (errFd >= 0) { iErr = n; fds[n++] = {errFd, POLLIN, 0}; }
      if (inFd >= 0 && written < input_.size()) { iIn = n; fds[n++] = {inFd, POLLOUT, 0}; }
      int64_t left = deadline - NowMs();
      if (left <= 0 && !killed) {
        kill(pid, SIGKILL);
        killed = true;
      }
      int pr = poll(fds, n, left > 0 ? int(left) : 100);
      if (pr < 0 && errno != EINTR) break;
      if (iIn >= 0 && (fds[iIn].revents & (POLLOUT | POLLERR | POLLHUP))) {
        ssize_t w = write(inFd, input_.data() + written, input_.size() - written);
        if (w > 0) written += size_t(w);
        if (w < 0 && errno != EAGAIN) written = input_.size();  // the child closed its stdin: stop feeding
      }
      if (inFd >= 0 && written >= input_.size()) {
        close(inFd);
        inFd = -1;
      }
      for (int which : {iOut, iErr}) {
        if (which < 0) continue;
        int& fd = which == iOut ? outFd : errFd;
        // Not an open fd (a bug elsewhere closed it): stop reading it rather than spin on poll().
        if (fds[which].revents & POLLNVAL) {
          fd = -1;
          continue;
        }
        if (!(fds[which].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        std::string& sink = which == iOut ? stdout_ : stderr_;
        ssize_t r = read(fd, buf, sizeof buf);
        if (r > 0) {
          if (sink.size() + size_t(r) > maxBytes_) {
            if (!killed) kill(pid, SIGKILL);
            killed = true;
          } else {
            sink.append(buf, size_t(r));
          }
        } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
          close(fd);
          fd = -1;
        }
      }
    }
    if (inFd >= 0) close(inFd);
    inFd = -1;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status)) code_ = WEXITSTATUS(status);
    else if (WIFSIGNALED(status)) {
      code_ = -1;
      signal_ = WTERMSIG(status);
    }
  }

  Napi::Promise::Deferred deferred_;
  std::string file_;
  std::vector<std::string> args_;
  std::string input_;
  bool hasInput_;
  int timeoutMs_;
  size_t maxBytes_;
  std::string stdout_, stderr_;
  int code_ = -1;
  int signal_ = 0;
  int errno_ = 0;
};

Napi::Value Run(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5 || !info[0].IsString() || !info[1].IsArray() || !info[3].IsNumber() || !info[4].IsNumber()) {
    Napi::TypeError::New(env, "run(file, args, input | null, timeoutMs, maxBytes)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array arr = info[1].As<Napi::Array>();
  std::vector<std::string> args;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsString()) {
      Napi::TypeError::New(env, "args must be strings").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    args.push_back(v.As<Napi::String>().Utf8Value());
  }
  bool hasInput = info[2].IsString();
  std::string input = hasInput ? info[2].As<Napi::String>().Utf8Value() : std::string();
  auto* w = new SpawnWorker(env, info[0].As<Napi::String>().Utf8Value(), std::move(args), std::move(input), hasInput,
                            info[3].As<Napi::Number>().Int32Value(), size_t(info[4].As<Napi::Number>().Int64Value()));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("run", Napi::Function::New(env, Run));
  return exports;
}

}  // namespace

NODE_API_MODULE(realmnet_spawn, Init)
