import { closeSync, fstatSync, openSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { spawner } from '../../shared/ip.ts';

/** The native command runner behind shared/ip.ts (shared/native/spawn.cc), run with other commands. */
const runner = spawner();

describe('native command runner (shared/native/spawn.cc)', () => {
  it('feeds stdin, collects stdout and stderr, and reports the exit code', async () => {
    const r = await runner.run('sh', ['-c', 'cat; echo oops >&2; exit 3'], 'line 1\nline 2\n', 5_000, 1 << 20);
    expect(r.errno).toBe(0);
    expect(r.code).toBe(3);
    expect(r.stdout.toString()).toBe('line 1\nline 2\n');
    expect(r.stderr.toString()).toBe('oops\n');
  });

  it('kills a command at its deadline', async () => {
    const r = await runner.run('sleep', ['10'], null, 200, 1 << 20);
    expect(r.code).toBe(-1);
    expect(r.signal).toBe(9);
  });

  it('says ENOENT for a command that does not exist', async () => {
    const r = await runner.run('realmnet-no-such-command', [], null, 1_000, 1 << 20);
    expect(r.errno).toBe(2);
  });

  // The runner closes its end of the command's stdin as soon as the input is written, while the
  // command still runs. Closing that fd number a second time when the command ends (as it once did)
  // closes whatever the process opened in between under the same number: the agent's stop then hung
  // on another command whose pipe had been closed that way. Files opened here while the commands run
  // get the lowest free numbers, that one among them, and must all still be open afterwards.
  it('closes each of its fds once: what the process opens meanwhile stays open', async () => {
    for (let round = 0; round < 5; round++) {
      const runs = Array.from({ length: 3 }, () => runner.run('sh', ['-c', 'sleep 0.2; cat'], 'x'.repeat(100), 5_000, 1 << 20));
      await new Promise((r) => setTimeout(r, 100));
      const fds = Array.from({ length: 8 }, () => openSync('/dev/null', 'r'));
      const results = await Promise.all(runs);
      for (const r of results) expect(r.stdout.toString()).toBe('x'.repeat(100));
      const closed = fds.filter((fd) => {
        try {
          fstatSync(fd);
          return false;
        } catch {
          return true;
        }
      });
      expect(closed, `round ${round}: fds closed by the runner`).toEqual([]);
      for (const fd of fds) closeSync(fd);
    }
  });
});
