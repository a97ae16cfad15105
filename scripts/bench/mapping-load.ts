/**
 * Load generator for the mapping benchmark (scripts/bench/mapping.ts runs it as a child process; it
 * is not a benchmark of its own and exports no run()).
 *
 *   node --import tsx scripts/bench/mapping-load.ts JOB.json
 *
 * Jobs (one per process, result as one JSON line on stdout):
 *   register  N hosts, each with its own session, register one signed binding each; W in flight.
 *   lookup    closed loop (W in flight) for the peak rate, or open loop at a given rate for latency.
 *   push      S subscriber sessions follow one ID; its host registers R new bindings one after the
 *             other; the time from sending each registration to each subscriber's push is recorded.
 *
 * It speaks the control protocol through shared/wire directly, many sessions on one socket (the RM
 * keys sessions by ID, not by address), so that a few hundred thousand datagrams a second fit in one
 * process. The socket is the project's batched native one (shared/udp: recvmmsg/sendmmsg), like the
 * RM's: with node:dgram the generator itself tops out near 40k round trips/s on this box. On the hot
 * path it writes lookup datagrams by hand into the send arena (the same bytes the codec writes) and
 * reads only the request ID of answers: the load generator is not what is measured.
 */
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { signBinding, type Binding } from '../../shared/binding.ts';
import { deriveHostId, parsePrefix, type HostId, type Prefix } from '../../shared/ids.ts';
import { generateKeyPair, type KeyPair } from '../../shared/crypto/ed25519.ts';
import { mac } from '../../shared/crypto/blake2s.ts';
import { deriveSessionKeys, signedHello, type Ephemeral, type SessionKeys } from '../../shared/wire/handshake.ts';
import { checkMac, decodeBody, decodeHeader, encode, writeHeader } from '../../shared/wire/codec.ts';
import { MAX_DATAGRAM, MsgType, type ControlMessage } from '../../shared/wire/messages.ts';
import { addressToBytes } from '../../shared/address.ts';
import { openUdp, type UdpBatchSocket } from '../../shared/udp/socket.ts';

export type LoadJob =
  | { kind: 'register'; port: number; prefix: string; hosts: number; window: number; timeoutS: number }
  | { kind: 'lookup'; port: number; prefix: string; ids: string[]; sessions: number; mode: 'peak'; window: number; seconds: number; warmupS: number }
  | { kind: 'lookup'; port: number; prefix: string; ids: string[]; sessions: number; mode: 'rate'; rate: number; seconds: number; warmupS: number }
  | { kind: 'push'; port: number; prefix: string; subscribers: number; rounds: number; timeoutS: number };

interface Sess {
  readonly sid: number;
  readonly keys: SessionKeys;
  readonly hostId: HostId;
  readonly key: KeyPair;
  seq: number;
}

const HOST = '127.0.0.1';

const LINK_SLOTS = 512;

/**
 * One batched socket to the RM. Datagrams are written (or copied) into a send arena and leave in one
 * sendmmsg at the end of the received batch or of the current turn of the event loop.
 */
class Link {
  readonly arena = Buffer.allocUnsafeSlow(LINK_SLOTS * MAX_DATAGRAM);
  private readonly offsets = new Uint32Array(LINK_SLOTS);
  private readonly lengths = new Uint32Array(LINK_SLOTS);
  private readonly addrs = new Uint8Array(LINK_SLOTS * 16);
  private readonly ports = new Uint16Array(LINK_SLOTS);
  private queued = 0;
  private scheduled = false;
  inBatch = false;

  constructor(
    readonly sock: UdpBatchSocket,
    port: number,
  ) {
    for (let i = 0; i < LINK_SLOTS; i++) {
      this.offsets[i] = i * MAX_DATAGRAM;
      addressToBytes(HOST, this.addrs, i * 16);
      this.ports[i] = port;
    }
  }

  /** The arena offset where the next datagram may be written (up to MAX_DATAGRAM bytes); then commit(). */
  reserve(): number {
    if (this.queued === LINK_SLOTS) this.flush();
    return this.offsets[this.queued];
  }

