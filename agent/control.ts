import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { ConfigError, SystemError, type ErrorCode } from '../shared/errors.ts';
import { checkPeercred, groupId, peerCredentials, type PeerCredentials } from '../shared/peercred.ts';

/**
 * The agent's local control socket: `realmnet status` connects, sends one request line, reads one
 * JSON document. The default is an abstract unix socket (`@name`): it belongs to the network
 * namespace, so each namespace's agent has its own, and it vanishes with the process (no stale file).
 *
 * An abstract socket has no file permissions: any process in the namespace may connect to it, or
 * bind its name first. So both ends ask the kernel who the other is (SO_PEERCRED, shared/peercred.ts):
 *
 * 1. The agent answers only root, its own uid, and members of `control.group`; anyone else gets an
 *    error document and is counted (refusedPeer).
 * 2. At most CONTROL_LIMITS.maxConnections at once (Node closes the excess unread: refusedBusy), each
 *    done within timeoutMs (else closed: timedOut): a local user cannot pin the root daemon's fds.
 * 3. The client (queryControl) talks only to a listener run by root or by its own uid: a name
 *    squatted by another user before the agent started is refused, not believed.
 * 4. If the name is taken when the agent starts, it says by whom, in one line.
 */
/**
 * `status`, or `publish <base64>`: an owner-signed user/data binding (slice 2) that the agent hands
 * to its Realm Manager (`realmnet user|data ...` send it). A group binding is at most ~470 bytes of
 * base64, so a line of 1 KiB bounds the request.
 */
export type ControlRequest = 'status' | `publish ${string}`;
const MAX_REQUEST = 1024;

/**
 * Why these numbers: `realmnet status` opens one connection and is answered in milliseconds (the
 * status is built synchronously), so 8 at once leaves room for a few scripts polling in parallel,
 * and 2 s is ample for a local peer to send one line and read the answer, while a peer that stalls
 * (or trickles bytes) gives its slot back quickly.
 */
export const CONTROL_LIMITS = { maxConnections: 8, timeoutMs: 2_000 } as const;

export interface ControlOptions {
  /** Members of this group (a name, or a gid), primary or supplementary, may ask too. Default: none. */
  readonly group?: string | number;
  readonly maxConnections?: number;
  readonly timeoutMs?: number;
  /** Slice 2: `publish <base64>` (answered when the RM answers, within the connection's deadline). */
  readonly publish?: (binding: Uint8Array) => Promise<unknown>;
}

/**
 * How each connection ended; every connection ends in exactly one (connections = the sum of the
 * others once it has closed). The socket is local, but its input is still untrusted: a bad request
 * is answered or dropped and counted, never thrown.
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
  /** The peer is not root, not the agent's uid and not in control.group: answered with an error document, unread. */
  refusedPeer: number;
  /** Over maxConnections at once: closed unread (by Node, before a socket object exists). */
  refusedBusy: number;
  /** Not done (request read and answer written) within timeoutMs: closed. */
  timedOut: number;
}

export function newControlCounters(): ControlCounters {
  return { connections: 0, ok: 0, unknown: 0, tooLong: 0, incomplete: 0, failed: 0, refusedPeer: 0, refusedBusy: 0, timedOut: 0 };
}

function socketPath(p: string): string {
  return p.startsWith('@') ? `\0${p.slice(1)}` : p;
}

/** control.group as a gid; a name unknown to this host is a config error. */
function resolveGroup(group: string | number | undefined): number | null {
  if (group === undefined) return null;
  if (typeof group === 'number') return group;
  const gid = groupId(group);
  if (gid === null) throw new ConfigError(`config error: control.group: "${group}" is not a group on this host`, 'create it (groupadd) or fix control.group');
  return gid;
}

/**
 * A one-line error document, then our side closed. What the peer sends meanwhile is read and dropped:
 * a unix socket closed with unread data resets its peer (ECONNRESET), which would lose the document.
 * The peer's close, or the deadline, ends the connection.
 */
