/**
 * npm run testbed -- up|down|status [--prefix P] [--ipv6]
 *
 * up      builds the standard topology (scripts/testbed/topology.ts) and leaves it running
 * down    removes it (and anything still running inside it)
 * status  lists its namespaces and checks that mh reaches ch and rm
 * --ipv6  prints and checks the IPv6 underlay instead of IPv4 (both are always configured)
 */
import { Command, CommanderError } from 'commander';
import { DEFAULT_PREFIX, TESTBED, address, TestbedError, downAll, execNs, status, up, type EndKey, type NodeName } from './topology.ts';

type Family = 'v4' | 'v6';

function addressLines(prefix: string, fam: Family): string[] {
  return TESTBED.nodes.map((n) => {
    const ifs = Object.entries(TESTBED.dev[n]).map(([peer, dev]) => `${dev} ${address(fam, n, peer as EndKey<NodeName>)}`);
    return `  ${(prefix + n).padEnd(prefix.length + 5)} ${ifs.join(', ')}`;
  });
}

/** Pings from mh to ch and rm; returns one line per check and whether all passed. */
async function reachability(prefix: string, fam: Family): Promise<{ lines: string[]; ok: boolean }> {
  const targets: NodeName[] = ['ch', 'rm'];
  const lines: string[] = [];
  let ok = true;
  for (const t of targets) {
    const dst = address(fam, t, 'core');
    const r = await execNs(`${prefix}mh`, 'ping', [fam === 'v6' ? '-6' : '-4', '-c1', '-W1', dst], { allowFail: true });
    ok &&= r.code === 0;
    lines.push(`  mh -> ${t} ${dst}: ${r.code === 0 ? 'ok' : 'no reply'}`);
  }
  return { lines, ok };
}

async function main(argv: string[]): Promise<number> {
  const program = new Command('testbed')
    .description('network-namespace testbed: mh with two ISPs, a core router, ch and rm')
    .exitOverride()
    .showHelpAfterError();
  const common = (c: Command): Command =>
    c.option('--prefix <prefix>', 'namespace name prefix', DEFAULT_PREFIX).option('--ipv6', 'print and check the IPv6 underlay', false);
  let code = 0;

  common(program.command('up').description('build the topology (removes an old one with the same prefix first)')).action(
    async (o: { prefix: string; ipv6: boolean }) => {
      const fam: Family = o.ipv6 ? 'v6' : 'v4';
      const t0 = Date.now();
      await up({ prefix: o.prefix, cleanupOnExit: false });
      console.log(`testbed ${o.prefix} up in ${Date.now() - t0} ms:`);
      for (const l of addressLines(o.prefix, fam)) console.log(l);
      const r = await reachability(o.prefix, fam);
      for (const l of r.lines) console.log(l);
      if (!r.ok) code = 1;
    },
  );
  common(program.command('down').description('remove the namespaces and whatever runs in them')).action(async (o: { prefix: string }) => {
    const before = await status(o.prefix);
    await downAll(o.prefix);
    const after = await status(o.prefix);
    console.log(`testbed ${o.prefix} down: removed ${before.length - after.length} namespace(s)`);
    if (after.length > 0) {
      console.error(`still present: ${after.join(' ')}`);
      code = 1;
    }
  });
  common(program.command('status').description('list the namespaces and check reachability')).action(
    async (o: { prefix: string; ipv6: boolean }) => {
      const present = await status(o.prefix);
      const missing = TESTBED.nodes.map((n) => o.prefix + n).filter((n) => !present.includes(n));
      if (present.length === 0) {
        console.log(`testbed ${o.prefix}: not up`);
        code = 1;
        return;
      }
      console.log(`testbed ${o.prefix}: ${present.join(' ')}${missing.length ? ` (missing: ${missing.join(' ')})` : ''}`);
      if (missing.length > 0) {
        code = 1;
        return;
      }
      const fam: Family = o.ipv6 ? 'v6' : 'v4';
      for (const l of addressLines(o.prefix, fam)) console.log(l);
      const r = await reachability(o.prefix, fam);
      for (const l of r.lines) console.log(l);
      if (!r.ok) code = 1;
    },
  );

  try {
    await program.parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    throw e;
  }
  return code;
}

main(process.argv).then(
  (code) => process.exit(code),
  (e: unknown) => {
    if (e instanceof TestbedError) console.error(`testbed: ${e.message}`);
    else console.error(e);
    process.exit(1);
  },
);