  commit(length: number): void {
    this.lengths[this.queued++] = length;
    if (!this.inBatch && !this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flush);
    }
  }

  send(buf: Buffer): void {
    const o = this.reserve();
    buf.copy(this.arena, o);
    this.commit(buf.length);
  }

  readonly flush = (): void => {
    this.scheduled = false;
    if (this.queued > 0) this.sock.send(this.arena, this.offsets, this.lengths, this.addrs, this.ports, this.queued);
    this.queued = 0;
  };

  close(): void {
    this.flush();
    this.sock.close();
  }
}

/** onMessage gets a view of a borrowed buffer, valid during the call only. */
function openLink(port: number, onMessage: (b: Buffer) => void): Link {
  const sock = openUdp({ address: HOST, port: 0, maxDatagram: MAX_DATAGRAM, batchSize: 64, slots: 8, sndbuf: 16 << 20, rcvbuf: 16 << 20 });
  const link = new Link(sock, port);
  sock.start((buf, lens, _addrs, _ports, count) => {
    link.inBatch = true;
    batchAt = performance.now();
    for (let i = 0; i < count; i++) onMessage(buf.subarray(i * sock.stride, i * sock.stride + lens[i]));
    link.inBatch = false;
    link.flush();
  });
  return link;
}
/** When the batch being handled arrived (one clock read per batch). */
let batchAt = 0;

/** Sets up one session per key, `parallel` HELLOs at a time (each costs the RM ~1 ms of crypto). */
async function openSessions(sock: Link, prefix: Prefix, keys: readonly KeyPair[], route: Map<number, (m: Buffer) => void>, parallel = 64): Promise<Sess[]> {
  const out: Sess[] = [];
  const waiting = new Map<number, { eph: Ephemeral; nonce: Uint8Array; readonly key: KeyPair; readonly hostId: HostId; hello: Buffer; cookied: boolean; readonly done: (s: Sess) => void }>();
  route.set(0, (buf) => {
    const h = decodeHeader(buf);
    if (!h.ok) return;
    const b = decodeBody(h.msg, buf);
    if (b.ok && b.msg.type === 'cookie') {
      // The RM's return-routability cookie (one per source address): the HELLO again, with it.
      // Only once: a COOKIE for a retransmitted cookieless HELLO must not replace the HELLO (and the
      // ephemeral) that a WELCOME may already be answering.
      const w = waiting.get(b.msg.reqId);
      if (w === undefined || w.cookied) return;
      w.cookied = true;
      const again = signedHello(w.key, w.hostId.toBytes(), prefix.length, b.msg.reqId, { cookie: Uint8Array.from(b.msg.cookie) });
      w.eph = again.eph;
      w.nonce = again.hello.nonce;
      w.hello = encode(again.hello, null);
      sock.send(w.hello);
      return;
    }
    if (!b.ok || b.msg.type !== 'welcome') return;
    const w = waiting.get(b.msg.reqId);
    if (w === undefined) return;
    waiting.delete(b.msg.reqId);
    const idb = w.hostId.toBytes();
    const keys = deriveSessionKeys(w.eph, b.msg.ephemeral, { sid: b.msg.sid, clientHostId: idb, clientEphemeral: w.eph.publicKey, rmEphemeral: b.msg.ephemeral, nonce: w.nonce });
    if (keys === null) throw new Error('bad welcome');
    w.done({ sid: b.msg.sid, keys, hostId: w.hostId, key: w.key, seq: 0 });
  });
  const retry = setInterval(() => {
    for (const w of waiting.values()) sock.send(w.hello);
  }, 500);
  let next = 0;
  let reqId = 1;
  await new Promise<void>((resolve) => {
    const launch = (): void => {
      if (next >= keys.length) {
        if (waiting.size === 0) resolve();
        return;
      }
      const key = keys[next++];
      const hostId = deriveHostId(prefix, key.publicKey);
      const idb = hostId.toBytes();
      const id = reqId++;
      const { hello: helloMsg, eph } = signedHello(key, idb, prefix.length, id);
      const nonce = helloMsg.nonce;
      const hello = encode(helloMsg, null);
      waiting.set(id, {
        eph,
        nonce,
        key,
        hostId,
        hello,
        cookied: false,
        done: (s) => {
          out.push(s);
          launch();
        },
      });
      sock.send(hello);
    };
    for (let i = 0; i < parallel; i++) launch();
  });
  clearInterval(retry);
  return out;
}

