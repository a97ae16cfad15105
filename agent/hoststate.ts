import { readFileSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
import { z } from 'zod';
import { ConfigError } from '../shared/errors.ts';

/**
 * What this host must never reuse across restarts: the last binding sequence number it signed and a
 * ceiling above every message counter it used with its peers. Both start from the clock (ms, µs), so a
 * host whose clock was once ahead and is now right would start below what the RM and its peers hold:
 * the RM would refuse its bindings as stale and its peers would drop its probes as replays until the
 * clock caught up. The file keeps both numbers; the agent starts above them.
 *
 * It also keeps the host's realm trust once it has joined (docs/security.md, decision 3): the realm
 * keys it pinned and its current membership certificate, so a restart needs neither the join token
 * (spent: the RM would refuse it) nor a configured RM key.
 *
 * Counters are reserved in blocks: the ceiling is written before a block is used, so a crash never
 * loses a counter that went out. Writes are asynchronous (a temporary file renamed over the old one,
 * mode 0600) so the event loop never waits for the disk; the sequence number is also protected by the
 * RM (a stale registration is signed again above the number it reports).
 */
export const COUNTER_BLOCK = 2 ** 32;

export interface HostState {
  /** Last binding sequence number signed (0: none). */
  readonly seq: number;
  /** Every message counter used so far is below this. */
  readonly counterCeiling: number;
  /** Realm keys pinned (base64), from a join or the config; absent before the first session. */
  readonly realmKeys?: readonly string[];
  /** The current membership certificate (base64). */
  readonly cert?: string;
  /** Unix seconds: the first certificate's notBefore. */
  readonly memberSince?: number;
}

const b64 = z.string().regex(/^[A-Za-z0-9+/=]+$/);
const Schema = z.strictObject({
  seq: z.number().int().min(0),
  counterCeiling: z.number().int().min(0),
  realmKeys: z.array(b64).optional(),
  cert: b64.optional(),
  memberSince: z.number().int().min(0).optional(),
});

export interface HostStateStore {
  load(): HostState;
  save(s: HostState): void;
}

/** In memory only (tests, static mode). */
export function memoryHostState(initial: HostState = { seq: 0, counterCeiling: 0 }): HostStateStore {
  let held = initial;
  return { load: () => held, save: (s) => void (held = s) };
}

/** A JSON file; a missing file is a fresh host, a corrupt one a config error (one line, how to fix). */
export function fileHostState(path: string, onError: (e: Error) => void): HostStateStore {
  let writing: Promise<void> = Promise.resolve();
  // What was saved last: load() after save() must see it even before the write landed (callers
  // update one field with { ...load(), field }).
  let held: HostState | null = null;
  return {
    load() {
      if (held !== null) return held;
      let text: string;
      try {
        text = readFileSync(path, 'utf8');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { seq: 0, counterCeiling: 0 };
        throw e;
      }
      let raw: unknown;
      try {
        raw = JSON.parse(text);
      } catch {
        raw = null;
      }
      const r = Schema.safeParse(raw);
      if (!r.success) throw new ConfigError(`config error: identity.state: ${path} is not a realmnet state file`, 'remove it (the agent then starts its numbers from the clock) or point identity.state elsewhere');
      held = r.data;
      return r.data;
    },
    save(s) {
      held = s;
      // Writes are chained: the last one wins, and two never interleave.
      writing = writing.then(async () => {
        const tmp = `${path}.tmp`;
        await writeFile(tmp, JSON.stringify(s) + '\n', { mode: 0o600 });
        await rename(tmp, path);
      }).catch(onError);
    },
  };
}

/** Pure: the first counter to use now and the ceiling to write before using it. */
export function counterStart(held: HostState, wallClockMs: number): { base: number; ceiling: number } {
  const base = Math.max(Math.floor(wallClockMs * 1000), held.counterCeiling);
  return { base, ceiling: base + COUNTER_BLOCK };
}
