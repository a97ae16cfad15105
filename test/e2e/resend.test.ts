/**
 * Failover that applications do not notice (issue #11), end to end in the testbed with the links
 * shaped as in the failover bench (tbf 200 Mbit/s on the ISP links and core → ch):
 * - re-sending the lost flight: a carrier loss under a bulk TCP transfer costs the sender's TCP no
 *   retransmission timeout (the kernel's own TcpExt TCPTimeouts counter in mh's namespace);
 * - exactly once: a numbered UDP stream across a silent blackhole (re-sends and make-before-break
 *   copies both happen) reaches the application with no number twice, while ch's agent dropped copies;
 * - make-before-break on a lossy path: copies were sent, the transfer is intact;
 * - both ends at once: mh and ch lose their active uplinks 80 ms apart with the RM stopped, and the
 *   agents find the pair that still works by themselves.
 * Each test runs its own realm on one shared testbed; faults are cleared after each.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { up, type Testbed } from '../../scripts/testbed/topology.ts';
import { requireRoot, uniquePrefix } from '../helpers/netns.ts';
import { agentStatus, REPO, startRealm, type Realm } from '../helpers/agents.ts';
import { failoversSince, failoverView, runFlow } from '../helpers/failover.ts';

let tb: Testbed;
let realm: Realm | null = null;
const figures: string[] = [];
const RATE_MBIT = 200;
const FAULT_AT_MS = 2_000;
const UDPSEQ = join(REPO, 'scripts', 'tools', 'udpseq.ts');

beforeAll(async () => {
  requireRoot(['ip', 'nft', 'tc', 'ping']);
  tb = await up({ prefix: uniquePrefix('rs') });
  for (const [node, dev] of [
    ['ispa', tb.addr.dev.ispa.core],
    ['ispa', tb.addr.dev.ispa.mh],
    ['ispb', tb.addr.dev.ispb.core],
    ['ispb', tb.addr.dev.ispb.mh],
    ['ispc', tb.addr.dev.ispc.core],
    ['ispc', tb.addr.dev.ispc.mh],
    ['core', tb.addr.dev.core.ch],
    ['core', tb.addr.dev.core.ch2],
  ] as const)
    await tb.rateLimit(node, dev, RATE_MBIT);
});

afterEach(async () => {
  await realm?.stop();
  realm = null;
  await tb.clearBlackhole('ispa');
  await tb.clearLoss('ispa', tb.addr.dev.ispa.mh);
  await tb.linkUp('ispa', tb.addr.dev.ispa.mh);
  await tb.linkUp('core', tb.addr.dev.core.ch);
});

afterAll(async () => {
  await realm?.stop();
  await tb?.down();
  if (figures.length > 0) console.log(`resend e2e (for the record):\n  ${figures.join('\n  ')}`);
});

/** Datagrams the kernel dropped for a full UDP receive buffer in a node's namespace (Udp RcvbufErrors, both families). */
async function udpRcvbufErrors(node: 'mh' | 'ch'): Promise<number> {
  let n = 0;
  const v4 = (await tb.exec(node, 'cat', ['/proc/net/snmp'])).stdout.split('\n').filter((l) => l.startsWith('Udp:'));
  if (v4.length >= 2) n += Number(v4[1].trim().split(/\s+/)[v4[0].trim().split(/\s+/).indexOf('RcvbufErrors')] ?? 0);
  const v6 = (await tb.exec(node, 'cat', ['/proc/net/snmp6'])).stdout.match(/^Udp6RcvbufErrors\s+(\d+)/m);
  if (v6 !== null) n += Number(v6[1]);
  return n;
}

/** The kernel's TCP retransmission timeouts so far in a node's namespace (TcpExt TCPTimeouts). */
async function tcpTimeouts(node: 'mh' | 'ch'): Promise<number> {
  const r = await tb.exec(node, 'cat', ['/proc/net/netstat']);
  const lines = r.stdout.split('\n').filter((l) => l.startsWith('TcpExt:'));
  if (lines.length < 2) throw new Error(`no TcpExt in ${node}'s /proc/net/netstat`);
  const names = lines[0].trim().split(/\s+/);
  const values = lines[1].trim().split(/\s+/);
  const i = names.indexOf('TCPTimeouts');
  if (i < 0) throw new Error('no TCPTimeouts counter');
  return Number(values[i]);
}

