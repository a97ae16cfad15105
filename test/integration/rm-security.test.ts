import { afterEach, describe, expect, it } from 'vitest';
import { generateKeyPair } from '../../shared/crypto/ed25519.ts';
import { parsePrefix } from '../../shared/ids.ts';
import { decodeBinding } from '../../shared/binding.ts';
import { RegisterStatus } from '../../shared/wire/messages.ts';
import { bindingFor, rawSession, startHarness, testConfig, type Harness } from './rm-harness.ts';

let h: Harness | null = null;
afterEach(async () => {
  await h?.close();
  h = null;
});

describe('RM security', () => {
  it('rejects forged, mismatched, foreign and replayed registrations, and counts them', async () => {
    h = await startHarness();
    const me = await rawSession(h);
    const good = bindingFor(me.key, 5);
    me.send({ type: 'register', reqId: 1, binding: good.bytes });
    expect(await me.next()).toMatchObject({ type: 'registerReply', reqId: 1, status: RegisterStatus.ok, seq: 5 });

    // Forged: one locator byte changed after signing.
    const forged = Uint8Array.from(bindingFor(me.key, 6).bytes);
    forged[70] ^= 0x01;
    me.send({ type: 'register', reqId: 2, binding: forged });
    expect(await me.next()).toMatchObject({ reqId: 2, status: RegisterStatus.forged });

    // Mismatched: a validly signed binding whose ID is not the hash of the key that signed it.
    const other = generateKeyPair();
    const theirs = Uint8Array.from(bindingFor(other, 7).bytes);
    theirs.set(me.hostId.toBytes(), 4);
    me.send({ type: 'register', reqId: 3, binding: theirs });
    expect(await me.next()).toMatchObject({ reqId: 3, status: RegisterStatus.forged });

    // Someone else's binding, correctly signed by them: not this session's host.
    me.send({ type: 'register', reqId: 4, binding: bindingFor(other, 1).bytes });
    expect(await me.next()).toMatchObject({ reqId: 4, status: RegisterStatus.notOwner });

    // Replayed older binding: stale, the held seq is reported.
    me.send({ type: 'register', reqId: 5, binding: bindingFor(me.key, 4).bytes });
    expect(await me.next()).toMatchObject({ reqId: 5, status: RegisterStatus.stale, seq: 5 });

    // Same seq, different content: refused too.
    me.send({ type: 'register', reqId: 6, binding: bindingFor(me.key, 5, { ttl: 1 }).bytes });
    expect(await me.next()).toMatchObject({ reqId: 6, status: RegisterStatus.stale });

    // Replayed datagram (same session, same sequence number): dropped before any handler.
    const dgram = me.send({ type: 'lookup', reqId: 7, hostId: me.hostId.toBytes() });
    await me.next();
    me.sendRaw(dgram);
    await new Promise((r) => setTimeout(r, 50));

    const c = h.server.counters();
    expect(c['register.ok']).toBe(1);
    expect(c['register.forged']).toBe(2);
    expect(c['register.notOwner']).toBe(1);
    expect(c['register.stale']).toBe(1);
    expect(c['register.conflict']).toBe(1);
    expect(c['rx.drop.replay']).toBe(1);
    // Nothing of that reached the store: the held binding is still seq 5, unchanged.
    const held = h.store.get(Buffer.from(me.hostId.toBytes()).toString('latin1'));
    expect(held && Buffer.from(held.bytes).equals(Buffer.from(good.bytes))).toBe(true);
    await me.close();
  });

  it('drops messages with a bad MAC or an unknown session (and tells the sender to set up again)', async () => {
    h = await startHarness();
    const me = await rawSession(h);
    const buf = Buffer.from(me.send({ type: 'lookup', reqId: 1, hostId: me.hostId.toBytes() }));
    await me.next();
    buf[buf.length - 1] ^= 1;
    buf.writeUIntBE(50, 6, 6);
    me.sendRaw(buf);
    const unknown = Buffer.from(buf);
    unknown.writeUInt32BE((me.sid + 1) >>> 0 || 1, 2);
    me.sendRaw(unknown);
    await new Promise((r) => setTimeout(r, 50));
    const c = h.server.counters();
    expect(c['rx.drop.badMac']).toBe(1);
    expect(c['rx.drop.badSession']).toBe(1);
    expect(c['reject.sessionUnknown']).toBe(1);
    await me.close();
  });

  it('location privacy: an unauthorised lookup gets exactly the answer for an unknown ID', async () => {
    h = await startHarness({ policy: { lookup: { sameRealm: 'allow', rules: [{ askers: ['fd00:9::/32'], targets: ['fd00:1::/32'] }] } } });
    const target = await rawSession(h);
    target.send({ type: 'register', reqId: 1, binding: bindingFor(target.key, 1).bytes });
    expect(await target.next()).toMatchObject({ status: RegisterStatus.ok });

    const stranger = await rawSession(h, { prefix: 'fd00:7::/32' });
    const partner = await rawSession(h, { prefix: 'fd00:9::/32' });
    const unknownId = Uint8Array.from(target.hostId.toBytes());
    unknownId[15] ^= 0xff;

    const ask = async (s: typeof stranger, id: Uint8Array) => {
      s.send({ type: 'lookup', reqId: 42, hostId: id });
      return s.next();
    };
    const denied = await ask(stranger, target.hostId.toBytes());
    const unknown = await ask(stranger, unknownId);
    expect(denied).toMatchObject({ type: 'lookupReply', binding: null, prefs: [] });
    // Same TTL, same shape: only the ID asked for differs.
    expect({ ...denied, hostId: null }).toEqual({ ...unknown, hostId: null });
    const allowed = await ask(partner, target.hostId.toBytes());
    expect(allowed.type === 'lookupReply' && allowed.binding !== null && decodeBinding(allowed.binding).ok).toBe(true);

    // A stranger may subscribe (same answer as anyone) but is never pushed the binding.
    stranger.send({ type: 'subscribe', reqId: 5, hostIds: [target.hostId.toBytes()] });
    expect(await stranger.next()).toMatchObject({ type: 'subscribeReply', accepted: 1 });
    target.send({ type: 'register', reqId: 2, binding: bindingFor(target.key, 2).bytes });
    await target.next();
    await expect(stranger.next(300)).rejects.toThrow(/no answer/);
    expect(h.server.counters()['lookup.denied']).toBe(1);
    for (const s of [target, stranger, partner]) await s.close();
  });

  it('a reload (SIGHUP) applies a new policy to live sessions and names what needs a restart', async () => {
    const deny = { lookup: { sameRealm: 'deny', rules: [] } };
    h = await startHarness({ policy: deny });
    const target = await rawSession(h);
    target.send({ type: 'register', reqId: 1, binding: bindingFor(target.key, 1).bytes });
    expect(await target.next()).toMatchObject({ status: RegisterStatus.ok });
    const asker = await rawSession(h);
    const ask = async (reqId: number) => {
      asker.send({ type: 'lookup', reqId, hostId: target.hostId.toBytes() });
      return asker.next();
    };
    expect(await ask(1)).toMatchObject({ binding: null });
    const r = h.server.reload(testConfig({ policy: { lookup: { sameRealm: 'allow' } }, sessions: { max: 77 } }));
    expect(r).toEqual({ policyChanged: true, restartNeeded: ['sessions'] });
    // The same session, no new HELLO: the new policy lets it see the target now.
    const a = await ask(2);
    expect(a.type === 'lookupReply' && a.binding !== null).toBe(true);
    // And back: denied again, still without a new session.
    expect(h.server.reload(testConfig({ policy: deny }))).toEqual({ policyChanged: true, restartNeeded: [] });
    expect(await ask(3)).toMatchObject({ type: 'lookupReply', binding: null });
    for (const s of [target, asker]) await s.close();
  });

  it('a client refuses a WELCOME from an RM other than the pinned one', async () => {
    h = await startHarness();
    const { createRmClient } = await import('../../agent/rm/client.ts');
    const key = generateKeyPair();
    await h.admit(key);
    const c = createRmClient({
      rm: [{ address: '127.0.0.1', port: h.port, publicKey: generateKeyPair().publicKey }],
      key,
      prefix: parsePrefix('fd00:1::/32'),
      retransmit: { initialMs: 20, maxMs: 40, attempts: 2 },
    });
    const started = c.start();
    started.catch(() => {});
    await new Promise((r) => setTimeout(r, 150));
    expect(c.counters()['rx.drop.badWelcome']).toBeGreaterThan(0);
    expect(c.counters()['sessions.established']).toBe(0);
    await c.stop();
  });
});
