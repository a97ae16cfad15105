import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { UplinkTable, applyUplinkEvent } from '../../agent/uplinks/table.ts';
import { COUNTER_BLOCK, counterStart, fileHostState } from '../../agent/hoststate.ts';
import { ConfigError } from '../../shared/errors.ts';
import type { UdpBatchSocket } from '../../shared/udp/socket.ts';

const socket = {} as UdpBatchSocket;
const table = () =>
  new UplinkTable([
    { name: 'ispa', interface: 'eth-a', locator: '192.0.2.1', family: 4, priority: 1, weight: 1, up: true, socket },
    { name: 'ispb', interface: 'eth-b', locator: '198.51.100.1', family: 4, priority: 2, weight: 1, up: true, socket },
  ]);

describe('uplink table', () => {
  it('publishes frozen snapshots; an event that changes nothing keeps the snapshot and tells nobody', () => {
    const t = table();
    const first = t.current;
    expect(Object.isFrozen(first)).toBe(true);
    expect(Object.isFrozen(first[0])).toBe(true);
    const seen: [boolean, boolean][] = [];
    t.onChange((now, before) => void seen.push([now[0].up, before[0].up]));
    expect(t.apply({ kind: 'link', name: 'ispa', usable: true })).toBe(false);
    expect(t.current).toBe(first);
    expect(t.apply({ kind: 'link', name: 'ispa', usable: false })).toBe(true);
    expect(seen).toEqual([[false, true]]);
    // The old snapshot is untouched: whoever holds it reads a consistent past.
    expect(first[0].up).toBe(true);
    expect(t.current[1]).toBe(first[1]);
  });

  it('applies the realm policy to priorities and weights; unknown names change nothing', () => {
    const s = table().current;
    const p = applyUplinkEvent(s, { kind: 'policy', name: 'ispb', priority: 255, weight: 3 });
    expect(p[1]).toMatchObject({ priority: 255, weight: 3, up: true, index: 1 });
    expect(applyUplinkEvent(s, { kind: 'link', name: 'nope', usable: false })).toBe(s);
  });
});

describe('host state (sequence number and message counter across restarts)', () => {
  it('starts the counter above the kept ceiling even when the clock is behind', () => {
    const ahead = { seq: 5, counterCeiling: 9e15 };
    expect(counterStart(ahead, 1_000).base).toBe(9e15);
    expect(counterStart(ahead, 1_000).ceiling).toBe(9e15 + COUNTER_BLOCK);
    expect(counterStart({ seq: 0, counterCeiling: 0 }, 2_000).base).toBe(2_000_000);
  });

  it('round-trips through its file, mode 0600, and names a corrupt file in one line', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'realmnet-state-'));
    try {
      const path = join(dir, 'host.state');
      const errors: Error[] = [];
      const st = fileHostState(path, (e) => void errors.push(e));
      expect(st.load()).toEqual({ seq: 0, counterCeiling: 0 });
      st.save({ seq: 7, counterCeiling: 42 });
      st.save({ seq: 8, counterCeiling: 43 });
      for (let i = 0; i < 50 && (await readFile(path, 'utf8').catch(() => '')).indexOf('"seq":8') < 0; i++) await new Promise((r) => setTimeout(r, 10));
      expect(fileHostState(path, () => undefined).load()).toEqual({ seq: 8, counterCeiling: 43 });
      expect(errors).toEqual([]);
      await writeFile(path, 'garbage');
      expect(() => fileHostState(path, () => undefined).load()).toThrow(ConfigError);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
