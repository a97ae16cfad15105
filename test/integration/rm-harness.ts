import { ManualClock, systemClock, type Clock } from '../../shared/clock.ts';
import { silentLogger } from '../../shared/log.ts';
import { generateKeyPair, type KeyPair } from '../../shared/crypto/ed25519.ts';
import { parsePrefix, type Prefix } from '../../shared/ids.ts';
import { signBinding, type Binding, type Locator } from '../../shared/binding.ts';
import { parseRmConfig, type RmConfig } from '../../mapping-server/config.ts';
import { createMappingServer, type MappingServer, type OpenSocket } from '../../mapping-server/server.ts';
import { BindingStore, type StoreOptions } from '../../mapping-server/store/bindings.ts';
import { decodeBinding } from '../../shared/binding.ts';
import { createRmClient, type RmClient, type RmClientOptions } from '../../agent/rm/client.ts';

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
  /** A client, its key admitted first unless admit is false (a stranger). */
  client(o?: Partial<RmClientOptions> & { prefix?: Prefix; key?: KeyPair; admit?: boolean }): Promise<RmClient>;
  /** Admits a key (durably, as `realmnet rm admit` would) under prefix (default: the realm's). */
  admit(key: KeyPair | Uint8Array, prefix?: Prefix | string): Promise<HostId>;
  close(): Promise<void>;
}

export interface HarnessOptions {
  /** Builds the RM's store (default: a plain BindingStore), e.g. one that fails on purpose. */
  readonly store?: (o: StoreOptions) => BindingStore;
  /** Passed to the RM as deps.openSocket (default: the batched native socket). */
  readonly openSocket?: OpenSocket;
  /** The RM's wall clock for certificates (default Date.now). */
  readonly wallClock?: () => number;
  /** The RM's key (default: a fresh one), e.g. when other RMs must name it (the hierarchy). */
  readonly key?: KeyPair;
}

