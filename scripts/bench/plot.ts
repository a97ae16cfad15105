/**
 * The failover bench's figure: goodput over time of one run per system (realmnet and MPTCP on the
 * same axes), with a vertical rule at each fault event. vega-lite → vega SVG → resvg PNG, through
 * eval/routing/render.ts (the project's one small offline renderer; reused, not copied).
 */
import { writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { TopLevelSpec } from 'vega-lite';
import { textRenders, toPng, toSvg } from '../../eval/routing/render.ts';
import { rebucket } from '../tools/flowmeter.ts';

export interface PlotSeries {
  /** Legend label, e.g. 'realmnet' or 'MPTCP (subflow)'. */
  system: string;
  rep: number;
  gapMs: number;
  /** Bytes per bucket from t=0. */
  buckets: readonly number[];
  bucketMs: number;
}

export interface PlotInput {
  scenario: string;
  description: string;
  series: readonly PlotSeries[];
  /** Fault events, ms from t=0. */
  events: readonly { label: string; ms: number }[];
  seconds: number;
  /** The per-ISP-link rate limit, or null when the links were not rate-limited (the demo). */
  rateMbit: number | null;
  outDir: string;
  /** Which run each series is (default: the median-gap run of each system, as the bench picks them). */
  runNote?: string;
  /** Plot resolution (default 50 ms: fine enough to show a 100 ms gap, coarse enough to read). */
  stepMs?: number;
}

const COLORS = ['#1f77b4', '#d95f02', '#1b9e77', '#7570b3'];
const PNG_ZOOM = 2;

export interface GoodputRow {
  system: string;
  t: number;
  mbps: number;
}

/** Mbit/s per step for each series; t is the start of the step in seconds. */
export function goodputRows(series: readonly PlotSeries[], stepMs: number): GoodputRow[] {
  const rows: GoodputRow[] = [];
  for (const s of series) {
    const factor = Math.max(1, Math.round(stepMs / s.bucketMs));
    const width = factor * s.bucketMs;
    rebucket(s.buckets, factor).forEach((bytes, k) => rows.push({ system: s.system, t: (k * width) / 1000, mbps: (bytes * 8) / (width * 1000) }));
  }
  return rows;
}

export function failoverSpec(input: PlotInput): TopLevelSpec {
  const stepMs = input.stepMs ?? 50;
  const rows = goodputRows(input.series, stepMs);
  const systems = input.series.map((s) => s.system);
  const gaps = input.series.map((s) => `${s.system} ${Math.round(s.gapMs)} ms (run ${s.rep})`).join(', ');
  const events = input.events.map((e) => ({ t: e.ms / 1000, label: e.label }));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: {
      text: `Failover: ${input.scenario}`,
      subtitle: [
        input.description,
        `goodput at the receiving application, ${stepMs} ms steps, ${input.rateMbit === null ? 'links not rate-limited' : `${input.rateMbit} Mbit/s per ISP link`}; ${input.runNote ?? 'the median-gap run of each system'}`,
        `longest goodput gap in the measured window: ${gaps || 'no runs'}`,
      ],
    },
    width: 900,
    height: 300,
    config: {
      font: 'sans-serif',
      background: 'white',
      title: { fontSize: 15, subtitleFontSize: 12, subtitleColor: '#444', anchor: 'start' },
      axis: { labelFontSize: 12, titleFontSize: 12 },
      legend: { orient: 'bottom', labelFontSize: 12, symbolStrokeWidth: 2.5, labelLimit: 0 },
    },
    layer: [
      {
        data: { values: rows },
        mark: { type: 'line', interpolate: 'step-after', strokeWidth: 1.6 },
        encoding: {
          x: { field: 't', type: 'quantitative', title: 'seconds from the start of the transfer', scale: { nice: false } },
          y: { field: 'mbps', type: 'quantitative', title: 'goodput (Mbit/s)' },
          color: { field: 'system', type: 'nominal', title: null, scale: { domain: systems, range: COLORS.slice(0, systems.length) }, legend: { symbolType: 'stroke' } },
        },
      },
      {
        data: { values: events },
        mark: { type: 'rule', color: '#c00', strokeDash: [5, 4], strokeWidth: 1.5 },
        encoding: { x: { field: 't', type: 'quantitative' } },
      },
      {
        data: { values: events },
        mark: { type: 'text', color: '#c00', align: 'left', baseline: 'top', dx: 4, dy: 4, fontSize: 11 },
        encoding: { x: { field: 't', type: 'quantitative' }, y: { value: 0 }, text: { field: 'label' } },
      },
    ],
  };
}

/** Writes failover-<scenario>.svg and .png into outDir and returns their paths. */
export async function plotFailover(input: PlotInput): Promise<{ svg: string; png: string }> {
  if (!/^[A-Za-z0-9_.-]+$/.test(input.scenario)) throw new Error(`scenario "${input.scenario}" must be a plain file name`);
  const svg = await toSvg(failoverSpec(input));
  if (!textRenders()) throw new Error('no font for the PNG text: install fonts-dejavu-core (bash scripts/install-deps.sh)');
  await mkdir(input.outDir, { recursive: true });
  const base = join(input.outDir, `failover-${input.scenario}`);
  await writeFile(`${base}.svg`, svg);
  await writeFile(`${base}.png`, toPng(svg, PNG_ZOOM));
  return { svg: `${base}.svg`, png: `${base}.png` };
}
