import type { MapEntry } from '../mapcache/cache.ts';

/**
 * The data plane's view of slice 2 (docs/slice2.md): packets to and from user and data IDs, which
 * several hosts serve. The control plane (agent/groups/) implements it; the data plane imports none
 * of it. Every call reads the packet in place and allocates nothing.
 */
export interface Grouping {
  /**
   * inside: a packet to an ID the map-cache has no host entry for (IPv6 packet at buf[ip, ip+len)).
   * The entry of the host its flow is pinned to (chosen now for a new flow); null when the packet is
   * handled (no host can take it now, or its flow was reset: counted by the implementation); undefined
   * when the destination is no user/data ID known here (the usual miss).
   */
  outbound(buf: Buffer, ip: number, len: number): MapEntry | null | undefined;
  /**
   * outside: an opened or checked packet whose inner source ID is not a host in the map-cache.
   * peer: the host the datagram authenticated as (sealed: its session's peer, at peer[peerOff]) or
   * null (plain: whichever bound host has the datagram's source locator). Returns the host entry the
   * packet is accepted from (the source user/data ID is currently bound to it), or undefined: drop.
   */
  inbound(buf: Buffer, ip: number, len: number, peer: Uint8Array | null, peerOff: number, srcAddrs: Uint8Array, srcOff: number, port: number): MapEntry | undefined;
  /** A user/data ID this host serves (on its TUN device): packets to it are for this host. */
  serves(buf: Uint8Array, off: number): boolean;
}
