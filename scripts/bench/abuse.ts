/**
 * npm run bench -- abuse [--minutes 10] [--flood-rate 100000] [--flood-seconds 30] [--churn-rate 50]
 *
 * The abuse benchmark of issue #12 (docs/security.md): the standard testbed with the attacker and
 * victim attached (scripts/testbed/attacker.ts), a real RM, real agents on mh and ch, a legit RM
 * client in mh (the agent's own client code, an admitted key), and the attacker in atk with its own
 * key (never admitted) and one admitted member key. Writes bench-results/abuse.json, prints a table
 * against the targets. Every figure is measured against whatever the code does today; nothing here
 * knows which defences exist.
 *
 * Phase 1, the RM's default policy (`sameRealm: allow`, where a stranger who got in sees everyone):
 *   1. nonmember_joins_accepted     HELLOs of fresh keys (half with a made-up join token) and the
 *                                   real client with a key nobody admitted: sessions granted.
 *   2. nonmember_lookups_answered   lookups of every member on whatever session a stranger got:
 *                                   answers that carried a binding.
 *   3. foreign_registrations_accepted  registrations of mh's ID by a stranger, a member and an
 *                                   impostor claiming mh's ID (replayed, doctored, re-signed under
 *                                   several prefix lengths), plus 1 if mh's stored key changed.
 *   4. amplification_max            bytes reaching the victim ÷ bytes atk sent with the victim's
 *                                   address as source, measured by nftables counters at both ends
 *                                   (whole IP packets), for: spoofed HELLOs; spoofed LOOKUPs with
 *                                   random session IDs; LOOKUPs sealed on a session the attacker
 *                                   holds, sent from the victim's address; the legit client's
 *                                   captured datagrams replayed from the victim's address; pushes
 *                                   (followers moved to the victim, then a new binding). And, in
 *                                   phase 2, reflection through agents (below).
 *   5. legit_lookup_success_under_flood  realmnet_spoof sends --flood-rate datagrams/s (HELLOs,
 *                                   random-session LOOKUPs, sealed LOOKUPs, garbage) from random
 *                                   sources in 198.18.0.0/15 to the RM for --flood-seconds; the
 *                                   legit client looks ch up 20 times a second meanwhile: the share
 *                                   of lookups answered with ch's binding (the client's own
 *                                   retransmission budget, ~8 s, is the deadline).
 *   6. legit_failover_ok_under_flood  during the flood mh's uplink a loses carrier: true if ch still
 *                                   reaches mh's ID within 10 s (its traffic moved to another uplink).
 * Phase 2, the RM restarted with `sameRealm: deny` and a rule letting only mh, ch and the legit
 * client look up each other and the member:
 *   7. unauthorized_lookups_answered  the member (admitted, no lookup rights) asks for everyone.
 *   8. reflection through agents    the member registers the victim's addresses as its locators and
 *                                   ch pings the member's ID for 20 s: peer-message bytes (probes,
 *                                   updates) at the victim ÷ all bytes atk sent in that window.
 *   9. rm_rss_growth_mib_10min, store_rows_growth_10min  --churn-rate fresh keys per second (HELLO,
 *                                   a third with a made-up token when the RM speaks the token
 *                                   protocol, REGISTER when a session is granted) for --minutes
 *                                   (default 10); growth of the RM's RSS and of the rows in its
 *                                   store. With fewer minutes the row count is scaled linearly to 10
 *                                   (`churn.extrapolated`); RSS is reported as measured (not linear).
 */
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { up, type Testbed } from '../testbed/topology.ts';
import { SPOOF_BIN, abuseProblems, pingWithin, rmArgs, startAbuseLab, type AbuseLab, type Json } from '../../test/helpers/abuse.ts';
import {
  ampAgents,
  ampHello,
  ampLookupCaptured,
  ampLookupRandomSid,
  ampPush,
  ampReplay,
  floodTemplates,
  foreignRegistrations,
  nonmemberJoins,
  nonmemberLookups,
  unauthorizedLookups,
  type AmpResult,
} from '../../test/helpers/abuse-attacks.ts';
import { fmt, printTable, UsageProblem, writeResults, type Cell } from './table.ts';

