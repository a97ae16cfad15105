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
  const children = new Set<WeakRef<Logger>>();
  const onChild = (c: Logger): void => {
    children.add(new WeakRef(c));
    // Children made per session or request come and go: forget the collected ones now and then.
    if (children.size % 1024 === 0) for (const ref of children) if (ref.deref() === undefined) children.delete(ref);
  };
  const root =
    opts.format === 'pretty'
      ? // A small built-in formatter: `HH:MM:SS.mmm LEVEL module: msg key=value …`. pino-pretty would be
        // another dependency for the same thing.
        pino({ level: opts.level, base: undefined, timestamp: pino.stdTimeFunctions.epochTime, onChild }, prettyStream(dest))
      : pino({ level: opts.level, base: undefined, timestamp: pino.stdTimeFunctions.isoTime, onChild }, dest as pino.DestinationStream);
  families.set(root, children);
  return root;
}

/** Each root logger's children (and theirs), weakly: a child copies its level when it is made. */
const families = new WeakMap<Logger, Set<WeakRef<Logger>>>();

/** Sets the level of a root logger and of every child made from it (a reload's new log.level). */
export function setLogLevel(root: Logger, level: LevelWithSilent): void {
  root.level = level;
  const children = families.get(root);
  if (children === undefined) return;
  for (const ref of children) {
    const c = ref.deref();
    if (c === undefined) children.delete(ref);
    else c.level = level;
  }
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
