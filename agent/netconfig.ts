import type { Logger } from '../shared/log.ts';
import { runIp, type NetConfig } from '../shared/ip.ts';

/**
 * The agent changes the host's network configuration in exactly two ways, and undoes both on stop:
 *  - the TUN device: its MTU, the host ID as a /128, and one route per realm prefix (never the default
 *    route, so non-overlay traffic keeps its normal path);
 *  - source-policy routing per uplink: `from <locator> lookup <table>` with a default route through
 *    that uplink's gateway, so that a socket bound to an uplink's address really leaves through it.
 * The commands are built by pure functions (tested: this file for the TUN, uplinks/routing.ts for the
 * uplinks) and run with iproute2 by the NetConfig shell (shared/ip.ts).
 */

export function createIpCommand(log: Logger): NetConfig {
  return {
    ip: async (args) => {
      await runIp(args);
      log.debug({ cmd: `ip ${args.join(' ')}` }, 'netconfig');
    },
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
    // (Its own command, before `up`: set in the same message, the kernel may bring the link up first.)
    ['link', 'set', 'dev', t.name, 'addrgenmode', 'none'],
    // One command for the rest (each `ip` costs a few ms of a restart's gap). txqueuelen: the kernel
    // queues packets for our reader here; the default 500 overflows in a TCP burst while the reader
    // hands a batch to JavaScript, and each overflow is a loss TCP backs off for.
    ['link', 'set', 'dev', t.name, 'mtu', String(t.mtu), 'txqueuelen', String(TUN_TXQUEUELEN), ...(t.offload ? ['gso_max_size', String(GSO_MAX_SIZE)] : []), 'up'],
  ];
  cmds.push(['-6', 'addr', 'add', `${t.hostId}/128`, 'dev', t.name, 'nodad']);
  for (const p of t.prefixes) cmds.push(['-6', 'route', 'replace', p, 'dev', t.name]);
  return cmds;
}

