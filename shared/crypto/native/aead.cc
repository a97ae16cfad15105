// realmnet_aead: the data plane's AEAD on whole batches, with keys that never leave native memory.
//
// 1. new SessionTable(slots): a fixed table of `slots` sessions (a power of two), allocated once. A
//    session's 32-bit index is what peers write into the sealed header (shared/wire/header.ts); its
//    low bits are the slot, its upper bits random (shared/crypto/aead.ts newIndex), so a packet for a
//    session that a slot no longer holds finds a different index there and is refused.
// 2. install(slot, index, cipher, sendKey, recvKey, sendLimit, firstSendCounter): copies the two keys
//    into a send and a receive EVP_CIPHER_CTX (key schedule computed once, so a packet only sets its
//    IV), zero-fills the caller's key arrays and the stack copy, resets counters and the replay window.
//    A slot that held a session frees its contexts first (wipe, step 5).
// 3. seal(buf, offsets, lengths, slots, count): per packet, takes the slot's next counter, writes it
//    into the header (u64 big-endian at +12, low 24 bits as the LISP nonce at +1..+3), encrypts the
//    frame in place with the 20-byte header as associated data and appends the 16-byte tag. A slot
//    without keys, or whose counter reached its send limit, sets lengths[i] = 0 and is counted.
// 4. open(buf, offsets, lengths, count, results, slotsOut): per packet, index -> slot, decrypt and
//    verify in place, and only then the replay window: a forged packet never moves the window. Ok
//    packets get lengths[i] -= 16 (the tag is gone) and slotsOut[i] = slot.
// 5. wipe(slot) / wipeAll() / the destructor: EVP_CIPHER_CTX_free clears and frees the key schedules
//    (OpenSSL 3's AES-GCM and ChaCha20-Poly1305 providers free their context with OPENSSL_clear_free),
//    and the slot's state is cleansed with OPENSSL_cleanse.
//
// The AEAD nonce is 4 zero bytes || the counter (u64 big-endian), the header's own bytes [12, 20), so
// a packet carries its nonce and the format is the standard RFC 5116 one: node:crypto's createCipheriv
// with the same key, nonce and AAD gives the same bytes (test/unit/aead.test.ts).
//
// Nothing here allocates per packet or per batch. Arguments are checked before the first packet is
// touched, so a bad call throws (TypeError/RangeError: the caller's bug) and changes nothing.
//
// OpenSSL comes from Node itself: the headers in <nodedir>/include/node/openssl (binding.gyp puts them
// first, ahead of any system OpenSSL), the symbols from the node binary when the addon loads. Nothing
// links libcrypto, so a machine without libssl-dev builds this and the versions cannot disagree.
#include <napi.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#if OPENSSL_VERSION_MAJOR < 3
#error "realmnet_aead expects Node's OpenSSL 3 headers (<nodedir>/include/node first on the include path)"
#endif

