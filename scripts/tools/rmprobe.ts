/**
 * The hierarchy bench's two ends (scripts/bench/hierarchy.ts), each the agent's own RM client
 * (agent/rm/client.ts) run inside a testbed namespace, one JSON line per event on stdout.
 *
 *   rmprobe hosts --rm ADDR --rm-key B64 --prefix P --keys K1,K2,...
 *       Registers one binding per key (a host each); on SIGUSR1 changes the first host's binding
 *       --changes times, --every-ms apart (an uplink down, then up, ...), printing {"seq","t"} per change.
 *   rmprobe asker --rm ADDR --rm-key B64 --prefix P --keys OWN,PEER --targets ID,... --follow ID --gap-ms N
 *       Registers OWN and PEER (PEER: a host of its own realm, the same-realm reference); times a
 *       lookup of each target, --gap-ms apart (a first lookup: the referrals have lapsed), then each
 *       again from PEER (another host of the site: its RM's shared cache), then OWN from PEER (same realm); then follows --follow and prints
 *       {"push","seq","t"} for every pushed binding until SIGTERM.
 * Times are wall-clock ms with sub-ms precision (performance.timeOrigin + now()): both ends run on
 * one machine, so their clocks are the same clock.
 */
import { signBinding, type Locator } from '../../shared/binding.ts';
import { deriveHostId, parseHostId, parsePrefix } from '../../shared/ids.ts';
import { loadKeyPair } from '../../shared/keyfile.ts';
import { createRmClient, type RmClient } from '../../agent/rm/client.ts';

const now = (): number => performance.timeOrigin + performance.now();
const out = (o: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify(o)}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function arg(name: string, fallback?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const v = i < 0 ? fallback : process.argv[i + 1];
  if (v === undefined) throw new Error(`rmprobe: --${name} is required`);
  return v;
}

const LOC = (up: boolean): Locator[] => [
  { address: '192.0.2.200', port: 4341, uplink: 'isp1', priority: 1, weight: 1, state: up ? 'up' : 'down' },
  { address: '198.51.100.200', port: 4341, uplink: 'isp2', priority: 2, weight: 1, state: 'up' },
];

async function main(): Promise<void> {
  const mode = process.argv[2];
  const prefix = parsePrefix(arg('prefix'));
  const rm = [{ address: arg('rm'), port: 4342, publicKey: new Uint8Array(Buffer.from(arg('rm-key'), 'base64')) }];
  const keys = arg('keys').split(',').map((f) => loadKeyPair(f));
  const clients: RmClient[] = [];
  for (const key of keys) {
    const c = createRmClient({ rm, key, prefix, retransmit: { initialMs: 100, maxMs: 800, attempts: 6 } });
    await c.start();
    const r = await c.register(signBinding(key, { prefix, locators: LOC(true), seq: 1, ttl: 300 }));
    if (!r.ok) throw new Error(`rmprobe: registration refused: ${r.status}`);
    clients.push(c);
  }
  const stop = async () => {
    for (const c of clients) await c.stop();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());

  if (mode === 'hosts') {
    const changes = Number(arg('changes', '200'));
    const every = Number(arg('every-ms', '50'));
    process.on('SIGUSR1', () => {
      void (async () => {
        for (let seq = 2; seq < changes + 2; seq++) {
          const t = now();
          const r = await clients[0].register(signBinding(keys[0], { prefix, locators: LOC(seq % 2 === 1), seq, ttl: 300 }));
          out({ seq, t, ok: r.ok });
          await sleep(every);
        }
        out({ done: true });
      })();
    });
    out({ ready: true });
    return;
  }

  if (mode === 'asker') {
    const targets = arg('targets').split(',').map(parseHostId);
    const gap = Number(arg('gap-ms', '1200'));
    const c = clients[0];
    out({ ready: true });
    for (const id of targets) {
      await sleep(gap);
      const t0 = now();
      const r = await c.lookup(id);
      out({ first: now() - t0, kind: r.kind });
    }
    // Another host of the same site asks: served from its RM's shared cache. (The first host asking
    // again would make the RM re-ask: a host that asks for what it holds suspects it is stale.)
    const other = clients[1];
    for (const id of targets) {
      const t0 = now();
      const r = await other.lookup(id);
      out({ cached: now() - t0, kind: r.kind });
    }
    const own = deriveHostId(prefix, keys[0].publicKey);
    for (let i = 0; i < targets.length; i++) {
      const t0 = now();
      const r = await other.lookup(own);
      out({ local: now() - t0, kind: r.kind });
    }
    const follow = parseHostId(arg('follow'));
    c.onPush((a) => out({ push: true, seq: a.binding.seq, t: now() }));
    const look = await c.lookup(follow);
    await c.subscribe([follow]);
    out({ subscribed: true, kind: look.kind });
    return;
  }
  throw new Error(`rmprobe: unknown mode ${mode ?? '(none)'}: hosts or asker`);
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
