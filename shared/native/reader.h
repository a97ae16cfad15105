// The plumbing both addons share (agent/tun/native/tun.cc, shared/udp/native/udp.cc): one fd drained
// into JS-owned slots on a reader thread, batches handed to JS through a thread-safe function.
//
// 1. The device opens its fd and calls OpenWake() for the eventfd that close() wakes the thread with.
// 2. Start: the device checks and keeps its slot arrays (Keep() pins each one), then StartReader()
//    creates the TSFN and the thread. The thread fills slot k, then k+1, ... round robin.
// 3. Reader: Source::Fill(slot, &err) drains the fd into the slot without blocking; when it finds
//    nothing, Wait() polls the fd and the eventfd. Queue (slot, count) on the TSFN.
// 4. JS thread: Deliver() calls onBatch(slot, count), then gives the slot back. The queue is FIFO, so
//    slots come back in the order they were filled and a counter of slots in flight is enough. With
//    every slot in JS's hands the reader waits on a condition variable: that is the backpressure.
// 5. Shutdown(): wake the reader, join it, release the TSFN (so the loop may exit), close both fds.
//
// Source is the device class itself (CRTP), so Fill() is a direct, inlinable call: the loop costs
// what it cost when each addon had its own copy. Nothing here allocates per batch.
#ifndef REALMNET_SHARED_NATIVE_READER_H_
#define REALMNET_SHARED_NATIVE_READER_H_

#include <napi.h>

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "shared/native/throw.h"

namespace realmnet {

struct Batch {
  uint32_t slot;
  uint32_t count;
};

template <typename Source>
class BatchReader;

template <typename Source>
void DeliverBatch(Napi::Env env, Napi::Function onBatch, BatchReader<Source>* reader, Batch* batch) {
  reader->Deliver(env, onBatch, batch);
}

// Source must define `uint32_t Fill(uint32_t slot, int* err)`: called on the reader thread, it reads
// what is there into `slot` without blocking and returns how many packets (0 for none); an unexpected
// error goes to *err (and the source's own counters), so the loop backs off instead of spinning.
template <typename Source>
class BatchReader {
 public:
  using Tsfn = Napi::TypedThreadSafeFunction<BatchReader, Batch, DeliverBatch<Source>>;

  // Called on the JS thread for each queued batch, also after close() (then it only frees the slot).
  void Deliver(Napi::Env env, Napi::Function onBatch, Batch* b) {
    if (env != nullptr && !closed_) {
      onBatch.Call({Napi::Number::New(env, b->slot), Napi::Number::New(env, b->count)});
      // The TypeScript wrappers catch and count what the user's handler throws, so an exception here
      // is a bug in the wrapper itself. Node-API would only print a deprecation warning and go on;
      // surface it like any other uncaught exception instead.
      if (env.IsExceptionPending()) napi_fatal_exception(env, env.GetAndClearPendingException().Value());
    }
    std::lock_guard<std::mutex> lock(mu_);
    inFlight_--;
    cv_.notify_one();
  }

 protected:
  BatchReader() = default;
  BatchReader(const BatchReader&) = delete;
  BatchReader& operator=(const BatchReader&) = delete;
  // The Source's destructor must call Shutdown() first: the thread calls into the Source, whose
  // members are gone by the time this destructor runs.
  ~BatchReader() = default;

  // Whether open() may run: not yet opened, never closed.
  bool Openable() const { return fd_ < 0 && !closed_; }

  // The eventfd close() wakes the reader with. Returns false with errno set.
  bool OpenWake() {
    wake_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return wake_ >= 0;
  }

  bool Startable() const { return fd_ >= 0 && !thread_.joinable(); }

  // Keeps a slot array alive and in place while the reader thread writes into it.
  void Keep(Napi::Value v) { refs_.push_back(Napi::Persistent(v.As<Napi::Object>())); }

