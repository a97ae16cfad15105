import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { up, TESTBED, type NsProcess, type Testbed } from '../../scripts/testbed/topology.ts';
import { HOST_IDS } from '../../scripts/testbed/configs.ts';
import { hostIdBytes } from '../../shared/ids.ts';
import { requireRoot, uniquePrefix } from '../helpers/netns.ts';
import { agentStatus, startAgents, type AgentPair } from '../helpers/agents.ts';

/**
 * An attacker on the path (the core router, between the ISPs and ch) with the encrypted data plane,
 * the default: it captures the agents' datagrams, reads nothing of them, and sends them again —
 * whole, or with one bit changed — from its own address. The application behind ch must see each
 * datagram exactly once; every copy and every change must end in a drop counter. Then a stream
 * across rekeys every 2 s arrives whole.
 */
let tb: Testbed;
let agents: AgentPair | null = null;
let dir = '';

beforeAll(async () => {
  requireRoot(['ip', 'tshark']);
  tb = await up({ prefix: uniquePrefix('op') });
  dir = await mkdtemp(join(tmpdir(), 'realmnet-onpath-'));
});

afterAll(async () => {
  await agents?.stop();
  await tb?.down();
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

const MARKER = 'REALMNET-PLAINTEXT-MARKER';

/** ch's application: counts numbered datagrams (4-byte sequence number first); prints on SIGTERM. */
const RECEIVER = `
const s = require('node:dgram').createSocket('udp6');
const seen = new Map(); let last = 0, maxGap = 0, n = 0;
s.on('message', (m) => {
  const t = performance.now(); const k = m.readUInt32BE(0);
  seen.set(k, (seen.get(k) ?? 0) + 1);
  if (n++ > 0) maxGap = Math.max(maxGap, t - last); last = t;
});
s.bind(9000, process.argv[1], () => process.stdout.write('ready\\n'));
process.on('SIGTERM', () => {
  const dups = [...seen.values()].filter((c) => c > 1).length;
  process.stdout.write(JSON.stringify({ unique: seen.size, dups, total: n, maxGap }) + '\\n', () => process.exit(0));
});
`;

/** mh's application: COUNT numbered datagrams at RATE a second, each with the marker in it. */
const SENDER = `
const s = require('node:dgram').createSocket('udp6');
const [to, count, rate, marker] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3]), process.argv[4]];
let k = 0; const t0 = performance.now();
function step() {
  const due = Math.min(count, Math.floor(((performance.now() - t0) * rate) / 1000) + 1);
  while (k < due) { const b = Buffer.alloc(120); b.writeUInt32BE(k++, 0); b.write(marker, 8); s.send(b, 9000, to); }
  if (k < count) setTimeout(step, 1); else setTimeout(() => process.exit(0), 300);
}
step();
`;

interface Received {
  unique: number;
  dups: number;
  total: number;
  maxGap: number;
}

async function receiver(): Promise<NsProcess> {
  const p = tb.spawn('ch', process.execPath, ['-e', RECEIVER, HOST_IDS.ch]);
  for (let i = 0; i < 100 && !p.stdoutTail().includes('ready'); i++) await new Promise((r) => setTimeout(r, 50));
  return p;
}

async function report(p: NsProcess): Promise<Received> {
  await p.stop(3_000);
  return JSON.parse(p.stdoutTail().trim().split('\n').pop() ?? '{}') as Received;
}

/** Sends hex payloads to ch's locator from the core router (the attacker's own address). */
async function replay(payloads: readonly string[]): Promise<void> {
  const script = `
const s = require('node:dgram').createSocket('udp4');
const list = JSON.parse(process.argv[1]);
let i = 0;
(function next() {
  if (i >= list.length) return setTimeout(() => process.exit(0), 200);
  s.send(Buffer.from(list[i++], 'hex'), 4341, process.argv[2], () => (i % 50 === 0 ? setTimeout(next, 5) : next()));
})();`;
  await tb.exec('core', process.execPath, ['-e', script, JSON.stringify(payloads), TESTBED.v4.ch.core], { timeoutMs: 60_000 });
}

describe('an on-path attacker against the encrypted data plane', () => {
  const N = 300;
  let captured: string[] = [];

  beforeAll(async () => {
    agents = await startAgents(tb);
  }, 60_000);

  it('captures the traffic but reads nothing of it: the LISP header decodes, the payload is opaque', async () => {
    const file = join(dir, 'onpath.pcap');
    // On the core router's link to ch: what crosses it from mh is the attacker's to take.
    const cap = tb.spawn('core', 'tshark', ['-i', TESTBED.dev.core.ch, '-F', 'pcap', '-f', `udp dst port 4341 and dst host ${TESTBED.v4.ch.core}`, '-w', file]);
    for (let i = 0; i < 300 && !cap.stderrTail().includes('Capturing on'); i++) await new Promise((r) => setTimeout(r, 50));
    const rx = await receiver();
    await tb.exec('mh', process.execPath, ['-e', SENDER, HOST_IDS.ch, String(N), '500', MARKER], { timeoutMs: 30_000 });
    await new Promise((r) => setTimeout(r, 500));
    await cap.stop();
    const got = await report(rx);
    expect(got).toMatchObject({ unique: N, dups: 0, total: N });
    // Data datagrams only (N and I set; handshakes and probes have N clear). The agents send equal
    // datagrams to one locator as one UDP GSO message, and veths carry it whole as far as the
    // capture (it is cut into datagrams only where a real NIC would): such a capture of several
    // datagrams (twice, three times… the stream's size) is no datagram anyone received, so only the
    // stream's own size is kept — on a real wire the attacker sees the datagrams one by one.
    const fields = await tb.exec('core', 'tshark', ['-r', file, '-T', 'fields', '-e', 'udp.payload']);
    const all = fields.stdout
      .split('\n')
      .map((l) => l.trim().replace(/:/g, ''))
      .filter((h) => h.length > 40 && (parseInt(h.slice(0, 2), 16) & 0x88) === 0x88);
    const size = 40 + 8 + 120 + 36; // inner IPv6 + UDP + the application's 120 bytes, sealed
    captured = all.filter((h) => h.length / 2 === size);
    console.log(`on-path capture: ${all.length - captured.length} GSO super-datagrams (several datagrams captured as one) left out`);
    console.log(`on-path capture at core: ${captured.length} data datagrams to ch (the application sent ${N})`);
    // dumpcap may start listening a little after tshark says so: most of the stream is enough.
    expect(captured.length).toBeGreaterThanOrEqual(N * 0.8);
    const marker = Buffer.from(MARKER).toString('hex');
    const ids = [HOST_IDS.mh, HOST_IDS.ch].map((id) => Buffer.from(hostIdBytes(id)).toString('hex'));
    for (const h of captured) {
      expect(h.includes(marker)).toBe(false);
      for (const id of ids) expect(h.includes(id)).toBe(false);
    }
  }, 90_000);

  it('replayed datagrams, twice over, from the attacker\'s address: nothing delivered twice, every copy counted', async () => {
    const st0 = await agentStatus(tb, 'ch');
    const rx = await receiver();
    await replay(captured);
    await new Promise((r) => setTimeout(r, 1_000));
    await replay(captured);
    await new Promise((r) => setTimeout(r, 500));
    const got = await report(rx);
    const st1 = await agentStatus(tb, 'ch');
    const [before, after] = [st0.drops, st1.drops];
    // What reached ch's agent (its socket's count; the kernel may drop a few of a burst) was refused.
    const arrived = st1.uplinks[0].rxPackets - st0.uplinks[0].rxPackets;
    // Refused by the replay window, or, for the first few, by the session that carried them being
    // gone: when both ends start a handshake at once, the session that loses is wiped early.
    const refused = (['outside.duplicate', 'outside.tooOld', 'outside.noSession'] as const).reduce((n, k) => n + after[k] - before[k], 0);
    const moved = Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - before[k as keyof typeof before]]).filter(([, d]) => d !== 0));
    console.log(`replay: ${2 * captured.length} copies sent, ${arrived} reached ch's agent, ${refused} refused, the application got ${got.total}; drops ${JSON.stringify(moved)}`);
    expect(got.total).toBe(0);
    expect(arrived).toBeGreaterThanOrEqual(2 * captured.length * 0.95);
    expect(refused).toBe(arrived);
    expect(after['outside.forged'] - before['outside.forged']).toBe(0);
  }, 90_000);

  it('one changed bit anywhere (header, ciphertext, tag) never reaches the application', async () => {
    const before = (await agentStatus(tb, 'ch')).drops;
    const rx = await receiver();
    const sample = captured.slice(0, 24);
    const changed = sample.map((h, i) => {
      const b = Buffer.from(h, 'hex');
      // Header bytes 8-19 (index, counter), the ciphertext, the tag: one bit each.
      const at = [9, 13, 17, 19, 24, 40, 60, b.length - 16, b.length - 1][i % 9];
      b[at] ^= 1 << i % 8;
      return b.toString('hex');
    });
    await replay(changed);
    await new Promise((r) => setTimeout(r, 500));
    const got = await report(rx);
    const after = (await agentStatus(tb, 'ch')).drops;
    const counted = (['outside.forged', 'outside.noSession', 'outside.duplicate', 'outside.tooOld'] as const).reduce((n, k) => n + after[k] - before[k], 0);
    console.log(`changed bits: ${changed.length} sent, forged ${after['outside.forged'] - before['outside.forged']}, no session ${after['outside.noSession'] - before['outside.noSession']}`);
    expect(got.total).toBe(0);
    expect(counted).toBe(changed.length);
    expect(after['outside.forged'] - before['outside.forged']).toBeGreaterThanOrEqual(changed.length / 2);
  }, 60_000);
});

