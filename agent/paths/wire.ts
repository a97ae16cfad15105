import { HEADER_LEN, PEER_FLAGS } from '../../shared/wire/header.ts';
import { MAC_LEN, mac, macVerify, type MacKey } from '../../shared/crypto/blake2s.ts';
import { MAX_BINDING_LEN } from '../../shared/binding.ts';

/**
 * Messages between two agents, on the data port (UDP 4341), so that a probe takes exactly the path
 * the data takes: same socket, same source address, same policy route, same ISP.
 *
 * Header bytes 1-3 (the data header's nonce) carry a probe's or reply's map version (below).
 *
 *   0       8        9      10            26            42       50         58       60        60+n      +16
 *   | header | version | type | sender ID  | receiver ID | token  | counter  | bindLen | binding | MAC |
 *
 * The header is the data header's layout with flags E|I and N clear (RFC 9300 data planes ignore E
 * without N, and our data path requires N): the first byte alone tells a peer message from data.
 * Types: probe (asks for a reply on the same path), reply (echoes the probe's token), update (a signed
 * binding, sent straight to a correspondent when ours changes), updateAck (echoes the update's token).
 *
 * Every message carries a 16-byte keyed-BLAKE2s MAC under the pair's key (paths/pairkey.ts), so nobody
 * without one of the two private keys can forge a reply that keeps a dead path "up" or a probe that
 * makes us answer. Replays: a reply or ack is only accepted for a token still outstanding; probes and
 * updates carry a per-sender counter checked against a sliding window; an update's binding also has
 * its own sequence number.
 */
export { PEER_FLAGS };
export const PEER_VERSION = 1;

export const PeerType = { Probe: 1, Reply: 2, Update: 3, UpdateAck: 4 } as const;
export type PeerType = (typeof PeerType)[keyof typeof PeerType];

const O_VERSION = HEADER_LEN;
const O_TYPE = O_VERSION + 1;
const O_FROM = O_TYPE + 1;
const O_TO = O_FROM + 16;
const O_TOKEN = O_TO + 16;
const O_COUNTER = O_TOKEN + 8;
const O_BINDLEN = O_COUNTER + 8;
const O_BINDING = O_BINDLEN + 2;

export const PEER_MIN_LEN = O_BINDING + MAC_LEN;
export const PEER_MAX_LEN = PEER_MIN_LEN + MAX_BINDING_LEN;

export interface PeerMessage {
  readonly type: PeerType;
  readonly instanceId: number;
  readonly from: Uint8Array;
  readonly to: Uint8Array;
  /** 53-bit random number; replies and acks echo it. */
  readonly token: number;
  /** The sender's message counter (replay window), < 2^53. */
  readonly counter: number;
  /** Update only: the encoded signed binding. */
  readonly binding?: Uint8Array;
  /**
   * Probe and reply: the low 24 bits of the sender's own binding sequence number (LISP
   * map-versioning's idea, docs/hierarchy.md): a receiver whose cached binding of the sender has
   * another version knows it is stale and looks it up again. 0: no version (older agents).
   */
  readonly mapVersion?: number;
}

/** Writes msg at out[0..) and MACs it; returns the length. out must hold PEER_MAX_LEN bytes. */
export function encodePeer(out: Buffer, msg: PeerMessage, key: MacKey): number {
  const bind = msg.binding ?? EMPTY;
  out[0] = PEER_FLAGS;
  const v = msg.mapVersion ?? 0;
  out[1] = (v >>> 16) & 0xff;
  out[2] = (v >>> 8) & 0xff;
  out[3] = v & 0xff;
  out[4] = (msg.instanceId >>> 16) & 0xff;
  out[5] = (msg.instanceId >>> 8) & 0xff;
  out[6] = msg.instanceId & 0xff;
  out[7] = 0;
  out[O_VERSION] = PEER_VERSION;
  out[O_TYPE] = msg.type;
  out.set(msg.from, O_FROM);
  out.set(msg.to, O_TO);
  write53(out, O_TOKEN, msg.token);
  write53(out, O_COUNTER, msg.counter);
  out.writeUInt16BE(bind.length, O_BINDLEN);
  out.set(bind, O_BINDING);
  const end = O_BINDING + bind.length;
  mac(key, out, 0, end, out, end);
  return end + MAC_LEN;
}

export type PeerDecodeFailure = 'peerMalformed' | 'peerVersion' | 'peerWrongInstance';

/** The parts of a peer message readable before the MAC is checked (we need `from` to find the key). */
export interface PeerEnvelope {
  readonly type: PeerType;
  /** Offsets into the datagram; nothing is copied. */
  readonly fromOff: number;
  readonly toOff: number;
}

/**
 * Checks framing of the datagram at buf[off, off+len): returns the envelope or why it is no peer
 * message we can handle. Lengths are exact: an update's binding length must fill the datagram.
 */
export function openPeer(buf: Uint8Array, off: number, len: number, instanceId: number): PeerEnvelope | PeerDecodeFailure {
  if (len < PEER_MIN_LEN || len > PEER_MAX_LEN || buf[off] !== PEER_FLAGS) return 'peerMalformed';
  if (buf[off + O_VERSION] !== PEER_VERSION) return 'peerVersion';
  const iid = (buf[off + 4] << 16) | (buf[off + 5] << 8) | buf[off + 6];
  if (iid !== instanceId) return 'peerWrongInstance';
  const type = buf[off + O_TYPE];
  if (type < PeerType.Probe || type > PeerType.UpdateAck) return 'peerMalformed';
  const bindLen = (buf[off + O_BINDLEN] << 8) | buf[off + O_BINDLEN + 1];
  if (O_BINDING + bindLen + MAC_LEN !== len) return 'peerMalformed';
  if ((type === PeerType.Update) !== bindLen > 0) return 'peerMalformed';
  return { type: type as PeerType, fromOff: off + O_FROM, toOff: off + O_TO };
}

export function verifyPeer(key: MacKey, buf: Uint8Array, off: number, len: number): boolean {
  return macVerify(key, buf, off, off + len - MAC_LEN, off + len - MAC_LEN);
}

/** Reads the rest once the MAC has been checked. */
export function readPeer(buf: Uint8Array, off: number, len: number, env: PeerEnvelope): PeerMessage {
  const bindLen = (buf[off + O_BINDLEN] << 8) | buf[off + O_BINDLEN + 1];
  return {
    type: env.type,
    instanceId: (buf[off + 4] << 16) | (buf[off + 5] << 8) | buf[off + 6],
    from: Uint8Array.from(buf.subarray(off + O_FROM, off + O_FROM + 16)),
    to: Uint8Array.from(buf.subarray(off + O_TO, off + O_TO + 16)),
    token: read53(buf, off + O_TOKEN),
    counter: read53(buf, off + O_COUNTER),
    binding: bindLen > 0 ? Uint8Array.from(buf.subarray(off + O_BINDING, off + O_BINDING + bindLen)) : undefined,
    mapVersion: (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3],
  };
}

const EMPTY = new Uint8Array(0);
const TWO32 = 4294967296;

function write53(b: Buffer, off: number, v: number): void {
  b.writeUInt32BE(Math.floor(v / TWO32) & 0x1fffff, off);
  b.writeUInt32BE(v >>> 0, off + 4);
}

function read53(b: Uint8Array, off: number): number {
  const hi = ((b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3]) >>> 0;
  const lo = ((b[off + 4] << 24) | (b[off + 5] << 16) | (b[off + 6] << 8) | b[off + 7]) >>> 0;
  return (hi & 0x1fffff) * TWO32 + lo;
}
