import { execFile } from 'node:child_process';
import { SystemError } from '../shared/errors.ts';
import { familyOf } from '../shared/address.ts';
import type { Logger } from '../shared/log.ts';

/**
 * The agent changes the host's network configuration in exactly two ways, and undoes both on stop:
 *  - the TUN device: its MTU, the host ID as a /128, and one route per realm prefix (never the default
 *    route, so non-overlay traffic keeps its normal path);
 *  - source-policy routing per uplink: `from <locator> lookup <table>` with a default route through
 *    that uplink's gateway, so that a socket bound to an uplink's address really leaves through it.
 * The commands are built by pure functions (tested) and run with iproute2 by the NetConfig shell.
 */
export interface NetConfig {
  /** Runs `ip ARGS…`; throws SystemError NETCONFIG_FAILED with ip's own message. */
  ip(args: readonly string[]): Promise<void>;
}

export function createIpCommand(log: Logger): NetConfig {
  return {
    ip: (args) =>
      new Promise((resolve, reject) => {
        execFile('ip', args as string[], { timeout: 10_000 }, (err, _stdout, stderr) => {
          if (err) {
            const why = (stderr || err.message).trim().split('\n')[0];
            const hint =
              (err as NodeJS.ErrnoException).code === 'ENOENT'
                ? 'install iproute2 (apt-get install iproute2)'
                : /Operation not permitted/.test(why)
                  ? 'run as root or with CAP_NET_ADMIN'
                  : 'check the interface names, addresses and gateways in the config';
            reject(new SystemError('NETCONFIG_FAILED', `ip ${args.join(' ')}: ${why}`, hint));
            return;
          }
          log.debug({ cmd: `ip ${args.join(' ')}` }, 'netconfig');
          resolve();
        });
      }),
  };
}

export interface TunSetup {
  readonly name: string;
  readonly mtu: number;
  readonly offload: boolean;
  readonly hostId: string;
  readonly prefixes: readonly string[];
}

/** Largest TSO super-packet we let the kernel build, so that header + packet fit one UDP datagram over IPv4 (65507). */
export const GSO_MAX_SIZE = 65_000;

export const TUN_TXQUEUELEN = 5000;

export function tunUpCommands(t: TunSetup): string[][] {
  const cmds: string[][] = [
    // No link-local address: it would only bring router solicitations and MLD reports into the TUN.
    ['link', 'set', 'dev', t.name, 'addrgenmode', 'none'],
    ['link', 'set', 'dev', t.name, 'mtu', String(t.mtu)],
    // The kernel queues packets for our reader here; the default 500 overflows in a TCP burst while
    // the reader hands a batch to JavaScript, and each overflow is a loss TCP backs off for.
    ['link', 'set', 'dev', t.name, 'txqueuelen', String(TUN_TXQUEUELEN)],
  ];
  if (t.offload) cmds.push(['link', 'set', 'dev', t.name, 'gso_max_size', String(GSO_MAX_SIZE)]);
  cmds.push(['link', 'set', 'dev', t.name, 'up']);
  cmds.push(['-6', 'addr', 'add', `${t.hostId}/128`, 'dev', t.name, 'nodad']);
  for (const p of t.prefixes) cmds.push(['-6', 'route', 'replace', p, 'dev', t.name]);
  return cmds;
}

export interface PolicyUplink {
  readonly name: string;
  readonly interface?: string;
  readonly locator: string;
  readonly gateway?: string;
}

export interface PolicyRoute {
  readonly uplink: string;
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