namespace {

constexpr uint32_t kHeaderLen = 20;  // SEALED_HEADER_LEN
constexpr uint32_t kIndexOff = 8;    // SEALED_INDEX_OFF
constexpr uint32_t kCounterOff = 12; // SEALED_COUNTER_OFF
constexpr uint32_t kTagLen = 16;     // TAG_LEN
constexpr uint32_t kKeyLen = 32;
constexpr uint32_t kMaxSlots = 4096;
// EVP takes int lengths; a frame is at most 64 KiB, this only keeps a bad length from overflowing.
constexpr uint32_t kMaxFrame = 1u << 30;
// Counters stay below 2^53 so JS reads them exactly (sendCounter, the send limit); a received counter
// at or past it can only come from a broken peer, and is refused like one outside the window.
constexpr uint64_t kCounterCeiling = uint64_t(1) << 53;

// The replay window, RFC 6479: a ring of 64-bit blocks; when the highest counter moves into a new
// block, the blocks it passes are cleared whole, so the window slides without shifting bits. One block
// is the one being refilled, so the window is the ring less one block: 8192 - 64 = 8128 counters
// behind the highest accepted one (shared/crypto/aead.ts REPLAY_WINDOW; why 8192: the docs).
constexpr uint32_t kRingBits = 8192;
constexpr uint32_t kBlocks = kRingBits / 64;
constexpr uint64_t kWindow = kRingBits - 64;

enum Cipher : uint8_t { kAes256Gcm = 0, kChaCha20Poly1305 = 1 };
enum Result : uint8_t { kOk = 0, kNoSession = 1, kForged = 2, kReplayed = 3, kTooOld = 4, kTruncated = 5 };

// Per-slot and global counters, in the order stats() writes them (shared/crypto/aead.ts reads them).
enum Stat : uint32_t {
  kSealed,
  kSealNoKey,     // seal on a slot without keys
  kSealExhausted, // seal at or past the send limit
  kSealFailed,    // an EVP call failed (not expected: counted, never silent)
  kOpened,
  kOpenNoSession,
  kOpenForged,
  kOpenReplayed,
  kOpenTooOld,
  kOpenTruncated,
  kStatCount
};

struct Slot {
  EVP_CIPHER_CTX* send;  // null when the slot holds no session
  EVP_CIPHER_CTX* recv;
  uint32_t index;
  uint8_t cipher;
  uint64_t nextSend;
  uint64_t sendLimit;
  // Window state, kept as counter + 1 (WireGuard's trick) so 0 means "nothing received yet".
  uint64_t top;
  uint64_t ring[kBlocks];
  double stats[kStatCount];
};

inline uint32_t ReadBe32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}
inline uint64_t ReadBe64(const uint8_t* p) { return (uint64_t(ReadBe32(p)) << 32) | ReadBe32(p + 4); }
inline void WriteBe64(uint8_t* p, uint64_t v) {
  for (int i = 7; i >= 0; i--) {
    p[i] = uint8_t(v);
    v >>= 8;
  }
}

// Marks counter c as received; the packet was authenticated before this is called.
Result Accept(Slot& s, uint64_t c) {
  if (c >= kCounterCeiling) return kTooOld;
  uint64_t seq = c + 1;
  if (seq > s.top) {
    uint64_t current = seq >> 6, last = s.top >> 6;
    uint64_t clear = current - last < kBlocks ? current - last : kBlocks;
    for (uint64_t i = 1; i <= clear; i++) s.ring[(last + i) & (kBlocks - 1)] = 0;
    s.top = seq;
  } else if (s.top - seq > kWindow) {
    return kTooOld;
  }
  uint64_t& block = s.ring[(seq >> 6) & (kBlocks - 1)];
  uint64_t bit = uint64_t(1) << (seq & 63);
  if (block & bit) return kReplayed;
  block |= bit;
  return kOk;
}

Napi::Value ThrowType(Napi::Env env, const std::string& msg) {
  Napi::TypeError::New(env, msg).ThrowAsJavaScriptException();
  return env.Undefined();
}
Napi::Value ThrowRange(Napi::Env env, const std::string& msg) {
  Napi::RangeError::New(env, msg).ThrowAsJavaScriptException();
  return env.Undefined();
}

bool FailType(Napi::Env env, const std::string& msg) {
  ThrowType(env, msg);
  return false;
}
bool FailRange(Napi::Env env, const std::string& msg) {
  ThrowRange(env, msg);
  return false;
}

bool IsTyped(const Napi::Value& v, napi_typedarray_type type) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == type;
}

// A non-negative integer Number up to max, or false.
bool ReadInteger(const Napi::Value& v, double max, double* out) {
  if (!v.IsNumber()) return false;
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= max) || std::floor(d) != d) return false;
  *out = d;
  return true;
}

