/**
 * Throws bad datagrams at an agent's data port, from inside a test namespace. Each class is built to
 * hit exactly one drop reason, so the test can check the agent's counters class by class.
 * Prints one JSON line: the number sent per expected drop reason.
 *
 *   node --import tsx test/helpers/flood.ts --to 192.0.2.1 --port 4341 --from 203.0.113.2 \
 *        --instance 1 --src-id fd00:1::c --dst-id fd00:1::a [--sealed]
 *
 * --sealed: the agent encrypts (the default), so the classes are those a sealed receive path tells
 * apart: plaintext data, sealed data under session indices nobody holds, sealed data too short to
 * hold a tag, and handshake-shaped garbage.
 */
import { createSocket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { hostIdBytes } from '../../shared/ids.ts';
import { HEADER_LEN, writeHeader, writeSealedHeader, FLAG_N, FLAG_I, HANDSHAKE_FLAGS, SEALED_HEADER_LEN, TAG_LEN } from '../../shared/wire/header.ts';

function arg(n: string): string {
  const i = process.argv.indexOf(`--${n}`);
  if (i < 0) throw new Error(`--${n} is required`);
  return process.argv[i + 1];
}

const to = arg('to');
const port = Number(arg('port'));
const from = arg('from');
const iid = Number(arg('instance'));
const srcId = hostIdBytes(arg('src-id'));
const dstId = hostIdBytes(arg('dst-id'));

function inner(src: Uint8Array, payload: number): Buffer {
  const p = Buffer.alloc(40 + payload);
  p[0] = 0x60;
  p.writeUInt16BE(payload, 4);
  p[6] = 17;
  p[7] = 64;
  p.set(src, 8);
  p.set(dstId, 24);
  return p;
}

function frame(innerPkt: Buffer, instance = iid, vnet = false): Buffer {
  const d = Buffer.alloc(HEADER_LEN + innerPkt.length);
  writeHeader(d, 0, 1, instance, vnet);
  d.set(innerPkt, HEADER_LEN);
  return d;
}

const sealedMode = process.argv.includes('--sealed');

/**
 * Shorter than any header: `n` random bytes, the I bit cleared, so the first byte is never that of
 * a peer message (0x28) or a handshake (0x29), which leave the data path before the length check.
 */
function shortJunk(n: number): Buffer {
  const d = randomBytes(n);
  if (n > 0) d[0] &= ~FLAG_I;
  return d;
}

/** A sealed-looking datagram: a real header, then random bytes where ciphertext and tag would be. */
function sealed(index: number, bodyLen: number, instance = iid): Buffer {
  const d = randomBytes(SEALED_HEADER_LEN + bodyLen);
  writeSealedHeader(d, 0, instance, false, 0, index);
  return d;
}

const plainClasses: Record<string, Buffer[]> = {
  'outside.truncated': Array.from({ length: 500 }, (_, i) => shortJunk(i % 8)),
  'outside.badHeader': Array.from({ length: 500 }, () => {
    const d = frame(inner(srcId, 20));
    d[0] = FLAG_N; // no I bit
    return d;
  }),
  'outside.wrongInstance': Array.from({ length: 500 }, () => frame(inner(srcId, 20), (iid + 1) & 0xffffff)),
  'outside.offloadMismatch': Array.from({ length: 300 }, () => frame(inner(srcId, 20), iid, true)),
  'outside.malformed': Array.from({ length: 500 }, (_, i) => {
    const d = frame(inner(srcId, 20));
    if (i % 2 === 0) d[HEADER_LEN] = 0x45; // IPv4, not a host-ID packet
    else d.writeUInt16BE(999, HEADER_LEN + 4); // payload length lies
    return d;
  }),
  'outside.unknownPeer': Array.from({ length: 500 }, () => frame(inner(randomBytes(16), 20))),
  // From the right address but not the bound port: the locator is address AND port.
  'outside.sourceNotBound': Array.from({ length: 300 }, () => frame(inner(srcId, 20))),
  // Valid framing, inner packet far over the TUN MTU.
  'outside.oversized': Array.from({ length: 30 }, () => frame(inner(srcId, 60_000))),
};

const sealedClasses: Record<string, Buffer[]> = {
  'outside.truncated': Array.from({ length: 500 }, (_, i) => (i % 2 === 0 ? shortJunk(i % 8) : sealed(1 + i, i % TAG_LEN))),
  'outside.badHeader': plainClasses['outside.badHeader'],
  'outside.wrongInstance': Array.from({ length: 500 }, (_, i) => (i % 2 === 0 ? frame(inner(srcId, 20), (iid + 1) & 0xffffff) : sealed(1 + i, 100, (iid + 1) & 0xffffff))),
  'outside.offloadMismatch': plainClasses['outside.offloadMismatch'],
  // Well-formed plain data from the peer's own locator: refused, encryption is on.
  'outside.plaintext': Array.from({ length: 500 }, () => frame(inner(srcId, 20))),
  // Session indices with slot 0 (never handed out), so none can match a live session by chance.
  'outside.noSession': Array.from({ length: 500 }, (_, i) => sealed(((i + 1) * 4096) >>> 0, 20 + (i % 1300))),
  // Handshake-shaped garbage of initiation length: refused at mac1, counted by the session manager.
  handshake: Array.from({ length: 500 }, (_, i) => {
    const d = randomBytes(170);
    d[0] = HANDSHAKE_FLAGS;
    d[1] = 1;
    d.writeUIntBE(iid, 4, 3);
    d[2] = d[3] = d[7] = 0;
    void i;
    return d;
  }),
};
const classes = sealedMode ? sealedClasses : plainClasses;
// Pure noise too; it lands in several counters, so it is reported apart.
const noise = Array.from({ length: 2000 }, () => {
  const d = randomBytes(1 + Math.floor(Math.random() * 1400));
  // Keep noise out of the classes above: I bit cleared means badHeader or truncated only.
  d[0] &= ~FLAG_I;
  return d;
});

const sock = createSocket(to.includes(':') ? 'udp6' : 'udp4');
sock.on('error', () => undefined); // ICMP errors: irrelevant here
await new Promise<void>((r) => sock.bind(0, from, () => r()));

async function sendAll(list: Buffer[]): Promise<void> {
  for (let i = 0; i < list.length; i++) {
    await new Promise<void>((r) => sock.send(list[i], port, to, () => r()));
    // Pace a little so the receiver's socket buffer never overflows: we test parsing, not buffers.
    if (i % 100 === 99) await new Promise((r) => setTimeout(r, 5));
  }
}

const sent: Record<string, number> = {};
for (const [reason, list] of Object.entries(classes)) {
  await sendAll(list);
  sent[reason] = list.length;
}
await sendAll(noise);
sent.noise = noise.length;
sock.close();
process.stdout.write(JSON.stringify(sent) + '\n');
