// The data plane's AEAD: a native table of sessions (keys, counters, replay windows) and the batch
// seal/open the packet path calls (native/aead.cc, OpenSSL EVP from Node's own OpenSSL).
//
// 1. The session layer (the handshake) picks a slot and an index with newIndex(), tells the peer the
//    index, and install()s the two keys: they are copied into native memory and the caller's arrays
//    zero-filled, so no key stays on the JS heap.
// 2. Sending: JS writes the 20-byte sealed header (shared/wire/header.ts) but the counter, then seal()
//    fills in the slot's next counter, encrypts each frame in place and appends the tag. A packet whose
//    slot has no keys or has reached its send limit comes back with length 0: skip it.
// 3. Receiving: open() finds the slot from the header's index, decrypts and verifies in place, and only
//    then asks the replay window. Results are small integers (OpenResult), one per packet, and Ok
//    packets lose their tag (lengths[i] -= 16).
// 4. Ending a session: wipe(slot) (or install() over it) frees the key schedules, cleared; wipeAll()
//    at stop(). The native destructor wipes too, but only when the GC gets to it.
//
// Borrowed: seal() and open() work in place on the caller's buffers and change nothing else; the
// packet path owns them before and after the call.
import { randomFillSync } from 'node:crypto';
import { SystemError } from '../errors.ts';
import { loadNative } from '../native.ts';

/** Chosen per session; both take 32-byte keys, 12-byte nonces and give 16-byte tags. */
export const Cipher = { Aes256Gcm: 0, ChaCha20Poly1305: 1 } as const;
export type Cipher = (typeof Cipher)[keyof typeof Cipher];

/** What open() found for one packet. Numbers so the receive path allocates nothing. */
export const OpenResult = {
  Ok: 0,
  /** The index names no installed session (unknown, stale after the slot was reused, or wiped). */
  NoSession: 1,
  /** The tag does not verify: any changed bit, a wrong or old key. The frame bytes are zeroed. */
  Forged: 2,
  /** Authentic, but this counter was already delivered. */
  Replayed: 3,
  /** Authentic, but more than REPLAY_WINDOW counters behind the highest delivered one. */
  TooOld: 4,
  /** Shorter than the sealed header and the tag. */
  Truncated: 5,
} as const;
export type OpenResult = (typeof OpenResult)[keyof typeof OpenResult];

export const KEY_LEN = 32;
/** Bits of the RFC 6479 replay bitmap per session. */
export const REPLAY_WINDOW_BITS = 8192;
/**
 * How far behind the highest delivered counter a packet may arrive: the bitmap less the one 64-bit
 * block RFC 6479 keeps for sliding. It must hold what a failover re-sends (up to 2048 packets per
 * peer, dataplane/flight.ts) plus what the old path still delivers meanwhile, with room to spare.
 */
export const REPLAY_WINDOW = REPLAY_WINDOW_BITS - 64;
/** Most sessions a table holds (native/aead.cc kMaxSlots). */
export const MAX_SLOTS = 4096;
/** Counters stay below 2^53, so JS reads them exactly. */
export const MAX_SEND_LIMIT = Number.MAX_SAFE_INTEGER;

/**
 * Default send limits: packets one key may seal before it must be replaced.
 * AES-256-GCM: 2^24. draft-irtf-cfrg-aead-limits (after Iwata, Ohashi and Minematsu, 2012) bounds
 * its confidentiality advantage by (s + q + 1)^2 / 2^129 for s blocks in q messages; keeping that
 * below 2^-57 allows about 2^36 blocks, and our largest frame (64 KiB, 2^12 blocks) makes that 2^24
 * packets: 1 TiB of offload frames, about 15 minutes at 10 Gbit/s. ChaCha20-Poly1305 has no such
 * confidentiality limit, so it runs to the counter's ceiling. The session layer usually rekeys on
 * time long before either.
 */
