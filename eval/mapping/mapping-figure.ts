/**
 * The figure as a vega-lite spec: one labelled point per strategy, messages per host-hour against
 * stale ratio, both on log scales (they span three and five decades), with the targets as rules:
 * 0.5% stale, and 10% of all-push's messages.
 */
import type { TopLevelSpec } from 'vega-lite';
import { baseline, TARGETS } from './mapping-report.ts';
import type { StrategyResult } from './tally.ts';

/** A log axis cannot show 0; a strategy with no stale time at all is drawn at this floor (in %). */
const STALE_FLOOR_PCT = 1e-5;

interface Point {
  label: string;
  messages: number;
  /** Stale ratio in percent, so that plain number labels read as percentages. */
  stalePct: number;
}

/**
 * One point per strategy; strategies that land on the same spot to three digits and the same hit
 * ratio to 0.1% (learned-warm acts as hybrid once it knows every class) share one label, instead
 * of overprinting each other.
 */
function pointsOf(results: readonly StrategyResult[]): Point[] {
  const bySpot = new Map<string, { names: string[]; r: StrategyResult }>();
  for (const r of results) {
    const spot = `${r.messagesPerHostHour.toPrecision(3)}/${r.staleRatio.toPrecision(3)}/${(r.hitRatio * 100).toFixed(1)}`;
    const found = bySpot.get(spot);
    if (found === undefined) bySpot.set(spot, { names: [r.name], r });
    else found.names.push(r.name);
  }
  return [...bySpot.values()].map(({ names, r }) => ({
    label: `${names.join(', ')} (hit ${(r.hitRatio * 100).toFixed(1)}%)`,
    messages: r.messagesPerHostHour,
    stalePct: Math.max(STALE_FLOOR_PCT, r.staleRatio * 100),
  }));
}

export function tradeoffSpec(results: readonly StrategyResult[], subtitle: string): TopLevelSpec {
  const push = baseline(results);
  const points = pointsOf(results);
  const lowest = Math.floor(Math.log10(Math.min(...points.map((q) => q.stalePct), TARGETS.staleRatioMax * 100)));
  // Label decades only: vega's log axis would otherwise print every minor tick.
  const decades = Array.from({ length: 3 - lowest }, (_, i) => 10 ** (lowest + i));
  const x = { field: 'messages', type: 'quantitative' as const, scale: { type: 'log' as const }, title: 'control messages per host-hour (log scale)' };
  const y = {
    field: 'stalePct',
    type: 'quantitative' as const,
    scale: { type: 'log' as const, domain: [decades[0], decades[decades.length - 1]] },
    title: 'stale ratio, time-weighted, % (log scale)',
    axis: { values: decades, format: '~g' },
  };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: { text: 'Mapping hierarchy: freshness against message cost, per strategy', subtitle: [subtitle, 'dashed: targets (stale <= 0.5%, messages <= 10% of all-push); better is lower left'] },
    width: 640,
    height: 380,
    config: {
      font: 'sans-serif',
      background: 'white',
      title: { fontSize: 15, subtitleFontSize: 12, subtitleColor: '#444', anchor: 'start' },
      axis: { labelFontSize: 12, titleFontSize: 12 },
    },
    layer: [
      {
        data: { values: [{ stalePct: TARGETS.staleRatioMax * 100 }] },
        mark: { type: 'rule', strokeDash: [6, 4], color: '#d95f02' },
        encoding: { y: { field: 'stalePct', type: 'quantitative' } },
      },
      {
        data: { values: [{ messages: TARGETS.messagesVsAllPushMax * push.messagesPerHostHour }] },
        mark: { type: 'rule', strokeDash: [6, 4], color: '#1b9e77' },
        encoding: { x: { field: 'messages', type: 'quantitative' } },
      },
      {
        data: { values: points },
        mark: { type: 'point', filled: true, size: 90, color: '#1f77b4' },
        encoding: { x, y, tooltip: [{ field: 'label' }] },
      },
      {
        data: { values: points },
        mark: { type: 'text', align: 'left', dx: 8, dy: -8, fontSize: 12 },
        encoding: { x, y, text: { field: 'label' } },
      },
    ],
  };
}
