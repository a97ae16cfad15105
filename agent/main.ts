import { Command } from 'commander';
import { systemClock } from '../shared/clock.ts';
import { ConfigError, SystemError, errorLine } from '../shared/errors.ts';
import { createLogger } from '../shared/log.ts';
import { createSocket } from 'node:dgram';
import { deriveHostId, parseHostId, parsePrefix } from '../shared/ids.ts';
import { loadKeyPair } from '../shared/keyfile.ts';
import { createAgent, type AgentIdentity, type AgentStatus } from './agent.ts';
import type { AgentConfig } from './config.ts';
import { createRmClient } from './rm/client.ts';
import { UplinkMonitor } from './uplinks/monitor/monitor.ts';
import { loadAgentConfig, DEFAULTS } from './config.ts';
import { newControlCounters, queryControl, startControlServer } from './control.ts';
import { createIpCommand } from './netconfig.ts';
import { openTun } from './tun/tun.ts';
import { openUdp } from '../shared/udp/socket.ts';
import { formatStatus } from './status-format.ts';
import { restartNeededLine, stopOnSignals } from '../shared/lifecycle.ts';
import { fileHostState, type HostStateStore } from './hoststate.ts';
import { RealmTrust } from './rm/trust.ts';
import { parseToken } from '../shared/membership.ts';
import { setLogLevel, type Logger } from '../shared/log.ts';
import { serviceNotifier, type ServiceNotifier } from '../shared/service.ts';
import { startMetricsServer, type MetricsServer } from '../shared/prometheus.ts';
import { agentMetrics } from './metrics.ts';
import { VERSION } from '../shared/version.ts';
import { awaitRelease, isSuccessor, rehearse, startSuccessor } from './upgrade.ts';

/** The agent's composition root: argv and config in, real devices wired, signals handled. */
export async function runAgent(configPath: string, overrides: { logLevel?: string } = {}): Promise<void> {
  const config = loadAgentConfig(configPath);
  if (process.getuid?.() !== 0) {
    throw new SystemError('NOT_ROOT', 'realmnet agent must run as root: it creates a TUN device and installs routes', 'run it with sudo, or as root');
  }
  const level = (overrides.logLevel ?? config.log.level) as typeof config.log.level;
  const log = createLogger({ level, format: config.log.format });
  const service = serviceNotifier({ log });
  const identity = loadIdentity(config);
  const rm = config.rm;
  const hostState =
    config.identity === undefined
      ? undefined
      : fileHostState(config.identity.state ?? `${config.identity.key}.state`, (e) => log.error({ err: e.message }, 'could not save the host state (sequence number, message counter, membership)'));
  const trust = identity === undefined || rm === undefined || hostState === undefined ? undefined : realmTrust(config, hostState, log);
  // The metrics read the agent's status, made below; failovers are observed as they happen.
  let statusOfAgent: () => AgentStatus = () => {
    throw new Error('metrics scraped before the agent exists');
  };
  const metrics = config.metrics.listen === undefined ? null : agentMetrics(() => statusOfAgent(), VERSION);
  const agent = createAgent(config, {
    onFailover: metrics?.failover,
    openTun,
    openUdp,
    net: createIpCommand(log),
    log: log.child({ module: 'agent' }),
    clock: systemClock,
    identity,
    hostState,
    trust,
    makeMonitor: (uplinks, signals) => new UplinkMonitor(uplinks, { log: log.child({ module: 'monitor' }), clock: systemClock, activity: signals.activity }),
    makeRmClient:
      identity === undefined || rm === undefined || trust === undefined
        ? undefined
        : (_uplink, locator) => {
            // Bound to the uplink's address, so source-policy routing sends it out through that uplink.
            const socket = createSocket({ type: locator.includes(':') ? 'udp6' : 'udp4' });
            socket.on('error', (e) => log.warn({ err: e.message, locator }, 'RM control socket'));
            socket.bind({ address: locator, port: 0 });
            return createRmClient({
              rm: rm.servers.map((s) => ({ address: s.address, port: s.port, publicKey: s.publicKey === undefined ? undefined : new Uint8Array(Buffer.from(s.publicKey, 'base64')) })),
              key: identity.key,
              prefix: identity.prefix,
              trust,
              clock: systemClock,
              log: log.child({ module: 'rm-client', locator }),
              socket,
            });
          },
  });
  statusOfAgent = () => agent.status();
  // An upgrade in place: the previous agent still forwards; it stops once we have loaded.
  if (isSuccessor()) {
    await rehearse(config, identity).catch((e: unknown) => log.debug({ err: errorLine(e) }, 'upgrade: the rehearsal failed (the real start does not depend on it)'));
    await awaitRelease(log);
  }
  await agent.start();
  let control;
  let metricsServer: MetricsServer | null = null;
  try {
    // The control socket's own counters travel with the status: it is untrusted local input too.
    const counters = newControlCounters();
    control = await startControlServer(config.control.socket, () => ({ ...agent.status(), control: { ...counters } }), counters, { group: config.control.group, publish: (b) => agent.publish(b) });
    if (metrics !== null && config.metrics.listen !== undefined) metricsServer = await startMetricsServer(config.metrics.listen, metrics.registry, log, metrics.beforeScrape);
  } catch (e) {
    control?.close();
    await agent.stop();
    throw e;
  }
  // The agent forwards now: the TUN, its routes, the uplinks and their sockets are up.
  service.ready(readyLine(agent.status()));
  const stopWatchdog = service.startWatchdog();

  let upgrading = false;
  process.on('SIGUSR2', () => {
    if (upgrading) return;
    upgrading = true;
    void (async () => {
      log.info('upgrade (SIGUSR2): starting the installed version; this agent forwards until it has loaded');
      let successor;
      try {
        successor = await startSuccessor({ log, env: service.handoverEnv(), timeoutMs: 30_000 });
      } catch (e) {
        log.error({ err: errorLine(e) }, 'upgrade failed: the new version did not start; this agent keeps running');
        upgrading = false;
        return;
      }
      // The service manager follows the successor from now on (its READY=1 and WATCHDOG=1 count).
      service.mainPid(successor.pid);
      stopWatchdog();
      const t0 = performance.now();
      try {
        control.close();
        await metricsServer?.close();
        await agent.stop();
      } catch (e) {
        log.error({ err: errorLine(e) }, 'upgrade: the clean stop failed; the new version starts anyway');
      }
      log.info({ successor: successor.pid, stopMs: Math.round(performance.now() - t0) }, 'upgrade: stopped; the new version takes over');
      await successor.release();
      process.exit(0);
    })();
  });

  await stopOnSignals({
    log,
    stop: async () => {
      service.stopping();
      stopWatchdog();
      control.close();
      await metricsServer?.close();
      await agent.stop();
    },
    onHangup: () => void reloadAgent({ configPath, agent, log, service, logLevelFixed: overrides.logLevel !== undefined }),
  });
}