function dispatcher(route: Map<number, (m: Buffer) => void>): (b: Buffer) => void {
  return (buf) => {
    if (buf.length < 12) return;
    const sid = buf.readUInt32BE(2);
    const f = route.get(sid === 0 ? 0 : -1);
    if (f) f(buf);
  };
}

function sealed(s: Sess, m: ControlMessage): Buffer {
  s.seq++;
  return encode(m, { sid: s.sid, seq: s.seq, key: s.keys.c2s });
}

/** The session answers of sessions we hold, authenticated and decoded (not on the lookup hot path). */
function openAnswer(byId: Map<number, Sess>, buf: Buffer): { s: Sess; m: ControlMessage } | null {
  const h = decodeHeader(buf);
  if (!h.ok || h.msg.sid === 0) return null;
  const s = byId.get(h.msg.sid);
  if (s === undefined || !checkMac(buf, s.keys.s2c)) return null;
  const b = decodeBody(h.msg, buf);
  return b.ok ? { s, m: b.msg } : null;
}

// ---- register ------------------------------------------------------------------------------------

async function runRegister(job: Extract<LoadJob, { kind: 'register' }>): Promise<unknown> {
  const prefix = parsePrefix(job.prefix);
  const keys = Array.from({ length: job.hosts }, () => generateKeyPair());
  const locators = [
    { address: '192.0.2.10', port: 4341, uplink: 'ispa', priority: 1, weight: 50, state: 'up' as const },
    { address: '198.51.100.10', port: 4341, uplink: 'ispb', priority: 2, weight: 50, state: 'up' as const },
  ];
  const bindings: Binding[] = keys.map((k) => signBinding(k, { prefix, locators, seq: 1, ttl: 300 }));
  const route = new Map<number, (m: Buffer) => void>();
  const sock = openLink(job.port, dispatcher(route));
  const sessions = await openSessions(sock, prefix, keys, route);
  const byId = new Map(sessions.map((s) => [s.sid, s]));
  const bindingOf = new Map(keys.map((k, i) => [Buffer.from(k.publicKey).toString('hex'), bindings[i]]));
  let acked = 0;
  let failed = 0;
  let next = 0;
  const pending = new Map<number, { s: Sess; at: number; buf: Buffer }>();
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    const send = (): void => {
      while (pending.size < job.window && next < sessions.length) {
        const s = sessions[next++];
        const b = bindingOf.get(Buffer.from(s.key.publicKey).toString('hex')) as Binding;
        const buf = sealed(s, { type: 'register', reqId: next, binding: b.bytes });
        pending.set(next, { s, at: performance.now(), buf });
        sock.send(buf);
      }
      if (pending.size === 0 && next >= sessions.length) resolve();
    };
    route.set(-1, (buf) => {
      const a = openAnswer(byId, buf);
      if (a === null || a.m.type !== 'registerReply' || !pending.has(a.m.reqId)) return;
      pending.delete(a.m.reqId);
      if (a.m.status === 0) acked++;
      else failed++;
      send();
    });
    const retry = setInterval(() => {
      const now = performance.now();
      for (const [id, p] of pending) {
        if (now - p.at > 1000) {
          p.at = now;
          p.s.seq++;
          const again = encode({ type: 'register', reqId: id, binding: (bindingOf.get(Buffer.from(p.s.key.publicKey).toString('hex')) as Binding).bytes }, { sid: p.s.sid, seq: p.s.seq, key: p.s.keys.c2s });
          sock.send(again);
        }
      }
      if (now - t0 > job.timeoutS * 1000) resolve();
    }, 200);
    send();
    void retry;
  });
  const seconds = (performance.now() - t0) / 1000;
  sock.close();
  return { acked, failed, seconds, registrations_per_s: acked / seconds, ids: sessions.map((s) => s.hostId.hex) };
}

// ---- lookup --------------------------------------------------------------------------------------

