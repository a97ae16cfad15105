/** Plain-text tables for the terminal and for pasting into the document (GitHub markdown). */
import { BOUND_CLAIM, type ClaimCheck } from './claims.ts';
import type { ScenarioResult } from './evaluate.ts';
import type { ScenarioVerdict } from './report.ts';
import type { Spread } from './stats.ts';

export function formatTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  // Numbers right-aligned, the first (label) column left-aligned, so columns of digits line up.
  const line = (cells: readonly string[]): string =>
    `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (i === 0 ? `:${'-'.repeat(w + 1)}` : `${'-'.repeat(w + 1)}:`)).join('|')}|`;
  return [line(headers), rule, ...rows.map(line)].join('\n');
}

const integer = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

export function prefixes(x: number): string {
  return integer.format(x);
}

function meanSd(s: Spread): string {
  return `${integer.format(s.mean)} ± ${integer.format(s.sd)}`;
}

function years(x: number | null): string {
  return x === null ? 'never' : x.toFixed(1);
}

function percent(x: number | null): string {
  return x === null ? 'n/a' : `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)}%`;
}

/** Half-year by half-year: the four curves of the figure, and the simulation beside them. */
export function halfYearTable(result: ScenarioResult): string {
  const rows = result.baseline.map((base, k) => [
    base.years.toFixed(1),
    prefixes(base.prefixes),
    prefixes(result.slow.series[k].prefixes),
    prefixes(result.fast.series[k].prefixes),
    prefixes(base.lowerBound),
    meanSd(result.slow.simulation.perHalfYear[k]),
    meanSd(result.fast.simulation.perHalfYear[k]),
  ]);
  return formatTable(
    ['years', 'no deployment', '10%/half-year', '20%/half-year', 'lower bound', 'sim 10% (mean ± sd)', 'sim 20% (mean ± sd)'],
    rows,
  );
}

/** One line per reading: the numbers the paper's claims are judged on. */
export function readingsTable(verdicts: readonly ScenarioVerdict[]): string {
  const rows = verdicts.map(({ result: r, claims, reproducesHeadline, reproducesAll }) => [
    r.scenario.id,
    prefixes(r.slow.prefixesAt5y),
    years(r.slow.yearsToFloor),
    prefixes(r.fast.prefixesAtFastYears),
    years(r.fast.yearsToFloor),
    `${(r.slow.deployedShareAt5y * 100).toFixed(0)}%`,
    years(claims.find((c) => c.id === BOUND_CLAIM)?.model ?? null),
    reproducesHeadline ? 'yes' : 'no',
    reproducesAll ? 'yes' : 'no',
  ]);
  return formatTable(
    ['scenario', '10%: 5y', '10%: yrs to floor', '20%: 2.5y', '20%: yrs to floor', 'deployed 5y', 'below bound at', 'headline', 'all claims'],
    rows,
  );
}

export function claimsTable(claims: readonly ClaimCheck[]): string {
  const value = (x: number | null, unit: ClaimCheck['unit']): string => {
    if (x === null) return 'never';
    if (unit === 'prefixes') return prefixes(x);
    if (unit === 'share') return `${(x * 100).toFixed(0)}%`;
    return x.toFixed(1);
  };
  const rows = claims.map((c) => [
    c.claim,
    value(c.paper, c.unit),
    value(c.model, c.unit),
    percent(c.relativeError),
    c.holds ? 'yes' : 'NO',
  ]);
  return formatTable(['paper says', 'paper', 'model', 'difference', 'reproduced'], rows);
}
