import { readFileSync } from 'node:fs';

/** The package version (package.json), for --version, logs and the metrics' info line. */
export const VERSION: string = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