const TARGETS = {
  nonmember_joins_accepted: 0,
  nonmember_lookups_answered: 0,
  unauthorized_lookups_answered: 0,
  foreign_registrations_accepted: 0,
  amplification_max: 1.0,
  legit_lookup_success_under_flood: 0.99,
  legit_failover_ok_under_flood: true,
  /** "Bounded": what 10 minutes of strangers may cost at most. */
  rm_rss_growth_mib_10min: 64,
  store_rows_growth_10min: 100,
} as const;

const num = (x: unknown): number => (typeof x === 'number' ? x : 0);
const wait = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function options(argv: string[]): { minutes: number; floodRate: number; floodSeconds: number; churnRate: number } {
  let v;
  try {
    v = parseArgs({
      args: argv,
      options: {
        minutes: { type: 'string', default: '10' },
        'flood-rate': { type: 'string', default: '100000' },
        'flood-seconds': { type: 'string', default: '30' },
        'churn-rate': { type: 'string', default: '50' },
      },
      strict: true,
    }).values;
  } catch (e) {
    throw new UsageProblem(e instanceof Error ? e.message : String(e));
  }
  const pos = (k: string, s: string, min: number): number => {
    const x = Number(s);
    if (!Number.isFinite(x) || x < min) throw new UsageProblem(`--${k} must be a number ≥ ${min}, got "${s}"`);
    return x;
  };
  return {
    minutes: pos('minutes', v.minutes, 0.1),
    floodRate: pos('flood-rate', v['flood-rate'], 1),
    floodSeconds: pos('flood-seconds', v['flood-seconds'], 12),
    churnRate: pos('churn-rate', v['churn-rate'], 1),
  };
}

async function flood(lab: AbuseLab, tb: Testbed, rate: number, seconds: number): Promise<Json> {
  const { file, sealedOn } = await floodTemplates(lab);
  // Warm up: ch knows mh's binding before anything happens, so the failover below is the only change.
  const warm = await pingWithin(tb, 'ch', lab.ids.mh, 15_000);
  const spoof = lab.attacker.call({
    cmd: 'spoof',
    bin: SPOOF_BIN,
    args: ['--dst', lab.files.rmAddress, '--dport', '4342', '--src-prefix', lab.atk.addr.floodSources.v4, '--templates', file, '--seconds', String(seconds), '--rate', String(rate), '--order', 'random'],
  });
  await wait(2_000);
  const loopSeconds = seconds - 4;
  const loop = lab.legit.call({ cmd: 'legitLoop', name: 'legit', id: lab.ids.ch, rate: 20, seconds: loopSeconds });
  await wait(4_000);
  // Failover while the flood runs: mh's primary uplink loses carrier.
  await tb.linkDown('ispa', 'to-mh');
  const t0 = Date.now();
  const chToMh = await pingWithin(tb, 'ch', lab.ids.mh, 10_000);
  const mhToCh = await pingWithin(tb, 'mh', lab.ids.ch, Math.max(1_000, 10_000 - (Date.now() - t0)));
  const [s, l] = await Promise.all([spoof, loop]);
  await tb.linkUp('ispa', 'to-mh');
  const sent = num(l.sent);
  return {
    rate,
    seconds,
    sealedOn,
    spoof: s,
    achieved_rate: num(s.sent) / Math.max(0.001, num(s.seconds)),
    legit: l,
    success: sent > 0 ? num(l.positive) / sent : null,
    failover: { warmupMs: warm, chToMhMs: chToMh, mhToChMs: mhToCh, ok: warm !== null && chToMh !== null && mhToCh !== null },
  };
}

