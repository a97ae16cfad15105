/**
 * Drop counters of the data plane, one per reason. The hot path bumps a slot of a Float64Array by a
 * constant index (no strings, no objects); names exist only for status output and logs.
 * Names follow STYLE: `inside.*` is TUN→UDP, `outside.*` is UDP→TUN.
 */
export const DROP_NAMES = [
  'inside.malformed', // not an IPv6 packet, or shorter than its header says
  'inside.noBinding', // no binding for the destination host ID
  'inside.noPath', // a binding, but no usable (uplink × locator) path of a matching family
  'inside.oversized', // frame larger than one datagram can carry
  'inside.sendError', // the kernel refused the datagram (unreachable, firewall, buffer timeout)
  'outside.truncated', // shorter than the data header
  'outside.badHeader', // flags we do not speak
  'outside.wrongInstance', // another realm's instance ID
  'outside.offloadMismatch', // vnet frame while not in offload mode, or the reverse
  'outside.malformed', // inner packet not IPv6 or its length fields disagree with the datagram
  'outside.oversized', // inner packet larger than the TUN accepts
  'outside.unknownPeer', // inner source host ID has no binding
  'outside.sourceNotBound', // datagram's source locator is not one of that host ID's bound locators
  'outside.notForUs', // inner destination is not this host's ID
  'outside.tunWriteError', // the kernel refused the write to the TUN
  'outside.reassembly', // an offload frame's chunk missing or out of order, or its context taken by newer frames: the frame is given up; also each later chunk of a frame whose first chunk was dropped
  'outside.duplicate', // a data counter this peer already delivered (a failover re-send or a make-before-break copy)
  'inside.noSession', // no session with the destination yet and no room to hold the packet while the handshake runs
  'inside.sealError', // the session's key was gone or used up when the batch was sealed (a rekey came too late)
  'outside.plaintext', // unencrypted data while encryption is on here (the peer has dataplane.encryption: off)
  'outside.sealed', // encrypted data while encryption is off here
  'outside.noSession', // sealed under a session index we do not hold (ours expired or we restarted)
  'outside.forged', // the AEAD tag did not verify: changed, corrupted or forged on the way
  'outside.tooOld', // a counter behind the replay window
  'outside.notFromPeer', // authenticated, but the inner source is not the session's peer
] as const;

export type DropName = (typeof DROP_NAMES)[number];

export const Drop = {
  InsideMalformed: 0,
  InsideNoBinding: 1,
  InsideNoPath: 2,
  InsideOversized: 3,
  InsideSendError: 4,
  OutsideTruncated: 5,
  OutsideBadHeader: 6,
  OutsideWrongInstance: 7,
  OutsideOffloadMismatch: 8,
  OutsideMalformed: 9,
  OutsideOversized: 10,
  OutsideUnknownPeer: 11,
  OutsideSourceNotBound: 12,
  OutsideNotForUs: 13,
  OutsideTunWriteError: 14,
  OutsideReassembly: 15,
  OutsideDuplicate: 16,
  InsideNoSession: 17,
  InsideSealError: 18,
  OutsidePlaintext: 19,
  OutsideSealed: 20,
  OutsideNoSession: 21,
  OutsideForged: 22,
  OutsideTooOld: 23,
  OutsideNotFromPeer: 24,
} as const;

export class DropCounters {
  readonly counts = new Float64Array(DROP_NAMES.length);

  add(reason: number, n = 1): void {
    this.counts[reason] += n;
  }

  get(name: DropName): number {
    return this.counts[DROP_NAMES.indexOf(name)];
  }

  total(): number {
    let t = 0;
    for (let i = 0; i < this.counts.length; i++) t += this.counts[i];
    return t;
  }

  snapshot(): Record<DropName, number> {
    const out = {} as Record<DropName, number>;
    DROP_NAMES.forEach((n, i) => (out[n] = this.counts[i]));
    return out;
  }
}
