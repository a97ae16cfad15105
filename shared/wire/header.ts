/**
 * The data header: the LISP data-plane header of RFC 9300 section 5.1, 8 bytes, so that tshark's
 * `lisp-data` dissector (UDP 4341) decodes our traffic, inner packet included.
 *
 *    0                   1                   2                   3
 *   |N|L|E|V|I|R|K|K|            Nonce (24 bits)                    |
 *   |                 Instance ID (24 bits)         |   LSBs (8)    |
 *
 * We always set N (the nonce is the sender's data counter for this destination, 24 bits, wrapping: the
 * receiver delivers each number once, shared/wire/replay.ts DuplicateFilter; in offload mode it
 * numbers frames, every chunk of a frame carries its frame's) and
 * I (the instance ID is the realm's instance, so two realms on one port never mix). L, E, V and the
 * key bits stay zero. The one bit RFC 9300 leaves reserved, R, marks offload mode: the frame starts
 * with a 10-byte virtio_net_hdr and may be a TSO super-packet of up to 64 KB. A receiver not in
 * offload mode drops such datagrams.
 *
 * An offload frame larger than one datagram travels as chunks, each with its own header: the nonce
 * is the frame's number (the same in every chunk), and the last byte (the LSB field, unused while L
 * is clear) holds the chunk index in its low 7 bits and a "last chunk" flag in its top bit. Chunks
 * are of equal size but the last, so the sender hands them to the kernel as one UDP GSO message and
 * the underlay carries ordinary datagrams: no IP fragmentation.
 */
export const HEADER_LEN = 8;
export const DATA_PORT = 4341;
export const VNET_HDR_LEN = 10;

export const FLAG_N = 0x80;
export const FLAG_L = 0x40;
export const FLAG_E = 0x20;
export const FLAG_V = 0x10;
export const FLAG_I = 0x08;
export const FLAG_VNET = 0x04;
const FLAGS_MUST_BE_ZERO = FLAG_L | FLAG_E | FLAG_V | 0x02;

export const MAX_INSTANCE_ID = 0xffffff;

/*
 * Sealed data (the default, docs/dataplane-crypto.md): the K bits are 01 (RFC 8061's key ID 1: the
 * payload is encrypted), and 12 bytes follow the LISP header, so the header sealed datagrams carry is
 *
 *   [0, 8)    the LISP header above (N, I, K=01, R for offload; nonce = low 24 bits of the counter;
 *             instance ID; chunk byte in offload mode)
 *   [8, 12)   the receiver's session index (u32, big-endian), chosen by the receiver
 *   [12, 20)  the sender's counter for this session (u64, big-endian): the AEAD nonce and the
 *             replay window's sequence number
 *   [20, n-16) the frame, encrypted          [n-16, n) the AEAD tag
 *
 * The AEAD's associated data is the 20-byte header, so no header bit can be changed either.
 */
export const FLAG_K = 0x01;
export const SEALED_HEADER_LEN = 20;
export const SEALED_INDEX_OFF = 8;
export const SEALED_COUNTER_OFF = 12;
export const TAG_LEN = 16;
/** What sealing adds to a frame compared with the plain 8-byte header: 12 header bytes and the tag. */
export const SEALED_EXTRA = SEALED_HEADER_LEN - HEADER_LEN + TAG_LEN;
/**
 * First byte of a session handshake message between two agents (agent/sessions/): E, I and K set,
 * N clear — like peer messages, which RFC 9300 data planes ignore, and distinct from them.
 */
export const HANDSHAKE_FLAGS = FLAG_E | FLAG_I | FLAG_K;

/**
 * Writes a sealed header's first 12 bytes at `off` (the counter, and the nonce bytes that mirror it,
 * are written when the batch is sealed). Allocation-free; the caller guarantees 20 bytes of room.
 */
