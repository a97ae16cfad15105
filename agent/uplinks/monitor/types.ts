/**
 * What the uplink monitor watches and reports, and the events its parts pass along: parse.ts turns
 * `ip` output into MonitorEvents, reduce.ts folds them into UplinkFacts, monitor.ts runs the two.
 */

export interface WatchedUplink {
  readonly name: string;
  readonly interface: string;
  readonly locator: string;
  readonly gateway?: string;
  /** The uplink's source-policy routing table (netconfig.ts policyRoutes): its default route must exist. */
  readonly table?: number;
}

export interface UplinkFacts {
  readonly carrier: boolean;
  readonly adminUp: boolean;
  /** The locator is assigned to the interface and usable (IPv6: not tentative, not dadfailed). */
  readonly hasAddress: boolean;
  /**
   * With `table`: a default route of the locator's family in that table through the interface.
   * Without: a main-table route through the interface (via `gateway` when one is given; link-local
   * fe80::/64 does not count).
   */
  readonly hasRoute: boolean;
  readonly usable: boolean;
}

export type MonitorEvent = LinkEvent | AddressEvent | RouteEvent | CarrierEvent;

/**
 * The carrier bit as read from /sys/class/net/DEV/carrier (io.ts), not from netlink: it is never
 * late, where linkwatch may hold netlink's report of it for up to a second. Speaks only of carrier.
 */
export interface CarrierEvent {
  readonly kind: 'carrier';
  readonly name: string;
  /** False also when the device is not running (sysfs EINVAL) or gone: no carrier either way. */
  readonly carrier: boolean;
}

export interface LinkEvent {
  readonly kind: 'link';
  readonly deleted: boolean;
  readonly ifindex: number;
  /** Without the `@peer` suffix ip prints for veth/vlan. */
  readonly name: string;
  readonly adminUp: boolean;
  readonly carrier: boolean;
}

export interface AddressEvent {
  readonly kind: 'address';
  readonly deleted: boolean;
  readonly dev: string;
  readonly family: 4 | 6;
  readonly address: string;
  readonly prefixLen: number;
  /** False while IPv6 duplicate address detection runs (tentative) or after it failed. */
  readonly usable: boolean;
}

export interface RouteEvent {
  readonly kind: 'route';
  readonly deleted: boolean;
  readonly family: 4 | 6;
  /** 254 = main, 255 = local. */
  readonly table: number;
  /** 'unicast', 'local', 'broadcast', 'blackhole', … */
  readonly type: string;
  /** 'default' or a prefix/address as ip prints it. */
  readonly dst: string;
  readonly metric: number;
  /** Next hops (several for a multipath route). */
  readonly gateways: readonly string[];
  readonly devs: readonly string[];
}

/** rtnetlink.h RT_TABLE_MAIN: a route without a table attribute is in it. */
export const TABLE_MAIN = 254;
