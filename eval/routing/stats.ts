/** Mean and spread over simulation seeds. */
export interface Spread {
  mean: number;
  /** Sample standard deviation (n - 1); 0 for a single value. */
  sd: number;
  min: number;
  max: number;
}

export function spread(values: readonly number[]): Spread {
  if (values.length === 0) throw new RangeError('spread of no values');
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const squares = values.reduce((sum, v) => sum + (v - mean) ** 2, 0);
  return {
    mean,
    sd: values.length > 1 ? Math.sqrt(squares / (values.length - 1)) : 0,
    min: values.reduce((a, b) => Math.min(a, b), Infinity),
    max: values.reduce((a, b) => Math.max(a, b), -Infinity),
  };
}

/** Like spread, for values that may be missing ("never within the horizon"). */
export interface OptionalSpread {
  spread: Spread | null;
  missing: number;
}

export function optionalSpread(values: readonly (number | null)[]): OptionalSpread {
  const present = values.filter((v): v is number => v !== null);
  return { spread: present.length > 0 ? spread(present) : null, missing: values.length - present.length };
}

export function relativeError(model: number, paper: number): number {
  return (model - paper) / paper;
}