export const DEFAULT_SEND_LIMIT: Readonly<Record<Cipher, number>> = {
  [Cipher.Aes256Gcm]: 2 ** 24,
  [Cipher.ChaCha20Poly1305]: MAX_SEND_LIMIT,
};

export interface InstallOptions {
  /** Seal refuses at and past this counter (exclusive). Default DEFAULT_SEND_LIMIT[cipher]. */
  sendLimit?: number;
  /** The first counter seal() uses, default 0. Tests start near a limit or a 24/32-bit boundary. */
  firstSendCounter?: number;
}

/** Counters of one slot since its install(), or (with the seal/open failure reasons) of the table. */
export interface AeadStats {
  readonly sealed: number;
  /** seal() on a slot without keys. */
  readonly sealNoSession: number;
  /** seal() at or past the send limit: the key must be replaced. */
  readonly sealExhausted: number;
  /** An OpenSSL call failed while sealing (not expected; the counter was spent, never reused). */
  readonly sealFailed: number;
  readonly opened: number;
  readonly noSession: number;
  readonly forged: number;
  readonly replayed: number;
  readonly tooOld: number;
  readonly truncated: number;
}
/** The order native/aead.cc's stats() writes them in (its enum Stat). */
const STAT_COUNT = 10;

/** The addon's surface (native/aead.cc); the wrapper below checks what the native side does not name well. */
interface NativeSessionTable {
  install(slot: number, index: number, cipher: number, sendKey: Uint8Array, recvKey: Uint8Array, sendLimit: number, firstSendCounter: number): void;
  wipe(slot: number): void;
  wipeAll(): void;
  seal(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, slots: Uint16Array, count: number): number;
  open(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number, results: Uint8Array, slotsOut: Uint16Array): number;
  sendCounter(slot: number): number;
  hasSession(slot: number): boolean;
  stats(out: Float64Array, slot: number): void;
}
interface AeadBinding {
  SessionTable: new (slots: number) => NativeSessionTable;
  statCount: number;
  replayWindowBits: number;
}

function binding(): AeadBinding {
  const b = loadNative('realmnet_aead') as AeadBinding;
  // The two sides must agree on the layout stats() writes and on the window; a stale build would not.
  if (b.statCount !== STAT_COUNT || b.replayWindowBits !== REPLAY_WINDOW_BITS) {
    throw new SystemError('NATIVE_NOT_BUILT', 'the native addon realmnet_aead is out of date (its stats or replay window differ from shared/crypto/aead.ts)', 'rebuild the addons: npm install');
  }
  return b;
}

/**
 * A session index for `slot` in a table of `slots`: the slot in the low bits, random upper bits, so a
 * packet for the session a slot held before finds another index there (NoSession). Pass the slot's
 * previous index to be sure the new one differs from it.
 */
export function newIndex(slot: number, slots: number, previous?: number): number {
  checkSlots(slots);
  if (!Number.isInteger(slot) || slot < 0 || slot >= slots) throw new RangeError(`newIndex: slot ${slot} is not in 0..${slots - 1}`);
  const random = new Uint32Array(1);
  // At least 2^32 / MAX_SLOTS = 2^20 indexes per slot, so drawing the previous one again is rare.
  for (;;) {
    randomFillSync(random);
    const index = ((random[0] & ~(slots - 1)) | slot) >>> 0;
    // The index is the first byte behind the LISP header on the wire: a capture tool (tshark's LISP
    // dissector) reads a 4 or 6 there as an IP version and shows bogus inner packets. Never start with one.
    const version = index >>> 28;
    if (index !== previous && version !== 4 && version !== 6) return index;
  }
}

function checkSlots(slots: number): void {
  if (!Number.isInteger(slots) || slots < 1 || slots > MAX_SLOTS || (slots & (slots - 1)) !== 0) {
    throw new RangeError(`a session table has a power of two slots from 1 to ${MAX_SLOTS}, not ${slots}`);
  }
}

export class SessionTable {
  private readonly table: NativeSessionTable;
  private readonly statsOut = new Float64Array(STAT_COUNT);

