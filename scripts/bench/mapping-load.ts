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
 * process. On the hot path it writes lookup datagrams by hand (the same bytes the codec writes) and
 * reads only the request ID of answers: the load generator is not what is measured.
 */
import { createSocket, type Socket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { signBinding, type Binding } from '../../shared/binding.ts';
import { deriveHostId, parsePrefix, type HostId, type Prefix } from '../../shared/ids.ts';
import { generateKeyPair, signBytes, type KeyPair } from '../../shared/keys.ts';
import { createEphemeral, deriveSessionKeys, helloSignedBytes, mac, randomNonce, type Ephemeral, type SessionKeys } from '../../shared/wire/auth.ts';
import { checkMac, decodeBody, decodeHeader, encode, writeHeader } from '../../shared/wire/codec.ts';
import { MsgType, type ControlMessage } from '../../shared/wire/messages.ts';

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

async function openSocket(onMessage: (b: Buffer) => void): Promise<Socket> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, HOST, () => r()));
  try {
    s.setRecvBufferSize(16 * 1024 * 1024);
    s.setSendBufferSize(16 * 1024 * 1024);
  } catch {
    // capped by net.core.rmem_max
  }
  s.on('message', onMessage);
  s.on('error', () => {});
  return s;
}

/** Sets up one session per key, `parallel` HELLOs at a time (each costs the RM ~1 ms of crypto). */
async function openSessions(sock: Socket, port: number, prefix: Prefix, keys: readonly KeyPair[], route: Map<number, (m: Buffer) => void>, parallel = 64): Promise<Sess[]> {
  const out: Sess[] = [];
  const waiting = new Map<number, { eph: Ephemeral; nonce: Uint8Array; key: KeyPair; hostId: HostId; hello: Buffer; done: (s: Sess) => void }>();
  route.set(0, (buf) => {
    const h = decodeHeader(buf);
    if (!h.ok) return;
    const b = decodeBody(h.msg, buf);
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
    for (const w of waiting.values()) sock.send(w.hello, port, HOST);
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
      const eph = createEphemeral();
      const nonce = randomNonce();
      const id = reqId++;
      const hello = encode(
        {
          type: 'hello',
          reqId: id,
          hostId: idb,
          prefixLen: prefix.length,
          publicKey: key.publicKey,
          ephemeral: eph.publicKey,
          nonce,
          signature: signBytes(key, helloSignedBytes(idb, prefix.length, key.publicKey, eph.publicKey, nonce)),
        },
        null,
      );
      waiting.set(id, {
        eph,
        nonce,
        key,
        hostId,
        hello,
        done: (s) => {
          out.push(s);
          launch();
        },
      });
      sock.send(hello, port, HOST);
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
  const sock = await openSocket(dispatcher(route));
  const sessions = await openSessions(sock, job.port, prefix, keys, route);
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
        sock.send(buf, job.port, HOST);
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
          sock.send(again, job.port, HOST);
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
  const sock = await openSocket(dispatcher(route));
  const sessions = await openSessions(sock, job.port, prefix, Array.from({ length: job.sessions }, () => generateKeyPair()), route);
  const ids = job.ids.map((h) => Buffer.from(h, 'hex'));
  const RING = 1 << 20;
  const MASK = RING - 1;
  const sentAt = new Float64Array(RING);
  let reqId = 0;
  let inflight = 0;
  let answered = 0;
  let lost = 0;
  let measuring = false;
  let measuredAnswers = 0;
  const lat: number[] = [];
  let si = 0;

  const sendOne = (): void => {
    reqId = (reqId + 1) >>> 0 || 1;
    const s = sessions[si];
    si = si + 1 === sessions.length ? 0 : si + 1;
    s.seq++;
    // The codec's bytes for { type: 'lookup', reqId, hostId }: header, msgpack [u32, bin 16], MAC.
    const out = Buffer.allocUnsafe(52);
    writeHeader(out, MsgType.lookup, s.sid, s.seq);
    out[12] = 0x92;
    out[13] = 0xce;
    out.writeUInt32BE(reqId, 14);
    out[18] = 0xc4;
    out[19] = 16;
    out.set(ids[reqId % ids.length], 20);
    mac(s.keys.c2s, out, 0, 36, out, 36);
    sentAt[reqId & MASK] = performance.now();
    inflight++;
    sock.send(out, job.port, HOST);
  };

  route.set(-1, (buf) => {
    if (buf[1] !== MsgType.lookupReply || buf[12] !== 0x95) return;
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
      if (job.mode === 'rate') lat.push(performance.now() - at);
    }
    if (job.mode === 'peak') sendOne();
  });

  // Lost datagrams (socket buffers overflowing at the peak) would shrink the window: reclaim them.
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
    if (job.mode === 'peak') while (inflight < job.window) sendOne();
  }, 250);

  const start = performance.now();
  let pacer: NodeJS.Timeout | null = null;
  if (job.mode === 'peak') {
    for (let i = 0; i < job.window; i++) sendOne();
  } else {
    let sent = 0;
    const rate = job.rate;
    // A 1 ms timer, not a setImmediate spin: the generator must leave the CPU to the RM when idle.
    const pace = (): void => {
      const due = Math.floor(((performance.now() - start) * rate) / 1000);
      // Bounded burst: after a stall, catch up at most 2 ms worth at once.
      let n = Math.min(due - sent, Math.max(1, Math.ceil(rate / 500)));
      while (n-- > 0) {
        sendOne();
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
  clearInterval(reaper);
  sock.close();
  lat.sort((a, b) => a - b);
  const q = (p: number) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] : null);
  return {
    mode: job.mode,
    lookups_per_s: measuredAnswers / seconds,
    answered,
    lost,
    p50_ms: q(0.5),
    p99_ms: q(0.99),
    p999_ms: q(0.999),
    max_ms: lat.length ? lat[lat.length - 1] : null,
    samples: lat.length,
  };
}

