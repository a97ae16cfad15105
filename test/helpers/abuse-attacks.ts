/**
 * The attacks of issue #12 item 5, each a function of the lab (test/helpers/abuse.ts) that returns
 * what it measured. The bench runs them long, the e2e test short; neither decides here what is good.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AttackCounters, ByteCount } from '../../scripts/testbed/attacker.ts';
import { SPOOF_BIN, rmArgs, type AbuseLab, type Json } from './abuse.ts';

const wait = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const n = (x: unknown): number => (typeof x === 'number' ? x : 0);

/** Joins by strangers: raw HELLOs of fresh keys (some with a made-up join token) and the real client. */
export async function nonmemberJoins(lab: AbuseLab, attempts: number): Promise<Json> {
  let accepted = 0;
  const rejects: number[] = [];
  const forms = new Set<unknown>();
  for (let i = 0; i < attempts; i++) {
    const r = await lab.attacker.call({ cmd: 'open', name: `join${i}`, ...rmArgs(lab), join: i % 2 === 1 ? 'bogus' : 'none', timeoutMs: 3000 });
    forms.add(r.form);
    if (r.welcome === true) accepted++;
    else if (typeof r.reject === 'number') rejects.push(r.reject);
    await lab.attacker.call({ cmd: 'close', name: `join${i}` });
  }
  // The agent's own client code with a key nobody admitted.
  const real = await lab.attacker.call({ cmd: 'legit', name: 'strangerClient', ...rmArgs(lab), publicKey: lab.files.rmPublicKey, timeoutMs: 8000 });
  if (real.started === true) accepted++;
  return { attempts: attempts + 1, accepted, rejects, realClientStarted: real.started === true, realClientWhy: real.why ?? null, helloForms: [...forms] };
}

/** A stranger's lookups of every member (raw session and real client, whichever got in). */
export async function nonmemberLookups(lab: AbuseLab, rounds: number): Promise<Json> {
  const ids = [lab.ids.mh, lab.ids.ch, lab.ids.legit, lab.ids.member];
  const open = await lab.attacker.call({ cmd: 'open', name: 'stranger', ...rmArgs(lab) });
  let answered = 0;
  let asked = 0;
  const raw: Json[] = [];
  if (open.welcome === true) {
    for (let i = 0; i < rounds; i++) {
      const r = await lab.attacker.call({ cmd: 'lookup', name: 'stranger', ids });
      raw.push(r);
      answered += n(r.positive);
      asked += ids.length;
    }
  }
  let realAnswered = 0;
  const status = await lab.attacker.call({ cmd: 'legitLookup', name: 'strangerClient', ids, timeoutMs: 4000 }).catch(() => null);
  if (status !== null) {
    realAnswered = n(status.positive);
    asked += ids.length;
  }
  return { sessionGranted: open.welcome === true, asked, answered: answered + realAnswered, raw, realClient: status };
}

/** An admitted member without lookup rights (the policy must say so) asks for everyone. */
export async function unauthorizedLookups(lab: AbuseLab, rounds: number): Promise<Json> {
  const ids = [lab.ids.mh, lab.ids.ch, lab.ids.legit];
  const open = await lab.attacker.call({ cmd: 'open', name: 'memberNoRights', ...rmArgs(lab), key: lab.keys.member });
  let answered = 0;
  let asked = 0;
  if (open.welcome === true) {
    for (let i = 0; i < rounds; i++) {
      const r = await lab.attacker.call({ cmd: 'lookup', name: 'memberNoRights', ids });
      answered += n(r.positive);
      asked += ids.length;
    }
  }
  await lab.attacker.call({ cmd: 'close', name: 'memberNoRights' });
  return { sessionGranted: open.welcome === true, asked, answered };
}

/**
 * Registrations of mh's ID by others: from a stranger's session, from a member's, and from a session
 * opened by an impostor claiming mh's ID with its own key. Afterwards the RM must still hold mh's
 * own binding.
 */
export async function foreignRegistrations(lab: AbuseLab): Promise<Json> {
  const captured = lab.storedBinding(lab.ids.mh);
  if (captured === null) throw new Error('the RM holds no binding for mh: the agents did not register');
  const victimLocators = [lab.atk.addr.v4.vic, lab.atk.addr.v6.vic];
  const out: Json = {};
  let accepted = 0;
  const sessions: [string, Json][] = [
    ['stranger', { key: undefined }],
    ['member', { key: lab.keys.member }],
    ['impostor', { claimId: lab.ids.mh }],
  ];
  let impostorSessions = 0;
  for (const [name, extra] of sessions) {
    const open = await lab.attacker.call({ cmd: 'open', name: `foreign-${name}`, ...rmArgs(lab), ...extra });
    if (name === 'impostor' && open.welcome === true) impostorSessions++;
    if (open.welcome !== true) {
      out[name] = { session: false, reject: open.reject ?? null };
      continue;
    }
    const r = await lab.attacker.call({ cmd: 'foreign', name: `foreign-${name}`, victimId: lab.ids.mh, captured, victimLocators });
    accepted += n(r.accepted);
    out[name] = { session: true, ...r };
    await lab.attacker.call({ cmd: 'close', name: `foreign-${name}` });
  }
  const after = lab.storedBinding(lab.ids.mh);
  // mh's own key must still be the one stored (bytes 21..53 of the binding).
  const keyKept = after !== null && after.slice(42, 106) === captured.slice(42, 106);
  if (!keyKept) accepted++;
  return { accepted, impostorSessions, keyKept, tries: out };
}

