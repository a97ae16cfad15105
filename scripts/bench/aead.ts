/**
 * npm run bench -- aead [--seconds S]
 *
 * The data plane's AEAD (shared/crypto/aead.ts) on one core: seal and open of batches of 64 packets,
 * for both ciphers, at two frame sizes: 1400 bytes (an ordinary datagram) and 65500 bytes (an offload
 * frame: with the 20-byte header and the tag, a 64 KiB datagram). Prints a table and writes
 * bench-results/aead.json; the headline keys (aes256gcm_seal_gbps ...) are the 1400-byte figures.
 *
 *   1. Two tables model two hosts: A seals with its send key, B opens with the same key.
 *   2. Each round seals the batch in place (fresh counters), then opens it in place (so every open is
 *      a real, Ok, authenticated packet, never a replay), each call timed on its own. The frame bytes
 *      are whatever the last round left (ciphertext or plaintext): AEAD speed does not depend on them.
 *   3. Gbit/s counts frame bytes (not the header or tag), per core: the calls run on this thread alone.
 *      A short warm-up round comes first, then S seconds (default 1.5) per case.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { Cipher, OpenResult, SessionTable, newIndex } from '../../shared/crypto/aead.ts';
import { SEALED_HEADER_LEN, SEALED_INDEX_OFF, TAG_LEN } from '../../shared/wire/header.ts';
import { UsageProblem, fmt, printTable, writeResults } from './table.ts';

const BATCH = 64;
const SIZES = [
  { label: '1400', frame: 1400 },
  { label: '64k', frame: 65536 - SEALED_HEADER_LEN - TAG_LEN },
] as const;
const CIPHERS = [
  { key: 'aes256gcm', name: 'AES-256-GCM', cipher: Cipher.Aes256Gcm },
  { key: 'chacha20poly1305', name: 'ChaCha20-Poly1305', cipher: Cipher.ChaCha20Poly1305 },
] as const;

interface CaseResult {
  cipher: string;
  frame_bytes: number;
  packets: number;
  seal_gbps: number;
  open_gbps: number;
  seal_ns_per_packet: number;
  open_ns_per_packet: number;
}

function measure(cipher: Cipher, frame: number, seconds: number): CaseResult {
  const a = new SessionTable(1);
  const b = new SessionTable(1);
  const k1 = randomBytes(32);
  const bIndex = newIndex(0, 1);
  // The bench seals far more than AES-GCM's default per-key limit (2^24) over a long run.
  a.install(0, newIndex(0, 1), cipher, Uint8Array.from(k1), randomBytes(32), { sendLimit: Number.MAX_SAFE_INTEGER });
  b.install(0, bIndex, cipher, randomBytes(32), k1);

  const stride = SEALED_HEADER_LEN + frame + TAG_LEN;
  const buf = Buffer.alloc(stride * BATCH);
  const offsets = new Uint32Array(BATCH);
  const lengths = new Uint32Array(BATCH);
  const plainLengths = new Uint32Array(BATCH);
  const slots = new Uint16Array(BATCH);
  const results = new Uint8Array(BATCH);
  const slotsOut = new Uint16Array(BATCH);
  randomBytes(buf.length).copy(buf);
  for (let i = 0; i < BATCH; i++) {
    offsets[i] = i * stride;
    plainLengths[i] = SEALED_HEADER_LEN + frame;
    buf[offsets[i]] = 0x89; // N, I, K=01
    buf.writeUInt32BE(bIndex, offsets[i] + SEALED_INDEX_OFF);
  }

  let sealNs = 0n;
  let openNs = 0n;
  let rounds = 0;
  const round = (): void => {
    lengths.set(plainLengths);
    const t0 = process.hrtime.bigint();
    const sealed = a.seal(buf, offsets, lengths, slots, BATCH);
    const t1 = process.hrtime.bigint();
    const opened = b.open(buf, offsets, lengths, BATCH, results, slotsOut);
    const t2 = process.hrtime.bigint();
    if (sealed !== BATCH || opened !== BATCH) {
      throw new Error(`aead bench: sealed ${sealed}, opened ${opened} of ${BATCH} (first result ${results[0]}, want ${OpenResult.Ok})`);
    }
    sealNs += t1 - t0;
    openNs += t2 - t1;
    rounds++;
  };
  const warmUntil = Date.now() + 200;
  while (Date.now() < warmUntil) round();
  sealNs = 0n;
  openNs = 0n;
  rounds = 0;
  const until = Date.now() + seconds * 1000;
  while (Date.now() < until) round();
  a.wipeAll();
  b.wipeAll();

  const packets = rounds * BATCH;
  const bits = packets * frame * 8;
  return {
    cipher: CIPHERS[cipher].name,
    frame_bytes: frame,
    packets,
    seal_gbps: bits / Number(sealNs),
    open_gbps: bits / Number(openNs),
    seal_ns_per_packet: Number(sealNs) / packets,
    open_ns_per_packet: Number(openNs) / packets,
  };
}

/** The CPU features AES-GCM and ChaCha20 speed depends on, for reading the figures later. */
function cpuFeatures(): string[] {
  try {
    const flags = /^flags\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.split(' ') ?? [];
    return ['aes', 'pclmulqdq', 'avx', 'avx2', 'avx512f', 'avx512vl', 'vaes', 'vpclmulqdq', 'sha_ni'].filter((f) => flags.includes(f));
  } catch {
    return [];
  }
}

export async function run(argv: string[]): Promise<void> {
  let seconds = 1.5;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--seconds') {
      seconds = Number(argv[++i]);
      if (!Number.isFinite(seconds) || seconds <= 0 || seconds > 60) throw new UsageProblem('--seconds takes a number of seconds from 0 to 60');
    } else {
      throw new UsageProblem(`unknown option ${argv[i]} (usage: aead [--seconds S])`);
    }
  }
  const loadBefore = loadavg()[0];
  const cases: CaseResult[] = [];
  const summary: Record<string, number> = {};
  for (const size of SIZES) {
    for (const c of CIPHERS) {
      const r = measure(c.cipher, size.frame, seconds);
      cases.push(r);
      const suffix = size.label === '1400' ? '' : `_${size.label}`;
      summary[`${c.key}_seal_gbps${suffix}`] = round2(r.seal_gbps);
      summary[`${c.key}_open_gbps${suffix}`] = round2(r.open_gbps);
      summary[`${c.key}_seal_ns_per_packet${suffix}`] = Math.round(r.seal_ns_per_packet);
      summary[`${c.key}_open_ns_per_packet${suffix}`] = Math.round(r.open_ns_per_packet);
    }
  }
  printTable(
    ['cipher', 'frame B', 'seal Gbit/s', 'open Gbit/s', 'seal ns/pkt', 'open ns/pkt'],
    cases.map((r) => [r.cipher, r.frame_bytes, fmt(r.seal_gbps), fmt(r.open_gbps), fmt(r.seal_ns_per_packet, 0), fmt(r.open_ns_per_packet, 0)]),
  );
  const machine = {
    cpus: cpus().length,
    model: cpus()[0]?.model,
    features: cpuFeatures(),
    node: process.version,
    openssl: process.versions.openssl,
    loadavg_1m_before: loadBefore,
    loadavg_1m_after: loadavg()[0],
  };
  const file = await writeResults('aead', { bench: 'aead', date: new Date().toISOString(), batch: BATCH, seconds_per_case: seconds, ...summary, cases, machine });
  console.log(`results: ${file}  (per core; 1-minute load average before/after: ${loadBefore.toFixed(1)}/${machine.loadavg_1m_after.toFixed(1)} on ${machine.cpus} CPUs)`);
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}
