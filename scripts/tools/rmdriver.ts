/**
 * Drives the Realm Manager protocol from inside a testbed namespace, for the abuse bench and the
 * attack tests (scripts/bench/abuse.ts, test/e2e/abuse.test.ts). One process per namespace, commands
 * as JSON lines on stdin, one JSON line per answer on stdout ({"ok":true,...} or {"ok":false,"error"}).
 *
 *   node --import tsx scripts/tools/rmdriver.ts      (then write commands; see `Command` below)
 *
 * Two kinds of client:
 * - A *legit* client is the agent's own RM client (agent/rm/client.ts, createRmClient), so that
 *   "legit lookups succeed under a flood" measures the code agents run.
 * - A *raw* session is the attacker's: the wire protocol written by hand (docs/control-protocol.md,
 *   docs/security.md), so that it can do what no agent does: keep its session keys to seal datagrams
 *   that realmnet_spoof later sends from a forged source, claim another host's ID, register doctored
 *   bindings. It speaks both HELLO forms: the 7-field one of the original protocol and the 9-field
 *   one of the realm-trust protocol (join proof, cookie), and answers COOKIE and CHALLENGE as the
 *   spec says, so the same attack runs against the RM before and after admission is merged; which
 *   form the RM answered is reported (`form`).
 *
 * Datagram templates (for realmnet_spoof) are files of [u16 big-endian length][bytes] records.
 */
