import type { Logger } from './log.ts';

/**
 * How both programs (agent and Realm Manager) end, in one place:
 * - the first SIGINT or SIGTERM stops the program cleanly (its parts in reverse start order) within
 *   `deadlineMs`, then exits 0;
 * - a second signal exits at once with 130 (128 + SIGINT, as shells report an interrupted program);
 * - a clean stop that overruns the deadline, or fails, exits 1.
 * SIGHUP reloads the config (onHangup: agent/main.ts, mapping-server/main.ts; docs/operations.md),
 * as systemd's ExecReload sends it; without onHangup it is logged and ignored: killing an overlay in
 * use on a terminal hang-up helps nobody.
 */
export const EXIT = Object.freeze({ ok: 0, error: 1, usage: 2, interrupted: 130 });

export interface SignalOptions {
  readonly log: Logger;
  /** Stops the program's parts; the process exits when it settles. */
  readonly stop: () => Promise<void>;
  readonly deadlineMs?: number;
  /** Replaced in tests. */
  readonly exit?: (code: number) => void;
  readonly onHangup?: () => void;
}

/** Installs the handlers; resolves when the first signal's stop has finished (before the exit). */
export function stopOnSignals(o: SignalOptions): Promise<void> {
  const exit = o.exit ?? ((code: number) => process.exit(code));
  const deadlineMs = o.deadlineMs ?? 5_000;
  return new Promise((resolve) => {
    let stopping = false;
    const onSignal = (sig: NodeJS.Signals) => {
      if (stopping) {
        o.log.warn({ signal: sig }, 'second signal: exiting now');
        return exit(EXIT.interrupted);
      }
      stopping = true;
      o.log.info({ signal: sig }, 'stopping');
      const deadline = setTimeout(() => {
        o.log.error(`clean stop took longer than ${deadlineMs / 1000} s: exiting`);
        exit(EXIT.error);
      }, deadlineMs);
      deadline.unref();
      o.stop().then(
        () => {
          clearTimeout(deadline);
          resolve();
          exit(EXIT.ok);
        },
        (e: unknown) => {
          clearTimeout(deadline);
          o.log.error({ err: e instanceof Error ? e.message : String(e) }, 'error while stopping');
          resolve();
          exit(EXIT.error);
        },
      );
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    process.on('SIGHUP', o.onHangup ?? (() => o.log.info('SIGHUP ignored (restart to reload the config)')));
  });
}

/** The one warning line a reload gives for what it could not apply (docs/operations.md, "Reload"). */
export function restartNeededLine(keys: readonly string[], unit: string): string {
  return `config reloaded, but ${keys.join(', ')} changed and need${keys.length === 1 ? 's' : ''} a restart (systemctl restart ${unit}): the running values stay in effect until then`;
}
