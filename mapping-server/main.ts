import { Command } from 'commander';
import { existsSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { systemClock } from '../shared/clock.ts';
import { UsageError, errorLine, isRealmnetError } from '../shared/errors.ts';
import { admit, backup, formatMembers, invite, inviteHint, members, parseDuration, publicKeyArg, revoke, rmKeyOf } from './admin.ts';
import { createLogger, type Logger } from '../shared/log.ts';
import { generateKeyPair, type KeyPair } from '../shared/crypto/ed25519.ts';
import { loadKeyPair, saveKeyPair } from '../shared/keyfile.ts';
import { loadRmConfig, type RmConfig } from './config.ts';
import { createMappingServer, type MappingServer } from './server.ts';
import { restartNeededLine, stopOnSignals } from '../shared/lifecycle.ts';
import { setLogLevel } from '../shared/log.ts';
import { serviceNotifier, type ServiceNotifier } from '../shared/service.ts';
import { startMetricsServer, type MetricsServer } from '../shared/prometheus.ts';
import { rmMetrics } from './metrics.ts';
import { VERSION } from '../shared/version.ts';
import { locatorText } from '../shared/address.ts';

/**
 * `realmnet rm --config FILE`: the composition root of the Realm Manager. Loads the config, the RM
 * key (created on first start), opens the store and sockets through createMappingServer, and stops
 * cleanly on the first SIGINT/SIGTERM (a second one forces exit).
 */
export interface RunningRm {
  readonly server: MappingServer;
  readonly config: RmConfig;
  stop(): Promise<void>;
}

export interface RunRmOptions {
  /** Overrides config.log. */
  readonly log?: Logger;
  /** Install SIGINT/SIGTERM handlers (the CLI does; tests do not). */
  readonly signals?: boolean;
}

/** Paths in the config are relative to the config file's directory. */
function resolvePath(configFile: string, p: string): string {
  return p === ':memory:' || isAbsolute(p) ? p : resolve(dirname(resolve(configFile)), p);
}

/** The config with its paths (key, store, admission.keys files) resolved against the file's directory. */
export function loadResolvedRmConfig(configPath: string): RmConfig {
  const raw = loadRmConfig(configPath);
  return {
    ...raw,
    key: resolvePath(configPath, raw.key),
    store: { ...raw.store, path: resolvePath(configPath, raw.store.path) },
    // Key file paths in admission.keys too (a base64 key is left as it is).
    admission: { ...raw.admission, keys: raw.admission.keys.map((k) => (/^[A-Za-z0-9+/]{43}=$/.test(k.trim()) ? k : resolvePath(configPath, k))) },
  };
}

export async function runRm(configPath: string, opts: RunRmOptions = {}): Promise<RunningRm> {
  const config = loadResolvedRmConfig(configPath);
  const log = opts.log ?? createLogger({ level: config.log.level, format: config.log.format });
  let key: KeyPair;
  if (existsSync(config.key)) key = loadKeyPair(config.key);
  else {
    key = generateKeyPair();
    saveKeyPair(config.key, key);
    log.info({ key: config.key }, 'created the RM key');
  }
  log.info({ rmPublicKey: Buffer.from(key.publicKey).toString('base64') }, 'RM key (clients may pin it)');
  const service = opts.signals ? serviceNotifier({ log }) : null;
  const server = createMappingServer(config, { clock: systemClock, log, key });
  await server.start();
  let metricsServer: MetricsServer | null = null;
  if (config.metrics.listen !== undefined) {
    const m = rmMetrics(() => server.counters(), { version: VERSION, realm: config.prefix });
    try {
      metricsServer = await startMetricsServer(config.metrics.listen, m.registry, log, m.beforeScrape);
    } catch (e) {
      await server.stop();
      throw e;
    }
  }
  // The RM answers now: its sockets are bound and its store is open.
  const readyLine = () => `answering on ${server.addresses().map((a) => locatorText(a.address, a.port)).join(', ')}; ${server.bindingCount()} bindings`;
  service?.ready(readyLine());
  const stopWatchdog = service?.startWatchdog() ?? (() => undefined);
  let stopping: Promise<void> | null = null;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      service?.stopping();
      stopWatchdog();
      await metricsServer?.close();
      await server.stop();
    })());
  if (opts.signals) void stopOnSignals({ log, stop, onHangup: () => reloadRm(configPath, server, log, service, readyLine, opts.log !== undefined) });
  return { server, config, stop };
}