export interface AmpResult {
  readonly attackerBytes: number;
  readonly attackerPackets: number;
  readonly victimBytes: number;
  readonly victimPackets: number;
  /** victimBytes ÷ attackerBytes; null when the attacker sent nothing with the victim's address. */
  readonly ratio: number | null;
  readonly detail: Json;
}

function delta(a: ByteCount, b: ByteCount): ByteCount {
  return { packets: b.packets - a.packets, bytes: b.bytes - a.bytes };
}

/** Runs `attack` and measures victim bytes against what atk sent with the victim's address. */
async function measured(lab: AbuseLab, settleMs: number, attack: () => Promise<Json>): Promise<AmpResult & { before: AttackCounters; after: AttackCounters }> {
  const before = await lab.counters();
  const detail = await attack();
  await wait(settleMs);
  const after = await lab.counters();
  const v = delta(before.victim.all, after.victim.all);
  const s = delta(before.atk.spoofedVictim, after.atk.spoofedVictim);
  return { attackerBytes: s.bytes, attackerPackets: s.packets, victimBytes: v.bytes, victimPackets: v.packets, ratio: s.bytes > 0 ? v.bytes / s.bytes : null, detail, before, after };
}

function spoofArgs(lab: AbuseLab, file: string, count: number, rate: number, v6 = false): string[] {
  const A = lab.atk.addr;
  const rmAddr = v6 ? lab.tb.addr.v6.rm.core : lab.files.rmAddress;
  return ['--dst', rmAddr, '--dport', '4342', '--src', v6 ? A.v6.vic : A.v4.vic, '--sport', '4342', '--templates', file, '--count', String(count), '--rate', String(rate)];
}

/** Spoofed HELLOs (valid, signed, fresh keys) with the victim's address as source. */
export async function ampHello(lab: AbuseLab, count: number): Promise<AmpResult> {
  const file = join(lab.dir, 'hello.tpl');
  await lab.attacker.call({ cmd: 'templates', kind: 'hello', file, count, ...rmArgs(lab) });
  return measured(lab, 1500, () => lab.attacker.call({ cmd: 'spoof', bin: SPOOF_BIN, args: spoofArgs(lab, file, count, 1000) }));
}

/** Spoofed LOOKUPs with random session IDs (they draw REJECT, if anything). */
export async function ampLookupRandomSid(lab: AbuseLab, count: number): Promise<AmpResult> {
  const file = join(lab.dir, 'lookup-random.tpl');
  await lab.attacker.call({ cmd: 'templates', kind: 'lookupRandomSid', file, count });
  return measured(lab, 1500, () => lab.attacker.call({ cmd: 'spoof', bin: SPOOF_BIN, args: spoofArgs(lab, file, count, 5000) }));
}

/**
 * LOOKUPs sealed on a session the attacker holds (a stranger's if it got one, else its member's),
 * for mh's ID, sent once each from the victim's address.
 */
export async function ampLookupCaptured(lab: AbuseLab, count: number): Promise<AmpResult> {
  const file = join(lab.dir, 'lookup-sealed.tpl');
  let session = 'stranger';
  let open = await lab.attacker.call({ cmd: 'open', name: 'cap', ...rmArgs(lab) });
  if (open.welcome !== true) {
    session = 'member';
    open = await lab.attacker.call({ cmd: 'open', name: 'cap', ...rmArgs(lab), key: lab.keys.member });
  }
  if (open.welcome !== true) return { attackerBytes: 0, attackerPackets: 0, victimBytes: 0, victimPackets: 0, ratio: null, detail: { session: null } };
  await lab.attacker.call({ cmd: 'templates', kind: 'lookupSealed', name: 'cap', file, count, ids: [lab.ids.mh] });
  const r = await measured(lab, 1500, () => lab.attacker.call({ cmd: 'spoof', bin: SPOOF_BIN, args: spoofArgs(lab, file, count, 2000) }));
  await lab.attacker.call({ cmd: 'close', name: 'cap' });
  return { ...r, detail: { ...r.detail, session } };
}