  constructor(readonly slots: number) {
    checkSlots(slots);
    this.table = new (binding().SessionTable)(slots);
  }

  /**
   * Installs a session in `slot` (replacing and wiping what it held): `index` is what the peer puts in
   * the header (newIndex), sendKey seals, recvKey opens. Both keys are zero-filled on return.
   */
  install(slot: number, index: number, cipher: Cipher, sendKey: Uint8Array, recvKey: Uint8Array, opts?: InstallOptions): void {
    if (cipher !== Cipher.Aes256Gcm && cipher !== Cipher.ChaCha20Poly1305) throw new RangeError(`install: unknown cipher ${String(cipher)}`);
    if (!(sendKey instanceof Uint8Array) || sendKey.length !== KEY_LEN || !(recvKey instanceof Uint8Array) || recvKey.length !== KEY_LEN) {
      throw new TypeError(`install: sendKey and recvKey must be Uint8Arrays of ${KEY_LEN} bytes`);
    }
    const sendLimit = opts?.sendLimit ?? DEFAULT_SEND_LIMIT[cipher];
    const first = opts?.firstSendCounter ?? 0;
    if (!Number.isSafeInteger(sendLimit) || sendLimit < 0) throw new RangeError(`install: sendLimit ${sendLimit} is not an integer from 0 to 2^53 - 1`);
    if (!Number.isSafeInteger(first) || first < 0 || first > sendLimit) {
      throw new RangeError(`install: firstSendCounter ${first} is not an integer from 0 to sendLimit (${sendLimit})`);
    }
    this.table.install(slot, index, cipher, sendKey, recvKey, sendLimit, first);
  }

  /** Ends the session in `slot`: its packets get NoSession, its key schedules are cleared and freed. */
  wipe(slot: number): void {
    this.table.wipe(slot);
  }

  /** Wipes every slot (at stop(): the GC may never run the native destructor). */
  wipeAll(): void {
    this.table.wipeAll();
  }

  /**
   * Seals packets i < count in place: packet i is buf[offsets[i], +lengths[i]), its 20-byte header
   * written but the counter, with 16 bytes of room after it for the tag; slots[i] is its session.
   * On return lengths[i] is the sealed length, or 0 for a packet not sealed (no session in the slot,
   * or the send limit reached: replace the key). Returns how many were sealed. Allocation-free; a bad
   * argument throws before any packet is touched.
   */
  seal(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, slots: Uint16Array, count: number): number {
    return this.table.seal(buf, offsets, lengths, slots, count);
  }

  /**
   * Opens packets i < count in place: results[i] gets an OpenResult; for Ok ones slotsOut[i] is the
   * session's slot, the frame is buf[offsets[i] + 20, offsets[i] + lengths[i]) and lengths[i] has lost
   * the tag's 16 bytes. Other packets keep their length (Forged ones have their frame zeroed). Returns
   * how many were Ok. Allocation-free; a bad argument throws before any packet is touched.
   */
  open(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number, results: Uint8Array, slotsOut: Uint16Array): number {
    return this.table.open(buf, offsets, lengths, count, results, slotsOut);
  }

  /** The counter the slot's next sealed packet gets (0 for an empty slot). */
  sendCounter(slot: number): number {
    return this.table.sendCounter(slot);
  }

  hasSession(slot: number): boolean {
    return this.table.hasSession(slot);
  }

  /** The table's counters since it was made, or with `slot` that slot's since its install(). */
  stats(slot?: number): AeadStats {
    const v = this.statsOut;
    // -1 asks the addon for the table's totals; a caller's -1 is a wrong slot like any other.
    if (slot !== undefined && !(slot >= 0)) throw new RangeError(`stats: slot must be an integer from 0 to ${this.slots - 1}`);
    this.table.stats(v, slot ?? -1);
    return { sealed: v[0], sealNoSession: v[1], sealExhausted: v[2], sealFailed: v[3], opened: v[4], noSession: v[5], forged: v[6], replayed: v[7], tooOld: v[8], truncated: v[9] };
  }
}