/**
 * SIGHUP: the config is read again; the policy applies at once, the log level too (unless the caller
 * gave its own logger); what else changed is named in one line and needs a restart.
 */
function reloadRm(configPath: string, server: MappingServer, log: Logger, service: ServiceNotifier | null, readyLine: () => string, logFixed: boolean): void {
  service?.reloading();
  try {
    const next = loadResolvedRmConfig(configPath);
    const r = server.reload(next);
    if (!logFixed) setLogLevel(log, next.log.level);
    log.info({ policyChanged: r.policyChanged, logLevel: next.log.level }, 'config reloaded');
    if (r.restartNeeded.length > 0) {
      log.warn({ keys: r.restartNeeded }, restartNeededLine(r.restartNeeded, 'realmnet-rm'));
    }
  } catch (e) {
    log.error({ err: errorLine(e) }, 'reload failed: the running config stays in effect');
  } finally {
    service?.ready(readyLine());
  }
}

export function rmCommand(): Command {
  const rm = new Command('rm')
    .summary('run a Realm Manager (the mapping server of one realm), and manage its members')
    .description(
      `Run a Realm Manager: the mapping server of one realm.

Hosts of the realm register signed bindings (host ID -> locators); agents look them up and subscribe to changes, which the RM pushes. Registrations are stored durably (embedded SQLite) before they are acknowledged, and expire unless refreshed. The realm policy decides who may learn which locators; everyone else gets the answer for an unknown ID.

Only members take part: the operator admits hosts with a one-time join token (rm invite) or by their public key (rm admit), and may revoke them (rm revoke). Members carry a certificate signed by the RM's key, which agents pin (rm key prints it). See docs/security.md.

Control protocol: UDP port 4342 (IPv4 and IPv6), see docs/control-protocol.md.

SIGHUP (systemctl reload) applies a changed policy (to live sessions too) and log level; anything else is named in one log line and needs a restart. Under systemd (Type=notify) it sends READY=1 once it answers and WATCHDOG=1 from its event loop; with metrics.listen set it serves Prometheus metrics at GET /metrics. See docs/operations.md.`,
    )
    // Options after a subcommand's name are that subcommand's (realmnet rm invite --config X).
    .enablePositionalOptions()
    .option('-c, --config <file>', 'YAML config (realm, prefix, listen, store, policy, admission): see docs/control-protocol.md')
    .addHelpText(
      'after',
      `
Examples:
  realmnet rm --config /etc/realmnet/rm.yaml             run the RM (creates its key on first start)
  realmnet rm key --config rm.yaml                       the RM's public key, for agents to pin
  realmnet rm invite --config rm.yaml --ttl 24h          a one-time join token for a new host
  realmnet rm admit --config rm.yaml --key host.key      admit a host by its key (only publicKey is read)
  realmnet rm revoke --config rm.yaml --id fd00:1::8a3f:1c2d:9e0b:4a71
  realmnet rm members --config rm.yaml
  realmnet rm backup --config rm.yaml --out /var/backups/realmnet/$(date +%F)

Errors and fixes: docs/errors.md`,
    )
    .action(async (o: { config?: string }) => {
      if (o.config === undefined) throw new UsageError('realmnet rm: --config <file> is required', 'e.g. realmnet rm --config /etc/realmnet/rm.yaml; see realmnet rm --help');
      await runRm(o.config, { signals: true });
      // Keep running until a signal stops it.
      await new Promise<never>(() => {});
    });
  const out = (s: string) => void process.stdout.write(s);
  const configOpt = '-c, --config <file>';
  const configHelp = "the RM's YAML config (its key file and store are found through it)";

  rm.command('invite')
    .summary('print one-time join tokens for new hosts')
    .description(
      `Print one-time join tokens. A host whose agent config has "rm.join: TOKEN" joins the realm on its first connection; the token also pins the RM's key and names the prefix the host's ID is derived under. Each token works once, until it expires. Needs only the RM's key file (no running RM, nothing stored).`,
    )
    .requiredOption(configOpt, configHelp)
    .option('--ttl <duration>', 'how long the token stays valid: 24h, 90m, 7d, or seconds', '24h')
    .option('--sub <name>', 'derive the host ID under this sub-realm (subRealms[].name) instead of the realm prefix')
    .option('--count <n>', 'how many tokens (one per host)', '1')
    .option('--json', 'print JSON (token, prefix, expiresAt) instead of one token per line')
    .action((o: { config: string; ttl: string; sub?: string; count: string; json?: boolean }) => {
      const config = loadResolvedRmConfig(o.config);
      const count = /^\d+$/.test(o.count) ? Number(o.count) : NaN;
      const list = invite(config, { ttlS: parseDuration(o.ttl), sub: o.sub, count });
      out(o.json ? JSON.stringify(list, null, 2) + '\n' : list.map((i) => i.token + '\n').join(''));
      process.stderr.write(`${list.length} token(s) for ${list[0].prefix}, valid until ${list[0].expiresAt}, each usable once.\n${inviteHint(config, list[0].token)}`);
    });

  rm.command('admit')
    .summary("admit a host by its public key")
    .description('Admit a host to the realm by its public key: from its key file (only "publicKey" is read) or given in base64. A revoked host is admitted again. A running RM applies it within a second.')
    .requiredOption(configOpt, configHelp)
    .option('--key <file>', "the host's key file (or a file holding its base64 public key)")
    .option('--public-key <base64>', "the host's Ed25519 public key")
    .option('--sub <name>', 'the sub-realm (subRealms[].name) the host ID is derived under')
    .option('--json', 'print the member as JSON')
    .action((o: { config: string; key?: string; publicKey?: string; sub?: string; json?: boolean }) => {
      const config = loadResolvedRmConfig(o.config);
      const m = admit(config, { publicKey: publicKeyArg(o), sub: o.sub });
      out(o.json ? JSON.stringify(m, null, 2) + '\n' : `${m.already ? 'already a member' : 'admitted'}: ${m.hostId} (/${m.prefixLen})\n`);
    });

  rm.command('revoke')
    .summary('revoke a member')
    .description("Revoke a member: a running RM ends its sessions within a second, expires its binding and tells the hosts that follow it, which then refuse it until its certificate would have expired. Re-admit it with rm admit.")
    .requiredOption(configOpt, configHelp)
    .requiredOption('--id <hostId>', 'the host ID, as `realmnet rm members` lists it')
    .option('--json', 'print the member as JSON')
    .action((o: { config: string; id: string; json?: boolean }) => {
      const m = revoke(loadResolvedRmConfig(o.config), { hostId: o.id });
      out(o.json ? JSON.stringify(m, null, 2) + '\n' : `revoked: ${m.hostId}\n`);
    });

  rm.command('members')
    .summary("list the realm's members")
    .requiredOption(configOpt, configHelp)
    .option('--json', 'print JSON')
    .action((o: { config: string; json?: boolean }) => {
      const list = members(loadResolvedRmConfig(o.config));
      out(o.json ? JSON.stringify(list, null, 2) + '\n' : formatMembers(list));
    });

  rm.command('backup')
    .summary("copy the RM's key and store, consistently, while it runs")
    .description(
      `Copy what the realm cannot lose into a new directory: the RM's key (its identity; every agent pins it) and its store (members, bindings, spent invites), through SQLite's online backup, so the copy is consistent even while the RM commits. Restore: stop the RM, put both files back where the config points, start it. See docs/operations.md.`,
    )
    .requiredOption(configOpt, configHelp)
    .requiredOption('--out <dir>', 'a new directory for the copy (created, mode 0700)')
    .option('--json', 'print what was copied as JSON')
    .action(async (o: { config: string; out: string; json?: boolean }) => {
      const r = await backup(loadResolvedRmConfig(o.config), o.out);
      out(o.json ? JSON.stringify(r, null, 2) + '\n' : `backed up to ${r.dir}: ${r.key}, ${r.store} (${r.members} members, ${r.bindings} bindings)\n`);
    });

  rm.command('key')
    .summary("print the RM's public key (agents pin it: rm.servers[].publicKey)")
    .requiredOption(configOpt, configHelp)
    .action((o: { config: string }) => {
      out(Buffer.from(rmKeyOf(loadResolvedRmConfig(o.config)).publicKey).toString('base64') + '\n');
    });
  return rm;
}

// Runs as a script too (tests start the RM as a real process this way):
//   node --import tsx mapping-server/main.ts --config FILE
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  rmCommand()
    .exitOverride()
    .parseAsync(process.argv).catch((e: unknown) => {
    if (isRealmnetError(e) && e.userFacing) process.stderr.write(`realmnet: ${e.oneLine()}\n`);
    else if (!(e instanceof Error && 'exitCode' in e)) process.stderr.write(`realmnet: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  });
}
