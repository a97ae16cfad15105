/** Output of benchmarks: an aligned text table for people, JSON in bench-results/ for machines. */
import { mkdir, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

export type Cell = string | number | null | undefined;

/** The folder results go to (git-ignored). */
export const RESULTS_DIR = fileURLToPath(new URL('../../bench-results/', import.meta.url));

/** A number with `digits` decimals, or '—' for a missing value. */
export function fmt(n: number | null | undefined, digits = 2): string {
  return n === null || n === undefined || !Number.isFinite(n) ? '—' : n.toFixed(digits);
}

/** Columns of numbers are right-aligned, the rest left-aligned (unless `align` says otherwise). */
export function formatTable(headers: readonly string[], rows: readonly (readonly Cell[])[], align?: readonly ('l' | 'r')[]): string {
  const text = rows.map((r) => headers.map((_, i) => cellText(r[i])));
  const widths = headers.map((h, i) => Math.max(h.length, ...text.map((r) => r[i]?.length ?? 0)));
  const right = headers.map((_, i) => (align?.[i] ?? (rows.some((r) => typeof r[i] === 'number') ? 'r' : 'l')) === 'r');
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (right[i] ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...text.map(line)].join('\n');
}

function cellText(c: Cell): string {
  if (c === null || c === undefined) return '—';
  if (typeof c === 'number') return Number.isInteger(c) ? String(c) : c.toFixed(2);
  return c;
}

export function printTable(headers: readonly string[], rows: readonly (readonly Cell[])[], align?: readonly ('l' | 'r')[]): void {
  console.log(formatTable(headers, rows, align));
}

/** Writes `bench-results/NAME.json` and returns its path. */
export async function writeResults(name: string, data: unknown): Promise<string> {
  if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw new Error(`result name "${name}" must be a plain file name`);
  await mkdir(RESULTS_DIR, { recursive: true });
  const file = join(RESULTS_DIR, `${name}.json`);
  await writeFile(file, JSON.stringify(data, null, 2) + '\n');
  return file;
}

/** The median of a list (mean of the middle two for an even count), or null when empty. */
export function median(xs: readonly number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] ?? null) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2;
}

/** A bad benchmark flag: run() prints its message as one line and exits 2. */
export class UsageProblem extends Error {}

/**
 * The bench cannot give honest figures (a reference's tool is missing or it does not come up):
 * run() prints its message as one line and exits 1, after the bench has removed what it built.
 */
export class BenchStopped extends Error {}
