import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../shared/clock.ts';
import { silentLogger } from '../../shared/log.ts';
import { generateKeyPair } from '../../shared/crypto/ed25519.ts';
import { parsePrefix } from '../../shared/ids.ts';
import { signBinding } from '../../shared/binding.ts';
import { BindingStore, StoredBinding } from '../../mapping-server/store/bindings.ts';
import { idKey } from '../../shared/ids.ts';

const prefix = parsePrefix('fd00:1::/32');
const locators = [{ address: '192.0.2.1', port: 4341, uplink: 'ispa', priority: 1, weight: 1, state: 'up' as const }];

function open(path: string, clock: ManualClock, batchMax = 1000): BindingStore {
  return new BindingStore({ path, synchronous: 'full', batchWindowMs: 1, batchMax, clock, log: silentLogger, describe: () => ({ ttl: 60, prefs: [] }) });
}

function rec(seq: number, expiresAt: number) {
  const k = generateKeyPair();
  const b = signBinding(k, { prefix, locators, seq, ttl: 60 });
  return { key: idKey(b.hostId.toBytes()), b, r: new StoredBinding(b.bytes, seq, expiresAt, 60, []) };
}

describe('binding store', () => {
  it('acknowledges only after commit, one transaction per batch', async () => {
    const clock = new ManualClock(1000);
    const s = open(':memory:', clock);
    const acks: number[] = [];
    for (let i = 0; i < 10; i++) {
      const x = rec(1, 100_000);
      s.put(x.key, x.r, (err) => {
        expect(err).toBeNull();
        acks.push(i);
      });
    }
    // In memory at once (lookups and sequence checks see it), acknowledged only after the commit.
    expect(s.size).toBe(10);
    expect(acks).toEqual([]);
    await new Promise((r) => setTimeout(r, 20));
    expect(acks).toHaveLength(10);
    expect(s.counters.commits).toBe(1);
    expect(s.counters.rowsWritten).toBe(10);
    s.close();
  });

  it('commits at once when a batch is full', () => {
    const s = open(':memory:', new ManualClock(0), 4);
    let acked = 0;
    for (let i = 0; i < 8; i++) {
      const x = rec(1, 100_000);
      s.put(x.key, x.r, () => acked++);
    }
    expect(acked).toBe(8);
    expect(s.counters.commits).toBe(2);
    s.close();
  });

  it('reloads live rows after reopening, skips expired ones, keeps tombstones for the sequence check', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rn-store-'));
    const path = join(dir, 'rm.db');
    const clock = new ManualClock(1000);
    const s1 = open(path, clock);
    const live = rec(5, 50_000);
    const dead = rec(7, 2_000);
    const gone = rec(9, 50_000);
    s1.put(live.key, live.r, () => {});
    s1.put(dead.key, dead.r, () => {});
    s1.put(gone.key, gone.r, () => {});
    s1.flush();
    s1.expire(gone.key);
    s1.close();

    clock.set(10_000);
    const s2 = open(path, clock);
    expect(s2.load()).toBe(1);
    expect(s2.get(live.key)?.seq).toBe(5);
    expect(Buffer.from(s2.get(live.key)!.bytes)).toEqual(Buffer.from(live.b.bytes));
    expect(s2.get(dead.key)).toBeUndefined();
    // Not live, but its sequence number still blocks a replay of an older binding.
    expect(s2.held(gone.key)?.seq).toBe(9);
    expect(s2.held(dead.key)?.seq).toBe(7);
    s2.close();
  });

  it('refresh extends the expiry durably', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rn-store-'));
    const path = join(dir, 'rm.db');
    const clock = new ManualClock(0);
    const s1 = open(path, clock);
    const x = rec(1, 1_000);
    s1.put(x.key, x.r, () => {});
    s1.refresh(x.key, 90_000, () => {});
    s1.close();
    clock.set(5_000);
    const s2 = open(path, clock);
    expect(s2.load()).toBe(1);
    expect(s2.get(x.key)?.expiresAt).toBe(90_000);
    s2.close();
  });

  it('gives STORE_FAILED for a path it cannot open', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rn-store-'));
    writeFileSync(join(dir, 'file'), '');
    expect(() => open(join(dir, 'file', 'rm.db'), new ManualClock(0))).toThrow(/cannot open the RM store/);
  });
});