function refuse(conn: Socket, doc: { error: string; code?: ErrorCode }): void {
  conn.resume();
  conn.end(JSON.stringify(doc) + '\n');
}

export async function startControlServer(
  path: string,
  handle: (req: ControlRequest) => unknown,
  counters: ControlCounters = newControlCounters(),
  opts: ControlOptions = {},
): Promise<Server> {
  checkPeercred();
  const gid = resolveGroup(opts.group);
  const maxConnections = opts.maxConnections ?? CONTROL_LIMITS.maxConnections;
  const timeoutMs = opts.timeoutMs ?? CONTROL_LIMITS.timeoutMs;
  const publish = opts.publish;
  const ownUid = process.geteuid?.() ?? 0;
  const allowed = (c: PeerCredentials): boolean => c.uid === 0 || c.uid === ownUid || (gid !== null && (c.gid === gid || c.groups.includes(gid)));
  const who = gid === null ? 'root' : `root and members of group ${String(opts.group)}`;

  const server = createServer((conn) => {
    counters.connections++;
    let req = '';
    let ended = false;
    const end = (how: Exclude<keyof ControlCounters, 'connections'>): void => {
      if (ended) return;
      ended = true;
      counters[how]++;
    };
    // One deadline for the whole exchange, not an idle timer: a peer trickling a byte a second
    // would reset an idle timer for minutes.
    const deadline = setTimeout(() => {
      end('timedOut');
      conn.destroy();
    }, timeoutMs);
    deadline.unref();
    conn.on('close', () => {
      clearTimeout(deadline);
      end('incomplete');
    });
    conn.on('error', () => {
      end('incomplete');
      conn.destroy();
    });
    let peer: PeerCredentials | null = null;
    try {
      peer = peerCredentials(conn);
    } catch {
      // Gone already, or no fd: nobody we can vouch for.
    }
    if (peer === null || !allowed(peer)) {
      end('refusedPeer');
      refuse(conn, { error: `permission denied: the agent answers ${who} only${peer === null ? '' : ` (you are uid ${peer.uid})`}`, code: 'CONTROL_PERMISSION_DENIED' });
      return;
    }
    conn.setEncoding('utf8');
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
      if (line.startsWith('publish ') && publish !== undefined) {
        const b64 = line.slice(8).trim();
        if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) {
          end('unknown');
          refuse(conn, { error: 'publish: the binding is not base64' });
          return;
        }
        ended = true;
        publish(new Uint8Array(Buffer.from(b64, 'base64'))).then(
          (doc) => {
            counters.ok++;
            conn.end(JSON.stringify(doc) + '\n');
          },
          (e: unknown) => {
            counters.failed++;
            conn.end(JSON.stringify({ ok: false, error: e instanceof Error ? e.message : String(e) }) + '\n');
          },
        );
        return;
      }
      if (line !== 'status') {
        end('unknown');
        refuse(conn, { error: `unknown request "${line.slice(0, 32)}"` });
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
      // Our side closes; the peer's close, or the deadline if it never closes, frees the fd.
      conn.end(answer + '\n');
    });
  });
  server.maxConnections = maxConnections;
  server.on('drop', () => {
    counters.connections++;
    counters.refusedBusy++;
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EADDRINUSE') {
        reject(new SystemError('INTERNAL', `control socket ${path}: ${e.message}`));
        return;
      }
      holderOf(path).then((holder) => reject(inUse(path, holder)), reject);
    });
    server.listen(socketPath(path), () => resolve());
  });
  server.unref();
  return server;
}

/** Who listens on `path`, or null if that cannot be told (a stale socket file, say). */
function holderOf(path: string): Promise<PeerCredentials | null> {
  return new Promise((resolve) => {
    const conn = createConnection(socketPath(path));
    const done = (holder: PeerCredentials | null): void => {
      clearTimeout(timer);
      conn.destroy();
      resolve(holder);
    };
    const timer = setTimeout(() => done(null), 500);
    conn.on('error', () => done(null));
    conn.on('connect', () => {
      try {
        done(peerCredentials(conn));
      } catch {
        done(null);
      }
    });
  });
}

