/**
 * Userspace WireGuard (Debian 12's wireguard-go 0.0.20220316, configured with `wg` from
 * wireguard-tools) between mh and ch as a reference overlay. Kernel WireGuard is not available on
 * these machines; wireguard-go opens its own TUN through /dev/net/tun, as our agent does.
 *
 * 1. Keys: `wg genkey` / `wg pubkey`, one pair per host, files in a temporary directory (mode 0600).
 * 2. `wireguard-go -f NAME` in each namespace, in the foreground as a child we own (without -f it
 *    daemonises and we would lose its pid: no CPU figure, no clean stop).
 * 3. Wait for its control socket, /var/run/wireguard/NAME.sock.
 * 4. `wg set NAME private-key … listen-port … peer … endpoint … allowed-ips …`, then the address,
 *    the MTU and `up` on the device.
 * 5. Wait until mh pings ch through the tunnel.
 * stop(): SIGTERM both processes (the TUN goes with them), delete a device that is still there,
 * remove the directory. The namespaces themselves are the bench's (its teardown deletes them).
 *
 * Device names: the control socket lives in /var/run/wireguard, which `ip netns exec` does NOT
 * separate per namespace, so two instances called wg0 collide ("UAPI listen error: unix socket in
 * use", seen here). Each device is named after the bench's namespace prefix and the node.
 *
 * The inner addresses are IPv6 from a ULA prefix (DESIGN.md §4) next to the realm's fd00:1::/32, so
 * the inner packets are the same size as realmnet's (its host IDs are IPv6) and the MSS matches at
 * the same MTU. Nothing in that prefix leaves the namespaces.
 */
import { chmod, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execHost, type NsProcess, type Testbed, type TESTBED } from '../testbed/topology.ts';

export const WIREGUARD_OVERLAY = { mh: 'fd00:2::a', ch: 'fd00:2::c', prefixLen: 64 } as const;
export const WIREGUARD_PORT = 51820;
/** wireguard-go's own default (1500 minus 80: IPv6 40 + UDP 8 + WireGuard 32); the bench matches realmnet's 1400. */
export const WIREGUARD_DEFAULT_MTU = 1420;
/** Where wireguard-go puts its control socket (wireguard-go ipc/uapi_linux.go: socketDirectory). */
const SOCKET_DIR = '/var/run/wireguard';
/** Linux's IFNAMSIZ less the terminating NUL. */
const IFNAME_MAX = 15;

export interface WireguardOptions {
  /** Device MTU (default 1400, like realmnet's default, for a like-for-like run). */
  mtu?: number;
  /** Carry the tunnel over the IPv6 underlay instead of IPv4. */
  ipv6Underlay?: boolean;
  /** How long to wait for the tunnel to answer a ping (default 15 s). */
  readyTimeoutMs?: number;
}

export interface WireguardPair {
  mhAddr: string;
  chAddr: string;
  /** The device names on mh and ch. */
  dev: { mh: string; ch: string };
  mtu: number;
  pids: { mh: number; ch: number };
  /** Stops both wireguard-go processes, deletes leftover devices and the temporary directory. */
  stop(): Promise<void>;
}

type Std = Testbed<typeof TESTBED>;
type End = 'mh' | 'ch';

function hostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/** `${prefix}wg${node}` (e.g. rnb12345-wgmh), or a shorter form when the prefix makes it too long. */
export function wireguardDevName(prefix: string, node: End): string {
  const name = `${prefix}wg${node}`;
  if (name.length <= IFNAME_MAX) return name;
  // Keep the prefix's distinctive tail (its number), which is what keeps concurrent benches apart.
  const tail = prefix.replace(/[^A-Za-z0-9]/g, '').slice(-(IFNAME_MAX - 4));
  return `wg${tail}${node}`;
}