async function churn(lab: AbuseLab, minutes: number, rate: number): Promise<Json> {
  // The RM was just restarted (phase 2): let its start-up heap settle before the baseline.
  await wait(10_000);
  const rss0 = lab.rmRssMiB();
  const rows0 = lab.storeRows();
  const t0 = Date.now();
  const samples: { s: number; rss_mib: number; rows: number }[] = [];
  const sampler = setInterval(() => samples.push({ s: (Date.now() - t0) / 1000, rss_mib: lab.rmRssMiB(), rows: lab.storeRows() }), 10_000);
  const r = await lab.attacker.call({ cmd: 'churn', ...rmArgs(lab), seconds: minutes * 60, rate, register: true }, minutes * 60_000 + 120_000).finally(() => clearInterval(sampler));
  await wait(5_000);
  const rss1 = lab.rmRssMiB();
  const rows1 = lab.storeRows();
  return {
    minutes,
    rate,
    driver: r,
    rss_mib: { before: rss0, after: rss1 },
    rows: { before: rows0, after: rows1 },
    samples,
    rss_growth_mib: rss1 - rss0,
    rows_growth: rows1 - rows0,
    // Rows grow linearly (one per stranger the RM keeps), so a shorter run is scaled to 10 minutes;
    // RSS is not (the heap grows in steps and GC returns memory), so it is reported as measured.
    extrapolated: minutes !== 10,
    rows_growth_10min: Math.round(((rows1 - rows0) * 10) / minutes),
  };
}