async function runLookup(job: Extract<LoadJob, { kind: 'lookup' }>): Promise<unknown> {
  const prefix = parsePrefix(job.prefix);
  const route = new Map<number, (m: Buffer) => void>();
  const sock = openLink(job.port, dispatcher(route));
  const sessions = await openSessions(sock, prefix, Array.from({ length: job.sessions }, () => generateKeyPair()), route);
  const ids = job.ids.map((h) => Buffer.from(h, 'hex'));
  // A request's send time, by request ID modulo the ring: 1M entries outlast any wait we tolerate.
  const RING = 1 << 20;
  const MASK = RING - 1;
  const sentAt = new Float64Array(RING);
  let reqId = 0;
  let inflight = 0;
  let answered = 0;
  let lost = 0;
  let late = 0;
  let measuring = false;
  let measuredAnswers = 0;
  let measuredSent = 0;
  // Latency samples (rate mode): preallocated, so recording one allocates nothing.
  const lat = new Float64Array(job.mode === 'rate' ? Math.ceil(job.rate * (job.seconds + 1) * 1.2) : 0);
  let nLat = 0;
  let si = 0;
  const arena = sock.arena;

  const sendOne = (now: number): void => {
    reqId = (reqId + 1) >>> 0 || 1;
    const s = sessions[si];
    si = si + 1 === sessions.length ? 0 : si + 1;
    s.seq++;
    // The codec's bytes for { type: 'lookup', reqId, hostId }: header, msgpack [u32, bin 16], MAC,
    // written straight into the send arena.
    const o = sock.reserve();
    arena[o] = 1; // PROTOCOL_VERSION, as writeHeader() writes it
    arena[o + 1] = MsgType.lookup;
    arena.writeUInt32BE(s.sid, o + 2);
    arena.writeUIntBE(s.seq, o + 6, 6);
    arena[o + 12] = 0x92;
    arena[o + 13] = 0xce;
    arena.writeUInt32BE(reqId, o + 14);
    arena[o + 18] = 0xc4;
    arena[o + 19] = 16;
    ids[reqId % ids.length].copy(arena, o + 20);
    mac(s.keys.c2s, arena, o, o + 36, arena, o + 36);
    sock.commit(52);
    if (sentAt[reqId & MASK] !== 0) lost++; // its slot is reused: that request never came back
    else inflight++;
    sentAt[reqId & MASK] = now;
    if (measuring) measuredSent++;
  };

  route.set(-1, (buf) => {
    // fixarray(6): reqId, hostId, ttl, binding, prefs, cert.
    if (buf[1] !== MsgType.lookupReply || buf[12] !== 0x96) return;
    const t = buf[13];
    let id: number;
    if (t < 0x80) id = t;
    else if (t === 0xcc) id = buf[14];
    else if (t === 0xcd) id = buf.readUInt16BE(14);
    else if (t === 0xce) id = buf.readUInt32BE(14);
    else return;
    const at = sentAt[id & MASK];
    if (at === 0) return;
    sentAt[id & MASK] = 0;
    inflight--;
    answered++;
    if (measuring) {
      measuredAnswers++;
      // batchAt: when the batch holding this answer reached the generator (read once per batch).
      if (job.mode === 'rate' && nLat < lat.length) lat[nLat++] = batchAt - at;
    }
    if (job.mode === 'peak') sendOne(batchAt);
  });

  // Peak mode: datagrams lost in socket buffers would shrink the window; reclaim them after 1 s.
  const reaper = setInterval(() => {
    const old = performance.now() - 1000;
    for (let i = 0; i < RING; i++) {
      const at = sentAt[i];
      if (at !== 0 && at < old) {
        sentAt[i] = 0;
        inflight--;
        lost++;
      }
    }
    if (job.mode === 'peak') {
      const now = performance.now();
      while (inflight < job.window) sendOne(now);
    }
  }, 250);

  const start = performance.now();
  let pacer: NodeJS.Timeout | null = null;
  if (job.mode === 'peak') {
    for (let i = 0; i < job.window; i++) sendOne(start);
  } else {
    // Open loop: request i is due at start + i/rate whatever the answers do. A 1 ms timer, not a
    // setImmediate spin, so that the generator leaves the CPU to the RM between ticks; each tick
    // sends what is due (one sendmmsg). Requests sent more than 2 ms after they were due (the
    // generator was descheduled) are counted in `late`; their latency is measured from when they
    // actually left.
    let sent = 0;
    const rate = job.rate;
    const pace = (): void => {
      const now = performance.now();
      const due = Math.floor(((now - start) * rate) / 1000);
      const lagMs = ((due - sent) * 1000) / rate;
      if (lagMs > 2) late += due - sent;
      while (sent < due) {
        sendOne(now);
        sent++;
      }
    };
    pacer = setInterval(pace, 1);
  }
  await new Promise((r) => setTimeout(r, job.warmupS * 1000));
  measuring = true;
  const m0 = performance.now();
  await new Promise((r) => setTimeout(r, job.seconds * 1000));
  measuring = false;
  const seconds = (performance.now() - m0) / 1000;
  if (pacer) clearInterval(pacer);
  // Let the last answers in (they count as lost only if they never come).
  await new Promise((r) => setTimeout(r, 300));
  clearInterval(reaper);
  for (let i = 0; i < RING; i++) if (sentAt[i] !== 0) lost++;
  sock.close();
  const sorted = lat.subarray(0, nLat).sort();
  const q = (p: number) => (nLat ? sorted[Math.min(nLat - 1, Math.floor(p * nLat))] : null);
  return {
    mode: job.mode,
    lookups_per_s: measuredAnswers / seconds,
    sent_per_s: measuredSent / seconds,
    answered,
    lost,
    late,
    p50_ms: q(0.5),
    p99_ms: q(0.99),
    p999_ms: q(0.999),
    max_ms: nLat ? sorted[nLat - 1] : null,
    samples: nLat,
    udp: sock.sock.stats,
  };
}