import { createSocket, type Socket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { Packr, Unpackr } from 'msgpackr';
import { signBinding, type Locator } from '../../shared/binding.ts';
import { HostId, deriveHostId, parseHostId, parsePrefix, type Prefix } from '../../shared/ids.ts';
import { generateKeyPair, signBytes, type KeyPair } from '../../shared/crypto/ed25519.ts';
import { loadKeyPair } from '../../shared/keyfile.ts';
import { MAC_LEN, mac, macVerify } from '../../shared/crypto/blake2s.ts';
import { createEphemeral, deriveSessionKeys, helloSignedBytes, randomNonce, type SessionKeys } from '../../shared/wire/handshake.ts';
import { writeHeader } from '../../shared/wire/codec.ts';
import { createRmClient, type RmClient } from '../../agent/rm/client.ts';

// ---- wire, by hand ---------------------------------------------------------------------------------

const packr = new Packr({ useRecords: false, int64AsType: 'number', bundleStrings: false });
const unpackr = new Unpackr({ useRecords: false, int64AsType: 'number', mapsAsObjects: false });

/** Message type numbers (docs/control-protocol.md and docs/security.md). */
const T = { hello: 1, welcome: 2, reject: 3, cookie: 4, lookup: 10, lookupReply: 11, register: 12, registerReply: 13, subscribe: 14, subscribeReply: 15, unsubscribe: 16, challenge: 32, challengeReply: 33 } as const;
const HEADER = 12;

function unsealed(type: number, body: unknown[]): Buffer {
  const b = packr.pack(body);
  const out = Buffer.allocUnsafe(HEADER + b.length);
  writeHeader(out, type, 0, 0);
  b.copy(out, HEADER);
  return out;
}

function unpackBody(buf: Buffer, end: number): unknown[] | null {
  try {
    const v: unknown = unpackr.unpack(buf.subarray(HEADER, end));
    return Array.isArray(v) ? (v as unknown[]) : null;
  } catch {
    return null;
  }
}

const isBytes = (x: unknown): x is Uint8Array => x instanceof Uint8Array;
const isNum = (x: unknown): x is number => typeof x === 'number';

export interface RmTarget {
  readonly address: string;
  readonly port: number;
}

export interface OpenResult {
  readonly welcome: boolean;
  /** REJECT code, when the RM refused the HELLO. */
  readonly reject: number | null;
  /** Whether the RM asked for a cookie first (the realm-trust protocol). */
  readonly cookie: boolean;
  /** Which HELLO form drew the answer: 7 (original) or 9 (with join and cookie). */
  readonly form: 7 | 9 | null;
  readonly sid: number;
}

/** The attacker's hand-written session (see the header). */
class RawSession {
  sid = 0;
  keys: SessionKeys | null = null;
  seq = 0;
  private reqId = 1;
  private readonly pending = new Map<number, (type: number, body: unknown[]) => void>();
  private onHandshake: ((type: number, body: unknown[]) => void) | null = null;
  readonly hostId: Uint8Array;
  counters = { challenges: 0, rx: 0, rxBadMac: 0 };

  constructor(
    readonly sock: Socket,
    readonly rm: RmTarget,
    readonly key: KeyPair,
    readonly prefix: Prefix,
    /** Claim this ID instead of the key's (an impostor's HELLO). */
    claimId?: Uint8Array,
  ) {
    this.hostId = claimId ?? deriveHostId(prefix, key.publicKey).toBytes();
    sock.on('message', (buf) => this.onMessage(buf));
  }

  private send(buf: Buffer): void {
    this.sock.send(buf, this.rm.port, this.rm.address);
  }

  private onMessage(buf: Buffer): void {
    this.counters.rx++;
    if (buf.length < HEADER + 1) return;
    const type = buf[1];
    const sid = buf.readUInt32BE(2);
    if (sid === 0) {
      const body = unpackBody(buf, buf.length);
      if (body !== null) this.onHandshake?.(type, body);
      return;
    }
    if (this.keys === null || sid !== this.sid || buf.length < HEADER + 1 + MAC_LEN) return;
    const end = buf.length - MAC_LEN;
    if (!macVerify(this.keys.s2c, buf, 0, end, end)) {
      this.counters.rxBadMac++;
      return;
    }
    const body = unpackBody(buf, end);
    if (body === null) return;
    if (type === T.challenge) {
      // Return routability (docs/security.md): echo the token from where it came (this socket).
      this.counters.challenges++;
      this.send(this.seal(T.challengeReply, [body[0]]));
      return;
    }
    const id = body[0];
    if (isNum(id)) this.pending.get(id)?.(type, body);
  }

  /** HELLO (both forms at once; whichever the RM understands draws the answer), COOKIE, WELCOME. */
  open(timeoutMs: number, join: 'none' | 'bogus' = 'none'): Promise<OpenResult> {
    const reqId = this.reqId++;
    const eph = createEphemeral();
    const nonce = randomNonce();
    const L = this.prefix.length;
    const sig = signBytes(this.key, helloSignedBytes(this.hostId, L, this.key.publicKey, eph.publicKey, nonce));
    const base = [reqId, this.hostId, L, this.key.publicKey, eph.publicKey, nonce, sig];
    const joinField = join === 'bogus' ? [randomBytes(16), Math.floor(Date.now() / 1000) + 3600, randomBytes(16)] : null;
    let cookie: Uint8Array | null = null;
    const sendHellos = (): void => {
      if (cookie === null) {
        if (join === 'none') this.send(unsealed(T.hello, base));
        this.send(unsealed(T.hello, [...base, joinField, null]));
      } else this.send(unsealed(T.hello, [...base, joinField, cookie]));
    };
    return new Promise((resolve) => {
      const done = (r: OpenResult): void => {
        clearInterval(retry);
        clearTimeout(timer);
        this.onHandshake = null;
        resolve(r);
      };
      this.onHandshake = (type, body) => {
        if (body[0] !== reqId) return;
        if (type === T.cookie && isBytes(body[1])) {
          cookie = body[1];
          sendHellos();
        } else if (type === T.reject && isNum(body[1])) {
          done({ welcome: false, reject: body[1], cookie: cookie !== null, form: cookie !== null || join !== 'none' ? 9 : null, sid: 0 });
        } else if (type === T.welcome && isNum(body[1]) && isBytes(body[3])) {
          const sid = body[1];
          const keys = deriveSessionKeys(eph, body[3], { sid, clientHostId: this.hostId, clientEphemeral: eph.publicKey, rmEphemeral: body[3], nonce });
          if (keys === null) return;
          this.sid = sid;
          this.keys = keys;
          this.seq = 0;
          done({ welcome: true, reject: null, cookie: cookie !== null, form: body.length > 5 || cookie !== null ? 9 : 7, sid });
        }
      };
      const retry = setInterval(sendHellos, 400);
      const timer = setTimeout(() => done({ welcome: false, reject: null, cookie: cookie !== null, form: null, sid: 0 }), timeoutMs);
      sendHellos();
    });
  }

  /** A datagram of this session with the next sequence number and its MAC. */
  seal(type: number, body: unknown[]): Buffer {
    if (this.keys === null) throw new Error('no session');
    const b = packr.pack(body);
    const len = HEADER + b.length + MAC_LEN;
    const out = Buffer.allocUnsafe(len);
    writeHeader(out, type, this.sid, ++this.seq);
    b.copy(out, HEADER);
    mac(this.keys.c2s, out, 0, len - MAC_LEN, out, len - MAC_LEN);
    return out;
  }

  nextReqId(): number {
    return this.reqId++;
  }

  /** Sends a request (retransmitted every 300 ms) and resolves with the answer's body, or null. */
  request(type: number, rest: unknown[], timeoutMs: number): Promise<{ type: number; body: unknown[] } | null> {
    if (this.keys === null) return Promise.resolve(null);
    const reqId = this.reqId++;
    return new Promise((resolve) => {
      const done = (r: { type: number; body: unknown[] } | null): void => {
        clearInterval(retry);
        clearTimeout(timer);
        this.pending.delete(reqId);
        resolve(r);
      };
      this.pending.set(reqId, (t, body) => done({ type: t, body }));
      const send = (): void => this.send(this.seal(type, [reqId, ...rest]));
      const retry = setInterval(send, 300);
      const timer = setTimeout(() => done(null), timeoutMs);
      send();
    });
  }
}

// ---- commands ----------------------------------------------------------------------------------------

interface Ctx {
  raw: Map<string, RawSession>;
  legit: Map<string, RmClient>;
  /** Datagrams each legit client sent (see the `legit` command). */
  captured: Map<string, Buffer[]>;
  form: 7 | 9 | null;
}

type Json = Record<string, unknown>;

function str(c: Json, k: string): string {
  const v = c[k];
  if (typeof v !== 'string') throw new Error(`${k}: a string is required`);
  return v;
}
function num(c: Json, k: string, dflt?: number): number {
  const v = c[k] ?? dflt;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${k}: a number is required`);
  return v;
}
function strs(c: Json, k: string): string[] {
  const v = c[k];
  if (!Array.isArray(v) || !v.every((x): x is string => typeof x === 'string')) throw new Error(`${k}: a list of strings is required`);
  return v;
}
function target(c: Json): RmTarget {
  return { address: str(c, 'rmAddress'), port: num(c, 'rmPort', 4342) };
}
function keyOf(c: Json): KeyPair {
  return typeof c.key === 'string' ? loadKeyPair(c.key) : generateKeyPair();
}
function rawOf(ctx: Ctx, c: Json): RawSession {
  const s = ctx.raw.get(str(c, 'name'));
  if (s === undefined) throw new Error(`no raw session named ${String(c.name)}`);
  return s;
}

async function openSocket(bind: string | undefined, family: 4 | 6): Promise<Socket> {
  const sock = createSocket(family === 6 ? 'udp6' : 'udp4');
  // A bind that fails (out of ports or descriptors) must fail the command, not leave it waiting.
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(0, bind, () => {
      sock.off('error', reject);
      resolve();
    });
  });
  sock.on('error', () => undefined); // ICMP errors reported on a later send: irrelevant to an attacker
  return sock;
}

async function newRaw(ctx: Ctx, c: Json, key: KeyPair, claimId?: Uint8Array): Promise<{ s: RawSession; r: OpenResult }> {
  const rm = target(c);
  const sock = await openSocket(typeof c.bind === 'string' ? c.bind : undefined, rm.address.includes(':') ? 6 : 4);
  const s = new RawSession(sock, rm, key, parsePrefix(str(c, 'prefix')), claimId);
  const r = await s.open(num(c, 'timeoutMs', 3000), c.join === 'bogus' ? 'bogus' : 'none');
  if (r.form !== null) ctx.form = r.form;
  return { s, r };
}

function templateFile(file: string, records: readonly Uint8Array[]): { file: string; count: number; bytes: number } {
  const parts: Buffer[] = [];
  let bytes = 0;
  for (const r of records) {
    const len = Buffer.alloc(2);
    len.writeUInt16BE(r.length);
    parts.push(len, Buffer.from(r));
    bytes += r.length;
  }
  writeFileSync(file, Buffer.concat(parts));
  return { file, count: records.length, bytes };
}

/** Locators for a binding: addresses on the data port, all up. */
function locators(addresses: readonly string[]): Locator[] {
  return addresses.map((address, i) => ({ address, port: 4341, uplink: `u${i}`, priority: 1, weight: 1, state: 'up' as const }));
}

const wait = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function lookupCount(s: RawSession, ids: readonly string[], timeoutMs: number): Promise<Json> {
  let positive = 0;
  let negative = 0;
  let noAnswer = 0;
  let other = 0;
  for (const id of ids) {
    const a = await s.request(T.lookup, [parseHostId(id).toBytes()], timeoutMs);
    if (a === null) noAnswer++;
    else if (a.type !== T.lookupReply) other++;
    else if (isBytes(a.body[3]) && a.body[3].length > 0) positive++;
    else negative++;
  }
  return { positive, negative, noAnswer, other };
}

async function registerStatus(s: RawSession, binding: Uint8Array, timeoutMs: number): Promise<number | null> {
  const a = await s.request(T.register, [binding], timeoutMs);
  return a !== null && a.type === T.registerReply && isNum(a.body[3]) ? a.body[3] : null;
}

function runSpoof(bin: string, args: readonly string[]): Promise<Json> {
  return new Promise((resolve, reject) => {
    execFile(bin, [...args], { timeout: 15 * 60_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`${bin} ${args.join(' ')}: ${(stderr || String(err)).trim()}`));
      try {
        resolve(JSON.parse(stdout.trim()) as Json);
      } catch {
        reject(new Error(`${bin}: unexpected output ${stdout.slice(0, 200)}`));
      }
    });
  });
}

/**
 * Commands (field `cmd`):
 *   open        {name, rmAddress, rmPort?, prefix, key?, bind?, join?: 'bogus', claimId?, timeoutMs?}  a raw session
 *   lookup      {name, ids, timeoutMs?}         raw lookups: how many answers carried a binding
 *   register    {name, binding (hex)}           a raw REGISTER of these bytes: the RM's status
 *   registerOwn {name, prefix, locators, seq?}  a binding of the session's key with these locators
 *   foreign     {name, victimId, captured (hex), victimLocators}  registrations of another host's ID
 *   subscribe   {name, ids}
 *   templates   {kind: hello|lookupSealed|lookupRandomSid|garbage, file, count, name?, prefix?, ids?}
 *   pushReflect {rmAddress, prefix, key, sessions, victim, spoof}  see below
 *   churn       {rmAddress, prefix, seconds, rate, register}  new keys: HELLO (+ REGISTER) at a rate
 *   spoof       {bin, args}                     runs realmnet_spoof here
 *   legit       {name, rmAddress, rmPort?, publicKey?, key?, bind?, prefix, timeoutMs?}  the agent's RM client
 *               (key absent: a fresh one, i.e. a stranger using the real client)
 *   legitLoop   {name, id, rate, seconds}       lookups at a rate: positive / negative / failed
 *   legitLookup {name, ids, timeoutMs?}         one lookup each
 *   captured    {name, file}                    the legit client's sent datagrams, as templates
 *   close       {name}
 */
async function handle(ctx: Ctx, c: Json): Promise<Json> {
  switch (c.cmd) {
    case 'open': {
      const claim = typeof c.claimId === 'string' ? parseHostId(c.claimId).toBytes() : undefined;
      const { s, r } = await newRaw(ctx, c, keyOf(c), claim);
      ctx.raw.set(str(c, 'name'), s);
      return { ...r, hostId: parseHostIdText(s.hostId) };
    }
    case 'lookup':
      return lookupCount(rawOf(ctx, c), strs(c, 'ids'), num(c, 'timeoutMs', 1500));
    case 'register':
      return { status: await registerStatus(rawOf(ctx, c), Buffer.from(str(c, 'binding'), 'hex'), num(c, 'timeoutMs', 2000)) };
    case 'registerOwn': {
      const s = rawOf(ctx, c);
      const b = signBinding(s.key, { prefix: parsePrefix(str(c, 'prefix')), locators: locators(strs(c, 'locators')), seq: num(c, 'seq', Date.now()), ttl: num(c, 'ttl', 3600) });
      return { status: await registerStatus(s, b.bytes, num(c, 'timeoutMs', 2000)), hostId: b.hostId.toString(), bytes: b.bytes.length };
    }
    case 'foreign':
      return foreign(rawOf(ctx, c), c);
    case 'subscribe': {
      const a = await rawOf(ctx, c).request(T.subscribe, [strs(c, 'ids').map((i) => parseHostId(i).toBytes())], num(c, 'timeoutMs', 1500));
      return { accepted: a !== null && a.type === T.subscribeReply && isNum(a.body[1]) ? a.body[1] : null };
    }
    case 'templates':
      return templates(ctx, c);
    case 'pushReflect':
      return pushReflect(ctx, c);
    case 'churn':
      return churn(ctx, c);
    case 'spoof':
      return runSpoof(str(c, 'bin'), strs(c, 'args'));
    case 'legit': {
      const publicKey = typeof c.publicKey === 'string' ? new Uint8Array(Buffer.from(c.publicKey, 'base64')) : undefined;
      const rm = target(c);
      // bind: as the agent does (agent/rm/link.ts), one uplink's address, so source-policy routing
      // sends the client out through that uplink whatever happens to the main table's default.
      const socket = await openSocket(typeof c.bind === 'string' ? c.bind : undefined, rm.address.includes(':') ? 6 : 4);
      // What an on-path observer would record: every datagram this client sends (for replays).
      const log: Buffer[] = [];
      ctx.captured.set(str(c, 'name'), log);
      const send = socket.send as (...a: unknown[]) => void;
      Object.defineProperty(socket, 'send', {
        value: (...a: unknown[]): void => {
          if (Buffer.isBuffer(a[0]) && log.length < 10_000) log.push(Buffer.from(a[0]));
          send.apply(socket, a);
        },
      });
      const client = createRmClient({ rm: [{ ...rm, ...(publicKey ? { publicKey } : {}) }], key: typeof c.key === 'string' ? loadKeyPair(c.key) : generateKeyPair(), prefix: parsePrefix(str(c, 'prefix')), socket });
      const t = num(c, 'timeoutMs', 10_000);
      const started = await Promise.race([client.start().then(() => 'ok' as const, (e: unknown) => (e instanceof Error ? e.message : String(e))), wait(t).then(() => 'timeout' as const)]);
      ctx.legit.set(str(c, 'name'), client);
      return { started: started === 'ok', why: started === 'ok' ? null : started, hostId: client.hostId.toString() };
    }
    case 'legitLoop':
      return legitLoop(ctx, c);
    case 'legitLookup': {
      const client = ctx.legit.get(str(c, 'name'));
      if (client === undefined) throw new Error(`no legit client named ${String(c.name)}`);
      let positive = 0;
      let negative = 0;
      let failed = 0;
      for (const id of strs(c, 'ids')) {
        const r = await Promise.race([client.lookup(parseHostId(id)).catch(() => null), wait(num(c, 'timeoutMs', 5000)).then(() => null)]);
        if (r === null) failed++;
        else if (r.kind === 'binding') positive++;
        else negative++;
      }
      return { positive, negative, failed };
    }
    case 'captured': {
      const log = ctx.captured.get(str(c, 'name')) ?? [];
      return templateFile(str(c, 'file'), log);
    }
    case 'close': {
      const n = str(c, 'name');
      ctx.raw.get(n)?.sock.close();
      ctx.raw.delete(n);
      await ctx.legit.get(n)?.stop();
      ctx.legit.delete(n);
      return {};
    }
    default:
      throw new Error(`unknown command ${String(c.cmd)}`);
  }
}

function parseHostIdText(b: Uint8Array): string {
  return HostId.fromBytes(b).toString();
}

/**
 * Registering a binding for another host's ID, every way a stranger or a member could try; each
 * accepted one (status 0) is a foreign registration. `captured` is the victim's real binding as an
 * on-path observer would have seen it go by.
 */
async function foreign(s: RawSession, c: Json): Promise<Json> {
  const captured = Buffer.from(str(c, 'captured'), 'hex');
  const victimId = parseHostId(str(c, 'victimId')).toBytes();
  const tries: Record<string, Uint8Array> = {};
  // 1. The captured binding as it is, from our session.
  tries.replay = captured;
  // 2. Its locators changed to ours and its seq raised, signature left as it was (a forgery).
  const doctored = Buffer.from(captured);
  doctored.writeBigUInt64BE(doctored.readBigUInt64BE(53) + 1000n, 53);
  doctored[68] ^= 0x01; // first locator's address
  tries.doctored = doctored;
  // 3. Our own key, the victim's ID written over ours, signed again by us (ID ≠ hash of the key).
  const own = Buffer.from(signBinding(s.key, { prefix: s.prefix, locators: locators(strs(c, 'victimLocators')), seq: Date.now(), ttl: 3600 }).bytes);
  Buffer.from(victimId).copy(own, 4);
  Buffer.from(signBytes(s.key, own.subarray(0, own.length - 64))).copy(own, own.length - 64);
  tries.ownKeyVictimId = own;
  // 4. The same, under every other prefix length the realm might take (a /64 or shorter claim).
  for (const L of [0, 16, 48, 64]) {
    const b = Buffer.from(own);
    b[20] = L;
    Buffer.from(signBytes(s.key, b.subarray(0, b.length - 64))).copy(b, b.length - 64);
    tries[`ownKeyVictimIdL${L}`] = b;
  }
  const statuses: Record<string, number | null> = {};
  let accepted = 0;
  for (const [k, b] of Object.entries(tries)) {
    const st = await registerStatus(s, b, num(c, 'timeoutMs', 1500));
    statuses[k] = st;
    if (st === 0) accepted++;
  }
  return { accepted, statuses };
}

async function templates(ctx: Ctx, c: Json): Promise<Json> {
  const count = num(c, 'count');
  const file = str(c, 'file');
  const recs: Uint8Array[] = [];
  switch (c.kind) {
    case 'hello': {
      // Distinct, valid, signed HELLOs of fresh keys (the form the RM answered, or both if unknown).
      const prefix = parsePrefix(str(c, 'prefix'));
      for (let i = 0; i < count; i++) {
        const key = generateKeyPair();
        const id = deriveHostId(prefix, key.publicKey).toBytes();
        const eph = createEphemeral();
        const nonce = randomNonce();
        const base = [i + 1, id, prefix.length, key.publicKey, eph.publicKey, nonce, signBytes(key, helloSignedBytes(id, prefix.length, key.publicKey, eph.publicKey, nonce))];
        if (ctx.form !== 9) recs.push(unsealed(T.hello, base));
        if (ctx.form !== 7) recs.push(unsealed(T.hello, [...base, null, null]));
      }
      break;
    }
    case 'lookupSealed': {
      // The session's own LOOKUPs, consecutive sequence numbers: each passes the replay window once.
      const s = rawOf(ctx, c);
      const ids = strs(c, 'ids').map((i) => parseHostId(i).toBytes());
      for (let i = 0; i < count; i++) recs.push(s.seal(T.lookup, [s.nextReqId(), ids[i % ids.length]]));
      break;
    }
    case 'lookupRandomSid': {
      for (let i = 0; i < count; i++) {
        const b = Buffer.from(packr.pack([i + 1, randomBytes(16)]));
        const out = Buffer.concat([Buffer.alloc(HEADER), b, randomBytes(MAC_LEN)]);
        writeHeader(out, T.lookup, randomBytes(4).readUInt32BE(0) || 1, i + 1);
        recs.push(out);
      }
      break;
    }
    case 'garbage': {
      for (let i = 0; i < count; i++) {
        const b = randomBytes(13 + Math.floor(Math.random() * 400));
        b[0] = 1; // the right version: parsed further than pure noise
        recs.push(b);
      }
      break;
    }
    default:
      throw new Error(`unknown template kind ${String(c.kind)}`);
  }
  return templateFile(file, recs);
}

/**
 * Reflection through pushes (issue #12): S sessions of one key follow the key's own ID; one sealed
 * LOOKUP per session is sent from the victim's address (realmnet_spoof), which moves each session's
 * reply address there unless the RM checks return routability; then a new binding is registered
 * from a session that stayed home, and the RM pushes it to every follower, retransmitting until
 * acknowledged, which the victim never does.
 */
async function pushReflect(ctx: Ctx, c: Json): Promise<Json> {
  const n = num(c, 'sessions');
  const key = loadKeyPair(str(c, 'key'));
  const home = await newRaw(ctx, c, key);
  if (!home.r.welcome) return { sessions: 0, home: home.r };
  const selfId = parseHostIdText(home.s.hostId);
  const followers: RawSession[] = [];
  let subscribed = 0;
  for (let i = 0; i < n; i++) {
    const { s, r } = await newRaw(ctx, c, key);
    if (!r.welcome) continue;
    followers.push(s);
    const a = await s.request(T.subscribe, [[s.hostId]], 1500);
    if (a !== null && a.type === T.subscribeReply) subscribed++;
  }
  const recs = followers.map((s) => s.seal(T.lookup, [s.nextReqId(), s.hostId]));
  const file = str(c, 'file');
  templateFile(file, recs);
  const spoof = await runSpoof(str(c, 'bin'), ['--dst', home.s.rm.address, '--dport', String(home.s.rm.port), '--src', str(c, 'victim'), '--sport', '4341', '--templates', file, '--count', String(recs.length)]);
  await wait(500);
  const reg = signBinding(key, { prefix: parsePrefix(str(c, 'prefix')), locators: locators(strs(c, 'locators')), seq: Date.now(), ttl: 3600 });
  const status = await registerStatus(home.s, reg.bytes, 2000);
  // Pushes are retransmitted 200 ms doubling, 6 attempts: ~12.6 s to the last one.
  await wait(num(c, 'settleMs', 14_000));
  for (const s of [home.s, ...followers]) s.sock.close();
  return { sessions: followers.length, subscribed, spoof, register: status, selfId };
}

/**
 * Store and memory exhaustion: fresh keys at `rate` per second for `seconds`, each a HELLO (a third
 * with a made-up join token when the RM speaks the 9-field form) and, when a session is granted, a
 * REGISTER of a binding of its own. Up to 32 at once.
 */
async function churn(ctx: Ctx, c: Json): Promise<Json> {
  const seconds = num(c, 'seconds');
  const rate = num(c, 'rate');
  const doRegister = c.register !== false;
  const prefix = str(c, 'prefix');
  const out = { attempts: 0, welcomes: 0, rejects: 0, noAnswer: 0, registered: 0, registerRefused: 0, errors: 0, lastError: '' };
  const t0 = Date.now();
  let inflight = 0;
  const one = async (i: number): Promise<void> => {
    inflight++;
    let sock: Socket | null = null;
    try {
      const join = ctx.form === 9 && i % 3 === 0 ? 'bogus' : 'none';
      const { s, r } = await newRaw(ctx, { ...c, join, timeoutMs: 2000 }, generateKeyPair());
      sock = s.sock;
      out.attempts++;
      if (r.welcome) {
        out.welcomes++;
        if (doRegister) {
          const b = signBinding(s.key, { prefix: parsePrefix(prefix), locators: locators(['192.0.2.200']), seq: Date.now(), ttl: 60 });
          const st = await registerStatus(s, b.bytes, 2000);
          if (st === 0) out.registered++;
          else out.registerRefused++;
        }
      } else if (r.reject !== null) out.rejects++;
      else out.noAnswer++;
    } catch (e) {
      // Counted, not fatal: the churn goes on, and the count says whether the driver kept up.
      out.errors++;
      out.lastError = e instanceof Error ? e.message : String(e);
    } finally {
      sock?.close();
      inflight--;
    }
  };
  let i = 0;
  while (Date.now() - t0 < seconds * 1000) {
    const due = Math.floor(((Date.now() - t0) * rate) / 1000);
    while (i < due && inflight < 32) void one(i++);
    await wait(20);
  }
  while (inflight > 0) await wait(50);
  return { ...out, seconds: (Date.now() - t0) / 1000 };
}

async function legitLoop(ctx: Ctx, c: Json): Promise<Json> {
  const client = ctx.legit.get(str(c, 'name'));
  if (client === undefined) throw new Error(`no legit client named ${String(c.name)}`);
  const id: HostId = parseHostId(str(c, 'id'));
  const rate = num(c, 'rate');
  const seconds = num(c, 'seconds');
  let positive = 0;
  let negative = 0;
  let failed = 0;
  const lat: number[] = [];
  const all: Promise<void>[] = [];
  const t0 = Date.now();
  for (let i = 0; Date.now() - t0 < seconds * 1000; i++) {
    const due = t0 + (i * 1000) / rate;
    if (due > Date.now()) await wait(due - Date.now());
    const s = performance.now();
    all.push(
      client.lookup(id).then(
        (r) => {
          if (r.kind === 'binding') {
            positive++;
            lat.push(performance.now() - s);
          } else negative++;
        },
        () => void failed++,
      ),
    );
  }
  await Promise.all(all);
  lat.sort((a, b) => a - b);
  const q = (p: number): number | null => (lat.length === 0 ? null : (lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] ?? null));
  return { sent: all.length, positive, negative, failed, p50_ms: q(0.5), p99_ms: q(0.99), max_ms: lat.at(-1) ?? null, counters: client.counters() };
}

// ---- main --------------------------------------------------------------------------------------------

const ctx: Ctx = { raw: new Map(), legit: new Map(), captured: new Map(), form: null };
const rl = createInterface({ input: process.stdin });
let queue = Promise.resolve();
rl.on('line', (line) => {
  // One command at a time, in order: answers come back in the order the commands went in.
  queue = queue.then(async () => {
    let out: Json;
    try {
      const c: unknown = JSON.parse(line);
      if (typeof c !== 'object' || c === null || Array.isArray(c)) throw new Error('a command is a JSON object');
      out = { ok: true, ...(await handle(ctx, c as Json)) };
    } catch (e) {
      out = { ok: false, error: e instanceof Error ? e.message : String(e) };
    }
    process.stdout.write(JSON.stringify(out) + '\n');
  });
});
rl.on('close', () => {
  void queue.then(async () => {
    for (const s of ctx.raw.values()) s.sock.close();
    for (const l of ctx.legit.values()) await l.stop();
    process.exit(0);
  });
});
process.stdout.write(JSON.stringify({ ok: true, ready: true }) + '\n');
