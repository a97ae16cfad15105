import { createSocket } from 'node:dgram';
import { afterEach, describe, expect, it } from 'vitest';
import { encode } from '../../shared/wire/codec.ts';
import { RegisterStatus } from '../../shared/wire/messages.ts';
import type { ControlSocket } from '../../mapping-server/sessions.ts';
import { BindingStore } from '../../mapping-server/store/bindings.ts';
import { openControlSocket, openUdpSocket, type OnDatagram } from '../../mapping-server/udp.ts';
import { until } from '../helpers/fake-agent.ts';
import { bindingFor, rawSession, startHarness, type Harness } from './rm-harness.ts';

/**
 * A fault inside the handling of one datagram (here: the store failing a read, as SQLite does on an
 * I/O error) must cost that datagram only. The RM's sockets hand datagrams over inside the native
 * addon's batch callback, where an uncaught exception is fatal to the process; before the RM caught
 * them, one failing read killed the Realm Manager.
 */
class FaultyStore extends BindingStore {
  /** Keys (the ID's 16 bytes as latin1) whose reads throw. */
  readonly failing = new Set<string>();

  override get(key: string): ReturnType<BindingStore['get']> {
    if (this.failing.has(key)) throw new Error('SQLITE_IOERR: disk I/O error (simulated)');
    return super.get(key);
  }

  override held(key: string): ReturnType<BindingStore['held']> {
    if (this.failing.has(key)) throw new Error('SQLITE_IOERR: disk I/O error (simulated)');
    return super.held(key);
  }
}

const keyFor = (id: Uint8Array): string => Buffer.from(id).toString('latin1');

function sum(c: Record<string, number>, prefix: string): number {
  return Object.entries(c)
    .filter(([k]) => k.startsWith(prefix))
    .reduce((a, [, v]) => a + v, 0);
}

let h: Harness | null = null;
afterEach(async () => {
  await h?.close();
  h = null;
});

describe('RM faults', () => {
  it('drops and counts a datagram whose handling throws, and goes on with the rest of the batch', async () => {
    h = await startHarness({}, undefined, { store: (o) => new FaultyStore(o) });
    const st = h.store;
    if (!(st instanceof FaultyStore)) throw new Error('the harness did not use the faulty store');
    const s = await rawSession(h);
    const me = s.hostId.toBytes();
    s.send({ type: 'register', reqId: 1, binding: bindingFor(s.key, 1).bytes });
    expect(await s.next()).toMatchObject({ type: 'registerReply', reqId: 1, status: RegisterStatus.ok });

    // A LOOKUP (the fast path) whose store read throws, and right behind it one that works: only the
    // first is lost.
    const broken = Uint8Array.from(me);
    broken[15] ^= 0xff;
    st.failing.add(keyFor(broken));
    s.send({ type: 'lookup', reqId: 2, hostId: broken });
    s.send({ type: 'lookup', reqId: 3, hostId: me });
    const answer = await s.next();
    expect(answer).toMatchObject({ type: 'lookupReply', reqId: 3 });
    expect(answer.type === 'lookupReply' && answer.binding !== null).toBe(true);
    await until(() => h!.server.counters()['rx.drop.internalError'] === 1, 2000, 'rx.drop.internalError = 1');

    // A REGISTER (the general path) whose sequence check reads the store and fails: no answer, counted.
    st.failing.add(keyFor(me));
    s.send({ type: 'register', reqId: 4, binding: bindingFor(s.key, 2).bytes });
    await until(() => h!.server.counters()['rx.drop.internalError'] === 2, 2000, 'rx.drop.internalError = 2');

    // The store recovers: the RM answers as before, and the counters still add up.
    st.failing.clear();
    s.send({ type: 'register', reqId: 5, binding: bindingFor(s.key, 2).bytes });
    expect(await s.next()).toMatchObject({ type: 'registerReply', reqId: 5, status: RegisterStatus.ok, seq: 2 });
    s.send({ type: 'lookup', reqId: 6, hostId: me });
    expect(await s.next()).toMatchObject({ type: 'lookupReply', reqId: 6 });
    const c = h.server.counters();
    expect(c['rx.drop.internalError']).toBe(2);
    expect(c['rx.handled.lookup']).toBe(2);
    expect(c['rx.handled.register']).toBe(2);
    expect(sum(c, 'rx.drop.') + sum(c, 'rx.handled.')).toBe(c['rx.datagrams']);
    await s.close();
  });

  it('goes on with the rest of a batch after a datagram that throws', async () => {
    // The entry the socket calls, captured so that a batch can be replayed exactly: several datagrams
    // handed over one after another in one synchronous run, as the socket's batch callback does.
    const captured: { entry?: OnDatagram; socket?: ControlSocket } = {};
    h = await startHarness({}, undefined, {
      store: (o) => new FaultyStore(o),
      openSocket: async (address, port, onDatagram, onFault) => {
        captured.entry = onDatagram;
        captured.socket = await openUdpSocket(address, port, onDatagram, onFault);
        return captured.socket;
      },
    });
    const st = h.store;
    const { entry: onDatagram, socket: rmSocket } = captured;
    if (!(st instanceof FaultyStore) || onDatagram === undefined || rmSocket === undefined) throw new Error('harness not set up as asked');
    const s = await rawSession(h);
    const me = s.hostId.toBytes();
    const broken = Uint8Array.from(me);
    broken[15] ^= 0xff;
    st.failing.add(keyFor(broken));
    // Sequence numbers far above those rawSession used (the replay window takes them in any order).
    let seq = 1_000_000;
    const lookup = (reqId: number, hostId: Uint8Array): Buffer => encode({ type: 'lookup', reqId, hostId }, { sid: s.sid, seq: ++seq, key: s.keys.c2s });
    const batch = [lookup(10, broken), lookup(11, me), lookup(12, broken), lookup(13, me)];
    const from = s.socket.address();
    expect(() => {
      for (const d of batch) onDatagram(d, from.address, from.port, rmSocket);
    }).not.toThrow();
    const replies = [await s.next(), await s.next()].map((m) => (m.type === 'lookupReply' ? m.reqId : -1));
    expect(replies.sort()).toEqual([11, 13]);
    const c = h.server.counters();
    expect(c['rx.drop.internalError']).toBe(2);
    expect(sum(c, 'rx.drop.') + sum(c, 'rx.handled.')).toBe(c['rx.datagrams']);
    await s.close();
  });

  it('the control socket hands what its callback throws to onFault and keeps delivering', async () => {
    const seen: string[] = [];
    const faults: unknown[] = [];
    const cs = openControlSocket(
      '127.0.0.1',
      0,
      (buf) => {
        const text = buf.toString();
        seen.push(text);
        if (text.startsWith('boom')) throw new Error(`handler failed on ${text}`);
      },
      (e) => faults.push(e),
    );
    const tx = createSocket('udp4');
    try {
      const sent = ['boom1', 'ok1', 'boom2', 'ok2', 'ok3'];
      for (const m of sent) tx.send(m, cs.local.port, '127.0.0.1');
      await until(() => seen.length === sent.length, 2000, 'every datagram delivered');
      expect(seen).toEqual(sent);
      expect(faults.map((e) => (e instanceof Error ? e.message : String(e)))).toEqual(['handler failed on boom1', 'handler failed on boom2']);
    } finally {
      tx.close();
      await cs.close();
    }
  });
});
