/**
 * The readings of the paper's schedule that the evaluation compares. The paper leaves three
 * things open: whether "10% deploy" is a share of all ASes or of those not yet deployed, whether
 * a deployed AS still announces one prefix, and whether the 8.45% growth is part of the
 * deployment curves. Each combination is a scenario; claims.ts says which ones match the paper.
 */
import type { GrowthModel, ScheduleReading } from './params.ts';

export interface Scenario {
  id: string;
  label: string;
  /** For figure panels, where the full label does not fit. */
  shortLabel: string;
  reading: ScheduleReading;
  prefixesPerDeployedAs: number;
  growth: GrowthModel;
}

interface Reading {
  reading: ScheduleReading;
  prefixesPerDeployedAs: number;
  id: string;
  label: string;
  short: string;
}

const READINGS: readonly Reading[] = [
  { reading: 'share-of-all', prefixesPerDeployedAs: 1, id: 'all-keep1', label: 'share of all ASes, deployed AS keeps 1 prefix', short: 'of all, keeps 1 prefix' },
  { reading: 'share-of-remaining', prefixesPerDeployedAs: 1, id: 'remaining-keep1', label: 'share of undeployed ASes, deployed AS keeps 1 prefix', short: 'of undeployed, keeps 1 prefix' },
  { reading: 'share-of-remaining', prefixesPerDeployedAs: 0, id: 'remaining-drop', label: 'share of undeployed ASes, deployed AS announces nothing (0.9^k)', short: 'of undeployed, announces 0' },
  { reading: 'share-of-all', prefixesPerDeployedAs: 0, id: 'all-drop', label: 'share of all ASes, deployed AS announces nothing', short: 'of all, announces 0' },
];

const GROWTHS: readonly { growth: GrowthModel; label: string; short: string }[] = [
  { growth: 'none', label: 'no growth', short: 'no growth' },
  { growth: 'linear', label: '+8.45%/yr linear growth', short: '+8.45%/yr' },
  { growth: 'compound', label: '+8.45%/yr compound growth', short: '+8.45%/yr compound' },
];

export const SCENARIOS: readonly Scenario[] = READINGS.flatMap((r) =>
  GROWTHS.map((g) => ({
    id: `${r.id}-${g.growth === 'none' ? 'nogrowth' : g.growth}`,
    label: `${r.label}; ${g.label}`,
    shortLabel: `${r.short}; ${g.short}`,
    reading: r.reading,
    prefixesPerDeployedAs: r.prefixesPerDeployedAs,
    growth: g.growth,
  })),
);

export function scenarioById(id: string): Scenario {
  const found = SCENARIOS.find((s) => s.id === id);
  if (found === undefined) throw new RangeError(`no scenario ${id}`);
  return found;
}