// ---- push ----------------------------------------------------------------------------------------

async function runPush(job: Extract<LoadJob, { kind: 'push' }>): Promise<unknown> {
  const prefix = parsePrefix(job.prefix);
  const route = new Map<number, (m: Buffer) => void>();
  const sock = await openSocket(dispatcher(route));
  const ownerKey = generateKeyPair();
  const [owner] = await openSessions(sock, job.port, prefix, [ownerKey], route);
  const subs = await openSessions(sock, job.port, prefix, Array.from({ length: job.subscribers }, () => generateKeyPair()), route);
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
  let roundDone: (() => void) | null = null;
  const acks: Buffer[] = [];
  let ackFlush: NodeJS.Immediate | null = null;
  route.set(-1, (buf) => {
    const now = performance.now();
    const a = openAnswer(byId, buf);
    if (a === null) return;
    if (a.m.type === 'push') {
      // Timestamp first, acknowledge after the burst (acks must not delay the next timestamp).
      acks.push(sealed(a.s, { type: 'pushAck', pushId: a.m.pushId }));
      ackFlush ??= setImmediate(() => {
        ackFlush = null;
        for (const b of acks.splice(0)) sock.send(b, job.port, HOST);
      });
      const seqHi = Buffer.from(a.m.binding).readUInt32BE(53);
      const seq = seqHi * 2 ** 32 + Buffer.from(a.m.binding).readUInt32BE(57);
      if (seq !== round + 1 || got.has(a.s.sid)) return;
      got.add(a.s.sid);
      const dt = now - roundStart;
      perDelivery.push(dt);
      if (got.size === subs.length) {
        lastPerRound.push(dt);
        roundDone?.();
      }
      return;
    }
    waitFor?.(a.m, a.s);
  });
  const ask = (s: Sess, m: ControlMessage, type: ControlMessage['type']): Promise<ControlMessage> =>
    new Promise((resolve) => {
      const buf = sealed(s, m);
      const t = setInterval(() => sock.send(buf, job.port, HOST), 300);
      waitFor = (x) => {
        if (x.type === type && 'reqId' in x && 'reqId' in m && x.reqId === m.reqId) {
          clearInterval(t);
          waitFor = null;
          resolve(x);
        }
      };
      sock.send(buf, job.port, HOST);
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
    sock.send(sealed(owner, { type: 'register', reqId: reqId++, binding: bindings[round].bytes }), job.port, HOST);
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
