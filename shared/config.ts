import { readFileSync } from 'node:fs';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { z } from 'zod';
import { addressFamily } from './address.ts';
import { ConfigError } from './errors.ts';

/**
 * Config is read once at start-up: YAML → zod schema → a deeply frozen typed object. Every problem
 * becomes one line naming the key, what is wrong and, where the schema says so, an example:
 *   config error: uplinks[1].locator: "10.0.0.300" is not an IPv4 or IPv6 address
 */
export function loadConfigFile<S extends z.ZodType>(schema: S, file: string): DeepReadonly<z.output<S>> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError(
      `config error: cannot read ${file}: ${code === 'ENOENT' ? 'no such file' : String(code ?? e)}`,
      'pass an existing YAML file with --config (see examples/ for a commented one)',
      'CONFIG_NOT_FOUND',
    );
  }
  return parseConfigText(schema, text, file);
}

export function parseConfigText<S extends z.ZodType>(schema: S, text: string, file = 'config'): DeepReadonly<z.output<S>> {
  let raw: unknown;
  try {
    raw = parseYaml(text, { prettyErrors: true });
  } catch (e) {
    const msg = e instanceof YAMLParseError ? e.message.split('\n')[0] : String(e);
    throw new ConfigError(`config error: ${file} is not valid YAML: ${msg}`, 'check indentation and quoting at that line');
  }
  return parseConfigObject(schema, raw ?? {});
}

export function parseConfigObject<S extends z.ZodType>(schema: S, raw: unknown): DeepReadonly<z.output<S>> {
  const r = schema.safeParse(raw, { reportInput: true });
  if (!r.success) {
    const lines = r.error.issues.map((i) => `config error: ${formatPath(i.path)}: ${describeIssue(i)}`);
    // One line per problem; the first line is the error message so that a single-line printer shows it.
    throw new ConfigError(lines.join('\n'));
  }
  return deepFreeze(r.data) as DeepReadonly<z.output<S>>;
}

function formatPath(path: readonly PropertyKey[]): string {
  if (path.length === 0) return '(top level)';
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? String(p) : `.${String(p)}`;
  return out;
}

function describeIssue(i: z.core.$ZodIssue): string {
  const raw = 'input' in i ? (i as { input?: unknown }).input : undefined;
  // Quote scalar values only; a whole object (from a cross-field check) would drown the message.
  const input = raw !== null && typeof raw === 'object' ? undefined : raw;
  if (i.code === 'invalid_type' && raw === undefined) return `is missing (${i.message.replace(/^Invalid input: /, '')})`;
  if (i.code === 'unrecognized_keys') return `unknown key${i.keys.length > 1 ? 's' : ''} ${i.keys.map((k) => `"${k}"`).join(', ')} (check the spelling)`;
  if (input !== undefined && i.code === 'custom') return `${JSON.stringify(input)} ${i.message}`;
  return input !== undefined ? `${JSON.stringify(input)}: ${i.message}` : i.message;
}

export type DeepReadonly<T> = T extends (infer U)[]
  ? readonly DeepReadonly<U>[]
  : T extends object
    ? { readonly [K in keyof T]: DeepReadonly<T[K]> }
    : T;

export function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o as Record<string, unknown>)) deepFreeze(v);
  }
  return o;
}

// Validators shared by every program's schema. The messages read after the quoted value.
export function isIpAddress(s: string): boolean {
  return addressFamily(s) !== 0;
}
export function isIpv6Address(s: string): boolean {
  return addressFamily(s) === 6;
}
export function isIpv6Prefix(s: string): boolean {
  if (!s.includes('/')) return false;
  const [a, len] = s.split('/');
  const n = Number(len);
  return addressFamily(a) === 6 && Number.isInteger(n) && n >= 0 && n <= 128;
}
export const MSG = {
  ip: 'is not an IPv4 or IPv6 address (e.g. 192.0.2.1 or 2001:db8::1)',
  ipv6: 'is not an IPv6 address (host IDs are IPv6, e.g. fd00:1::a)',
  ipv6Prefix: 'is not an IPv6 prefix (e.g. fd00::/8)',
  port: 'is not a UDP port (1-65535)',
  ifname: 'is not a Linux interface name (1-15 characters, no "/" or spaces, e.g. rn0)',
} as const;
export function isInterfaceName(s: string): boolean {
  return /^[^\s/:]{1,15}$/.test(s);
}

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

/** "127.0.0.1:9721", "[::1]:9721" or "0.0.0.0:9721"; null if it is none of those. */
export function parseListen(s: string): ListenAddress | null {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([0-9.]+)):(\d{1,5})$/.exec(s);
  if (m === null) return null;
  const host = m[1] ?? m[2];
  const port = Number(m[3]);
  if (addressFamily(host) === 0 || port < 1 || port > 65_535) return null;
  return { host, port };
}

/** The `metrics` section of both configs (shared/prometheus.ts serves it). */
export const metricsConfigSchema = z
  .strictObject({
    /** Where GET /metrics is served; absent: no endpoint. It shows counters only, never keys or IDs' locators, but bind it to a management address anyway. */
    listen: z
      .string()
      .refine((s) => parseListen(s) !== null, { message: 'is not an address and port to listen on (e.g. 127.0.0.1:9721 or [::1]:9721)' })
      .optional(),
  })
  .prefault({});

/** Two values of one schema's config compare equal (zod writes keys in the schema's order). */
export function sameConfig(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * What a reload (SIGHUP) cannot apply, for both programs: the top-level keys whose values changed,
 * other than the `live` ones, and log.format (the log level is live; the format is the logger's
 * own). Sorted, for one stable log line.
 */
export function restartNeeded<T extends { readonly log: { readonly format: string } }>(running: T, next: T, live: ReadonlySet<string>): string[] {
  const out: string[] = [];
  for (const k of new Set([...Object.keys(running), ...Object.keys(next)])) {
    if (!live.has(k) && !sameConfig(running[k as keyof T], next[k as keyof T])) out.push(k);
  }
  if (running.log.format !== next.log.format) out.push('log.format');
  return out.sort();
}
