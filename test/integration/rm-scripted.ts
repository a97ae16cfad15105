import { createSocket, type Socket } from 'node:dgram';
import type { Binding } from '../../shared/binding.ts';
import { signBytes, type KeyPair } from '../../shared/crypto/ed25519.ts';
import { mac } from '../../shared/crypto/blake2s.ts';
import { createEphemeral, deriveSessionKeys, randomSid, welcomeSignedBytes, type SessionKeys } from '../../shared/wire/handshake.ts';
import { decode, decodeBody, decodeHeader, encode, writeHeader } from '../../shared/wire/codec.ts';
import { HEADER_LEN, type ControlMessage } from '../../shared/wire/messages.ts';
import { CERT_LEN, issueCertificate } from '../../shared/membership.ts';
import { HostId } from '../../shared/ids.ts';

/**
 * A Realm Manager played by a test on 127.0.0.1: it sets up real sessions (signed WELCOME, X25519,
 * session keys), answers LOOKUP / SUBSCRIBE / REGISTER from a table of bindings, and can send the
 * client anything under a valid session MAC, which is what a fuzzer, or an RM gone rogue, needs.
 */
export class ScriptedRm {
  session: { sid: number; keys: SessionKeys; txSeq: number } | null = null;
  sessions = 0;
  pushAcks = 0;
  /** Datagrams this RM sent through send() (its answers), as opposed to what a test sends raw. */
  sent = 0;
  /** The certificate the next positive LOOKUP-REPLY carries instead of a valid one (once). */
  nextLookupCert: Uint8Array | null = null;
  /** RENEWs received (answered by nobody unless a test does). */
  renews = 0;
  /** Answers to HELLOs by nonce: a retransmitted HELLO gets the same WELCOME (as the real RM does),
   *  so client and RM never end up on different sessions. */
  private readonly welcomes = new Map<string, Buffer>();
  private readonly bindings = new Map<string, Binding>();

  constructor(
    readonly sock: Socket,
    readonly key: KeyPair,
  ) {
    sock.on('message', (buf, r) => this.onMessage(buf, r.port));
  }

  get port(): number {
    return this.sock.address().port;
  }

  serve(b: Binding): void {
    this.bindings.set(b.hostId.hex, b);
  }

  /** A session message with a valid MAC and the next sequence number. */
  sealed(type: number, body: Uint8Array): Buffer {
    const s = this.session as NonNullable<ScriptedRm['session']>;
    const out = Buffer.alloc(HEADER_LEN + body.length + 16);
    writeHeader(out, type, s.sid, ++s.txSeq);
    out.set(body, HEADER_LEN);
    mac(s.keys.s2c, out, 0, out.length - 16, out, out.length - 16);
    return out;
  }

  /**
   * Encodes under the session. A positive LOOKUP-REPLY without a certificate gets one for
   * the ID and key its binding names (whatever the binding's signature), as an RM that vouches for
   * its members would: what such a test probes is the binding checks. Give a cert to send that one.
   */
  encode(m: ControlMessage): Buffer {
    const s = this.session as NonNullable<ScriptedRm['session']>;
    let msg = m;
    if (m.type === 'lookupReply' && m.binding !== null && m.cert === null) msg = { ...m, cert: this.certFor(m.binding) };
    return encode(msg, { sid: s.sid, seq: ++s.txSeq, key: s.keys.s2c });
  }

  /** A certificate from this RM's key for the ID, prefix length and key a binding's bytes name. */
  certFor(binding: Uint8Array, o: { notAfter?: number; notBefore?: number; key?: KeyPair } = {}): Uint8Array {
    const b = Buffer.from(binding);
    const nowS = Math.floor(Date.now() / 1000);
    if (b.length < 53) return new Uint8Array(CERT_LEN);
    return issueCertificate(o.key ?? this.key, {
      hostId: HostId.fromBytes(b, 4),
      prefixLen: Math.min(b[20], 64),
      publicKey: b.subarray(21, 53),
      serial: Date.now(),
      notBefore: o.notBefore ?? nowS - 60,
      notAfter: o.notAfter ?? nowS + 86_400,
    }).bytes;
  }

  /** Where the client's datagrams come from (its socket). */
  clientPort = 0;
  send(buf: Uint8Array): void {
    this.sent++;
    this.sock.send(buf, this.clientPort, '127.0.0.1');
  }

  private onMessage(buf: Buffer, port: number): void {
    this.clientPort = port;
    const h = decodeHeader(buf);
    if (!h.ok) return;
    if (h.msg.sid === 0) {
      const b = decodeBody(h.msg, buf);
      if (!b.ok || b.msg.type !== 'hello') return;
      const hello = b.msg;
      const nonce = Buffer.from(hello.nonce).toString('hex');
      const again = this.welcomes.get(nonce);
      if (again !== undefined) return this.send(again);
      const eph = createEphemeral();
      const sid = randomSid();
      const keys = deriveSessionKeys(eph, hello.ephemeral, { sid, clientHostId: hello.hostId, clientEphemeral: hello.ephemeral, rmEphemeral: eph.publicKey, nonce: hello.nonce });
      if (keys === null) return;
      this.session = { sid, keys, txSeq: 0 };
      this.sessions++;
      const signature = signBytes(this.key, welcomeSignedBytes(sid, eph.publicKey, hello.hostId, hello.ephemeral, hello.nonce));
      const nowS = Math.floor(Date.now() / 1000);
      const cert = issueCertificate(this.key, { hostId: HostId.fromBytes(hello.hostId), prefixLen: hello.prefixLen, publicKey: hello.publicKey, serial: Date.now(), notBefore: nowS - 60, notAfter: nowS + 86_400 }).bytes;
      const welcome = encode({ type: 'welcome', reqId: hello.reqId, sid, rmPublicKey: this.key.publicKey, ephemeral: eph.publicKey, signature, cert }, null);
      this.welcomes.set(nonce, welcome);
      this.send(welcome);
      return;
    }
    const s = this.session;
    if (s === null) return;
    const d = decode(buf, (sid) => (sid === s.sid ? s.keys.c2s : undefined));
    if (!d.ok) return;
    const m = d.msg.msg;
    if (m.type === 'pushAck') this.pushAcks++;
    else if (m.type === 'lookup') {
      const b = this.bindings.get(Buffer.from(m.hostId).toString('hex'));
      const cert = b === undefined ? null : this.nextLookupCert;
      if (b !== undefined) this.nextLookupCert = null;
      this.send(this.encode({ type: 'lookupReply', reqId: m.reqId, hostId: m.hostId, ttl: 60, binding: b?.bytes ?? null, prefs: [], cert }));
    } else if (m.type === 'renew') {
      this.renews++;
    } else if (m.type === 'subscribe') this.send(this.encode({ type: 'subscribeReply', reqId: m.reqId, accepted: m.hostIds.length }));
    else if (m.type === 'register') {
      this.send(this.encode({ type: 'registerReply', reqId: m.reqId, hostId: new Uint8Array(16), seq: 1, status: 0, expiresIn: 180, refresh: 60 }));
    }
  }
}

/** A UDP socket on 127.0.0.1, any port. */
export async function bound(): Promise<Socket> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  s.on('error', () => {});
  return s;
}
