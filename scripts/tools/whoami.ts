/**
 * Which host answers a user or data ID? A TCP server that greets each connection with its name, and
 * a client that prints who answered (and, held open, how the connection ended). Slice-2 demo, tests
 * and benchmark, inside network namespaces.
 *
 *   node --import tsx scripts/tools/whoami.ts serve --listen fd00:2:1::5 --port 7000 --name laptop
 *   node --import tsx scripts/tools/whoami.ts ask --connect fd00:2:1::5 --port 7000 [--timeout-ms 2000] [--hold]
 *
 * ask prints one JSON line: { name, connectMs } or { error, connectMs }; with --hold it then keeps
 * the connection open, sending nothing, and prints { ended: 'reset' | 'closed', afterMs } when it
 * ends (afterMs counted from the moment it printed the first line, or from SIGUSR1 if sent).
 */
import { createConnection, createServer } from 'node:net';

function arg(name: string, fallback?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? process.argv[i + 1] : fallback;
  if (v === undefined) {
    process.stderr.write(`whoami: --${name} is required\n`);
    process.exit(2);
  }
  return v;
}

function serve(): void {
  const name = arg('name');
  const server = createServer((sock) => {
    sock.on('error', () => sock.destroy());
    sock.write(`${name}\n`);
    // Keep it open until the client goes: a held connection is what a reset must reach.
    sock.resume();
  });
  server.listen(Number(arg('port')), arg('listen'), () => process.stderr.write('listening\n'));
}

function ask(): void {
  const t0 = performance.now();
  const timeoutMs = Number(arg('timeout-ms', '3000'));
  const hold = process.argv.includes('--hold');
  const sock = createConnection({ host: arg('connect'), port: Number(arg('port')) });
  let answered = false;
  let mark = 0;
  const timer = setTimeout(() => {
    if (answered) return;
    process.stdout.write(JSON.stringify({ error: 'timeout', connectMs: Math.round(performance.now() - t0) }) + '\n');
    process.exit(1);
  }, timeoutMs);
  process.on('SIGUSR1', () => (mark = performance.now()));
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => {
    if (answered) return;
    buf += d;
    const nl = buf.indexOf('\n');
    if (nl < 0) return;
    answered = true;
    clearTimeout(timer);
    process.stdout.write(JSON.stringify({ name: buf.slice(0, nl), connectMs: Math.round((performance.now() - t0) * 10) / 10 }) + '\n');
    mark = performance.now();
    if (!hold) sock.destroy();
  });
  sock.on('error', (e: NodeJS.ErrnoException) => {
    const ms = Math.round((performance.now() - (answered ? mark : t0)) * 10) / 10;
    if (!answered) {
      clearTimeout(timer);
      process.stdout.write(JSON.stringify({ error: e.code ?? e.message, connectMs: ms }) + '\n');
      process.exit(1);
    }
    process.stdout.write(JSON.stringify({ ended: e.code === 'ECONNRESET' ? 'reset' : (e.code ?? 'error'), afterMs: ms }) + '\n');
    process.exit(0);
  });
  sock.on('end', () => {
    if (!answered || !hold) return;
    process.stdout.write(JSON.stringify({ ended: 'closed', afterMs: Math.round((performance.now() - mark) * 10) / 10 }) + '\n');
    process.exit(0);
  });
}

if (process.argv[2] === 'serve') serve();
else if (process.argv[2] === 'ask') ask();
else {
  process.stderr.write('usage: whoami.ts serve|ask ...\n');
  process.exit(2);
}