/** What `systemctl status` shows as the agent's STATUS= line. */
function readyLine(st: AgentStatus): string {
  const up = st.uplinks.filter((u) => u.up).length;
  return `forwarding: host ID ${st.hostId}, ${up} of ${st.uplinks.length} uplinks up`;
}

/**
 * SIGHUP: the config file is read again and what can change live is applied (agent/reload.ts); what
 * needs a restart is named in one line. A config that does not load leaves the running one in effect.
 */
async function reloadAgent(o: { configPath: string; agent: ReturnType<typeof createAgent>; log: Logger; service: ServiceNotifier; logLevelFixed: boolean }): Promise<void> {
  const { log, service } = o;
  service.reloading();
  const t0 = performance.now();
  try {
    const next = loadAgentConfig(o.configPath);
    // First, so that the reload's own steps are logged at the new level.
    if (!o.logLevelFixed) setLogLevel(log, next.log.level);
    const plan = await o.agent.reload(next);
    log.info(
      {
        tookMs: Math.round((performance.now() - t0) * 10) / 10,
        uplinksAdded: plan.addUplinks.map((u) => u.name),
        uplinksRemoved: plan.removeUplinks,
        uplinksReprioritised: plan.reprioritise.map((u) => u.name),
        peersChanged: plan.peersChanged,
        logLevel: plan.logLevel ?? undefined,
      },
      'config reloaded',
    );
    if (plan.restartNeeded.length > 0) {
      log.warn({ keys: plan.restartNeeded }, restartNeededLine(plan.restartNeeded, 'realmnet-agent'));
    }
  } catch (e) {
    log.error({ err: errorLine(e) }, 'reload failed: the running config stays in effect');
  } finally {
    service.ready(readyLine(o.agent.status()));
  }
}

/**
 * The realm trust the RM clients share (docs/security.md, decision 3): the realm keys pinned by the
 * config (rm.servers[].publicKey), the join token, or the state file of an earlier join; none at all
 * is a config error (fail closed: an unpinned RM could be anyone). Every new certificate is saved.
 */
