/**
 * A small static HTTP server with byte ranges (curl -C - resumes with them), for the slice-2 demo,
 * tests and benchmark: replicas of a data ID serve the same file on the data ID.
 *
 *   node --import tsx scripts/tools/fileserve.ts --listen fd00:2:2::1 --port 8080 --dir /srv/data
 *
 * Only GET and HEAD of files directly in --dir; one Range (bytes=N- or bytes=N-M) per request.
 * Prints "listening" on stderr once bound.
 */
import { createReadStream, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { basename, join } from 'node:path';

function arg(name: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? process.argv[i + 1] : undefined;
  if (v === undefined) {
    process.stderr.write(`fileserve: --${name} is required\n`);
    process.exit(2);
  }
  return v;
}

const dir = arg('dir');
const server = createServer((req, res) => {
  const name = basename(decodeURIComponent((req.url ?? '/').split('?')[0]));
  let size: number;
  const file = join(dir, name);
  try {
    const st = statSync(file);
    if (!st.isFile()) throw new Error('not a file');
    size = st.size;
  } catch {
    res.writeHead(404).end('not found\n');
    return;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405).end();
    return;
  }
  const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
  let start = 0;
  let end = size - 1;
  if (m !== null) {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (start >= size || start > end) {
      res.writeHead(416, { 'content-range': `bytes */${size}` }).end();
      return;
    }
    res.writeHead(206, { 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${size}`, 'accept-ranges': 'bytes' });
  } else res.writeHead(200, { 'content-length': size, 'accept-ranges': 'bytes' });
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  createReadStream(file, { start, end }).pipe(res);
});
server.listen(Number(arg('port')), arg('listen'), () => process.stderr.write('listening\n'));
