import type { Testbed } from '../../scripts/testbed/topology.ts';

export interface GapResult {
  /** The longest time between two consecutive replies, ms. */
  readonly gapMs: number;
  readonly sent: number;
  readonly received: number;
}

/**
 * A ping every 10 ms from mh to `dst` for `seconds` s, `during` run 0.5 s in: the longest gap between
 * replies is how long traffic stood still (a reload, a restart, a failover), to ~10 ms.
 */
export async function pingGap(tb: Testbed, dst: string, seconds: number, during: () => Promise<void>): Promise<GapResult> {
  const count = Math.round(seconds * 100);
  const p = tb.exec('mh', 'ping', [dst.includes(':') ? '-6' : '-4', '-n', '-D', '-i', '0.01', '-c', String(count), '-W', '1', dst], { allowFail: true, timeoutMs: (seconds + 10) * 1000 });
  await new Promise((r) => setTimeout(r, 500));
  await during();
  const out = (await p).stdout;
  const times = [...out.matchAll(/^\[(\d+\.\d+)\].*bytes from/gm)].map((m) => Number(m[1]) * 1000);
  let gap = 0;
  for (let i = 1; i < times.length; i++) gap = Math.max(gap, times[i] - times[i - 1]);
  return { gapMs: Math.round(gap), sent: count, received: times.length };
}