function inUse(path: string, holder: PeerCredentials | null): SystemError {
  if (holder !== null && holder.uid !== 0) {
    return new SystemError(
      'CONTROL_SOCKET_IN_USE',
      `control socket ${path} is held by pid ${holder.pid}, uid ${holder.uid} (not root): another user may be squatting its name`,
      `stop that process (kill ${holder.pid}) and start the agent again, or give this agent another control.socket in the config`,
    );
  }
  const by = holder === null ? '' : ` (pid ${holder.pid})`;
  return new SystemError('CONTROL_SOCKET_IN_USE', `control socket ${path} is in use: another agent${by} runs in this network namespace`, 'stop it, or give this agent its own control.socket in the config');
}

export function queryControl(path: string, req: ControlRequest, timeoutMs = 3000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const conn = createConnection(socketPath(path));
    let body = '';
    let settled = false;
    const settle = (fail: SystemError | null, value?: unknown): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (fail === null) resolve(value);
      else {
        conn.destroy();
        reject(fail);
      }
    };
    const timer = setTimeout(
      () => settle(new SystemError('TIMEOUT', `no answer from the agent on ${path} within ${timeoutMs} ms`, 'is the agent stuck? check its log')),
      timeoutMs,
    );
    conn.setEncoding('utf8');
    conn.on('connect', () => {
      let server: PeerCredentials;
      try {
        server = peerCredentials(conn);
      } catch (e) {
        settle(e instanceof SystemError ? e : new SystemError('INTERNAL', String(e)));
        return;
      }
      // The listener's credentials, recorded by the kernel at listen(): whoever took the name first
      // cannot pass for the agent unless it is root (or ourselves).
      if (server.uid !== 0 && server.uid !== process.geteuid?.()) {
        settle(
          new SystemError(
            'CONTROL_SOCKET_NOT_TRUSTED',
            `the control socket ${path} belongs to pid ${server.pid}, uid ${server.uid}, not to a root agent: not asking it`,
            `another user may have taken the name before the agent started: stop pid ${server.pid}, then restart the agent`,
          ),
        );
        return;
      }
      conn.write(`${req}\n`);
    });
    conn.on('data', (c: string) => (body += c));
    conn.on('error', (e: NodeJS.ErrnoException) => {
      // A reset after a whole document (the agent closed with our bytes unread) still leaves the answer.
      if (body.endsWith('\n')) return answered();
      // Closed on us before a word: the agent's connection limit (it closes the excess unread).
      if (e.code === 'EPIPE' || e.code === 'ECONNRESET') return settle(unanswered());
      settle(
        new SystemError(
          'INTERNAL',
          `cannot reach the agent on ${path}: ${e.code ?? e.message}`,
          'is `realmnet agent` running in this network namespace? (ip netns exec NS realmnet status)',
        ),
      );
    });
    const unanswered = (): SystemError => new SystemError('INTERNAL', `the agent on ${path} closed the connection without an answer`, 'too many status requests at once? try again');
    const answered = (): void => {
      if (body === '') return settle(unanswered());
      let doc: unknown;
      try {
        doc = JSON.parse(body) as unknown;
      } catch {
        settle(new SystemError('INTERNAL', `the agent on ${path} sent an unreadable answer`));
        return;
      }
      settle(isRefusal(doc) ? new SystemError('CONTROL_PERMISSION_DENIED', `the agent on ${path} refused: ${doc.error}`, "run it as root (sudo), or as a member of the group in the agent's control.group") : null, doc);
    };
    conn.on('end', answered);
  });
}

/** The agent's answer to a peer it does not serve (other error documents are returned as before). */
function isRefusal(doc: unknown): doc is { error: string; code: 'CONTROL_PERMISSION_DENIED' } {
  return typeof doc === 'object' && doc !== null && 'error' in doc && typeof doc.error === 'string' && 'code' in doc && doc.code === 'CONTROL_PERMISSION_DENIED';
}
