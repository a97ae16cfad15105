/**
 * Nebula (Debian's 1.6.1) between mh and ch as the reference overlay (DESIGN.md §2): a throwaway CA,
 * one certificate per host, no lighthouse (each host lists the other in static_host_map), crypto on
 * (AES-256-GCM, Nebula's default cipher). The overlay uses 198.18.0.0/15, the range RFC 2544 reserves
 * for benchmarks: Nebula 1.6 needs an IPv4 overlay, and nothing in that range leaves the namespaces.
 * Keys follow /usr/share/doc/nebula/examples/config.yml.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { execHost, type NsProcess, type Testbed, type TESTBED } from '../testbed/topology.ts';

export const NEBULA_OVERLAY = { mh: '198.18.0.1', ch: '198.18.0.2', prefixLen: 24 } as const;
export const NEBULA_PORT = 4242;
/** Nebula's own default; ours is 1400, so the bench sets it to match unless told otherwise. */
export const NEBULA_DEFAULT_MTU = 1300;

export interface NebulaOptions {
  /** tun.mtu (default 1400, like realmnet's default, for a like-for-like run). */
  mtu?: number;
  /** Carry the overlay over the IPv6 underlay instead of IPv4. */
  ipv6Underlay?: boolean;
  /** 'aes' (default, AES-256-GCM) or 'chachapoly'. */
  cipher?: 'aes' | 'chachapoly';
  /** How long to wait for the overlay to answer a ping (default 15 s). */
  readyTimeoutMs?: number;
}

export interface NebulaPair {
  mhAddr: string;
  chAddr: string;
  mtu: number;
  pids: { mh: number; ch: number };
  /** Stops both nebula processes and removes the temporary directory. */
  stop(): Promise<void>;
}

type Std = Testbed<typeof TESTBED>;

function hostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

function nebulaConfig(dir: string, name: 'mh' | 'ch', peerOverlay: string, peerLocators: readonly string[], o: Required<Pick<NebulaOptions, 'mtu' | 'cipher'>> & { ipv6: boolean }): unknown {
  return {
    pki: { ca: join(dir, 'ca.crt'), cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) },
    static_host_map: { [peerOverlay]: peerLocators.map((a) => hostPort(a, NEBULA_PORT)) },
    lighthouse: { am_lighthouse: false, interval: 60, hosts: [] },
    listen: { host: o.ipv6 ? '[::]' : '0.0.0.0', port: NEBULA_PORT },
    punchy: { punch: false, respond: false },
    relay: { am_relay: false, use_relays: false },
    cipher: o.cipher,
    tun: { disabled: false, dev: 'neb0', drop_local_broadcast: false, drop_multicast: false, tx_queue: 500, mtu: o.mtu, routes: [], unsafe_routes: [] },
    logging: { level: 'info', format: 'text' },
    firewall: {
      conntrack: { tcp_timeout: '12m', udp_timeout: '3m', default_timeout: '10m' },
      outbound: [{ port: 'any', proto: 'any', host: 'any' }],
      inbound: [{ port: 'any', proto: 'any', host: 'any' }],
    },
  };
}

/** Starts Nebula on mh and ch and waits until mh pings ch over the overlay. */
export async function startNebula(tb: Std, opts: NebulaOptions = {}): Promise<NebulaPair> {
  const mtu = opts.mtu ?? 1400;
  const cipher = opts.cipher ?? 'aes';
  const ipv6 = opts.ipv6Underlay ?? false;
  const fam = ipv6 ? 'v6' : 'v4';
  const dir = await mkdtemp(join(tmpdir(), 'realmnet-nebula-'));
  const procs: NsProcess[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(procs.map((p) => p.stop(2_000)));
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await execHost('nebula-cert', ['ca', '-name', 'realmnet-bench', '-duration', '24h', '-out-crt', join(dir, 'ca.crt'), '-out-key', join(dir, 'ca.key')]);
    for (const name of ['mh', 'ch'] as const) {
      await execHost('nebula-cert', [
        'sign',
        '-ca-crt', join(dir, 'ca.crt'),
        '-ca-key', join(dir, 'ca.key'),
        '-name', name,
        '-ip', `${NEBULA_OVERLAY[name]}/${NEBULA_OVERLAY.prefixLen}`,
        '-out-crt', join(dir, `${name}.crt`),
        '-out-key', join(dir, `${name}.key`),
      ]);
    }
    const A = tb.addr;
    const common = { mtu, cipher, ipv6 };
    // mh is multihomed: ch may reach it on either uplink, primary first.
    const mhCfg = nebulaConfig(dir, 'mh', NEBULA_OVERLAY.ch, [A[fam].ch.core], common);
    const chCfg = nebulaConfig(dir, 'ch', NEBULA_OVERLAY.mh, [A[fam].mh.ispa, A[fam].mh.ispb], common);
    await writeFile(join(dir, 'mh.yml'), stringify(mhCfg));
    await writeFile(join(dir, 'ch.yml'), stringify(chCfg));

    const mh = tb.spawn('mh', 'nebula', ['-config', join(dir, 'mh.yml')]);
    procs.push(mh);
    const ch = tb.spawn('ch', 'nebula', ['-config', join(dir, 'ch.yml')]);
    procs.push(ch);

    const deadline = Date.now() + (opts.readyTimeoutMs ?? 15_000);
    for (;;) {
      for (const p of procs) {
        if (!p.running()) throw new Error(`nebula in ${p.node} exited: ${(p.stderrTail() || p.stdoutTail()).trim().split('\n').slice(-3).join(' | ')}`);
      }
      const r = await tb.exec('mh', 'ping', ['-4', '-n', '-c1', '-W1', NEBULA_OVERLAY.ch], { allowFail: true });
      if (r.code === 0) break;
      if (Date.now() > deadline) throw new Error(`nebula overlay not reachable within ${opts.readyTimeoutMs ?? 15_000} ms: ${mh.stderrTail().trim().split('\n').slice(-2).join(' | ')}`);
    }
    return { mhAddr: NEBULA_OVERLAY.mh, chAddr: NEBULA_OVERLAY.ch, mtu, pids: { mh: mh.pid, ch: ch.pid }, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
