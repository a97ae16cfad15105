import { Command } from 'commander';
import { existsSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { systemClock } from '../shared/clock.ts';
import { isRealmnetError } from '../shared/errors.ts';
import { createLogger, type Logger } from '../shared/log.ts';
import { generateKeyPair, type KeyPair } from '../shared/crypto/ed25519.ts';
import { loadKeyPair, saveKeyPair } from '../shared/keyfile.ts';
import { loadRmConfig, type RmConfig } from './config.ts';
import { createMappingServer, type MappingServer } from './server.ts';
import { stopOnSignals } from '../shared/lifecycle.ts';

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

export async function runRm(configPath: string, opts: RunRmOptions = {}): Promise<RunningRm> {
  const raw = loadRmConfig(configPath);
  const config: RmConfig = {
    ...raw,
    key: resolvePath(configPath, raw.key),
    store: { ...raw.store, path: resolvePath(configPath, raw.store.path) },
    // Key file paths in admission.keys too (a base64 key is left as it is).
    admission: { ...raw.admission, keys: raw.admission.keys.map((k) => (/^[A-Za-z0-9+/]{43}=$/.test(k.trim()) ? k : resolvePath(configPath, k))) },
  };
  const log = opts.log ?? createLogger({ level: config.log.level, format: config.log.format });
  let key: KeyPair;
  if (existsSync(config.key)) key = loadKeyPair(config.key);
  else {
    key = generateKeyPair();
    saveKeyPair(config.key, key);
    log.info({ key: config.key }, 'created the RM key');
  }
  log.info({ rmPublicKey: Buffer.from(key.publicKey).toString('base64') }, 'RM key (clients may pin it)');
  const server = createMappingServer(config, { clock: systemClock, log, key });
  await server.start();
  let stopping: Promise<void> | null = null;
  const stop = (): Promise<void> => (stopping ??= server.stop());
  if (opts.signals) void stopOnSignals({ log, stop });
  return { server, config, stop };
}

export function rmCommand(): Command {
  return new Command('rm')
    .summary('run a Realm Manager (the mapping server of one realm)')
    .description(
      `Run a Realm Manager: the mapping server of one realm.

Hosts of the realm register signed bindings (host ID -> locators); agents look them up and subscribe to changes, which the RM pushes. Registrations are stored durably (embedded SQLite) before they are acknowledged, and expire unless refreshed. The realm policy decides who may learn which locators; everyone else gets the answer for an unknown ID.

Control protocol: UDP port 4342 (IPv4 and IPv6), see docs/control-protocol.md.`,
    )
    .requiredOption('-c, --config <file>', 'YAML config (realm, prefix, listen, store, policy): see docs/control-protocol.md')
    .addHelpText(
      'after',
      `
Example:
  realmnet keygen --out rm.key
  realmnet rm --config /etc/realmnet/rm.yaml

Errors and fixes: docs/errors.md`,
    )
    .action(async (o: { config: string }) => {
      await runRm(o.config, { signals: true });
      // Keep running until a signal stops it.
      await new Promise<never>(() => {});
    });
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