class SessionTable : public Napi::ObjectWrap<SessionTable> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "SessionTable",
                       {InstanceMethod("install", &SessionTable::Install), InstanceMethod("wipe", &SessionTable::Wipe),
                        InstanceMethod("wipeAll", &SessionTable::WipeAll), InstanceMethod("seal", &SessionTable::Seal),
                        InstanceMethod("open", &SessionTable::Open),
                        InstanceMethod("sendCounter", &SessionTable::SendCounter),
                        InstanceMethod("hasSession", &SessionTable::HasSession),
                        InstanceMethod("stats", &SessionTable::Stats)});
  }

  explicit SessionTable(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SessionTable>(info) {
    Napi::Env env = info.Env();
    double n = 0;
    if (!ReadInteger(info[0], kMaxSlots, &n) || n < 1 || (uint32_t(n) & (uint32_t(n) - 1)) != 0) {
      ThrowRange(env, "new SessionTable(slots): slots must be a power of two from 1 to " + std::to_string(kMaxSlots));
      return;
    }
    count_ = uint32_t(n);
    // value-initialised: null contexts, zero counters and windows.
    slots_.reset(new (std::nothrow) Slot[count_]());
    if (!slots_) {
      Napi::Error::New(env, "new SessionTable: out of memory").ThrowAsJavaScriptException();
      count_ = 0;
      return;
    }
    // A full table is 4.5 MB behind a small JS object: tell V8, so that it collects dropped tables.
    external_ = int64_t(count_) * int64_t(sizeof(Slot));
    Napi::MemoryManagement::AdjustExternalMemory(env, external_);
  }

  ~SessionTable() override {
    for (uint32_t i = 0; i < count_; i++) Clear(slots_[i]);
  }

  void Finalize(Napi::Env env) override {
    if (external_ != 0) Napi::MemoryManagement::AdjustExternalMemory(env, -external_);
  }

 private:
  // Frees the key schedules (EVP_CIPHER_CTX_free clears them first) and cleanses the rest of the slot.
  static void Clear(Slot& s) {
    if (s.send != nullptr) EVP_CIPHER_CTX_free(s.send);
    if (s.recv != nullptr) EVP_CIPHER_CTX_free(s.recv);
    OPENSSL_cleanse(&s, sizeof s);
    s.send = nullptr;
    s.recv = nullptr;
  }

  // A context holding `key` for one direction; the IV is set per packet. Null if OpenSSL fails.
  static EVP_CIPHER_CTX* NewContext(uint8_t cipher, const uint8_t* key, bool encrypt) {
    EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
    if (ctx == nullptr) return nullptr;
    const EVP_CIPHER* c = cipher == kAes256Gcm ? EVP_aes_256_gcm() : EVP_chacha20_poly1305();
    // Both ciphers default to a 12-byte IV and take a 32-byte key; set the key now, IVs later.
    if (EVP_CipherInit_ex(ctx, c, nullptr, key, nullptr, encrypt ? 1 : 0) != 1 ||
        EVP_CIPHER_CTX_get_iv_length(ctx) != 12 || EVP_CIPHER_CTX_get_key_length(ctx) != int(kKeyLen)) {
      EVP_CIPHER_CTX_free(ctx);
      return nullptr;
    }
    return ctx;
  }

  Slot* CheckSlot(Napi::Env env, const Napi::Value& v, const char* method) {
    double n = 0;
    if (!ReadInteger(v, double(count_) - 1, &n)) {
      ThrowRange(env, std::string(method) + ": slot must be an integer from 0 to " + std::to_string(count_ - 1));
      return nullptr;
    }
    return &slots_[uint32_t(n)];
  }

  // install(slot, index, cipher, sendKey, recvKey, sendLimit, firstSendCounter)
  Napi::Value Install(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Slot* s = CheckSlot(env, info[0], "install");
    if (s == nullptr) return env.Undefined();
    uint32_t slot = uint32_t(s - slots_.get());
    double index = 0, cipher = 0, limit = 0, first = 0;
    if (!ReadInteger(info[1], 4294967295.0, &index) || (uint32_t(index) & (count_ - 1)) != slot) {
      return ThrowRange(env, "install: index must be a u32 whose low bits are the slot (index & (slots - 1) === slot)");
    }
    if (!ReadInteger(info[2], 1, &cipher)) return ThrowRange(env, "install: cipher must be 0 (AES-256-GCM) or 1 (ChaCha20-Poly1305)");
    for (int k = 3; k <= 4; k++) {
      if (!IsTyped(info[k], napi_uint8_array) || info[k].As<Napi::Uint8Array>().ElementLength() != kKeyLen) {
        return ThrowType(env, std::string("install: ") + (k == 3 ? "sendKey" : "recvKey") + " must be a Uint8Array of 32 bytes");
      }
    }
    if (!ReadInteger(info[5], double(kCounterCeiling) - 1, &limit)) {
      return ThrowRange(env, "install: sendLimit must be an integer from 0 to 2^53 - 1");
    }
    if (!ReadInteger(info[6], limit, &first)) return ThrowRange(env, "install: firstSendCounter must be an integer from 0 to sendLimit");

    Napi::Uint8Array sendKey = info[3].As<Napi::Uint8Array>(), recvKey = info[4].As<Napi::Uint8Array>();
    uint8_t keys[2 * kKeyLen];
    memcpy(keys, sendKey.Data(), kKeyLen);
    memcpy(keys + kKeyLen, recvKey.Data(), kKeyLen);
    // The caller's copies go first: from here on the keys exist only in native memory.
    OPENSSL_cleanse(sendKey.Data(), kKeyLen);
    OPENSSL_cleanse(recvKey.Data(), kKeyLen);
    Clear(*s);
    EVP_CIPHER_CTX* send = NewContext(uint8_t(cipher), keys, true);
    EVP_CIPHER_CTX* recv = send == nullptr ? nullptr : NewContext(uint8_t(cipher), keys + kKeyLen, false);
    OPENSSL_cleanse(keys, sizeof keys);
    if (recv == nullptr) {
      if (send != nullptr) EVP_CIPHER_CTX_free(send);
      ERR_clear_error();
      Napi::Error::New(env, "install: OpenSSL could not set up the cipher context").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    s->send = send;
    s->recv = recv;
    s->index = uint32_t(index);
    s->cipher = uint8_t(cipher);
    s->nextSend = uint64_t(first);
    s->sendLimit = uint64_t(limit);
    return env.Undefined();
  }

  Napi::Value Wipe(const Napi::CallbackInfo& info) {
    Slot* s = CheckSlot(info.Env(), info[0], "wipe");
    if (s != nullptr) Clear(*s);
    return info.Env().Undefined();
  }

  Napi::Value WipeAll(const Napi::CallbackInfo& info) {
    for (uint32_t i = 0; i < count_; i++) Clear(slots_[i]);
    return info.Env().Undefined();
  }

  Napi::Value SendCounter(const Napi::CallbackInfo& info) {
    Slot* s = CheckSlot(info.Env(), info[0], "sendCounter");
    if (s == nullptr) return info.Env().Undefined();
    return Napi::Number::New(info.Env(), double(s->nextSend));
  }

  Napi::Value HasSession(const Napi::CallbackInfo& info) {
    Slot* s = CheckSlot(info.Env(), info[0], "hasSession");
    if (s == nullptr) return info.Env().Undefined();
    return Napi::Boolean::New(info.Env(), s->send != nullptr);
  }

  // stats(out: Float64Array, slot: number | -1): the global counters, or one slot's since install().
  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!IsTyped(info[0], napi_float64_array) || info[0].As<Napi::Float64Array>().ElementLength() < kStatCount) {
      return ThrowType(env, "stats(out, slot): out must be a Float64Array of at least " + std::to_string(kStatCount) + " elements");
    }
    Napi::Float64Array out = info[0].As<Napi::Float64Array>();
    const double* from = totals_;
    if (!(info[1].IsNumber() && info[1].As<Napi::Number>().DoubleValue() == -1)) {
      Slot* s = CheckSlot(env, info[1], "stats");
      if (s == nullptr) return env.Undefined();
      from = s->stats;
    }
    for (uint32_t i = 0; i < kStatCount; i++) out[i] = from[i];
    return env.Undefined();
  }

  // The checks both seal and open make before touching any packet. Returns false with a JS exception.
  bool CheckBatch(Napi::Env env, const char* method, const Napi::Value& bufV, const Napi::Value& offV, const Napi::Value& lenV,
                  const Napi::Value& countV, uint32_t room, uint32_t* count) {
    // Messages are built only on the error path: a good call allocates nothing.
    auto m = [method]() { return std::string(method); };
    if (!IsTyped(bufV, napi_uint8_array)) return FailType(env, m() + ": buf must be a Uint8Array (or Buffer)");
    if (!IsTyped(offV, napi_uint32_array)) return FailType(env, m() + ": offsets must be a Uint32Array");
    if (!IsTyped(lenV, napi_uint32_array)) return FailType(env, m() + ": lengths must be a Uint32Array");
    Napi::Uint32Array offsets = offV.As<Napi::Uint32Array>(), lengths = lenV.As<Napi::Uint32Array>();
    double n = 0;
    if (!ReadInteger(countV, 4294967295.0, &n)) return FailRange(env, m() + ": count must be a non-negative integer");
    if (n > offsets.ElementLength() || n > lengths.ElementLength()) {
      return FailRange(env, m() + ": count " + std::to_string(uint64_t(n)) + " exceeds offsets (" + std::to_string(offsets.ElementLength()) +
                                ") or lengths (" + std::to_string(lengths.ElementLength()) + ")");
    }
    *count = uint32_t(n);
    uint64_t size = bufV.As<Napi::Uint8Array>().ByteLength();
    for (uint32_t i = 0; i < *count; i++) {
      uint64_t off = offsets[i], len = lengths[i];
      if (len > kMaxFrame || off + len + room > size) {
        return FailRange(env, m() + ": packet " + std::to_string(i) + " (offset " + std::to_string(off) + ", length " + std::to_string(len) +
                                  (room ? " + 16-byte tag" : "") + ") ends past buf (" + std::to_string(size) + " bytes)");
      }
    }
    return true;
  }

  Napi::Value Seal(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t count = 0;
    if (!CheckBatch(env, "seal", info[0], info[1], info[2], info[4], kTagLen, &count)) return env.Undefined();
    if (!IsTyped(info[3], napi_uint16_array) || info[3].As<Napi::Uint16Array>().ElementLength() < count) {
      return ThrowType(env, "seal: slots must be a Uint16Array of at least count elements");
    }
    uint8_t* data = info[0].As<Napi::Uint8Array>().Data();
    Napi::Uint32Array offsets = info[1].As<Napi::Uint32Array>(), lengths = info[2].As<Napi::Uint32Array>();
    Napi::Uint16Array slots = info[3].As<Napi::Uint16Array>();
    for (uint32_t i = 0; i < count; i++) {
      if (lengths[i] < kHeaderLen) return ThrowRange(env, "seal: packet " + std::to_string(i) + " is shorter than the 20-byte sealed header");
      if (slots[i] >= count_) return ThrowRange(env, "seal: packet " + std::to_string(i) + " names slot " + std::to_string(slots[i]) + " of a table of " + std::to_string(count_));
    }

    uint32_t sealed = 0;
    for (uint32_t i = 0; i < count; i++) {
      Slot& s = slots_[slots[i]];
      uint32_t len = lengths[i];
      Stat why = kSealed;
      if (s.send == nullptr) why = kSealNoKey;
      else if (s.nextSend >= s.sendLimit) why = kSealExhausted;
      else if (!SealOne(s, data + offsets[i], len)) why = kSealFailed;
      s.stats[why]++;
      totals_[why]++;
      if (why != kSealed) {
        lengths[i] = 0;
        continue;
      }
      lengths[i] = len + kTagLen;
      sealed++;
    }
    return Napi::Number::New(env, sealed);
  }

  static bool SealOne(Slot& s, uint8_t* p, uint32_t len) {
    uint64_t counter = s.nextSend++;  // spent even if OpenSSL fails below: a nonce is never reused
    WriteBe64(p + kCounterOff, counter);
    p[1] = uint8_t(counter >> 16);
    p[2] = uint8_t(counter >> 8);
    p[3] = uint8_t(counter);
    uint8_t iv[12] = {0, 0, 0, 0};
    memcpy(iv + 4, p + kCounterOff, 8);
    int out = 0;
    int frame = int(len - kHeaderLen);
    EVP_CIPHER_CTX* c = s.send;
    return EVP_EncryptInit_ex(c, nullptr, nullptr, nullptr, iv) == 1 && EVP_EncryptUpdate(c, nullptr, &out, p, kHeaderLen) == 1 &&
           (frame == 0 || EVP_EncryptUpdate(c, p + kHeaderLen, &out, p + kHeaderLen, frame) == 1) &&
           EVP_EncryptFinal_ex(c, p + len, &out) == 1 && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, kTagLen, p + len) == 1;
  }

  Napi::Value Open(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t count = 0;
    if (!CheckBatch(env, "open", info[0], info[1], info[2], info[3], 0, &count)) return env.Undefined();
    if (!IsTyped(info[4], napi_uint8_array) || info[4].As<Napi::Uint8Array>().ElementLength() < count) {
      return ThrowType(env, "open: results must be a Uint8Array of at least count elements");
    }
    if (!IsTyped(info[5], napi_uint16_array) || info[5].As<Napi::Uint16Array>().ElementLength() < count) {
      return ThrowType(env, "open: slotsOut must be a Uint16Array of at least count elements");
    }
    uint8_t* data = info[0].As<Napi::Uint8Array>().Data();
    Napi::Uint32Array offsets = info[1].As<Napi::Uint32Array>(), lengths = info[2].As<Napi::Uint32Array>();
    Napi::Uint8Array results = info[4].As<Napi::Uint8Array>();
    Napi::Uint16Array slotsOut = info[5].As<Napi::Uint16Array>();

    uint32_t opened = 0;
    bool forged = false;
    for (uint32_t i = 0; i < count; i++) {
      uint8_t* p = data + offsets[i];
      uint32_t len = lengths[i];
      Result r;
      Slot* s = nullptr;
      if (len < kHeaderLen + kTagLen) {
        r = kTruncated;
      } else {
        uint32_t index = ReadBe32(p + kIndexOff);
        s = &slots_[index & (count_ - 1)];
        if (s->recv == nullptr || s->index != index) {
          r = kNoSession;
          s = nullptr;
        } else if (!OpenOne(*s, p, len)) {
          r = kForged;
          forged = true;
        } else {
          r = Accept(*s, ReadBe64(p + kCounterOff));
        }
      }
      results[i] = r;
      static constexpr Stat kStatOf[] = {kOpened, kOpenNoSession, kOpenForged, kOpenReplayed, kOpenTooOld, kOpenTruncated};
      totals_[kStatOf[r]]++;
      if (s != nullptr) s->stats[kStatOf[r]]++;
      if (r == kOk) {
        lengths[i] = len - kTagLen;
        slotsOut[i] = uint16_t(s - slots_.get());
        opened++;
      }
    }
    // A failed tag check may leave an entry in OpenSSL's per-thread error queue, which Node's own
    // crypto calls on this thread would otherwise find; once per batch, not per packet.
    if (forged) ERR_clear_error();
    return Napi::Number::New(env, opened);
  }

  // Decrypts and verifies in place. On failure the frame is zeroed: unverified plaintext never
  // reaches the caller, even one that ignores the result.
  static bool OpenOne(Slot& s, uint8_t* p, uint32_t len) {
    uint8_t iv[12] = {0, 0, 0, 0};
    memcpy(iv + 4, p + kCounterOff, 8);
    int out = 0;
    int frame = int(len - kHeaderLen - kTagLen);
    uint8_t* tag = p + len - kTagLen;
    EVP_CIPHER_CTX* c = s.recv;
    bool ok = EVP_DecryptInit_ex(c, nullptr, nullptr, nullptr, iv) == 1 && EVP_DecryptUpdate(c, nullptr, &out, p, kHeaderLen) == 1 &&
              (frame == 0 || EVP_DecryptUpdate(c, p + kHeaderLen, &out, p + kHeaderLen, frame) == 1) &&
              EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, kTagLen, tag) == 1 && EVP_DecryptFinal_ex(c, p + len - kTagLen, &out) == 1;
    if (!ok) memset(p + kHeaderLen, 0, frame);
    return ok;
  }

  std::unique_ptr<Slot[]> slots_;
  uint32_t count_ = 0;
  int64_t external_ = 0;
  double totals_[kStatCount] = {};
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("SessionTable", SessionTable::Define(env));
  exports.Set("statCount", Napi::Number::New(env, kStatCount));
  exports.Set("replayWindowBits", Napi::Number::New(env, kRingBits));
  return exports;
}

}  // namespace

NODE_API_MODULE(realmnet_aead, Init)
