import { HANDSHAKE_FLAGS, MAX_INSTANCE_ID } from '../../shared/wire/header.ts';
import { CERT_LEN } from '../../shared/membership.ts';

/**
 * Byte layouts of the three session-handshake messages (docs/dataplane-crypto-handshake.md), and
 * their decoders. (Named handshake-wire.ts, not wire.ts: agent/paths/wire.ts has that name and the
 * layout test keeps file names unique.)
 *
 * Every message opens with the 8-byte handshake header:
 *
 *   [0]      HANDSHAKE_FLAGS (E, I, K set, N clear: shared/wire/header.ts)
 *   [1]      type: 1 initiation, 2 response, 3 cookie reply
 *   [2, 4)   zero
 *   [4, 7)   the realm's instance ID (24 bits, big endian)
 *   [7]      zero
 *
 * Each type has one or two exact lengths, so the length alone rejects most garbage, and the decoders
 * check the whole header before anything else. Decoders never throw and never copy: they return the
 * offsets of the fields in the caller's buffer, which stays borrowed (valid until the caller reuses
 * it). All integers are big endian.
 */

export const HS_HEADER_LEN = 8;
export const MSG_INITIATION = 1;
export const MSG_RESPONSE = 2;
export const MSG_COOKIE_REPLY = 3;
/** An agent with encryption off answers an initiation with this: the header and the initiator's index. */
export const MSG_REFUSED = 4;
export const REFUSED_INDEX_OFF = 8;
export const REFUSED_LEN = 12;

export const MAC_LEN = 16;
export const AEAD_TAG_LEN = 16;
export const TIMESTAMP_LEN = 12;
/** The identity record in the initiation: host ID 16 ‖ Ed25519 public key 32 ‖ certificate length u16. */
export const IDENTITY_FIXED_LEN = 16 + 32 + 2;
export const COOKIE_LEN = 16;
export const COOKIE_NONCE_LEN = 24;

/*
 * Initiation, 170 bytes without a certificate, 367 with one:
 *
 *   [0, 8)      header, type 1
 *   [8, 12)     sender index (the initiator's session index)
 *   [12, 44)    the initiator's ephemeral X25519 public key, in clear
 *   [44, 44+S)  the identity record, encrypted: S = 50 + 16 (no certificate) or 50 + 197 + 16
 *   then 28     the TAI64N timestamp, encrypted (12 + 16)
 *   then 16     mac1: keyed BLAKE2s-128 over everything before it
 *   then 16     mac2: keyed BLAKE2s-128 under the cookie over everything before it, or zeros
 */
export const INIT_SENDER_OFF = 8;
export const INIT_EPHEMERAL_OFF = 12;
export const INIT_STATIC_OFF = 44;
const INIT_TAIL_LEN = TIMESTAMP_LEN + AEAD_TAG_LEN + MAC_LEN + MAC_LEN;
export const STATIC_CT_LEN_NO_CERT = IDENTITY_FIXED_LEN + AEAD_TAG_LEN;
export const STATIC_CT_LEN_CERT = IDENTITY_FIXED_LEN + CERT_LEN + AEAD_TAG_LEN;
export const INITIATION_LEN = INIT_STATIC_OFF + STATIC_CT_LEN_NO_CERT + INIT_TAIL_LEN;
export const INITIATION_CERT_LEN = INIT_STATIC_OFF + STATIC_CT_LEN_CERT + INIT_TAIL_LEN;

/*
 * Response, 96 bytes:
 *
 *   [0, 8)    header, type 2
 *   [8, 12)   sender index (the responder's session index)
 *   [12, 16)  receiver index (the initiator's, from the initiation)
 *   [16, 48)  the responder's ephemeral X25519 public key
 *   [48, 64)  the empty payload, encrypted: only the tag
 *   [64, 80)  mac1    [80, 96) mac2 (zeros: an initiator never sends cookies)
 */
export const RESP_SENDER_OFF = 8;
export const RESP_RECEIVER_OFF = 12;
export const RESP_EPHEMERAL_OFF = 16;
export const RESP_EMPTY_OFF = 48;
export const RESP_MAC1_OFF = 64;
export const RESP_MAC2_OFF = 80;
export const RESPONSE_LEN = 96;

/*
 * Cookie reply, 68 bytes:
 *
 *   [0, 8)    header, type 3
 *   [8, 12)   receiver index (the initiator's, from the initiation it answers)
 *   [12, 36)  a random 24-byte XChaCha20 nonce
 *   [36, 68)  the cookie, encrypted (16 + 16), with the answered initiation's mac1 as associated data
 */
export const COOKIE_RECEIVER_OFF = 8;
export const COOKIE_NONCE_OFF = 12;
export const COOKIE_CT_OFF = 36;
export const COOKIE_REPLY_LEN = 68;

