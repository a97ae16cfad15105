/**
 * The figures as vega-lite specs: prefixes over years, with the four curves of the issue (no
 * deployment, 10%, 20%, the one-prefix-per-AS bound) and the simulation's min-max band over seeds.
 */
import type { TopLevelSpec } from 'vega-lite';
import type { ScenarioResult, ScheduleResult } from './evaluate.ts';

const CURVES = ['no deployment', '10% per half-year', '20% per half-year', 'lower bound: 1 prefix per AS'] as const;
const COLORS = ['#4d4d4d', '#1f77b4', '#d95f02', '#1b9e77'];
// The bound is dashed so it reads as a reference line, not as a deployment curve.
const DASHES = [[1, 0], [1, 0], [1, 0], [6, 4]];

interface Row {
  panel: string;
  years: number;
  curve: (typeof CURVES)[number];
  prefixes: number;
  simMin: number | null;
  simMax: number | null;
}

export function rowsOf(result: ScenarioResult, panel: string): Row[] {
  const band = (s: ScheduleResult, k: number): Pick<Row, 'simMin' | 'simMax'> => ({
    simMin: s.simulation.perHalfYear[k].min,
    simMax: s.simulation.perHalfYear[k].max,
  });
  const none = { simMin: null, simMax: null };
  return result.baseline.flatMap((base, k) => [
    { panel, years: base.years, curve: CURVES[0], prefixes: base.prefixes, ...none },
    { panel, years: base.years, curve: CURVES[1], prefixes: result.slow.series[k].prefixes, ...band(result.slow, k) },
    { panel, years: base.years, curve: CURVES[2], prefixes: result.fast.series[k].prefixes, ...band(result.fast, k) },
    { panel, years: base.years, curve: CURVES[3], prefixes: base.lowerBound, ...none },
  ]);
}

function lastYearOf(result: ScenarioResult): number {
  return result.baseline[result.baseline.length - 1].years;
}

const SIM_NOTE = 'shaded: per-AS simulation, heavy-tailed prefix counts, min-max over seeds';

function layers(lastYear: number): NonNullable<Extract<TopLevelSpec, { layer: unknown }>['layer']> {
  const x = {
    field: 'years',
    type: 'quantitative' as const,
    title: 'years from the start of deployment',
    // Whole years only: vega would otherwise tick at 0.2-year steps.
    axis: { values: Array.from({ length: Math.floor(lastYear) + 1 }, (_, i) => i) },
  };
  const curveScale = { field: 'curve', type: 'nominal' as const, sort: [...CURVES] };
  return [
    // One band per simulated schedule, each with a fixed colour rather than a colour scale, so
    // that the legend (driven by the lines' scale) shows lines and dashes only.
    ...[1, 2].map((i) => ({
      transform: [{ filter: { field: 'curve', equal: CURVES[i] } }],
      mark: { type: 'area' as const, opacity: 0.18, color: COLORS[i] },
      encoding: { x, y: { field: 'simMin', type: 'quantitative' as const }, y2: { field: 'simMax' } },
    })),
    {
      mark: { type: 'line', point: { size: 22 }, strokeWidth: 2 },
      encoding: {
        x,
        y: {
          field: 'prefixes',
          type: 'quantitative',
          title: 'prefixes of multihomed stub ASes',
          // "90K" as the paper writes it, rather than d3's SI "90k" or "0k".
          axis: { labelExpr: "datum.value === 0 ? '0' : format(datum.value / 1000, 'd') + 'K'" },
        },
        color: { ...curveScale, title: null, scale: { domain: [...CURVES], range: COLORS }, legend: { symbolType: 'stroke' } },
        strokeDash: { ...curveScale, title: null, scale: { domain: [...CURVES], range: DASHES } },
      },
    },
  ];
}

const CONFIG = {
  font: 'sans-serif',
  background: 'white',
  title: { fontSize: 15, subtitleFontSize: 12, subtitleColor: '#444', anchor: 'start' },
  axis: { labelFontSize: 12, titleFontSize: 12 },
  legend: { orient: 'bottom', labelFontSize: 12, columns: 2, symbolStrokeWidth: 2.5, symbolSize: 300, labelLimit: 0, columnPadding: 30 },
} as const;

export function headlineSpec(result: ScenarioResult, subtitle: string): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: {
      text: 'Multihomed stub-AS prefixes in the global table, first deployment step',
      subtitle: [subtitle, SIM_NOTE],
    },
    width: 640,
    height: 340,
    data: { values: rowsOf(result, '') },
    config: CONFIG,
    layer: layers(lastYearOf(result)),
  };
}

export function readingsSpec(panels: readonly { title: string; result: ScenarioResult }[]): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: {
      text: 'How each reading of the schedule fares against the paper (rows: reading; columns: growth)',
      subtitle: ['paper: ~30K after 5 years at 10%, after ~2.5 years at 20%', SIM_NOTE],
    },
    data: { values: panels.flatMap((p) => rowsOf(p.result, p.title)) },
    config: CONFIG,
    facet: {
      field: 'panel',
      type: 'nominal',
      title: null,
      sort: panels.map((p) => p.title),
      header: { labelFontSize: 12, labelLimit: 400 },
    },
    columns: 2,
    spec: { width: 400, height: 200, layer: layers(Math.max(...panels.map((p) => lastYearOf(p.result)))) },
  };
}
