/**
 * CPU use of processes from /proc/PID/stat: (utime + stime) deltas over wall time, in percent of one
 * core (a multi-threaded process such as Nebula can exceed 100).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

let ticks: number | undefined;

/** Clock ticks per second (USER_HZ), almost always 100. */
export function clockTicks(): number {
  if (ticks === undefined) {
    try {
      const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
      ticks = Number.isFinite(n) && n > 0 ? n : 100;
    } catch {
      ticks = 100;
    }
  }
  return ticks;
}

/** CPU seconds (user + system, all threads) a process has used, or null when it is gone. */
export function readCpuSeconds(pid: number): number | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name (field 2) may hold spaces and parentheses: the fields we want follow the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) return null;
  return (utime + stime) / clockTicks();
}

/** Samples the CPU use of several processes from now until stop(). */
export interface CpuSampler {
  /** Percent of one core per name over the interval; null when a process was gone at either end. */
  stop(): Record<string, number | null>;
}

export function sampleCpu(pids: Readonly<Record<string, number>>): CpuSampler {
  const t0 = performance.now();
  const start = Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, readCpuSeconds(pid)]));
  return {
    stop() {
      const wall = (performance.now() - t0) / 1000;
      const out: Record<string, number | null> = {};
      for (const [name, pid] of Object.entries(pids)) {
        const a = start[name];
        const b = readCpuSeconds(pid);
        out[name] = a === null || a === undefined || b === null || wall <= 0 ? null : (100 * (b - a)) / wall;
      }
      return out;
    },
  };
}

/** CPU percent of one process over `ms` milliseconds. */
export async function cpuPercent(pid: number, ms: number): Promise<number | null> {
  const s = sampleCpu({ p: pid });
  await new Promise((r) => setTimeout(r, ms));
  return s.stop().p ?? null;
}
