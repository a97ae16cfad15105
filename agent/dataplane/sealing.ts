import type { SessionTable } from '../../shared/crypto/aead.ts';
import type { Traffic } from '../mapcache/cache.ts';

/**
 * The data plane's view of encryption (docs/dataplane-crypto.md): the native session table that seals
 * and opens whole batches, and the few calls into the session manager (agent/sessions/) that the
 * packet path needs. The manager implements it; the data plane imports no control plane.
 */
export interface Sealing {
  /** Native keys, counters and replay windows, one slot per session. */
  readonly table: SessionTable;
  /** Slot s's peer host ID at [s*16, s*16+16): an opened packet's inner source must be it. */
  readonly slotPeer: Uint8Array;
  /**
   * 1 while slot s is a responder's new session that has not yet received a packet: the first one
   * confirms the initiator holds the keys (onConfirmed), and only then does this side send on it.
   */
  readonly slotUnconfirmed: Uint8Array;
  /**
   * The destination host (ID at id[idOff]: the packet's destination, or for a user/data ID the host
   * chosen for its flow) has no session in `traffic.txSlot`: returns the slot to use (the manager
   * had one and set traffic.txSlot/txIndex), HELD (it kept a copy of the packet at buf[off, off+len)
   * and a handshake is under way) or DROP. Borrowed buffers.
   */
  sessionFor(traffic: Traffic, id: Uint8Array, idOff: number, buf: Buffer, off: number, len: number): number;
  onConfirmed(slot: number): void;
  /** A handshake message (first byte HANDSHAKE_FLAGS) from the network. Borrowed. */
  onHandshake(uplink: number, buf: Buffer, off: number, len: number, srcAddrs: Uint8Array, srcOff: number, port: number): void;
}

export const HELD = -1;
export const DROP = -2;

/** Mixed settings between two agents: each end says so in its log (rate-limited by the caller). */
export type MismatchHandler = (sealedHere: boolean, uplink: number, buf: Buffer, off: number, len: number, srcAddrs: Uint8Array, srcOff: number, port: number) => void;