describe('failover that applications do not notice', () => {
  it('a carrier loss under a bulk transfer: the lost flight is re-sent, TCP never waits for its timeout', async () => {
    realm = await startRealm(tb, {});
    const ch = realm.files.ids.ch;
    const since = Date.now();
    const before = await tcpTimeouts('mh');
    const r = await runFlow(tb, { to: ch, seconds: 5, windowFromMs: FAULT_AT_MS, faults: [{ atMs: FAULT_AT_MS, label: 'ispa to-mh down', run: () => tb.linkDown('ispa', tb.addr.dev.ispa.mh) }] });
    const timeouts = (await tcpTimeouts('mh')) - before;
    const v = await failoverView(tb, 'mh');
    const fo = failoversSince(v, since).filter((f) => f.peer === ch);
    const st = await agentStatus(tb, 'mh');
    figures.push(`carrier loss: ${r.summary}; mh TCP timeouts ${timeouts}; failovers ${JSON.stringify(fo.map((f) => ({ from: f.from, to: f.to, resent: f.resentPackets })))}; resend ${JSON.stringify(st.resend)}`);
    expect(r.intact && !r.reset && r.completed).toBe(true);
    // The failover away from ispa re-sent what was in flight on it...
    expect(fo.some((f) => (f.from ?? '').startsWith('ispa') && f.resentPackets > 0)).toBe(true);
    // ...so the sender's TCP never hit its retransmission timeout.
    expect(timeouts).toBe(0);
  }, 90_000);

  it('a numbered UDP stream across a silent blackhole: re-sends and make-before-break copies reach the application once', async () => {
    realm = await startRealm(tb, {});
    const ids = realm.files.ids;
    const seconds = 6;
    const recv = tb.spawn('ch', process.execPath, ['--import', 'tsx', UDPSEQ, 'recv', '--listen', ids.ch, '--port', '5003', '--seconds', String(seconds + 3)], { cwd: REPO });
    try {
      for (let i = 0; i < 100 && !recv.stderrTail().includes('listening'); i++) await new Promise((res) => setTimeout(res, 50));
      const send = tb.spawn('mh', process.execPath, ['--import', 'tsx', UDPSEQ, 'send', '--to', ids.ch, '--port', '5003', '--seconds', String(seconds), '--pps', '4000', '--size', '1200'], { cwd: REPO });
      await new Promise((res) => setTimeout(res, FAULT_AT_MS));
      await tb.blackhole('ispa');
      await send.exited;
      await recv.exited;
      const got = JSON.parse(recv.stdoutTail().trim().split('\n').at(-1) ?? '{}') as { received: number; unique: number; duplicates: number; missing: number };
      const [mh, chSt] = await Promise.all([agentStatus(tb, 'mh'), agentStatus(tb, 'ch')]);
      const rcvbuf = await udpRcvbufErrors('ch');
      figures.push(
        `udp across a blackhole: ${JSON.stringify(got)}; ch UDP receive-buffer drops ${rcvbuf}; mh resent ${mh.resend?.replayedPackets}, copies ${mh.inside.shadowPackets}; ch dropped ${chSt.drops['outside.duplicate']} duplicates`,
      );
      expect(got.received).toBeGreaterThan(seconds * 4000 * 0.8);
      // The agents did make copies (re-sends after the switch, make-before-break while suspect)...
      expect((mh.resend?.replayedPackets ?? 0) + mh.inside.shadowPackets).toBeGreaterThan(0);
      expect(chSt.drops['outside.duplicate']).toBeGreaterThan(0);
      // ...and the application saw none of them twice...
      expect(got.duplicates).toBe(0);
      // ...while what was lost in the blackhole came again: ~200 ms of silence at 4000/s would be
      // ~800 numbers (3 %) missing without the re-send.
      expect(got.missing).toBeLessThan(seconds * 4000 * 0.005);
    } finally {
      await recv.stop(500);
    }
  }, 90_000);

  it('30 % loss on the active path: make-before-break copies onto the path traffic left, the transfer is intact', async () => {
    realm = await startRealm(tb, {});
    const ch = realm.files.ids.ch;
    const r = await runFlow(tb, { to: ch, seconds: 5, windowFromMs: FAULT_AT_MS, faults: [{ atMs: FAULT_AT_MS, label: '30% loss ispa', run: () => tb.randomLoss('ispa', tb.addr.dev.ispa.mh, 30) }] });
    const st = await agentStatus(tb, 'mh');
    figures.push(`30% loss: ${r.summary}; mh copies ${st.inside.shadowPackets}, resent ${st.resend?.replayedPackets}`);
    expect(r.intact && !r.reset && r.completed).toBe(true);
    expect(st.inside.shadowPackets).toBeGreaterThan(0);
  }, 90_000);

  it('both hosts lose their active uplink 80 ms apart: the agents find a working pair without the RM, the transfer survives', async () => {
    realm = await startRealm(tb, {});
    const ids = realm.files.ids;
    const since = Date.now();
    // The RM is stopped: only the agents' own probes and direct updates can find the pair.
    await realm.rm.stop(2000);
    const r = await runFlow(tb, {
      to: ids.ch,
      seconds: 5,
      windowFromMs: FAULT_AT_MS,
      faults: [
        { atMs: FAULT_AT_MS, label: 'ispa to-mh down', run: () => tb.linkDown('ispa', tb.addr.dev.ispa.mh) },
        { atMs: FAULT_AT_MS + 80, label: "core's end of ch's eth0 down", run: () => tb.linkDown('core', tb.addr.dev.core.ch) },
      ],
    });
    const [mh, ch] = await Promise.all([failoverView(tb, 'mh'), failoverView(tb, 'ch')]);
    const mhFo = failoversSince(mh, since).filter((f) => f.peer === ids.ch);
    const chFo = failoversSince(ch, since).filter((f) => f.peer === ids.mh);
    figures.push(`double failure: ${r.summary}; mh ${JSON.stringify(mhFo.map((f) => [f.from, f.to, f.tookMs, f.resentPackets]))}; ch ${JSON.stringify(chFo.map((f) => [f.from, f.to, f.tookMs, f.resentPackets]))}`);
    expect(r.intact && !r.reset && r.completed && r.movingAtEnd).toBe(true);
    // Both ended on a pair that avoids both failed links: mh not on ispa and not to ch's first address...
    const mhEntry = (await agentStatus(tb, 'mh')).mapCache.find((e) => e.hostId === ids.ch);
    expect(mhEntry?.path?.startsWith('ispa')).toBe(false);
    expect(mhEntry?.path?.endsWith(tb.addr.v4.ch.core)).toBe(false);
    // ...and ch not on its eth0 uplink nor towards mh's ispa locator.
    const chEntry = (await agentStatus(tb, 'ch')).mapCache.find((e) => e.hostId === ids.mh);
    expect(chEntry?.path?.startsWith('core ')).toBe(false);
    expect(chEntry?.path?.endsWith(tb.addr.v4.mh.ispa)).toBe(false);
    expect(chFo.length).toBeGreaterThan(0);
  }, 90_000);
});
