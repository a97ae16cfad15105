import { familyOf } from '../../shared/address.ts';
import type { Uplink } from './table.ts';
import type { Logger } from '../../shared/log.ts';
import type { NetConfig } from '../../shared/ip.ts';
import { policyRoutes, type PolicyRoute } from './routing.ts';
import type { UdpBatchSocket, UdpOptions } from '../../shared/udp/socket.ts';

/**
 * The host's uplinks as the system sees them: one UDP socket per uplink, bound to that uplink's
 * locator on the data port, and source-policy routing so that each socket leaves through its own
 * interface. Their state (up, priority, weight) is the uplink table's (table.ts), not this module's.
 */
export interface UplinkConfig {
  readonly name: string;
  readonly interface?: string;
  readonly locator: string;
  readonly gateway?: string;
  readonly priority: number;
  readonly weight: number;
}


export interface UplinksDeps {
  readonly openUdp: (opts: UdpOptions) => UdpBatchSocket | Promise<UdpBatchSocket>;
  readonly net: NetConfig;
  readonly log: Logger;
}

export interface UplinksOptions {
  readonly port: number;
  readonly batchSize: number;
  readonly maxDatagram: number;
  readonly tableBase: number;
  readonly rulePriority: number;
}

export class UplinkSockets {
  /** The opened uplinks in config order, all up: the uplink table starts from these. */
  readonly opened: Omit<Uplink, 'index' | 'retired'>[] = [];
  private routes: PolicyRoute[] = [];
  /** In index order: the config's uplinks, then those reloads added (removed ones keep their place). */
  private readonly configs: UplinkConfig[];

  constructor(
    configs: readonly UplinkConfig[],
    private readonly opts: UplinksOptions,
    private readonly deps: UplinksDeps,
  ) {
    this.configs = [...configs];
  }

  /** Opens every socket first (a port in use fails before anything is changed), then adds the routing. */
  async start(): Promise<void> {
    try {
      for (const c of this.configs) {
        const socket = await this.deps.openUdp({ address: c.locator, port: this.opts.port, batchSize: this.opts.batchSize, maxDatagram: this.opts.maxDatagram });
        this.opened.push({ name: c.name, interface: c.interface, locator: c.locator, family: familyOf(c.locator), priority: c.priority, weight: c.weight, socket, up: true });
      }
      // The uplinks' tables and rules are independent: installed side by side (each `ip` is a few
      // ms, and a restart's gap is their sum otherwise). All settle before a failure is reported,
      // so stop() never races a command still in flight.
      const done = await Promise.allSettled(policyRoutes(this.configs, this.opts.tableBase, this.opts.rulePriority).map((r) => this.installRoute(r)));
      const failed = done.find((d) => d.status === 'rejected');
      if (failed !== undefined) throw failed.reason;
    } catch (e) {
      await this.stop();
      throw e;
    }
  }

  /**
   * A reload added an uplink: its socket (index = the next position) and its policy routing. Returns
   * what the uplink table takes in; throws, changing nothing, if the socket cannot be opened.
   */
  async add(c: UplinkConfig): Promise<Omit<Uplink, 'index' | 'retired'>> {
    const socket = await this.deps.openUdp({ address: c.locator, port: this.opts.port, batchSize: this.opts.batchSize, maxDatagram: this.opts.maxDatagram });
    const i = this.configs.length;
    this.configs.push(c);
    const u = { name: c.name, interface: c.interface, locator: c.locator, family: familyOf(c.locator), priority: c.priority, weight: c.weight, socket, up: true as const };
    this.opened.push(u);
    const r = policyRoutes(this.configs, this.opts.tableBase, this.opts.rulePriority).find((x) => x.index === i);
    if (r !== undefined) await this.installRoute(r);
    return u;
  }

  /**
   * A reload removed an uplink (index i): its policy routing goes now; its socket stays open, unused,
   * until the agent stops, so that a datagram the data plane already handed it is not sent on a
   * closed descriptor, and the same uplink can come back into its old slot.
   */
  async retire(i: number): Promise<void> {
    const r = this.routes.find((x) => x.index === i);
    if (r === undefined) return;
    this.routes = this.routes.filter((x) => x !== r);
    await this.runQuietly(r.remove);
  }

  /** A retired uplink came back (index i): its policy routing again. */
  async restore(i: number): Promise<void> {
    const r = policyRoutes(this.configs, this.opts.tableBase, this.opts.rulePriority).find((x) => x.index === i);
    if (r !== undefined && !this.routes.some((x) => x.index === i)) await this.installRoute(r);
  }

  /** Held (so stop() removes it) before it is added: a half-added route is undone too. */
  private async installRoute(r: PolicyRoute): Promise<void> {
    this.routes.push(r);
    // A crashed earlier run may have left the same rule: remove it first so rules never pile up.
    await this.runQuietly(r.remove);
    for (const cmd of r.add) await this.deps.net.ip(cmd);
    this.deps.log.info({ uplink: r.uplink }, 'source-policy routing installed');
  }

  /** The routing table of an uplink's source-policy routing, if it has one. */
  tableOf(name: string): number | undefined {
    // The newest uplink of that name: a reload may have retired an older one of the same name.
    let i = this.configs.length - 1;
    while (i >= 0 && this.configs[i].name !== name) i--;
    const c = this.configs[i];
    return c?.interface !== undefined && c.gateway !== undefined ? this.opts.tableBase + i : undefined;
  }

  /** Puts an uplink's policy route back (the kernel flushes IPv4 routes when a link goes down). */
  async reinstall(name: string): Promise<void> {
    const r = this.routes.find((x) => x.uplink === name);
    if (r === undefined) return;
    for (const cmd of r.add) {
      try {
        await this.deps.net.ip(cmd);
      } catch {
        // The rule may still be there (rules survive link changes); the route is what matters.
      }
    }
  }

  /**
   * A function that says whether any uplink socket sent or received a datagram since its previous
   * call: the monitor's "carrying traffic" (its carrier cadence), without it knowing the data plane.
   */
  trafficProbe(): () => boolean {
    let last = -1;
    return () => {
      let n = 0;
      for (const u of this.opened) {
        const s = u.socket.stats;
        n += s.txPackets + s.rxPackets;
      }
      const moved = n !== last;
      last = n;
      return moved;
    };
  }

  async stop(): Promise<void> {
    for (const u of this.opened) u.socket.close();
    this.opened.length = 0;
    // Independent per uplink, as at start: side by side.
    await Promise.all(this.routes.map((r) => this.runQuietly(r.remove)));
    this.routes = [];
  }

  private async runQuietly(cmds: readonly string[][]): Promise<void> {
    for (const c of cmds) {
      try {
        await this.deps.net.ip(c);
      } catch {
        // Already gone: nothing to undo.
      }
    }
  }
}