function realmTrust(config: AgentConfig, state: HostStateStore, log: Logger): RealmTrust {
  const rm = config.rm;
  if (rm === undefined) throw new Error('realmTrust without rm: config validation should have caught this');
  const held = state.load();
  const join = rm.join === undefined ? null : parseToken(rm.join);
  const keys = [
    ...rm.servers.flatMap((s) => (s.publicKey === undefined ? [] : [new Uint8Array(Buffer.from(s.publicKey, 'base64'))])),
    ...(held.realmKeys ?? []).map((k) => new Uint8Array(Buffer.from(k, 'base64'))),
  ];
  if (keys.length === 0 && join === null) {
    throw new ConfigError(
      'config error: rm.servers[0].publicKey: is missing: the RM\'s key must be pinned',
      'copy what `realmnet rm key --config rm.yaml` prints into rm.servers[].publicKey, or give a join token (rm.join) from `realmnet rm invite`',
    );
  }
  const trust = new RealmTrust({ realmKeys: keys, join, cert: held.cert === undefined ? null : Buffer.from(held.cert, 'base64'), memberSince: held.memberSince ?? null });
  trust.onCert((c) => {
    state.save({ ...state.load(), realmKeys: trust.realmKeys.map((k) => Buffer.from(k).toString('base64')), cert: Buffer.from(c.bytes).toString('base64'), memberSince: trust.memberSince ?? c.notBefore });
    log.info({ notAfter: new Date(c.notAfter * 1000).toISOString() }, 'membership certificate received');
  });
  return trust;
}

/** The key and the ID derived from it; a hostId in the config must agree with it. */
function loadIdentity(config: AgentConfig): AgentIdentity | undefined {
  if (config.identity === undefined) return undefined;
  const key = loadKeyPair(config.identity.key);
  const join = config.rm?.join;
  if (config.identity.prefix === undefined && join === undefined && config.hostId !== undefined) {
    // Static mode: the configured ID is this host's; the key serves the sessions with static peers.
    const hostId = parseHostId(config.hostId);
    return { key, prefix: parsePrefix(`${hostId.toString()}/128`), hostId };
  }
  const prefix = config.identity.prefix !== undefined ? parsePrefix(config.identity.prefix) : parseToken(join ?? '').prefix;
  const hostId = deriveHostId(prefix, key.publicKey);
  if (config.hostId !== undefined && !parseHostId(config.hostId).equals(hostId)) {
    throw new ConfigError(
      `config error: hostId: "${config.hostId}" is not the ID of key ${config.identity.key} in ${prefix.toString()} (that is ${hostId.toString()})`,
      'remove hostId (it is derived from the key) or fix it',
    );
  }
  return { key, prefix, hostId };
}

export function agentCommand(): Command {
  return new Command('agent')
    .summary('run the host agent: TUN device, data plane, uplinks')
    .description(
      `Run the realmnet agent on this host (as root).

The agent creates a TUN device, gives it this host's ID (an IPv6 address) and routes the realm's ID prefixes into it - only those: the default route and all other traffic are left alone. Packets to a host ID are looked up in the map-cache, wrapped in an 8-byte LISP data header and sent in UDP (port ${DEFAULTS.listenPort}) from one of this host's uplinks to one of the peer's locators. Each uplink gets its own socket bound to its address, plus source-policy routing ("ip rule from LOCATOR table N") so it really leaves through its own interface.

Stop it with Ctrl-C or SIGTERM: the TUN device, its routes and the policy rules are removed.

SIGHUP (systemctl reload) reads the config again: uplinks added, removed or re-prioritised, static peers and the log level apply at once, without touching established flows; anything else is named in one log line and needs a restart. SIGUSR2 upgrades in place: the version now installed loads while this one forwards, then takes over (docs/operations.md).

Under systemd (Type=notify) it sends READY=1 once it forwards and WATCHDOG=1 from its event loop; with metrics.listen set it serves Prometheus metrics at GET /metrics.`,
    )
    .requiredOption('-c, --config <file>', 'YAML configuration file (see examples/agent.yaml)')
    .option('--log-level <level>', 'override log.level from the config: trace|debug|info|warn|error')
    .addHelpText(
      'after',
      `
Example:
  realmnet agent --config /etc/realmnet/agent.yaml
  ip netns exec mh realmnet agent -c mh.yaml --log-level debug

Exit codes: 0 clean stop, 1 runtime or config error, 2 usage error.`,
    )
    .action(async (opts: { config: string; logLevel?: string }) => {
      await runAgent(opts.config, { logLevel: opts.logLevel });
    });
}

export function statusCommand(): Command {
  return new Command('status')
    .summary("show a running agent's state: ID, uplinks, map-cache, counters")
    .description(
      `Ask the agent running in this network namespace for its state and print it as tables: its host ID, its uplinks and their locators, the map-cache (host ID, locators, chosen path, age), traffic counters and the drop counters by reason.`,
    )
    .option('-s, --socket <path>', 'control socket of the agent ("@name" is an abstract socket)', DEFAULTS.control.socket)
    .option('--json', 'print the raw JSON document (for scripts)')
    .action(async (opts: { socket: string; json?: boolean }) => {
      const st = (await queryControl(opts.socket, 'status')) as AgentStatus;
      process.stdout.write(opts.json ? JSON.stringify(st, null, 2) + '\n' : formatStatus(st));
    });
}