export function writeSealedHeader(buf: Uint8Array, off: number, instanceId: number, vnet: boolean, chunk: number, index: number): void {
  buf[off] = FLAG_N | FLAG_I | FLAG_K | (vnet ? FLAG_VNET : 0);
  buf[off + 4] = (instanceId >>> 16) & 0xff;
  buf[off + 5] = (instanceId >>> 8) & 0xff;
  buf[off + 6] = instanceId & 0xff;
  buf[off + 7] = chunk;
  buf[off + 8] = index >>> 24;
  buf[off + 9] = (index >>> 16) & 0xff;
  buf[off + 10] = (index >>> 8) & 0xff;
  buf[off + 11] = index & 0xff;
}

/** A sealed datagram's counter (u64 big-endian at 12); exact below 2^53, which rekeying keeps it under. */
export function sealedCounter(buf: Uint8Array, off: number): number {
  const hi = ((buf[off + 12] << 24) | (buf[off + 13] << 16) | (buf[off + 14] << 8) | buf[off + 15]) >>> 0;
  const lo = ((buf[off + 16] << 24) | (buf[off + 17] << 16) | (buf[off + 18] << 8) | buf[off + 19]) >>> 0;
  return hi * 0x1_0000_0000 + lo;
}

/** The header's K bits say the datagram is sealed. */
export function headerSealed(buf: Uint8Array, off: number): boolean {
  return (buf[off] & 0x03) === FLAG_K;
}

/**
 * First byte of a message between two agents (path probes, direct binding updates: agent/peers/):
 * E and I set, N clear. Data always has N set, so one byte tells them apart, and RFC 9300 data
 * planes ignore E without N.
 */
export const PEER_FLAGS = FLAG_E | FLAG_I;

/** Writes a header at `off`. Allocation-free; the caller guarantees 8 bytes of room. */
export function writeHeader(buf: Uint8Array, off: number, nonce: number, instanceId: number, vnet: boolean): void {
  buf[off] = FLAG_N | FLAG_I | (vnet ? FLAG_VNET : 0);
  buf[off + 1] = (nonce >>> 16) & 0xff;
  buf[off + 2] = (nonce >>> 8) & 0xff;
  buf[off + 3] = nonce & 0xff;
  buf[off + 4] = (instanceId >>> 16) & 0xff;
  buf[off + 5] = (instanceId >>> 8) & 0xff;
  buf[off + 6] = instanceId & 0xff;
  buf[off + 7] = 0;
}

/**
 * Result codes of checkHeader. A number rather than an object so the receive path allocates nothing;
 * dataplane/drops.ts maps them to counter names.
 */
export const HeaderCheck = { Ok: 0, Truncated: 1, BadFlags: 2, WrongInstance: 3 } as const;
export type HeaderCheck = (typeof HeaderCheck)[keyof typeof HeaderCheck];

/** Validates the header of a datagram of `len` bytes at `off`. */
export function checkHeader(buf: Uint8Array, off: number, len: number, instanceId: number): HeaderCheck {
  if (len < HEADER_LEN) return HeaderCheck.Truncated;
  const flags = buf[off];
  if ((flags & FLAG_I) === 0 || (flags & FLAGS_MUST_BE_ZERO) !== 0) return HeaderCheck.BadFlags;
  const iid = (buf[off + 4] << 16) | (buf[off + 5] << 8) | buf[off + 6];
  if (iid !== instanceId) return HeaderCheck.WrongInstance;
  return HeaderCheck.Ok;
}

export function headerHasVnet(buf: Uint8Array, off: number): boolean {
  return (buf[off] & FLAG_VNET) !== 0;
}

export const CHUNK_LAST = 0x80;
export const MAX_CHUNKS = 0x7f;

/** Sets the chunk byte of a header already written at `off` (offload mode only). */
export function writeChunk(buf: Uint8Array, off: number, index: number, last: boolean): void {
  buf[off + 7] = (index & MAX_CHUNKS) | (last ? CHUNK_LAST : 0);
}

export function chunkByte(buf: Uint8Array, off: number): number {
  return buf[off + 7];
}

export function headerNonce(buf: Uint8Array, off: number): number {
  return (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3];
}