export async function run(argv: string[]): Promise<number> {
  const o = options(argv);
  const problems = abuseProblems();
  if (problems.length > 0) {
    for (const p of problems) console.error(`bench abuse: ${p}`);
    return 1;
  }
  const loadBefore = loadavg()[0];
  const t0 = Date.now();
  const tb = await up({ prefix: 'rnab-' });
  let lab: AbuseLab | null = null;
  try {
    console.error('abuse: testbed, attacker, RM, agents…');
    lab = await startAbuseLab(tb, null);
    console.error(`abuse: admission: ${lab.admission}`);
    // Bound to mh's uplink b, as the agent binds its RM clients to uplinks (agent/rm/link.ts): the
    // failover below takes uplink a down, and an unbound socket would follow mh's main-table
    // default route into it, measuring the fault instead of the flood.
    const legit = await lab.legit.call({ cmd: 'legit', name: 'legit', ...rmArgs(lab), key: lab.keys.legit, publicKey: lab.files.rmPublicKey, bind: tb.addr.v4.mh.ispb });
    if (legit.started !== true) throw new Error(`the legit client (an admitted key) could not start a session: ${String(legit.why)}`);
    const baseline = await lab.legit.call({ cmd: 'legitLookup', name: 'legit', ids: [lab.ids.ch, lab.ids.mh] });

    console.error('abuse: joins, lookups and registrations by strangers…');
    const joins = await nonmemberJoins(lab, 6);
    const lookups = await nonmemberLookups(lab, 3);
    const foreign = await foreignRegistrations(lab);

    console.error('abuse: reflection through the RM…');
    const amp: Record<string, AmpResult> = {};
    amp.spoofed_hello = await ampHello(lab, 500);
    amp.spoofed_lookup_random_sid = await ampLookupRandomSid(lab, 2000);
    amp.spoofed_lookup_captured_session = await ampLookupCaptured(lab, 1000);
    amp.replayed_captured_datagrams = await ampReplay(lab, 20);
    amp.push_to_moved_followers = await ampPush(lab, 32);

    console.error(`abuse: ${o.floodRate}/s spoofed flood for ${o.floodSeconds} s, legit lookups and a failover meanwhile…`);
    const fl = await flood(lab, tb, o.floodRate, o.floodSeconds);

    console.error('abuse: RM restarted with sameRealm: deny (a member without lookup rights)…');
    const I = lab.ids;
    await lab.setPolicy({ lookup: { sameRealm: 'deny', rules: [{ askers: [I.mh, I.ch, I.legit], targets: [I.mh, I.ch, I.legit, I.member] }] } });
    const unauthorized = await unauthorizedLookups(lab, 3);
    console.error('abuse: reflection through agents (20 s)…');
    amp.agents_probing_victim_locators = await ampAgents(lab, 20);

    console.error(`abuse: strangers churning for ${o.minutes} min at ${o.churnRate}/s…`);
    const ch = await churn(lab, o.minutes, o.churnRate);

    const ratios = Object.values(amp)
      .map((a) => a.ratio)
      .filter((r): r is number => r !== null);
    const summary = {
      nonmember_joins_accepted: num(joins.accepted),
      nonmember_lookups_answered: num(lookups.answered),
      unauthorized_lookups_answered: num(unauthorized.answered),
      foreign_registrations_accepted: num(foreign.accepted),
      amplification_max: ratios.length > 0 ? Math.max(...ratios) : null,
      legit_lookup_success_under_flood: typeof fl.success === 'number' ? fl.success : null,
      legit_failover_ok_under_flood: (fl.failover as { ok: boolean }).ok,
      rm_rss_growth_mib_10min: num(ch.rss_growth_mib),
      store_rows_growth_10min: num(ch.rows_growth_10min),
    };
    const out = {
      ...summary,
      targets: TARGETS,
      admission: lab.admission,
      details: {
        baseline_legit_lookup: baseline,
        joins,
        lookups,
        unauthorized,
        foreign,
        amplification: Object.fromEntries(Object.entries(amp).map(([k, a]) => [k, { ratio: a.ratio, attacker_bytes: a.attackerBytes, attacker_packets: a.attackerPackets, victim_bytes: a.victimBytes, victim_packets: a.victimPackets, detail: a.detail }])),
        flood: fl,
        churn: ch,
      },
      setup: {
        machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version, loadavg_1m_before: loadBefore, loadavg_1m_after: loadavg()[0] },
        options: o,
        minutes_total: (Date.now() - t0) / 60_000,
        counting: 'nftables named counters, whole IP packets: prerouting in the victim namespace (bytes to the victim), prerouting in core on the attacker link (bytes atk sent, and with the victim address as source)',
        rm: 'mapping-server via `realmnet rm`, default limits; agents via `realmnet agent`; the legit client is agent/rm/client.ts in mh',
      },
    };
    const file = await writeResults('abuse', out);
    const zero = (k: keyof typeof summary, v: number): Cell[] => [k, v, '= 0', v === 0 ? 'met' : 'NOT MET'];
    const rows: Cell[][] = [
      zero('nonmember_joins_accepted', summary.nonmember_joins_accepted),
      zero('nonmember_lookups_answered', summary.nonmember_lookups_answered),
      zero('unauthorized_lookups_answered', summary.unauthorized_lookups_answered),
      zero('foreign_registrations_accepted', summary.foreign_registrations_accepted),
      ['amplification_max', fmt(summary.amplification_max, 2), '≤ 1.0', summary.amplification_max !== null && summary.amplification_max <= 1 ? 'met' : 'NOT MET'],
      ...Object.entries(amp).map(([k, a]): Cell[] => [`  ${k}`, a.ratio === null ? '—' : `${fmt(a.ratio, 2)} (${a.victimBytes}/${a.attackerBytes} B)`, '≤ 1.0', a.ratio === null ? '—' : a.ratio <= 1 ? 'met' : 'NOT MET']),
      ['legit_lookup_success_under_flood', fmt(summary.legit_lookup_success_under_flood, 4), '≥ 0.99', (summary.legit_lookup_success_under_flood ?? 0) >= 0.99 ? 'met' : 'NOT MET'],
      ['legit_failover_ok_under_flood', String(summary.legit_failover_ok_under_flood), 'true', summary.legit_failover_ok_under_flood ? 'met' : 'NOT MET'],
      [o.minutes === 10 ? 'rm_rss_growth_mib_10min' : `rm_rss_growth_mib_10min (over ${o.minutes} min)`, fmt(summary.rm_rss_growth_mib_10min, 1), `≤ ${TARGETS.rm_rss_growth_mib_10min}`, summary.rm_rss_growth_mib_10min <= TARGETS.rm_rss_growth_mib_10min ? 'met' : 'NOT MET'],
      ['store_rows_growth_10min', summary.store_rows_growth_10min, `≤ ${TARGETS.store_rows_growth_10min}`, summary.store_rows_growth_10min <= TARGETS.store_rows_growth_10min ? 'met' : 'NOT MET'],
    ];
    printTable(['metric', 'value', 'target', 'met'], rows, ['l', 'r', 'l', 'l']);
    console.log(`admission: ${lab.admission}`);
    console.log(`flood: ${Math.round(num(fl.achieved_rate))} datagrams/s achieved (asked ${o.floodRate}); churn over ${o.minutes} min${o.minutes !== 10 ? ' (rows scaled to 10 min, RSS as measured)' : ''}`);
    console.log(`results: ${file}  (1-minute load average before/after: ${loadBefore.toFixed(1)}/${loadavg()[0].toFixed(1)} on ${cpus().length} CPUs)`);
    return 0;
  } finally {
    await lab?.stop();
    await tb.down();
  }
}