/** The largest handshake message: an out buffer of this size fits any of them. */
export const MAX_HANDSHAKE_LEN = INITIATION_CERT_LEN;

export type HandshakeDropReason =
  | 'truncated'
  | 'badHeader'
  | 'badType'
  | 'wrongInstance'
  | 'badMac1'
  | 'needCookie'
  | 'badMac2'
  | 'decryptFailed'
  | 'badKey'
  | 'badIdentity'
  | 'staleTimestamp'
  | 'notAdmitted'
  | 'wrongIndex'
  | 'consumed';

export type Decoded<T> = { ok: true; msg: T } | { ok: false; reason: HandshakeDropReason };

/** Where an initiation's fields are, as absolute offsets into the caller's buffer. */
export interface InitiationView {
  readonly senderIndex: number;
  readonly ephemeralOff: number;
  readonly staticOff: number;
  readonly staticLen: number;
  readonly timestampOff: number;
  readonly mac1Off: number;
  readonly mac2Off: number;
}

export interface ResponseView {
  readonly senderIndex: number;
  readonly receiverIndex: number;
  readonly ephemeralOff: number;
  readonly emptyOff: number;
  readonly mac1Off: number;
  readonly mac2Off: number;
}

export interface CookieReplyView {
  readonly receiverIndex: number;
  readonly nonceOff: number;
  readonly cookieOff: number;
}

export function writeHandshakeHeader(out: Uint8Array, off: number, type: number, instanceId: number): void {
  out[off] = HANDSHAKE_FLAGS;
  out[off + 1] = type;
  out[off + 2] = 0;
  out[off + 3] = 0;
  out[off + 4] = (instanceId >>> 16) & 0xff;
  out[off + 5] = (instanceId >>> 8) & 0xff;
  out[off + 6] = instanceId & 0xff;
  out[off + 7] = 0;
}

/**
 * The refusal an agent with encryption off answers the initiation at init[off, off+len) with (12
 * bytes, smaller than what drew it): the initiator's index, so the initiator can say which peer
 * refuses. Returns its length, 0 if `init` is not an initiation.
 */
export function writeRefusal(out: Uint8Array, init: Uint8Array, off: number, len: number, instanceId: number): number {
  if (len < INIT_SENDER_OFF + 4 || init[off] !== HANDSHAKE_FLAGS || init[off + 1] !== MSG_INITIATION) return 0;
  writeHandshakeHeader(out, 0, MSG_REFUSED, instanceId);
  out.set(init.subarray(off + INIT_SENDER_OFF, off + INIT_SENDER_OFF + 4), REFUSED_INDEX_OFF);
  return REFUSED_LEN;
}

/**
 * The type of the handshake message at buf[off, off+len), or 0 when it is not one (too short, wrong
 * first byte). For the integrator's dispatch; the decoders below check everything again.
 */
export function handshakeType(buf: Uint8Array, off: number, len: number): number {
  if (len < HS_HEADER_LEN || off < 0 || off + len > buf.length || buf[off] !== HANDSHAKE_FLAGS) return 0;
  const t = buf[off + 1];
  return t === MSG_INITIATION || t === MSG_RESPONSE || t === MSG_COOKIE_REPLY ? t : 0;
}

/**
 * The receiver index of a response or cookie reply (the initiator's local index: what its pending
 * initiations are keyed by), or -1 when the message is too short or of another type.
 */
export function receiverIndexOf(buf: Uint8Array, off: number, len: number): number {
  const t = handshakeType(buf, off, len);
  if (t === MSG_RESPONSE && len >= RESP_RECEIVER_OFF + 4) return u32(buf, off + RESP_RECEIVER_OFF);
  if (t === MSG_COOKIE_REPLY && len >= COOKIE_RECEIVER_OFF + 4) return u32(buf, off + COOKIE_RECEIVER_OFF);
  return -1;
}

function checkHeader(buf: Uint8Array, off: number, len: number, type: number, instanceId: number, lens: readonly number[]): HandshakeDropReason | null {
  if (!Number.isInteger(off) || !Number.isInteger(len) || off < 0 || len < 0 || off + len > buf.length) return 'truncated';
  if (len < HS_HEADER_LEN) return 'truncated';
  if (buf[off] !== HANDSHAKE_FLAGS || buf[off + 2] !== 0 || buf[off + 3] !== 0 || buf[off + 7] !== 0) return 'badHeader';
  if (buf[off + 1] !== type) return 'badType';
  const iid = (buf[off + 4] << 16) | (buf[off + 5] << 8) | buf[off + 6];
  if (iid !== (instanceId & MAX_INSTANCE_ID)) return 'wrongInstance';
  // Only the exact lengths: anything else is cut or padded, and refused before any MAC is computed.
  if (!lens.includes(len)) return 'truncated';
  return null;
}

