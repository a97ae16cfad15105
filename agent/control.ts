import { createConnection, createServer, type Server } from 'node:net';
import { SystemError } from '../shared/errors.ts';

/**
 * The agent's local control socket: `realmnet status` connects, sends one request line, reads one
 * JSON document. The default is an abstract unix socket (`@name`): it belongs to the network
 * namespace, so each namespace's agent has its own, and it vanishes with the process (no stale file).
 */
export type ControlRequest = 'status';
const MAX_REQUEST = 256;

function socketPath(p: string): string {
  return p.startsWith('@') ? `\0${p.slice(1)}` : p;
}

export async function startControlServer(path: string, handle: (req: ControlRequest) => unknown): Promise<Server> {
  const server = createServer((conn) => {
    let req = '';
    conn.setEncoding('utf8');
    conn.on('error', () => conn.destroy());
    conn.on('data', (chunk: string) => {
      req += chunk;
      if (req.length > MAX_REQUEST) {
        conn.destroy();
        return;
      }
      const nl = req.indexOf('\n');
      if (nl < 0) return;
      const line = req.slice(0, nl).trim();
      if (line !== 'status') {
        conn.end(JSON.stringify({ error: `unknown request "${line.slice(0, 32)}"` }) + '\n');
        return;
      }
      conn.end(JSON.stringify(handle(line)) + '\n');
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(
        e.code === 'EADDRINUSE'
          ? new SystemError('CONTROL_SOCKET_IN_USE', `control socket ${path} is in use: another agent runs in this network namespace`, 'stop it, or give this agent its own control.socket in the config')
          : new SystemError('INTERNAL', `control socket ${path}: ${e.message}`),
      ),
    );
    server.listen(socketPath(path), () => resolve());
  });
  server.unref();
  return server;
}

export function queryControl(path: string, req: ControlRequest, timeoutMs = 3000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const conn = createConnection(socketPath(path));
    let body = '';
    const timer = setTimeout(() => {
      conn.destroy();
      reject(new SystemError('TIMEOUT', `no answer from the agent on ${path} within ${timeoutMs} ms`, 'is the agent stuck? check its log'));
    }, timeoutMs);
    conn.setEncoding('utf8');
    conn.on('connect', () => conn.write(`${req}\n`));
    conn.on('data', (c: string) => (body += c));
    conn.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        new SystemError(
          'INTERNAL',
          `cannot reach the agent on ${path}: ${e.code ?? e.message}`,
          'is `realmnet agent` running in this network namespace? (ip netns exec NS realmnet status)',
        ),
      );
    });
    conn.on('end', () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(body) as unknown);
      } catch {
        reject(new SystemError('INTERNAL', `the agent on ${path} sent an unreadable answer`));
      }
    });
  });
}
