import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

export interface LogOptions {
  level: LevelWithSilent;
  /** 'json' for machines (one object per line), 'pretty' for a terminal. */
  format: 'json' | 'pretty';
  /** Where lines go; standard error by default so standard output stays for command results. */
  destination?: NodeJS.WritableStream;
}

/**
 * The root logger. Modules get child loggers at wiring time (`log.child({ module: 'uplinks' })`) and
 * use the field names of the glossary: hostId, locator, uplink, binding, realm.
 */
export function createLogger(opts: LogOptions): Logger {
  const dest = opts.destination ?? process.stderr;
  if (opts.format === 'pretty') {
    // A small built-in formatter: `HH:MM:SS.mmm LEVEL module: msg key=value …`. pino-pretty would be
    // another dependency for the same thing.
    return pino({ level: opts.level, base: undefined, timestamp: pino.stdTimeFunctions.epochTime }, prettyStream(dest));
  }
  return pino({ level: opts.level, base: undefined, timestamp: pino.stdTimeFunctions.isoTime }, dest as pino.DestinationStream);
}

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

function prettyStream(dest: NodeJS.WritableStream): pino.DestinationStream {
  return {
    write(line: string): void {
      let rec: Record<string, unknown>;
      try {
        rec = JSON.parse(line) as Record<string, unknown>;
      } catch {
        dest.write(line);
        return;
      }
      const { time, level, msg, module, ...rest } = rec;
      const t = new Date(typeof time === 'number' ? time : Date.now()).toISOString().slice(11, 23);
      const lvl = (LEVELS[level as number] ?? String(level)).padEnd(5);
      const mod = typeof module === 'string' ? `${module}: ` : '';
      const extra = Object.entries(rest)
        .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
        .join(' ');
      dest.write(`${t} ${lvl} ${mod}${String(msg ?? '')}${extra ? ' ' + extra : ''}\n`);
    },
  };
}

/** For tests and library use: a logger that writes nothing. */
export const silentLogger: Logger = pino({ level: 'silent' });
