import { idKey } from '../../shared/ids.ts';
import { TIMESTAMP_LEN } from './handshake-wire.ts';

/**
 * The initiation's timestamp and the responder's replay check (WireGuard whitepaper section 5.1:
 * "the responder keeps track of the greatest timestamp received per peer and discards packets
 * containing timestamps less than or equal to it").
 *
 * A replayed initiation decrypts fine (it is a genuine message), and answering it would make the
 * responder drop the real session for one whose keys the replayer cannot use. The timestamp, inside
 * the AEAD, stops that without any state on the initiator's side that must survive a restart: the
 * wall clock only moves forward (or, if it jumps back, handshakes with that responder fail until it
 * passes the last accepted value, as in WireGuard).
 *
 * TAI64N (12 bytes): 8 bytes of 2^62 + 10 + Unix seconds, 4 bytes of nanoseconds, big endian, so
 * comparing the bytes compares the times.
 */

/** How many initiator IDs the responder remembers a timestamp for. */
export const TIMESTAMP_MEMORY = 65_536;

const TAI64_BASE_HI = 0x4000_0000;
const TAI64_OFFSET = 10;

/**
 * Makes strictly increasing TAI64N timestamps from the clock (Unix ms): two initiations in the same
 * millisecond still get distinct, increasing values (one nanosecond apart), so the responder never
 * refuses the second of two quick handshakes from one process.
 */
export class TimestampSource {
  private lastS = 0;
  private lastNs = 0;

  next(nowMs: number): Uint8Array {
    let s = Math.floor(nowMs / 1000);
    let ns = Math.floor(nowMs - s * 1000) * 1_000_000;
    if (s < this.lastS || (s === this.lastS && ns <= this.lastNs)) {
      s = this.lastS;
      ns = this.lastNs + 1;
      if (ns >= 1_000_000_000) {
        s++;
        ns = 0;
      }
    }
    this.lastS = s;
    this.lastNs = ns;
    const out = new Uint8Array(TIMESTAMP_LEN);
    const dv = new DataView(out.buffer);
    const secs = s + TAI64_OFFSET;
    dv.setUint32(0, TAI64_BASE_HI + Math.floor(secs / 0x1_0000_0000), false);
    dv.setUint32(4, secs >>> 0, false);
    dv.setUint32(8, ns, false);
    return out;
  }
}

/**
 * The greatest timestamp accepted per initiator ID, for at most `max` IDs (least recently accepted
 * forgotten first). Entries are recorded only after the initiation authenticated and was admitted,
 * so only admitted hosts occupy it; an ID pushed out by 65,536 others could have one old initiation
 * replayed once, which costs it a handshake, not its keys.
 */
export class TimestampMemory {
  private readonly last = new Map<string, Uint8Array>();

  constructor(private readonly max = TIMESTAMP_MEMORY) {}

  /** True when ts is greater than the last timestamp accepted from id (or none is known). */
  isFresh(id: Uint8Array, ts: Uint8Array): boolean {
    const prev = this.last.get(idKey(id));
    return prev === undefined || compare12(ts, prev) > 0;
  }

  record(id: Uint8Array, ts: Uint8Array): void {
    const k = idKey(id);
    this.last.delete(k);
    this.last.set(k, Uint8Array.from(ts));
    if (this.last.size > this.max) {
      const oldest = this.last.keys().next();
      if (oldest.done !== true) this.last.delete(oldest.value);
    }
  }

  get size(): number {
    return this.last.size;
  }
}

function compare12(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < TIMESTAMP_LEN; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return 0;
}
