import { createConnection, createServer, type Server } from 'node:net';
import { SystemError } from '../shared/errors.ts';

/**
 * The agent's local control socket: `realmnet status` connects, sends one request line, reads one
 * JSON document. The default is an abstract unix socket (`@name`): it belongs to the network
 * namespace, so each namespace's agent has its own, and it vanishes with the process (no stale file).
 */
export type ControlRequest = 'status';
const MAX_REQUEST = 256;

/**
 * How each connection ended; every connection ends in exactly one (connections = the sum of the
 * others once it has closed). The socket is local and root-only in practice, but its input is still
 * untrusted: a bad request is answered or dropped and counted, never thrown.
 */
export interface ControlCounters {
  connections: number;
  /** Answered a status request. */
  ok: number;
  /** A full line that is not a known request: answered with an error document. */
  unknown: number;
  /** More than MAX_REQUEST bytes without a newline: closed. */
  tooLong: number;
  /** Closed (or broke) before a full line arrived. */
  incomplete: number;
  /** The handler threw (a bug): answered with an error document. */
  failed: number;
}

export function newControlCounters(): ControlCounters {
  return { connections: 0, ok: 0, unknown: 0, tooLong: 0, incomplete: 0, failed: 0 };
}

function socketPath(p: string): string {
  return p.startsWith('@') ? `\0${p.slice(1)}` : p;
}

export async function startControlServer(path: string, handle: (req: ControlRequest) => unknown, counters: ControlCounters = newControlCounters()): Promise<Server> {
  const server = createServer((conn) => {
    counters.connections++;
    let req = '';
    let ended = false;
    const end = (how: Exclude<keyof ControlCounters, 'connections'>): void => {
      if (ended) return;
      ended = true;
      counters[how]++;
    };
    conn.setEncoding('utf8');
    conn.on('error', () => {
      end('incomplete');
      conn.destroy();
    });
    conn.on('close', () => end('incomplete'));
    conn.on('data', (chunk: string) => {
      if (ended) return;
      req += chunk;
      const nl = req.indexOf('\n');
      if (nl < 0 || nl > MAX_REQUEST) {
        if (req.length > MAX_REQUEST) {
          end('tooLong');
          conn.destroy();
        }
        return;
      }
      const line = req.slice(0, nl).trim();
      if (line !== 'status') {
        end('unknown');
        conn.end(JSON.stringify({ error: `unknown request "${line.slice(0, 32)}"` }) + '\n');
        return;
      }
      let answer: string;
      try {
        answer = JSON.stringify(handle(line));
        end('ok');
      } catch (e) {
        end('failed');
        answer = JSON.stringify({ error: `status failed: ${e instanceof Error ? e.message : String(e)}` });
      }
      conn.end(answer + '\n');
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
