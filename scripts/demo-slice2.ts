/**
 * The demo's second part: the paper's Fig. 3 scene (slice 2, docs/slice2.md) in its own namespaces.
 * alice has a multihomed laptop and a phone; a data ID has two replicas serving the same file over
 * HTTP. From a correspondent: curl of the file by data ID while the serving replica dies, completed
 * from the other with the same sha256; a TCP connection to alice's user ID reaches the laptop; the
 * laptop goes offline; a new connection reaches the phone.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DATA_NAME, HTTP_PORT, SLICE2, SLICE2_REALM, startSlice2, upSlice2, writeSlice2, type Slice2Host, type Slice2Scene } from './testbed/slice2.ts';
import type { NsProcess } from './testbed/topology.ts';

const PORT = 7000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function slice2Demo(repo: string, cli: string, say: (s: string) => void, show: (s: string) => void): Promise<void> {
  const WHOAMI = join(repo, 'scripts/tools/whoami.ts');
  const FILESERVE = join(repo, 'scripts/tools/fileserve.ts');
  say('Slice 2 (the paper’s Fig. 3): users and data multihomed to several hosts');
  const tb = await upSlice2('rnfig3-');
  const work = await mkdtemp(join(tmpdir(), 'realmnet-fig3-'));
  const procs: NsProcess[] = [];
  let scene: Slice2Scene | null = null;
  try {
    const files = await writeSlice2({ logLevel: 'warn' });
    show(`New namespaces: cor (a correspondent), lap (alice's laptop, two links: ${SLICE2.v4.lap.core} and ${SLICE2.v4.lap.core2}),
pho (her phone), r1 and r2 (two replicas of a file), rm (the Realm Manager), core (a router).
The realm's RM hands out user IDs under ${SLICE2_REALM.userPrefix} and data IDs under ${SLICE2_REALM.dataPrefix}.
alice's user ID (from her key):   ${files.userId}   -> laptop (priority 1), phone (priority 2)
the data ID of "${DATA_NAME}":  ${files.dataId}   -> r1, r2
Both are owner-signed bindings (realmnet user create / add-host, realmnet data publish / add-replica);
each host consents by listing the binding under \`serve:\` in its agent config.`);
    scene = await startSlice2(tb, files, cli, repo);
    const s = scene;
    for (const [n, id] of [['lap', files.userId], ['pho', files.userId]] as const) {
      procs.push(tb.spawn(n, process.execPath, ['--import', 'tsx', WHOAMI, 'serve', '--listen', id, '--port', String(PORT), '--name', n === 'lap' ? 'alice-laptop' : 'alice-phone'], { cwd: repo }));
    }
    const file = join(work, 'file.bin');
    await writeFile(file, randomBytes(16 * 1024 * 1024));
    for (const n of ['r1', 'r2'] as const) {
      procs.push(tb.spawn(n, process.execPath, ['--import', 'tsx', FILESERVE, '--listen', files.dataId, '--port', String(HTTP_PORT), '--dir', work], { cwd: repo }));
      await tb.rateLimit(n, 'eth0', 40);
    }
    await sleep(1500);

    say(`curl http://[${files.dataId}]:${HTTP_PORT}/file.bin from cor (16 MB at 40 Mbit/s), and the serving replica dies in the middle`);
    const out = join(work, 'download.bin');
    const t0 = Date.now();
    const curl = tb.spawn('cor', 'curl', ['-sS', '-g', '--retry', '10', '--retry-all-errors', '--retry-delay', '1', '--connect-timeout', '2', '-C', '-', '-o', out, `http://[${files.dataId}]:${HTTP_PORT}/file.bin`]);
    let serving: Slice2Host | null = null;
    for (let k = 0; k < 40 && serving === null; k++) {
      await sleep(100);
      const st = await s.status('cor').catch(() => null);
      const f = st?.slice2?.flows.find((x) => x.remote === files.dataId && x.proto === 6 && x.state === 'live');
      if (f?.hostId === files.ids.r1) serving = 'r1';
      else if (f?.hostId === files.ids.r2) serving = 'r2';
      if (f !== undefined) show(`cor's agent pinned the download to ${serving} (${f.why ?? '?'}): both replicas answer probes, equally fast`);
    }
    await sleep(1200);
    if (serving !== null) {
      show(`killing ${serving}'s agent (kill -9): the replica drops off the network`);
      s.agents[serving].child.kill('SIGKILL');
    }
    const done = await Promise.race([curl.exited, sleep(90_000).then(() => null)]);
    const want = createHash('sha256').update(await readFile(file)).digest('hex');
    const got = await readFile(out).then((b) => createHash('sha256').update(b).digest('hex'), () => 'none');
    const st = await s.status('cor');
    show(`curl exit ${done?.code ?? 'timeout'} after ${((Date.now() - t0) / 1000).toFixed(1)} s; the agent reset the flow pinned to the dead replica (resets: ${st.slice2?.counters.resets ?? 0}),
curl retried with -C - and the new flow went to the other replica.
sha256 served:     ${want}
sha256 downloaded: ${got}   ${got === want ? '(equal)' : '(DIFFERENT)'}`);
    await curl.stop();
    if (serving !== null) await s.restartAgent(serving);

    say(`A TCP connection from cor to alice's user ID (${files.userId})`);
    const ask = async (): Promise<string> => {
      const r = await tb.exec('cor', process.execPath, ['--import', 'tsx', WHOAMI, 'ask', '--connect', files.userId, '--port', String(PORT), '--timeout-ms', '1000'], { cwd: repo, allowFail: true });
      return r.stdout.trim();
    };
    show(await ask());
    say('alice’s laptop goes offline (both of its links down)');
    const t1 = Date.now();
    for (const d of ['to-lap', 'to-lap2']) await tb.linkDown('core', d);
    let answer = '';
    for (;;) {
      answer = await ask();
      if (answer.includes('alice-phone') || Date.now() - t1 > 20_000) break;
    }
    show(`${answer}
a new connection reached the phone ${Date.now() - t1} ms after the laptop dropped off (this narration starts a
process per try; \`npm run bench -- slice2\` measures ~0.3 s): cor's agent probes the hosts
of the user IDs it uses, saw every path to the laptop die, and chose the next host by priority.`);
    say("What cor's agent knows: `realmnet status` (the user and data IDs, each host's presence, every pinned flow and why)");
    const lines = (await tb.exec('cor', process.execPath, [cli, 'status', '--socket', '@realmnet/cor'], { cwd: repo })).stdout.split('\n');
    const from = lines.findIndex((l) => /^(serving|user ID|data ID)/.test(l));
    const to = lines.findIndex((l) => l.startsWith('slice 2:'));
    show(from < 0 || to < 0 ? lines.join('\n') : lines.slice(from, to + 1).join('\n'));
  } finally {
    for (const p of procs) await p.stop();
    await scene?.stop();
    await tb.down();
    await rm(work, { recursive: true, force: true });
  }
}