export async function startHarness(extra: Record<string, unknown> = {}, clock: Clock = systemClock, opts: HarnessOptions = {}): Promise<Harness> {
  const config = testConfig(extra);
  const rmKey = opts.key ?? generateKeyPair();
  const makeStore = opts.store ?? ((o: StoreOptions) => new BindingStore(o));
  const store = makeStore({
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
  const server = createMappingServer(config, { clock, log: silentLogger, key: rmKey, store, openSocket: opts.openSocket, wallClock: opts.wallClock });
  await server.start();
  const port = server.addresses()[0].port;
  const clients: RmClient[] = [];
  return {
    server,
    rmKey,
    port,
    store,
    admit(key, prefix) {
      const pk = key instanceof Uint8Array ? key : key.publicKey;
      return server.admit(pk, typeof prefix === 'string' ? parsePrefix(prefix) : prefix);
    },
    async client(o = {}) {
      const { admit = true, ...rest } = o;
      const key = o.key ?? generateKeyPair();
      const prefix = o.prefix ?? parsePrefix(REALM_PREFIX);
      if (admit) await server.admit(key.publicKey, prefix);
      const c = createRmClient({
        rm: [{ address: '127.0.0.1', port, publicKey: rmKey.publicKey }],
        retransmit: { initialMs: 50, maxMs: 400, attempts: 5 },
        ...rest,
        key,
        prefix,
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

// ---- a raw session, for tests that send what a well-behaved client never would ----

import { createSocket, type Socket } from 'node:dgram';
import { deriveHostId, type HostId } from '../../shared/ids.ts';
import { deriveSessionKeys, signedHello, type SessionKeys } from '../../shared/wire/handshake.ts';
import { ReplayWindow } from '../../shared/wire/replay.ts';
import { checkMac, decodeBody, decodeHeader, encode } from '../../shared/wire/codec.ts';
import type { ControlMessage } from '../../shared/wire/messages.ts';

export interface RawSession {
  readonly hostId: HostId;
  readonly key: KeyPair;
  readonly sid: number;
  readonly keys: SessionKeys;
  readonly socket: Socket;
  /** Encodes with the next sequence number and sends; returns the datagram (to replay it). */
  send(m: ControlMessage): Buffer;
  sendRaw(buf: Uint8Array): void;
  /** The next authenticated message from the RM. */
  next(timeoutMs?: number): Promise<ControlMessage>;
  close(): Promise<void>;
}

/** With a Harness, the key is admitted first (unless admit is false); with a bare port, it must be a member already. */
export async function rawSession(rm: Harness | number, o: { key?: KeyPair; prefix?: string; admit?: boolean } = {}): Promise<RawSession> {
  const key = o.key ?? generateKeyPair();
  const prefix = parsePrefix(o.prefix ?? REALM_PREFIX);
  const port = typeof rm === 'number' ? rm : rm.port;
  if (typeof rm !== 'number' && o.admit !== false) await rm.admit(key, prefix);
  const hostId = deriveHostId(prefix, key.publicKey);
  const socket = createSocket('udp4');
  await new Promise<void>((r) => socket.bind(0, '127.0.0.1', () => r()));
  const inbox: ControlMessage[] = [];
  const waiters: ((m: ControlMessage) => void)[] = [];
  let keys: SessionKeys | null = null;
  const rx = new ReplayWindow();
  const idb = hostId.toBytes();
  let { hello: helloMsg, eph } = signedHello(key, idb, prefix.length, 1);
  let nonce = helloMsg.nonce;
  let hello = encode(helloMsg, null);
  let welcome: ((sid: number) => void) | null = null;
  let refused: ((e: Error) => void) | null = null;
  socket.on('message', (buf) => {
    const h = decodeHeader(buf);
    if (!h.ok) return;
    if (h.msg.sid === 0) {
      const b = decodeBody(h.msg, buf);
      if (b.ok && b.msg.type === 'cookie' && welcome && helloMsg.cookie === null) {
        // The RM's return-routability cookie: the HELLO again, with it (docs/security.md, decision 4).
        ({ hello: helloMsg, eph } = signedHello(key, idb, prefix.length, 1, { cookie: Uint8Array.from(b.msg.cookie) }));
        nonce = helloMsg.nonce;
        hello = encode(helloMsg, null);
        socket.send(hello, port, '127.0.0.1');
      }
      if (b.ok && b.msg.type === 'reject' && welcome && refused) {
        // Refused (e.g. 3, not a member: with a bare port the key must be admitted first): say so now.
        refused(new Error(`HELLO refused: REJECT code ${b.msg.code}`));
        return;
      }
      if (b.ok && b.msg.type === 'welcome' && welcome) {
        keys = deriveSessionKeys(eph, b.msg.ephemeral, { sid: b.msg.sid, clientHostId: idb, clientEphemeral: eph.publicKey, rmEphemeral: b.msg.ephemeral, nonce });
        welcome(b.msg.sid);
      }
      return;
    }
    if (keys === null || !checkMac(buf, keys.s2c) || !rx.check(h.msg.seq)) return;
    const b = decodeBody(h.msg, buf);
    if (!b.ok) return;
    const w = waiters.shift();
    if (w) w(b.msg);
    else inbox.push(b.msg);
  });
  const sid = await new Promise<number>((resolve, reject) => {
    welcome = resolve;
    const t = setInterval(() => socket.send(hello, port, '127.0.0.1'), 100);
    socket.send(hello, port, '127.0.0.1');
    const giveUp = setTimeout(() => refused?.(new Error('no welcome')), 5000);
    giveUp.unref();
    refused = (e) => {
      clearInterval(t);
      clearTimeout(giveUp);
      welcome = null;
      refused = null;
      socket.close();
      reject(e);
    };
    const orig = welcome;
    welcome = (s) => {
      clearInterval(t);
      clearTimeout(giveUp);
      refused = null;
      orig(s);
    };
  });
  let seq = 0;
  const k = keys as unknown as SessionKeys;
  return {
    hostId,
    key,
    sid,
    keys: k,
    socket,
    send(m) {
      seq++;
      const buf = encode(m, { sid, seq, key: k.c2s });
      socket.send(buf, port, '127.0.0.1');
      return buf;
    },
    sendRaw(buf) {
      socket.send(buf, port, '127.0.0.1');
    },
    next(timeoutMs = 2000) {
      const m = inbox.shift();
      if (m) return Promise.resolve(m);
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('no answer')), timeoutMs);
        waiters.push((x) => {
          clearTimeout(t);
          resolve(x);
        });
      });
    },
    close: () => new Promise<void>((r) => socket.close(() => r())),
  };
}
