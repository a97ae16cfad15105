import { familyOf } from '../../shared/address.ts';

/**
 * Source-policy routing per uplink: `from <locator> lookup <table>` with a default route through that
 * uplink's gateway, so that a socket bound to an uplink's address really leaves through it. Pure:
 * builds the commands; uplinks/sockets.ts runs them (and removes them on stop).
 */
export interface PolicyUplink {
  readonly name: string;
  readonly interface?: string;
  readonly locator: string;
  readonly gateway?: string;
}

export interface PolicyRoute {
  readonly uplink: string;
  /** The uplink's index (its table is tableBase + index). */
  readonly index: number;
  readonly add: string[][];
  /** Run in order on stop; each may fail harmlessly if already gone. */
  readonly remove: string[][];
}

/** Source-policy routing for every uplink that names an interface and a gateway. */
export function policyRoutes(uplinks: readonly PolicyUplink[], tableBase: number, rulePriority: number): PolicyRoute[] {
  const out: PolicyRoute[] = [];
  uplinks.forEach((u, i) => {
    if (u.interface === undefined || u.gateway === undefined) return;
    const fam = familyOf(u.locator) === 6 ? '-6' : '-4';
    const table = String(tableBase + i);
    const rule = ['from', u.locator, 'table', table, 'priority', String(rulePriority + i)];
    out.push({
      uplink: u.name,
      index: i,
      add: [
        [fam, 'route', 'replace', 'default', 'via', u.gateway, 'dev', u.interface, 'table', table],
        [fam, 'rule', 'add', ...rule],
      ],
      remove: [
        [fam, 'rule', 'del', ...rule],
        [fam, 'route', 'flush', 'table', table],
      ],
    });
  });
  return out;
}