async function waitSocket(p: NsProcess, dev: string, ms: number): Promise<void> {
  const file = join(SOCKET_DIR, `${dev}.sock`);
  const deadline = Date.now() + ms;
  for (;;) {
    if (!p.running()) throw new Error(`wireguard-go in ${p.node} exited: ${lastLines(p)}`);
    try {
      if ((await stat(file)).isSocket()) return;
    } catch {
      // not there yet
    }
    if (Date.now() > deadline) throw new Error(`wireguard-go in ${p.node} made no control socket ${file} within ${ms} ms: ${lastLines(p)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** wireguard-go's own error lines, without its boxed "kernel has first class support" banner. */
function lastLines(p: NsProcess): string {
  const lines = (p.stderrTail() + '\n' + p.stdoutTail())
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0 && !/^[│┌└]/.test(l));
  return lines.slice(-3).join(' | ') || 'no output';
}

/** Starts wireguard-go on mh and ch and waits until mh pings ch through it. */
export async function startWireguard(tb: Std, opts: WireguardOptions = {}): Promise<WireguardPair> {
  const mtu = opts.mtu ?? 1400;
  const fam = opts.ipv6Underlay ? 'v6' : 'v4';
  const A = tb.addr;
  const dev = { mh: wireguardDevName(tb.prefix, 'mh'), ch: wireguardDevName(tb.prefix, 'ch') };
  const dir = await mkdtemp(join(tmpdir(), 'realmnet-wireguard-'));
  const procs: NsProcess[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(procs.map((p) => p.stop(3_000)));
    // A non-persistent TUN goes with its process; this only catches one left by a process we failed to stop.
    for (const n of ['mh', 'ch'] as const) await tb.exec(n, 'ip', ['link', 'del', 'dev', dev[n]], { allowFail: true });
    await rm(dir, { recursive: true, force: true });
  };
  try {
    // 1. Keys. wg genkey prints base64; `private-key FILE` below reads it from the file, so the key
    //    never appears on a command line.
    const pub = { mh: '', ch: '' };
    for (const n of ['mh', 'ch'] as const) {
      const priv = (await execHost('wg', ['genkey'])).stdout.trim();
      const file = join(dir, `${n}.key`);
      await writeFile(file, priv + '\n', { mode: 0o600 });
      await chmod(file, 0o600); // writeFile's mode is filtered by the umask
      pub[n] = (await execHost('wg', ['pubkey'], { input: priv + '\n' })).stdout.trim();
    }

    // 2–3. The daemons, in the foreground.
    for (const n of ['mh', 'ch'] as const) {
      const p = tb.spawn(n, 'wireguard-go', ['-f', dev[n]]);
      procs.push(p);
      await waitSocket(p, dev[n], 5_000);
    }

    // 4. Configuration. ch is reached on its primary link; mh on its primary uplink (ispa), the
    //    path the underlay row and Nebula use too.
    const far: Record<End, { peer: End; endpoint: string }> = {
      mh: { peer: 'ch', endpoint: hostPort(A[fam].ch.core, WIREGUARD_PORT) },
      ch: { peer: 'mh', endpoint: hostPort(A[fam].mh.ispa, WIREGUARD_PORT) },
    };
    for (const n of ['mh', 'ch'] as const) {
      const { peer, endpoint } = far[n];
      await tb.exec(n, 'wg', [
        'set', dev[n],
        'private-key', join(dir, `${n}.key`),
        'listen-port', String(WIREGUARD_PORT),
        'peer', pub[peer],
        'endpoint', endpoint,
        'allowed-ips', `${WIREGUARD_OVERLAY[peer]}/128`,
      ]);
      // nodad: the address is usable at once instead of after duplicate address detection (~1 s).
      await tb.exec(n, 'ip', ['-6', 'addr', 'add', `${WIREGUARD_OVERLAY[n]}/${WIREGUARD_OVERLAY.prefixLen}`, 'dev', dev[n], 'nodad']);
      await tb.exec(n, 'ip', ['link', 'set', 'dev', dev[n], 'mtu', String(mtu), 'up']);
    }

    // 5. Reachability (the first ping also triggers the handshake).
    const readyMs = opts.readyTimeoutMs ?? 15_000;
    const deadline = Date.now() + readyMs;
    for (;;) {
      for (const p of procs) if (!p.running()) throw new Error(`wireguard-go in ${p.node} exited: ${lastLines(p)}`);
      const r = await tb.exec('mh', 'ping', ['-6', '-n', '-c1', '-W1', WIREGUARD_OVERLAY.ch], { allowFail: true });
      if (r.code === 0) break;
      if (Date.now() > deadline) {
        const show = await tb.exec('mh', 'wg', ['show', dev.mh], { allowFail: true });
        throw new Error(`wireguard-go tunnel not reachable within ${readyMs} ms: ${show.stdout.trim().split('\n').join(' | ').slice(0, 300)}`);
      }
    }
    const [mh, ch] = procs as [NsProcess, NsProcess];
    return { mhAddr: WIREGUARD_OVERLAY.mh, chAddr: WIREGUARD_OVERLAY.ch, dev, mtu, pids: { mh: mh.pid, ch: ch.pid }, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
