/**
 * npm run bench -- NAME [options]
 *
 * Runs the exported `run(argv)` of scripts/bench/NAME.ts. A benchmark is any file here that exports
 * `run`; the others (iperf, cpu, table, nebula, wireguard) are helpers. An unknown NAME prints one line with
 * the available ones and exits 2; so does a bad option (a UsageProblem thrown by the bench). A
 * BenchStopped (no honest figures possible, e.g. a reference's tool is missing) prints one line and exits 1.
 */
import { readdir } from 'node:fs/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { BenchStopped, UsageProblem } from './table.ts';

export type BenchRun = (argv: string[]) => Promise<number | void>;

const DIR = fileURLToPath(new URL('.', import.meta.url));

async function load(name: string): Promise<BenchRun | undefined> {
  const mod: Record<string, unknown> = await import(pathToFileURL(join(DIR, `${name}.ts`)).href);
  const run = mod.run;
  return typeof run === 'function' ? (run as BenchRun) : undefined;
}

/** Names of the files in scripts/bench that export run(). */
export async function availableBenches(): Promise<string[]> {
  const names = (await readdir(DIR)).filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts') && f !== 'run.ts').map((f) => f.slice(0, -3));
  const out: string[] = [];
  for (const n of names.sort()) if ((await load(n)) !== undefined) out.push(n);
  return out;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  const available = await availableBenches();
  if (name === undefined || !available.includes(name)) {
    const what = name === undefined ? 'no benchmark named' : `unknown benchmark "${name}"`;
    console.error(`bench: ${what}; available: ${available.join(', ')} (npm run bench -- NAME [options])`);
    return 2;
  }
  const run = await load(name);
  if (run === undefined) return 2;
  try {
    const code = await run(rest);
    return typeof code === 'number' ? code : 0;
  } catch (e) {
    if (e instanceof BenchStopped) {
      console.error(`bench ${name}: ${e.message}`);
      return 1;
    }
    if (!(e instanceof UsageProblem)) throw e;
    console.error(`bench ${name}: ${e.message}`);
    return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
    process.exit(1);
  },
);