  // The slots (and batch_) are laid out; start the TSFN and the thread.
  void StartReader(Napi::Env env, Napi::Function onBatch, const char* name) {
    batches_.clear();
    for (uint32_t i = 0; i < slots_; i++) batches_.push_back(Batch{i, 0});
    // Unlimited queue: at most `slots` items are ever queued, so BlockingCall never blocks and close()
    // cannot deadlock against a full queue. The TSFN is ref'd: a started device keeps the event loop
    // alive, like a node:dgram socket, until close().
    tsfn_ = Tsfn::New(env, onBatch, name, 0, 1, this);
    // Registered after the TSFN, so it runs before Node tears the TSFN down.
    napi_add_env_cleanup_hook(env, EnvCleanup, this);
    hooked_ = true;
    env_ = env;
    thread_ = std::thread(&BatchReader::ReadLoop, this);
  }

  void Shutdown() {
    if (closed_) return;
    closed_ = true;
    if (thread_.joinable()) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        stopping_ = true;
      }
      cv_.notify_all();
      uint64_t one = 1;
      ssize_t ignored = write(wake_, &one, sizeof one);
      (void)ignored;
      thread_.join();
      tsfn_.Release();
      if (hooked_) napi_remove_env_cleanup_hook(env_, EnvCleanup, this);
      hooked_ = false;
    }
    if (fd_ >= 0) close(fd_);
    if (wake_ >= 0) close(wake_);
    fd_ = wake_ = -1;
  }

  int fd_ = -1;
  bool closed_ = false;
  uint32_t slots_ = 0;  // set by the Source's start() before StartReader()
  uint32_t batch_ = 0;  // packets per slot, likewise
  // Written by the reader thread, read by stats().
  std::atomic<uint64_t> readPackets_{0}, readBatches_{0};

 private:
  static void EnvCleanup(void* arg) {
    // The environment is going away (worker exit, process exit) with the device still open: stop
    // the thread before Node tears the TSFN down under it.
    BatchReader* self = static_cast<BatchReader*>(arg);
    self->hooked_ = false;
    self->Shutdown();
  }

  void ReadLoop() {
    Source* source = static_cast<Source*>(this);
    uint32_t slot = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stopping_ || inFlight_ < slots_; });
        if (stopping_) return;
      }
      uint32_t count = 0;
      while (count == 0) {
        int err = 0;
        count = source->Fill(slot, &err);
        if (count > 0) break;
        // After an unexpected error poll() may report the fd ready at once: back off instead of spinning.
        if (!Wait(err == 0 ? -1 : 10)) return;
      }
      readPackets_.fetch_add(count, std::memory_order_relaxed);
      readBatches_.fetch_add(1, std::memory_order_relaxed);
      {
        std::lock_guard<std::mutex> lock(mu_);
        inFlight_++;  // before the call, so Deliver's decrement can never come first
      }
      batches_[slot].count = count;
      if (tsfn_.BlockingCall(&batches_[slot]) != napi_ok) return;  // the TSFN is closing
      slot = (slot + 1) % slots_;
    }
  }

  // Waits until the fd is readable (true) or close() asked the thread to stop (false).
  // A backoff wait (timeoutMs >= 0) watches only the eventfd.
  bool Wait(int timeoutMs) {
    struct pollfd p[2] = {{fd_, POLLIN, 0}, {wake_, POLLIN, 0}};
    struct pollfd* first = timeoutMs < 0 ? &p[0] : &p[1];
    int r;
    do r = poll(first, timeoutMs < 0 ? 2 : 1, timeoutMs);
    while (r < 0 && errno == EINTR);
    return !stopping_.load() && p[1].revents == 0;
  }

  int wake_ = -1;
  bool hooked_ = false;
  napi_env env_ = nullptr;
  std::vector<Napi::ObjectReference> refs_;
  std::vector<Batch> batches_;
  Tsfn tsfn_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> stopping_{false};
  uint32_t inFlight_ = 0;  // guarded by mu_
};

}  // namespace realmnet

#endif  // REALMNET_SHARED_NATIVE_READER_H_
