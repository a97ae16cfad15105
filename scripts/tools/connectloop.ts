/**
 * Connection attempts back to back from one process (no process start per attempt), for the slice-2
 * benchmark: how long after a fault does the first new connection succeed?
 *
 *   node --import tsx scripts/tools/connectloop.ts --connect ID --port P [--want NAME] [--timeout-ms 1000]
 *
 * Prints "ready" on stderr once a first attempt succeeded. On SIGUSR1 it marks the fault's time; it
 * then prints one JSON line { ms, name, attempts } for the first connection after the mark that
 * succeeds (and, with --want, whose server greeted with NAME: whoami.ts), and exits. A server that
 * sends nothing (HTTP) counts as success once connected.
 */
import { createConnection } from 'node:net';

function arg(name: string, fallback?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? process.argv[i + 1] : fallback;
  if (v === undefined) {
    process.stderr.write(`connectloop: --${name} is required\n`);
    process.exit(2);
  }
  return v;
}

const host = arg('connect');
const port = Number(arg('port'));
const want = arg('want', '');
const timeoutMs = Number(arg('timeout-ms', '1000'));
let mark: number | null = null;
let attempts = 0;
let ready = false;
process.on('SIGUSR1', () => {
  mark = performance.now();
  attempts = 0;
});

function attempt(): void {
  attempts++;
  const started = performance.now();
  const sock = createConnection({ host, port });
  let done = false;
  let buf = '';
  const finish = (ok: boolean, name: string): void => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    sock.destroy();
    if (ok && !ready) {
      ready = true;
      process.stderr.write('ready\n');
    }
    if (ok && mark !== null && started >= mark - 1 && (want === '' || name === want)) {
      process.stdout.write(JSON.stringify({ ms: Math.round((performance.now() - mark) * 10) / 10, name, attempts }) + '\n');
      process.exit(0);
    }
    // Back to back, with a breath so a refused attempt cannot spin the CPU.
    setTimeout(attempt, ok ? 5 : 1);
  };
  const timer = setTimeout(() => finish(false, ''), timeoutMs);
  sock.setEncoding('utf8');
  sock.on('connect', () => {
    if (want === '') finish(true, '');
  });
  sock.on('data', (d: string) => {
    buf += d;
    const nl = buf.indexOf('\n');
    if (nl >= 0) finish(true, buf.slice(0, nl));
  });
  sock.on('error', () => finish(false, ''));
}
attempt();