export function decodeInitiation(buf: Uint8Array, off: number, len: number, instanceId: number): Decoded<InitiationView> {
  const bad = checkHeader(buf, off, len, MSG_INITIATION, instanceId, INITIATION_LENS);
  if (bad !== null) return { ok: false, reason: bad };
  const staticLen = len === INITIATION_LEN ? STATIC_CT_LEN_NO_CERT : STATIC_CT_LEN_CERT;
  const timestampOff = off + INIT_STATIC_OFF + staticLen;
  return {
    ok: true,
    msg: {
      senderIndex: u32(buf, off + INIT_SENDER_OFF),
      ephemeralOff: off + INIT_EPHEMERAL_OFF,
      staticOff: off + INIT_STATIC_OFF,
      staticLen,
      timestampOff,
      mac1Off: timestampOff + TIMESTAMP_LEN + AEAD_TAG_LEN,
      mac2Off: timestampOff + TIMESTAMP_LEN + AEAD_TAG_LEN + MAC_LEN,
    },
  };
}
const INITIATION_LENS = [INITIATION_LEN, INITIATION_CERT_LEN] as const;

export function decodeResponse(buf: Uint8Array, off: number, len: number, instanceId: number): Decoded<ResponseView> {
  const bad = checkHeader(buf, off, len, MSG_RESPONSE, instanceId, RESPONSE_LENS);
  if (bad !== null) return { ok: false, reason: bad };
  return {
    ok: true,
    msg: {
      senderIndex: u32(buf, off + RESP_SENDER_OFF),
      receiverIndex: u32(buf, off + RESP_RECEIVER_OFF),
      ephemeralOff: off + RESP_EPHEMERAL_OFF,
      emptyOff: off + RESP_EMPTY_OFF,
      mac1Off: off + RESP_MAC1_OFF,
      mac2Off: off + RESP_MAC2_OFF,
    },
  };
}
const RESPONSE_LENS = [RESPONSE_LEN] as const;

export function decodeCookieReply(buf: Uint8Array, off: number, len: number, instanceId: number): Decoded<CookieReplyView> {
  const bad = checkHeader(buf, off, len, MSG_COOKIE_REPLY, instanceId, COOKIE_LENS);
  if (bad !== null) return { ok: false, reason: bad };
  return {
    ok: true,
    msg: { receiverIndex: u32(buf, off + COOKIE_RECEIVER_OFF), nonceOff: off + COOKIE_NONCE_OFF, cookieOff: off + COOKIE_CT_OFF },
  };
}
const COOKIE_LENS = [COOKIE_REPLY_LEN] as const;

/**
 * The identity record inside the initiation (after decryption): host ID 16 ‖ Ed25519 public key 32 ‖
 * certificate length u16 ‖ certificate. The length must be 0 (a static-config peer) or CERT_LEN and
 * fill the record exactly.
 */
export function decodeIdentity(rec: Uint8Array): Decoded<{ id: Uint8Array; edPublic: Uint8Array; cert: Uint8Array | null }> {
  if (rec.length < IDENTITY_FIXED_LEN) return { ok: false, reason: 'badIdentity' };
  const certLen = (rec[48] << 8) | rec[49];
  if ((certLen !== 0 && certLen !== CERT_LEN) || rec.length !== IDENTITY_FIXED_LEN + certLen) return { ok: false, reason: 'badIdentity' };
  return {
    ok: true,
    msg: {
      id: rec.slice(0, 16),
      edPublic: rec.slice(16, 48),
      cert: certLen === 0 ? null : rec.slice(IDENTITY_FIXED_LEN, IDENTITY_FIXED_LEN + certLen),
    },
  };
}

export function encodeIdentity(id: Uint8Array, edPublic: Uint8Array, cert: Uint8Array | null): Uint8Array {
  const certLen = cert === null ? 0 : cert.length;
  const rec = new Uint8Array(IDENTITY_FIXED_LEN + certLen);
  rec.set(id, 0);
  rec.set(edPublic, 16);
  rec[48] = certLen >>> 8;
  rec[49] = certLen & 0xff;
  if (cert !== null) rec.set(cert, IDENTITY_FIXED_LEN);
  return rec;
}

export function writeU32(out: Uint8Array, off: number, v: number): void {
  out[off] = (v >>> 24) & 0xff;
  out[off + 1] = (v >>> 16) & 0xff;
  out[off + 2] = (v >>> 8) & 0xff;
  out[off + 3] = v & 0xff;
}

function u32(b: Uint8Array, off: number): number {
  return ((b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3]) >>> 0;
}