describe('rekeying under traffic', () => {
  beforeAll(async () => {
    await agents?.stop();
    agents = null;
    agents = await startAgents(tb, { dataplane: { rekeyAfterS: 2, rejectAfterS: 6 } });
  }, 60_000);

  it('a numbered stream across sessions replaced every 2 s arrives whole and once', async () => {
    const st0 = await Promise.all([agentStatus(tb, 'mh'), agentStatus(tb, 'ch')]);
    const rx = await receiver();
    const count = 8_000; // 8 s at 1000 a second
    await tb.exec('mh', process.execPath, ['-e', SENDER, HOST_IDS.ch, String(count), '1000', MARKER], { timeoutMs: 60_000 });
    await new Promise((r) => setTimeout(r, 500));
    const got = await report(rx);
    const st1 = await Promise.all([agentStatus(tb, 'mh'), agentStatus(tb, 'ch')]);
    const rekeys = [0, 1].reduce((n, i) => n + (st1[i].encryption?.counters.rekeys ?? 0) - (st0[i].encryption?.counters.rekeys ?? 0), 0);
    console.log(`rekey stream: ${got.unique} of ${count} arrived, ${got.dups} twice, largest gap ${got.maxGap.toFixed(1)} ms, ${rekeys} rekeys`);
    expect(rekeys).toBeGreaterThanOrEqual(3);
    expect(got.dups).toBe(0);
    // The kernel may drop a datagram under load; a rekey that lost packets would lose hundreds.
    expect(got.unique).toBeGreaterThanOrEqual(count * 0.999);
    expect(got.maxGap).toBeLessThan(500);
  }, 90_000);
});
