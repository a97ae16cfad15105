import { spawn } from 'node:child_process';
import { join } from 'node:path';

/**
 * What systemd would be for a Type=notify service: a unix datagram socket whose path goes into
 * NOTIFY_SOCKET, and the messages the service sends to it (READY=1, WATCHDOG=1, RELOADING=1,
 * STOPPING=1, STATUS=…). Node cannot receive unix datagrams, so a few lines of python3 hold the
 * socket and print each message as one JSON line with its arrival time (wall-clock ms).
 *
 * A path socket, not an abstract one: it is reachable from every network namespace.
 */
export interface NotifyMessage {
  readonly at: number;
  readonly text: string;
  /** KEY=value lines as a record. */
  readonly fields: Readonly<Record<string, string>>;
}

export interface NotifyListener {
  readonly path: string;
  readonly messages: NotifyMessage[];
  /** The first message at or after `since` with this field (e.g. READY=1), within `ms`. */
  waitFor(field: string, value: string, since: number, ms: number): Promise<NotifyMessage>;
  count(field: string, value: string, from: number, to: number): number;
  close(): Promise<void>;
}

const PY = `
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print(json.dumps({"ready": True}), flush=True)
while True:
    d = s.recv(4096)
    print(json.dumps({"at": time.time() * 1000, "text": d.decode("utf-8", "replace")}), flush=True)
`;

export async function listenNotify(dir: string): Promise<NotifyListener> {
  const path = join(dir, 'notify.sock');
  const child = spawn('python3', ['-c', PY, path], { stdio: ['ignore', 'pipe', 'pipe'] });
  const messages: NotifyMessage[] = [];
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
  let buf = '';
  let bound: () => void = () => undefined;
  const isBound = new Promise<void>((resolve) => (bound = resolve));
  child.stdout.setEncoding('utf8').on('data', (s: string) => {
    buf += s;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      const j = JSON.parse(line) as { ready?: boolean; at?: number; text?: string };
      if (j.ready === true) bound();
      else if (j.at !== undefined && j.text !== undefined) {
        const fields: Record<string, string> = {};
        for (const kv of j.text.split('\n')) {
          const eq = kv.indexOf('=');
          if (eq > 0) fields[kv.slice(0, eq)] = kv.slice(eq + 1);
        }
        messages.push({ at: j.at, text: j.text, fields });
      }
    }
  });
  await Promise.race([
    isBound,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`the notify socket listener did not start: ${err}`)), 5_000)),
  ]);
  return {
    path,
    messages,
    async waitFor(field, value, since, ms) {
      const deadline = Date.now() + ms;
      for (;;) {
        const m = messages.find((x) => x.at >= since && x.fields[field] === value);
        if (m !== undefined) return m;
        if (Date.now() > deadline) throw new Error(`no ${field}=${value} on the notify socket within ${ms} ms; got: ${JSON.stringify(messages.filter((x) => x.at >= since).map((x) => x.text))}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    count(field, value, from, to) {
      return messages.filter((x) => x.at >= from && x.at <= to && x.fields[field] === value).length;
    },
    async close() {
      child.kill('SIGKILL');
      await new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)));
    },
  };
}