/** The legit client's own datagrams (its HELLO, its lookups), captured and replayed from the victim. */
export async function ampReplay(lab: AbuseLab, repeat: number): Promise<AmpResult> {
  const file = join(lab.dir, 'captured.tpl');
  const cap = await lab.legit.call({ cmd: 'captured', name: 'legit', file });
  const count = n(cap.count) * repeat;
  if (count === 0) return { attackerBytes: 0, attackerPackets: 0, victimBytes: 0, victimPackets: 0, ratio: null, detail: { captured: 0 } };
  const r = await measured(lab, 1500, () => lab.attacker.call({ cmd: 'spoof', bin: SPOOF_BIN, args: spoofArgs(lab, file, count, 2000) }));
  return { ...r, detail: { ...r.detail, captured: cap.count } };
}

/** Followers of the member's own ID moved to the victim, then a new binding: the pushes. */
export async function ampPush(lab: AbuseLab, sessions: number): Promise<AmpResult> {
  const file = join(lab.dir, 'push.tpl');
  return measured(lab, 500, () =>
    lab.attacker.call({ cmd: 'pushReflect', ...rmArgs(lab), key: lab.keys.member, sessions, file, bin: SPOOF_BIN, victim: lab.atk.addr.v4.vic, locators: [lab.atk.addr.v4.atk] }),
  );
}

/**
 * Reflection through agents: the member registers a binding whose locators are the victim's
 * addresses, and ch talks to the member's ID (ch must be allowed to look it up). Nothing here is
 * spoofed, so the ratio is the victim's peer-message bytes (probes, updates) ÷ everything atk sent
 * in the window (its REGISTER and session); ch's data packets to the victim are reported apart.
 */
export async function ampAgents(lab: AbuseLab, seconds: number): Promise<AmpResult> {
  const before = await lab.counters();
  const open = await lab.attacker.call({ cmd: 'open', name: 'reflector', ...rmArgs(lab), key: lab.keys.member });
  let reg: Json = { status: null };
  if (open.welcome === true) reg = await lab.attacker.call({ cmd: 'registerOwn', name: 'reflector', ...rmArgs(lab), locators: [lab.atk.addr.v4.vic, lab.atk.addr.v6.vic] });
  // ch's application talks to the member: 5 pings a second for the window.
  const t0 = Date.now();
  let pingsOk = 0;
  while (Date.now() - t0 < seconds * 1000) {
    const r = await lab.tb.exec('ch', 'ping', ['-6', '-n', '-c5', '-i0.2', '-W1', lab.ids.member], { allowFail: true });
    if (r.code === 0) pingsOk++;
  }
  await wait(1000);
  const after = await lab.counters();
  await lab.attacker.call({ cmd: 'close', name: 'reflector' });
  const agentPort = delta(before.victim.agent, after.victim.agent);
  const peer = delta(before.victim.peer, after.victim.peer);
  const probes = delta(before.victim.probe, after.victim.probe);
  const sent = delta(before.atk.all, after.atk.all);
  const all = delta(before.victim.all, after.victim.all);
  return {
    attackerBytes: sent.bytes,
    attackerPackets: sent.packets,
    victimBytes: peer.bytes,
    victimPackets: peer.packets,
    ratio: sent.bytes > 0 ? peer.bytes / sent.bytes : null,
    detail: {
      registered: reg.status,
      session: open.welcome === true,
      probeBytes: probes.bytes,
      probePackets: probes.packets,
      // ch's data to the member's ID, which the binding sent to the victim too.
      agentPortBytes: agentPort.bytes,
      agentPortPackets: agentPort.packets,
      allBytes: all.bytes,
      pingRoundsAnswered: pingsOk,
      seconds,
    },
  };
}

/** The flood's payloads: one file of all kinds, sent in random order from random sources. */
export async function floodTemplates(lab: AbuseLab): Promise<{ file: string; sealedOn: string | null }> {
  const a = lab.attacker;
  const parts: { kind: string; count: number; extra?: Json }[] = [
    { kind: 'hello', count: 1000, extra: rmArgs(lab) },
    { kind: 'lookupRandomSid', count: 3000 },
    { kind: 'garbage', count: 1000 },
  ];
  let sealedOn: string | null = null;
  // The member first: a stranger gets no session any more (its attempt only costs the timeout).
  for (const [who, key] of [['member', lab.keys.member], ['stranger', undefined]] as const) {
    const o = await a.call({ cmd: 'open', name: 'flood', ...rmArgs(lab), ...(key ? { key } : {}) });
    if (o.welcome === true) {
      sealedOn = who;
      parts.push({ kind: 'lookupSealed', count: 3000, extra: { name: 'flood', ids: [lab.ids.ch, lab.ids.mh] } });
      break;
    }
  }
  const bufs: Buffer[] = [];
  for (const [i, p] of parts.entries()) {
    const file = join(lab.dir, `flood-${i}.tpl`);
    await a.call({ cmd: 'templates', kind: p.kind, count: p.count, file, ...p.extra });
    bufs.push(readFileSync(file));
  }
  const file = join(lab.dir, 'flood.tpl');
  writeFileSync(file, Buffer.concat(bufs));
  return { file, sealedOn };
}
