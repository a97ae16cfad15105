/**
 * A bulk TCP transfer whose bytes can be checked: `sink` receives and hashes, `source` sends random
 * bytes and hashes what it sent. Each prints one JSON line: { bytes, sha256, ms, reset }.
 * Used by the end-to-end tests, the demo and benchmarks, inside network namespaces.
 *
 *   node --import tsx scripts/tools/bulk.ts sink   --listen fd00:1::c --port 5001
 *   node --import tsx scripts/tools/bulk.ts source --connect fd00:1::c --port 5001 --bytes 200000000
 */
import { createHash, randomFillSync } from 'node:crypto';
import { createConnection, createServer } from 'node:net';

function arg(name: string, fallback?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? process.argv[i + 1] : fallback;
  if (v === undefined) {
    process.stderr.write(`bulk: --${name} is required\n`);
    process.exit(2);
  }
  return v;
}

function sink(): void {
  const host = arg('listen');
  const port = Number(arg('port'));
  const server = createServer((sock) => {
    const hash = createHash('sha256');
    let bytes = 0;
    const t0 = Date.now();
    let reset = false;
    sock.on('data', (d: Buffer) => {
      bytes += d.length;
      hash.update(d);
    });
    sock.on('error', () => (reset = true));
    sock.on('close', () => {
      process.stdout.write(JSON.stringify({ bytes, sha256: hash.digest('hex'), ms: Date.now() - t0, reset }) + '\n');
      server.close();
    });
  });
  server.listen(port, host, () => process.stderr.write(`bulk sink listening on [${host}]:${port}\n`));
}

function source(): void {
  const host = arg('connect');
  const port = Number(arg('port'));
  const total = Number(arg('bytes'));
  const chunk = Buffer.alloc(1 << 20);
  const hash = createHash('sha256');
  let sent = 0;
  let reset = false;
  const t0 = Date.now();
  const sock = createConnection({ host, port }, () => pump());
  sock.on('error', () => (reset = true));
  sock.on('close', () => {
    process.stdout.write(JSON.stringify({ bytes: sent, sha256: hash.digest('hex'), ms: Date.now() - t0, reset }) + '\n');
  });
  function pump(): void {
    while (sent < total) {
      const n = Math.min(chunk.length, total - sent);
      randomFillSync(chunk, 0, n);
      // write() copies nothing: hand it a fresh copy so the next fill cannot change queued bytes.
      const piece = Buffer.from(chunk.subarray(0, n));
      hash.update(piece);
      sent += n;
      if (!sock.write(piece)) {
        sock.once('drain', pump);
        return;
      }
    }
    sock.end();
  }
}

const mode = process.argv[2];
if (mode === 'sink') sink();
else if (mode === 'source') source();
else {
  process.stderr.write('usage: bulk.ts sink --listen ADDR --port P | source --connect ADDR --port P --bytes N\n');
  process.exit(2);
}