// ---- push ----------------------------------------------------------------------------------------

async function runPush(job: Extract<LoadJob, { kind: 'push' }>): Promise<unknown> {
  const prefix = parsePrefix(job.prefix);
  const route = new Map<number, (m: Buffer) => void>();
  const sock = openLink(job.port, dispatcher(route));
  const ownerKey = generateKeyPair();
  const [owner] = await openSessions(sock, prefix, [ownerKey], route);
  const subs = await openSessions(sock, prefix, Array.from({ length: job.subscribers }, () => generateKeyPair()), route);
  const byId = new Map([owner, ...subs].map((s) => [s.sid, s]));
  const target = owner.hostId.toBytes();
  const locators = [{ address: '192.0.2.10', port: 4341, uplink: 'ispa', priority: 1, weight: 1, state: 'up' as const }];
  // Signed before the clock starts.
  const bindings = Array.from({ length: job.rounds + 1 }, (_, i) => signBinding(ownerKey, { prefix, locators, seq: i + 1, ttl: 300 }));

  let waitFor: ((m: ControlMessage, s: Sess) => void) | null = null;
  let round = -1;
  let roundStart = 0;
  let got = new Set<number>();
  const perDelivery: number[] = [];
  const lastPerRound: number[] = [];
  // The first follower's push: the registration's commit and the RM's turn, before any fan-out.
  const firstPerRound: number[] = [];
  // From the first follower's push to the last one's: the fan-out alone, without the commit.
  const fanoutPerRound: number[] = [];
  let roundDone: (() => void) | null = null;
  const arena = sock.arena;
  route.set(-1, (buf) => {
    // The time the batch holding this push arrived, not when we got round to it in the batch.
    const now = batchAt;
    if (buf[1] === MsgType.push) {
      // By hand, like the lookup path: 1,000 subscribers share this one process, and msgpackr plus
      // Buffer copies per push made the generator, not the RM, the last to see each round. The MAC
      // is still checked: a subscriber takes only authenticated pushes.
      const s = buf.length > 28 ? byId.get(buf.readUInt32BE(2)) : undefined;
      // fixarray(5): pushId, binding, ttl, prefs, cert.
      if (s === undefined || buf[12] !== 0x95 || !checkMac(buf, s.keys.s2c)) return;
      let o = 13;
      const t = buf[o];
      let pushId: number;
      if (t < 0x80) {
        pushId = t;
        o += 1;
      } else if (t === 0xcc) {
        pushId = buf[o + 1];
        o += 2;
      } else if (t === 0xcd) {
        pushId = buf.readUInt16BE(o + 1);
        o += 3;
      } else if (t === 0xce) {
        pushId = buf.readUInt32BE(o + 1);
        o += 5;
      } else return;
      const b = buf[o] === 0xc4 ? o + 2 : buf[o] === 0xc5 ? o + 3 : -1;
      if (b < 0 || b + 61 > buf.length) return;
      // Queued: the acks of a batch leave together after it (one sendmmsg). The codec's bytes for
      // { type: 'pushAck', pushId }: header, msgpack [u32], MAC.
      s.seq++;
      const w = sock.reserve();
      arena[w] = 1;
      arena[w + 1] = MsgType.pushAck;
      arena.writeUInt32BE(s.sid, w + 2);
      arena.writeUIntBE(s.seq, w + 6, 6);
      arena[w + 12] = 0x91;
      arena[w + 13] = 0xce;
      arena.writeUInt32BE(pushId, w + 14);
      mac(s.keys.c2s, arena, w, w + 18, arena, w + 18);
      sock.commit(34);
      const seq = buf.readUInt32BE(b + 53) * 2 ** 32 + buf.readUInt32BE(b + 57);
      if (seq !== round + 1 || got.has(s.sid)) return;
      got.add(s.sid);
      const dt = now - roundStart;
      if (got.size === 1) firstPerRound.push(dt);
      perDelivery.push(dt);
      if (got.size === subs.length) {
        lastPerRound.push(dt);
        fanoutPerRound.push(dt - firstPerRound[firstPerRound.length - 1]);
        roundDone?.();
      }
      return;
    }
    const a = openAnswer(byId, buf);
    if (a !== null) waitFor?.(a.m, a.s);
  });
  const ask = (s: Sess, m: ControlMessage, type: ControlMessage['type']): Promise<ControlMessage> =>
    new Promise((resolve) => {
      const buf = sealed(s, m);
      const t = setInterval(() => sock.send(buf), 300);
      waitFor = (x) => {
        if (x.type === type && 'reqId' in x && 'reqId' in m && x.reqId === m.reqId) {
          clearInterval(t);
          waitFor = null;
          resolve(x);
        }
      };
      sock.send(buf);
    });
  // The first binding exists before anyone follows it.
  await ask(owner, { type: 'register', reqId: 1, binding: bindings[0].bytes }, 'registerReply');
  let reqId = 10;
  for (const s of subs) await ask(s, { type: 'subscribe', reqId: reqId++, hostIds: [target] }, 'subscribeReply');
  const deadline = performance.now() + job.timeoutS * 1000;
  for (round = 1; round <= job.rounds && performance.now() < deadline; round++) {
    got = new Set();
    await new Promise((r) => setTimeout(r, 50)); // let the previous round's acks settle
    const done = new Promise<void>((r) => (roundDone = r));
    roundStart = performance.now();
    // Fire and forget: the registration reply is not what is timed.
    sock.send(sealed(owner, { type: 'register', reqId: reqId++, binding: bindings[round].bytes }));
    sock.flush();
    await Promise.race([done, new Promise((r) => setTimeout(r, 2000))]);
    roundDone = null;
  }
  sock.close();
  const q = (xs: number[], p: number) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : null;
  };
  return {
    subscribers: subs.length,
    rounds: lastPerRound.length,
    incomplete_rounds: job.rounds - lastPerRound.length,
    last_p50_ms: q(lastPerRound, 0.5),
    last_p99_ms: q(lastPerRound, 0.99),
    last_max_ms: q(lastPerRound, 1),
    fanout_p50_ms: q(fanoutPerRound, 0.5),
    fanout_p99_ms: q(fanoutPerRound, 0.99),
    first_p50_ms: q(firstPerRound, 0.5),
    first_p99_ms: q(firstPerRound, 0.99),
    delivery_p50_ms: q(perDelivery, 0.5),
    delivery_p99_ms: q(perDelivery, 0.99),
  };
}

async function main(): Promise<void> {
  process.stdout.write('ready\n');
  const job = JSON.parse(readFileSync(process.argv[2] ?? '', 'utf8')) as LoadJob;
  const result = job.kind === 'register' ? await runRegister(job) : job.kind === 'lookup' ? await runLookup(job) : await runPush(job);
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e: unknown) => {
    process.stderr.write(`mapping-load: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  });
}
