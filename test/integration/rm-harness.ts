import { ManualClock, systemClock, type Clock } from '../../shared/clock.ts';
import { silentLogger } from '../../shared/log.ts';
import { generateKeyPair, type KeyPair } from '../../shared/keys.ts';
import { parsePrefix, type Prefix } from '../../shared/ids.ts';
import { signBinding, type Binding, type Locator } from '../../shared/binding.ts';
import { parseRmConfig, type RmConfig } from '../../mapping-server/config.ts';
import { createMappingServer, type MappingServer } from '../../mapping-server/server.ts';
import { BindingStore } from '../../mapping-server/store/bindings.ts';
import { decodeBinding } from '../../shared/binding.ts';
import { createRmClient, type RmClient, type RmClientOptions } from '../../agent/mapcache/client.ts';

/** In-process Realm Manager on 127.0.0.1 (ephemeral port) and clients for it, for the RM tests. */
export const REALM_PREFIX = 'fd00:1::/32';

export function testConfig(extra: Record<string, unknown> = {}): RmConfig {
  return parseRmConfig({
    realm: 'acme',
    prefix: REALM_PREFIX,
    listen: [{ address: '127.0.0.1', port: 0 }],
    store: { path: ':memory:', batchWindowMs: 1 },
    log: { level: 'silent' },
    ...extra,
  });
}

export interface Harness {
  readonly server: MappingServer;
  readonly rmKey: KeyPair;
  readonly port: number;
  readonly store: BindingStore;
  client(o?: Partial<RmClientOptions> & { prefix?: Prefix; key?: KeyPair }): Promise<RmClient>;
  close(): Promise<void>;
}

export async function startHarness(extra: Record<string, unknown> = {}, clock: Clock = systemClock): Promise<Harness> {
  const config = testConfig(extra);
  const rmKey = generateKeyPair();
  const store = new BindingStore({
    path: config.store.path,
    synchronous: config.store.synchronous,
    batchWindowMs: config.store.batchWindowMs,
    batchMax: config.store.batchMax,
    clock,
    log: silentLogger,
    describe: (b) => {
      const d = decodeBinding(b);
      return d.ok ? { ttl: d.binding.ttl, prefs: [] } : null;
    },
  });
  const server = createMappingServer(config, { clock, log: silentLogger, key: rmKey, store });
  await server.start();
  const port = server.addresses()[0].port;
  const clients: RmClient[] = [];
  return {
    server,
    rmKey,
    port,
    store,
    async client(o = {}) {
      const c = createRmClient({
        rm: [{ address: '127.0.0.1', port, publicKey: rmKey.publicKey }],
        key: o.key ?? generateKeyPair(),
        prefix: o.prefix ?? parsePrefix(REALM_PREFIX),
        retransmit: { initialMs: 50, maxMs: 400, attempts: 5 },
        ...o,
      });
      await c.start();
      clients.push(c);
      return c;
    },
    async close() {
      for (const c of clients) await c.stop();
      await server.stop();
    },
  };
}

export const LOCATORS: readonly Locator[] = [
  { address: '192.0.2.10', port: 4341, uplink: 'ispa', priority: 1, weight: 50, state: 'up' },
  { address: '198.51.100.10', port: 4341, uplink: 'ispb', priority: 1, weight: 50, state: 'up' },
];

export function bindingFor(key: KeyPair, seq: number, o: { prefix?: string; locators?: readonly Locator[]; ttl?: number } = {}): Binding {
  return signBinding(key, { prefix: parsePrefix(o.prefix ?? REALM_PREFIX), locators: o.locators ?? LOCATORS, seq, ttl: o.ttl ?? 300 });
}

export { ManualClock };
