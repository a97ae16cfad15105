/**
 * Spreading flows over equally preferred paths: a hash of the inner packet's flow (flowHash) and a
 * weighted rendezvous choice among the entry's flow group (pickByWeight). Both run per packet in
 * inside.ts and allocate nothing. Whole flows move, never single packets of one flow: reordering
 * inside a TCP flow costs it far more than an uneven spread.
 */

/**
 * Index of the candidate that carries the flow, chosen with weighted rendezvous hashing: each candidate
 * scores weight / -ln(u) with u uniform from (flowHash, key), the highest wins, so each candidate gets
 * weight/Σweight of the flows, and when a candidate leaves the group only its own flows move. `key`
 * identifies a candidate across calls (e.g. the uplink index); the array index is used without it.
 * Returns -1 when no candidate has a positive weight. Allocates nothing.
 */
export function pickByWeight(flowHash: number, candidates: readonly { readonly weight: number; readonly key?: number }[]): number {
  let best = -1;
  let bestScore = -Infinity;
  for (let i = 0; i < candidates.length; i++) {
    const c = candidates[i];
    if (!(c.weight > 0)) continue;
    const h = fmix32(Math.imul((flowHash ^ Math.imul((c.key ?? i) + 1, 0x9e3779b1)) | 0, 0x85ebca6b));
    // u in (0, 1): never 0 (log would be -Infinity) nor 1.
    const u = ((h >>> 0) + 0.5) / 4294967296;
    const score = c.weight / -Math.log(u);
    if (score > bestScore) {
      bestScore = score;
      best = i;
    }
  }
  return best;
}

const NH_HOP_BY_HOP = 0;
const NH_TCP = 6;
const NH_UDP = 17;
const NH_ROUTING = 43;
const NH_FRAGMENT = 44;
const NH_DEST_OPTS = 60;
const NH_SCTP = 132;
const NH_UDPLITE = 136;

/**
 * A 32-bit hash of the inner IPv6 packet at buf[off..off+len): source, destination, upper-layer
 * protocol and, for TCP/UDP/UDP-Lite/SCTP, the ports; otherwise (and for fragments, so that all
 * fragments of a packet hash alike) the flow label. Skips up to four extension headers. Reads only
 * inside the packet; a packet that is not IPv6 or too short hashes to 0. Allocates nothing.
 */
export function flowHash(buf: Uint8Array, off: number, len: number = buf.length - off): number {
  const end = Math.min(buf.length, off + len);
  if (end - off < 40 || buf[off] >> 4 !== 6) return 0;
  let h = 0x2545f491;
  for (let i = off + 8; i < off + 40; i += 4) h = mixWord(h, read32(buf, i));
  let nh = buf[off + 6];
  let p = off + 40;
  let ports = 0;
  let hasPorts = false;
  let fragment = false;
  for (let hops = 0; hops < 4; hops++) {
    if (nh === NH_HOP_BY_HOP || nh === NH_ROUTING || nh === NH_DEST_OPTS) {
      if (p + 8 > end) break;
      const next = buf[p];
      p += (buf[p + 1] + 1) * 8;
      nh = next;
    } else if (nh === NH_FRAGMENT) {
      if (p + 8 > end) break;
      nh = buf[p];
      fragment = true;
      break;
    } else break;
  }
  if (!fragment && (nh === NH_TCP || nh === NH_UDP || nh === NH_UDPLITE || nh === NH_SCTP) && p + 4 <= end) {
    ports = read32(buf, p);
    hasPorts = true;
  }
  h = mixWord(h, nh);
  const flowLabel = ((buf[off + 1] & 0x0f) << 16) | (buf[off + 2] << 8) | buf[off + 3];
  h = mixWord(h, hasPorts ? ports : flowLabel);
  return fmix32(h) >>> 0;
}

function read32(b: Uint8Array, i: number): number {
  return ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) | 0;
}

// MurmurHash3's block mix and finaliser (32-bit, Math.imul: no allocation, stays in Smi/int32).
function mixWord(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h | 0;
}